#!/usr/bin/env bash
# Generates (once) a JSONL log of fresh LLM completions, the input of the archive
# benchmark, and prints its path. The file is cached: a complete file is never generated
# again, and an interrupted run continues where it stopped (examples/gen_log.rs).
#
#   scripts/gen-log.sh                 # 600K, cached in ~/.cache/llmfs/bench/log-600k.jsonl
#   scripts/gen-log.sh 1M /tmp/log.jsonl
#
# Environment: LLMFS_MODEL (default: the model scripts/fetch-model.sh installs),
# GEN_LOG_SEED (1), GEN_LOG_THREADS (llama.cpp threads; default every core: give it 1
# while other model processes run, their OpenMP threads busy-wait against each other).
# Generation runs at about 100 tokens (470 bytes) per second on 2 free cores: 600K takes
# 20-30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib.sh
source scripts/lib.sh

bytes=${1:-600K}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/llmfs/bench
out=${2:-$cache/log-${bytes,,}.jsonl}
seed=${GEN_LOG_SEED:-1}

if [[ -s $out ]]; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

if [[ -n ${LLMFS_MODEL:-} ]]; then
    model=$LLMFS_MODEL
else
    scripts/fetch-model.sh >&2
    model=${XDG_DATA_HOME:-$HOME/.local/share}/llmfs/models/SmolLM2-135M-Instruct.Q4_1.gguf
fi
[[ -f $model ]] || die "model $model not found"

mkdir -p "$(dirname "$out")"
log "building examples/gen_log.rs"
cargo build --release --quiet --example gen_log
args=(--model "$model" --bytes "$bytes" --seed "$seed" -o "$out")
[[ -n ${GEN_LOG_THREADS:-} ]] && args+=(--threads "$GEN_LOG_THREADS")
log "generating $bytes of completions into $out (progress below)"
target/release/examples/gen_log "${args[@]}" >&2
echo "$out"
