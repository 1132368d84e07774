#!/usr/bin/env bash
# Filesystem benchmark: the same workloads through an llmfs mount and on a plain directory
# of the disk that holds the store, in one run, printed as a markdown table with the
# mount/native ratio. Then the store's size on disk against the chunk bytes it holds.
# A benchmark, not a test: it never fails on slow numbers.
#
#   scripts/bench-fs.sh                    # 1 GiB sequential file, 20 s of random reads
#   BENCH_SIZE_MB=4096 scripts/bench-fs.sh
#
# Environment: BENCH_DIR (default /var/tmp; the disk under test), BENCH_SIZE_MB (1024),
# BENCH_RAND_SECS (20), BENCH_FILES (10000), BENCH_MOUNT_OPTS, LLMFS_BIN, KEEP_TMP=1.
#
# Data: fio buffers refilled for every write and about 50% compressible (text-like for a
# block compressor; the LLM tier is not involved: it compacts cold chunks later).
# Between writing and reading, page caches are dropped (root) and llmfs is remounted, so
# reads come from the disk and the store, not from memory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZE_MB=${BENCH_SIZE_MB:-1024}
RAND_SECS=${BENCH_RAND_SECS:-20}
NFILES=${BENCH_FILES:-10000}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR

require_fuse
command -v fio >/dev/null || ensure_debs fio
command -v python3 >/dev/null || ensure_debs python3
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"

make_tmp bench
NATIVE=$LLMFS_TMP/native
STORE=$LLMFS_TMP/store
MNT=$LLMFS_TMP/mnt
DLOG=$LLMFS_TMP/daemon.log
mkdir -p "$NATIVE" "$MNT"

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

remount() {
    umount_llmfs
    drop_caches
    mount_llmfs "$STORE" "$MNT" "$DLOG" "${BENCH_MOUNT_OPTS:-}"
}

# fio_json DIR NAME ARGS...: runs one fio job, prints its JSON to $LLMFS_TMP/NAME.json.
fio_run() {
    local dir=$1 name=$2
    shift 2
    fio --name="$name" --directory="$dir" --filename=bench.dat --ioengine=psync \
        --refill_buffers --buffer_compress_percentage=50 --buffer_compress_chunk=4096 \
        --output-format=json "$@" >"$LLMFS_TMP/$name.json"
}

# json_get FILE EXPR: a value from fio's JSON (first job).
json_get() {
    python3 -c "import json,sys; j=json.load(open(sys.argv[1]))['jobs'][0]; print($2)" "$1"
}

declare -A R

bench_dir() {
    local which=$1 dir=$2
    # Metadata first, on a fresh store: right after a 1 GiB file is deleted, the
    # store is busy dropping its chunks and creates measured 20x slower.
    log "$which: create/stat/unlink of $NFILES files"
    read -r c s u < <(python3 - "$dir/meta" "$NFILES" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, f"f{i:05d}") for i in range(n)]
payload = b"x" * 100
t = time.perf_counter()
for p in names:
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, payload)
    os.close(fd)
c = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names:
    os.stat(p)
s = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names:
    os.unlink(p)
u = n / (time.perf_counter() - t)
os.rmdir(d)
print(f"{c:.0f} {s:.0f} {u:.0f}")
EOF
)
    R[$which.create]=$c R[$which.stat]=$s R[$which.unlink]=$u

    log "$which: sequential write of $SIZE_MB MiB"
    fio_run "$dir" "$which-write" --rw=write --bs=1M --size="${SIZE_MB}M" --end_fsync=1
    R[$which.write]=$(json_get "$LLMFS_TMP/$which-write.json" "j['write']['bw_bytes'] / 1e6")
    if [[ $which == llmfs ]]; then remount; else drop_caches; fi

    log "$which: sequential read"
    fio_run "$dir" "$which-read" --rw=read --bs=1M --size="${SIZE_MB}M"
    R[$which.read]=$(json_get "$LLMFS_TMP/$which-read.json" "j['read']['bw_bytes'] / 1e6")
    if [[ $which == llmfs ]]; then remount; else drop_caches; fi

    log "$which: random 4 KiB reads for $RAND_SECS s"
    fio_run "$dir" "$which-randread" --rw=randread --bs=4k --size="${SIZE_MB}M" \
        --time_based --runtime="$RAND_SECS"
    R[$which.randread]=$(json_get "$LLMFS_TMP/$which-randread.json" "j['read']['iops']")
    rm -f "$dir/bench.dat"
}

mount_llmfs "$STORE" "$MNT" "$DLOG" "${BENCH_MOUNT_OPTS:-}"
bench_dir native "$NATIVE"
bench_dir llmfs "$MNT"

# Space: write the sequential file again and keep it, then measure the store offline.
log "store space: writing $SIZE_MB MiB and measuring the store after unmount"
fio_run "$MNT" space-write --rw=write --bs=1M --size="${SIZE_MB}M" --end_fsync=1
logical=$(stat -c %s "$MNT/bench.dat")
umount_llmfs
store_du=$(du -sb "$STORE" | cut -f1)
store_alloc=$(($(du -s --block-size=1 "$STORE" | cut -f1)))
stats=$("$LLMFS_BIN" stats "$STORE" 2>&1) || stats="(llmfs stats failed: $stats)"

row() {
    local label=$1 key=$2 unit=$3
    python3 - "$label" "${R[native.$key]}" "${R[llmfs.$key]}" "$unit" <<'EOF'
import sys
label, n, m, unit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"| {label} | {m:,.1f} {unit} | {n:,.1f} {unit} | {m / n if n else 0:.2f} |")
EOF
}

echo
echo "Filesystem benchmark, $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), disk under test: $(df --output=fstype "$LLMFS_TMP" | tail -1) at $TMPDIR"
echo "Sequential file: $SIZE_MB MiB, ~50% compressible; caches dropped and llmfs remounted between phases."
echo
echo "| workload | llmfs | native | llmfs / native |"
echo "| --- | ---: | ---: | ---: |"
row "sequential write (1 MiB writes, fsync at end)" write MB/s
row "sequential read (1 MiB reads, cold)" read MB/s
row "random 4 KiB reads (cold start, ${RAND_SECS} s)" randread "reads/s"
row "create + write 100 B + close ($NFILES files)" create "files/s"
row "stat ($NFILES files)" stat "files/s"
row "unlink ($NFILES files)" unlink "files/s"
echo
echo "Store space after writing one $SIZE_MB MiB file ($logical bytes logical) and unmounting:"
echo
echo "| measure | bytes | per logical byte |"
echo "| --- | ---: | ---: |"
for pair in "du -sb STORE (apparent)|$store_du" "du -s STORE (allocated)|$store_alloc"; do
    python3 -c "import sys; l,v=sys.argv[1].split('|'); v=int(v); print(f'| {l} | {v:,} | {v/int(sys.argv[2]):.3f} |')" "$pair" "$logical"
done
echo
echo '`llmfs stats STORE` (chunk bytes held vs disk bytes: sled space amplification):'
echo
echo '```'
echo "$stats"
echo '```'
