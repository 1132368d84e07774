//! The product engine: SQLite (bundled, through `rusqlite`), one database file per store.
//!
//! ## Why SQLite: chosen by measurement
//!
//! Measured 2026-11-24 on llmfs's own workload (1.5 KB fast frames written in small
//! commits with their inode record, rewritten later as 300 B frames, 10% of older files
//! deleted per round, 20 rounds of 20 MiB; a standalone bench of the candidate engines
//! with this store's layouts). Bytes on disk / bytes of live frames and metadata:
//!
//! | engine, layout | growing store | steady state | after deleting half, idle |
//! | --- | ---: | ---: | ---: |
//! | sled 0.34 (llmfs 0.1.0) | 8.3x, growing | 8.9-10.1x, growing | 18x |
//! | fjall 3.1 (key-value separation) | 2.7x | 3.7-5.8x, rising | 6.2x (nothing given back in 30 s idle) |
//! | redb 4.6, frames per key / 4 KiB extents | 2.0x | 2.5x flat | 4.1x; 1.3x only after `compact()`, which stalls all I/O 0.3-4.8 s |
//! | SQLite 3.54, 4 KiB pages, 64 KiB extents | 1.76x | 2.2x flat | 3.6x; 1.22x after idle reclaim |
//! | **SQLite 3.54, 8 KiB pages, 64 KiB extents** | **1.59x; 1.11x after idle reclaim** | **1.10-1.11x after idle reclaim** | **1.14x after 0.5 s of idle reclaim** |
//!
//! SQLite is the only one that meets the space targets (at most 1.3x steady, 1.5x after
//! deleting half, an empty store under 1 MiB: 84-140 KiB, 304 KiB with the intent log
//! added since), and it gives space back in
//! steps of tens of milliseconds that block no reader (`incremental_vacuum`), where redb
//! needs an exclusive `compact()`. Its cost: commits of 30 µs typical (in that bench, a
//! checkpoint with two fsyncs every 1,000 WAL pages), where redb's take 20 µs; point reads of 7 µs against
//! 2 µs. It is maintained, releases often (3.54.1, 2026-10), and has no known open
//! deadlock or corruption bug; `rusqlite` builds it from source (`bundled`). The settings
//! and why are below. Two facts that shaped the layout: small values waste
//! B-tree pages (hence extents of settled frames), and a 1.5 KB frame fills an 8 KiB page
//! to 92% but a 4 KiB one to 73% (hence 8 KiB pages).
//!
//! ## Settings, and why
//!
//! - WAL journal, `synchronous=NORMAL`: a commit costs a write into the WAL and no fsync,
//!   and survives a crash of the process (not a power loss). A durable commit fsyncs the
//!   WAL after it (what `synchronous=FULL` does, which SQLite cannot switch to inside a
//!   group's transaction), and so covers every earlier commit too; [`Engine::sync`] with
//!   nothing new to commit writes a one-row sync point.
//! - Group commit ([`Engine::set_commit_window`], the daemon's `commit=` option, 50 ms by
//!   default): commits join one open transaction, each as a savepoint (a failed one takes
//!   back only itself), and the transaction is written when the window has passed (a
//!   committer thread sees to it), when its values reach 4 MiB, and before a checkpoint, a
//!   reclaim step or a close. A page that many commits change, such as the leaf holding a
//!   directory's new entries, reaches the WAL once per group instead of once per commit. A
//!   crash of the process loses the open group's commits after its last durable one (never
//!   more than the window); a group that fails to reach the WAL while holding acknowledged
//!   commits stops all writes and says so in the log, since what the daemon holds in
//!   memory no longer matches the store.
//! - A durable commit inside a group, while every earlier transaction is fsync'd, goes to
//!   the intent log ([`intents`], `llmfs.intents`): the group's changes no record holds
//!   yet, as keys and values, appended and `fdatasync`ed; the group stays open, and is
//!   fsync'd when it is written, after which the log starts over. Otherwise (no window, a
//!   group after one written without an fsync, a record over 256 KiB, a full log, a
//!   device with less than 16 MiB free beyond the reserve) the group is written and the
//!   WAL fsync'd at once. Measured with an fsync every 64 JSONL
//!   lines of ~100 B: 7.32 -> 1.53 bytes written to the disk per byte appended, an fsync
//!   658 -> 569 µs at the median (`scripts/bench-ab.sh`, 3 rounds, README). An open applies the
//!   records a crash left (a read-only open holds them in a transaction it never commits,
//!   changing no file).
//! - Checkpoints off the writers' path: SQLite checkpoints inside the commit that fills
//!   the WAL to 1,000 pages, and a checkpoint fsyncs the WAL and the database file, so a
//!   sequential writer waited 20 ms in every second commit of 9 MiB. The engine takes
//!   SQLite's WAL hook instead: once a commit leaves 500 pages (4 MiB) the group
//!   committer checkpoints while the writer goes on (the writer's next commit waits only
//!   if the checkpoint still holds the connection), and a commit that finds 1,000 pages
//!   checkpoints itself, so the WAL's bound is what it was. Measured: fio's 256 MiB 1 MiB
//!   writes 193 -> 250 MB/s (3 alternating runs), `tar -xf` level (1.78 vs 1.80 s).
//! - `auto_vacuum=INCREMENTAL` (set before the first table): freed pages go to a free
//!   list, are reused by later writes, and are given back to the file system by
//!   [`Engine::reclaim`] (`incremental_vacuum` in small steps, then a checkpoint that
//!   truncates the WAL), which the daemon runs when idle. No step needs exclusive access.
//! - Frames and extents (big values) live in rowid tables with a unique key: a value of
//!   any size fills whole overflow pages, where `WITHOUT ROWID` tables keep only ~1 KB of
//!   a row in the leaf. Small records live in `WITHOUT ROWID` tables.
//! - One connection, behind a mutex, in `locking_mode=EXCLUSIVE`: the daemon is the
//!   database's only user (the `flock` below makes sure), so SQLite need not take and
//!   drop POSIX locks around every statement nor keep a shared-memory index (measured:
//!   those were 18% of the daemon's time with a pool of connections). Statements take
//!   microseconds; scans copy rows out in batches, so no caller code runs under the lock.
//! - `SQLITE_FULL` rolls the commit back and leaves the database usable; below a reserve
//!   of free disk space, commits that only add data are refused up front, so deletes,
//!   truncates and the compactor (which frees more than it writes) still get through.
//! - The store directory is locked with `flock` on `llmfs.lock` (SQLite's own locks are
//!   POSIX locks, which would let a second daemon in).

pub mod intents;
pub mod journal;
pub mod pages;
pub mod wal;

use super::{Engine, EngineError, EngineSpace, Entry, RawOp, Table};
use intents::IntentLog;
use journal::SyncedFile;
use parking_lot::{Condvar, Mutex};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The store's database file, inside the store directory.
pub const DB_FILE: &str = "llmfs.db";
/// The file in the store directory that a process holding the store keeps `flock`ed
/// (exclusive, non-blocking: a second opener gets [`EngineError::InUse`]).
pub const LOCK_FILE: &str = "llmfs.lock";
/// The database being created: a new store is built under this name and renamed to
/// [`DB_FILE`] once complete, so a crash leaves no half-made store (a stale one is
/// removed by the next create).
pub const CREATING: &str = "llmfs.creating.db";

/// 8 KiB pages: a hot chunk's 1.5 KB zstd frame packs 5 to a page (92% full) where a
/// 4 KiB page holds 2 (73%), and a raw 4 KiB chunk still fits in a leaf (measured: the
/// growing store sat at 1.59x on disk against 1.76x with 4 KiB pages before the idle
/// reclaim, 1.12x against 1.20x after it).
const PAGE_SIZE: u64 = 8192;
/// Rows a scan copies out per turn of the connection's lock.
use super::SCAN_BATCH;
/// Free pages given back per reclaim step (2 MiB): a step holds the database for tens of
/// milliseconds (measured: at most ~100 ms on a busy 2-core machine).
const VACUUM_STEP: u32 = 256;
/// Reclaim runs only on an idle daemon (and at unmount), so every free page goes back.
const VACUUM_MIN: u64 = 1;
/// Free space kept on the device: 2% of it, at least what the WAL may hold (it must be
/// folded into the file, growing it, to give space back) plus a commit, at most 64 MiB.
const RESERVE_MIN: u64 = 8 << 20;
const RESERVE_MAX: u64 = 64 << 20;
/// Room beyond the reserve below which durable commits leave the intent log for the WAL:
/// a group kept open past an fsync is written later, and on a device that another
/// program fills meanwhile its commit can fail for room the WAL would have had (measured:
/// a full-disk test lost a group's commit 1 run in 6 with the log used to the last
/// block, 0 in 8 before the log).
const LOG_ROOM: u64 = 16 << 20;

/// What the device has room for: free space (and free pages inside the database) as last
/// measured, less what was committed since; measured again every 50 ms, and whenever it
/// gets close to the reserve.
#[derive(Default)]
struct Gauge {
    avail: u64,
    reserve: u64,
    since: u64,
    at: Option<Instant>,
}

/// An upper bound of the bytes a commit adds to the WAL: its values and a page per change.
fn wal_estimate(ops: &[RawOp]) -> u64 {
    ops.iter()
        .map(|o| match o {
            RawOp::Put(_, k, v) => (k.len() + v.len()) as u64 + PAGE_SIZE,
            RawOp::Delete(..) => PAGE_SIZE / 4,
        })
        .sum::<u64>()
        + 2 * PAGE_SIZE
}

/// Bytes of the keys and values `ops` put.
fn put_bytes(ops: &[RawOp]) -> u64 {
    ops.iter()
        .map(|o| match o {
            RawOp::Put(_, k, v) => (k.len() + v.len()) as u64,
            RawOp::Delete(..) => 0,
        })
        .sum()
}

/// The SQL table holding `t`'s records. Every table and index costs at least a page even
/// when empty, so the store's tables share two: small records in a `WITHOUT ROWID`
/// table, frames and extents in a rowid table with a unique key (an empty store is 4
/// pages, where one SQL table per store table took 14: 112 KiB).
fn sql_table(t: Table) -> &'static str {
    if holds_frames(t) {
        "frames"
    } else {
        "records"
    }
}

/// Tables of frames: big values, in the rowid table (see the module doc).
fn holds_frames(t: Table) -> bool {
    matches!(t, Table::Chunk | Table::Extent)
}

/// The first byte of every key of `t` inside its SQL table.
fn tag(t: Table) -> u8 {
    match t {
        Table::Meta => b'M',
        Table::Inode => b'I',
        Table::Dirent => b'D',
        Table::Xattr => b'X',
        Table::Chunk => b'C',
        Table::Extent => b'E',
        Table::Pending => b'P',
        Table::Orphan => b'O',
    }
}

/// `key` of table `t` as stored.
fn tagged(t: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tag(t));
    k.extend_from_slice(key);
    k
}

fn schema() -> &'static str {
    "CREATE TABLE records(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE frames(k BLOB NOT NULL UNIQUE, v BLOB NOT NULL);"
}

/// The engine's own record in `records`, outside every store table's tag: the stamp of
/// the last durable commit (u64, big endian; a store written before stamps holds one
/// byte, read as 0). Every durable commit raises it, which also gives SQLite something to
/// sync when nothing else changed ([`journal`] says what else it is for).
const SYNC_POINT: &[u8] = b"\xffsync";

/// A group holds commits whose values add up to this much: it is written at once.
const GROUP_MAX_BYTES: u64 = 4 << 20;

/// WAL pages at which the group committer checkpoints, off the writers' path (4 MiB).
const CHECKPOINT_SOFT: u32 = 500;
/// WAL pages at which the commit that finds them checkpoints itself (8 MiB), as SQLite's
/// own `wal_autocheckpoint=1000` did: the bound on the WAL when checkpoints fall behind.
const CHECKPOINT_HARD: u32 = 1000;

/// The product [`Engine`]: one SQLite database behind a mutex, with the store directory
/// locked and its WAL guarded by the durable-commit stamp ([`journal`]).
pub struct SqliteEngine {
    dir: PathBuf,
    db: PathBuf,
    writer: Arc<Mutex<Writer>>,
    /// Wakes the group committer when a group opens, and when the engine is dropped.
    wake: Arc<Condvar>,
    /// The thread that writes a group once its window has passed.
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Commits made since the last durable point.
    unsynced: AtomicBool,
    /// Where durable stamps are recorded (not while a store is being created).
    synced: Option<SyncedFile>,
    read_only: bool,
    /// What the device has room for (see [`Gauge`]).
    gauge: Mutex<Gauge>,
    /// Dropped after the connection (fields drop in order): a WAL that a read-only open
    /// had to create goes again.
    _created_wal: Option<CreatedWal>,
    /// What [`SqliteEngine::device`] reports in tests that set it.
    #[cfg(test)]
    device_for_tests: Mutex<Option<(u64, u64)>>,
    _lock: File,
}

/// An empty WAL file that a read-only connection created (SQLite opens one for a
/// database in WAL mode that it may write to), removed when the connection is gone.
struct CreatedWal(PathBuf);

impl Drop for CreatedWal {
    fn drop(&mut self) {
        if std::fs::metadata(&self.0).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The connection, and the group of commits it may hold open (see
/// [`Engine::set_commit_window`]): commits join one SQLite transaction, written to the WAL
/// once the group is `window` old, holds [`GROUP_MAX_BYTES`], or a durable commit cannot
/// go to the intent log. Every commit of a group is a savepoint
/// of its own, so a commit that fails takes back only itself. One connection does every
/// read, so reads see a group's commits at once.
struct Writer {
    c: Connection,
    group: Option<Group>,
    /// How long a group may stay open; zero: every commit is its own transaction.
    window: Duration,
    /// Why the engine takes no more writes: a group that failed to reach the WAL took
    /// commits already acknowledged with it.
    lost: Option<String>,
    /// The engine is being dropped: the committer ends.
    closing: bool,
    /// The stamp of the last durable commit made (in the open group, the WAL or the
    /// intent log).
    stamp: u64,
    /// The durable stamp of the transactions written to the WAL.
    wal_stamp: u64,
    /// Every transaction written to the WAL is fsync'd: a durable commit may then go to
    /// the intent log alone.
    wal_synced: bool,
    /// Where durable commits go while the group stays open ([`intents`]); `None` for a
    /// store being created, a read-only one, or after the log failed.
    log: Option<IntentLog>,
    /// Pages in the WAL after its last commit, as SQLite's WAL hook reports them; `None`
    /// without the hook (SQLite checkpoints by itself then).
    wal_pages: Option<Arc<AtomicU32>>,
    /// The group committer runs, and checkpoints once the WAL holds
    /// [`CHECKPOINT_SOFT`] pages.
    background: bool,
    /// A checkpoint for the group committer to make.
    checkpoint_due: bool,
    /// A checkpoint failed, and said so: the next failure is not logged again.
    checkpoint_failed: bool,
}

/// Commits made in the open transaction.
struct Group {
    since: Instant,
    commits: u64,
    bytes: u64,
    /// The group's durable commits recorded in the intent log instead of the WAL: the
    /// group's transaction must be fsync'd before the log starts over.
    logged: u64,
    /// The stamp of the group's last durable commit.
    stamp: Option<u64>,
    /// Whether this group's durable commits may go to the intent log: every earlier
    /// transaction was fsync'd, and its changes not yet in a record fit in one.
    loggable: bool,
    /// The group's changes that no record of the intent log holds yet.
    unlogged: Vec<RawOp>,
    unlogged_bytes: usize,
}

impl std::ops::Deref for Writer {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.c
    }
}

impl Writer {
    fn new(c: Connection, stamp: u64, log: Option<IntentLog>) -> Writer {
        Writer {
            c,
            group: None,
            window: Duration::ZERO,
            lost: None,
            closing: false,
            stamp,
            wal_stamp: stamp,
            wal_synced: true,
            log,
            wal_pages: None,
            background: false,
            checkpoint_due: false,
            checkpoint_failed: false,
        }
    }

    /// After a commit: checkpoints the WAL here once it holds [`CHECKPOINT_HARD`] pages
    /// (or [`CHECKPOINT_SOFT`] with no group committer), or leaves the checkpoint to the
    /// group committer once it holds [`CHECKPOINT_SOFT`]. A checkpoint fsyncs the WAL and
    /// the database file, tens of milliseconds that a writer waited for in every second
    /// commit of a sequential write while SQLite checkpointed inside the commit.
    fn after_commit(&mut self) {
        let Some(pages) = self.wal_pages.as_ref().map(|p| p.load(Ordering::Relaxed)) else {
            return;
        };
        if pages >= CHECKPOINT_HARD || (pages >= CHECKPOINT_SOFT && !self.background) {
            self.checkpoint();
        } else if pages >= CHECKPOINT_SOFT {
            self.checkpoint_due = true;
        }
    }

    /// Copies the WAL's pages into the database file (`PASSIVE`, which is what SQLite's
    /// automatic checkpoint runs); the next commit starts the WAL over. Needs no open
    /// transaction. A failure (a full device) leaves the WAL as it was, to be tried again.
    fn checkpoint(&mut self) {
        debug_assert!(self.group.is_none());
        self.checkpoint_due = false;
        match self
            .c
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            Ok(()) => {
                if let Some(p) = &self.wal_pages {
                    p.store(0, Ordering::Relaxed);
                }
                self.checkpoint_failed = false;
            }
            Err(e) => {
                if !std::mem::replace(&mut self.checkpoint_failed, true) {
                    log::warn!("a checkpoint of the WAL failed, tried again later: {e}");
                }
            }
        }
    }

    /// Records durable commit `stamp` of the open group in the intent log, with every
    /// change of the group no record holds yet; false when the group must be written
    /// instead (the log is off, behind an unsynced WAL, or full, or it just failed).
    fn log_durable(&mut self, stamp: u64) -> bool {
        let Some(g) = self.group.as_mut().filter(|g| g.loggable) else {
            return false;
        };
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        debug_assert_eq!(log.base(), self.wal_stamp);
        match log.append(stamp, &g.unlogged) {
            Ok(true) => {
                g.logged += 1;
                g.unlogged.clear();
                g.unlogged_bytes = 0;
                true
            }
            Ok(false) => false,
            Err(e) => {
                log::warn!(
                    "the intent log failed ({e}): durable commits write the WAL from now on"
                );
                self.log = None;
                false
            }
        }
    }

    /// Refuses every write once commits were lost.
    fn check(&self) -> Result<(), EngineError> {
        match &self.lost {
            Some(why) => Err(EngineError::Other(format!(
                "the store takes no more writes until it is mounted again: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Writes the open group to the WAL, and fsyncs the WAL with `durable` (which is
    /// what `synchronous=FULL` does in WAL mode; SQLite cannot change that setting inside
    /// the group's transaction). `own` of the group's commits belong to the caller, which
    /// is told of a failure; the others were acknowledged already, so losing them stops
    /// the engine's writes for good and is logged.
    ///
    /// A group holding durable commits of the intent log is always fsync'd, and the log
    /// starts over after that: its records are in the WAL, on disk.
    fn finish(&mut self, db: &Path, durable: bool, own: u64) -> Result<(), EngineError> {
        let mut durable = durable;
        if let Some(g) = self.group.take() {
            if let Err(e) = self.c.execute_batch("COMMIT") {
                let e = sql_error(db, e);
                if !self.c.is_autocommit() {
                    // SQLite rolls a failed COMMIT back itself; make sure nothing stays open.
                    let _ = self.c.execute_batch("ROLLBACK");
                }
                self.lose(&g, own, &e);
                return Err(e);
            }
            durable |= g.logged > 0;
            if let Some(s) = g.stamp {
                self.wal_stamp = s;
            }
            // Until the fsync below succeeds.
            self.wal_synced = false;
            self.after_commit();
        }
        if durable {
            let wal = PathBuf::from(format!("{}-wal", db.display()));
            File::open(&wal)
                .and_then(|f| f.sync_all())
                .map_err(|source| EngineError::Io { path: wal, source })?;
            self.wal_synced = true;
            if let Some(log) = self.log.as_mut() {
                log.restart(self.wal_stamp);
            }
        }
        Ok(())
    }

    /// `g` is gone without reaching the WAL: if it held acknowledged commits, say so and
    /// take no more writes (what the daemon holds in memory no longer matches the store).
    fn lose(&mut self, g: &Group, own: u64, e: &EngineError) {
        let acked = g.commits.saturating_sub(own);
        if acked == 0 {
            return;
        }
        let why = format!(
            "{acked} commits made in the last {} ms, not fsync'd, could not be written to the WAL and are lost: {e}",
            g.since.elapsed().as_millis()
        );
        log::error!("{why}; the store now refuses writes: unmount it, check it with llmfs fsck, mount it again");
        self.lost = Some(why);
    }
}

/// The group committer: writes each group once its window has passed, so a commit that
/// is not followed by others still reaches the WAL within the window.
fn group_committer(writer: Arc<Mutex<Writer>>, wake: Arc<Condvar>, db: PathBuf) {
    let mut w = writer.lock();
    loop {
        if w.closing {
            return;
        }
        if w.checkpoint_due && w.group.is_none() {
            w.checkpoint();
            continue;
        }
        match w.group.as_ref().map(|g| g.since + w.window) {
            None => {
                wake.wait(&mut w);
            }
            Some(due) if Instant::now() < due => {
                wake.wait_until(&mut w, due);
            }
            // An error is logged by `finish` when it loses anything.
            Some(_) => {
                let _ = w.finish(&db, false, 0);
            }
        }
    }
}

/// Applies one change on `c`.
fn apply_op(c: &Connection, op: &RawOp) -> rusqlite::Result<()> {
    match op {
        RawOp::Put(t, k, v) => {
            let sql = format!(
                "INSERT INTO {0}(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                sql_table(*t)
            );
            c.prepare_cached(&sql)?.execute(params![tagged(*t, k), v])?;
        }
        RawOp::Delete(t, k) => {
            let sql = format!("DELETE FROM {} WHERE k = ?1", sql_table(*t));
            c.prepare_cached(&sql)?.execute(params![tagged(*t, k)])?;
        }
    }
    Ok(())
}

/// Applies the intent log's records of a database at durable stamp `base` (`replay`,
/// read by [`intents::read`]) as one durable commit, raising its stamp to theirs.
fn apply_intents(c: &Connection, db: &Path, replay: &intents::Replay) -> Result<(), EngineError> {
    let Some(last) = replay.last_stamp() else {
        return Ok(());
    };
    let run = || -> rusqlite::Result<()> {
        c.execute_batch("BEGIN IMMEDIATE")?;
        for (_, ops) in &replay.records {
            for op in ops {
                apply_op(c, op)?;
            }
        }
        put_stamp(c, last)?;
        c.execute_batch("COMMIT")
    };
    if let Err(e) = run() {
        if !c.is_autocommit() {
            let _ = c.execute_batch("ROLLBACK");
        }
        return Err(sql_error(db, e));
    }
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    File::open(&wal)
        .and_then(|f| f.sync_all())
        .map_err(|source| EngineError::Io { path: wal, source })?;
    log::info!(
        "{}: applied {} durable commits (#{} to #{last}) from {} that had not reached the \
         database",
        db.display(),
        replay.records.len(),
        replay.records[0].0,
        intents::INTENTS_FILE
    );
    Ok(())
}

/// The durable-commit stamp of an open database.
fn read_stamp(c: &Connection) -> rusqlite::Result<u64> {
    let v: Option<Vec<u8>> = c
        .query_row("SELECT v FROM records WHERE k = ?1", [SYNC_POINT], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| journal::stamp_of(&v)).unwrap_or(0))
}

fn put_stamp(c: &Connection, stamp: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO records(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
    )?
    .execute(params![SYNC_POINT, journal::stamp_value(stamp).as_slice()])
    .map(|_| ())
}

fn sql_error(db: &Path, e: rusqlite::Error) -> EngineError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => EngineError::NoSpace,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => EngineError::Corrupt {
            path: db.to_path_buf(),
            why: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => EngineError::InUse,
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => EngineError::Io {
            path: db.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        },
        _ => EngineError::Other(format!("{}: {e}", db.display())),
    }
}

/// Locks the store directory for this process. A read-only open creates nothing: it
/// locks `llmfs.lock` if it is there, else the directory itself (a daemon always creates
/// the lock file, and a store without one is not mounted).
fn lock_dir(dir: &Path, read_only: bool) -> Result<File, EngineError> {
    let path = dir.join(LOCK_FILE);
    let opened = if read_only {
        match File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::open(dir),
            r => r,
        }
    } else {
        File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
    };
    let f = opened.map_err(|source| EngineError::Io {
        path: path.clone(),
        source,
    })?;
    // SAFETY: flock(2) on a descriptor we own; the lock lives as long as the open file.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            EngineError::InUse
        } else {
            EngineError::Io { path, source: e }
        });
    }
    Ok(f)
}

/// The connection's settings. The WAL is checkpointed every 1,000 pages (8 MiB of 8 KiB
/// pages, so it reaches about 8 MiB plus one commit between checkpoints) and truncated
/// back to 4 MiB after each; the daemon's connection checkpoints from 500 pages on, on the
/// group committer ([`Writer::after_commit`]), with the same bound. Temporary files live
/// in memory: each commit of a group is a savepoint, whose journal (the pages it changes
/// that the group had changed before) went to a temporary file, a write(2) of 8 KiB per
/// page and commit (measured: 12,673 writes for 640 appends and `tar -xf` of 792 files,
/// 771 with them in memory); the journal holds at most the group's changed pages.
fn configure(c: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(30))?;
    c.execute_batch(&format!(
        "PRAGMA locking_mode=EXCLUSIVE;
         PRAGMA synchronous=NORMAL;
         PRAGMA cache_size=-{cache_kib};
         PRAGMA temp_store=MEMORY;
         PRAGMA journal_size_limit=4194304;
         PRAGMA wal_autocheckpoint=1000;"
    ))
}

fn open_conn(db: &Path, cache_kib: i64) -> Result<Connection, EngineError> {
    // Never create here: a missing file is not an empty store.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(db, flags).map_err(|e| sql_error(db, e))?;
    configure(&c, cache_kib).map_err(|e| sql_error(db, e))?;
    Ok(c)
}

/// A connection that changes nothing in the database's files. SQLite cannot open a WAL
/// database read-only without creating the `-shm` and `-wal` files (and, in exclusive
/// locking mode, not at all), so:
/// - without a WAL (or with an empty one) the database file alone is the store: it is
///   opened `immutable`, which reads that file and nothing else;
/// - with a WAL, read-write but `query_only`, in exclusive locking mode (the WAL index in
///   the connection's memory, no `-shm`), and without the checkpoint SQLite runs when the
///   last connection closes, so the WAL is neither folded nor deleted.
fn open_read_only(db: &Path) -> Result<Connection, EngineError> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let c = if has_wal {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(db, flags).map_err(|e| sql_error(db, e))?;
        c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| sql_error(db, e))?;
        c.execute_batch("PRAGMA locking_mode=EXCLUSIVE; PRAGMA query_only=1;")
            .map_err(|e| sql_error(db, e))?;
        c
    } else {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let uri = format!("file:{}?immutable=1", uri_path(db));
        Connection::open_with_flags(uri, flags).map_err(|e| sql_error(db, e))?
    };
    c.busy_timeout(Duration::from_secs(30))
        .and_then(|()| c.execute_batch("PRAGMA cache_size=-16384;"))
        .map_err(|e| sql_error(db, e))?;
    Ok(c)
}

/// A read-only view of a database with the intent log's records applied, changing none
/// of the store's files: a connection like [`open_read_only`]'s with a WAL (exclusive
/// locking, no checkpoint on close), holding the records in a transaction it never
/// commits. With cache spilling off, the transaction's pages stay in the connection's
/// memory (a log holds at most [`intents::LOG_BYTES`] of changes).
fn read_only_with_intents(db: &Path, replay: &intents::Replay) -> Result<Connection, EngineError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(db, flags).map_err(|e| sql_error(db, e))?;
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| sql_error(db, e))?;
    let run = || -> rusqlite::Result<()> {
        c.busy_timeout(Duration::from_secs(30))?;
        c.execute_batch(
            "PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_spill=0; PRAGMA cache_size=-16384;
             BEGIN IMMEDIATE;",
        )?;
        for (_, ops) in &replay.records {
            for op in ops {
                apply_op(&c, op)?;
            }
        }
        if let Some(last) = replay.last_stamp() {
            put_stamp(&c, last)?;
        }
        c.execute_batch("PRAGMA query_only=1;")
    };
    run().map_err(|e| sql_error(db, e))?;
    Ok(c)
}

/// `path` percent-encoded for a `file:` URI (everything but unreserved bytes and `/`).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates a store's database in `dir` (which holds none), runs `init` on it, and makes
/// it visible under its final name only once `init` is durable: a crash midway leaves a
/// directory that still reads as empty.
pub fn create(
    dir: &Path,
    init: impl FnOnce(&dyn Engine) -> Result<(), EngineError>,
) -> Result<Arc<dyn Engine>, EngineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock = lock_dir(dir, false)?;
    let tmp = dir.join(CREATING);
    for stale in [
        tmp.clone(),
        dir.join(format!("{CREATING}-wal")),
        dir.join(format!("{CREATING}-shm")),
    ] {
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(io(&stale))?;
        }
    }
    {
        let c = Connection::open(&tmp).map_err(|e| sql_error(&tmp, e))?;
        c.execute_batch(&format!(
            "PRAGMA page_size={PAGE_SIZE};
             PRAGMA auto_vacuum=INCREMENTAL;
             PRAGMA journal_mode=WAL;
             {}",
            schema()
        ))
        .map_err(|e| sql_error(&tmp, e))?;
        configure(&c, 16 << 10).map_err(|e| sql_error(&tmp, e))?;
        // No stamp file yet: the database is not the store's until it is renamed, and the
        // first open writes `llmfs.synced`.
        let engine = SqliteEngine::with_connection(
            dir,
            &tmp,
            c,
            lock.try_clone().map_err(io(dir))?,
            None,
            0,
            false,
            None,
        );
        init(&engine)?;
        engine.sync()?;
        // Dropping the last connection checkpoints the WAL into the file and removes it.
    }
    let db = dir.join(DB_FILE);
    std::fs::rename(&tmp, &db).map_err(io(&db))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    drop(lock);
    open(dir, false)
}

/// What [`salvage_scan`] hands each record to: its table, key and stored value.
pub type RecordVisit<'a> = dyn FnMut(Table, &[u8], &[u8]) + 'a;

/// What [`salvage_scan`] read.
#[derive(Debug, Default)]
pub struct SalvageScan {
    /// The page scan: pages by kind, and every page found damaged or missing.
    pub pages: pages::ScanReport,
    /// What of the WAL (and of the intent log) was laid over the database file, in words.
    pub wal: String,
    /// Records whose key names no table of this release.
    pub unknown: u64,
}

/// Every record that still reads in the store's files, read without SQLite (which stops
/// at the first damaged page): the database file with the latest copy of each page from
/// the WAL laid over it (damaged frames included: every record carries its own
/// checksum, which the caller checks), every page in use scanned for records, and the
/// intent log's records that follow the database's durable stamp over those. Pages on
/// the free list are left out, so deleted records do not come back. `visit` gets each
/// record's table, key and value as stored.
pub fn salvage_scan(dir: &Path, visit: &mut RecordVisit<'_>) -> Result<SalvageScan, EngineError> {
    let _lock = lock_dir(dir, true)?;
    let db = dir.join(DB_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { path, source }
    };
    let file = File::open(&db).map_err(io(&db))?;
    let wal_path = dir.join(format!("{DB_FILE}-wal"));
    let wal_bytes = match std::fs::read(&wal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&wal_path)(e)),
    };
    let mut header = [0u8; 100];
    let page_size = file
        .read_exact_at(&mut header, 0)
        .ok()
        .and_then(|()| wal::db_page_size(&header));
    let analysis = wal::analyze(&wal_bytes, page_size);
    let overlay = analysis.overlay(&wal_bytes);
    let wal_note = match (&analysis.damage, overlay.len()) {
        (_, 0) => "no WAL frames to apply".to_string(),
        (None, n) => format!("{n} pages from the WAL's intact frames"),
        (Some(d), n) => format!("{n} pages from the WAL, which is damaged: {}", d.summary),
    };
    let mut image =
        pages::FileImage::from_file(file, overlay, PAGE_SIZE as u32).map_err(io(&db))?;
    if let Some(n) = analysis.rebuilt_page_count() {
        image = image.with_page_count(n);
    }
    // The intent log's latest records, by key (the last change of each wins): what the
    // pages hold for those keys is set aside, and replaced by them once the scan has
    // found the database's stamp and it is theirs to follow.
    let latest = intents::read_latest(dir)?.filter(|(_, r)| !r.records.is_empty());
    let mut overlay: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    if let Some((_, r)) = &latest {
        for op in r.records.iter().flat_map(|(_, ops)| ops) {
            match op {
                RawOp::Put(t, k, v) => overlay.insert(tagged(*t, k), Some(v.clone())),
                RawOp::Delete(t, k) => overlay.insert(tagged(*t, k), None),
            };
        }
    }
    let mut set_aside: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut db_stamp = None;
    let mut unknown = 0;
    let mut visit_stored = |k: &[u8], v: &[u8], visit: &mut RecordVisit<'_>| match k
        .split_first()
        .and_then(|(t, key)| Some((table_of(*t)?, key)))
    {
        Some((table, key)) => visit(table, key, v),
        None => unknown += 1,
    };
    let report = pages::scan_records(&image, &mut |k, v| {
        if k == SYNC_POINT {
            db_stamp = journal::stamp_of(v);
        } else if overlay.contains_key(k) {
            set_aside.push((k.to_vec(), v.to_vec()));
        } else {
            visit_stored(k, v, visit);
        }
    });
    let mut wal_note = wal_note;
    match (&latest, db_stamp) {
        (None, _) => {}
        (Some((base, r)), Some(s)) if *base == s => {
            for (k, v) in &overlay {
                if let Some(v) = v {
                    visit_stored(k, v, visit);
                }
            }
            wal_note.push_str(&format!(
                "; durable commits #{} to #{} from {} laid over them",
                r.records[0].0,
                r.last_stamp().unwrap_or(0),
                intents::INTENTS_FILE
            ));
        }
        (Some((base, r)), found) => {
            for (k, v) in &set_aside {
                visit_stored(k, v, visit);
            }
            match found {
                // Records of a generation the database has moved past: in it already.
                Some(s) if s > *base => {}
                _ => wal_note.push_str(&format!(
                    "; {} holds durable commits #{} to #{} after durable commit #{base}, but \
                     the database's own stamp is {}: they are not applied and may be lost",
                    intents::INTENTS_FILE,
                    r.records[0].0,
                    r.last_stamp().unwrap_or(0),
                    found.map_or("unreadable".to_string(), |s| format!("#{s}"))
                )),
            }
        }
    }
    Ok(SalvageScan {
        pages: report,
        wal: wal_note,
        unknown,
    })
}

/// The table a stored key's first byte stands for ([`tag`]).
fn table_of(tag_byte: u8) -> Option<Table> {
    Table::ALL.into_iter().find(|t| tag(*t) == tag_byte)
}

/// Carries out the operator's decision on a store whose WAL or intent log the open
/// refused, under the store's lock: the WAL as [`journal::repair`] says; an intent log
/// damaged in the middle keeps its intact records before the damage (the next open
/// applies them), and the loss of the rest is accepted.
pub fn repair_journal(dir: &Path) -> Result<journal::Repaired, EngineError> {
    let _lock = lock_dir(dir, false)?;
    let db = dir.join(DB_FILE);
    let db_stamp = || -> Result<u64, EngineError> {
        let ro = open_read_only(&db)?;
        read_stamp(&ro).map_err(|e| sql_error(&db, e))
    };
    let stamp = db_stamp()?;
    let replay = intents::read(dir, stamp)?;
    let mut done = Vec::new();
    if journal::check(dir, replay.last_stamp().unwrap_or(stamp), None).is_err() {
        done = journal::repair(dir)?;
    }
    // The WAL's repair may have changed the database's stamp.
    let stamp = db_stamp()?;
    let replay = intents::read(dir, stamp)?;
    if let Some(why) = &replay.damage {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = dir.join(format!("{}.before-repair-{secs}", intents::INTENTS_FILE));
        let n = intents::cut_after_intact(dir, stamp, &kept)?;
        // What is on disk now: the next open must not look for the records cut.
        drop(SyncedFile::create(dir, stamp + n as u64)?);
        done.push(format!(
            "{why}; kept the {n} intact records before the damage (the next mount applies \
             them) and accepted the loss of the rest; the log as it was is kept as {}",
            kept.display()
        ));
    }
    Ok(done)
}

/// Opens the store database in `dir`. The write-ahead log is checked first ([`journal`]):
/// a store that would open with durable commits missing is refused, changing nothing.
/// `read_only` opens change nothing in the store's files at all.
pub fn open(dir: &Path, read_only: bool) -> Result<Arc<dyn Engine>, EngineError> {
    Ok(Arc::new(open_engine(dir, read_only)?))
}

fn open_engine(dir: &Path, read_only: bool) -> Result<SqliteEngine, EngineError> {
    let lock = lock_dir(dir, read_only)?;
    let db = dir.join(DB_FILE);
    let ro = open_read_only(&db)?;
    let stamp = read_stamp(&ro).map_err(|e| sql_error(&db, e))?;
    let replay = intents::read(dir, stamp)?;
    journal::check(
        dir,
        replay.last_stamp().unwrap_or(stamp),
        replay.damage.clone(),
    )?;
    let engine = if read_only {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let created = (!replay.records.is_empty() && !wal.exists()).then_some(CreatedWal(wal));
        let c = if replay.records.is_empty() {
            ro
        } else {
            drop(ro);
            read_only_with_intents(&db, &replay)?
        };
        let mut e = SqliteEngine::with_connection(dir, &db, c, lock, None, stamp, true, None);
        e._created_wal = created;
        e
    } else {
        drop(ro);
        let mut c = open_conn(&db, 16 << 10)?;
        apply_intents(&c, &db, &replay)?;
        // SQLite's own checkpoint runs inside the commit that fills the WAL; with the
        // hook the engine checkpoints instead ([`Writer::after_commit`]).
        let pages = Arc::new(AtomicU32::new(0));
        let seen = pages.clone();
        c.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                seen.store(u32::try_from(n).unwrap_or(0), Ordering::Relaxed);
                Ok(())
            },
        ))
        .map_err(|e| sql_error(&db, e))?;
        let stamp = replay.last_stamp().unwrap_or(stamp);
        let synced = SyncedFile::create(dir, stamp)?;
        let log = IntentLog::open(dir, stamp)?;
        let e =
            SqliteEngine::with_connection(dir, &db, c, lock, Some(synced), stamp, false, Some(log));
        e.writer.lock().wal_pages = Some(pages);
        e
    };
    engine.check_schema()?;
    Ok(engine)
}

impl SqliteEngine {
    #[allow(clippy::too_many_arguments)]
    fn with_connection(
        dir: &Path,
        db: &Path,
        c: Connection,
        lock: File,
        synced: Option<SyncedFile>,
        stamp: u64,
        read_only: bool,
        log: Option<IntentLog>,
    ) -> SqliteEngine {
        SqliteEngine {
            dir: dir.to_path_buf(),
            db: db.to_path_buf(),
            writer: Arc::new(Mutex::new(Writer::new(c, stamp, log))),
            wake: Arc::new(Condvar::new()),
            committer: Mutex::new(None),
            unsynced: AtomicBool::new(false),
            synced,
            read_only,
            gauge: Mutex::new(Gauge::default()),
            _created_wal: None,
            #[cfg(test)]
            device_for_tests: Mutex::new(None),
            _lock: lock,
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn refuse_write(&self) -> EngineError {
        EngineError::Other(format!(
            "{} was opened read-only: nothing may be written",
            self.db.display()
        ))
    }

    /// Every table is there and the file reads as a database: damage shows at mount.
    fn check_schema(&self) -> Result<(), EngineError> {
        // The header's read and write versions are 2 in WAL mode (an immutable
        // connection reports the journal mode as `delete` whatever the file says).
        let mut header = [0u8; 20];
        File::open(&self.db)
            .and_then(|f| f.read_exact_at(&mut header, 0))
            .map_err(|source| EngineError::Io {
                path: self.db.clone(),
                source,
            })?;
        if header[18] != 2 || header[19] != 2 {
            return Err(EngineError::Corrupt {
                path: self.db.clone(),
                why: format!(
                    "the database is not in WAL mode (header versions {} and {})",
                    header[18], header[19]
                ),
            });
        }
        let c = self.writer.lock();
        for name in ["records", "frames"] {
            let found: Option<String> = c
                .query_row(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if found.is_none() {
                return Err(EngineError::Corrupt {
                    path: self.db.clone(),
                    why: format!("table {name} is missing"),
                });
            }
        }
        Ok(())
    }

    fn err(&self, e: rusqlite::Error) -> EngineError {
        sql_error(&self.db, e)
    }

    /// Runs `f` on the connection, then hands it on fairly: to a thread already waiting
    /// rather than back to this one. A scan takes the connection once per batch of rows;
    /// without a fair hand-off the scanning thread took it back at once, and a `stat`
    /// waiting meanwhile waited ~12 ms per request for the whole length of the scan
    /// (measured: a statistics walk of 262,000 chunks).
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let c = self.writer.lock();
        let r = f(&c);
        parking_lot::MutexGuard::unlock_fair(c);
        r
    }

    /// Checkpoints the WAL into the database file and truncates it (best effort). The
    /// reserve guarantees the room this needs: the WAL never outgrows it.
    fn fold_wal(&self) {
        let mut w = self.writer.lock();
        // A checkpoint needs the transaction closed; a failure is logged if it loses
        // anything, and the checkpoint is tried all the same.
        let _ = w.finish(&self.db, false, 0);
        let r = w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        drop(w);
        if let Err(e) = r {
            log::debug!("checkpoint on a full device: {e}");
        }
        self.gauge.lock().at = None;
    }

    /// Whether a commit frees more than it adds: it deletes something and writes little.
    fn frees_space(&self, ops: &[RawOp]) -> bool {
        let deletes = ops.iter().any(|o| matches!(o, RawOp::Delete(..)));
        deletes && put_bytes(ops) <= 128 << 10
    }

    fn free_pages(&self) -> Result<u64, EngineError> {
        let free: i64 = self
            .writer
            .lock()
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(free.max(0) as u64)
    }

    /// (bytes available to us, total bytes) of the device holding the store.
    fn device(&self) -> (u64, u64) {
        #[cfg(test)]
        if let Some(d) = *self.device_for_tests.lock() {
            return d;
        }
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(s) => {
                let frag = s.fragment_size().max(1);
                (s.blocks_available() * frag, s.blocks() * frag)
            }
            Err(_) => (u64::MAX, u64::MAX),
        }
    }

    /// Whether the device, as last measured, has room for `need` more bytes and the
    /// reserve and [`LOG_ROOM`] besides: a durable commit may then go to the intent log.
    fn roomy(&self, need: u64) -> bool {
        let g = self.gauge.lock();
        g.at.is_some() && g.avail.saturating_sub(g.since) >= g.reserve + need + LOG_ROOM
    }

    /// Whether `need` more bytes may be committed with the reserve still free.
    fn room_for(&self, need: u64) -> Result<bool, EngineError> {
        let mut g = self.gauge.lock();
        let near = g.avail.saturating_sub(g.since) < g.reserve + need + (16 << 20);
        let stale = g.at.is_none_or(|t| t.elapsed() > Duration::from_millis(50));
        if near || stale {
            let (avail, total) = self.device();
            // Pages free inside the database take new data without growing the file.
            let inside = self.free_pages()? * PAGE_SIZE;
            g.avail = avail.saturating_add(inside);
            g.reserve = (total / 50).clamp(RESERVE_MIN, RESERVE_MAX);
            g.since = 0;
            g.at = Some(Instant::now());
        }
        Ok(g.avail.saturating_sub(g.since) >= g.reserve + need)
    }

    /// Applies `ops` as one commit: joins (or opens) the group, and writes the group to
    /// the WAL when the group is due, or when the commit is durable and cannot go to the
    /// intent log (`may_log` false: the device is short of room).
    fn write(&self, ops: &[RawOp], durable: bool, may_log: bool) -> Result<(), EngineError> {
        if self.read_only() {
            return Err(self.refuse_write());
        }
        let mut w = self.writer.lock();
        w.check()?;
        // Taken under the lock, and only once applied: the intent log's records carry
        // consecutive stamps.
        let stamp = durable.then_some(w.stamp + 1);
        let opened = w.group.is_none();
        if opened {
            w.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.err(e))?;
            let loggable = w.log.is_some() && w.wal_synced && !w.window.is_zero();
            w.group = Some(Group {
                since: Instant::now(),
                commits: 0,
                bytes: 0,
                logged: 0,
                stamp: None,
                loggable,
                unlogged: Vec::new(),
                unlogged_bytes: 0,
            });
        }
        if let Err(e) = self.apply(&w, ops, stamp) {
            if w.is_autocommit() {
                // SQLite gave the whole transaction up, earlier commits with it.
                if let Some(g) = w.group.take() {
                    w.lose(&g, 0, &e);
                }
            } else {
                let undone = w.execute_batch("ROLLBACK TO w; RELEASE w");
                if opened || undone.is_err() {
                    let _ = w.execute_batch("ROLLBACK");
                    if let Some(g) = w.group.take() {
                        w.lose(&g, 0, &e);
                    }
                }
            }
            return Err(e);
        }
        let window = w.window;
        let g = w.group.as_mut().expect("a group is open");
        g.commits += 1;
        g.bytes += put_bytes(ops);
        if stamp.is_some() {
            g.stamp = stamp;
        }
        if g.loggable {
            g.unlogged_bytes += ops.iter().map(intents::change_len).sum::<usize>();
            if g.unlogged_bytes > intents::RECORD_MAX {
                g.loggable = false;
                g.unlogged = Vec::new();
            } else {
                g.unlogged.extend_from_slice(ops);
            }
        }
        let due = g.since.elapsed() >= window || g.bytes >= GROUP_MAX_BYTES;
        let logged = match stamp {
            Some(s) if !due && may_log => w.log_durable(s),
            _ => false,
        };
        if (due || durable) && !logged {
            w.finish(&self.db, durable, 1)?;
            if w.checkpoint_due {
                self.wake.notify_one();
            }
        } else if opened {
            self.wake.notify_one();
        }
        if let Some(s) = stamp {
            w.stamp = s;
        }
        // Under the lock, so that a durable commit racing with this one cannot clear the
        // flag after this commit set it.
        self.unsynced.store(!durable, Ordering::SeqCst);
        drop(w);
        if let Some(stamp) = stamp {
            self.durable_at(stamp)?;
        }
        Ok(())
    }

    /// A commit carrying `stamp` is on disk: record it next to the database
    /// ([`journal`]).
    fn durable_at(&self, stamp: u64) -> Result<(), EngineError> {
        match &self.synced {
            Some(f) => f.record(stamp),
            None => Ok(()),
        }
    }

    /// Applies `ops` inside the open transaction, as savepoint `w`; a durable commit also
    /// writes its `stamp`. On an error the caller rolls the savepoint back.
    fn apply(&self, c: &Connection, ops: &[RawOp], stamp: Option<u64>) -> Result<(), EngineError> {
        // Prepared once, not parsed per commit: a `tar -x` makes five commits per file.
        let run = |sql: &str| c.prepare_cached(sql).and_then(|mut s| s.execute([]));
        run("SAVEPOINT w").map_err(|e| self.err(e))?;
        if let Some(stamp) = stamp {
            put_stamp(c, stamp).map_err(|e| self.err(e))?;
        }
        for op in ops {
            apply_op(c, op).map_err(|e| self.err(e))?;
        }
        run("RELEASE w").map(drop).map_err(|e| self.err(e))
    }
}

impl Drop for SqliteEngine {
    /// Writes an open group (a connection closed with a transaction open rolls it back)
    /// and stops the group committer.
    fn drop(&mut self) {
        {
            let mut w = self.writer.lock();
            if let Err(e) = w.finish(&self.db, false, 0) {
                log::error!("closing {}: {e}", self.db.display());
            }
            w.closing = true;
        }
        self.wake.notify_all();
        if let Some(t) = self.committer.get_mut().take() {
            let _ = t.join();
        }
    }
}

impl Engine for SqliteEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let sql = format!("SELECT v FROM {} WHERE k = ?1", sql_table(table));
        let key = tagged(table, key);
        self.with_reader(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| s.query_row([&key], |r| r.get::<_, Vec<u8>>(0)).optional())
                .map_err(|e| self.err(e))
        })
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT {SCAN_BATCH}",
            sql_table(table)
        );
        let end = match to {
            Some(t) => tagged(table, t),
            None => vec![tag(table) + 1],
        };
        let mut start = tagged(table, from);
        loop {
            let rows: Vec<Entry> = self.with_reader(|c| {
                let mut s = c.prepare_cached(&sql).map_err(|e| self.err(e))?;
                let rows = s.query_map(params![start, end], |r| Ok((r.get(0)?, r.get(1)?)));
                rows.and_then(|it| it.collect::<rusqlite::Result<Vec<Entry>>>())
                    .map_err(|e| self.err(e))
            })?;
            let full = rows.len() == SCAN_BATCH;
            let Some(last) = rows.last().map(|r| r.0.clone()) else {
                return Ok(());
            };
            for (k, v) in &rows {
                if !visit(&k[1..], v) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
            // The smallest key after `last`.
            start = last;
            start.push(0);
        }
    }

    fn floor(&self, table: Table, low: &[u8], high: &[u8]) -> Result<Option<Entry>, EngineError> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE k >= ?1 AND k <= ?2 ORDER BY k DESC LIMIT 1",
            sql_table(table)
        );
        let (low, high) = (tagged(table, low), tagged(table, high));
        let found: Option<Entry> = self.with_reader(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row(params![low, high], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(|e| self.err(e))
        })?;
        Ok(found.map(|(mut k, v)| {
            k.remove(0);
            (k, v)
        }))
    }

    fn commit(&self, ops: &[RawOp], durable: bool) -> Result<(), EngineError> {
        let need = wal_estimate(ops);
        if !self.room_for(need)? {
            // The WAL holds space that comes back once it is folded into the file.
            self.fold_wal();
            if !self.room_for(need)? {
                // Below the reserve only what frees space goes on (deletes, truncates,
                // the compactor), so `rm` can always make room.
                if !self.frees_space(ops) || self.device().0 < need {
                    return Err(EngineError::NoSpace);
                }
            }
        }
        let may_log = self.roomy(need);
        let r = match self.write(ops, durable, may_log) {
            Err(EngineError::NoSpace) => {
                self.fold_wal();
                self.write(ops, durable, false)
            }
            r => r,
        };
        if r.is_ok() {
            self.gauge.lock().since += need;
        }
        r
    }

    fn sync(&self) -> Result<(), EngineError> {
        if !self.unsynced.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.write(&[], true, self.roomy(0)) {
            // No room for the stamp's commit: the commits before it are all in the WAL
            // already (or were lost, and said so), and an fsync of the WAL makes them
            // durable just the same (the stamp, and `llmfs.synced`, stay behind: no false
            // alarm later).
            Err(EngineError::NoSpace) => {
                let mut w = self.writer.lock();
                w.check()?;
                w.finish(&self.db, true, 0)?;
                self.unsynced.store(false, Ordering::SeqCst);
                Ok(())
            }
            r => r,
        }
    }

    fn reclaim(&self) -> Result<bool, EngineError> {
        if self.read_only() {
            return Ok(false);
        }
        let mut c = self.writer.lock();
        // Reclaim runs on an idle daemon: the group is written first, and the checkpoint
        // below needs it closed.
        c.finish(&self.db, false, 0)?;
        let free: i64 = c
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let free = free.max(0) as u64;
        if free >= VACUUM_MIN {
            // Each step is a transaction of the WAL that nothing fsyncs.
            c.wal_synced = false;
            // The pragma frees one page per step of its statement: step it to the end
            // (execute_batch would free a single page).
            let moved = {
                let mut stmt = c
                    .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                    .map_err(|e| self.err(e))?;
                let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
                loop {
                    match rows.next().map_err(|e| self.err(e)) {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(true),
                        // Moving pages needs room in the WAL: try again when there is some.
                        Err(EngineError::NoSpace) => break Ok(false),
                        Err(e) => break Err(e),
                    }
                }
            };
            // The steps' transactions fill the WAL like any commit's.
            c.after_commit();
            if c.checkpoint_due {
                self.wake.notify_one();
            }
            return moved;
        }
        // Nothing left to move: fold the WAL into the file and truncate it.
        let wal = self.dir.join(format!("{DB_FILE}-wal"));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            match c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(|e| self.err(e))
            {
                Ok(()) | Err(EngineError::NoSpace) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn integrity_check(&self) -> Result<Vec<String>, EngineError> {
        // At most 100 messages: a badly damaged file would otherwise list every page.
        let c = self.writer.lock();
        let mut stmt = c
            .prepare("PRAGMA integrity_check(100)")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        // A row may hold several lines, under a "*** in database main ***" heading.
        Ok(rows
            .iter()
            .flat_map(|r| r.lines())
            .filter(|l| *l != "ok" && !l.starts_with("***"))
            .map(str::to_owned)
            .collect())
    }

    fn close(&self) -> Result<(), EngineError> {
        if self.read_only() {
            return Ok(());
        }
        let mut w = self.writer.lock();
        w.finish(&self.db, false, 0)?;
        let r = w
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e));
        match r {
            // The WAL stays, with everything in it: the next open reads it as usual.
            Err(EngineError::NoSpace) => {
                log::info!("the device is full: the store's WAL is left to the next mount");
                Ok(())
            }
            r => r,
        }
    }

    fn space(&self) -> Result<EngineSpace, EngineError> {
        let mut file_bytes = 0;
        for suffix in ["", "-wal", "-shm"] {
            let p = self.dir.join(format!("{DB_FILE}{suffix}"));
            if let Ok(m) = std::fs::metadata(&p) {
                file_bytes += m.blocks() * 512;
            }
        }
        let (pages, free): (i64, i64) = {
            let w = self.writer.lock();
            let pages = w
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            let free = w
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            (pages, free)
        };
        let free = free.max(0) as u64;
        Ok(EngineSpace {
            file_bytes,
            free_bytes: free * PAGE_SIZE,
            used_bytes: (pages.max(0) as u64).saturating_sub(free) * PAGE_SIZE,
        })
    }

    fn set_commit_window(&self, window: Duration) {
        if self.read_only() {
            return;
        }
        let mut w = self.writer.lock();
        w.window = window;
        if window.is_zero() {
            if let Err(e) = w.finish(&self.db, false, 0) {
                log::error!("{}: {e}", self.db.display());
            }
            return;
        }
        let mut committer = self.committer.lock();
        if committer.is_none() {
            let (writer, wake, db) = (self.writer.clone(), self.wake.clone(), self.db.clone());
            match std::thread::Builder::new()
                .name("llmfs-group-commit".into())
                .spawn(move || group_committer(writer, wake, db))
            {
                Ok(t) => {
                    *committer = Some(t);
                    w.background = true;
                }
                Err(e) => {
                    // Without the committer a group could wait for the next commit:
                    // every commit stays its own transaction.
                    log::error!("cannot start the group committer ({e}): commits are not grouped");
                    w.window = Duration::ZERO;
                }
            }
        }
    }

    fn room(&self) -> u64 {
        let (avail, total) = self.device();
        let inside = self.free_pages().unwrap_or(0) * PAGE_SIZE;
        let reserve = (total / 50).clamp(RESERVE_MIN, RESERVE_MAX);
        avail.saturating_add(inside).saturating_sub(reserve)
    }

    fn extent_target(&self) -> usize {
        // A value fills whole overflow pages but its last: the bigger, the less the tail
        // wastes (95% full at 64 KiB, 92% at 16 KiB, measured), and an edit rewrites at
        // most this much.
        64 << 10
    }
}

#[cfg(test)]
// Keys made of big-endian numbers, so that their order is the numbers' order.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn put(i: u32, v: &[u8]) -> RawOp {
        RawOp::Put(Table::Inode, i.to_be_bytes().to_vec(), v.to_vec())
    }

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(format!("{DB_FILE}-wal"))).map_or(0, |m| m.len())
    }

    fn del(i: u32) -> RawOp {
        RawOp::Delete(Table::Inode, i.to_be_bytes().to_vec())
    }

    impl SqliteEngine {
        /// What a `kill -9` leaves: the open group never reaches the WAL.
        fn crash(self) {
            let mut w = self.writer.lock();
            if w.group.take().is_some() {
                w.execute_batch("ROLLBACK").unwrap();
            }
        }
    }

    /// A store whose engine made `n` durable commits (key i holds `[i; 100]`) in one open
    /// group, all in the intent log, then crashed.
    fn crashed_with_records(n: u32) -> (tempfile::TempDir, PathBuf) {
        let (t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(60));
        for i in 1..=n {
            e.commit(&[put(i, &[i as u8; 100])], true).unwrap();
        }
        e.crash();
        (t, dir)
    }

    /// Flips one bit of the intent log at byte `at`.
    fn flip_in_log(dir: &Path, at: usize) {
        let path = dir.join(intents::INTENTS_FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[at] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
    }

    /// Every key from 1 to `n` reads in `e`.
    fn assert_keys(e: &SqliteEngine, n: u32) {
        for i in 1..=n {
            assert!(
                e.get(Table::Inode, &i.to_be_bytes()).unwrap().is_some(),
                "{i}"
            );
        }
    }

    fn new_store() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        drop(create(&dir, |_| Ok(())).unwrap());
        (t, dir)
    }

    /// `mib` values of 1 MiB under keys `from..`, in the frames' table: one commit of
    /// about 128 WAL pages per MiB.
    fn big(from: u32, mib: u32) -> Vec<RawOp> {
        (from..from + mib)
            .map(|i| {
                RawOp::Put(
                    Table::Chunk,
                    i.to_be_bytes().to_vec(),
                    vec![i as u8; 1 << 20],
                )
            })
            .collect()
    }

    fn wal_pages(e: &SqliteEngine) -> u32 {
        let w = e.writer.lock();
        w.wal_pages.as_ref().unwrap().load(Ordering::Relaxed)
    }

    /// A commit that leaves the WAL at CHECKPOINT_SOFT pages or more leaves the
    /// checkpoint to the group committer; one that finds CHECKPOINT_HARD pages makes it
    /// itself, so the WAL stays bounded when the committer falls behind. The committer
    /// is marked as running but none runs here, so that nothing else checkpoints.
    #[test]
    fn a_checkpoint_waits_for_the_committer_up_to_the_hard_bound() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.writer.lock().background = true;
        e.commit(&big(0, 5), false).unwrap();
        let pages = wal_pages(&e);
        assert!(
            (CHECKPOINT_SOFT..CHECKPOINT_HARD).contains(&pages),
            "{pages} pages"
        );
        assert!(e.writer.lock().checkpoint_due, "left to the committer");
        e.commit(&big(5, 5), false).unwrap();
        assert_eq!(
            wal_pages(&e),
            0,
            "checkpointed by the commit past the bound"
        );
        assert!(!e.writer.lock().checkpoint_due);
        // Without a committer the commit at the soft bound checkpoints itself.
        e.writer.lock().background = false;
        e.commit(&big(10, 5), false).unwrap();
        assert_eq!(wal_pages(&e), 0);
        drop(e);
        let e = open_engine(&dir, true).unwrap();
        for i in 0..15u32 {
            let v = e.get(Table::Chunk, &i.to_be_bytes()).unwrap().unwrap();
            assert_eq!(v, vec![i as u8; 1 << 20], "{i}");
        }
    }

    /// With the group committer running, the commit returns before the checkpoint and
    /// the committer makes it.
    #[test]
    fn the_group_committer_checkpoints_the_wal() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(60));
        e.commit(&big(0, 5), false).unwrap();
        let t = Instant::now();
        while wal_pages(&e) != 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "never checkpointed");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The WAL starts over with the next commit: it holds that commit alone.
        e.commit(&[put(1, &[1; 100])], false).unwrap();
        e.sync().unwrap();
        assert!(wal_pages(&e) < 16, "{}", wal_pages(&e));
    }

    /// Reclaim's steps are transactions of the WAL too: giving back 20 MiB of free
    /// pages between 20 MiB of live ones (which the steps move) keeps the WAL within the
    /// bound (it grew by a step's pages each call until the last one's truncating
    /// checkpoint).
    #[test]
    fn reclaim_steps_keep_the_wal_bounded() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        for i in 0..8 {
            e.commit(&big(i * 5, 5), false).unwrap();
        }
        let dels: Vec<RawOp> = (0..40u32)
            .step_by(2)
            .map(|i| RawOp::Delete(Table::Chunk, i.to_be_bytes().to_vec()))
            .collect();
        e.commit(&dels, false).unwrap();
        let mut most = 0;
        let mut steps = 0;
        while e.reclaim().unwrap() {
            most = most.max(wal_pages(&e));
            steps += 1;
            assert!(steps < 1000);
        }
        assert!(steps >= 10, "{steps} steps");
        assert!(most < CHECKPOINT_SOFT + 2 * VACUUM_STEP, "{most} pages");
    }

    /// The same 300 small commits, each its own transaction, then grouped: one at a time
    /// every commit writes its page to the WAL; grouped, nothing reaches the WAL before
    /// the sync (every commit is readable at once all the same), and then a few pages.
    /// Savepoint journals stay in memory (a temporary file cost a write per page and
    /// commit).
    #[test]
    fn temporary_files_stay_in_memory() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        let mode: i64 = e
            .writer
            .lock()
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "temp_store=MEMORY");
    }

    #[test]
    fn commits_in_a_window_share_one_transaction() {
        let mut wal = Vec::new();
        for window in [Duration::ZERO, Duration::from_secs(60)] {
            let (_t, dir) = new_store();
            let e = open_engine(&dir, false).unwrap();
            e.set_commit_window(window);
            let before = wal_len(&dir);
            for i in 0u32..300 {
                e.commit(&[put(i, &[7; 100])], false).unwrap();
                assert_eq!(
                    e.get(Table::Inode, &i.to_be_bytes()).unwrap().unwrap(),
                    [7; 100]
                );
            }
            let unsynced = wal_len(&dir) - before;
            e.sync().unwrap();
            wal.push((unsynced, wal_len(&dir) - before));
            drop(e);
            let e = open_engine(&dir, true).unwrap();
            let mut n = 0;
            e.scan(Table::Inode, &[], None, &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
            assert_eq!(n, 300, "window {window:?}");
        }
        assert!(wal[0].0 >= 300 * PAGE_SIZE, "one at a time: {wal:?}");
        assert_eq!(wal[1].0, 0, "grouped, before the sync: {wal:?}");
        // 31 KB of records: their leaves, the interior and pointer-map pages, the stamp's.
        assert!(
            wal[1].1 <= 16 * PAGE_SIZE,
            "grouped, after the sync: {wal:?}"
        );
    }

    /// A group reaches the WAL once its window has passed with no other commit to carry
    /// it, and an engine dropped with a group open writes it first.
    #[test]
    fn a_group_is_written_when_its_window_passes_and_when_the_engine_goes() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(1));
        let before = wal_len(&dir);
        e.commit(&[put(1, b"one")], false).unwrap();
        assert_eq!(wal_len(&dir), before, "written before its window passed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while wal_len(&dir) == before {
            assert!(Instant::now() < deadline, "the group was never written");
            std::thread::sleep(Duration::from_millis(20));
        }
        e.set_commit_window(Duration::from_secs(60));
        e.commit(&[put(2, b"two")], false).unwrap();
        drop(e);
        let e = open_engine(&dir, true).unwrap();
        assert_eq!(
            e.get(Table::Inode, &1u32.to_be_bytes()).unwrap().unwrap(),
            b"one"
        );
        assert_eq!(
            e.get(Table::Inode, &2u32.to_be_bytes()).unwrap().unwrap(),
            b"two"
        );
    }

    /// A commit that fails inside a group takes back its own changes only: the commits
    /// before and after it in the group are kept, and the engine goes on taking writes.
    /// The failure is a trigger refusing one key; it hits a group's first commit too.
    #[test]
    fn a_failed_commit_in_a_group_takes_back_only_itself() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(60));
        e.writer
            .lock()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.records
                 WHEN new.k = x'4900000063' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        assert!(e
            .commit(&[put(98, b"x"), put(99, b"refused")], false)
            .is_err());
        e.commit(&[put(1, b"before")], false).unwrap();
        assert!(e
            .commit(&[put(2, b"in"), put(99, b"refused")], false)
            .is_err());
        e.commit(&[put(3, b"after")], false).unwrap();
        assert!(e.get(Table::Inode, &2u32.to_be_bytes()).unwrap().is_none());
        e.sync().unwrap();
        e.commit(&[put(4, b"next group")], true).unwrap();
        drop(e);
        let e = open_engine(&dir, true).unwrap();
        let got = |i: u32| e.get(Table::Inode, &i.to_be_bytes()).unwrap();
        assert_eq!(got(1).unwrap(), b"before");
        assert_eq!(got(3).unwrap(), b"after");
        assert_eq!(got(4).unwrap(), b"next group");
        for gone in [2, 98, 99] {
            assert!(got(gone).is_none(), "key {gone} of a failed commit");
        }
    }

    /// Durable commits in an open group go to the intent log, not the WAL, while every
    /// earlier transaction is fsync'd; a crash before the group is written loses none of
    /// them (nor what came before them in the group), a read-only open shows them without
    /// changing a file, and the next read-write open applies them.
    #[test]
    fn durable_commits_of_an_open_group_survive_a_crash_through_the_intent_log() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(60));
        let wal0 = wal_len(&dir);
        e.commit(&[put(1, b"one")], false).unwrap();
        e.commit(&[put(2, b"two")], true).unwrap();
        e.commit(&[put(1, b"uno"), del(2), put(5, &[9; 5000])], true)
            .unwrap();
        e.commit(&[put(3, b"not durable")], false).unwrap();
        assert_eq!(wal_len(&dir), wal0, "the durable commits wrote the WAL");
        e.crash();

        let got = |e: &SqliteEngine, i: u32| e.get(Table::Inode, &i.to_be_bytes()).unwrap();
        // A read-only open shows them, and changes no file of the store.
        let files = || {
            let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|f| f.unwrap())
                .map(|f| {
                    let name = f.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read(f.path()).unwrap())
                })
                .collect();
            v.sort();
            v
        };
        let before = files();
        let e = open_engine(&dir, true).unwrap();
        assert_eq!(got(&e, 1).unwrap(), b"uno");
        assert_eq!(got(&e, 5).unwrap(), [9; 5000]);
        assert!(got(&e, 2).is_none());
        assert!(e.commit(&[put(6, b"x")], true).is_err(), "read-only");
        drop(e);
        assert!(
            files() == before,
            "a read-only open changed the store's files"
        );
        let e = open_engine(&dir, false).unwrap();
        assert_eq!(got(&e, 1).unwrap(), b"uno");
        assert!(got(&e, 2).is_none());
        assert_eq!(got(&e, 5).unwrap(), [9; 5000]);
        assert!(got(&e, 3).is_none(), "a commit after the last durable one");

        // Again on the store the log was applied to, and then a clean close.
        e.set_commit_window(Duration::from_secs(60));
        e.commit(&[put(4, b"four")], true).unwrap();
        e.crash();
        let e = open_engine(&dir, false).unwrap();
        assert_eq!(got(&e, 4).unwrap(), b"four");
        assert_eq!(got(&e, 1).unwrap(), b"uno");
        drop(e);
        let e = open_engine(&dir, true).unwrap();
        assert_eq!(got(&e, 4).unwrap(), b"four");
    }

    /// A group written to the WAL without an fsync (here: no window at all) may be lost to a
    /// power cut, so the durable commit after it writes the WAL and fsyncs it; the one
    /// after that goes to the log again.
    #[test]
    fn a_durable_commit_after_an_unsynced_group_writes_the_wal() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::ZERO);
        e.commit(&[put(1, b"one")], false).unwrap();
        e.commit(&[put(2, b"two")], false).unwrap();
        assert!(!e.writer.lock().wal_synced);
        e.set_commit_window(Duration::from_secs(60));
        let wal0 = wal_len(&dir);
        e.commit(&[put(3, b"three")], true).unwrap();
        let wal1 = wal_len(&dir);
        assert!(wal1 > wal0, "the durable commit after an unsynced group");
        assert!(e.writer.lock().wal_synced);
        e.commit(&[put(4, b"four")], true).unwrap();
        assert_eq!(wal_len(&dir), wal1, "the next durable commit");
        e.crash();
        assert_keys(&open_engine(&dir, false).unwrap(), 4);
    }

    /// A record of the intent log damaged with intact ones after it refuses the store,
    /// naming the log; the repair keeps the records before the damage and accepts the
    /// loss of the rest, and the store opens with exactly those.
    #[test]
    fn a_damaged_intent_log_refuses_the_store_and_the_repair_keeps_what_is_intact() {
        let (_t, dir) = crashed_with_records(3);
        flip_in_log(&dir, intents::BLOCK + 40);
        for read_only in [true, false] {
            match open_engine(&dir, read_only) {
                Err(EngineError::Journal(d)) => {
                    let f = d.findings.join("; ");
                    assert!(f.contains(intents::INTENTS_FILE) && f.contains("#2"), "{f}");
                }
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("opened with a damaged intent log"),
            }
        }
        let done = repair_journal(&dir).unwrap().join("\n");
        assert!(done.contains("kept the 1 intact records"), "{done}");
        let e = open_engine(&dir, false).unwrap();
        let got = |i: u32| e.get(Table::Inode, &i.to_be_bytes()).unwrap();
        assert_eq!(got(1).unwrap(), [1; 100]);
        assert!(got(2).is_none() && got(3).is_none());
    }

    /// A salvage reads the intent log's records over the pages: a key they changed reads
    /// as they left it, one they deleted is gone; records the database already holds
    /// change nothing.
    #[test]
    fn a_salvage_lays_the_intent_logs_records_over_the_pages() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.commit(&[put(1, b"old"), put(2, b"doomed"), put(3, b"kept")], true)
            .unwrap();
        e.set_commit_window(Duration::from_secs(60));
        e.commit(&[put(1, b"new"), del(2), put(4, b"added")], true)
            .unwrap();
        e.crash();
        let scanned = || {
            let mut seen = std::collections::BTreeMap::new();
            let scan = salvage_scan(&dir, &mut |t, k, v| {
                if t == Table::Inode {
                    seen.insert(k.to_vec(), v.to_vec());
                }
            })
            .unwrap();
            (seen, scan.wal)
        };
        let key = |i: u32| i.to_be_bytes().to_vec();
        let (seen, note) = scanned();
        assert_eq!(
            seen.get(&key(1)).map(Vec::as_slice),
            Some(&b"new"[..]),
            "{note}"
        );
        assert!(!seen.contains_key(&key(2)), "{note}");
        assert_eq!(seen.get(&key(3)).map(Vec::as_slice), Some(&b"kept"[..]));
        assert_eq!(seen.get(&key(4)).map(Vec::as_slice), Some(&b"added"[..]));
        assert!(note.contains("llmfs.intents laid over them"), "{note}");
        // Applied by an open, and then changed again outside the log: the old records
        // must not come back.
        let e = open_engine(&dir, false).unwrap();
        e.commit(&[put(1, b"newest")], true).unwrap();
        drop(e);
        let (seen, note) = scanned();
        assert_eq!(
            seen.get(&key(1)).map(Vec::as_slice),
            Some(&b"newest"[..]),
            "{note}"
        );
        assert!(!note.contains("llmfs.intents"), "{note}");
    }

    /// Random commits, durable or not, with the group sometimes written on its own (a
    /// reclaim step), and a crash at a random point of each of 40 rounds: the store that
    /// opens holds exactly what it held at the last durable commit or the last group
    /// written, whichever came later (the open group's commits after it are the ones a
    /// crash may lose), and an open group's durable commits went to the intent log.
    #[test]
    fn crashes_at_random_points_keep_exactly_what_was_made_durable() {
        let (_t, dir) = new_store();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut model: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        let mut kept = model.clone();
        let mut logged_rounds = 0;
        for round in 0..40u32 {
            let e = open_engine(&dir, false).unwrap();
            let mut state = std::collections::BTreeMap::new();
            e.scan(Table::Inode, &[], None, &mut |k, v| {
                let k = u32::from_be_bytes(k.try_into().unwrap());
                state.insert(k, v.to_vec());
                true
            })
            .unwrap();
            assert_eq!(state, kept, "round {round}: the store after the crash");
            model = kept.clone();
            e.set_commit_window(Duration::from_secs(60));
            let wal0 = wal_len(&dir);
            let mut durable_in_group = false;
            for step in 0..next(30) + 1 {
                let mut ops = Vec::new();
                for _ in 0..next(4) + 1 {
                    let k = next(16) as u32;
                    if next(4) == 0 {
                        ops.push(del(k));
                        model.remove(&k);
                    } else {
                        let v = vec![(round + step as u32) as u8; next(3000) as usize + 1];
                        ops.push(put(k, &v));
                        model.insert(k, v);
                    }
                }
                let durable = next(3) == 0;
                e.commit(&ops, durable).unwrap();
                if durable {
                    kept = model.clone();
                    durable_in_group = true;
                }
                if next(10) == 0 {
                    // Writes the group to the WAL, without an fsync: a crash of the
                    // process keeps it.
                    e.reclaim().unwrap();
                    kept = model.clone();
                    durable_in_group = false;
                }
            }
            if durable_in_group && wal_len(&dir) == wal0 {
                logged_rounds += 1;
            }
            e.crash();
        }
        assert!(
            logged_rounds >= 5,
            "only {logged_rounds} rounds crashed with logged commits"
        );
    }

    /// On a device short of room (as the gauge last measured it), a durable commit writes
    /// the group to the WAL at once instead of leaving it open behind an intent-log
    /// record; with room again, the log takes them.
    #[test]
    fn a_durable_commit_on_a_device_short_of_room_writes_the_wal() {
        let (_t, dir) = new_store();
        let e = open_engine(&dir, false).unwrap();
        e.set_commit_window(Duration::from_secs(60));
        e.commit(&[put(1, b"one")], true).unwrap();
        let wal0 = wal_len(&dir);
        assert!(e.writer.lock().group.is_some(), "the log took it");
        // 1 GiB, of which 30 MiB free: the reserve (2%, 20 MiB) and the commit fit, the
        // reserve and LOG_ROOM do not.
        *e.device_for_tests.lock() = Some((30 << 20, 1 << 30));
        e.gauge.lock().at = None;
        e.commit(&[put(2, b"two")], true).unwrap();
        assert!(
            wal_len(&dir) > wal0,
            "short of room, the durable commit wrote the WAL"
        );
        assert!(e.writer.lock().group.is_none());
        *e.device_for_tests.lock() = None;
        e.gauge.lock().at = None;
        let wal1 = wal_len(&dir);
        e.commit(&[put(3, b"three")], true).unwrap();
        assert_eq!(wal_len(&dir), wal1, "with room again, the log");
        e.crash();
        assert_keys(&open_engine(&dir, false).unwrap(), 3);
    }

    /// A damaged *last* record reads like the torn tail of a crash; if its commit was
    /// acknowledged, `llmfs.synced` (written after the record's `fdatasync`) names it, and
    /// the store is refused instead of opening one commit short.
    #[test]
    fn a_damaged_last_record_that_was_acknowledged_is_refused() {
        let (_t, dir) = crashed_with_records(3);
        flip_in_log(&dir, 2 * intents::BLOCK + 40);
        match open_engine(&dir, true) {
            Err(EngineError::Journal(d)) => {
                let f = d.findings.join("; ");
                assert!(f.contains("fsync'd commits are missing"), "{f}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened without its last acknowledged commit"),
        }
    }
}
