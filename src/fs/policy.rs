//! Per-file and per-directory compression policy: the attribute `user.llmfs.compress`,
//! like `chattr +c` on btrfs or `background_compression` on bcachefs.
//!
//! - `llm` (the default, also what a file without the attribute gets): written to the
//!   fast tier (zstd), then coded by the model once cold.
//! - `fast`: zstd only; the compactor settles its chunks into extents as they are and
//!   never gives them to the model.
//! - `none`: new writes are stored raw (for media and files compressed already, where
//!   zstd would only spend CPU), and never given to the model either.
//!
//! A file or directory created in a directory with the attribute gets the same value
//! (copied at creation, as btrfs copies the compression flag): set it on a directory of
//! binaries once, and what lands there never waits for the model. Setting it on a
//! directory changes only what is created there afterwards. Setting it on a file
//! changes how its later writes are stored, and: to `llm` (or removing it), every chunk
//! of the file that is not LLM-coded is queued for the compactor again; to `fast` or
//! `none`, its queued chunks are settled as they are without the model. Chunks already
//! LLM-coded stay so (they decode as before; rewriting them would cost model time for
//! nothing).

use super::{live, Core, FsResult, Node};
use crate::frame::Codec;
use crate::store::{Chunks, Txn};

/// The attribute's name.
pub const ATTR: &[u8] = b"user.llmfs.compress";

/// How a file's data is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// zstd, then the model once cold.
    #[default]
    Llm,
    /// zstd only.
    Fast,
    /// Raw, never compressed.
    None,
}

impl Policy {
    /// The attribute's value for this policy.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Llm => "llm",
            Policy::Fast => "fast",
            Policy::None => "none",
        }
    }

    /// The policy an attribute value names (a trailing newline, as `echo` writes it, is
    /// accepted); `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<Policy> {
        let v = value.strip_suffix(b"\n").unwrap_or(value);
        match v {
            b"llm" => Some(Policy::Llm),
            b"fast" => Some(Policy::Fast),
            b"none" => Some(Policy::None),
            _ => None,
        }
    }

    /// Whether the compactor gives this file's chunks to the model.
    pub fn uses_model(self) -> bool {
        self == Policy::Llm
    }
}

/// Chunks re-queued per transaction when a file's policy becomes `llm`.
const REQUEUE_BATCH: usize = 1024;

impl Core {
    /// The policy of the node `g` (of inode `ino`), read from the store once and kept
    /// with the node; a damaged or unknown value reads as the default (`llm`), which
    /// loses nothing: the data is coded and verified like any other.
    pub(super) fn node_policy(&self, ino: u64, g: &mut Node) -> FsResult<Policy> {
        if let Some(p) = g.policy {
            return Ok(p);
        }
        let p = match self.store.xattr(ino, ATTR)? {
            Some(v) => Policy::parse(&v).unwrap_or_else(|| {
                log::warn!(
                    "inode {ino}: {} is {:?}, not llm, fast or none: treated as llm",
                    String::from_utf8_lossy(ATTR),
                    String::from_utf8_lossy(&v)
                );
                Policy::Llm
            }),
            None => Policy::Llm,
        };
        g.policy = Some(p);
        Ok(p)
    }

    /// The policy of inode `ino`.
    pub fn policy(&self, ino: u64) -> FsResult<Policy> {
        let n = self.node(ino)?;
        let mut g = live(&n)?;
        self.node_policy(ino, &mut g)
    }

    /// After `g`'s policy became `to` (its attribute set or removed, committed): records
    /// it on the node, and when it is `llm` queues again every settled chunk of the file
    /// that is not LLM-coded, in bounded transactions (each keeps the file whole: a
    /// chunk moves from its extent to the hot table with the same frame).
    pub(super) fn policy_changed(&self, ino: u64, g: &mut Node, to: Policy) -> FsResult<()> {
        let from = self.node_policy(ino, g)?;
        g.policy = Some(to);
        if from == to || !to.uses_model() || g.inode.kind() != crate::store::records::Kind::File {
            return Ok(());
        }
        let waiting: Vec<u64> = self
            .store
            .chunks_in(ino, 0, u64::MAX)?
            .into_iter()
            .filter(|c| !c.hot && matches!(c.codec, Some(Codec::Zstd | Codec::Raw)))
            .map(|c| c.index)
            .collect();
        for batch in waiting.chunks(REQUEUE_BATCH) {
            let mut inode = self.record_to_commit(ino, g)?;
            let mut t = Txn::new();
            let now = crate::store::records::Time::now();
            for &index in batch {
                let Some(c) = self.store.chunk(ino, index)? else {
                    continue;
                };
                self.store.write_chunk(
                    &mut t,
                    ino,
                    &mut inode,
                    index,
                    &c.frame,
                    now,
                    Chunks::Any,
                )?;
                self.cache.remove(ino, index);
            }
            t.put_inode(ino, &inode);
            self.store.commit(t)?;
            // The node may hold a size its dirty chunks have not saved yet: it keeps it.
            g.inode.data_ver = inode.data_ver;
            g.inode.stored = inode.stored;
            g.gen += 1;
        }
        if !waiting.is_empty() {
            log::info!(
                "inode {ino}: compress=llm queued {} chunks for the model",
                waiting.len()
            );
            self.chunks_written();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print() {
        for p in [Policy::Llm, Policy::Fast, Policy::None] {
            assert_eq!(Policy::parse(p.name().as_bytes()), Some(p));
            assert_eq!(Policy::parse(format!("{}\n", p.name()).as_bytes()), Some(p));
        }
        assert_eq!(Policy::parse(b"zstd"), None);
        assert_eq!(Policy::parse(b""), None);
        assert_eq!(Policy::parse(b"LLM"), None);
        assert!(Policy::Llm.uses_model() && !Policy::Fast.uses_model());
    }
}
