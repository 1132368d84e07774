#!/usr/bin/env bash
# The main job, from a fresh clone on Debian as root: installs what it needs, builds
# llmfs, fetches the default model, mounts a store, archives sample LLM logs into it, and
# shows what they cost on disk, in the filesystem's fast tier (zstd) and coded by the
# language model (`llmfs compress`, the codec the filesystem's LLM tier will use).
#
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

require_fuse_packages() {
    ensure_debs fuse3 libfuse3-dev cmake clang libclang-dev pkg-config build-essential python3 python3-pip zstd xz-utils gzip
}
require_fuse_packages
require_fuse
command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs) first"

log "building llmfs (release; the first build compiles llama.cpp, about 10 minutes on 2 cores)"
cargo build --release --quiet
log "fetching the default model"
scripts/fetch-model.sh

work=${1:-$(mktemp -d /tmp/llmfs-demo.XXXXXX)}
store=$work/store
mnt=$work/mnt
logs=tests/corpus
log "mounting $store at $mnt"
mount_llmfs "$store" "$mnt" "$work/llmfs.log"

log "archiving the sample LLM service logs (JSONL) and completions into the mount"
mkdir -p "$mnt/logs" "$mnt/completions"
cp "$logs"/*.jsonl "$mnt/logs/"
cp "$logs"/*.md "$mnt/completions/"
sync
for f in "$logs"/*; do
    case $f in
    *.jsonl) cmp "$f" "$mnt/logs/$(basename "$f")" ;;
    *.md) cmp "$f" "$mnt/completions/$(basename "$f")" ;;
    esac
done
echo
echo "Files read back from the mount are identical to the originals."
echo
echo "| what | bytes |"
echo "| --- | ---: |"
echo "| logical size (du --apparent-size) | $(du -sb --apparent-size "$mnt" | cut -f1) |"
echo "| stored in llmfs's fast tier (du) | $(du -sB1 "$mnt" | cut -f1) |"

log "coding one log with the language model (about 450 bytes/s on 2 CPU cores; verified by decoding)"
sample=$work/sample.jsonl
head -c 8192 "$logs/SmolLM2-135M-Instruct.Q4_1.jsonl" >"$sample"
"$LLMFS_BIN" compress "$sample" -o "$mnt/logs/sample.jsonl.llz"
"$LLMFS_BIN" decompress "$mnt/logs/sample.jsonl.llz" -o "$work/sample.out"
cmp "$sample" "$work/sample.out"
llz=$(stat -c %s "$mnt/logs/sample.jsonl.llz")
gz=$(gzip -9c "$sample" | wc -c)
xz=$(xz -9c "$sample" | wc -c)
zs=$(zstd -19 -qc "$sample" | wc -c)
raw=$(stat -c %s "$sample")
echo
echo "| 8 KiB of an LLM service log | bytes | ratio |"
echo "| --- | ---: | ---: |"
for row in "original $raw" "gzip -9 $gz" "xz -9 $xz" "zstd -19 $zs" "llmfs (SmolLM2-135M) $llz"; do
    name=${row% *}
    size=${row##* }
    awk -v n="$name" -v s="$size" -v r="$raw" 'BEGIN { printf "| %s | %d | %.2fx |\n", n, s, r / s }'
done

umount_llmfs
echo
"$LLMFS_BIN" stats "$store"
echo
echo "Store: $store (mount it again with: $LLMFS_BIN mount $store $mnt)"
