#!/usr/bin/env bash
# Two llmfs builds side by side on the fast tier (`-o nomodel`), in interleaved rounds,
# to say what one change bought: a sequential write, a cold sequential read, JSONL appends
# with an fsync every 64 lines, and `tar -xf` of /usr/include. Prints a markdown table:
# per round, then the medians and NEW/OLD.
# A benchmark, not a test: it fails only when a workload fails.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY
#
# Environment (defaults in brackets):
#   AB_DIR      the disk under test [/var/tmp]
#   AB_ROUNDS   rounds [3]; each runs every workload on OLD, then NEW
#   AB_READ_MB  the file read cold, MiB [128]: JSONL made from tests/corpus
#   AB_LINES    JSONL lines appended (~100 B each), fsync every 64 [20000]
#   AB_TAR      the tree archived once and extracted each round [/usr/include]
#
# Write: `dd bs=1M conv=fsync` of that file into a fresh store. Cold: the store is then
# unmounted, the page cache dropped (root) and the store mounted read-only again before
# `cat`. Disk bytes: the sectors-written counter of the device holding AB_DIR, after a
# sync, over the run and 2 s after it (the WAL's writes included).
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,17p' "$0"; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
DIR=${AB_DIR:-/var/tmp}; ROUNDS=${AB_ROUNDS:-3}; READ_MB=${AB_READ_MB:-128}
LINES=${AB_LINES:-20000}; TREE=${AB_TAR:-/usr/include}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "run as root (drop_caches)" >&2; exit 1; }
W=$(mktemp -d "$DIR/llmfs-ab.XXXXXX")
cleanup() {
    mountpoint -q "$W/m" && fusermount3 -u "$W/m" || true
    rm -rf "$W"
}
trap cleanup EXIT
dev=$(basename "$(df --output=source "$DIR" | tail -1)")
dev=${dev%%[0-9]*}; [[ -e /sys/class/block/$dev/stat ]] || dev=$(lsblk -no pkname "$(df --output=source "$DIR" | tail -1)")
sectors() { awk '{print $7}' "/sys/class/block/$dev/stat"; }

python3 - "$ROOT/tests/corpus" "$READ_MB" > "$W/data" <<'P'
import sys, pathlib
src = b"".join(p.read_bytes() for p in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")))
assert src, "no JSONL in tests/corpus"
out, n, i, want = sys.stdout.buffer, 0, 0, int(sys.argv[2]) << 20
while n < want:
    b = src.replace(b'"id"', b'"id%d"' % i)
    out.write(b); n += len(b); i += 1
P

mount_llmfs() { # binary, extra options
    mkdir -p "$W/m"
    "$1" mount "$W/s" "$W/m" -o "nomodel$2" 2>>"$W/log" &
    for _ in $(seq 100); do mountpoint -q "$W/m" && return 0; sleep 0.1; done
    echo "mount failed; log:" >&2; cat "$W/log" >&2; exit 1
}
unmount_llmfs() { fusermount3 -u "$W/m"; wait; }

write_and_cold_read() { # binary -> "write_MB/s read_MB/s"
    rm -rf "$W/s"; mount_llmfs "$1" ""
    local t0 t1 t2 t3; t0=$(date +%s.%N)
    dd if="$W/data" of="$W/m/data" bs=1M conv=fsync status=none; t1=$(date +%s.%N)
    unmount_llmfs
    mount_llmfs "$1" ",ro"; sync; echo 3 > /proc/sys/vm/drop_caches
    t2=$(date +%s.%N); cat "$W/m/data" > /dev/null; t3=$(date +%s.%N)
    cmp -s "$W/data" "$W/m/data" || { echo "read back differs" >&2; exit 1; }
    unmount_llmfs
    python3 -c "m = $READ_MB * 1.048576; print(f'{m / ($t1 - $t0):.0f} {m / ($t3 - $t2):.0f}')"
}

tar_x() { # binary -> "seconds disk_KB_per_entry"
    rm -rf "$W/s"; mount_llmfs "$1" ""
    sync; local s0 s1 t0 t1; s0=$(sectors); t0=$(date +%s.%N)
    tar -xf "$W/tree.tar" -C "$W/m"; t1=$(date +%s.%N)
    sleep 2; sync; s1=$(sectors)
    diff -r --no-dereference "$TREE" "$W/m/$(basename "$TREE")" > /dev/null \
        || { echo "extracted tree differs" >&2; exit 1; }
    unmount_llmfs
    python3 -c "print(f'{$t1 - $t0:.2f} {($s1 - $s0) * 512 / 1000 / $ENTRIES:.1f}')"
}

appends() { # binary -> "lines/s fsync_p50_us bytes_per_appended_byte"
    rm -rf "$W/s"; mount_llmfs "$1" ""
    sync; local s0; s0=$(sectors)
    python3 - "$W/m/log.jsonl" "$LINES" > "$W/t" <<'P'
import os, sys, time
line = b'{"role":"assistant","content":"The quick brown fox jumps over the lazy dog, %07d"}\n'
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
n, fs, t0 = 0, [], time.perf_counter()
for i in range(int(sys.argv[2])):
    b = line % i; os.write(fd, b); n += len(b)
    if i % 64 == 63:
        t = time.perf_counter(); os.fsync(fd); fs.append(time.perf_counter() - t)
os.fsync(fd); os.close(fd)
print(f"{int(sys.argv[2]) / (time.perf_counter() - t0):.0f} {sorted(fs)[len(fs) // 2] * 1e6:.0f} {n}")
P
    sleep 2; sync; local s1; s1=$(sectors)
    unmount_llmfs
    read -r rate p50 n < "$W/t"
    echo "$rate $p50 $(python3 -c "print(f'{($s1-$s0)*512/$n:.2f}')")"
}

tar -cf "$W/tree.tar" -C "$(dirname "$TREE")" "$(basename "$TREE")"
ENTRIES=$(tar -tf "$W/tree.tar" | wc -l)

declare -A R
for r in $(seq "$ROUNDS"); do
    for b in OLD NEW; do
        bin=${!b}
        read -r R[$r,$b,write] R[$r,$b,read] <<< "$(write_and_cold_read "$bin")"
        read -r R[$r,$b,rate] R[$r,$b,p50] R[$r,$b,amp] <<< "$(appends "$bin")"
        read -r R[$r,$b,tar] R[$r,$b,tardisk] <<< "$(tar_x "$bin")"
        echo "round $r $b: write ${R[$r,$b,write]} MB/s, read ${R[$r,$b,read]} MB/s, appends ${R[$r,$b,rate]} lines/s, fsync p50 ${R[$r,$b,p50]} us, ${R[$r,$b,amp]} disk B per appended B, tar ${R[$r,$b,tar]} s, ${R[$r,$b,tardisk]} disk KB per entry" >&2
    done
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "OLD: $OLD ($("$OLD" --version 2>/dev/null || echo '?'))"
echo "NEW: $NEW ($("$NEW" --version 2>/dev/null || echo '?'))"
echo "$(nproc) CPUs, $(uname -r), device $dev; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Workloads: sequential write and cold read of $READ_MB MiB; $LINES JSONL appends; tar -xf of $TREE ($ENTRIES entries, $(du -sm "$W/tree.tar" | cut -f1) MiB)."
echo
echo "| round | binary | sequential write, MB/s | cold sequential read, MB/s | appends, lines/s | fsync p50, µs | disk bytes per appended byte | tar -xf, s | tar: disk KB per entry |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq "$ROUNDS"); do for b in OLD NEW; do
    echo "| $r | $b | ${R[$r,$b,write]} | ${R[$r,$b,read]} | ${R[$r,$b,rate]} | ${R[$r,$b,p50]} | ${R[$r,$b,amp]} | ${R[$r,$b,tar]} | ${R[$r,$b,tardisk]} |"
done; done
declare -A M
K=(write read rate p50 amp tar tardisk)
for k in "${K[@]}"; do
    o=(); n=()
    for r in $(seq "$ROUNDS"); do o+=("${R[$r,OLD,$k]}"); n+=("${R[$r,NEW,$k]}"); done
    M[OLD_$k]=$(median "${o[@]}"); M[NEW_$k]=$(median "${n[@]}")
done
ratio() { python3 -c "print(f'{$2/$1:.2f}x')"; }
for b in OLD NEW; do
    row="| median | $b"; for k in "${K[@]}"; do row+=" | ${M[${b}_$k]}"; done; echo "$row |"
done
row="| | NEW/OLD"; for k in "${K[@]}"; do row+=" | $(ratio "${M[OLD_$k]}" "${M[NEW_$k]}")"; done; echo "$row |"
