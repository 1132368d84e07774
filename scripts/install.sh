#!/usr/bin/env bash
# Installs llmfs for system use (as root):
#   /usr/local/bin/llmfs                    the binary (mount(8) runs helpers with a fixed
#                                           PATH, so it must be in a standard directory)
#   /sbin/mount.fuse.llmfs                  mount(8) helper for `-t fuse.llmfs` and fstab
#   /etc/systemd/system/llmfs@.service      the supervised mount (see systemd/README.md)
#   /etc/systemd/system/llmfs-metrics@.{service,timer}
#                                           its figures for node_exporter, every minute
#   /etc/llmfs/llmfs.env.example            template of a mount's environment file
#   /usr/local/share/doc/llmfs/systemd.md   the systemd/fstab documentation
#   /var/lib/llmfs/models/                  the default model (scripts/fetch-model.sh),
#                                           found by daemons that run without a home
# and installs the fuse3 package when missing. Builds the release binary first unless
# LLMFS_BIN points at one. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$LLMFS_ROOT"

[[ $(id -u) -eq 0 ]] || die "run as root"
ensure_debs fuse3
if [[ ! -x $LLMFS_BIN ]]; then
    log "building the release binary"
    cargo build --release --bin llmfs
fi

install -D -m 0755 "$LLMFS_BIN" /usr/local/bin/llmfs
install -D -m 0755 scripts/mount.fuse.llmfs /sbin/mount.fuse.llmfs
install -D -m 0644 systemd/llmfs@.service /etc/systemd/system/llmfs@.service
install -D -m 0644 systemd/llmfs-metrics@.service /etc/systemd/system/llmfs-metrics@.service
install -D -m 0644 systemd/llmfs-metrics@.timer /etc/systemd/system/llmfs-metrics@.timer
install -D -m 0644 systemd/llmfs.env.example /etc/llmfs/llmfs.env.example
install -D -m 0644 systemd/README.md /usr/local/share/doc/llmfs/systemd.md
bash scripts/fetch-model.sh /var/lib/llmfs/models
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
log "installed: $(/usr/local/bin/llmfs --version)"
log "next: mkdir -p /srv/archive && mount -t fuse.llmfs /var/lib/llmfs/archive /srv/archive, or see systemd/README.md"
