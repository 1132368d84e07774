#!/usr/bin/env bash
# Runs the many-writers stress test (mount-tests: concurrency::many_writers_with_fsync...)
# RUNS times in a row at a larger scale, and prints how many runs and operations passed.
# A stall fails through the harness watchdog (LLMFS_MOUNT_TEST_TIMEOUT, default 300 s).
#
#   scripts/stress.sh [RUNS]        (default 20; LLMFS_STRESS_THREADS=16 LLMFS_STRESS_ROUNDS=400)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
runs=${1:-20}
export LLMFS_STRESS_THREADS=${LLMFS_STRESS_THREADS:-16} LLMFS_STRESS_ROUNDS=${LLMFS_STRESS_ROUNDS:-400}
require_fuse
cargo build --release --quiet --tests
bin=$(ls -t target/release/deps/mount-* | grep -v '\.d$' | head -1)
passed=0
for i in $(seq "$runs"); do
    start=$(date +%s)
    "$bin" --test-threads=1 --exact concurrency::many_writers_with_fsync_never_stall_or_lose_data >/tmp/llmfs-stress.log 2>&1 ||
        { cat /tmp/llmfs-stress.log; die "run $i failed"; }
    passed=$((passed + 1))
    log "run $i passed in $(($(date +%s) - start)) s"
done
ops=$((runs * LLMFS_STRESS_THREADS * LLMFS_STRESS_ROUNDS))
echo "stress: $passed of $runs runs passed, $LLMFS_STRESS_THREADS writer threads x $LLMFS_STRESS_ROUNDS rounds each ($ops appends, $((ops / 5)) fsyncs, $((ops / 7 * 2)) renames/creates, $((ops / 11)) full reads), no stall"
