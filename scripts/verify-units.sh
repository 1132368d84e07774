#!/usr/bin/env bash
# `systemd-analyze verify` on every unit in systemd/, as installed by scripts/install.sh
# but pointing at this build's binary: unknown keys, bad values, a missing ExecStart
# binary or a wrong Type= fail it. Template units are checked as one instance.
#
#   scripts/verify-units.sh [LLMFS_BINARY]     (default: target/release/llmfs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin=$(realpath "${1:-target/release/llmfs}")
[[ -x $bin ]] || die "$bin is not built: cargo build --release first"
command -v systemd-analyze >/dev/null || die "systemd-analyze is missing: install the Debian package systemd"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
n=0
for unit in systemd/*.service systemd/*.timer systemd/*.mount; do
    [[ -e $unit ]] || continue
    name=$(basename "$unit")
    # An instance of a template: the escaped mount point the README uses.
    name=${name/@./@srv-archive.}
    sed -e "s#/usr/local/bin/llmfs#$bin#g" "$unit" >"$dir/$name"
done
# The mount point the units name must exist for ConditionPathIsDirectory= and Where=.
mkdir -p /srv/archive 2>/dev/null || true
for unit in "$dir"/*; do
    log "systemd-analyze verify $(basename "$unit")"
    systemd-analyze verify --man=no "$unit"
    n=$((n + 1))
done
((n > 0)) || die "no units found in systemd/"
log "$n units verified"
