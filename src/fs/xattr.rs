//! Extended attributes: get/set/list/remove, with XATTR_CREATE/XATTR_REPLACE.

use super::chunk::Wait;
use super::perm::{self, R, W};
use super::policy::{self, Policy};
use super::{live, Caller, Core, FsError, FsResult};
use crate::frame::Codec;
use crate::store::records::{Kind, Time};
use crate::store::Txn;
use parking_lot::Mutex;

/// Attributes llmfs computes: read-only, not listed (so copies do not carry them).
/// `user.llmfs.stored` (bytes stored), `user.llmfs.codecs` (chunks per codec) on any
/// file, and `user.llmfs.stats` (live statistics as JSON) and `user.llmfs.progress` (what
/// is left for the compactor, cheap to poll) on the root. `user.llmfs.compress` is the
/// one stored, settable and listed attribute of the prefix ([`policy`]).
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
type CodecsAnswer = (u64, u64, FileChunks);

/// A file's chunks counted by codec: what `user.llmfs.codecs` and `user.llmfs.du` say.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileChunks {
    /// Plaintext bytes of the stored chunks (holes not counted).
    pub logical_bytes: u64,
    /// Indexed by [`Codec`] as usize.
    pub per_codec: [crate::store::stats::CodecStats; 4],
    /// Frames whose header cannot be read.
    pub damaged: u64,
    /// Chunks written and not settled yet: hot, and not LLM-coded (the compactor has
    /// yet to take them).
    pub hot_chunks: u64,
    /// Plaintext bytes of those hot chunks.
    pub hot_plain_bytes: u64,
}

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

/// What setxattr(2)'s flags ask of an existing attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetXattr {
    /// No flag: create the attribute or replace its value.
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
        if name == policy::ATTR {
            return self.store.xattr(ino, name)?.ok_or(FsError::NoAttr);
        }
        if let Some(what) = name.strip_prefix(LLMFS_PREFIX) {
            return self.computed_xattr(ino, &inode, what, wait);
        }
        self.store.xattr(ino, name)?.ok_or(FsError::NoAttr)
    }

    /// Sets attribute `name` of `ino` to `value` (at most 64 KiB), as `how` says. The
    /// policy attribute must parse as a policy and takes effect on the node; the other
    /// computed `user.llmfs.` attributes cannot be set (`EPERM`).
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
        let policy = if name == policy::ATTR {
            Some(Policy::parse(value).ok_or(FsError::Invalid)?)
        } else if name.starts_with(LLMFS_PREFIX) {
            return Err(FsError::Perm);
        } else {
            None
        };
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
        t.put_inode(ino, &self.record_to_commit(ino, &g)?);
        self.store.commit(t)?;
        match policy {
            Some(p) => self.policy_changed(ino, &mut g, p),
            None => Ok(()),
        }
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
                let f = self.file_chunks(ino, inode, wait)?;
                let n = |c: Codec| f.per_codec[c as usize].chunks;
                let mut s = format!(
                    "llm={} zstd={} raw={}",
                    n(Codec::Llm),
                    n(Codec::Zstd),
                    n(Codec::Raw)
                );
                if n(Codec::Lost) > 0 {
                    s.push_str(&format!(" lost={}", n(Codec::Lost)));
                }
                if f.damaged > 0 {
                    s.push_str(&format!(" damaged={}", f.damaged));
                }
                Ok(s.into_bytes())
            }
            b"du" => {
                let f = if inode.kind() == Kind::File {
                    self.file_chunks(ino, inode, wait)?
                } else {
                    FileChunks::default()
                };
                let mut m = serde_json::Map::new();
                m.insert("logical_bytes".into(), f.logical_bytes.into());
                m.insert("stored_bytes".into(), inode.stored.into());
                for c in Codec::ALL {
                    let s = &f.per_codec[c as usize];
                    m.insert(format!("chunks_{}", c.name()), s.chunks.into());
                    m.insert(format!("frame_bytes_{}", c.name()), s.frame_bytes.into());
                    m.insert(format!("plain_bytes_{}", c.name()), s.plain_bytes.into());
                }
                m.insert("damaged_chunks".into(), f.damaged.into());
                let policy = self.policy(ino)?;
                m.insert("policy".into(), policy.name().into());
                // Waiting for the model: written chunks not LLM-coded yet, of a file
                // the model codes.
                let (pc, pb) = if policy.uses_model() {
                    (f.hot_chunks, f.hot_plain_bytes)
                } else {
                    (0, 0)
                };
                m.insert("pending_chunks".into(), pc.into());
                m.insert("pending_bytes".into(), pb.into());
                Ok(serde_json::Value::Object(m).to_string().into_bytes())
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

    /// Removes attribute `name` of `ino` (`ENODATA` if it has none); computed
    /// `user.llmfs.` attributes other than the policy cannot be removed (`EPERM`).
    pub fn removexattr(&self, caller: &Caller, ino: u64, name: &[u8]) -> FsResult<()> {
        if name.starts_with(LLMFS_PREFIX) && name != policy::ATTR {
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
        t.put_inode(ino, &self.record_to_commit(ino, &g)?);
        self.store.commit(t)?;
        if name == policy::ATTR {
            self.policy_changed(ino, &mut g, Policy::default())?;
        }
        Ok(())
    }
}

impl Core {
    /// File `ino`'s chunks by codec, from the cache while the file's content version and
    /// stored bytes stay, else counted (one count at a time; [`FsError::WouldBlock`]
    /// with [`Wait::NoModel`], so that a FUSE request thread never counts).
    fn file_chunks(
        &self,
        ino: u64,
        inode: &crate::store::records::Inode,
        wait: Wait,
    ) -> FsResult<FileChunks> {
        let key = (inode.data_ver, inode.stored);
        let hit = |c: &CodecsCache| {
            c.answers
                .lock()
                .get(&ino)
                .filter(|a| (a.0, a.1) == key)
                .map(|a| a.2)
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
        let cs = self.chunk_size();
        let mut f = FileChunks::default();
        for c in self.store.chunks_in(ino, 0, u64::MAX)? {
            let plain = inode
                .size
                .saturating_sub(c.index.saturating_mul(cs))
                .min(cs);
            f.logical_bytes += plain;
            match c.codec {
                Some(codec) => {
                    let s = &mut f.per_codec[codec as usize];
                    s.chunks += 1;
                    s.frame_bytes += c.frame_len as u64;
                    s.plain_bytes += plain;
                    if c.hot && codec != Codec::Llm {
                        f.hot_chunks += 1;
                        f.hot_plain_bytes += plain;
                    }
                }
                None => f.damaged += 1,
            }
        }
        self.codecs_cache.answers.lock().put(ino, (key.0, key.1, f));
        Ok(f)
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
