#!/usr/bin/env bash
# Two llmfs builds side by side on the fast tier (`-o nomodel`), in interleaved rounds,
# to say what one change bought: a cold sequential read and JSONL appends with an fsync
# every 64 lines. Prints a markdown table: per round, then the medians and NEW/OLD.
# A benchmark, not a test: it fails only when a workload fails.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY
#
# Environment (defaults in brackets):
#   AB_DIR      the disk under test [/var/tmp]
#   AB_ROUNDS   rounds [3]; each runs both workloads on OLD, then NEW
#   AB_READ_MB  the file read cold, MiB [128]: JSONL made from tests/corpus
#   AB_LINES    JSONL lines appended (~100 B each), fsync every 64 [20000]
#
# Cold: the store is written once per round by the binary under test, unmounted, the
# page cache dropped (root) and the store mounted read-only again before `cat`. Disk
# bytes: the sectors-written counter of the device holding AB_DIR, after a sync, over the
# append run and 2 s after it (the WAL's writes included).
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,17p' "$0"; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
DIR=${AB_DIR:-/var/tmp}; ROUNDS=${AB_ROUNDS:-3}; READ_MB=${AB_READ_MB:-128}
LINES=${AB_LINES:-20000}
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

cold_read() { # binary -> MB/s
    rm -rf "$W/s"; mount_llmfs "$1" ""
    cp "$W/data" "$W/m/data"; unmount_llmfs
    mount_llmfs "$1" ",ro"; sync; echo 3 > /proc/sys/vm/drop_caches
    local t0 t1; t0=$(date +%s.%N); cat "$W/m/data" > /dev/null; t1=$(date +%s.%N)
    cmp -s "$W/data" "$W/m/data" || { echo "read back differs" >&2; exit 1; }
    unmount_llmfs
    python3 -c "print(f'{$READ_MB*1.048576/($t1-$t0):.0f}')"
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

declare -A R
for r in $(seq "$ROUNDS"); do
    for b in OLD NEW; do
        bin=${!b}
        R[$r,$b,read]=$(cold_read "$bin")
        read -r R[$r,$b,rate] R[$r,$b,p50] R[$r,$b,amp] <<< "$(appends "$bin")"
        echo "round $r $b: read ${R[$r,$b,read]} MB/s, appends ${R[$r,$b,rate]} lines/s, fsync p50 ${R[$r,$b,p50]} us, ${R[$r,$b,amp]} disk B per appended B" >&2
    done
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "OLD: $OLD ($("$OLD" --version 2>/dev/null || echo '?'))"
echo "NEW: $NEW ($("$NEW" --version 2>/dev/null || echo '?'))"
echo "$(nproc) CPUs, $(uname -r), device $dev; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | binary | cold sequential read, MB/s | appends, lines/s | fsync p50, µs | disk bytes per appended byte |"
echo "| ---: | --- | ---: | ---: | ---: | ---: |"
for r in $(seq "$ROUNDS"); do for b in OLD NEW; do
    echo "| $r | $b | ${R[$r,$b,read]} | ${R[$r,$b,rate]} | ${R[$r,$b,p50]} | ${R[$r,$b,amp]} |"
done; done
declare -A M
for k in read rate p50 amp; do
    o=(); n=()
    for r in $(seq "$ROUNDS"); do o+=("${R[$r,OLD,$k]}"); n+=("${R[$r,NEW,$k]}"); done
    M[OLD_$k]=$(median "${o[@]}"); M[NEW_$k]=$(median "${n[@]}")
done
echo "| median | OLD | ${M[OLD_read]} | ${M[OLD_rate]} | ${M[OLD_p50]} | ${M[OLD_amp]} |"
echo "| median | NEW | ${M[NEW_read]} | ${M[NEW_rate]} | ${M[NEW_p50]} | ${M[NEW_amp]} |"
ratio() { python3 -c "print(f'{$2/$1:.2f}x')"; }
echo "| | NEW/OLD | $(ratio "${M[OLD_read]}" "${M[NEW_read]}") | $(ratio "${M[OLD_rate]}" "${M[NEW_rate]}") | $(ratio "${M[OLD_p50]}" "${M[NEW_p50]}") | $(ratio "${M[OLD_amp]}" "${M[NEW_amp]}") |"
