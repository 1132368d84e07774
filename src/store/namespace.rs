//! The namespace and metadata: inodes, directory entries, xattrs, orphans, and the
//! whole-table walks of statistics and fsck.

use super::engine::{Engine, Table};
use super::records::{decode_dirent, Inode, Kind};
use super::{keys, Store, StoreError, ROOT_INO};
use crate::store::{During, StoreOp};

impl Store {
    /// The record of inode `ino`, `None` if there is none.
    pub fn inode(&self, ino: u64) -> Result<Option<Inode>, StoreError> {
        match self
            .engine
            .get(Table::Inode, &keys::ino(ino))
            .during(StoreOp::Read)?
        {
            Some(b) => Ok(Some(Inode::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The entry `name` in directory `parent`: the child's inode number and kind.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>, StoreError> {
        match self
            .engine
            .get(Table::Dirent, &keys::named(parent, name))
            .during(StoreOp::Read)?
        {
            Some(v) => Ok(Some(decode_dirent(&v)?)),
            None => Ok(None),
        }
    }

    /// Whether directory `dir` has no entries (a scan that stops at the first).
    pub fn dir_is_empty(&self, dir: u64) -> Result<bool, StoreError> {
        let mut empty = true;
        let from = keys::ino(dir);
        let to = keys::prefix_end(&from);
        self.engine
            .scan(Table::Dirent, &from, to.as_deref(), &mut |_, _| {
                empty = false;
                false
            })
            .during(StoreOp::Read)?;
        Ok(empty)
    }

    /// Up to `limit` entries of `dir` whose names sort strictly after `after`.
    pub fn dir_entries_after(
        &self,
        dir: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64, Kind)>, StoreError> {
        let prefix = keys::ino(dir);
        let start = match after {
            Some(name) => {
                // The smallest key strictly greater than the entry `name`.
                let mut k = keys::named(dir, name);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = keys::prefix_end(&prefix);
        let mut out = Vec::new();
        let mut bad = None;
        self.engine
            .scan(Table::Dirent, &start, end.as_deref(), &mut |k, v| {
                match decode_dirent(v) {
                    Ok((ino, kind)) => out.push((keys::name_of(k).to_vec(), ino, kind)),
                    Err(e) => bad = Some(e),
                }
                bad.is_none() && out.len() < limit
            })
            .during(StoreOp::Read)?;
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn xattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine
            .get(Table::Xattr, &keys::named(ino, name))
            .during(StoreOp::Read)
    }

    /// The names of `ino`'s extended attributes, in byte order.
    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let from = keys::ino(ino);
        let to = keys::prefix_end(&from);
        let mut out = Vec::new();
        self.engine
            .scan(Table::Xattr, &from, to.as_deref(), &mut |k, _| {
                out.push(keys::name_of(k).to_vec());
                true
            })
            .during(StoreOp::Read)?;
        Ok(out)
    }

    /// Inodes without names still holding data: open when unlinked, or big files whose
    /// chunks the background reaper has not removed yet.
    pub fn orphans(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        self.engine
            .scan_checked(Table::Orphan, &[], None, &mut |k, v| {
                match v {
                    Ok(_) => out.extend(keys::u64_at(k, 0)),
                    // Its inode number cannot be trusted: nothing is deleted on its word.
                    Err(why) => log::error!("{why}: left alone; `llmfs fsck` reports it"),
                }
                true
            })
            .during(StoreOp::Read)?;
        Ok(out)
    }

    /// Visits every inode record in inode order (statistics, fsck, mount-time counts).
    pub fn for_each_inode(
        &self,
        mut visit: impl FnMut(u64, Result<Inode, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.engine
            .scan(Table::Inode, &[], None, &mut |k, v| {
                visit(keys::u64_at(k, 0).unwrap_or(0), Inode::decode(v))
            })
            .during(StoreOp::Read)?;
        Ok(())
    }

    /// Visits every directory entry: (parent, name, child, kind).
    pub fn for_each_dirent(
        &self,
        mut visit: impl FnMut(u64, &[u8], Result<(u64, Kind), StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        self.engine
            .scan(Table::Dirent, &[], None, &mut |k, v| {
                visit(
                    keys::u64_at(k, 0).unwrap_or(0),
                    keys::name_of(k),
                    decode_dirent(v),
                )
            })
            .during(StoreOp::Read)?;
        Ok(())
    }

    /// Inode records, damaged ones included (for statfs).
    pub fn count_inodes(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        self.engine
            .scan_checked(Table::Inode, &[], None, &mut |_, _| {
                n += 1;
                true
            })
            .during(StoreOp::Read)?;
        Ok(n)
    }

    /// A path of `ino` for log lines (a full scan: only for error paths).
    pub fn find_path(&self, ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && parts.len() < 64 {
            let mut found = None;
            self.engine
                .scan(Table::Dirent, &[], None, &mut |k, v| {
                    if decode_dirent(v).is_ok_and(|(child, _)| child == cur) {
                        found = Some((
                            keys::u64_at(k, 0).unwrap_or(ROOT_INO),
                            keys::name_of(k).to_vec(),
                        ));
                        return false;
                    }
                    true
                })
                .ok()?;
            let (parent, name) = found?;
            parts.push(String::from_utf8_lossy(&name).into_owned());
            cur = parent;
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }
}
