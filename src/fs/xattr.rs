//! Extended attributes: get/set/list/remove, with XATTR_CREATE/XATTR_REPLACE.

use super::data::Wait;
use super::perm::{self, R, W};
use super::{live, Caller, Core, FsError, FsResult};
use crate::store::records::{Kind, Time};
use crate::store::Txn;
use parking_lot::Mutex;

/// Attributes llmfs computes: read-only, not listed (so copies do not carry them).
/// `user.llmfs.stored` (bytes stored), `user.llmfs.codecs` (chunks per codec) on any
/// file, and `user.llmfs.stats` (live statistics as JSON) and `user.llmfs.progress` (what
/// is left for the compactor, cheap to poll) on the root.
const LLMFS_PREFIX: &[u8] = b"user.llmfs.";

/// Linux's limits (XATTR_NAME_MAX, XATTR_SIZE_MAX).
const NAME_MAX: usize = 255;
const VALUE_MAX: usize = 65536;

/// `user.llmfs.codecs` of recently asked files: counting a file's chunks reads all of
/// them, so the answer is kept while the file's content version and stored bytes stay
/// (a write moves the first, the compactor's swap the second), and one count runs at a
/// time: a user asking in a loop costs one walk per change of the file.
pub struct CodecsCache {
    counting: Mutex<()>,
    answers: Mutex<lru::LruCache<u64, CodecsAnswer>>,
}

/// (content version, stored bytes, the answer) of one file.
type CodecsAnswer = (u64, u64, Vec<u8>);

impl Default for CodecsCache {
    fn default() -> CodecsCache {
        CodecsCache {
            counting: Mutex::new(()),
            answers: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4096).expect("non-zero"),
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetXattr {
    Any,
    /// XATTR_CREATE: fail if it exists.
    Create,
    /// XATTR_REPLACE: fail if it does not.
    Replace,
}

/// Who may read/write an attribute of `name` on a file of `kind`.
fn check_access(
    caller: &Caller,
    inode: &crate::store::records::Inode,
    name: &[u8],
    mask: u32,
) -> FsResult<()> {
    if name.is_empty() {
        return Err(FsError::Range);
    }
    if name.len() > NAME_MAX {
        return Err(FsError::Range);
    }
    if name.starts_with(b"user.") {
        // user.* is only for regular files and directories, with their permissions.
        if !matches!(inode.kind(), Kind::File | Kind::Dir) {
            return Err(if mask == R {
                FsError::NoAttr
            } else {
                FsError::Perm
            });
        }
        if inode.is_dir()
            && inode.mode & libc::S_ISVTX != 0
            && mask == W
            && !perm::is_owner(inode, caller)
        {
            return Err(FsError::Perm);
        }
        return perm::check(inode, caller, mask);
    }
    if name.starts_with(b"trusted.") {
        return if caller.is_root() {
            Ok(())
        } else {
            Err(if mask == R {
                FsError::NoAttr
            } else {
                FsError::Perm
            })
        };
    }
    if name.starts_with(b"system.") {
        // POSIX ACLs are not supported: saying so makes cp -a and others fall back to
        // chmod, instead of storing an ACL that would not act on the mode.
        return Err(if mask == R {
            FsError::NoAttr
        } else {
            FsError::NotSupported
        });
    }
    if name.starts_with(b"security.") {
        return if mask == R || caller.is_root() || perm::is_owner(inode, caller) {
            Ok(())
        } else {
            Err(FsError::Perm)
        };
    }
    Err(FsError::NotSupported)
}

impl Core {
    /// An attribute's value. The computed ones that walk the store or a file's chunks
    /// say [`FsError::WouldBlock`] with [`Wait::NoModel`] when they have no fresh answer
    /// at hand: the FUSE adapter then computes them on a slow-request thread, so that a
    /// user asking in a loop never holds a request thread `stat` needs.
    pub fn getxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &[u8],
        wait: Wait,
    ) -> FsResult<Vec<u8>> {
        let inode = self.getattr(ino)?.inode;
        check_access(caller, &inode, name, R)?;
        if let Some(what) = name.strip_prefix(LLMFS_PREFIX) {
            return self.computed_xattr(ino, &inode, what, wait);
        }
        self.store.xattr(ino, name)?.ok_or(FsError::NoAttr)
    }

    pub fn setxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        how: SetXattr,
    ) -> FsResult<()> {
        if value.len() > VALUE_MAX {
            return Err(FsError::TooBig);
        }
        if name.starts_with(LLMFS_PREFIX) {
            return Err(FsError::Perm);
        }
        let n = self.node(ino)?;
        let mut g = live(&n)?;
        check_access(caller, &g.inode, name, W)?;
        let exists = self.store.xattr(ino, name)?.is_some();
        match (how, exists) {
            (SetXattr::Create, true) => return Err(FsError::Exists),
            (SetXattr::Replace, false) => return Err(FsError::NoAttr),
            _ => {}
        }
        g.inode.ctime = Time::now();
        let mut t = Txn::new();
        t.put_xattr(ino, name, value);
        t.put_inode(ino, &g.inode);
        self.store.commit(t)?;
        Ok(())
    }

    /// Names, each followed by a NUL, as listxattr(2) returns them.
    pub fn listxattr(&self, caller: &Caller, ino: u64) -> FsResult<Vec<u8>> {
        self.getattr(ino)?;
        let mut out = Vec::new();
        for name in self.store.xattr_names(ino)? {
            if name.starts_with(b"trusted.") && !caller.is_root() {
                continue;
            }
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    /// The value of a computed `user.llmfs.*` attribute.
    fn computed_xattr(
        &self,
        ino: u64,
        inode: &crate::store::records::Inode,
        what: &[u8],
        wait: Wait,
    ) -> FsResult<Vec<u8>> {
        match what {
            b"stored" => Ok(inode.stored.to_string().into_bytes()),
            b"codecs" => {
                let key = (inode.data_ver, inode.stored);
                let hit = |c: &CodecsCache| {
                    c.answers
                        .lock()
                        .get(&ino)
                        .filter(|a| (a.0, a.1) == key)
                        .map(|a| a.2.clone())
                };
                if let Some(v) = hit(&self.codecs_cache) {
                    return Ok(v);
                }
                if wait == Wait::NoModel {
                    return Err(FsError::WouldBlock);
                }
                let _counting = self.codecs_cache.counting.lock();
                if let Some(v) = hit(&self.codecs_cache) {
                    return Ok(v);
                }
                let mut counts = [0u64; 4];
                let mut damaged = 0;
                for c in self.store.chunks_in(ino, 0, u64::MAX)? {
                    match c.codec {
                        Some(codec) => counts[codec as usize] += 1,
                        None => damaged += 1,
                    }
                }
                let mut s = format!("llm={} zstd={} raw={}", counts[2], counts[1], counts[0]);
                if counts[3] > 0 {
                    s.push_str(&format!(" lost={}", counts[3]));
                }
                if damaged > 0 {
                    s.push_str(&format!(" damaged={damaged}"));
                }
                let v = s.into_bytes();
                self.codecs_cache
                    .answers
                    .lock()
                    .put(ino, (key.0, key.1, v.clone()));
                Ok(v)
            }
            b"stats" if ino == crate::store::ROOT_INO => {
                let m = self.live_stats(wait)?;
                Ok(serde_json::Value::Object(m).to_string().into_bytes())
            }
            b"progress" if ino == crate::store::ROOT_INO => {
                let m = self.progress()?;
                Ok(serde_json::Value::Object(m).to_string().into_bytes())
            }
            _ => Err(FsError::NoAttr),
        }
    }

    pub fn removexattr(&self, caller: &Caller, ino: u64, name: &[u8]) -> FsResult<()> {
        if name.starts_with(LLMFS_PREFIX) {
            return Err(FsError::Perm);
        }
        let n = self.node(ino)?;
        let mut g = live(&n)?;
        check_access(caller, &g.inode, name, W)?;
        if self.store.xattr(ino, name)?.is_none() {
            return Err(FsError::NoAttr);
        }
        g.inode.ctime = Time::now();
        let mut t = Txn::new();
        t.delete_xattr(ino, name);
        t.put_inode(ino, &g.inode);
        self.store.commit(t)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{core, new_file};
    use super::*;
    use crate::store::ROOT_INO;

    #[test]
    fn create_replace_list_remove() {
        let (_d, core) = core();
        let r = Caller::root();
        let f = new_file(&core, &r, ROOT_INO, b"f", 0o644).unwrap().ino;
        assert!(matches!(
            core.setxattr(&r, f, b"user.a", b"1", SetXattr::Replace),
            Err(FsError::NoAttr)
        ));
        core.setxattr(&r, f, b"user.a", b"1", SetXattr::Create)
            .unwrap();
        assert!(matches!(
            core.setxattr(&r, f, b"user.a", b"2", SetXattr::Create),
            Err(FsError::Exists)
        ));
        core.setxattr(&r, f, b"user.a", b"2", SetXattr::Replace)
            .unwrap();
        core.setxattr(&r, f, b"user.b", b"", SetXattr::Any).unwrap();
        assert_eq!(core.getxattr(&r, f, b"user.a", Wait::Model).unwrap(), b"2");
        assert_eq!(core.listxattr(&r, f).unwrap(), b"user.a\0user.b\0");
        core.removexattr(&r, f, b"user.a").unwrap();
        assert!(matches!(
            core.getxattr(&r, f, b"user.a", Wait::Model),
            Err(FsError::NoAttr)
        ));
    }
}
