#!/usr/bin/env bash
# Crashes at the swap: SIGKILL of the daemon at the moment the real model's compacted LLM
# frames are being swapped in for the fast ones, then a remount that must give back every
# byte that was fsync'd. Prints a markdown table; exits non-zero when a byte is lost or a
# check fails (unlike the benchmarks, this is a test, too slow for every CI run).
#
#   scripts/crash-swap.sh            # 6 cycles
#   CRASH_CYCLES=20 scripts/crash-swap.sh
#
# Each cycle mounts the same store with the real model (cold_after=0, two lanes), writes a
# new file of up to 8 KiB of LLM-written text (two chunks, fewer when the four corpus files
# drawn are short) and fsyncs it, waits until the
# compactor has swapped in its first LLM frame (`user.llmfs.progress`), sleeps a random
# 0-400 ms (the other chunk's swap is due about then: both lanes code at once) and kills
# the daemon with SIGKILL. Then, unmounted, `llmfs fsck` must find the store clean, and
# a remount must read the cycle's file back byte for byte (through the model where its
# chunks were LLM-coded). At the end every file of every cycle is read back once more.
# About 2 minutes a cycle on 2 cores.
#
# Environment: CRASH_CYCLES (6), CRASH_SEED (1), BENCH_DIR (/var/tmp), LLMFS_MODEL,
# LLMFS_BIN, KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

CYCLES=${CRASH_CYCLES:-6}
RANDOM=${CRASH_SEED:-1}
TMPDIR=${BENCH_DIR:-/var/tmp}
export TMPDIR
require_fuse
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
make_tmp crash
STORE=$LLMFS_TMP/store
MNT=$LLMFS_TMP/mnt
SRC=$LLMFS_TMP/src
mkdir -p "$SRC"
OPTS="cold_after=0,llm_lanes=2,llm_threads=2"
[[ -n ${LLMFS_MODEL:-} ]] && OPTS+=",model=$LLMFS_MODEL"
mapfile -t CORPUS < <(ls "$LLMFS_ROOT"/tests/corpus/*.md)

progress() {
    python3 -c "import json,os,sys; print(json.loads(os.getxattr(sys.argv[1], 'user.llmfs.progress'))['compacted_chunks_llm'])" "$MNT"
}

rows=()
failed=0
for ((c = 1; c <= CYCLES; c++)); do
    # 8 KiB of held-out LLM text, a different mix each cycle.
    cat "${CORPUS[$((RANDOM % ${#CORPUS[@]}))]}" "${CORPUS[$((RANDOM % ${#CORPUS[@]}))]}" \
        "${CORPUS[$((RANDOM % ${#CORPUS[@]}))]}" "${CORPUS[$((RANDOM % ${#CORPUS[@]}))]}" |
        head -c 8192 >"$SRC/f$c"
    mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon.log" "$OPTS"
    python3 - "$SRC/f$c" "$MNT/f$c" <<'EOF'
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, data)
os.fsync(fd)
os.close(fd)
EOF
    before=$(progress)
    t0=$(date +%s)
    while (($(progress) == before)); do
        (($(date +%s) - t0 < 900)) || die "cycle $c: no LLM frame swapped in within 15 minutes"
        sleep 0.02
    done
    delay=$((RANDOM % 400))
    sleep "$(printf '0.%03d' "$delay")"
    coded=$(progress)
    kill -9 "$LLMFS_PID"
    wait "$LLMFS_PID" 2>/dev/null || true
    fusermount3 -uz "$MNT" 2>/dev/null || true
    LLMFS_PID=""
    fsck=ok
    "$LLMFS_BIN" fsck "$STORE" >"$LLMFS_TMP/fsck-$c.txt" 2>&1 || { fsck="**not clean**"; failed=1; }
    mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon.log" "llm_lanes=2,llm_threads=2${LLMFS_MODEL:+,model=$LLMFS_MODEL}"
    codecs=$(getfattr --only-values -n user.llmfs.codecs "$MNT/f$c" 2>/dev/null || echo "?")
    back=identical
    cmp -s "$SRC/f$c" "$MNT/f$c" || { back="**DIFFERENT**"; failed=1; }
    umount_llmfs
    rows+=("| $c | $delay ms | $coded | $codecs | $fsck | $back |")
    log "cycle $c: killed $delay ms after a swap; after the crash f$c is $codecs; fsck $fsck; read back $back"
done

log "every file once more"
mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon.log" "llm_lanes=2,llm_threads=2${LLMFS_MODEL:+,model=$LLMFS_MODEL}"
all=identical
for ((c = 1; c <= CYCLES; c++)); do
    cmp -s "$SRC/f$c" "$MNT/f$c" || { all="**f$c DIFFERENT**"; failed=1; }
done
umount_llmfs

echo
echo "### Crashes at the swap: $CYCLES cycles, SIGKILL 0-400 ms after an LLM frame was swapped in"
echo
echo "| cycle | killed after the swap | LLM frames swapped since mount | the file after the crash | fsck | the file read back |"
echo "| ---: | ---: | ---: | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "Every file of every cycle read back at the end: $all."
exit "$failed"
