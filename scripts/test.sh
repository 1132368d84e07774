#!/usr/bin/env bash
# The project's whole test command, from a fresh clone on Debian as root:
#
#   1. Debian packages the build and the mount tests need (installed when missing)
#   2. pjdfstest and fsx (cargo install when missing)
#   3. the default model (scripts/fetch-model.sh), for the codec's integration tests
#   4. cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings
#   5. cargo test --release: unit, integration and mount tests (mount-tests/)
#   6. systemd-analyze verify on the units in systemd/ (scripts/verify-units.sh)
#   7. pjdfstest (with and without default_permissions) and fsx (default and 1 KiB
#      chunks), each against a fresh mount
#
# FUSE is required: without /dev/fuse or fusermount3 this fails, it never skips.
# Prints the time of each stage and a summary table at the end.
#
# Environment: FSX_OPS (default 20000), FSX_SEED (default 1), SKIP_LINT=1 skips stage 4
# (local iterations only; CI runs everything).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
STAGES=()
FAILED=()
T0=$(date +%s)

# stage NAME CMD...: runs and times one stage. A failed check stage is recorded and the
# later stages still run (so one failing test does not hide pjdfstest's or fsx's
# verdict); the script exits non-zero at the end. `stage --fatal` stops at once, for
# stages the rest cannot do without (packages, tools, the build).
stage() {
    local fatal=0
    [[ $1 == --fatal ]] && { fatal=1; shift; }
    local name=$1
    shift
    log "$name"
    local start rc
    start=$(date +%s)
    # A subshell with errexit, not `"$@" || rc=$?`: bash ignores `set -e` inside anything
    # run as the left side of ||, so a failing first command of a stage would be masked.
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    local secs=$(($(date +%s) - start))
    STAGES+=("$(printf '| %-28s | %6d s | %s |' "$name" "$secs" "$([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)")")")
    if ((rc != 0)); then
        FAILED+=("$name")
        if ((fatal)); then
            summary
            die "stage '$name' failed (status $rc)"
        fi
    fi
}

summary() {
    echo
    echo "| stage | time | result |"
    echo "| --- | ---: | --- |"
    printf '%s\n' "${STAGES[@]}"
    echo "| total | $(($(date +%s) - T0)) s | |"
}

install_debs() {
    # Build: llama.cpp via cmake + bindgen (clang, libclang); FUSE: fuse3 + libfuse3-dev;
    # pjdfstest links libacl; the mount tests use diff/du/find (diffutils, coreutils,
    # findutils are essential); bench-fs.sh uses fio; systemd-analyze checks the units.
    ensure_debs fuse3 libfuse3-dev cmake clang libclang-dev pkg-config build-essential \
        libacl1-dev acl fio curl ca-certificates python3 unzip systemd
}

install_tools() {
    command -v cargo >/dev/null || die "cargo is missing: install Rust (rustup) first"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || die "cargo fmt/clippy are missing and rustup is not there to add them"
        rustup component add rustfmt clippy
    fi
    ensure_cargo_bin pjdfstest
    ensure_cargo_bin fsx
}

# The codec's and the CLI's integration tests assert that the model is there: they fail,
# never skip, without it.
fetch_model() {
    bash scripts/fetch-model.sh
}

lint() {
    cargo fmt --all -- --check
    cargo clippy --release --all-targets -- -D warnings
    # Broken or private intra-doc links fail (release profile: reuses the build's llama.cpp).
    RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps
}

cargo_tests() {
    # Mount tests start the daemon binary that this build produces; FUSE must be there.
    require_fuse
    # The mount tests' own watchdog aborts a hung mount after 300 s per test; this bounds
    # everything else (a hung build script, a test outside mount-tests).
    timeout --kill-after=30 3600 cargo test --release --no-fail-fast -- --test-threads=2
}

# pjdfstest twice: with default_permissions the kernel checks modes, without it llmfs's
# own permission checks answer (3-5 s each). allow_other implies default_permissions
# unless no_default_permissions says otherwise.
pjdfstest_suite() {
    PJDFSTEST_MOUNT_OPTS=allow_other scripts/pjdfstest.sh
    PJDFSTEST_MOUNT_OPTS=allow_other,no_default_permissions scripts/pjdfstest.sh
}
# fsx on the default chunk size, on the smallest (1 KiB) where every operation crosses
# chunk boundaries, and with the compactor settling chunks under fsx's feet (synthetic
# model, cold_after=0).
fsx_suite() {
    scripts/fsx.sh -N "${FSX_OPS:-20000}" -S "${FSX_SEED:-1}"
    FSX_MOUNT_OPTS=chunk_size=1K scripts/fsx.sh -N "${FSX_OPS:-20000}" -S "$((${FSX_SEED:-1} + 1))"
    FSX_MOUNT_OPTS=test_model,cold_after=0 scripts/fsx.sh -N "${FSX_OPS:-20000}" -S "$((${FSX_SEED:-1} + 2))"
}

[[ $(id -u) -eq 0 ]] || die "run as root: the mount tests and pjdfstest need it (CI runs as root)"
stage --fatal "debian packages" install_debs
stage --fatal "pjdfstest, fsx install" install_tools
require_fuse
stage --fatal "fetch model" fetch_model
if [[ ${SKIP_LINT:-0} != 1 ]]; then
    stage "fmt + clippy" lint
fi
stage --fatal "build (release)" cargo build --release --all-targets
stage "systemd units" scripts/verify-units.sh
stage "cargo test (incl. mount)" cargo_tests
stage "pjdfstest (2 mounts)" pjdfstest_suite
stage "fsx 3 x ${FSX_OPS:-20000} ops" fsx_suite
summary
((${#FAILED[@]} == 0)) || die "failed stages: ${FAILED[*]}"
log "all tests passed"
