//! The seam between the store and the embedded database it runs on.
//!
//! An [`Engine`] is a handful of ordered key-value tables with atomic, ordered commits:
//! what the store needs and nothing more. The store's own code (key layout, records,
//! extents, transactions) sits above it and never names a database; the product engine
//! and an in-memory twin that injects faults ([`memory::MemoryEngine`]) sit below it, in
//! the manner of redb's `StorageBackend`.
//!
//! Guarantees every engine gives:
//! - a commit applies all of its operations or none of them;
//! - commits are ordered: after a crash the store holds a prefix of the commits made, and
//!   at least every commit up to the last durable one ([`Engine::commit`] with `durable`,
//!   or [`Engine::sync`]);
//! - reads may run on any thread while another commits; a `get` or `floor` sees whole
//!   commits only. A scan reads [`SCAN_BATCH`] rows at a time, each batch as of the
//!   latest commit (SQLite's lock is not held while `visit` runs, so that it may read
//!   and commit): it visits keys in order, each at most once, and every key that exists
//!   from its start to its end; a key a commit adds or removes during the scan is seen
//!   when that commit came before the scan reached its batch. Callers that need one
//!   state across a scan hold their own lock (a file's node lock, the namespace lock).
//!   The memory twin scans the same way, so tests on
//!   it see the interleavings the product engine allows.

/// Rows a scan reads per batch, in every engine.
pub const SCAN_BATCH: usize = 256;

pub mod memory;
pub mod sqlite;

/// The engine stores run on (see [`sqlite`] for why).
pub use self::sqlite as product;

use std::path::PathBuf;

/// The tables of the store; [`super::keys`] documents what each holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store-wide records: the superblock, the inode counter, the codec profile and
    /// canary.
    Meta,
    /// Inode records by inode number.
    Inode,
    /// Directory entries by parent inode and name.
    Dirent,
    /// Extended attributes by inode and name.
    Xattr,
    /// Hot chunks: frames written since their chunk last settled.
    Chunk,
    /// Extents: settled frames of a file's consecutive chunks, packed.
    Extent,
    /// Chunks waiting for the compactor (exactly the keys of `Chunk`).
    Pending,
    /// Inodes unlinked while open, or big files whose chunks are being deleted.
    Orphan,
}

impl Table {
    /// Every table, in declaration order.
    pub const ALL: [Table; 8] = [
        Table::Meta,
        Table::Inode,
        Table::Dirent,
        Table::Xattr,
        Table::Chunk,
        Table::Extent,
        Table::Pending,
        Table::Orphan,
    ];

    /// The table's name in the database and in messages (`meta`, `inode`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Inode => "inode",
            Table::Dirent => "dirent",
            Table::Xattr => "xattr",
            Table::Chunk => "chunk",
            Table::Extent => "extent",
            Table::Pending => "pending",
            Table::Orphan => "orphan",
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One change of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawOp {
    /// Sets the key (second field) of the table (first) to the value (third), replacing
    /// any value it had.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Removes the key (second field) from the table (first); nothing happens if it is
    /// absent.
    Delete(Table, Vec<u8>),
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The device holding the store is full; nothing of the commit was applied.
    #[error("no space left on the device that holds the store")]
    NoSpace,
    /// Opening, locking, reading or syncing a database or journal file failed.
    #[error("I/O error on the store's database file {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database file is damaged: never to be mistaken for an empty store.
    #[error("the store's database file {path} is damaged: {why}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong, as SQLite or the journal check says.
        why: String,
    },
    /// Another process holds the store's lock or database (a mount, an fsck).
    #[error("the store is in use by another process (is it mounted already?)")]
    InUse,
    /// The write-ahead log lost commits or is damaged ([`sqlite::journal`]): the store
    /// was not opened, so that nothing is lost for good before an operator decides.
    #[error("{0}")]
    Journal(Box<sqlite::journal::JournalDamage>),
    /// A record fails its checksum ([`super::seal`]): that record is damaged, the rest of
    /// the database may be fine.
    #[error("damaged record: {0}")]
    Damaged(String),
    /// Anything else the database reported (a bug, a full table, an injected fault).
    #[error("database error: {0}")]
    Other(String),
}

/// How much of the database's files is in use, for `llmfs stats` and reclaim decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineSpace {
    /// Bytes of the database's files (as allocated on disk).
    pub file_bytes: u64,
    /// Bytes inside those files that are free for reuse (give-back candidates).
    pub free_bytes: u64,
    /// Bytes of the database's pages in use (pages less free pages, WAL included as
    /// committed): what the data costs, without the free space an empty store or a
    /// delete leaves.
    pub used_bytes: u64,
}

/// Ordered key-value tables with atomic, ordered commits: what the store runs on. See the
/// module documentation for the guarantees every implementation gives.
pub trait Engine: Send + Sync {
    /// The value of `key` in `table`, or `None` if absent.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Visits the entries with `from <= key < to` (no upper bound when `to` is `None`) in
    /// ascending key order until `visit` returns false.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError>;

    /// The entry with the greatest key in `[low, high]`.
    fn floor(&self, table: Table, low: &[u8], high: &[u8]) -> Result<Option<Entry>, EngineError>;

    /// Applies `ops` atomically, in order; `durable` returns only once they (and every
    /// earlier commit) would survive a power loss.
    fn commit(&self, ops: &[RawOp], durable: bool) -> Result<(), EngineError>;

    /// Makes every commit so far durable.
    fn sync(&self) -> Result<(), EngineError>;

    /// Lets commits that are not durable share one database transaction for up to
    /// `window` (zero, the default: each commit is its own). A group is written to the
    /// journal when the window has passed, when it holds a few MiB, when a durable commit
    /// or [`Engine::sync`] comes, and before the engine closes; reads see its commits at
    /// once. What it buys: a page that several commits change is written once, not once
    /// per commit. What it costs: a crash of the process loses the group (commits not
    /// made durable, at most `window` old), still a prefix of the commits made. Engines
    /// without groups ignore it.
    fn set_commit_window(&self, _window: std::time::Duration) {}

    /// One bounded step of giving free space inside the database back to the file
    /// system; returns true when there is more to give back. Called by an idle daemon.
    fn reclaim(&self) -> Result<bool, EngineError> {
        Ok(false)
    }

    /// The database's own consistency check (its pages, B-trees and indexes), beneath
    /// the store's records: one line per problem found, none when it is sound.
    fn integrity_check(&self) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    /// Leaves the database compact and self-contained before the daemon exits (folds a
    /// journal into the main file); everything must be durable already.
    fn close(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// How much of the database's files is in use and free.
    fn space(&self) -> Result<EngineSpace, EngineError>;

    /// Bytes new data may still take on the device (what commits that add data may use
    /// before they are refused); unbounded for engines without a device.
    fn room(&self) -> u64 {
        u64::MAX
    }

    /// The size extents of settled frames aim at: what packs into the database's pages
    /// with the least waste ([`super::extent`]).
    fn extent_target(&self) -> usize;
}

#[cfg(test)]
// Keys made of big-endian numbers, so that their order is the numbers' order.
#[allow(clippy::disallowed_methods)]
mod tests {
    //! The same contract checked on every engine.

    use super::*;
    use std::sync::Arc;

    fn engines() -> Vec<(&'static str, Arc<dyn Engine>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = sqlite::create(&dir.path().join("s"), |_| Ok(())).unwrap();
        vec![
            (
                "memory",
                memory::MemoryEngine::new() as Arc<dyn Engine>,
                None,
            ),
            ("sqlite", sqlite, Some(dir)),
        ]
    }

    fn put(t: Table, k: &[u8], v: &[u8]) -> RawOp {
        RawOp::Put(t, k.to_vec(), v.to_vec())
    }

    fn keys(e: &dyn Engine, t: Table, from: &[u8], to: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        e.scan(t, from, to, &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
        out
    }

    /// A scan with commits made while it runs: every engine visits the same keys (the
    /// contract above: in order, each once, every key there throughout, and a change
    /// seen when its commit came before the scan's batch reached it).
    #[test]
    fn scans_see_concurrent_commits_the_same_way_in_every_engine() {
        let mut seen_by = Vec::new();
        for (name, e, _dir) in engines() {
            let k = |i: u32| (i * 2).to_be_bytes().to_vec();
            let ops: Vec<RawOp> = (0u32..700)
                .map(|i| put(Table::Chunk, &k(i), b"v"))
                .collect();
            e.commit(&ops, false).unwrap();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            e.scan(Table::Chunk, &[], None, &mut |key, _| {
                seen.push(key.to_vec());
                if seen.len() == 10 {
                    // Inside the first batch: a key after it added, one removed, one
                    // before the scan's position added.
                    let odd = |i: u32| (i * 2 + 1).to_be_bytes().to_vec();
                    e.commit(
                        &[
                            put(Table::Chunk, &odd(600), b"new"),
                            RawOp::Delete(Table::Chunk, k(650)),
                            put(Table::Chunk, &odd(3), b"behind"),
                            put(Table::Chunk, &odd(100), b"same batch"),
                        ],
                        false,
                    )
                    .unwrap();
                }
                true
            })
            .unwrap();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "{name}: in order, once"
            );
            for i in (0u32..700).filter(|&i| i != 650) {
                assert!(seen.contains(&k(i)), "{name}: key {i} was there throughout");
            }
            seen_by.push((name, seen));
        }
        let (first, rest) = seen_by.split_first().unwrap();
        for other in rest {
            assert_eq!(first.1, other.1, "{} and {} scan alike", first.0, other.0);
        }
        // The batch already read keeps its view; later batches see the commit.
        let odd = |i: u32| (i * 2 + 1).to_be_bytes().to_vec();
        let seen = &first.1;
        assert!(seen.contains(&odd(600)) && !seen.contains(&(1300u32.to_be_bytes().to_vec())));
        assert!(!seen.contains(&odd(3)) && !seen.contains(&odd(100)));
    }

    #[test]
    fn ordered_tables_scans_floors_and_overwrites() {
        for (name, e, _dir) in engines() {
            let ops: Vec<RawOp> = (0u32..600)
                .map(|i| put(Table::Chunk, &i.to_be_bytes(), &[i as u8; 100]))
                .chain([put(Table::Extent, &5u32.to_be_bytes(), b"other table")])
                .collect();
            e.commit(&ops, false).unwrap();
            e.commit(&[put(Table::Chunk, &7u32.to_be_bytes(), b"new")], false)
                .unwrap();
            assert_eq!(
                e.get(Table::Chunk, &7u32.to_be_bytes()).unwrap().unwrap(),
                b"new",
                "{name}"
            );
            let got = keys(
                &*e,
                Table::Chunk,
                &10u32.to_be_bytes(),
                Some(&500u32.to_be_bytes()),
            );
            assert_eq!(got.len(), 490, "{name}: a scan crosses batches");
            assert_eq!(got[0], 10u32.to_be_bytes());
            assert_eq!(keys(&*e, Table::Chunk, &[], None).len(), 600, "{name}");
            let (k, _) = e
                .floor(Table::Chunk, &0u32.to_be_bytes(), &[0, 0, 1, 0xff, 0xff])
                .unwrap()
                .unwrap();
            assert_eq!(k, 511u32.to_be_bytes(), "{name}");
            assert!(e
                .floor(Table::Extent, &6u32.to_be_bytes(), &9u32.to_be_bytes())
                .unwrap()
                .is_none());
            e.commit(
                &[RawOp::Delete(Table::Chunk, 7u32.to_be_bytes().to_vec())],
                false,
            )
            .unwrap();
            assert!(
                e.get(Table::Chunk, &7u32.to_be_bytes()).unwrap().is_none(),
                "{name}"
            );
            e.sync().unwrap();
        }
    }

    #[test]
    fn sqlite_gives_freed_space_back_when_reclaiming() {
        let dir = tempfile::tempdir().unwrap();
        let e = sqlite::create(&dir.path().join("s"), |_| Ok(())).unwrap();
        let big: Vec<RawOp> = (0u32..3000)
            .map(|i| put(Table::Chunk, &i.to_be_bytes(), &vec![(i % 251) as u8; 3000]))
            .collect();
        e.commit(&big, false).unwrap();
        e.sync().unwrap();
        e.close().unwrap();
        let full = e.space().unwrap();
        let dels: Vec<RawOp> = (0u32..3000)
            .filter(|i| i % 4 != 0)
            .map(|i| RawOp::Delete(Table::Chunk, i.to_be_bytes().to_vec()))
            .collect();
        e.commit(&dels, false).unwrap();
        assert!(e.space().unwrap().free_bytes > full.file_bytes / 2);
        let mut steps = 0;
        while e.reclaim().unwrap() {
            steps += 1;
            assert!(steps < 100);
        }
        let after = e.space().unwrap();
        assert!(
            after.file_bytes < full.file_bytes * 4 / 10,
            "{} bytes after reclaim, {} before",
            after.file_bytes,
            full.file_bytes
        );
        assert!(after.free_bytes < 32 * 8192);
        assert_eq!(keys(&*e, Table::Chunk, &[], None).len(), 750);
        assert_eq!(
            e.get(Table::Chunk, &4u32.to_be_bytes()).unwrap().unwrap()[0],
            4
        );
    }

    #[test]
    fn a_second_open_of_a_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _e = sqlite::create(&dir.path().join("s"), |_| Ok(())).unwrap();
        assert!(matches!(
            sqlite::open(&dir.path().join("s"), false),
            Err(EngineError::InUse)
        ));
    }
}
