#!/usr/bin/env bash
# The main job, from a fresh clone on Debian as root: installs what it needs, builds
# llmfs, fetches the default model, mounts a store, archives sample LLM service logs into
# it, waits while the language model compacts them, and shows what they cost on disk
# against gzip, xz and zstd; then reads them back from a cold cache.
#
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
# It archives the SmolLM2 service log of the corpus (39 KB of JSONL: about 5 minutes of
# model time on 2 cores to compact, 2 to read back). DEMO_ALL=1 archives the Gemma log and
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
# stat FIELD: one figure of the daemon's live statistics.
stat() {
    "$LLMFS_BIN" stats "$mnt" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}
# What the empty store's database pages hold (superblock, root directory, tables): the
# archive's cost is what it adds to this, not the free pages of a new database file.
used0=$(stat db_used_bytes)
records0=$(($(stat stored_bytes) + $(stat metadata_bytes)))
empty=$(du -sB1 "$store" | cut -f1)
log "archiving the sample LLM service logs into the mount"
mkdir -p "$mnt/logs"
cp "$src"/* "$mnt/logs/"
sync
logical=$(cat "$src"/* | wc -c)
echo
echo "Written: $logical bytes, stored at once by the fast tier (zstd): $(du -sB1 "$mnt" | cut -f1) bytes."
log "the language model compacts them in the background (about 150 bytes/s of JSONL on 2 cores; a line every 30 s)"
t0=$(date +%s)
"$LLMFS_BIN" stats "$mnt" --wait-idle >/dev/null
log "compacted in $(($(date +%s) - t0)) s"
# The daemon gives free pages back after 10 s without requests; stats then walk afresh.
sleep 12
stored=$(stat stored_bytes)
llm_plain=$(stat plain_bytes_llm)
llm_frames=$(stat frame_bytes_llm)
pages=$(($(stat db_used_bytes) - used0))
records=$(($(stat stored_bytes) + $(stat metadata_bytes) - records0))
disk=$(du -sB1 "$store" | cut -f1)
cat "$src"/* >"$work/all"
gz=$(gzip -9c "$work/all" | wc -c)
xz=$(xz -9c "$work/all" | wc -c)
zs=$(zstd -19 -qc "$work/all" | wc -c)
echo
echo "| the sample logs ($logical bytes) | bytes | ratio |"
echo "| --- | ---: | ---: |"
# One row: name, bytes (a ratio against the logs' bytes; "-" for 0 bytes).
row() {
    awk -v n="$1" -v s="$2" -v r="$logical" \
        'BEGIN { if (s > 0) printf "| %s | %d | %.2fx |\n", n, s, r / s; else printf "| %s | %d | - |\n", n, s }'
}
row "gzip -9" "$gz"
row "xz -9" "$xz"
row "zstd -19" "$zs"
row "llmfs: the files' frames (LLM-coded, and fast-tier frames not coded yet)" "$stored"
row "llmfs: every record the archive added (frames, inodes, names, extents)" "$records"
row "llmfs: 8 KiB database pages the archive added to those in use" "$pages"
echo
awk -v p="$llm_plain" -v f="$llm_frames" 'BEGIN { printf "The LLM-coded chunks: %d bytes of text in %d bytes of frames, %.2fx.\n", p, f, p / (f > 0 ? f : 1) }'
echo "The store directory takes $disk bytes on disk (du), $empty of them before the archive:"
echo "the intent log that takes fsyncs (llmfs.intents, 256 KiB to 1 MiB), and a new database's"
echo "pages, which hold small archives in the pages its tables already have (so the pages"
echo "added can be 0) and are reused, not added to, as an archive grows."
echo
echo "\$ llmfs du $mnt/logs"
"$LLMFS_BIN" du "$mnt/logs"
echo

log "remounting (cold cache) and reading the logs back through the model"
umount_llmfs
mount_llmfs "$store" "$mnt" "$work/llmfs.log" "$opts"
for f in "$src"/*; do
    t0=$(date +%s)
    printf '%s (%d bytes): reading back through the model... ' "$(basename "$f")" "$(wc -c <"$f")"
    cmp "$f" "$mnt/logs/$(basename "$f")"
    echo "identical, $(($(date +%s) - t0)) s"
done
echo
echo "Every file read back from the remounted store is identical to the original."
umount_llmfs
"$LLMFS_BIN" fsck "$store"
echo
echo "Store: $store (mount it again with: $LLMFS_BIN mount $store $mnt)"
