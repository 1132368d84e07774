#!/usr/bin/env bash
# The codec benchmark recorded in the README: llmfs bench over each model's completions
# from the vendored corpus, concatenated into one file per model.
#
#   scripts/bench-codec.sh                          # default 4 KiB segments
#   scripts/bench-codec.sh --segment-size 1K,4K,16K # the segment-size sweep
#   scripts/bench-codec.sh --model other.gguf       # another model as compressor
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --release --quiet
scripts/fetch-model.sh >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat tests/corpus/SmolLM2-135M-Instruct.Q4_1-0*.md >"$tmp/smollm2-completions.md"
cat tests/corpus/gemma-3-270m-q4_k_m-0*.md >"$tmp/gemma3-completions.md"
"$LLMFS_BIN" bench "$@" "$tmp/smollm2-completions.md" "$tmp/gemma3-completions.md"
