#!/usr/bin/env bash
# The model pool benchmark: how fast the LLM tier codes and reads through a real mount
# with one lane and with N, against llama.cpp's one-stream speed measured in the same
# run. Prints markdown tables and says which targets were met; a benchmark, not a test:
# it never fails on slow numbers.
#
#   scripts/bench-pool.sh            # N = the number of cores
#   BENCH_LANES=4 scripts/bench-pool.sh
#
# What it does, in order (about 35 minutes on 2 cores, model time all of it; run it with
# nothing else busy, and never next to another llama.cpp process):
# 1. The reference: `llmfs bench` (one stream, one context with every core) of the first
#    8 KiB of the input: llama.cpp's tokens and bytes per second, one token per step.
# 2. For 1 lane of 1 thread, then N lanes of 1 thread: an empty store mounted with
#    cold_after=0, the input (both JSONL logs of the corpus, 80 KB) and four small
#    completions written, and the wall time until the compactor has coded and verified
#    every chunk: compaction throughput. The daemon's memory after mount per lane count.
# 3. On the N-lane store, remounted cold each time (page cache dropped, the default pool:
#    N lanes, and a wide context where OpenMP threads spin), while another thread stats a file every 20 ms:
#    a sequential cold read of the log (`cat`), four concurrent cold reads of the four
#    small files, and a lone cold read of one 4 KiB chunk from the log's middle (and the
#    reference's speed on exactly that chunk).
#
# Environment: BENCH_LANES (N, default the number of cores), BENCH_DIR (/var/tmp),
# BENCH_REUSE=DIR (the directory a run with KEEP_TMP=1 left: what it measured of steps 1
# and 2 is kept, the rest runs again), LLMFS_MODEL, LLMFS_BIN, KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

CORES=$(nproc)
N=${BENCH_LANES:-$CORES}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR
require_fuse
command -v python3 >/dev/null || ensure_debs python3
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"

make_tmp pool
if [[ -n ${BENCH_REUSE:-} ]]; then
    cp -a "$BENCH_REUSE"/. "$LLMFS_TMP"/
fi
IN=$LLMFS_TMP/input
mkdir -p "$IN"
cat "$LLMFS_ROOT"/tests/corpus/SmolLM2-135M-Instruct.Q4_1.jsonl \
    "$LLMFS_ROOT"/tests/corpus/gemma-3-270m-q4_k_m.jsonl >"$IN/log.jsonl"
SMALL=(SmolLM2-135M-Instruct.Q4_1-010.md SmolLM2-135M-Instruct.Q4_1-011.md
    gemma-3-270m-q4_k_m-010.md gemma-3-270m-q4_k_m-011.md)
for f in "${SMALL[@]}"; do cp "$LLMFS_ROOT/tests/corpus/$f" "$IN/"; done
LOG_BYTES=$(stat -c %s "$IN/log.jsonl")
TOTAL_BYTES=$(cat "$IN"/* | wc -c)
RES=$LLMFS_TMP/results
[[ -n ${BENCH_REUSE:-} ]] || : >"$RES"
put() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }
get() { sed -n "s/^$1=//p" "$RES" | tail -1; }
now() { date +%s.%N; }
model_opt=""
[[ -n ${LLMFS_MODEL:-} ]] && model_opt=",model=$LLMFS_MODEL"
model_args=()
[[ -n ${LLMFS_MODEL:-} ]] && model_args=(--model "$LLMFS_MODEL")

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# reference FILE KEY: llmfs bench of FILE with one context of every core; puts KEY_tok_s
# and KEY_b_s, the decode speed (one token per step, as a reader decodes).
reference() {
    local out
    out=$("$LLMFS_BIN" bench "${model_args[@]}" --threads "$CORES" --other-threads 0 "$1")
    # The speed table's row of the file: | file | segment | tokens | ce | spent | over |
    # enc tok/s | enc B/s | dec tok/s | dec B/s | ...
    local row
    row=$(printf '%s\n' "$out" | grep -F "| $(basename "$1") |" | tail -1)
    put "${2}_tok_s" "$(printf '%s' "$row" | awk -F'|' '{gsub(/ /,"",$10); print $10}')"
    put "${2}_b_s" "$(printf '%s' "$row" | awk -F'|' '{gsub(/ /,"",$11); print $11}')"
}

if [[ -z $(get ref_b_s) ]]; then
    log "1. reference: llmfs bench of the first 8 KiB, one stream of $CORES threads"
    head -c 8192 "$IN/log.jsonl" >"$LLMFS_TMP/sample.jsonl"
    reference "$LLMFS_TMP/sample.jsonl" ref
fi

# compaction LANES: codes the input on LANES lanes of one thread; puts comp_LANES_* and
# leaves the store in $LLMFS_TMP/store-LANES.
compaction() {
    local lanes=$1 store=$LLMFS_TMP/store-$1 mnt=$LLMFS_TMP/mnt
    mount_llmfs "$store" "$mnt" "$LLMFS_TMP/daemon-$lanes.log" \
        "cold_after=0,llm_lanes=$lanes,llm_threads=$lanes$model_opt"
    put "rss_$lanes" "$(awk '/VmRSS/ {print $2}' "/proc/$LLMFS_PID/status")"
    local t0 t1
    t0=$(now)
    cp "$IN"/* "$mnt/"
    "$LLMFS_BIN" stats --wait-idle --json "$mnt" >"$LLMFS_TMP/stats-$lanes.json"
    t1=$(now)
    put "comp_${lanes}_s" "$(python3 -c "print(round($t1 - $t0, 1))")"
    python3 - "$LLMFS_TMP/stats-$lanes.json" "$lanes" >>"$RES" <<'EOF'
import json, sys
s, lanes = json.load(open(sys.argv[1])), sys.argv[2]
print(f"comp_{lanes}_llm={s['chunks_llm']}")
print(f"comp_{lanes}_verify_failures={s['verify_failures']}")
print(f"comp_{lanes}_stored={s['stored_bytes']}")
EOF
    umount_llmfs
}

for lanes in 1 "$N"; do
    if [[ -z $(get "comp_${lanes}_s") ]]; then
        log "2. compaction with $lanes lane(s) of 1 thread"
        rm -rf "$LLMFS_TMP/store-$lanes"
        compaction "$lanes"
    fi
done

# The reads, on the N-lane store with the default pool, each from a cold mount, while a
# sampler stats another file every 20 ms.
STORE=$LLMFS_TMP/store-$N
MNT=$LLMFS_TMP/mnt
cold_mount() {
    drop_caches
    mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon-read.log" "llm_lanes=$N,llm_threads=$N$model_opt"
}
cold_mount
python3 - "$MNT/${SMALL[0]}" "$LLMFS_TMP/stat.txt" <<'EOF' &
import os, sys, time
path, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    while os.path.exists(out):
        t = time.perf_counter()
        try:
            os.stat(path)
            f.write(f"{(time.perf_counter() - t) * 1000:.3f}\n")
            f.flush()
        except OSError:
            pass  # between two mounts
        time.sleep(0.02)
EOF
SAMPLER=$!
log "3a. sequential cold read of the log"
t0=$(now)
cat "$MNT/log.jsonl" >"$LLMFS_TMP/back.jsonl"
t1=$(now)
cmp -s "$LLMFS_TMP/back.jsonl" "$IN/log.jsonl" || die "the log read back different"
put seq_s "$(python3 -c "print(round($t1 - $t0, 1))")"
umount_llmfs
cold_mount
log "3b. four concurrent cold reads of four files"
python3 - "$MNT" "$IN" "${SMALL[@]}" >>"$RES" <<'EOF'
import sys, time, threading
mnt, src, names = sys.argv[1], sys.argv[2], sys.argv[3:]
took = {}
def read(n):
    t = time.perf_counter()
    data = open(f"{mnt}/{n}", "rb").read()
    took[n] = time.perf_counter() - t
    assert data == open(f"{src}/{n}", "rb").read(), n
t = time.perf_counter()
threads = [threading.Thread(target=read, args=(n,)) for n in names]
[x.start() for x in threads]
[x.join() for x in threads]
print(f"four_s={time.perf_counter() - t:.1f}")
print(f"four_each={' '.join(f'{took[n]:.1f}' for n in names)}")
EOF
umount_llmfs
cold_mount
log "3c. a lone cold read of one 4 KiB chunk"
CHUNK=$((LOG_BYTES / 4096 / 2))
dd if="$IN/log.jsonl" of="$LLMFS_TMP/chunk.jsonl" bs=4096 skip="$CHUNK" count=1 status=none
t0=$(now)
dd if="$MNT/log.jsonl" of="$LLMFS_TMP/chunk-back" bs=4096 skip="$CHUNK" count=1 iflag=direct status=none
t1=$(now)
cmp -s "$LLMFS_TMP/chunk-back" "$LLMFS_TMP/chunk.jsonl" || die "the chunk read back different"
put lone_s "$(python3 -c "print(round($t1 - $t0, 2))")"
umount_llmfs
STATS=$(python3 -c "
import statistics
v = sorted(float(x) for x in open('$LLMFS_TMP/stat.txt') if x.strip())
print(f'{statistics.median(v):.3f} {v[int(len(v) * 0.99)]:.3f} {v[-1]:.3f} {len(v)}')")
mv "$LLMFS_TMP/stat.txt" "$LLMFS_TMP/stat.done"
wait "$SAMPLER" 2>/dev/null || true
log "3c. the reference's speed on that chunk"
reference "$LLMFS_TMP/chunk.jsonl" chunk

python3 - "$RES" "$N" "$CORES" "$LOG_BYTES" "$TOTAL_BYTES" "$STATS" <<'EOF'
import sys
res = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
n, cores, log_bytes, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
p50, p99, mx, samples = sys.argv[6].split()
f = lambda k: float(res[k])
ref_tok, ref_bs = f("ref_tok_s"), f("ref_b_s")
c1, cn = total / f("comp_1_s"), total / f(f"comp_{n}_s")
seq = log_bytes / f("seq_s")
lone = 4096 / f("lone_s")
chunk_ref = f("chunk_b_s")
def target(ok):
    return "met" if ok else "**not met**"
print(f"\n### Model lanes, {cores} cores: {n} lanes against one stream\n")
print(f"Reference (llmfs bench, one context of {cores} threads, one token per step, decode): "
      f"{ref_tok:.1f} tokens/s, {ref_bs:.0f} B/s on the first 8 KiB of the input.\n")
print("| measure | result | against the reference | target |")
print("| --- | ---: | ---: | --- |")
print(f"| compaction (code + verify), 1 lane of 1 thread, {total:,} bytes | {c1:.0f} B/s | {c1 / ref_bs:.2f}x | |")
print(f"| compaction (code + verify), {n} lanes of 1 thread | {cn:.0f} B/s | {cn / ref_bs:.2f}x | at least 0.55x: {target(cn / ref_bs >= 0.55)} |")
print(f"| {n} lanes against 1 lane | | {cn / c1:.2f}x | at least 1.6x: {target(cn / c1 >= 1.6)} |")
print(f"| sequential cold read of the log ({log_bytes:,} bytes, cat) | {seq:.0f} B/s | {seq / ref_bs:.2f}x | at least 1.05x: {target(seq / ref_bs >= 1.05)} |")
print(f"| four concurrent cold reads of four files | {res['four_s']} s in all (each: {res['four_each']} s) | | |")
print(f"| a lone cold 4 KiB read (chunk {log_bytes // 4096 // 2}) | {f('lone_s'):.2f} s, {lone:.0f} B/s | {lone / chunk_ref:.2f}x of the reference on that chunk ({chunk_ref:.0f} B/s) | within 10%: {target(lone / chunk_ref >= 0.9)} |")
print(f"| stat of another file during the reads ({samples} samples) | p50 {p50} ms, p99 {p99} ms, max {mx} ms | | under 10 ms: {target(float(mx) < 10)} |")
print(f"\nChunks LLM-coded: {res['comp_1_llm']} (1 lane), {res[f'comp_{n}_llm']} ({n} lanes); verify failures {res['comp_1_verify_failures']} and {res[f'comp_{n}_verify_failures']}; "
      f"bytes stored {res['comp_1_stored']} and {res[f'comp_{n}_stored']}. "
      f"Daemon RSS after mount: {int(res['rss_1']) // 1024} MiB with 1 lane, {int(res['rss_' + n]) // 1024} MiB with {n} lanes.")
EOF
