#!/usr/bin/env bash
# Runs the whole pjdfstest suite against a fresh llmfs mount and compares the result with
# mount-tests/pjdfstest-expected-failures.txt. Exit status 1 on any unexpected failure,
# on fewer passes than PJDFSTEST_MIN_PASS, or when the mount misbehaves.
#
#   scripts/pjdfstest.sh                 # fresh store, mounted with $PJDFSTEST_MOUNT_OPTS
#   scripts/pjdfstest.sh --native DIR    # baseline on a plain directory (no comparison)
#
# Environment: LLMFS_BIN (default target/release/llmfs), PJDFSTEST_MOUNT_OPTS (default
# allow_other,default_permissions: pjdfstest switches to unprivileged users, which a FUSE
# mount refuses without allow_other), PJDFSTEST_MIN_PASS (default 383: what native ext4
# passes here with the same configuration), KEEP_TMP=1 keeps store, log and output.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CONFIG=$LLMFS_ROOT/mount-tests/pjdfstest.toml
EXPECTED=$LLMFS_ROOT/mount-tests/pjdfstest-expected-failures.txt
MOUNT_OPTS=${PJDFSTEST_MOUNT_OPTS-allow_other,default_permissions}
MIN_PASS=${PJDFSTEST_MIN_PASS:-383}

[[ $(id -u) -eq 0 ]] || die "pjdfstest needs root (it switches users and creates device nodes)"
command -v pjdfstest >/dev/null || die "pjdfstest is not installed (cargo install pjdfstest)"

# The second dummy user of the configuration; Debian already has nobody:nogroup.
if ! getent passwd tests >/dev/null; then
    log "creating the unprivileged user/group 'tests' for pjdfstest"
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tests
fi

make_tmp pjdfstest
out=$LLMFS_TMP/pjdfstest.out

if [[ ${1:-} == --native ]]; then
    dir=${2:?--native needs a directory}
    mkdir -p "$dir"
    chmod 755 "$dir"
    secondary=()
    target=$dir
else
    require_fuse
    mount_llmfs "$LLMFS_TMP/store" "$LLMFS_TMP/mnt" "$LLMFS_TMP/daemon.log" "$MOUNT_OPTS"
    # A distinct filesystem for the cross-device (EXDEV) cases: the temp dir's own disk.
    mkdir -p "$LLMFS_TMP/secondary"
    chmod 755 "$LLMFS_TMP/secondary"
    secondary=(-s "$LLMFS_TMP/secondary")
    target=$LLMFS_TMP/mnt
fi

log "pjdfstest on $target"
start=$(date +%s)
rc=0
(cd "$target" && NO_COLOR=1 RUST_BACKTRACE=0 timeout 1200 \
    pjdfstest -c "$CONFIG" -p "$target" "${secondary[@]}") >"$out" 2>&1 || rc=$?
log "pjdfstest took $(($(date +%s) - start)) s (exit status $rc)"
((rc == 124)) && { tail -n 30 "$out"; die "pjdfstest timed out after 1200 s"; }
grep -E '^Summary' "$out" || { tail -n 30 "$out"; die "pjdfstest did not finish (no Summary line)"; }

if [[ ${1:-} == --native ]]; then
    grep -E ' (FAILED)$' -A2 "$out" || true
    exit 0
fi

# The mount must have survived the whole suite.
is_mounted "$target" || { tail -n 50 "$LLMFS_TMP/daemon.log"; die "the mount disappeared during pjdfstest"; }

# One line per test: NAME  (ok | FAILED | skipped | failed as expected | PASSED UNEXPECTEDLY).
sed 's/\x1b\[[0-9;]*m//g' "$out" |
    sed -nE 's/^([a-z0-9_]+(::[A-Za-z0-9_]+)+) +(ok|FAILED|skipped)$/\1 \3/p' >"$LLMFS_TMP/results"
passed=$(awk '$2 == "ok"' "$LLMFS_TMP/results" | wc -l)
failed=$(awk '$2 == "FAILED"' "$LLMFS_TMP/results" | wc -l)
skipped=$(awk '$2 == "skipped"' "$LLMFS_TMP/results" | wc -l)
total=$(wc -l <"$LLMFS_TMP/results")

# Expected failures: TEST_NAME CATEGORY REASON; check every entry is well formed.
grep -vE '^\s*(#|$)' "$EXPECTED" >"$LLMFS_TMP/expected" || true
if awk 'NF < 3 || ($2 != "design" && $2 != "bug") { print "malformed: " $0; bad = 1 } END { exit bad }' \
    "$LLMFS_TMP/expected" >&2; then :; else die "malformed lines in $EXPECTED"; fi

unexpected=$(awk 'NR == FNR { listed[$1] = 1; next } $2 == "FAILED" && !listed[$1] { print $1 }' \
    "$LLMFS_TMP/expected" "$LLMFS_TMP/results")
now_passing=$(awk 'NR == FNR { ok[$1] = 1; next } ok[$1] { print $1 }' \
    <(awk '$2 == "ok"' "$LLMFS_TMP/results") "$LLMFS_TMP/expected")
missing=$(awk 'NR == FNR { seen[$1] = 1; next } !seen[$1] { print $1 }' \
    "$LLMFS_TMP/results" "$LLMFS_TMP/expected")
expected_failed=$(awk 'NR == FNR { listed[$1] = $2; next } $2 == "FAILED" && listed[$1] { print listed[$1] }' \
    "$LLMFS_TMP/expected" "$LLMFS_TMP/results" | sort | uniq -c | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')

echo
echo "pjdfstest on llmfs (-o $MOUNT_OPTS): $passed passed, $failed failed (expected: ${expected_failed:-none}), $skipped skipped, $total total"
status=0
if [[ -n $unexpected ]]; then
    echo "UNEXPECTED FAILURES (not in $EXPECTED):"
    for t in $unexpected; do
        echo "  $t"
        # The assertion message pjdfstest printed under the test's line.
        sed 's/\x1b\[[0-9;]*m//g' "$out" | awk -v t="$t" '$1 == t { p = 1; next } p && /^\t/ { print "      " $0; next } { p = 0 }'
    done
    status=1
fi
if [[ -n $now_passing ]]; then
    echo "Listed as expected failures but now PASS (remove them from the list):"
    printf '  %s\n' $now_passing
fi
if [[ -n $missing ]]; then
    echo "Listed as expected failures but not run (renamed or skipped?):"
    printf '  %s\n' $missing
fi
if ((passed < MIN_PASS)); then
    echo "only $passed tests passed; at least $MIN_PASS must (native ext4's count)"
    status=1
fi
if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "output kept in $LLMFS_TMP"; fi
umount_llmfs
exit $status
