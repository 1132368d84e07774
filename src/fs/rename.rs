//! rename(2) and renameat2(2): plain, over an existing file or empty directory,
//! RENAME_NOREPLACE and RENAME_EXCHANGE, each as one store transaction.

use super::perm::{self, W};
use super::{check_name, live, Caller, Core, FsError, FsResult};
use crate::store::records::{Kind, Time};
use crate::store::{Txn, ROOT_INO};

/// How a rename treats an existing entry at the new name (renameat2(2) flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Plain rename(2): an existing file or empty directory at the new name is replaced.
    Replace,
    /// `RENAME_NOREPLACE`: fail with `EEXIST` if the new name exists.
    NoReplace,
    /// `RENAME_EXCHANGE`: swap the two entries; the new name must exist.
    Exchange,
}

impl Core {
    /// Moves `name` in `parent` to `newname` in `newparent` in one store transaction, as
    /// `mode` says. Renaming a name onto another link of the same file does nothing;
    /// moving a directory under itself is `EINVAL`.
    pub fn rename(
        &self,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(newname)?;
        if matches!(name, b"." | b"..") || matches!(newname, b"." | b"..") {
            return Err(FsError::Invalid);
        }
        let _ns = self.ns.lock();
        let (src, src_kind) = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.store.lookup(newparent, newname)?;
        if mode == RenameMode::NoReplace && dst.is_some() {
            return Err(FsError::Exists);
        }
        if mode == RenameMode::Exchange && dst.is_none() {
            return Err(FsError::NotFound);
        }
        if let Some((dst_ino, _)) = dst {
            if dst_ino == src {
                // Two names of one file: POSIX says do nothing.
                return Ok(());
            }
        }
        // A directory cannot move under itself (nor, when exchanging, the other one).
        if src_kind == Kind::Dir && self.is_ancestor(src, newparent)? {
            return Err(FsError::Invalid);
        }
        if let (RenameMode::Exchange, Some((d, Kind::Dir))) = (mode, dst) {
            if self.is_ancestor(d, parent)? {
                return Err(FsError::Invalid);
            }
        }

        // Lock every inode involved, each once.
        let mut inos = vec![parent, newparent, src];
        if let Some((d, _)) = dst {
            inos.push(d);
        }
        inos.sort_unstable();
        inos.dedup();
        let refs = inos
            .iter()
            .map(|&i| self.node(i))
            .collect::<FsResult<Vec<_>>>()?;
        let mut guards = refs.iter().map(live).collect::<FsResult<Vec<_>>>()?;
        let at = |i: u64| inos.iter().position(|&x| x == i).unwrap_or(0);
        let (ip, inp, is) = (at(parent), at(newparent), at(src));

        for i in [ip, inp] {
            if !guards[i].inode.is_dir() {
                return Err(FsError::NotDir);
            }
        }
        perm::may_delete(&guards[ip].inode, &guards[is].inode, caller)?;
        let moves_dir_across = parent != newparent && src_kind == Kind::Dir;
        if moves_dir_across {
            // Its ".." changes: that needs write access to the directory itself.
            perm::check(&guards[is].inode, caller, W)?;
        }
        // Every record changes in memory as it goes into the transaction; if that fails,
        // all are put back: a failed rename over a file that left it with a link count
        // of 0 in memory would delete it, still named, at its next close.
        let saved: Vec<_> = guards.iter().map(|g| g.inode.clone()).collect();
        let committed = (|| -> FsResult<Option<usize>> {
            let now = Time::now();
            let mut t = Txn::new();
            let mut deleted = None;

            match dst {
                None => {
                    perm::check(&guards[inp].inode, caller, W | perm::X)?;
                    t.unlink(parent, name);
                    t.link(newparent, newname, src, src_kind);
                    if moves_dir_across {
                        guards[ip].inode.nlink = guards[ip].inode.nlink.saturating_sub(1);
                        guards[inp].inode.nlink = guards[inp].inode.nlink.saturating_add(1);
                        guards[is].inode.parent = newparent;
                    }
                }
                Some((d, d_kind)) => {
                    let id = at(d);
                    perm::may_delete(&guards[inp].inode, &guards[id].inode, caller)?;
                    if mode == RenameMode::Exchange {
                        if parent != newparent && d_kind == Kind::Dir {
                            perm::check(&guards[id].inode, caller, W)?;
                        }
                        t.link(parent, name, d, d_kind);
                        t.link(newparent, newname, src, src_kind);
                        if parent != newparent {
                            let delta = |k: Kind| i64::from(k == Kind::Dir);
                            let (ds, dd) = (delta(src_kind), delta(d_kind));
                            guards[ip].inode.nlink = (i64::from(guards[ip].inode.nlink) - ds + dd)
                                .clamp(0, i64::from(u32::MAX))
                                as u32;
                            guards[inp].inode.nlink = (i64::from(guards[inp].inode.nlink) + ds - dd)
                                .clamp(0, i64::from(u32::MAX))
                                as u32;
                            if src_kind == Kind::Dir {
                                guards[is].inode.parent = newparent;
                            }
                            if d_kind == Kind::Dir {
                                guards[id].inode.parent = parent;
                            }
                        }
                        guards[id].inode.ctime = now;
                    } else {
                        match (src_kind == Kind::Dir, d_kind == Kind::Dir) {
                            (true, false) => return Err(FsError::NotDir),
                            (false, true) => return Err(FsError::IsDir),
                            (true, true) if !self.store.dir_is_empty(d)? => {
                                return Err(FsError::NotEmpty)
                            }
                            _ => {}
                        }
                        t.unlink(parent, name);
                        t.link(newparent, newname, src, src_kind);
                        if src_kind == Kind::Dir {
                            // The replaced directory's ".." link to newparent goes away.
                            guards[inp].inode.nlink = guards[inp].inode.nlink.saturating_sub(1);
                            if moves_dir_across {
                                guards[ip].inode.nlink = guards[ip].inode.nlink.saturating_sub(1);
                                guards[inp].inode.nlink = guards[inp].inode.nlink.saturating_add(1);
                                guards[is].inode.parent = newparent;
                            }
                        }
                        if self.drop_link(&mut t, d, &mut guards[id], now)? {
                            deleted = Some(id);
                        }
                    }
                }
            }
            guards[is].inode.ctime = now;
            for i in [ip, inp] {
                guards[i].inode.mtime = now;
                guards[i].inode.ctime = now;
            }
            for (k, g) in guards.iter().enumerate() {
                if Some(k) != deleted {
                    t.put_inode(inos[k], &self.record_to_commit(inos[k], g)?);
                }
            }
            self.store.commit(t)?;
            Ok(deleted)
        })();
        match committed {
            Ok(deleted) => {
                if let Some(id) = deleted {
                    self.finish_delete(inos[id], &mut guards[id]);
                }
                Ok(())
            }
            Err(e) => {
                for (g, inode) in guards.iter_mut().zip(saved) {
                    g.inode = inode;
                }
                Err(e)
            }
        }
    }

    /// Is `dir` equal to `node` or one of its ancestors? (Walks `..` up to the root.)
    fn is_ancestor(&self, dir: u64, mut node: u64) -> FsResult<bool> {
        for _ in 0..4096 {
            if node == dir {
                return Ok(true);
            }
            if node == ROOT_INO {
                return Ok(false);
            }
            node = self.getattr(node)?.inode.parent;
        }
        Err(FsError::Io("directory tree too deep or cyclic".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::dir::NewNode;
    use super::super::testutil::{core, new_file};
    use super::*;

    fn file(core: &Core, parent: u64, name: &[u8]) -> u64 {
        new_file(core, &Caller::root(), parent, name, 0o644)
            .unwrap()
            .ino
    }

    #[test]
    fn rename_over_file_exchange_and_noreplace() {
        let (_d, core) = core();
        let r = Caller::root();
        let a = file(&core, ROOT_INO, b"a");
        let b = file(&core, ROOT_INO, b"b");
        assert!(matches!(
            core.rename(&r, ROOT_INO, b"a", ROOT_INO, b"b", RenameMode::NoReplace),
            Err(FsError::Exists)
        ));
        core.rename(&r, ROOT_INO, b"a", ROOT_INO, b"b", RenameMode::Exchange)
            .unwrap();
        assert_eq!(core.lookup(&r, ROOT_INO, b"a").unwrap().ino, b);
        core.rename(&r, ROOT_INO, b"a", ROOT_INO, b"b", RenameMode::Replace)
            .unwrap();
        assert_eq!(core.lookup(&r, ROOT_INO, b"b").unwrap().ino, b);
        assert!(core.getattr(a).is_err(), "the replaced file is gone");
    }

    #[test]
    fn directories_move_with_link_counts_and_not_into_themselves() {
        let (_d, core) = core();
        let r = Caller::root();
        let d1 = core
            .create_node(&r, ROOT_INO, b"d1", NewNode::Dir { mode: 0o755 }, false)
            .unwrap()
            .ino;
        let d2 = core
            .create_node(&r, ROOT_INO, b"d2", NewNode::Dir { mode: 0o755 }, false)
            .unwrap()
            .ino;
        let sub = core
            .create_node(&r, d1, b"sub", NewNode::Dir { mode: 0o755 }, false)
            .unwrap()
            .ino;
        assert!(matches!(
            core.rename(&r, ROOT_INO, b"d1", sub, b"x", RenameMode::Replace),
            Err(FsError::Invalid)
        ));
        core.rename(&r, d1, b"sub", d2, b"sub", RenameMode::Replace)
            .unwrap();
        assert_eq!(core.getattr(d1).unwrap().inode.nlink, 2);
        assert_eq!(core.getattr(d2).unwrap().inode.nlink, 3);
        assert_eq!(core.getattr(sub).unwrap().inode.parent, d2);
        // Over an empty directory.
        core.rename(&r, d2, b"sub", ROOT_INO, b"d1", RenameMode::Replace)
            .unwrap();
        assert!(core.getattr(d1).is_err());
        assert_eq!(core.getattr(ROOT_INO).unwrap().inode.nlink, 4);
    }
}
