//! Offline statistics of a store: how much it holds against how much disk it uses.

use super::{keys, records::Inode, Store, StoreError};
use crate::frame::{self, Codec};
use std::path::Path;

#[derive(Debug, Default)]
pub struct StoreStats {
    pub files: u64,
    pub dirs: u64,
    /// Sum of regular file sizes.
    pub logical_bytes: u64,
    /// Sum of chunk frame lengths.
    pub chunk_bytes: u64,
    /// (codec name, chunk count, frame bytes, plaintext bytes) per codec.
    pub per_codec: Vec<(&'static str, u64, u64, u64)>,
    pub bad_chunks: u64,
    /// Bytes the store's directory takes on disk (allocated blocks).
    pub disk_bytes: u64,
}

pub fn collect(path: &Path) -> Result<StoreStats, StoreError> {
    // An existing store's chunk size wins; this value only matters for a new one.
    let store = Store::open(path, &super::CreateOptions { chunk_size: 4096 })?;
    let mut st = StoreStats::default();
    for item in store.tree().scan_prefix(keys::inode_prefix()) {
        let (_, v) = item?;
        let inode = Inode::decode(&v)?;
        match inode.kind() {
            super::records::Kind::File => {
                st.files += 1;
                st.logical_bytes += inode.size;
            }
            super::records::Kind::Dir => st.dirs += 1,
            _ => {}
        }
    }
    let codecs = [Codec::Raw, Codec::Zstd, Codec::Llm];
    let mut counts = [(0u64, 0u64, 0u64); 3];
    for item in store.tree().scan_prefix(keys::all_chunks_prefix()) {
        let (_, v) = item?;
        st.chunk_bytes += v.len() as u64;
        match frame::parse_header(&v) {
            Ok(h) => {
                let c = &mut counts[h.codec as usize];
                c.0 += 1;
                c.1 += v.len() as u64;
                c.2 += h.plain_len;
            }
            Err(_) => st.bad_chunks += 1,
        }
    }
    st.per_codec = codecs
        .iter()
        .zip(counts)
        .map(|(c, (n, b, p))| (c.name(), n, b, p))
        .collect();
    drop(store);
    st.disk_bytes = disk_usage(path);
    Ok(st)
}

/// Allocated bytes of every file under `path` (what `du` reports).
fn disk_usage(path: &Path) -> u64 {
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
