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
//! - reads may run on any thread while another commits, and see whole commits only.

pub mod memory;
pub mod sqlite;

/// The engine stores run on (see [`sqlite`] for why).
pub use self::sqlite as product;

use std::path::PathBuf;

/// The tables of the store; [`super::keys`] documents what each holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Meta,
    Inode,
    Dirent,
    Xattr,
    Chunk,
    Extent,
    Pending,
    Orphan,
}

impl Table {
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
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The device holding the store is full; nothing of the commit was applied.
    #[error("no space left on the device that holds the store")]
    NoSpace,
    #[error("I/O error on the store's database file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database file is damaged: never to be mistaken for an empty store.
    #[error("the store's database file {path} is damaged: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("the store is in use by another process (is it mounted already?)")]
    InUse,
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
}

pub trait Engine: Send + Sync {
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

    /// One bounded step of giving free space inside the database back to the file
    /// system; returns true when there is more to give back. Called by an idle daemon.
    fn reclaim(&self) -> Result<bool, EngineError> {
        Ok(false)
    }

    /// Leaves the database compact and self-contained before the daemon exits (folds a
    /// journal into the main file); everything must be durable already.
    fn close(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn space(&self) -> Result<EngineSpace, EngineError>;

    /// The size extents of settled frames aim at: what packs into the database's pages
    /// with the least waste ([`super::extent`]).
    fn extent_target(&self) -> usize;
}
