//! Attribute changes: chmod, chown, truncate, utimens; and access(2).

use super::chunk::Wait;
use super::file::{clear_suid, Undo};
use super::perm::{self, W};
use super::{Caller, Core, Entry, FsError, FsResult};
use crate::store::records::{Kind, Time};

/// A time to set: the caller's clock ("now", UTIME_NOW) or a given one.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    /// The current time (`UTIME_NOW`): the owner or anyone with write access may set it.
    Now,
    /// A given time: only the owner or root may set it.
    At(Time),
}

/// What setattr changes; `None` leaves a field alone.
#[derive(Default, Debug)]
pub struct SetAttr {
    /// New permission bits (the low 12 bits are used; the file type is kept). Owner or
    /// root only, except that anyone may drop setuid/setgid; setgid is dropped for a
    /// non-root caller outside the file's group.
    pub mode: Option<u32>,
    /// New owner: only root may change it.
    pub uid: Option<u32>,
    /// New group: root, or the owner to one of their own groups. A chown by a non-root
    /// caller clears setuid and setgid on anything but a directory.
    pub gid: Option<u32>,
    /// New length in bytes (truncate or extend): regular files only; needs write access
    /// unless `via_handle`.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// The change comes through an open handle (ftruncate): access was checked at open.
    pub via_handle: bool,
    /// Drop the set-user-ID and set-group-ID bits (those of anything but a directory; the
    /// group's only with its execute bit, as the kernel does): what a chown that names no
    /// new owner or group asks for.
    pub drop_setid: bool,
}

impl Core {
    /// Applies `set` to inode `ino` atomically (whatever fails leaves it as it was) and
    /// returns the new attributes. Every change sets ctime; a size change also sets mtime
    /// unless `mtime` is given.
    pub fn setattr(&self, caller: &Caller, ino: u64, set: &SetAttr, wait: Wait) -> FsResult<Entry> {
        let n = self.node(ino)?;
        let cs = self.chunk_size();
        self.with_chunks(ino, &n, wait, |g, pre| {
            // Whatever fails, the commit included, leaves the node as it was: a failed
            // chmod is not saved by a later flush, nor a failed truncate half done. A
            // truncate changes the dirty chunks from the cut on.
            let cut = set
                .size
                .map_or(u64::MAX, |size| size.min(g.inode.size) / cs);
            let undo = Undo::of(g, cut..u64::MAX);
            let r = (|| {
                let now = Time::now();
                let mut inode = g.inode.clone();
                if set.uid.is_some() || set.gid.is_some() {
                    let uid = set.uid.unwrap_or(inode.uid);
                    let gid = set.gid.unwrap_or(inode.gid);
                    if !caller.is_root() {
                        // Only root gives files away; an owner may pick one of their groups.
                        if uid != inode.uid
                            || caller.uid != inode.uid
                            || (gid != inode.gid && !caller.in_group(gid))
                        {
                            return Err(FsError::Perm);
                        }
                    }
                    if inode.kind() != Kind::Dir {
                        clear_suid(&mut inode.mode);
                    }
                    inode.uid = uid;
                    inode.gid = gid;
                    inode.ctime = now;
                }
                if set.drop_setid && inode.kind() != Kind::Dir {
                    clear_suid(&mut inode.mode);
                    inode.ctime = now;
                }
                if let Some(mode) = set.mode {
                    let mut bits = mode & 0o7777;
                    let only_drops_suid = bits
                        == inode.mode & 0o7777 & !(libc::S_ISUID | libc::S_ISGID)
                        && bits != inode.mode & 0o7777;
                    if !perm::is_owner(&g.inode, caller) && !only_drops_suid {
                        return Err(FsError::Perm);
                    }
                    if !caller.is_root() && !caller.in_group(inode.gid) {
                        bits &= !libc::S_ISGID;
                    }
                    inode.mode = (inode.mode & libc::S_IFMT) | bits;
                    inode.ctime = now;
                }
                if set.atime.is_some() || set.mtime.is_some() {
                    let explicit = matches!(set.atime, Some(SetTime::At(_)))
                        || matches!(set.mtime, Some(SetTime::At(_)));
                    if !perm::is_owner(&g.inode, caller) {
                        if explicit {
                            return Err(FsError::Perm);
                        }
                        perm::check(&g.inode, caller, W)?;
                    }
                    let pick = |t: SetTime| match t {
                        SetTime::Now => now,
                        SetTime::At(t) => t,
                    };
                    if let Some(t) = set.atime {
                        inode.atime = pick(t);
                    }
                    if let Some(t) = set.mtime {
                        inode.mtime = pick(t);
                    }
                    inode.ctime = now;
                }
                if let Some(size) = set.size {
                    match inode.kind() {
                        Kind::File => {}
                        Kind::Dir => return Err(FsError::IsDir),
                        _ => return Err(FsError::Invalid),
                    }
                    if !set.via_handle {
                        perm::check(&g.inode, caller, W)?;
                    }
                    // As the kernel does, whether or not the size changes (an O_TRUNC
                    // open of an empty file too).
                    if !caller.is_root() {
                        clear_suid(&mut inode.mode);
                    }
                    inode.mtime = if set.mtime.is_some() {
                        inode.mtime
                    } else {
                        now
                    };
                    inode.ctime = now;
                    if size < g.inode.size && size % cs != 0 {
                        // The cut chunk, before anything changes (it may need the model).
                        self.dirty_chunk(ino, g, size / cs, false, pre)?;
                    }
                    g.inode = inode;
                    self.truncate_locked(ino, g, size, pre)?;
                    return Ok(Entry {
                        ino,
                        inode: g.inode.clone(),
                    });
                }
                g.inode = inode;
                g.meta_dirty = true;
                if g.open == 0 {
                    self.persist(ino, g)?;
                }
                // An open file's new attributes are saved with its data: by the flush of
                // its close, an fsync, or the background flusher within its interval,
                // whichever comes first (as a write's are). `tar -x` sets owner, mode
                // and times of each file it extracts before closing it: its close then
                // commits data and attributes together, instead of four commits.
                Ok(Entry {
                    ino,
                    inode: g.inode.clone(),
                })
            })();
            if r.is_err() {
                self.roll_back(g, undo);
            }
            r
        })
    }

    /// access(2): `mask` of R/W/X, 0 for existence only.
    pub fn access(&self, caller: &Caller, ino: u64, mask: u32) -> FsResult<()> {
        let inode = self.getattr(ino)?.inode;
        if mask == 0 {
            return Ok(());
        }
        perm::check(&inode, caller, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{core, new_file};
    use super::*;
    use crate::store::ROOT_INO;

    #[test]
    fn chown_rules_and_suid_clearing() {
        let (_d, core) = core();
        let root = Caller::root();
        let f = new_file(&core, &root, ROOT_INO, b"f", 0o6755).unwrap();
        core.setattr(
            &root,
            f.ino,
            &SetAttr {
                uid: Some(1000),
                gid: Some(1000),
                ..Default::default()
            },
            Wait::Model,
        )
        .unwrap();
        let e = core
            .setattr(
                &root,
                f.ino,
                &SetAttr {
                    mode: Some(0o6755),
                    ..Default::default()
                },
                Wait::Model,
            )
            .unwrap();
        assert_eq!(e.inode.mode & 0o7777, 0o6755);
        let alice = Caller::with_groups(1000, 1000, vec![50]);
        assert!(matches!(
            core.setattr(
                &alice,
                f.ino,
                &SetAttr {
                    uid: Some(0),
                    ..Default::default()
                },
                Wait::Model
            ),
            Err(FsError::Perm)
        ));
        assert!(matches!(
            core.setattr(
                &alice,
                f.ino,
                &SetAttr {
                    gid: Some(51),
                    ..Default::default()
                },
                Wait::Model
            ),
            Err(FsError::Perm)
        ));
        let e = core
            .setattr(
                &alice,
                f.ino,
                &SetAttr {
                    gid: Some(50),
                    ..Default::default()
                },
                Wait::Model,
            )
            .unwrap();
        assert_eq!(
            e.inode.mode & 0o7777,
            0o755,
            "chown clears setuid and setgid"
        );

        // A chown that names no owner (the kernel's empty request): a file loses the
        // bits, a directory keeps them.
        let drop = SetAttr {
            drop_setid: true,
            ..Default::default()
        };
        let set_mode = |ino, mode| {
            let m = SetAttr {
                mode: Some(mode),
                ..Default::default()
            };
            core.setattr(&root, ino, &m, Wait::Model).unwrap();
        };
        set_mode(f.ino, 0o6755);
        let e = core.setattr(&alice, f.ino, &drop, Wait::Model).unwrap();
        assert_eq!(e.inode.mode & 0o7777, 0o755);
        let d = core
            .create_node(
                &root,
                ROOT_INO,
                b"d",
                super::super::dir::NewNode::Dir { mode: 0o2755 },
                false,
            )
            .unwrap();
        let e = core.setattr(&root, d.ino, &drop, Wait::Model).unwrap();
        assert_eq!(e.inode.mode & 0o7777, 0o2755);
    }

    #[test]
    fn utimens_now_needs_write_access_explicit_needs_ownership() {
        let (_d, core) = core();
        let root = Caller::root();
        let f = new_file(&core, &root, ROOT_INO, b"f", 0o666).unwrap();
        let bob = Caller::with_groups(1001, 1001, vec![]);
        let now = SetAttr {
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..Default::default()
        };
        core.setattr(&bob, f.ino, &now, Wait::Model).unwrap();
        let at = SetAttr {
            mtime: Some(SetTime::At(Time { secs: 5, nsecs: 0 })),
            ..Default::default()
        };
        assert!(matches!(
            core.setattr(&bob, f.ino, &at, Wait::Model),
            Err(FsError::Perm)
        ));
        let e = core.setattr(&root, f.ino, &at, Wait::Model).unwrap();
        assert_eq!(e.inode.mtime.secs, 5);
    }
}
