//! POSIX permission checks, done by the core so that a mount without
//! `default_permissions` still behaves like a local filesystem (with it, the kernel
//! checks first and these checks agree).

use super::error::{FsError, FsResult};
use crate::store::records::Inode;
use std::sync::OnceLock;

/// Read permission: the bit of each mode triplet, and of an `access(2)` mask.
pub const R: u32 = 4;
/// Write permission bit.
pub const W: u32 = 2;
/// Execute (search, for directories) permission bit.
pub const X: u32 = 1;

/// Who makes a request.
pub struct Caller {
    /// The caller's user id (0: root, which may read and write anything).
    pub uid: u32,
    /// The caller's primary group id.
    pub gid: u32,
    /// The calling process, whose `/proc/PID/status` lists the supplementary groups (0
    /// for the daemon itself: no such file, so none).
    pub pid: u32,
    groups: OnceLock<Vec<u32>>,
}

impl Caller {
    /// A caller whose supplementary groups are read from `/proc/PID/status` the first
    /// time a check needs them.
    pub fn new(uid: u32, gid: u32, pid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid,
            groups: OnceLock::new(),
        }
    }

    /// The daemon itself (internal operations, tests).
    pub fn root() -> Caller {
        let c = Caller::new(0, 0, 0);
        let _ = c.groups.set(Vec::new());
        c
    }

    /// A caller with the given supplementary groups, never read from `/proc` (pid 0).
    pub fn with_groups(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        let c = Caller::new(uid, gid, 0);
        let _ = c.groups.set(groups);
        c
    }

    /// Whether the caller is root (uid 0).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid`, counting supplementary groups. FUSE
    /// requests carry only the primary gid, so the others are read from
    /// `/proc/PID/status`, and only when a check needs them.
    pub fn in_group(&self, gid: u32) -> bool {
        gid == self.gid
            || self
                .groups
                .get_or_init(|| proc_groups(self.pid))
                .contains(&gid)
    }
}

fn proc_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that `caller` may access `inode` for every bit of `mask` (R/W/X).
pub fn check(inode: &Inode, caller: &Caller, mask: u32) -> FsResult<()> {
    if caller.is_root() {
        // Root may read and write anything, and execute what anyone may execute.
        if mask & X != 0 && !inode.is_dir() && inode.mode & 0o111 == 0 {
            return Err(FsError::Access);
        }
        return Ok(());
    }
    let bits = if caller.uid == inode.uid {
        inode.mode >> 6
    } else if caller.in_group(inode.gid) {
        inode.mode >> 3
    } else {
        inode.mode
    } & 7;
    if bits & mask == mask {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// May `caller` remove or rename `victim` out of directory `dir`? (W and X on the
/// directory, and the sticky-bit rule.)
pub fn may_delete(dir: &Inode, victim: &Inode, caller: &Caller) -> FsResult<()> {
    check(dir, caller, W | X)?;
    if dir.mode & libc::S_ISVTX != 0
        && !caller.is_root()
        && caller.uid != dir.uid
        && caller.uid != victim.uid
    {
        return Err(FsError::Perm);
    }
    Ok(())
}

/// Is `caller` the owner (or root)? Required for chmod, utimes to explicit times, etc.
pub fn is_owner(inode: &Inode, caller: &Caller) -> bool {
    caller.is_root() || caller.uid == inode.uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::Time;

    #[test]
    fn owner_group_other_bits() {
        let f = Inode::new(libc::S_IFREG | 0o640, 10, 20, Time::default());
        assert!(check(&f, &Caller::with_groups(10, 99, vec![]), R | W).is_ok());
        assert!(check(&f, &Caller::with_groups(11, 99, vec![20]), R).is_ok());
        assert!(check(&f, &Caller::with_groups(11, 99, vec![20]), W).is_err());
        assert!(check(&f, &Caller::with_groups(11, 99, vec![]), R).is_err());
        assert!(
            check(&f, &Caller::root(), X).is_err(),
            "root needs some x bit to execute"
        );
    }

    #[test]
    fn sticky_directories() {
        let d = Inode::new(libc::S_IFDIR | 0o1777, 1, 1, Time::default());
        let f = Inode::new(libc::S_IFREG | 0o644, 2, 2, Time::default());
        assert!(may_delete(&d, &f, &Caller::with_groups(2, 2, vec![])).is_ok());
        assert!(matches!(
            may_delete(&d, &f, &Caller::with_groups(3, 3, vec![])),
            Err(FsError::Perm)
        ));
    }
}
