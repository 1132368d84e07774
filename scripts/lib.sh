# Shared shell helpers for the test and benchmark scripts. Source it; do not run it.
#
# The mount helpers start `llmfs mount` in the background on a store, wait until the mount
# is live, and register a trap that always unmounts (fusermount3 -u, then -uz) and kills
# the daemon, so that a hung mount fails the script instead of hanging it.

LLMFS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LLMFS_BIN="${LLMFS_BIN:-$LLMFS_ROOT/target/release/llmfs}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Fails loudly when FUSE cannot work here: skipping the mount suites silently would make
# a green run mean nothing.
require_fuse() {
    [[ -c /dev/fuse ]] || die "/dev/fuse is missing: FUSE is required (modprobe fuse, or run the container with --device /dev/fuse --cap-add SYS_ADMIN)"
    command -v fusermount3 >/dev/null || die "fusermount3 is missing: install the Debian package fuse3"
}

# apt-get install the given Debian packages that are not installed yet.
ensure_debs() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages (${missing[*]}) and not root to install them"
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# `cargo install CRATE` unless its binary is already on PATH.
ensure_cargo_bin() {
    local bin=$1 crate=${2:-$1}
    command -v "$bin" >/dev/null && return 0
    log "cargo install $crate"
    cargo install --locked "$crate"
}

is_mounted() {
    # Field 5 of mountinfo is the mount point (spaces would be \040; our paths have none).
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# mount_llmfs STORE MNT LOGFILE [OPTIONS]: starts the daemon, sets LLMFS_PID, waits for
# the mount (30 s), and makes the EXIT trap unmount it.
mount_llmfs() {
    local store=$1 mnt=$2 logfile=$3 opts=${4:-}
    [[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
    mkdir -p "$mnt"
    local args=(mount "$store" "$mnt")
    [[ -n $opts ]] && args+=(-o "$opts")
    RUST_LOG=${RUST_LOG:-info} "$LLMFS_BIN" "${args[@]}" >>"$logfile" 2>&1 &
    LLMFS_PID=$!
    LLMFS_MNT=$mnt
    trap cleanup_llmfs EXIT
    local i
    for ((i = 0; i < 300; i++)); do
        is_mounted "$mnt" && return 0
        if ! kill -0 "$LLMFS_PID" 2>/dev/null; then
            wait "$LLMFS_PID" || true
            tail -n 50 "$logfile" >&2
            die "llmfs exited before $mnt was mounted (log above: $logfile)"
        fi
        sleep 0.1
    done
    tail -n 50 "$logfile" >&2
    die "$mnt not mounted after 30 s (log above: $logfile)"
}

# umount_llmfs: clean unmount; fails when the daemon does not exit 0 within 30 s.
umount_llmfs() {
    [[ -n ${LLMFS_PID:-} ]] || return 0
    timeout 10 fusermount3 -u "$LLMFS_MNT" || die "fusermount3 -u $LLMFS_MNT failed"
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$LLMFS_PID" 2>/dev/null || break
        sleep 0.1
    done
    local rc=0
    wait "$LLMFS_PID" || rc=$?
    LLMFS_PID=
    ((rc == 0)) || die "llmfs exited with status $rc after unmount"
}

# A script with mounts of its own defines cleanup_extra (bench-fs.sh: bindfs): it runs
# first, before LLMFS_TMP is removed, because mount_llmfs and make_tmp reset the EXIT trap
# to cleanup_llmfs and a trap of the script's own would be lost.
cleanup_llmfs() {
    if declare -F cleanup_extra >/dev/null; then cleanup_extra || true; fi
    if [[ -n ${LLMFS_MNT:-} ]] && is_mounted "$LLMFS_MNT"; then
        timeout 10 fusermount3 -u "$LLMFS_MNT" 2>/dev/null || timeout 10 fusermount3 -uz "$LLMFS_MNT" 2>/dev/null || true
    fi
    if [[ -n ${LLMFS_PID:-} ]]; then
        sleep 0.5
        kill -KILL "$LLMFS_PID" 2>/dev/null || true
        wait "$LLMFS_PID" 2>/dev/null || true
        LLMFS_PID=
    fi
    if [[ -n ${LLMFS_MNT:-} ]] && is_mounted "$LLMFS_MNT"; then
        fusermount3 -uz "$LLMFS_MNT" 2>/dev/null || true
    fi
    if [[ -n ${LLMFS_TMP:-} && -d $LLMFS_TMP && ${KEEP_TMP:-0} != 1 ]]; then
        rm -rf "$LLMFS_TMP"
    fi
}

# Creates LLMFS_TMP (0755 so that pjdfstest's unprivileged users can reach the mount);
# cleanup_llmfs removes it unless KEEP_TMP=1.
make_tmp() {
    LLMFS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/llmfs-$1.XXXXXX")
    chmod 755 "$LLMFS_TMP"
    trap cleanup_llmfs EXIT
}
