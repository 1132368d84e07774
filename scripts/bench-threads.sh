#!/usr/bin/env bash
# How llama.cpp's thread count and OpenMP's wait policy behave on a machine shared with
# other work: `llmfs compress --no-verify` of 4 KiB of LLM output (model load included)
# with 1 and 2 threads, spinning (the default) and passive (what the daemon runs with),
# alone and next to one busy process. Prints a markdown table; run it with nothing else
# running. Usage: scripts/bench-threads.sh [FILE]   (default: 4 KiB of the JSONL corpus)
# BENCH_POLICIES: the wait policies to compare (default "default passive"; e.g.
# "default passive spin=10000").
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
make_tmp threads
input=$LLMFS_TMP/in
head -c 4096 "${1:-$LLMFS_ROOT/tests/corpus/SmolLM2-135M-Instruct.Q4_1.jsonl}" >"$input"
# run POLICY THREADS: POLICY "default" leaves OMP_WAIT_POLICY unset (libgomp spins a
# while at each barrier, then sleeps), "spin=N" sets GOMP_SPINCOUNT=N (how long it
# spins), else POLICY is the OMP_WAIT_POLICY.
run() {
    local envs=(-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT) start=$EPOCHREALTIME
    case $1 in
    default) ;;
    spin=*) envs+=(GOMP_SPINCOUNT="${1#spin=}") ;;
    *) envs=(-u GOMP_SPINCOUNT OMP_WAIT_POLICY="$1") ;;
    esac
    env "${envs[@]}" "$LLMFS_BIN" compress --threads "$2" --no-verify "$input" -o "$input.llz" 2>/dev/null
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'
}
row() { echo "| $1 | $(run "$2" 1) | $(run "$2" 2) |"; }
echo "| setting | 1 thread | 2 threads |"
echo "| --- | ---: | ---: |"
read -ra policies <<<"${BENCH_POLICIES:-default passive}"
name() { case $1 in default) ;; spin=*) echo ", GOMP_SPINCOUNT=${1#spin=}" ;; *) echo ", OMP_WAIT_POLICY=$1" ;; esac; }
for p in "${policies[@]}"; do row "alone$(name "$p")" "$p"; done
yes >/dev/null &
hog=$!
trap 'kill $hog 2>/dev/null; cleanup_llmfs' EXIT
for p in "${policies[@]}"; do row "next to one busy process$(name "$p")" "$p"; done
kill $hog
