#!/usr/bin/env bash
# The main job, from a fresh clone on Debian as root: installs what it needs, builds
# llmfs, fetches the default model, mounts a store, archives sample LLM service logs into
# it, waits while the language model compacts them, and shows what they cost on disk
# against gzip, xz and zstd; then reads them back from a cold cache.
#
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
# It archives the SmolLM2 service log of the corpus (39 KB of JSONL: about 7 minutes of
# model time on 2 cores to compact, 3 to read back). DEMO_ALL=1 archives the Gemma log and
# the corpus' 48 completions too (150 KB, about 30 minutes). LLM_THREADS sets the model's
# threads (default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_debs fuse3 libfuse3-dev cmake clang libclang-dev pkg-config build-essential python3 \
    python3-pip zstd xz-utils gzip
require_fuse
command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs) first"

log "building llmfs (release; the first build compiles llama.cpp, about 10 minutes on 2 cores)"
cargo build --release --quiet
log "fetching the default model"
scripts/fetch-model.sh

work=${1:-$(mktemp -d /tmp/llmfs-demo.XXXXXX)}
store=$work/store
mnt=$work/mnt
src=$work/logs
mkdir -p "$src"
cp tests/corpus/SmolLM2-135M-Instruct.Q4_1.jsonl "$src/"
if [[ ${DEMO_ALL:-0} == 1 ]]; then
    cp tests/corpus/*.jsonl tests/corpus/*-0*.md "$src/"
fi
opts=cold_after=0
[[ -n ${LLM_THREADS:-} ]] && opts+=",llm_threads=$LLM_THREADS"

log "mounting $store at $mnt (-o $opts: compact at once)"
mount_llmfs "$store" "$mnt" "$work/llmfs.log" "$opts"
empty=$(du -sB1 "$store" | cut -f1)
log "archiving the sample LLM service logs into the mount"
mkdir -p "$mnt/logs"
cp "$src"/* "$mnt/logs/"
sync
logical=$(cat "$src"/* | wc -c)
echo
echo "Written: $logical bytes, stored at once by the fast tier (zstd): $(du -sB1 "$mnt" | cut -f1) bytes."
log "the language model compacts them in the background (about 100 bytes/s of JSONL on 2 cores)"
"$LLMFS_BIN" stats "$mnt" --wait-idle >/dev/null
# The daemon gives free pages back after 10 s without requests.
sleep 12
stored=$("$LLMFS_BIN" stats "$mnt" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['stored_bytes'])")
disk=$(du -sB1 "$store" | cut -f1)
cat "$src"/* >"$work/all"
gz=$(gzip -9c "$work/all" | wc -c)
xz=$(xz -9c "$work/all" | wc -c)
zs=$(zstd -19 -qc "$work/all" | wc -c)
echo
echo "| the sample logs ($logical bytes) | bytes | ratio |"
echo "| --- | ---: | ---: |"
for row in "gzip -9:$gz" "xz -9:$xz" "zstd -19:$zs" "llmfs, LLM-coded frames:$stored" \
    "llmfs, the whole store on disk (du; $empty bytes when empty):$disk"; do
    awk -v n="${row%%:*}" -v s="${row##*:}" -v r="$logical" 'BEGIN { printf "| %s | %d | %.2fx |\n", n, s, r / s }'
done
echo
echo "The archive grew the store by $((disk - empty)) bytes on disk (an empty store has free pages)."
echo
for f in "$mnt"/logs/*; do
    printf '%s: %s\n' "$(basename "$f")" "$(python3 -c "import os,sys; print(os.getxattr(sys.argv[1], 'user.llmfs.codecs').decode())" "$f")"
done

log "remounting (cold cache) and reading the logs back through the model"
umount_llmfs
mount_llmfs "$store" "$mnt" "$work/llmfs.log" "$opts"
for f in "$src"/*; do
    cmp "$f" "$mnt/logs/$(basename "$f")"
done
echo
echo "Every file read back from the remounted store is identical to the original."
umount_llmfs
"$LLMFS_BIN" fsck "$store"
echo
echo "Store: $store (mount it again with: $LLMFS_BIN mount $store $mnt)"
