#!/usr/bin/env bash
# The primer through a real mount: the same input written to a fresh store once per
# primer, compacted by the real model, and what the store then holds. Prints a markdown
# table next to gzip -9, xz -9 and zstd -19 of the same bytes; a benchmark, not a test
# (it fails only when a file reads back different or fsck finds the store not clean).
#
#   scripts/bench-primer.sh                      # primers none and builtin
#   BENCH_PRIMERS="builtin" scripts/bench-primer.sh
#
# Input: bench-pool.sh's (both JSONL logs of the corpus and four small completions,
# 87 KB). Each store is mounted with cold_after=0 and BENCH_LANES 1-thread lanes, the
# input copied in, `llmfs stats --wait-idle` waits until every chunk is coded and
# verified, and the stored bytes and compaction speed are read from `llmfs stats`.
# About 10 minutes per primer on 2 cores, model time all of it: run it alone.
#
# Environment: BENCH_PRIMERS ("none builtin"), BENCH_LANES (number of cores),
# BENCH_DIR (/var/tmp), LLMFS_MODEL, LLMFS_BIN, KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

read -r -a PRIMERS <<<"${BENCH_PRIMERS:-none builtin}"
LANES=${BENCH_LANES:-$(nproc)}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR
require_fuse
command -v python3 >/dev/null || ensure_debs python3
command -v xz >/dev/null || ensure_debs xz-utils
command -v zstd >/dev/null || ensure_debs zstd
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
make_tmp primer
IN=$LLMFS_TMP/input
mkdir -p "$IN"
cat "$LLMFS_ROOT"/tests/corpus/SmolLM2-135M-Instruct.Q4_1.jsonl \
    "$LLMFS_ROOT"/tests/corpus/gemma-3-270m-q4_k_m.jsonl >"$IN/log.jsonl"
for f in SmolLM2-135M-Instruct.Q4_1-010.md SmolLM2-135M-Instruct.Q4_1-011.md \
    gemma-3-270m-q4_k_m-010.md gemma-3-270m-q4_k_m-011.md; do
    cp "$LLMFS_ROOT/tests/corpus/$f" "$IN/"
done
OPTS="cold_after=0,llm_lanes=$LANES,llm_threads=$LANES"
[[ -n ${LLMFS_MODEL:-} ]] && OPTS+=",model=$LLMFS_MODEL"

rows=()
for p in "${PRIMERS[@]}"; do
    log "primer $p: a fresh store, $LANES lane(s)"
    STORE=$LLMFS_TMP/store-$p
    MNT=$LLMFS_TMP/mnt
    mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon-$p.log" "$OPTS,primer=$p"
    t0=$(date +%s)
    cp "$IN"/* "$MNT"/
    sync
    "$LLMFS_BIN" stats --wait-idle "$MNT" >/dev/null
    secs=$(($(date +%s) - t0))
    "$LLMFS_BIN" stats --json "$MNT" >"$LLMFS_TMP/stats-$p.json"
    for f in "$IN"/*; do
        cmp -s "$f" "$MNT/$(basename "$f")" || die "primer $p: $(basename "$f") read back different"
    done
    umount_llmfs
    "$LLMFS_BIN" fsck "$STORE" >"$LLMFS_TMP/fsck-$p.txt" 2>&1 ||
        die "primer $p: fsck found the store not clean ($(tail -1 "$LLMFS_TMP/fsck-$p.txt"))"
    rows+=("$(python3 - "$LLMFS_TMP/stats-$p.json" "$p" "$secs" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {s['logical_bytes']:,} | {s['stored_bytes']:,} | "
      f"{s['logical_bytes'] / s['stored_bytes']:.2f}x | {s['chunks_llm']} of "
      f"{s['chunks_llm'] + s['chunks_zstd'] + s['chunks_raw']} | {s['verify_failures']} | "
      f"{s['compaction_bytes_per_s']:.0f} B/s | {sys.argv[3]} s |")
EOF
)")
done

TOTAL=$(cat "$IN"/* | wc -c)
ratio() { python3 -c "print(f'{$TOTAL / $1:.2f}x')"; }
GZ=$(for f in "$IN"/*; do gzip -9c "$f" | wc -c; done | awk '{s += $1} END {print s}')
XZ=$(for f in "$IN"/*; do xz -9c "$f" | wc -c; done | awk '{s += $1} END {print s}')
ZS=$(for f in "$IN"/*; do zstd -19 -c -q "$f" | wc -c; done | awk '{s += $1} END {print s}')

echo
echo "### The primer through a mount: $TOTAL bytes in 5 files, $LANES lane(s), cold_after=0"
echo
echo "| primer | logical bytes | stored bytes | ratio | chunks LLM-coded | verify failures | compaction | until idle |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "Each file on its own: gzip -9 $GZ B ($(ratio "$GZ")), xz -9 $XZ B ($(ratio "$XZ")), zstd -19 $ZS B ($(ratio "$ZS"))."
