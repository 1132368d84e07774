//! The store: one embedded database holding a filesystem's metadata and chunks, behind
//! typed operations. Nothing outside this module names the database or builds a key.
//!
//! - [`keys`]: every table and key layout, in one table.
//! - [`records`], [`extent`]: the encodings of the values.
//! - [`txn::Txn`]: a typed batch (put inode, link, write chunk, ...), committed atomically.
//! - [`engine`]: the database seam, with the product engine and an in-memory twin that
//!   injects faults for tests.
//!
//! It knows nothing of FUSE, permissions or caching; [`crate::fs`] builds on it. Methods
//! that read before they add to a [`Txn`] (chunk edits) are correct when the caller holds
//! the file's lock, as the filesystem core does.
//!
//! The rooms: [`open`](Store::open) (opening, creating and upgrading a store), reads
//! through a transaction's changes (`view.rs`), the namespace (`namespace.rs`), chunks,
//! extents and the compactor's queue (`chunks.rs`); this file holds the types, the
//! commit façade and the store's counters. Why the engine is SQLite, measured, is in
//! [`engine::sqlite`].

pub mod engine;
pub mod extent;
pub mod fsck;
pub mod keys;
pub mod records;
pub mod salvage;
pub mod seal;
pub mod stats;
pub mod txn;

mod chunks;
pub use chunks::Chunks;
mod namespace;
mod open;
mod view;

use engine::{Engine, EngineError, Table};
use parking_lot::Mutex;
use records::{Superblock, FORMAT_VERSION, OLDEST_FORMAT};
use seal::Sealed;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
pub use txn::Txn;

/// The root directory's inode number (FUSE's fixed root).
pub const ROOT_INO: u64 = 1;

/// Inode numbers are reserved this many at a time (one small commit per block).
const INO_BLOCK: u64 = 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device holding the store is full (or below the reserve kept for deletes);
    /// the commit was rolled back and the store stays usable.
    #[error("no space left on the device that holds the store")]
    NoSpace,
    /// Another process holds the store's lock.
    #[error("the store is in use by another process (is it mounted already?)")]
    InUse,
    /// The database engine failed (I/O, SQLite) while the store was doing `op`.
    #[error("{op}: {source}")]
    Engine {
        /// What the store was doing.
        op: StoreOp,
        /// What the engine said.
        source: EngineError,
    },
    /// A record or the database is damaged; the text names what and where.
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    /// The superblock names a format this build does not read.
    #[error(
        "store format version {0} is not supported (this build reads versions {OLDEST_FORMAT} to \
         {FORMAT_VERSION}); use the llmfs release that wrote it"
    )]
    UnsupportedVersion(u32),
    /// The directory holds a format 1 store of llmfs 0.1.0 (sled).
    #[error(
        "{0} holds a store of format version 1, written by llmfs 0.1.0 on sled; this release \
         reads format {FORMAT_VERSION} only: mount it with llmfs 0.1.0 and copy its files into a \
         new store"
    )]
    SledStore(PathBuf),
    /// The directory holds files that are not a store, so none is created there.
    #[error(
        "{path} is not an llmfs store: it holds {found}. A store is created only in an empty or \
         missing directory"
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// The first few names found in it.
        found: String,
    },
    /// The directory holds no store and none was to be created.
    #[error("{0} holds no llmfs store")]
    Missing(PathBuf),
}

/// What the store was doing when its engine failed: the operation a
/// [`StoreError::Engine`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Opening, creating or upgrading the store.
    Open,
    /// Reading records (a point read, a scan, a walk).
    Read,
    /// Committing a transaction.
    Commit,
    /// Making commits durable (fsync).
    Sync,
    /// Giving free space back.
    Reclaim,
    /// Closing the database at unmount.
    Close,
    /// Measuring or checking the database (space, integrity).
    Check,
}

impl std::fmt::Display for StoreOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreOp::Open => "opening the store",
            StoreOp::Read => "reading the store",
            StoreOp::Commit => "committing to the store",
            StoreOp::Sync => "syncing the store",
            StoreOp::Reclaim => "giving the store's free space back",
            StoreOp::Close => "closing the store",
            StoreOp::Check => "checking the store's database",
        })
    }
}

impl StoreError {
    /// The error of an engine failure during `op` (a full device and a store in use keep
    /// their own variants: callers act on them).
    pub fn engine(op: StoreOp, e: EngineError) -> StoreError {
        match e {
            EngineError::NoSpace => StoreError::NoSpace,
            EngineError::InUse => StoreError::InUse,
            source => StoreError::Engine { op, source },
        }
    }
}

/// Names the store operation an engine result belongs to (`engine.get(..).during(Read)?`).
pub(crate) trait During<T> {
    /// The result, its error turned into a [`StoreError`] naming `op`.
    fn during(self, op: StoreOp) -> Result<T, StoreError>;
}

impl<T> During<T> for Result<T, EngineError> {
    fn during(self, op: StoreOp) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::engine(op, e))
    }
}

/// How to open a store.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Create a store when the directory is missing or empty (never otherwise).
    pub create: Option<CreateOptions>,
    /// Change nothing in the store's files (`llmfs stats` and `fsck` without `--repair`):
    /// no checkpoint, no upgrade, no commit; writes fail.
    pub read_only: bool,
}

/// Options that only matter when a store is created.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Bytes of plaintext per chunk (512 B to 16 MiB), fixed for the store's life.
    pub chunk_size: u32,
}

/// A stored chunk and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// The chunk's content version (see [`records::Inode::data_ver`]).
    pub ver: u64,
    /// The chunk's frame, as stored ([`crate::frame`]).
    pub frame: crate::frame::Frame,
    /// In the `chunk` table (written since last settled) rather than in an extent.
    pub hot: bool,
}

/// A stored chunk without its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk's index in its file (offset / chunk size).
    pub index: u64,
    /// The chunk's content version.
    pub ver: u64,
    /// Bytes of its frame.
    pub frame_len: usize,
    /// In the `chunk` table (written since last settled) rather than in an extent.
    pub hot: bool,
    /// The frame's codec (`None` when its header is damaged).
    pub codec: Option<crate::frame::Codec>,
}

/// A chunk waiting for the compactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingChunk {
    /// The file.
    pub ino: u64,
    /// The chunk's index in the file.
    pub index: u64,
    /// The version that was queued: the compactor's result is dropped if the chunk
    /// has moved on.
    pub ver: u64,
    /// When that version was written (seconds since the epoch): the compactor waits
    /// until it is cold.
    pub written: i64,
}

/// An open store: typed reads and transactions over one database, the inode numbers
/// it hands out, and counters every commit keeps (chunks pending, writes in flight).
pub struct Store {
    engine: Sealed,
    superblock: Superblock,
    /// (next inode number to hand out, first number not yet reserved in the store)
    inos: Mutex<(u64, u64)>,
    writes: WriteProgress,
    /// Chunks waiting for the compactor, kept by every commit (counted once at open),
    /// so that asking costs no scan.
    pending: std::sync::atomic::AtomicI64,
}

/// How long the oldest unfinished write has been running, for the watchdog: a daemon
/// whose database hangs forever is worse than one that dies and is restarted.
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
    /// Whether the store is of an older format that a read-write open would upgrade.
    pub fn needs_upgrade(&self) -> bool {
        *self.engine.mode() != seal::Mode::Strict
    }

    /// The store's superblock: format version, chunk size, the release that created it.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Bytes of plaintext per chunk, fixed when the store was created.
    pub fn chunk_size(&self) -> u64 {
        u64::from(self.superblock.chunk_size)
    }

    /// A fresh inode number, never handed out before in this store.
    pub fn alloc_ino(&self) -> Result<u64, StoreError> {
        let mut g = self.inos.lock();
        if g.0 >= g.1 {
            // Reserve a block first: commits are ordered, so no inode created with a
            // number from it can outlive the reservation in a crash.
            let reserved = g.1 + INO_BLOCK;
            let mut t = Txn::new();
            t.put(
                Table::Meta,
                keys::NEXT_INO.to_vec(),
                keys::next_ino_value(reserved),
            );
            self.commit(t)?;
            g.1 = reserved;
        }
        g.0 += 1;
        Ok(g.0 - 1)
    }

    /// Applies `txn` atomically; durable only with the next [`Store::sync`].
    pub fn commit(&self, txn: Txn) -> Result<(), StoreError> {
        if txn.is_empty() {
            return Ok(());
        }
        let (ops, delta) = txn.into_parts();
        self.writes
            .run(|| self.engine.commit(&ops, false))
            .during(StoreOp::Commit)?;
        self.pending.fetch_add(delta, Ordering::Relaxed);
        Ok(())
    }

    /// Applies `txn` atomically and makes it durable, with every commit before it: one
    /// fsync of the WAL at this commit, where a commit and then [`Store::sync`] write a
    /// second transaction (the sync point) and fsync after it.
    pub fn commit_durable(&self, txn: Txn) -> Result<(), StoreError> {
        let (ops, delta) = txn.into_parts();
        self.writes
            .run(|| self.engine.commit(&ops, true))
            .during(StoreOp::Commit)?;
        self.pending.fetch_add(delta, Ordering::Relaxed);
        Ok(())
    }

    /// Lets commits that are not durable share a database transaction for up to
    /// `window` ([`Engine::set_commit_window`]).
    pub fn set_commit_window(&self, window: Duration) {
        self.engine.set_commit_window(window)
    }

    /// Makes everything committed so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.writes.run(|| self.engine.sync()).during(StoreOp::Sync)
    }

    /// The database engine's own consistency check; one line per problem.
    pub(crate) fn engine_integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.engine.integrity_check().during(StoreOp::Check)
    }

    /// How long writes have been in flight without any of them finishing.
    pub fn write_stall(&self) -> Duration {
        self.writes.stalled_for()
    }

    /// Writes waiting on the database right now.
    pub fn writes_in_flight(&self) -> usize {
        self.writes.in_flight.load(Ordering::SeqCst)
    }

    /// Leaves the database compact and self-contained (see [`Engine::close`]): the last
    /// thing before the daemon exits, after [`Store::sync`].
    pub fn close(&self) -> Result<(), StoreError> {
        self.writes
            .run(|| self.engine.close())
            .during(StoreOp::Close)
    }

    /// One step of giving free space back (see [`Engine::reclaim`]).
    pub fn reclaim(&self) -> Result<bool, StoreError> {
        self.writes
            .run(|| self.engine.reclaim())
            .during(StoreOp::Reclaim)
    }

    /// Bytes the device holding the store has for new data (its free space and the
    /// free pages inside the database, less the reserve kept for deletes).
    pub fn device_room(&self) -> u64 {
        self.engine.room()
    }

    /// The database's bytes: file, WAL, free pages, pages in use.
    pub fn space(&self) -> Result<engine::EngineSpace, StoreError> {
        self.engine.space().during(StoreOp::Check)
    }

    /// The `meta` record `key`, if written (as stored, its seal checked).
    pub fn meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine
            .get(Table::Meta, key.key())
            .during(StoreOp::Read)
    }
    /// Pins what LLM frames are coded under, with the canary frame, in `txn`.
    pub fn pin_profile(&self, txn: &mut Txn, profile: &[u8], canary: &[u8]) {
        txn.put(Table::Meta, keys::PROFILE.to_vec(), profile.to_vec());
        txn.put(Table::Meta, keys::CANARY.to_vec(), canary.to_vec());
    }
}

/// Records of the `meta` table a caller may read.
#[derive(Clone, Copy, Debug)]
pub enum MetaKey {
    /// The codec profile the store's LLM frames are coded under, pinned by the first.
    Profile,
    /// A frame of a known text coded under that profile, decoded at mount to check
    /// that the model still decodes what it coded.
    Canary,
}

impl MetaKey {
    fn key(self) -> &'static [u8] {
        match self {
            MetaKey::Profile => keys::PROFILE,
            MetaKey::Canary => keys::CANARY,
        }
    }
}

#[cfg(test)]
mod tests;
