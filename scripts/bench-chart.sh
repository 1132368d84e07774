#!/usr/bin/env bash
# The README's chart (docs/bench.svg): llmfs bench --svg on four 4 KiB files, each
# primer. Prints bench's markdown tables; the chart shows the same figures.
#
#   scripts/bench-chart.sh                    # writes docs/bench.svg
#   BENCH_SVG=/tmp/b.svg scripts/bench-chart.sh --threads 1
#
# Input: the first 4 KiB of each JSONL log of the vendored corpus, 4 KiB of SmolLM2's
# markdown answers (tests/corpus/SmolLM2-*-010.md to -013.md concatenated) and 4 KiB of
# Rust (src/frame.rs). Every file is decoded and compared; the decode with another
# thread count is skipped (--other-threads 0) to keep the run to a few minutes of model
# time on 2 cores. Extra arguments go to `llmfs bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source scripts/lib.sh
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
c=tests/corpus
head -c 4096 $c/gemma-3-270m-q4_k_m.jsonl >"$tmp/gemma3-log.jsonl"
head -c 4096 $c/SmolLM2-135M-Instruct.Q4_1.jsonl >"$tmp/smollm2-log.jsonl"
# Not `cat | head`: with pipefail, cat's SIGPIPE when head has enough fails the script.
cat $c/SmolLM2-135M-Instruct.Q4_1-01[0-3].md >"$tmp/answers-all.md"
head -c 4096 "$tmp/answers-all.md" >"$tmp/smollm2-answers.md"
head -c 4096 src/frame.rs >"$tmp/frame.rs"
"$LLMFS_BIN" bench --primer none,builtin --other-threads 0 --svg "${BENCH_SVG:-docs/bench.svg}" "$@" \
    "$tmp/gemma3-log.jsonl" "$tmp/smollm2-log.jsonl" "$tmp/smollm2-answers.md" "$tmp/frame.rs"
