#!/usr/bin/env bash
# Filesystem benchmark: the same workloads on a plain directory, through bindfs and through
# llmfs, all three on the disk under test, in interleaved rounds; printed as one markdown
# table of medians with the llmfs/bindfs ratio and the disk bytes llmfs wrote, the
# per-round raw numbers below it, then the store's size on disk against the bytes it holds.
# A benchmark, not a test: it never fails on slow numbers (only when a workload fails).
#
#   scripts/bench-fs.sh                    # 3 rounds, 1 GiB sequential file, 20 s random reads
#   BENCH_SIZE_MB=256 BENCH_FILES=3000 BENCH_RAND_SECS=10 BENCH_MOUNT_OPTS=nomodel scripts/bench-fs.sh
#
# Environment (defaults in brackets):
#   BENCH_DIR          the disk under test [/var/tmp]: the plain directory, bindfs's source
#                      directory and the llmfs store are all made under it
#   BENCH_ROUNDS       rounds [3]; each runs every workload on native, bindfs and llmfs back
#                      to back, the order rotated by one each round
#   BENCH_SIZE_MB      the sequential file, MiB [1024]
#   BENCH_RAND_SECS    seconds of random 4 KiB reads [20]
#   BENCH_FILES        100-byte files created, stat'ed, unlinked [10000]
#   BENCH_APPEND_LINES JSONL lines (about 200 bytes) appended, fsync every 64 [20000]
#   BENCH_TAR_SRC      the tree archived once, then extracted and removed [/usr/include]
#   BENCH_SETTLE_SECS  the longest wait for llmfs to be idle (below) [60]
#   BENCH_IDLE_SECS    the disk's background write rate is measured this long, with
#                      nothing of the benchmark running, before and after the rounds [5]
#   BENCH_MOUNT_OPTS   llmfs -o options (e.g. nomodel) []
#   BENCH_BINDFS_OPTS  bindfs -o options [multithreaded,big_writes,kernel_cache]
#   LLMFS_BIN          the llmfs binary [target/release/llmfs]
#   KEEP_TMP=1         keep the work directory
#
# bindfs is the reference: a FUSE passthrough (libfuse 2), about the best a FUSE
# filesystem does on this machine. Its options: multithreaded (requests served on several
# threads, as llmfs does), big_writes (writes up to 128 KiB per request instead of 4 KiB;
# this libfuse 2 build accepts it, and rejects unknown options), kernel_cache (keeps the
# page cache across opens, as llmfs's FOPEN_KEEP_CACHE does). Attribute and entry timeouts
# stay at libfuse's 1 s, llmfs's TTL too: the comparison measures the daemons, not caching.
#
# Data: fio buffers refilled for every write and about 50% compressible (text-like for a
# block compressor; the LLM tier is not involved: it compacts cold chunks later). Before
# the cold reads, page caches are dropped (root) and both FUSE daemons remounted, so reads
# come from the disk and the store, not from memory.
#
# Disk bytes written: field 7 (sectors written, in 512-byte units) of the sysfs stat of
# the block device (or partition) holding BENCH_DIR, read after a sync before and after
# each workload. The counter is the device's: anything else writing to it meanwhile is
# counted too, so the background rate is measured and printed, and the FUSE daemons' own
# write_bytes (/proc/PID/io: page-cache bytes they dirtied, without the file system's
# journal) are in the raw table. Where the device cannot be found (tmpfs, overlay, a
# network file system), "n/a" and why.
#
# llmfs finishes work in the background: 10 s after the last data request its idle reclaim
# checkpoints the SQLite WAL into the database, moves pages to give free space back, and
# truncates the WAL. So every window, whichever the backend, starts with llmfs idle (WAL
# empty, no write(2) for 1 s), and an llmfs window ends only once it is idle again: its
# figure counts the checkpoint and the reclaim its workload caused (outside the timing),
# and no other backend's figures, times or bytes, carry llmfs's leftovers. That wait is
# 10-20 s per llmfs workload; BENCH_SETTLE_SECS caps it (counted and printed if reached).
set -euo pipefail
shopt -s inherit_errexit
source "$(dirname "$0")/lib.sh"
export LC_ALL=C

ROUNDS=${BENCH_ROUNDS:-3}
SIZE_MB=${BENCH_SIZE_MB:-1024}
RAND_SECS=${BENCH_RAND_SECS:-20}
NFILES=${BENCH_FILES:-10000}
APPEND_LINES=${BENCH_APPEND_LINES:-20000}
TAR_SRC=${BENCH_TAR_SRC:-/usr/include}
SETTLE=${BENCH_SETTLE_SECS:-60}
IDLE=${BENCH_IDLE_SECS:-5}
BINDFS_OPTS=${BENCH_BINDFS_OPTS:-multithreaded,big_writes,kernel_cache}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR

require_fuse
command -v fio >/dev/null || ensure_debs fio
command -v python3 >/dev/null || ensure_debs python3
command -v bindfs >/dev/null || ensure_debs bindfs
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
[[ -d $TAR_SRC ]] || die "BENCH_TAR_SRC=$TAR_SRC is not a directory"
((ROUNDS >= 1)) || die "BENCH_ROUNDS must be at least 1"
# The EXIT trap runs on these too (bash skips it when a signal kills it untrapped).
trap 'exit 130' INT
trap 'exit 143' TERM

make_tmp bench
NATIVE=$LLMFS_TMP/native
STORE=$LLMFS_TMP/store
MNT=$LLMFS_TMP/mnt
DLOG=$LLMFS_TMP/daemon.log
BSRC=$LLMFS_TMP/bindfs-src
BMNT=$LLMFS_TMP/bindfs
BLOG=$LLMFS_TMP/bindfs.log
ARCHIVE=$LLMFS_TMP/tree.tar
RAW=$LLMFS_TMP/raw.tsv
mkdir -p "$NATIVE" "$MNT" "$BSRC" "$BMNT"
: >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the block device under BENCH_DIR ---------------------------------------------------

# Sets DEV_STAT (its sysfs stat file) and DEV_DESC, or DEV_NA (why there is none).
resolve_dev() {
    local dir=$1 src real kname majmin fstype
    DEV_STAT= DEV_DESC= DEV_NA=
    src=$(findmnt -no SOURCE -T "$dir" 2>/dev/null | head -n1) || true
    fstype=$(findmnt -no FSTYPE -T "$dir" 2>/dev/null | head -n1) || true
    src=${src%%\[*} # btrfs: /dev/sda2[/@home]
    if [[ $src == /dev/* ]]; then
        real=$(readlink -f "$src")
        if [[ -b $real ]]; then
            kname=$(lsblk -ndo KNAME "$real" 2>/dev/null | head -n1) || true
            # /sys/class/block has disks (vda, sda, nvme0n1), partitions (vda1, sda1) and
            # mapped devices (dm-0) alike, each with its own stat in the same format.
            if [[ -n $kname && -r /sys/class/block/$kname/stat ]]; then
                DEV_STAT=/sys/class/block/$kname/stat
                DEV_DESC=/dev/$kname
                if [[ -e /sys/class/block/$kname/partition ]]; then
                    DEV_DESC+=" (a partition of /dev/$(lsblk -ndo PKNAME "$real" 2>/dev/null | head -n1))"
                fi
            fi
        fi
    fi
    if [[ -z $DEV_STAT ]]; then
        # /dev/root and the like: the mount's device number names the sysfs node.
        majmin=$(findmnt -no MAJ:MIN -T "$dir" 2>/dev/null | head -n1 | tr -d ' ') || true
        if [[ -n $majmin && -r /sys/dev/block/$majmin/stat ]]; then
            DEV_STAT=/sys/dev/block/$majmin/stat
            DEV_DESC="/dev/$(basename "$(readlink -f "/sys/dev/block/$majmin")") ($majmin)"
        fi
    fi
    if [[ -n $DEV_STAT ]] && ! awk 'NF >= 7 { ok = 1 } END { exit !ok }' "$DEV_STAT"; then
        DEV_NA="$DEV_STAT has fewer than 7 fields"
        DEV_STAT=
    fi
    if [[ -z $DEV_STAT && -z $DEV_NA ]]; then
        DEV_NA="$dir is on '${src:-?}' (${fstype:-?}), which is not a block device found in /sys/class/block or /sys/dev/block"
    fi
    return 0
}
resolve_dev "$LLMFS_TMP"

# Bytes the device has written since boot (sectors are 512 bytes in this file whatever
# the device's sector size); empty without a device.
dev_written() {
    [[ -n $DEV_STAT ]] || return 0
    local f
    read -r -a f <"$DEV_STAT"
    echo $((f[6] * 512)) # bash's 64-bit arithmetic: mawk's printf %d stops at 2^31 - 1
}

# write_bytes of a process (/proc/PID/io: all its threads); empty if unreadable.
proc_written() {
    [[ -n ${1:-} && -r /proc/$1/io ]] || return 0
    awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io" 2>/dev/null || true
}

# llmfs_idle: waits until the llmfs daemon has nothing left to do in the background: the
# WAL truncated by its idle reclaim (llmfs.db-wal empty or absent) and no write(2) for 1 s
# (wchar unchanged over two polls 0.5 s apart); at most SETTLE seconds, counted if reached.
LLMFS_BUSY=0
llmfs_idle() {
    local pid=${LLMFS_PID:-} prev cur wal quiet=0 polls=0
    [[ -n $pid && -r /proc/$pid/io ]] || return 0
    prev=$(awk '$1 == "wchar:" { print $2 }' "/proc/$pid/io")
    while ((polls < SETTLE * 2)); do
        wal=$(stat -c %s "$STORE/llmfs.db-wal" 2>/dev/null) || wal=0
        if ((wal == 0 && quiet >= 2)); then return 0; fi
        sleep 0.5
        cur=$(awk '$1 == "wchar:" { print $2 }' "/proc/$pid/io" 2>/dev/null) || return 0
        if [[ $cur == "$prev" ]]; then quiet=$((quiet + 1)); else quiet=0; fi
        prev=$cur
        polls=$((polls + 1))
    done
    LLMFS_BUSY=$((LLMFS_BUSY + 1))
    log "llmfs still busy after $SETTLE s (WAL $wal bytes); measuring anyway"
}

# background_rate: bytes/s the device writes with nothing of the benchmark running.
background_rate() {
    [[ -n $DEV_STAT ]] || { echo n/a; return 0; }
    local a b
    sync
    a=$(dev_written)
    sleep "$IDLE"
    sync
    b=$(dev_written)
    python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3]) / 1e6:.2f} MB/s')" "$a" "$b" "$IDLE"
}

# --- mounts -------------------------------------------------------------------------------

CACHES_DROPPED=yes
drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        CACHES_DROPPED="no (not root): cold reads may come from memory"
    fi
}

mount_bindfs() {
    bindfs -f -o "$BINDFS_OPTS" "$BSRC" "$BMNT" >>"$BLOG" 2>&1 &
    BINDFS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        is_mounted "$BMNT" && return 0
        if ! kill -0 "$BINDFS_PID" 2>/dev/null; then
            wait "$BINDFS_PID" || true
            BINDFS_PID=
            tail -n 20 "$BLOG" >&2
            die "bindfs -o $BINDFS_OPTS exited before $BMNT was mounted (log above)"
        fi
        sleep 0.1
    done
    die "bindfs: $BMNT not mounted after 10 s"
}

umount_bindfs() {
    [[ -n ${BINDFS_PID:-} ]] || return 0
    timeout 10 fusermount3 -u "$BMNT" || die "fusermount3 -u $BMNT failed"
    local rc=0
    wait "$BINDFS_PID" || rc=$?
    BINDFS_PID=
    ((rc == 0)) || die "bindfs exited with status $rc after unmount"
}

# Called by lib.sh's cleanup_llmfs (the EXIT trap) before the work directory is removed.
cleanup_extra() {
    if is_mounted "$BMNT"; then
        timeout 10 fusermount3 -u "$BMNT" 2>/dev/null || fusermount3 -uz "$BMNT" 2>/dev/null || true
    fi
    if [[ -n ${BINDFS_PID:-} ]]; then
        sleep 0.2
        kill -KILL "$BINDFS_PID" 2>/dev/null || true
        wait "$BINDFS_PID" 2>/dev/null || true
        BINDFS_PID=
    fi
}

mount_all() {
    mount_bindfs
    mount_llmfs "$STORE" "$MNT" "$DLOG" "${BENCH_MOUNT_OPTS:-}"
}

# make_cold BACKEND: drop the page caches, and remount the FUSE daemon.
make_cold() {
    case $1 in
        native) drop_caches ;;
        bindfs)
            umount_bindfs
            drop_caches
            mount_bindfs
            ;;
        llmfs)
            umount_llmfs
            drop_caches
            mount_llmfs "$STORE" "$MNT" "$DLOG" "${BENCH_MOUNT_OPTS:-}"
            ;;
    esac
}

dir_of() {
    case $1 in
        native) echo "$NATIVE" ;;
        bindfs) echo "$BMNT" ;;
        llmfs) echo "$MNT" ;;
    esac
}

daemon_pid() {
    case $1 in
        bindfs) echo "${BINDFS_PID:-}" ;;
        llmfs) echo "${LLMFS_PID:-}" ;;
    esac
}

# --- workloads: each prints its figure (and an extra number) on stdout ---------------------

fio_run() {
    local dir=$1 name=$2
    shift 2
    fio --name="$name" --directory="$dir" --filename=bench.dat --ioengine=psync \
        --refill_buffers --buffer_compress_percentage=50 --buffer_compress_chunk=4096 \
        --output-format=json "$@" >"$LLMFS_TMP/$name.json"
}

json_get() {
    python3 -c "import json,sys; j=json.load(open(sys.argv[1]))['jobs'][0]; print($2)" "$1"
}

# meta MODE DIR: create (with 100 bytes each), stat or unlink BENCH_FILES files; files/s.
meta() {
    python3 - "$1" "$2/meta" "$NFILES" <<'EOF'
import os, sys, time
mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [os.path.join(d, f"f{i:06d}") for i in range(n)]
if mode == "create":
    os.mkdir(d)
    payload = b"x" * 100
    t = time.perf_counter()
    for p in names:
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
elif mode == "stat":
    t = time.perf_counter()
    for p in names:
        os.stat(p)
else:
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
el = time.perf_counter() - t
if mode == "unlink":
    os.rmdir(d)
print(f"{n / el:.1f}")
EOF
}

# append DIR: BENCH_APPEND_LINES JSONL lines of about 200 bytes, one write(2) each, an
# fsync every 64 lines and at the end; prints lines/s and the bytes appended.
append() {
    python3 - "$1/log.jsonl" "$APPEND_LINES" <<'EOF'
import json, os, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(15)
words = "ok cache miss hit upstream timeout retry queued served slow fast user item order".split()
lines = []
for i in range(n):
    rec = {
        "ts": f"2026-12-05T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}Z",
        "seq": i,
        "level": rng.choice(["info", "info", "info", "warn", "error"]),
        "method": rng.choice(["GET", "GET", "POST", "PUT"]),
        "path": f"/api/v1/{rng.choice(['items', 'users', 'orders'])}/{rng.randrange(100000)}",
        "status": rng.choice([200, 200, 200, 201, 404, 500]),
        "ms": round(rng.expovariate(1 / 40), 2),
        "req": f"{rng.getrandbits(64):016x}",
        "msg": " ".join(rng.choice(words) for _ in range(rng.randrange(4, 10))),
    }
    lines.append((json.dumps(rec, separators=(",", ":")) + "\n").encode())
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
t = time.perf_counter()
for i, line in enumerate(lines, 1):
    os.write(fd, line)
    if i % 64 == 0:
        os.fsync(fd)
if n % 64:
    os.fsync(fd)
el = time.perf_counter() - t
os.close(fd)
print(f"{n / el:.1f} {sum(map(len, lines))}")
EOF
}

# seconds CMD...: wall time of a command, in seconds.
seconds() {
    local t0=$EPOCHREALTIME
    "$@"
    local t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# body WORKLOAD DIR BACKEND
body() {
    local w=$1 dir=$2 b=$3
    case $w in
        create | stat | unlink) meta "$w" "$dir" ;;
        append) append "$dir" ;;
        tar) mkdir "$dir/tree" && seconds tar -xf "$ARCHIVE" -C "$dir/tree" ;;
        rm) seconds rm -rf "$dir/tree" ;;
        write)
            fio_run "$dir" "$b-write" --rw=write --bs=1M --size="${SIZE_MB}M" --end_fsync=1
            json_get "$LLMFS_TMP/$b-write.json" "j['write']['bw_bytes'] / 1e6"
            ;;
        read)
            fio_run "$dir" "$b-read" --rw=read --bs=1M --size="${SIZE_MB}M"
            json_get "$LLMFS_TMP/$b-read.json" "j['read']['bw_bytes'] / 1e6"
            ;;
        randread)
            fio_run "$dir" "$b-randread" --rw=randread --bs=4k --size="${SIZE_MB}M" \
                --time_based --runtime="$RAND_SECS"
            json_get "$LLMFS_TMP/$b-randread.json" "j['read']['iops']"
            ;;
    esac
}

# Untimed, uncounted: before a workload (cold caches, a warm archive) and after it.
prep() {
    case $1 in
        read | randread) make_cold "$2" ;;
        tar) cat "$ARCHIVE" >/dev/null ;;
    esac
}
post() {
    local dir
    dir=$(dir_of "$2")
    case $1 in
        append) rm -f "$dir/log.jsonl" ;;
        randread) rm -f "$dir/bench.dat" ;;
    esac
}

# run_one ROUND WORKLOAD BACKEND: one measurement, appended to $RAW.
run_one() {
    local r=$1 w=$2 b=$3 dir out val extra d0 d1 p0 p1 pid disk= pw=
    dir=$(dir_of "$b")
    prep "$w" "$b"
    llmfs_idle
    log "round $r/$ROUNDS: $w on $b"
    pid=$(daemon_pid "$b")
    sync
    d0=$(dev_written)
    p0=$(proc_written "$pid")
    out=$(body "$w" "$dir" "$b")
    read -r val extra <<<"$out"
    if [[ $b == llmfs ]]; then llmfs_idle; fi
    sync
    d1=$(dev_written)
    p1=$(proc_written "$pid")
    if [[ -n $d0 && -n $d1 ]]; then disk=$((d1 - d0)); fi
    if [[ -n $p0 && -n $p1 ]]; then pw=$((p1 - p0)); fi
    post "$w" "$b"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$w" "$b" "$val" "${extra:-}" "${disk:-}" "${pw:-}" >>"$RAW"
}

# --- the rounds -----------------------------------------------------------------------------

log "archiving $TAR_SRC once (outside the timing)"
tar -cf "$ARCHIVE" -C "$(dirname "$TAR_SRC")" "$(basename "$TAR_SRC")"
TAR_ENTRIES=$(tar -tf "$ARCHIVE" | wc -l)
TAR_BYTES=$(stat -c %s "$ARCHIVE")

log "background writes on ${DEV_DESC:-the disk} for $IDLE s"
BG_START=$(background_rate)

mount_all
WORKLOADS=(create stat unlink append tar rm write read randread)
BACKENDS=(native bindfs llmfs)
ROUND_LOAD=()
for ((r = 1; r <= ROUNDS; r++)); do
    ROUND_LOAD+=("round $r: $(cut -d' ' -f1-3 /proc/loadavg)")
    order=()
    for ((i = 0; i < 3; i++)); do order+=("${BACKENDS[(i + r - 1) % 3]}"); done
    for w in "${WORKLOADS[@]}"; do
        for b in "${order[@]}"; do run_one "$r" "$w" "$b"; done
    done
done
umount_bindfs

log "background writes on ${DEV_DESC:-the disk} for $IDLE s"
BG_END=$(background_rate)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- store space: write the sequential file again and keep it, then measure the store offline.
log "store space: writing $SIZE_MB MiB and measuring the store after unmount"
fio_run "$MNT" space-write --rw=write --bs=1M --size="${SIZE_MB}M" --end_fsync=1
logical=$(stat -c %s "$MNT/bench.dat")
umount_llmfs
store_du=$(du -sb "$STORE" | cut -f1)
store_alloc=$(($(du -s --block-size=1 "$STORE" | cut -f1)))
stats=$("$LLMFS_BIN" stats "$STORE" 2>&1) || stats="(llmfs stats failed: $stats)"

# --- report -------------------------------------------------------------------------------

echo
echo "Filesystem benchmark, $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), disk under test: $(df --output=fstype "$LLMFS_TMP" | tail -1) at $TMPDIR"
echo "llmfs: $LLMFS_BIN ($("$LLMFS_BIN" --version 2>&1 | head -n1)), -o ${BENCH_MOUNT_OPTS:-(none)}; bindfs $(bindfs --version 2>&1 | awk '{ print $2; exit }') -o $BINDFS_OPTS"
echo "Rounds: $ROUNDS, each running every workload on native, bindfs and llmfs back to back (order rotated each round)."
echo "Sequential file: $SIZE_MB MiB, ~50% compressible; caches dropped: $CACHES_DROPPED; FUSE daemons remounted before cold reads."
echo "Load average (1, 5, 15 min): before the rounds $LOAD_START; at the start of $(IFS=';'; echo "${ROUND_LOAD[*]}" | sed 's/;/; /g'); after the rounds $LOAD_END."
if [[ -n $DEV_STAT ]]; then
    echo "Disk bytes written: $DEV_STAT ($DEV_DESC), field 7 x 512, after sync; every window starts and llmfs's windows end with llmfs idle (WAL checkpointed and truncated, no write for 1 s)."
    echo "Background writes on that device with the benchmark idle: $BG_START before the rounds, $BG_END after (included in every disk figure)."
else
    echo "Disk bytes written: n/a: $DEV_NA."
fi
if ((LLMFS_BUSY > 0)); then
    echo "llmfs was still busy after BENCH_SETTLE_SECS=$SETTLE s at $LLMFS_BUSY window boundaries: its background work there leaked into the next window."
fi
echo
python3 - "$RAW" "$SIZE_MB" "$RAND_SECS" "$NFILES" "$APPEND_LINES" "$TAR_SRC" "$TAR_ENTRIES" "$TAR_BYTES" <<'EOF'
import csv, statistics, sys
raw, size_mb, rand_secs, nfiles, nlines, tar_src, tar_entries, tar_bytes = sys.argv[1:]
rows = list(csv.reader(open(raw), delimiter="\t"))
# key (round, workload, backend) -> (value, extra, disk, daemon write_bytes)
R = {(r, w, b): (float(v), x, d, p) for r, w, b, v, x, d, p in rows}
rounds = sorted({r for r, _, _ in R}, key=int)
# workload -> label, unit, higher is better
W = {
    "write": (f"sequential write (fio, 1 MiB writes, fsync at end, {size_mb} MiB)", "MB/s", True),
    "read": ("cold sequential read (1 MiB reads; caches dropped, daemons remounted)", "MB/s", True),
    "randread": (f"random 4 KiB reads (cold start, {rand_secs} s)", "reads/s", True),
    "create": (f"create + write 100 B + close ({int(nfiles):,} files)", "files/s", True),
    "stat": (f"stat ({int(nfiles):,} files)", "files/s", True),
    "unlink": (f"unlink ({int(nfiles):,} files)", "files/s", True),
    "append": (f"JSONL appends, ~200 B lines, fsync every 64 ({int(nlines):,} lines)", "lines/s", True),
    "tar": (f"tar -xf of {tar_src} ({int(tar_entries):,} entries, {int(tar_bytes) / 1e6:.0f} MB archive)", "s", False),
    "rm": ("rm -rf of the extracted tree", "s", False),
}

def fmt(v, unit):
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "MB/s":
        return f"{v:,.1f} {unit}"
    return f"{v:,.0f} {unit}"

def fmt_bytes(n):
    if n is None:
        return "n/a"
    for div, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(n) >= div:
            return f"{n / div:,.1f} {u}"
    return f"{n:,.0f} B"

def ratio(r, w):
    # rates: llmfs rate / bindfs rate; times (tar, rm): llmfs time / bindfs time
    m, b = R[(r, w, "llmfs")][0], R[(r, w, "bindfs")][0]
    return m / b if b else float("nan")

def disk(r, w, b):
    d = R[(r, w, b)][2]
    return int(d) if d != "" else None

def per_unit(w, n, r):
    if n is None:
        return ""
    if w == "create":
        return f" ({fmt_bytes(n / int(nfiles))} per file)"
    if w == "append":
        return f" ({n / int(R[(r, w, 'llmfs')][1]):.2f} B per appended byte)"
    return ""

print("| workload | native | bindfs | llmfs | llmfs/bindfs (median of rounds) | disk bytes written (llmfs) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for w, (label, unit, _) in W.items():
    med = [statistics.median(R[(r, w, b)][0] for r in rounds) for b in ("native", "bindfs", "llmfs")]
    rat = statistics.median(ratio(r, w) for r in rounds)
    ds = [disk(r, w, "llmfs") for r in rounds]
    if any(d is None for d in ds):
        dcell = "n/a"
    else:
        md = statistics.median(ds)
        if w == "create":
            dcell = f"{fmt_bytes(md)} ({fmt_bytes(md / int(nfiles))} per file)"
        elif w == "append":
            dcell = f"{fmt_bytes(md)} ({md / int(R[(rounds[0], w, 'llmfs')][1]):.2f} B per appended byte)"
        else:
            dcell = fmt_bytes(md)
    kind = " (time)" if unit == "s" else ""
    print(f"| {label} | {fmt(med[0], unit)} | {fmt(med[1], unit)} | {fmt(med[2], unit)} | {rat:.2f}x{kind} | {dcell} |")
print()
print("llmfs/bindfs: the ratio within each round, then the median of the rounds; for tar and rm")
print("a ratio of times (lower is better), elsewhere of rates (higher is better). Disk bytes: the")
print("median over the rounds of what the device wrote during llmfs's run of the workload.")
print()
print("Per round (raw; disk = bytes the device wrote during that run; daemon = the FUSE daemon's write_bytes):")
print()
print("| round | workload | native | bindfs | llmfs | llmfs/bindfs | disk native | disk bindfs | disk llmfs | daemon bindfs | daemon llmfs |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rounds:
    for w, (label, unit, _) in W.items():
        v = [fmt(R[(r, w, b)][0], unit) for b in ("native", "bindfs", "llmfs")]
        d = [fmt_bytes(disk(r, w, b)) for b in ("native", "bindfs", "llmfs")]
        d[2] += per_unit(w, disk(r, w, "llmfs"), r)
        p = [R[(r, w, b)][3] for b in ("bindfs", "llmfs")]
        p = [fmt_bytes(int(x)) if x != "" else "n/a" for x in p]
        print(f"| {r} | {w} | {' | '.join(v)} | {ratio(r, w):.2f} | {' | '.join(d)} | {' | '.join(p)} |")
EOF
echo
echo "Store space after writing one $SIZE_MB MiB file ($logical bytes logical) and unmounting:"
echo
echo "| measure | bytes | per logical byte |"
echo "| --- | ---: | ---: |"
for pair in "du -sb STORE (apparent)|$store_du" "du -s STORE (allocated)|$store_alloc"; do
    python3 -c "import sys; l,v=sys.argv[1].split('|'); v=int(v); print(f'| {l} | {v:,} | {v/int(sys.argv[2]):.3f} |')" "$pair" "$logical"
done
echo
echo '`llmfs stats STORE` (the chunk bytes held against the bytes on disk):'
echo
echo '```'
echo "$stats"
echo '```'
