//! The sled store: opening/creating it, the superblock, and typed access to records.
//! It knows nothing of FUSE, permissions or caching; [`crate::fs`] builds on it.

pub mod keys;
pub mod records;
pub mod stats;

use records::{Inode, Kind, Superblock, Time, FORMAT_VERSION};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use sled::Batch;

/// The root directory's inode number (FUSE's fixed root).
pub const ROOT_INO: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("the store is in use by another process (is it mounted already?)")]
    InUse,
    #[error("store is corrupted: {0}")]
    Corrupt(String),
    #[error(
        "store format version {0} is not supported (this build reads version {FORMAT_VERSION}); \
         use the llmfs release that wrote it"
    )]
    UnsupportedVersion(u32),
}

/// Options that only matter when a store is created.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub chunk_size: u32,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    superblock: Superblock,
    writes: WriteProgress,
}

/// How long the oldest unfinished write has been running, for the watchdog: sled 0.34
/// can deadlock inside `apply_batch` under concurrent load (spacejam/sled#1412), and a
/// daemon that hangs forever is worse than one that dies and is restarted.
#[derive(Default)]
struct WriteProgress {
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` when a write last finished (or the first started).
    last_progress_ms: AtomicU64,
    origin: OnceLock<Instant>,
}

impl WriteProgress {
    fn now_ms(&self) -> u64 {
        self.origin.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.last_progress_ms.store(self.now_ms(), Ordering::SeqCst);
        }
        let r = f();
        self.last_progress_ms.store(self.now_ms(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn stalled_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return Duration::ZERO;
        }
        let last = self.last_progress_ms.load(Ordering::SeqCst);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

impl Store {
    /// Opens the store at `path`, creating it (with `create`) when it holds no superblock.
    pub fn open(path: &Path, create: &CreateOptions) -> Result<Store, StoreError> {
        // sled's own compression stays off: chunk frames are already compressed and
        // metadata is tiny. sled uses several times `cache_capacity` in practice (measured
        // under sustained writes), so it stays small; the chunk cache is ours.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(16 << 20)
            .use_compression(false)
            .open()
            .map_err(|e| match e {
                // sled reports its lock file as a formatted Other error.
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::InUse
                }
                e => StoreError::Sled(e),
            })?;
        let tree = db.open_tree("fs")?;
        let superblock = match tree.get(keys::SUPERBLOCK)? {
            Some(b) => Superblock::decode(&b)?,
            None => {
                let sb = Superblock {
                    format_version: FORMAT_VERSION,
                    chunk_size: create.chunk_size,
                    model_fingerprint: None,
                };
                let now = Time::now();
                let mut root = Inode::new(libc::S_IFDIR | 0o755, 0, 0, now);
                root.nlink = 2;
                root.parent = ROOT_INO;
                let mut b = Batch::default();
                b.insert(keys::SUPERBLOCK, sb.encode());
                b.insert(keys::inode(ROOT_INO), root.encode());
                tree.apply_batch(b)?;
                db.flush()?;
                log::info!(
                    "created store at {} (chunk size {} bytes)",
                    path.display(),
                    sb.chunk_size
                );
                sb
            }
        };
        if !(512..=(1 << 24)).contains(&superblock.chunk_size) {
            return Err(StoreError::Corrupt(format!(
                "chunk size {} out of range",
                superblock.chunk_size
            )));
        }
        Ok(Store {
            db,
            tree,
            superblock,
            writes: WriteProgress::default(),
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    pub fn chunk_size(&self) -> u64 {
        u64::from(self.superblock.chunk_size)
    }

    /// A fresh inode number, never handed out before.
    pub fn alloc_ino(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()? + 2)
    }

    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.writes.run(|| self.tree.apply_batch(batch))?)
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writes.run(|| self.db.flush())?;
        Ok(())
    }

    /// How long writes have been in flight without any of them finishing.
    pub fn write_stall(&self) -> Duration {
        self.writes.stalled_for()
    }

    pub fn get_inode(&self, ino: u64) -> Result<Option<Inode>, StoreError> {
        match self.tree.get(keys::inode(ino))? {
            Some(b) => Ok(Some(Inode::decode(&b)?)),
            None => Ok(None),
        }
    }

    pub fn put_inode(batch: &mut Batch, ino: u64, inode: &Inode) {
        batch.insert(keys::inode(ino), inode.encode());
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>, StoreError> {
        match self.tree.get(keys::dirent(parent, name))? {
            Some(v) => Ok(Some(records::decode_dirent(&v)?)),
            None => Ok(None),
        }
    }

    pub fn dir_is_empty(&self, dir: u64) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .scan_prefix(keys::dirent_prefix(dir))
            .next()
            .transpose()?
            .is_none())
    }

    /// Up to `limit` entries of `dir` whose names sort strictly after `after`.
    pub fn dir_entries_after(
        &self,
        dir: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64, Kind)>, StoreError> {
        let prefix = keys::dirent_prefix(dir);
        let start = match after {
            Some(name) => {
                // The smallest key strictly greater than `dirent(dir, name)`.
                let mut k = keys::dirent(dir, name);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let (ino, kind) = records::decode_dirent(&v)?;
            out.push((keys::dirent_name(&k).to_vec(), ino, kind));
        }
        Ok(out)
    }

    pub fn get_chunk(&self, ino: u64, index: u64) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(keys::chunk(ino, index))?)
    }

    /// Stored chunks of `ino` with index >= `from` (and < `to`): (index, frame length).
    pub fn chunks_in(&self, ino: u64, from: u64, to: u64) -> Result<Vec<(u64, usize)>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for item in self
            .tree
            .range(keys::chunk(ino, from)..keys::chunk(ino, to))
        {
            let (k, v) = item?;
            if let Some(idx) = keys::chunk_index(&k) {
                out.push((idx, v.len()));
            }
        }
        Ok(out)
    }

    /// Adds to `batch` the removal of every record of `ino` but its directory entries.
    pub fn delete_inode(&self, batch: &mut Batch, ino: u64) -> Result<(), StoreError> {
        batch.remove(keys::inode(ino));
        batch.remove(keys::orphan(ino));
        for prefix in [keys::chunk_prefix(ino), keys::xattr_prefix(ino)] {
            for k in self.tree.scan_prefix(prefix).keys() {
                batch.remove(k?);
            }
        }
        Ok(())
    }

    /// Removes up to `max` chunks of `ino`; returns how many it removed.
    pub fn delete_some_chunks(&self, ino: u64, max: usize) -> Result<usize, StoreError> {
        let mut b = Batch::default();
        let mut n = 0;
        for k in self
            .tree
            .scan_prefix(keys::chunk_prefix(ino))
            .keys()
            .take(max)
        {
            b.remove(k?);
            n += 1;
        }
        if n > 0 {
            self.apply(b)?;
        }
        Ok(n)
    }

    /// Inodes without names still holding data: open when unlinked, or big files whose
    /// chunks the background reaper has not removed yet.
    pub fn orphans(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(keys::orphan_prefix()).keys() {
            if let Some(ino) = keys::u64_at(&k?, 1) {
                out.push(ino);
            }
        }
        Ok(out)
    }

    pub fn count_inodes(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self.tree.scan_prefix(keys::inode_prefix()).keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }

    pub fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(keys::xattr(ino, name))?)
    }

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(keys::xattr_prefix(ino)).keys() {
            out.push(keys::xattr_name(&k?).to_vec());
        }
        Ok(out)
    }

    /// A path of `ino` for log lines (a full scan: only for error paths).
    pub fn find_path(&self, ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && parts.len() < 64 {
            let (parent, name) = self.tree.scan_prefix([b'D']).find_map(|item| {
                let (k, v) = item.ok()?;
                let (child, _) = records::decode_dirent(&v).ok()?;
                (child == cur).then(|| {
                    (
                        keys::u64_at(&k, 1).unwrap_or(ROOT_INO),
                        keys::dirent_name(&k).to_vec(),
                    )
                })
            })?;
            parts.push(String::from_utf8_lossy(&name).into_owned());
            cur = parent;
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }

    /// The underlying tree, for statistics.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reopens_with_the_same_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), &CreateOptions { chunk_size: 8192 }).unwrap();
            assert_eq!(s.chunk_size(), 8192);
            assert!(s.get_inode(ROOT_INO).unwrap().unwrap().is_dir());
        }
        let s = Store::open(dir.path(), &CreateOptions { chunk_size: 4096 }).unwrap();
        assert_eq!(s.chunk_size(), 8192, "chunk size is fixed at creation");
    }

    #[test]
    fn write_stall_is_zero_when_idle_and_grows_while_a_write_hangs() {
        let p = WriteProgress::default();
        assert_eq!(p.stalled_for(), Duration::ZERO);
        p.run(|| {
            std::thread::sleep(Duration::from_millis(30));
            assert!(p.stalled_for() >= Duration::from_millis(20));
        });
        assert_eq!(p.stalled_for(), Duration::ZERO);
    }

    #[test]
    fn refuses_unknown_format_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), &CreateOptions { chunk_size: 4096 }).unwrap();
            let sb = Superblock {
                format_version: 42,
                ..s.superblock().clone()
            };
            s.tree.insert(keys::SUPERBLOCK, sb.encode()).unwrap();
            s.flush().unwrap();
        }
        let err = Store::open(dir.path(), &CreateOptions { chunk_size: 4096 })
            .err()
            .unwrap();
        assert!(err.to_string().contains("version 42"), "{err}");
    }
}
