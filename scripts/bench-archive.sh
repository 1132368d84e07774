#!/usr/bin/env bash
# The archive benchmark: llmfs's main use case through a real mount, printed as markdown
# tables. A benchmark, not a test: it never fails on slow or large numbers; it says, as
# text, which targets were met.
#
#   scripts/bench-archive.sh                   # 600K of fresh completions (scripts/gen-log.sh)
#   BENCH_LOG=tests/corpus/SmolLM2-135M-Instruct.Q4_1.jsonl scripts/bench-archive.sh
#
# What it does, in order:
# 1. gzip -9, xz -9 and zstd -19 of the log, for comparison.
# 2. Mounts an empty store (cold_after=0: every chunk is compacted at once) and measures
#    its size on disk once the daemon is idle.
# 3. A writer appends the log's JSONL records to one file, one write(2) per record, as an
#    LLM service would; then waits until the compactor has coded everything
#    (`llmfs stats --wait-idle`), and until the store's size on disk stops shrinking (the
#    daemon gives free pages back after 10 s idle).
# 4. Unmounts, drops the page cache, remounts: cold random 4 KiB reads of model-coded
#    chunks one at a time, then 4 at once while another thread stats other files.
# 5. Unmounted: `llmfs bench` of the same log, for the codec's own ratio and llama.cpp's
#    one-token-per-step speed in this run (never while the mount's model runs: two
#    llama.cpp processes on 2 cores slow each other 5-10x).
#
# Time: the model codes about 450 bytes/s on 2 free cores, and both the compactor (with
# its verification) and `llmfs bench` encode and decode the whole log: about 45 minutes
# each for 600K. Run it in the background, on a machine where no other llama.cpp process
# runs: two-thread OpenMP teams busy-wait at every barrier, and a niced mount with
# llm_threads=2 next to another model process compacted at 3 bytes/s here (160x slower);
# with BENCH_THREADS=1 it kept 39 bytes/s.
#
# Environment: BENCH_LOG (input; default: scripts/gen-log.sh's cached 600K log),
# BENCH_THREADS (llama.cpp threads of the mount and of llmfs bench, 2), BENCH_COLD_READS
# (one-at-a-time cold reads, 5), BENCH_SEED (which chunks are read, 1), BENCH_CODEC_BYTES
# (run llmfs bench on only this many leading bytes of the log; default all of it),
# BENCH_MOUNT_OPTS (more mount options, e.g. compact=off to try the script without the
# model), BENCH_CODEC=0 (skip llmfs bench: the targets that need it are not judged), BENCH_DIR (where the store lives, /var/tmp), LLMFS_MODEL, LLMFS_BIN, KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

THREADS=${BENCH_THREADS:-2}
COLD_READS=${BENCH_COLD_READS:-5}
SEED=${BENCH_SEED:-1}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR

require_fuse
for tool in gzip xz zstd python3; do
    command -v "$tool" >/dev/null || ensure_debs "$tool"
done
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"

if [[ -n ${BENCH_LOG:-} ]]; then
    INPUT=$BENCH_LOG
else
    INPUT=$("$LLMFS_ROOT/scripts/gen-log.sh")
fi
[[ -s $INPUT ]] || die "input log $INPUT is missing or empty"

make_tmp archive
STORE=$LLMFS_TMP/store
MNT=$LLMFS_TMP/mnt
DLOG=$LLMFS_TMP/daemon.log
RES=$LLMFS_TMP/results
: >"$RES"
OPTS="cold_after=0,llm_threads=$THREADS"
[[ -n ${LLMFS_MODEL:-} ]] && OPTS+=",model=$LLMFS_MODEL"
[[ -n ${BENCH_MOUNT_OPTS:-} ]] && OPTS+=",$BENCH_MOUNT_OPTS"
model_args=()
[[ -n ${LLMFS_MODEL:-} ]] && model_args=(--model "$LLMFS_MODEL")

# put KEY VALUE: one result for the report.
put() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }
now() { date +%s.%N; }

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; else log "not root: page cache not dropped"; fi
}

# The daemon's statistics once nothing is pending and the model is idle; plain
# statistics where nothing will drain the queue (compact=off, nomodel).
stats_idle() {
    "$LLMFS_BIN" stats "$MNT" --wait-idle --json 2>>"$LLMFS_TMP/stats.err" || "$LLMFS_BIN" stats "$MNT" --json
}

# du -sb of the store, once it has not changed for 3 polls 5 s apart (at least 15 s
# after the daemon went idle: it gives free space back after 10 s idle). Sets DU and
# DU_WAITED (seconds waited).
du_settled() {
    local t0 prev cur same=0
    t0=$(now)
    sleep 5
    prev=$(du -sb "$STORE" | cut -f1)
    while ((same < 3)); do
        sleep 5
        cur=$(du -sb "$STORE" | cut -f1)
        if [[ $cur == "$prev" ]]; then same=$((same + 1)); else same=0; fi
        prev=$cur
        if python3 -c "import sys; sys.exit(float(sys.argv[1]) - float(sys.argv[2]) < 300)" "$(now)" "$t0"; then
            log "store size still changing after 300 s; taking $cur"
            break
        fi
    done
    DU=$prev
    DU_WAITED=$(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2])))" "$(now)" "$t0")
}

json_field() { python3 -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))" "$1" "$2"; }

# --- 1. the input and the general-purpose compressors -------------------------------
log "input: $INPUT"
put load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
put input "$INPUT"
put bytes "$(stat -c %s "$INPUT")"
put records "$(wc -l <"$INPUT")"
put gzip "$(gzip -9c "$INPUT" | wc -c)"
put xz "$(xz -9c "$INPUT" | wc -c)"
put zstd "$(zstd -19 -q -c "$INPUT" | wc -c)"

# --- 2. the empty store --------------------------------------------------------------
log "mounting an empty store (-o $OPTS)"
mount_llmfs "$STORE" "$MNT" "$DLOG" "$OPTS"
stats_idle >/dev/null
du_settled
put du_empty "$DU"
log "empty store: $DU bytes on disk"

# --- 3. the writer, then compaction ----------------------------------------------------
log "writing $(stat -c %s "$INPUT") bytes, one write per record"
t_write=$(now)
python3 - "$INPUT" "$MNT/archive.jsonl" >>"$RES" <<'EOF'
import os, sys, time
src, dst = sys.argv[1], sys.argv[2]
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
t = time.perf_counter()
with open(src, "rb") as f:
    for line in f:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
os.close(fd)
print(f"write_s={time.perf_counter() - t:.3f}")
EOF
[[ $(stat -c %s "$MNT/archive.jsonl") == "$(stat -c %s "$INPUT")" ]] || die "the archive's size differs from the input's"
log "waiting for compaction (llmfs stats --wait-idle)"
idle=$(stats_idle)
t_idle=$(now)
put compact_wall_s "$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$t_idle" "$t_write")"
for k in compact compacted_plain_bytes compaction_busy_s compaction_bytes_per_s compacted_chunks_llm \
    compacted_chunks_kept verify_failures model_encodes pending_chunks; do
    put "$k" "$(json_field "$idle" "$k")"
done
xattr_of() { python3 -c "import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).decode())" "$1" "$2"; }
put file_stored "$(xattr_of "$MNT/archive.jsonl" user.llmfs.stored)"
put file_codecs "$(xattr_of "$MNT/archive.jsonl" user.llmfs.codecs)"
log "compaction done; waiting for the store's size on disk to settle"
du_settled
put du_after "$DU"
put du_waited_s "$DU_WAITED"
final=$("$LLMFS_BIN" stats "$MNT" --json)
for k in logical_bytes stored_bytes disk_bytes db_file_bytes db_free_bytes chunks_llm chunks_zstd chunks_raw; do
    put "store_$k" "$(json_field "$final" "$k")"
done

# Files to stat while the model decodes: empty (nothing to compact), each looked up
# once after the remount, so every stat goes to the daemon.
python3 -c "
import os, sys
d = os.path.join(sys.argv[1], 'other')
os.mkdir(d)
for i in range(2000):
    open(os.path.join(d, f'f{i:04d}'), 'w').close()
" "$MNT"

# --- 4. cold reads ---------------------------------------------------------------------
log "remounting with cold caches"
umount_llmfs
drop_caches
mount_llmfs "$STORE" "$MNT" "$DLOG" "$OPTS"
stats_idle >/dev/null # the model loads and checks its canary before we time anything
drop_caches
log "cold reads: $COLD_READS one at a time, then 4 at once with stats alongside"
python3 - "$MNT" "$INPUT" "$COLD_READS" "$SEED" >>"$RES" <<'EOF'
import json, os, random, statistics, sys, threading, time
mnt, original, n_single, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
path = os.path.join(mnt, "archive.jsonl")
ref = open(original, "rb").read()
CHUNK = 4096

def stats():
    return json.loads(os.getxattr(mnt, "user.llmfs.stats"))

def decodes():
    return stats().get("model_decodes", 0)

def wait_model_idle():
    """After a read the daemon prefetches the next chunk; let it finish, so that each
    measurement starts with the model idle (a read would cancel it within one step)."""
    deadline = time.monotonic() + 120
    while stats().get("model_idle", 1) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)

# Even chunk indices only: after a read the daemon may prefetch the next chunk, which
# must not be one we time later.
chunks = list(range(0, len(ref) // CHUNK, 2))
random.Random(seed).shuffle(chunks)
if len(chunks) < n_single + 4:
    sys.exit(f"the log is too small for {n_single} + 4 cold reads")
single, parallel = chunks[:n_single], chunks[n_single:n_single + 4]

def timed_read(fd, idx):
    t = time.perf_counter()
    data = os.pread(fd, CHUNK, idx * CHUNK)
    ms = (time.perf_counter() - t) * 1000
    if data != ref[idx * CHUNK:(idx + 1) * CHUNK]:
        sys.exit(f"chunk {idx}: the mount returned other bytes than the input")
    return ms

fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
llm, other = [], []
for idx in single:
    wait_model_idle()
    before = decodes()
    ms = timed_read(fd, idx)
    (llm if decodes() > before else other).append(ms)

# stat of files nobody looked up since the mount, with the model idle ...
names = [os.path.join(mnt, "other", f"f{i:04d}") for i in range(2000)]
def stat_ms(p):
    t = time.perf_counter()
    os.stat(p)
    return (time.perf_counter() - t) * 1000
wait_model_idle()
idle_stats = [stat_ms(p) for p in names[:50]]

# ... and while 4 cold reads of other chunks run at once.
par = [None] * 4
def reader(i):
    par[i] = timed_read(fd, parallel[i])
before = decodes()
threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
t0 = time.perf_counter()
for t in threads:
    t.start()
busy_stats, k = [], 50
while any(t.is_alive() for t in threads):
    busy_stats.append(stat_ms(names[k % len(names)]))
    k += 1
    time.sleep(0.02)
for t in threads:
    t.join()
par_wall = (time.perf_counter() - t0) * 1000
par_decoded = decodes() - before

def put(key, xs):
    print(f"{key}_n={len(xs)}")
    if xs:
        print(f"{key}_median={statistics.median(xs):.2f}")
        print(f"{key}_max={max(xs):.2f}")
put("cold", llm)
put("cold_nomodel", other)
put("par", par)
put("stat_idle", idle_stats)
put("stat_busy", busy_stats)
print(f"par_wall={par_wall:.2f}")
print(f"par_decoded={par_decoded}")
EOF
umount_llmfs

# --- 5. the codec on its own, with nothing else using the model ----------------------
if [[ ${BENCH_CODEC:-1} == 0 ]]; then
    log "BENCH_CODEC=0: llmfs bench skipped"
else
    bench_input=$INPUT
    if [[ -n ${BENCH_CODEC_BYTES:-} ]]; then
        bench_input=$LLMFS_TMP/codec-sample.jsonl
        head -c "$BENCH_CODEC_BYTES" "$INPUT" >"$bench_input"
    fi
    bench_args=("${model_args[@]}" --threads "$THREADS")
    # Its check that another thread count decodes the same bytes would cost one more
    # decode of the whole log, at 1 thread; the ratio and speed do not need it.
    if "$LLMFS_BIN" bench --help | grep -q -- --other-threads; then bench_args+=(--other-threads 0); fi
    log "llmfs bench ${bench_args[*]} on $(stat -c %s "$bench_input") bytes"
    "$LLMFS_BIN" bench "${bench_args[@]}" "$bench_input" | tee "$LLMFS_TMP/bench.md" >&2
    python3 - "$LLMFS_TMP/bench.md" >>"$RES" <<'EOF'
import sys
rows = [l.strip().strip("|").split("|") for l in open(sys.argv[1]) if l.startswith("| **total**")]
ratio, speed = [[c.strip() for c in r] for r in rows[:2]]
print(f"bench_bytes={ratio[1]}")
print(f"bench_ratio={ratio[3].rstrip('x')}")
print(f"bench_tokens={speed[2]}")
print(f"bench_encode_bps={speed[7]}")
print(f"bench_llama_tps={speed[10]}")
EOF
    put bench_input_bytes "$(stat -c %s "$bench_input")"
fi

# --- the report --------------------------------------------------------------------------
put date "$(date -u '+%Y-%m-%d %H:%M UTC')"
put commit "$(git -C "$LLMFS_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$LLMFS_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
put cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
put cpus "$(nproc)"
put mem_gib "$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
put load "$(cut -d' ' -f1-3 /proc/loadavg)"
put opts "$OPTS"
python3 - "$RES" <<'EOF'
import sys
r = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    r[k] = v
f = lambda k: float(r.get(k) or 0)
n = lambda k: int(float(r.get(k) or 0))
def ratio(a, b):
    return a / b if b else 0.0

size = n("bytes")
print()
print(f"## Archive benchmark, {r['date']}")
print()
print(f"Machine: {r['cpu']}, {r['cpus']} CPUs, {r['mem_gib']} GiB; load average {r['load_start']} at the start, {r['load']} at the end. "
      f"Commit {r['commit']}. Mount options: `{r['opts']}`.")
print(f"Input: `{r['input']}`, {size:,} bytes, {n('records'):,} JSONL records, "
      "appended to one file through the mount, one write per record.")
print()
print("### Space")
print()
added = n("du_after") - n("du_empty")
print("| measure | bytes | logical / bytes |")
print("| --- | ---: | ---: |")
rows = [
    ("logical (the file)", size),
    ("stored by llmfs (the file's frames, `user.llmfs.stored`)", n("file_stored")),
    ("on disk, added by the archive (`du -sb STORE` after, minus the empty store)", added),
    ("gzip -9", n("gzip")),
    ("xz -9", n("xz")),
    ("zstd -19", n("zstd")),
]
for label, b in rows:
    print(f"| {label} | {b:,} | {f'{size / b:.2f}x' if b > 0 else '-'} |")
bench_ratio = f("bench_ratio")
if bench_ratio:
    print(f"| `llmfs bench` on {n('bench_input_bytes'):,} bytes of the same log (its container) | - | {bench_ratio:.2f}x |")
print()
print(f"Chunks of the file: {r.get('file_codecs', '?')}. Store on disk: {n('du_empty'):,} bytes empty, "
      f"{n('du_after'):,} bytes after (measured once `du` had not changed for 15 s, "
      f"{n('du_waited_s')} s after the daemon went idle; the SQLite file {n('store_db_file_bytes'):,} bytes "
      f"of which {n('store_db_free_bytes'):,} free). Whole store per `llmfs stats`: "
      f"{n('store_logical_bytes'):,} logical, {n('store_stored_bytes'):,} stored, {n('store_disk_bytes'):,} on disk.")
print()
print("### Compaction speed")
print()
bpt = ratio(n("bench_bytes"), n("bench_tokens"))  # bytes of text per token
llama_tps = f("bench_llama_tps")
llama_bps = llama_tps * bpt
busy_bps = f("compaction_bytes_per_s")
wall_bps = ratio(f("compacted_plain_bytes"), f("compact_wall_s"))
def speed_row(label, bps):
    tps = f"{bps / bpt:.1f}" if bpt else "-"
    share = f"{100 * bps / llama_bps:.1f}%" if llama_bps else "-"
    print(f"| {label} | {bps:,.0f} | {tps} | {share} |")
print("| measure | bytes/s | tokens/s | of llama.cpp's speed |")
print("| --- | ---: | ---: | ---: |")
if llama_bps:
    speed_row("llama.cpp, one token per step (`llmfs bench`, this run)", llama_bps)
    speed_row("`llmfs bench` encode (no verification)", f("bench_encode_bps"))
speed_row(f"compaction with verification, busy time ({f('compacted_plain_bytes'):,.0f} B in {f('compaction_busy_s'):,.0f} s)", busy_bps)
speed_row(f"compaction, wall clock from the first write to idle ({f('compact_wall_s'):,.0f} s)", wall_bps)
print()
if bpt:
    print(f"The mount's tokens/s are its bytes/s over {bpt:.2f} bytes per token (`llmfs bench`'s count on this log). ", end="")
print(f"Writing the log through the mount took {f('write_s'):.2f} s. Compactor: {n('compacted_chunks_llm')} chunks "
      f"LLM-coded, {n('compacted_chunks_kept')} kept in the fast codec, {n('verify_failures')} verification failures.")
print()
print("### Latency")
print()
print("| measure | samples | median | max |")
print("| --- | ---: | ---: | ---: |")
def ms(x):
    return f"{x:.2f} ms" if x < 100 else f"{x:,.0f} ms"
def lat(label, key):
    if n(key + "_n"):
        print(f"| {label} | {n(key + '_n')} | {ms(f(key + '_median'))} | {ms(f(key + '_max'))} |")
    else:
        print(f"| {label} | 0 | - | - |")
lat("cold random 4 KiB read of an LLM chunk, one at a time", "cold")
if n("cold_nomodel_n"):
    lat("cold random 4 KiB read that the model did not decode (not an LLM chunk)", "cold_nomodel")
lat(f"4 cold reads at once, each (all done in {ms(f('par_wall'))}, {n('par_decoded')} model decodes)", "par")
lat("`stat` of another file, model idle", "stat_idle")
lat("`stat` of another file while the 4 cold reads run", "stat_busy")
print()
print("### Targets")
print()
def verdict(ok):
    return "**met**" if ok else "**not met**"
if bench_ratio and n("file_stored"):
    mine = ratio(size, n("file_stored"))
    d = 100 * (mine / bench_ratio - 1)
    print(f"- Stored ratio within 5% of `llmfs bench`: {mine:.2f}x vs {bench_ratio:.2f}x ({d:+.1f}%): {verdict(abs(d) <= 5)}.")
share = f"1/{size / added:.1f} of them" if added > 0 else "it fit in pages the empty store already had"
print(f"- Bytes on disk added by the archive at most 1/8 of its logical bytes: {added:,}, {share}: {verdict(added * 8 <= size)}.")
if llama_bps:
    share = 100 * ratio(busy_bps, llama_bps)
    print(f"- Compaction (with verification, busy time) at least 45% of llama.cpp's speed: {share:.1f}%: {verdict(share >= 45)}.")
if n("stat_busy_n"):
    mx = f("stat_busy_max")
    print(f"- `stat` during 4 cold reads under 10 ms (every sample, so the max): {mx:.1f} ms: {verdict(mx < 10)}.")
if n("cold_n") == 0:
    print("- No cold read was decoded by the model: the file has no LLM-coded chunk (is compaction on, is the model loaded?).")
EOF
