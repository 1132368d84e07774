//! The filesystem core: POSIX semantics over the [`crate::store`], in inode numbers,
//! offsets and [`FsResult`]s. It knows nothing of fuser; [`fuse`] adapts it.
//!
//! Locking: every inode in use has one in-memory [`Node`] (its record, open count and
//! dirty chunks) behind its own mutex, so operations on different files never wait on
//! each other. Namespace changes (create, link, unlink, rename, ...) are also
//! serialized by `ns`: they are short store commits, and holding `ns` makes their
//! check-then-update steps atomic. A namespace operation may hold several node locks;
//! every other operation holds at most one, so there is no lock cycle. Slow chunk
//! decodes run without any lock (see [`chunk`]).
//!
//! The rooms: [`dir`], [`rename`], [`attr`] and [`xattr`] (the namespace and metadata),
//! [`file`](mod@file) (the POSIX file operations) over [`chunk`] (a chunk's life: getting its
//! plaintext through the cache and version checks, edits, framing for a commit,
//! swapping in a compacted frame) and `ahead` (whole chunks framed on a helper thread
//! before their commit), [`compact`] (which chunks go to the model, when),
//! [`policy`] (`user.llmfs.compress`), [`report`] and [`prometheus`] (live figures),
//! and [`fuse`], the adapter to fuser.

mod ahead;
pub mod attr;
pub mod background;
mod cache;
pub mod chunk;
pub mod compact;
#[cfg(test)]
mod compact_tests;
pub mod dir;
pub mod error;
#[cfg(test)]
mod fault_tests;
pub mod file;
pub mod fuse;
pub mod perm;
pub mod policy;
pub mod prometheus;
pub mod rename;
pub mod report;
pub mod xattr;

use crate::frame::{FrameError, Plain};
use crate::store::engine::Engine;
use crate::store::records::Inode;
use crate::store::{CreateOptions, OpenOptions, Store, StoreError, Txn};
use crate::tier::Pool;
use cache::ChunkCache;
pub use error::{FsError, FsResult};
use parking_lot::{Condvar, Mutex, MutexGuard};
pub use perm::Caller;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Validated configuration of the core (the CLI builds it from mount options).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Bytes of decoded chunks kept in the cache.
    pub cache_bytes: usize,
    /// A file with more dirty bytes than this persists them inside the write call.
    pub dirty_file_limit: usize,
    /// When all files together hold more dirty bytes, writers persist their own.
    pub dirty_total_limit: usize,
    /// How often the background flusher persists dirty chunks of open files.
    pub flush_interval: Duration,
    /// Used when the store is created (only ever in a missing or empty directory).
    pub create: CreateOptions,
    /// Whether reads update atime (relatime rules), off with `noatime` and `ro`.
    pub update_atime: bool,
    /// A read-only mount: nothing is written to the store, not even orphan cleanup.
    pub read_only: bool,
    /// Chunks not written for this long are compacted (a file's partial tail chunk once
    /// the whole file has not been written for this long).
    pub cold_after: Duration,
    /// Whether the compactor runs (with a model attached).
    pub compact: bool,
    /// flush and fsync return once the file's written chunks are LLM-coded (or tried).
    pub sync_llm: bool,
    /// Commits that are not durable share one database transaction for this long
    /// ([`crate::store::engine::Engine::set_commit_window`]); zero: each is its own.
    pub commit_window: Duration,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            cache_bytes: 64 << 20,
            dirty_file_limit: 8 << 20,
            dirty_total_limit: 64 << 20,
            flush_interval: Duration::from_secs(5),
            create: CreateOptions {
                chunk_size: file::DEFAULT_CHUNK_SIZE,
            },
            update_atime: true,
            read_only: false,
            cold_after: compact::DEFAULT_COLD_AFTER,
            compact: true,
            sync_llm: false,
            commit_window: DEFAULT_COMMIT_WINDOW,
        }
    }
}

/// An inode and its number, what lookups and attribute calls return.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The inode number.
    pub ino: u64,
    /// Its record as the filesystem sees it now (unsaved changes included).
    pub inode: Inode,
}

/// The in-memory state of an inode in use.
pub struct Node {
    /// The record, with changes not yet persisted (see `meta_dirty`).
    pub inode: Inode,
    /// Open file handles (the data of an unlinked file lives until this is 0).
    pub open: u32,
    /// Dirty chunks by index: `chunk_size` bytes, or empty for "all zeros".
    pub dirty: BTreeMap<u64, Vec<u8>>,
    /// Bytes held by `dirty` (counted against the file's and the daemon's dirty limits).
    pub dirty_bytes: usize,
    /// The record changed and is not persisted yet.
    pub meta_dirty: bool,
    /// Only the access time changed: persisted with the next write of the record, or on
    /// its own when that is all there is, and then only while there is room (a read
    /// never fails because its atime could not be saved).
    pub atime_dirty: bool,
    /// Bumped by every change of the file's contents; a read that decoded chunks
    /// without the lock caches them only if this did not move meanwhile.
    pub gen: u64,
    /// The inode was deleted; holders of a stale handle get ENOENT.
    pub deleted: bool,
    /// Its dirty data could not be saved for want of space, and that was logged.
    pub unsaved_logged: bool,
    /// Its `user.llmfs.compress` policy, once read from the store ([`policy`]).
    pub policy: Option<policy::Policy>,
}

impl Node {
    fn new(inode: Inode) -> Node {
        Node {
            inode,
            open: 0,
            dirty: BTreeMap::new(),
            dirty_bytes: 0,
            meta_dirty: false,
            atime_dirty: false,
            gen: 0,
            deleted: false,
            unsaved_logged: false,
            policy: None,
        }
    }

    fn idle(&self) -> bool {
        self.open == 0 && self.dirty.is_empty() && !self.meta_dirty && !self.atime_dirty
    }
}

type NodeRef = Arc<Mutex<Node>>;

/// Nodes beyond this many are dropped from memory when idle.
const NODE_TRIM: usize = 4096;

/// How long commits that are not durable share a transaction by default (the `commit`
/// mount option): long enough that `tar -x` or a burst of creates writes each page of
/// the database once per group rather than once per file, short enough that a crash of
/// the daemon loses no more than a moment of work nobody fsync'd.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_millis(50);

/// The filesystem core: a store, the in-memory nodes of inodes in use, the chunk cache,
/// the model tier once attached, and the background threads (flusher, compactor). Its
/// methods are the POSIX operations in inode numbers; [`fuse`] calls them.
pub struct Core {
    store: Store,
    cfg: CoreConfig,
    nodes: Mutex<HashMap<u64, NodeRef>>,
    ns: Mutex<()>,
    cache: ChunkCache,
    dirty_total: AtomicUsize,
    /// Open directories; each has its own lock, so listings do not wait on each other.
    dirs: Mutex<HashMap<u64, Arc<Mutex<dir::DirHandle>>>>,
    next_fh: AtomicU64,
    inode_count: AtomicU64,
    shutdown: (Mutex<bool>, Condvar),
    /// The language model's pool of lanes, when one is attached ([`Core::attach_model`]).
    tier: OnceLock<Arc<Pool>>,
    /// The compactor's state and wake-up call.
    compactor: compact::CompactorState,
    /// Milliseconds since `origin` of the last request, for idle work.
    last_activity: AtomicU64,
    origin: std::time::Instant,
    /// The store's directory (for `du` in live statistics); none for in-memory stores.
    store_dir: Option<std::path::PathBuf>,
    /// An access time could not be saved for want of space (logged once per episode).
    atime_skipped: std::sync::atomic::AtomicBool,
    /// The store's walked statistics, reused for a while ([`report::StatsCache`]).
    stats_cache: report::StatsCache,
    /// Event counters for live statistics ([`report::Counters`]).
    counters: report::Counters,
    /// Chunks per codec of recently asked files ([`xattr::CodecsCache`]).
    codecs_cache: xattr::CodecsCache,
    /// (inode, kind of error) of unreadable chunks already logged.
    logged_errors: Mutex<std::collections::HashSet<(u64, String)>>,
    /// Frames fetched by a FUSE thread for the worker that decodes them ([`chunk::Handoff`]).
    handoff: chunk::Handoff,
    /// Whole chunks just written, framed on a helper thread before their commit
    /// ([`ahead`]).
    ahead: ahead::Ahead,
}

impl Core {
    /// Opens (or, in a missing or empty directory, creates) the store and deletes inodes
    /// orphaned by a crash.
    pub fn load(path: &Path, cfg: CoreConfig) -> Result<Core, StoreError> {
        let opts = OpenOptions {
            create: (!cfg.read_only).then(|| cfg.create.clone()),
            read_only: false,
        };
        let mut core = Core::with_store(Store::open(path, &opts)?, cfg)?;
        core.store_dir = Some(path.to_path_buf());
        Ok(core)
    }

    /// The core over a store on any engine (tests use the in-memory one).
    pub fn with_engine(engine: Arc<dyn Engine>, cfg: CoreConfig) -> Result<Core, StoreError> {
        let opts = OpenOptions {
            create: Some(cfg.create.clone()),
            read_only: false,
        };
        Core::with_store(Store::open_engine(engine, &opts)?, cfg)
    }

    fn with_store(store: Store, cfg: CoreConfig) -> Result<Core, StoreError> {
        let core = Core {
            cache: ChunkCache::new(cfg.cache_bytes),
            store,
            cfg,
            nodes: Mutex::new(HashMap::new()),
            ns: Mutex::new(()),
            dirty_total: AtomicUsize::new(0),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            inode_count: AtomicU64::new(0),
            shutdown: (Mutex::new(false), Condvar::new()),
            tier: OnceLock::new(),
            compactor: compact::CompactorState::default(),
            last_activity: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            store_dir: None,
            atime_skipped: std::sync::atomic::AtomicBool::new(false),
            stats_cache: report::StatsCache::default(),
            counters: report::Counters::default(),
            codecs_cache: xattr::CodecsCache::default(),
            logged_errors: Mutex::new(std::collections::HashSet::new()),
            handoff: chunk::Handoff::default(),
            ahead: ahead::Ahead::default(),
        };
        let orphans = if core.cfg.read_only {
            Vec::new()
        } else {
            core.store.orphans()?
        };
        // Nothing is open yet: every orphan's inode goes now; its chunks, possibly
        // many, go in the background (the orphan key stays until they are gone).
        let mut t = Txn::new();
        for ino in &orphans {
            t.delete_inode_record(*ino);
        }
        if !orphans.is_empty() {
            core.store.commit(t)?;
            core.store.sync()?;
            log::info!(
                "{} files unlinked before the last stop are being deleted",
                orphans.len()
            );
        }
        core.inode_count
            .store(core.store.count_inodes()?, Ordering::Relaxed);
        if !core.cfg.read_only {
            core.store.set_commit_window(core.cfg.commit_window);
        }
        Ok(core)
    }

    /// Attaches the language model's pool: LLM chunks become readable, and the compactor
    /// (if `compact`) has lanes to code with.
    pub fn attach_model(&self, pool: Pool) -> Result<(), String> {
        self.tier
            .set(Arc::new(pool))
            .map_err(|_| "a model is attached already".to_string())
    }

    /// The attached model pool, if any.
    pub fn model(&self) -> Option<&Arc<Pool>> {
        self.tier.get()
    }

    /// The settings the core was built with.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The store under the filesystem.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bytes of plaintext per chunk (the store's).
    pub fn chunk_size(&self) -> u64 {
        self.store.chunk_size()
    }

    /// The node of `ino`, loaded from the store if not in memory.
    fn node(&self, ino: u64) -> FsResult<NodeRef> {
        if *self.shutdown.0.lock() {
            // After the final flush nothing may be acknowledged that would be lost.
            return Err(FsError::Io("the filesystem is being unmounted".into()));
        }
        let mut map = self.nodes.lock();
        if let Some(n) = map.get(&ino) {
            return Ok(n.clone());
        }
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        let n = Arc::new(Mutex::new(Node::new(inode)));
        map.insert(ino, n.clone());
        trim_nodes(&mut map);
        Ok(n)
    }

    /// The record of `ino` to commit with a change that is not its data (a name, a link
    /// count, an attribute): the node's, but with the size, stored bytes and content
    /// version of what the store holds. The node's dirty chunks are not in that
    /// transaction, and a size saved without them reads as zeros after a crash (an fsync
    /// of any other file makes the commit durable).
    fn record_to_commit(&self, ino: u64, g: &Node) -> FsResult<Inode> {
        let mut record = g.inode.clone();
        if !g.dirty.is_empty() || g.meta_dirty {
            if let Some(saved) = self.store.inode(ino)? {
                record.size = saved.size;
                record.stored = saved.stored;
                record.data_ver = saved.data_ver;
            }
        }
        Ok(record)
    }

    /// Inserts a node for an inode just created (so its open count starts right).
    fn insert_node(&self, ino: u64, node: Node) {
        let mut map = self.nodes.lock();
        map.insert(ino, Arc::new(Mutex::new(node)));
        trim_nodes(&mut map);
    }

    /// Inodes held in memory (for live statistics).
    pub fn nodes_in_memory(&self) -> usize {
        self.nodes.lock().len()
    }

    fn forget_node(&self, ino: u64) {
        self.nodes.lock().remove(&ino);
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// The entry of `ino`: the in-memory record if the inode is in use, else the stored
    /// one.
    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        let existing = self.nodes.lock().get(&ino).cloned();
        let inode = match existing {
            Some(n) => live(&n)?.inode.clone(),
            None => self.store.inode(ino)?.ok_or(FsError::NotFound)?,
        };
        Ok(Entry { ino, inode })
    }

    /// Persists every dirty node (the background flusher and unmount). Data that does
    /// not fit on a full device stays in memory, and is logged once per file: a later
    /// round saves it once there is room. `final_round` (unmount) logs what is lost.
    pub fn persist_all(&self, final_round: bool) -> FsResult<()> {
        let nodes: Vec<(u64, NodeRef)> = self
            .nodes
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut result = Ok(());
        for (ino, n) in nodes {
            let mut g = n.lock();
            if g.deleted || g.idle() {
                continue;
            }
            match self.persist(ino, &mut g) {
                Ok(()) => g.unsaved_logged = false,
                Err(FsError::NoSpace) => {
                    let path = || self.store.find_path(ino).unwrap_or_else(|| "?".into());
                    if final_round {
                        log::error!(
                            "{} bytes written to inode {ino} ({}) are lost: the store's device \
                             is full (they were never fsync'd; the writer got ENOSPC)",
                            g.dirty_bytes,
                            path()
                        );
                    } else if !g.unsaved_logged {
                        g.unsaved_logged = true;
                        log::warn!(
                            "{} bytes written to inode {ino} ({}) wait in memory for room on \
                             the store's device; they are lost if it is unmounted first",
                            g.dirty_bytes,
                            path()
                        );
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        result
    }

    /// Persists everything and makes it durable: the last thing before unmount.
    pub fn shutdown(&self) -> FsResult<()> {
        {
            let mut stop = self.shutdown.0.lock();
            if *stop {
                return Ok(()); // done already (the signal thread, then the session's end)
            }
            *stop = true;
            self.shutdown.1.notify_all();
        }
        self.chunks_written(); // wakes the compactor, which sees the stop
        if let Some(t) = self.tier.get() {
            t.stop();
        }
        self.persist_all(true)?;
        self.store.sync()?;
        let (made, used) = self.ahead.counts();
        log::debug!("chunks framed ahead of their commit: {made}, of which {used} were used");
        // Give free pages back before leaving (bounded: a huge store finishes while idle
        // next time), and leave the database file self-contained.
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) && self.store.reclaim()? {}
        self.store.close()?;
        Ok(())
    }

    /// Runs the background flusher until [`Core::shutdown`]: dirty chunks of files that
    /// stay open are persisted every `flush_interval`, so little is lost on a crash, the
    /// chunks of big deleted files are removed (woken at once by the deletion), what was
    /// committed is made durable, and an idle filesystem gives free space back.
    pub fn spawn_flusher(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (core, waker) = (Arc::clone(self), Arc::clone(self));
        background::Loop::new("llmfs-flusher", self.cfg.flush_interval).spawn(
            move |d| background::wait_flag(&waker.shutdown, d),
            move |round| {
                round.check("background flush", &core.persist_all(false));
                if !core.cfg.read_only {
                    round.check("deleting unlinked files", &core.reap_orphans());
                    // Commits are cheap and not durable: a crash of the machine loses
                    // at most this interval of what was not fsync'd.
                    round.check("making the store durable", &core.store.sync());
                    round.check("giving free space back", &core.reclaim_when_idle());
                }
            },
        )
    }

    /// Wakes the background threads (the flusher also reaps orphans).
    fn wake_background(&self) {
        self.shutdown.1.notify_all();
    }

    fn stopping(&self) -> bool {
        *self.shutdown.0.lock()
    }

    /// Runs the watchdog until [`Core::shutdown`]: when store writes make no progress
    /// for `limit` (a hung disk or database), it logs and aborts the process, so that
    /// its supervisor restarts it; the database recovers at the next open and everything
    /// fsync'd is kept. The last defence: no known bug of the engine leads here.
    pub fn spawn_watchdog(
        self: &Arc<Self>,
        limit: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (core, waker) = (Arc::clone(self), Arc::clone(self));
        background::Loop::new("llmfs-watchdog", Duration::from_secs(5)).spawn(
            move |d| background::wait_flag(&waker.shutdown, d),
            move |_| {
                let stall = core.store.write_stall();
                if stall > limit {
                    log::error!(
                        "store writes made no progress for {} s ({} writes waiting on the \
                         database; the disk or the database is hung): aborting so the \
                         supervisor restarts the daemon",
                        stall.as_secs(),
                        core.store.writes_in_flight()
                    );
                    std::process::abort();
                }
            },
        )
    }

    /// Decodes an LLM frame with the model for `who` (blocking: seconds on a CPU).
    fn decode_llm(
        &self,
        ino: u64,
        idx: u64,
        ver: u64,
        framed: &[u8],
        who: u32,
    ) -> Result<Plain, FrameError> {
        let Some(tier) = self.tier.get() else {
            return Err(FrameError::NeedsModel);
        };
        let t0 = std::time::Instant::now();
        let r = tier.decode((ino, idx, ver), framed, who);
        if r.is_ok() {
            // What the requester waited, queueing behind other decodes included.
            self.counters.cold_reads.observe(t0.elapsed());
        }
        r.map(Arc::unwrap_or_clone).map_err(FrameError::from)
    }

    /// Notes a request: idle work (giving space back) waits for a quiet filesystem.
    pub fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }

    /// How long no request came.
    pub fn idle_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity.load(Ordering::Relaxed)))
    }

    /// Inodes in use, for statfs.
    pub fn inodes_used(&self) -> u64 {
        self.inode_count.load(Ordering::Relaxed)
    }
}

/// Past [`NODE_TRIM`] nodes, drops those nobody else holds (count 1: the map) and with
/// nothing unsaved; a later access reloads them from the store.
fn trim_nodes(map: &mut HashMap<u64, NodeRef>) {
    if map.len() > NODE_TRIM {
        map.retain(|_, n| Arc::strong_count(n) > 1 || n.try_lock().is_none_or(|g| !g.idle()));
    }
}

/// Locks a node, failing with ENOENT if the inode was deleted meanwhile.
fn live(n: &NodeRef) -> FsResult<MutexGuard<'_, Node>> {
    let g = n.lock();
    if g.deleted {
        return Err(FsError::NotFound);
    }
    Ok(g)
}

const NAME_MAX: usize = 255;

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') {
        return Err(FsError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn core() -> (tempfile::TempDir, Core) {
        core_with(CoreConfig::default())
    }

    /// Creates a regular file with permission bits `perm` (not opened).
    pub fn new_file(
        core: &Core,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
    ) -> FsResult<Entry> {
        let what = dir::NewNode::File {
            mode: libc::S_IFREG | perm,
            rdev: 0,
        };
        core.create_node(caller, parent, name, what, false)
    }

    /// A core over a fresh in-memory store (the directory is for tests that need one).
    pub fn core_with(cfg: CoreConfig) -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::with_engine(MemoryEngine::new(), cfg).unwrap();
        (dir, core)
    }

    pub use crate::store::engine::memory::MemoryEngine;

    /// A stand-in for the language model in tests: its "LLM" frames are real LLM-codec
    /// frames whose payload is zstd level 19, so they decode only through the tier, and
    /// each call can take `delay` (checking the cancel flag every millisecond, as the
    /// real coder checks it every token).
    pub struct FakeCodec {
        pub delay: std::time::Duration,
        pub profile: Vec<u8>,
        cancel: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FakeCodec {
        fn wait(&self) -> Result<(), FrameError> {
            let end = std::time::Instant::now() + self.delay;
            while std::time::Instant::now() < end {
                if self.cancel.load(Ordering::SeqCst) {
                    return Err(FrameError::Cancelled);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        }
    }

    impl crate::tier::ChunkCodec for FakeCodec {
        fn encode(
            &mut self,
            plain: &[u8],
            fast: Option<&[u8]>,
        ) -> Result<crate::tier::Coded, FrameError> {
            self.wait()?;
            let z =
                zstd::bulk::compress(plain, 19).map_err(|e| FrameError::Model(e.to_string()))?;
            let llm = crate::frame::assemble(crate::frame::Codec::Llm, plain, &z);
            let fast = fast.map_or_else(|| crate::frame::encode_fast(plain), <[u8]>::to_vec);
            let frame = if llm.len() < fast.len() { llm } else { fast };
            crate::tier::Coded::from_frame(frame)
        }
        fn decode(&mut self, frame: &[u8]) -> Result<Plain, FrameError> {
            self.wait()?;
            let h = crate::frame::parse_header(frame)?;
            let plain = zstd::bulk::decompress(&frame[h.header_len..], h.plain_len as usize)
                .map_err(|e| FrameError::Corrupt(e.to_string()))?;
            crate::frame::verify(&h, &plain)?;
            Ok(plain.into())
        }
        fn set_cancel(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
            self.cancel = flag;
        }
        fn profile(&self) -> Vec<u8> {
            self.profile.clone()
        }
    }

    /// A one-lane pool running a [`FakeCodec`].
    pub fn fake_tier(delay: std::time::Duration, profile: &[u8]) -> Pool {
        fake_pool(1, delay, profile)
    }

    /// A pool of `lanes` lanes running [`FakeCodec`]s.
    pub fn fake_pool(lanes: usize, delay: std::time::Duration, profile: &[u8]) -> Pool {
        let profile = profile.to_vec();
        let starter: crate::tier::LaneStarter = Arc::new(move |_spec, serve| {
            let mut c = FakeCodec {
                delay,
                profile: profile.clone(),
                cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            };
            serve(crate::tier::Lane {
                narrow: &mut c,
                wide: None,
            });
            Ok(())
        });
        let config = crate::tier::PoolConfig {
            lanes,
            threads_per_lane: 1,
            wide_threads: None,
            prefetch_bytes: 1 << 20,
        };
        Pool::start(config, starter).unwrap()
    }
}
