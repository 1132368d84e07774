//! Names: lookup, creating and removing entries, hard links, symlinks, readdir.

use super::perm::{self, R, W, X};
use super::policy::{self, Policy};
use super::{check_name, live, Caller, Core, Entry, FsError, FsResult, Node};
use crate::store::records::{Inode, Kind, Time};
use crate::store::Txn;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What to create.
pub enum NewNode<'a> {
    /// A regular file or a special file (FIFO, socket, device).
    File {
        /// File type and permission bits, as mknod(2) takes them (the caller passes a
        /// file, FIFO, socket or device type); bits naming no type are `EINVAL`.
        mode: u32,
        /// Device number of a character or block device (0 otherwise).
        rdev: u32,
    },
    /// A directory.
    Dir {
        /// Permission bits (the low 12 are used).
        mode: u32,
    },
    /// A symbolic link (mode `0o777`).
    Symlink {
        /// The bytes the link points to, stored as is.
        target: &'a [u8],
    },
}

/// An open directory: readdir cookies are handed out per handle and name the entry
/// they follow, so a listing resumes after a name (in name order) and stays correct
/// while entries are added or removed concurrently.
pub struct DirHandle {
    ino: u64,
    names: Vec<Vec<u8>>,
}

/// Files with more chunks than this are deleted in the background.
const REAP_INLINE_CHUNKS: u64 = 1024;

/// Cookies 1 and 2 are `.` and `..`; entry `names[i]` has cookie `i + 3`.
const FIRST_NAME_COOKIE: u64 = 3;

impl Core {
    /// The entry `name` in directory `parent` (`.` and `..` included); needs search
    /// access to `parent`.
    pub fn lookup(&self, caller: &Caller, parent: u64, name: &[u8]) -> FsResult<Entry> {
        check_name(name)?;
        let p = self.getattr(parent)?.inode;
        if !p.is_dir() {
            return Err(FsError::NotDir);
        }
        perm::check(&p, caller, X)?;
        let ino = match name {
            b"." => parent,
            b".." => p.parent,
            _ => self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?.0,
        };
        self.getattr(ino)
    }

    /// Creates a file, special file, directory or symlink; with `open`, the new file
    /// starts with one open handle (create(2) with O_CREAT).
    pub fn create_node(
        &self,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        what: NewNode<'_>,
        open: bool,
    ) -> FsResult<Entry> {
        check_name(name)?;
        let _ns = self.ns.lock();
        let pn = self.node(parent)?;
        let mut p = live(&pn)?;
        if !p.inode.is_dir() {
            return Err(FsError::NotDir);
        }
        if p.inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        perm::check(&p.inode, caller, W | X)?;
        if self.store.lookup(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let now = Time::now();
        let (mut mode, rdev) = match what {
            NewNode::File { mode, rdev } => (mode, rdev),
            NewNode::Dir { mode } => (libc::S_IFDIR | (mode & 0o7777), 0),
            NewNode::Symlink { .. } => (libc::S_IFLNK | 0o777, 0),
        };
        if Kind::from_mode(mode).is_none() {
            return Err(FsError::Invalid);
        }
        let mut gid = caller.gid;
        if p.inode.mode & libc::S_ISGID != 0 {
            // BSD group semantics of setgid directories, inherited by subdirectories.
            gid = p.inode.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        if mode & libc::S_IFMT != libc::S_IFDIR
            && mode & libc::S_ISGID != 0
            && !caller.is_root()
            && !caller.in_group(gid)
        {
            mode &= !libc::S_ISGID;
        }
        let ino = self.store.alloc_ino()?;
        let mut inode = Inode::new(mode, caller.uid, gid, now);
        inode.rdev = rdev;
        // The parent's record as it will be: the node changes only once it is committed.
        let mut parent_inode = p.inode.clone();
        if inode.is_dir() {
            inode.nlink = 2;
            inode.parent = parent;
            parent_inode.nlink = parent_inode
                .nlink
                .checked_add(1)
                .ok_or(FsError::TooManyLinks)?;
        }
        if let NewNode::Symlink { target } = what {
            inode.target = target.to_vec();
            inode.size = target.len() as u64;
        }
        // Files and directories inherit the directory's compression policy.
        let policy = match inode.kind() {
            Kind::File | Kind::Dir => self.node_policy(parent, &mut p)?,
            _ => Policy::default(),
        };
        parent_inode.mtime = now;
        parent_inode.ctime = now;
        let mut t = Txn::new();
        t.put_inode(ino, &inode);
        t.put_inode(parent, &parent_inode);
        t.link(parent, name, ino, inode.kind());
        if policy != Policy::default() {
            t.put_xattr(ino, policy::ATTR, policy.name().as_bytes());
        }
        self.store.commit(t)?;
        p.inode = parent_inode;
        self.inode_count.fetch_add(1, Ordering::Relaxed);
        if open {
            let mut node = Node::new(inode.clone());
            node.policy = Some(policy);
            node.open = 1;
            self.insert_node(ino, node);
        }
        Ok(Entry { ino, inode })
    }

    /// The target of symlink `ino` (`EINVAL` for anything else).
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let inode = self.getattr(ino)?.inode;
        if inode.kind() != Kind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(inode.target)
    }

    /// Makes `newname` in `newparent` another link to `ino` (not a directory); needs
    /// write and search access to `newparent`.
    pub fn link(
        &self,
        caller: &Caller,
        ino: u64,
        newparent: u64,
        newname: &[u8],
    ) -> FsResult<Entry> {
        check_name(newname)?;
        let _ns = self.ns.lock();
        let pn = self.node(newparent)?;
        let mut p = live(&pn)?;
        if !p.inode.is_dir() {
            return Err(FsError::NotDir);
        }
        perm::check(&p.inode, caller, W | X)?;
        if self.store.lookup(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        if ino == newparent {
            return Err(FsError::Perm);
        }
        let cn = self.node(ino)?;
        let mut c = live(&cn)?;
        if c.inode.is_dir() {
            return Err(FsError::Perm);
        }
        if c.inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if c.inode.nlink >= u32::MAX - 1 {
            return Err(FsError::TooManyLinks);
        }
        let now = Time::now();
        // The records as they will be: the nodes change only once they are committed.
        let mut linked = self.record_to_commit(ino, &c)?;
        linked.nlink += 1;
        linked.ctime = now;
        let mut dir = p.inode.clone();
        dir.mtime = now;
        dir.ctime = now;
        let mut t = Txn::new();
        t.put_inode(ino, &linked);
        t.put_inode(newparent, &dir);
        t.link(newparent, newname, ino, linked.kind());
        self.store.commit(t)?;
        c.inode.nlink = linked.nlink;
        c.inode.ctime = now;
        p.inode = dir;
        Ok(Entry {
            ino,
            inode: c.inode.clone(),
        })
    }

    /// Removes the non-directory `name` from `parent`; the inode goes once its last link
    /// and open handle are gone.
    pub fn unlink(&self, caller: &Caller, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(caller, parent, name, false)
    }

    /// Removes the empty directory `name` from `parent` (`.` is `EINVAL`, `..` is
    /// `ENOTEMPTY`).
    pub fn rmdir(&self, caller: &Caller, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.remove(caller, parent, name, true)
    }

    fn remove(&self, caller: &Caller, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        check_name(name)?;
        let _ns = self.ns.lock();
        let pn = self.node(parent)?;
        let mut p = live(&pn)?;
        if !p.inode.is_dir() {
            return Err(FsError::NotDir);
        }
        let (ino, kind) = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        if ino == parent {
            // Only a damaged store names a directory inside itself; never lock it twice.
            return Err(FsError::Invalid);
        }
        match (dir, kind == Kind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            _ => {}
        }
        let cn = self.node(ino)?;
        let mut c = live(&cn)?;
        perm::may_delete(&p.inode, &c.inode, caller)?;
        if dir && !self.store.dir_is_empty(ino)? {
            return Err(FsError::NotEmpty);
        }
        // Both records change in memory as they go into the transaction; if it fails,
        // they are put back: a failed unlink whose file kept a link count of 0 in memory
        // would delete the file, still named, at its next close.
        let saved = (p.inode.clone(), c.inode.clone());
        let committed = (|| {
            let now = Time::now();
            let mut t = Txn::new();
            t.unlink(parent, name);
            if dir {
                p.inode.nlink = p.inode.nlink.saturating_sub(1);
            }
            p.inode.mtime = now;
            p.inode.ctime = now;
            t.put_inode(parent, &p.inode);
            let gone = self.drop_link(&mut t, ino, &mut c, now)?;
            self.store.commit(t)?;
            Ok(gone)
        })();
        match committed {
            Ok(gone) => {
                if gone {
                    self.finish_delete(ino, &mut c);
                }
                Ok(())
            }
            Err(e) => {
                (p.inode, c.inode) = saved;
                Err(e)
            }
        }
    }

    /// Adds to `t` the loss of one name of `c` (two for a directory: its `.` too).
    /// Returns whether the inode is deleted by `t` (then call [`Core::finish_delete`]
    /// after committing it); an inode still open becomes an orphan instead.
    pub(super) fn drop_link(
        &self,
        t: &mut Txn,
        ino: u64,
        c: &mut Node,
        now: Time,
    ) -> FsResult<bool> {
        c.inode.nlink = if c.inode.is_dir() {
            0
        } else {
            c.inode.nlink.saturating_sub(1)
        };
        c.inode.ctime = now;
        if c.inode.nlink > 0 {
            t.put_inode(ino, &self.record_to_commit(ino, c)?);
            return Ok(false);
        }
        if c.open > 0 {
            t.put_inode(ino, &self.record_to_commit(ino, c)?);
            t.mark_orphan(ino);
            return Ok(false);
        }
        self.delete_inode(t, ino, &c.inode)?;
        Ok(true)
    }

    /// Adds to `t` the deletion of an inode that has no names and no open handles. A
    /// big file's chunks (262,144 for 1 GiB) are left to the background reaper, found
    /// through the orphan key, so unlink returns at once and a crash leaks nothing.
    pub(super) fn delete_inode(&self, t: &mut Txn, ino: u64, inode: &Inode) -> FsResult<()> {
        t.delete_inode_record(ino);
        if inode.size / self.chunk_size() > REAP_INLINE_CHUNKS {
            t.mark_orphan(ino);
            self.wake_background();
        } else {
            // Small: every record of its data fits in this transaction.
            self.store.delete_file_data(t, ino, usize::MAX)?;
            t.clear_orphan(ino);
        }
        Ok(())
    }

    /// Deletes the chunks of orphans no longer open, a bounded batch at a time.
    pub(super) fn reap_orphans(&self) -> FsResult<()> {
        for ino in self.store.orphans()? {
            let open = self.nodes.lock().get(&ino).cloned();
            if open.is_some_and(|n| n.lock().open > 0) || self.stopping() {
                continue;
            }
            loop {
                let mut t = Txn::new();
                let n = self.store.delete_file_data(&mut t, ino, 4096)?;
                if n == 0 {
                    break;
                }
                self.store.commit(t)?;
                if self.stopping() {
                    return Ok(());
                }
            }
            let mut t = Txn::new();
            t.delete_inode_record(ino);
            t.clear_orphan(ino);
            self.store.commit(t)?;
        }
        Ok(())
    }

    /// In-memory side of deleting an inode whose records are gone.
    pub(super) fn finish_delete(&self, ino: u64, c: &mut Node) {
        c.deleted = true;
        self.dirty_total.fetch_sub(c.dirty_bytes, Ordering::Relaxed);
        c.dirty.clear();
        c.dirty_bytes = 0;
        self.forget_node(ino);
        self.inode_count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Opens directory `ino` for listing after checking `want` (R/W/X bits) against its
    /// mode; returns the new handle.
    pub fn opendir(&self, caller: &Caller, ino: u64, want: u32) -> FsResult<u64> {
        let inode = self.getattr(ino)?.inode;
        if !inode.is_dir() {
            return Err(FsError::NotDir);
        }
        perm::check(&inode, caller, want & (R | W | X))?;
        let fh = self.new_fh();
        let handle = DirHandle {
            ino,
            names: Vec::new(),
        };
        self.dirs.lock().insert(fh, Arc::new(Mutex::new(handle)));
        Ok(fh)
    }

    /// Forgets directory handle `fh`; an unknown handle is ignored.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// Lists entries after cookie `offset`, calling `add(ino, cookie, kind, name)` for
    /// each until it returns true (reply buffer full).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> FsResult<()> {
        let handle = self
            .dirs
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let mut h = handle.lock();
        let ino = h.ino;
        let inode = self.getattr(ino)?.inode;
        if offset == 0 {
            h.names.clear();
            if add(ino, 1, Kind::Dir, b".") {
                return Ok(());
            }
        }
        if offset <= 1 && add(inode.parent.max(1), 2, Kind::Dir, b"..") {
            return Ok(());
        }
        let mut after: Option<Vec<u8>> = match offset.checked_sub(FIRST_NAME_COOKIE) {
            Some(i) => Some(h.names.get(i as usize).ok_or(FsError::Invalid)?.clone()),
            None => None,
        };
        loop {
            let batch = self.store.dir_entries_after(ino, after.as_deref(), 128)?;
            if batch.is_empty() {
                return Ok(());
            }
            for (name, child, kind) in batch {
                let cookie = FIRST_NAME_COOKIE + h.names.len() as u64;
                if add(child, cookie, kind, &name) {
                    return Ok(());
                }
                h.names.push(name.clone());
                after = Some(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{core, new_file};
    use super::*;
    use crate::store::ROOT_INO;

    fn list(core: &Core, fh: u64, offset: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        core.readdir(fh, offset, |_, cookie, _, name| {
            if out.len() == max {
                return true;
            }
            out.push((cookie, name.to_vec()));
            false
        })
        .unwrap();
        out
    }

    #[test]
    fn create_lookup_unlink() {
        let (_d, core) = core();
        let root = Caller::root();
        let e = new_file(&core, &root, ROOT_INO, b"a", 0o644).unwrap();
        assert_eq!(core.lookup(&root, ROOT_INO, b"a").unwrap().ino, e.ino);
        assert!(matches!(
            core.create_node(&root, ROOT_INO, b"a", NewNode::Dir { mode: 0o755 }, false),
            Err(FsError::Exists)
        ));
        core.unlink(&root, ROOT_INO, b"a").unwrap();
        assert!(matches!(
            core.lookup(&root, ROOT_INO, b"a"),
            Err(FsError::NotFound)
        ));
        assert!(matches!(core.getattr(e.ino), Err(FsError::NotFound)));
    }

    #[test]
    fn rmdir_refuses_non_empty_and_fixes_link_counts() {
        let (_d, core) = core();
        let root = Caller::root();
        let d = core
            .create_node(&root, ROOT_INO, b"d", NewNode::Dir { mode: 0o755 }, false)
            .unwrap();
        assert_eq!(core.getattr(ROOT_INO).unwrap().inode.nlink, 3);
        new_file(&core, &root, d.ino, b"f", 0o644).unwrap();
        assert!(matches!(
            core.rmdir(&root, ROOT_INO, b"d"),
            Err(FsError::NotEmpty)
        ));
        core.unlink(&root, d.ino, b"f").unwrap();
        core.rmdir(&root, ROOT_INO, b"d").unwrap();
        assert_eq!(core.getattr(ROOT_INO).unwrap().inode.nlink, 2);
    }

    #[test]
    fn readdir_resumes_after_a_name_while_entries_change() {
        let (_d, core) = core();
        let root = Caller::root();
        for n in ["a", "b", "c", "d"] {
            new_file(&core, &root, ROOT_INO, n.as_bytes(), 0o644).unwrap();
        }
        let fh = core.opendir(&root, ROOT_INO, 0).unwrap();
        let first = list(&core, fh, 0, 3);
        assert_eq!(
            first.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
            [b".".to_vec(), b"..".to_vec(), b"a".to_vec()]
        );
        // "a" (already returned) and "b" (not yet) go away; "bb" appears.
        core.unlink(&root, ROOT_INO, b"a").unwrap();
        core.unlink(&root, ROOT_INO, b"b").unwrap();
        core.create_node(&root, ROOT_INO, b"bb", NewNode::Dir { mode: 0o755 }, false)
            .unwrap();
        let rest = list(&core, fh, first[2].0, 100);
        assert_eq!(
            rest.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
            [b"bb".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
    }

    #[test]
    fn sticky_directory_protects_other_users_files() {
        let (_d, core) = core();
        let root = Caller::root();
        let t = core
            .create_node(
                &root,
                ROOT_INO,
                b"tmp",
                NewNode::Dir { mode: 0o1777 },
                false,
            )
            .unwrap();
        let alice = Caller::with_groups(1000, 1000, vec![]);
        let bob = Caller::with_groups(1001, 1001, vec![]);
        new_file(&core, &alice, t.ino, b"x", 0o666).unwrap();
        assert!(matches!(core.unlink(&bob, t.ino, b"x"), Err(FsError::Perm)));
        core.unlink(&alice, t.ino, b"x").unwrap();
    }
}
