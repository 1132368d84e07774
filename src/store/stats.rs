//! Statistics of a store: what it holds, in which codec, against what it costs on disk.

use super::engine::{Engine, Table};
use super::extent::Extent;
use super::records::{HotChunk, Inode, Kind};
use super::{Store, StoreError};
use crate::frame::{self, Codec};
use crate::store::{During, StoreOp};
use std::path::Path;

/// Chunks of one codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecStats {
    /// Number of chunks stored in the codec.
    pub chunks: u64,
    /// Bytes of frames.
    pub frame_bytes: u64,
    /// Bytes of plaintext they decode to.
    pub plain_bytes: u64,
}

/// What a store holds and what it costs on disk, from a walk of every record
/// ([`Store::stats`]).
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Regular files (special files not counted).
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Sum of regular file sizes.
    pub logical_bytes: u64,
    /// Sum of frame lengths (hot and settled).
    pub stored_bytes: u64,
    /// Indexed by [`Codec`] as usize: raw, zstd, llm, lost.
    pub per_codec: [CodecStats; 4],
    /// Chunks written and not yet settled by the compactor.
    pub pending_chunks: u64,
    /// Plaintext bytes of the hot chunks: those written and not yet settled, which is to
    /// say awaiting the compactor (and the model).
    pub pending_plain_bytes: u64,
    /// Frame bytes of the hot chunks.
    pub pending_frame_bytes: u64,
    /// Extent records (packs of settled frames).
    pub extents: u64,
    /// Frames whose header cannot be parsed (damage).
    pub bad_chunks: u64,
    /// Bytes of keys and values of everything but frames: inodes, names, xattrs, tables.
    pub metadata_bytes: u64,
    /// Bytes of the database's files (as allocated on disk).
    pub db_file_bytes: u64,
    /// Bytes of free space inside the database's files (reusable, or for the idle
    /// reclaim to give back).
    pub db_free_bytes: u64,
    /// Bytes of the database's pages in use (what the data costs, free pages aside).
    pub db_used_bytes: u64,
    /// Bytes the store's directory takes on disk (allocated blocks, what `du` says).
    pub disk_bytes: u64,
    /// The codec profile the store is pinned to (its first LLM frame pinned it), as
    /// stored; the codec layer reads it.
    pub pinned_profile: Option<Vec<u8>>,
}

impl StoreStats {
    /// The figures of codec `c`.
    pub fn codec(&self, c: Codec) -> &CodecStats {
        &self.per_codec[c as usize]
    }

    /// Every figure by name, in a fixed order: what `llmfs stats` prints as a table or
    /// as JSON.
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut f = vec![
            ("files".to_string(), self.files),
            ("directories".into(), self.dirs),
            ("logical_bytes".into(), self.logical_bytes),
            ("stored_bytes".into(), self.stored_bytes),
            ("disk_bytes".into(), self.disk_bytes),
            ("metadata_bytes".into(), self.metadata_bytes),
            ("db_file_bytes".into(), self.db_file_bytes),
            ("db_free_bytes".into(), self.db_free_bytes),
            ("db_used_bytes".into(), self.db_used_bytes),
            ("pending_chunks".into(), self.pending_chunks),
            ("pending_bytes".into(), self.pending_plain_bytes),
            ("pending_frame_bytes".into(), self.pending_frame_bytes),
            ("extents".into(), self.extents),
        ];
        for c in Codec::ALL {
            let s = self.codec(c);
            f.push((format!("chunks_{}", c.name()), s.chunks));
            f.push((format!("frame_bytes_{}", c.name()), s.frame_bytes));
            f.push((format!("plain_bytes_{}", c.name()), s.plain_bytes));
        }
        f.push(("bad_chunks".into(), self.bad_chunks));
        f
    }
}

fn count_frame(st: &mut StoreStats, framed: &[u8]) {
    st.stored_bytes += framed.len() as u64;
    match frame::parse_header(framed) {
        Ok(h) => {
            let c = &mut st.per_codec[h.codec as usize];
            c.chunks += 1;
            c.frame_bytes += framed.len() as u64;
            c.plain_bytes += h.plain_len;
        }
        Err(_) => st.bad_chunks += 1,
    }
}

impl Store {
    /// Walks the whole store (every value is read: seconds per GB).
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut st = StoreStats::default();
        let mut bad: Option<StoreError> = None;
        self.for_each_inode(|_, inode: Result<Inode, StoreError>| match inode {
            Ok(i) => {
                match i.kind() {
                    Kind::File => {
                        st.files += 1;
                        st.logical_bytes += i.size;
                    }
                    Kind::Dir => st.dirs += 1,
                    _ => {}
                }
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        self.engine
            .scan(Table::Chunk, &[], None, &mut |k, v| {
                st.metadata_bytes += k.len() as u64;
                match HotChunk::decode(v) {
                    Ok(h) => {
                        st.metadata_bytes += (v.len() - h.frame.len()) as u64;
                        st.pending_frame_bytes += h.frame.len() as u64;
                        if let Ok(fh) = frame::parse_header(&h.frame) {
                            st.pending_plain_bytes += fh.plain_len;
                        }
                        count_frame(&mut st, &h.frame);
                    }
                    Err(_) => st.bad_chunks += 1,
                }
                true
            })
            .during(StoreOp::Read)?;
        self.engine
            .scan(Table::Extent, &[], None, &mut |k, v| {
                st.extents += 1;
                match Extent::decode(v) {
                    Ok(e) => {
                        st.metadata_bytes += (k.len() + v.len()) as u64 - e.frame_bytes();
                        for c in e.chunks() {
                            count_frame(&mut st, &c.frame);
                        }
                    }
                    Err(_) => st.bad_chunks += 1,
                }
                true
            })
            .during(StoreOp::Read)?;
        for t in [
            Table::Meta,
            Table::Inode,
            Table::Dirent,
            Table::Xattr,
            Table::Pending,
            Table::Orphan,
        ] {
            self.engine
                .scan(t, &[], None, &mut |k, v| {
                    st.metadata_bytes += (k.len() + v.len()) as u64;
                    if t == Table::Pending {
                        st.pending_chunks += 1;
                    }
                    true
                })
                .during(StoreOp::Read)?;
        }
        let space = self.engine.space().during(StoreOp::Read)?;
        st.db_file_bytes = space.file_bytes;
        st.db_free_bytes = space.free_bytes;
        st.db_used_bytes = space.used_bytes;
        Ok(st)
    }
}

/// Allocated bytes of every file under `path` (what `du` reports).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

/// Statistics of the (unmounted) store in `dir`, read without changing anything in it.
pub fn collect(dir: &Path) -> Result<StoreStats, StoreError> {
    let opts = super::OpenOptions {
        create: None,
        read_only: true,
    };
    let store = Store::open(dir, &opts)?;
    let mut st = store.stats()?;
    st.pinned_profile = store.meta(super::MetaKey::Profile)?;
    drop(store);
    st.disk_bytes = disk_usage(dir);
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::super::engine::memory::MemoryEngine;
    use super::super::records::Time;
    use super::super::{CreateOptions, OpenOptions, Txn};
    use super::*;

    #[test]
    fn counts_frames_by_codec_hot_and_settled() {
        let opts = OpenOptions {
            create: Some(CreateOptions { chunk_size: 4096 }),
            read_only: false,
        };
        let s = Store::open_engine(MemoryEngine::new(), &opts).unwrap();
        let text = b"hello hello hello hello hello hello".repeat(20);
        let zstd = frame::encode_fast(&text);
        let raw = frame::assemble(Codec::Raw, b"xyz", b"xyz");
        let mut t = Txn::new();
        s.put_chunk(&mut t, 9, 0, 1, &zstd, Time::now()).unwrap();
        s.put_chunk(&mut t, 9, 1, 2, &raw, Time::now()).unwrap();
        s.commit(t).unwrap();
        let mut t = Txn::new();
        s.settle_chunk(&mut t, 9, 1, 2, raw.clone()).unwrap();
        s.commit(t).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(st.codec(Codec::Zstd).chunks, 1);
        assert_eq!(st.codec(Codec::Raw).plain_bytes, 3);
        assert_eq!(st.stored_bytes, (zstd.len() + raw.len()) as u64);
        assert_eq!((st.pending_chunks, st.extents), (1, 1));
        assert_eq!(st.pending_plain_bytes, text.len() as u64);
        assert_eq!(st.pending_frame_bytes, zstd.len() as u64);
        assert_eq!(st.dirs, 1);
    }
}
