#!/usr/bin/env bash
# Runs fsx (random reads, writes, mmap, truncate, fallocate, copy_file_range, each read
# verified) against a file on a fresh llmfs mount, then remounts and checks that the file
# survived with the size and content fsx last saw.
#
#   scripts/fsx.sh                  # 20,000 operations, seed 1 (what scripts/test.sh runs)
#   scripts/fsx.sh -N 200000 -S 7   # the longer run
#   scripts/fsx.sh --native DIR     # the same against a plain directory, for comparison
#
# Environment: LLMFS_BIN, FSX_MOUNT_OPTS (default none), KEEP_TMP=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ops=20000 seed=1 native=
while (($#)); do
    case $1 in
        -N) ops=$2; shift 2 ;;
        -S) seed=$2; shift 2 ;;
        --native) native=$2; shift 2 ;;
        *) die "usage: $0 [-N OPS] [-S SEED] [--native DIR]" ;;
    esac
done
command -v fsx >/dev/null || die "fsx is not installed (cargo install fsx)"

make_tmp fsx
if [[ -n $native ]]; then
    mkdir -p "$native"
    dir=$native
else
    require_fuse
    mount_llmfs "$LLMFS_TMP/store" "$LLMFS_TMP/mnt" "$LLMFS_TMP/daemon.log" "${FSX_MOUNT_OPTS:-}"
    dir=$LLMFS_TMP/mnt
fi

log "fsx -N $ops -S $seed on $dir"
start=$(date +%s)
rc=0
# -P: failure artifacts (the expected file, the operation log) go outside the mount.
(cd "$LLMFS_TMP" && RUST_LOG=warn timeout 3000 \
    fsx -N "$ops" -S "$seed" -f "$LLMFS_ROOT/mount-tests/fsx.toml" -P "$LLMFS_TMP" "$dir/fsx.file") \
    >"$LLMFS_TMP/fsx.out" 2>&1 || rc=$?
secs=$(($(date +%s) - start))
tail -n 40 "$LLMFS_TMP/fsx.out"
if ((rc != 0)); then
    KEEP_TMP=1
    [[ -z $native ]] && { echo "--- daemon log (tail) ---"; tail -n 40 "$LLMFS_TMP/daemon.log"; }
    die "fsx failed (status $rc) after $secs s; artifacts kept in $LLMFS_TMP"
fi
log "fsx: $ops operations OK in $secs s ($((ops / (secs > 0 ? secs : 1))) ops/s)"

if [[ -z $native ]]; then
    # What fsx left must come back identical from the store after a remount.
    sum_before=$(sha256sum <"$dir/fsx.file")
    size_before=$(stat -c %s "$dir/fsx.file")
    umount_llmfs
    mount_llmfs "$LLMFS_TMP/store" "$LLMFS_TMP/mnt" "$LLMFS_TMP/daemon.log" "${FSX_MOUNT_OPTS:-}"
    [[ $(stat -c %s "$dir/fsx.file") == "$size_before" ]] || die "fsx file size changed across remount"
    [[ $(sha256sum <"$dir/fsx.file") == "$sum_before" ]] || die "fsx file content changed across remount"
    umount_llmfs
    log "fsx file identical after remount ($size_before bytes)"
fi
