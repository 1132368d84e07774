//! fsck: checks a store's invariants (every table of [`super::keys`] against the others)
//! and repairs what it can prove.
//!
//! [`Store::check`] reads the whole store and returns a [`CheckReport`]: what was checked
//! and every [`Problem`] found, each with its severity, where it is (inode, chunk, path),
//! what it means for the user and, when a fix is provably safe, the [`Repair`] that
//! applies it. [`Store::repair`] applies those repairs and nothing else.
//!
//! Provably safe means the fix recomputes a field that is derived from other records
//! (`stored`, link counts, a directory's `parent`, a dirent's kind, `data_ver`,
//! `next_ino`, the `pending` table), or removes records that no read can reach (data of
//! inodes that do not exist, chunks past a file's end or of a non-file, a settled copy
//! shadowed by a newer hot one, names of inodes that do not exist), or makes an inode
//! that POSIX already deleted (no names, no links, nothing open) go away. Everything
//! else (a frame or extent that does not decode, an inode that lost its name) is an
//! error whose message says what the user can do.
//!
//! The passes:
//! 1. `namespace`: meta records, inodes, dirents, orphans, link counts, parents and
//!    reachability from the root, with every inode's summary kept in memory (about 100
//!    bytes an inode, as e2fsck does).
//! 2. `data`: each inode's chunks, extents, pending records and xattrs, read with
//!    range scans one inode at a time (memory bounded by the largest file), and the
//!    data of inodes that do not exist in between.
//! 3. `verify` (only with [`CheckOptions::verify`]): every frame decoded and its CRC
//!    checked, LLM frames through the caller's decoder.

mod data;
mod namespace;
mod repair;
mod verify;

use super::records::Kind;
use super::{Store, StoreError, ROOT_INO};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use repair::RepairSummary;

/// What a user can do about damage no repair can fix.
const RESTORE: &str = "`llmfs fsck --salvage STORE NEWSTORE` copies every record that still reads \
into a new store (what is lost then reads as an I/O error there); or restore from a backup";

/// Decodes a batch of LLM frames (whole frames, header included) to their plaintexts,
/// in order: the language model, which the store layer does not know. The caller
/// decodes a batch on all its lanes at once.
pub type LlmDecoder<'a> = &'a mut dyn FnMut(Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>>;

/// Frames handed to the decoder at a time: enough to keep every lane of a big pool busy.
pub const VERIFY_BATCH: usize = 32;

/// What [`Store::check`] does beyond reading every record.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Decode every frame and check its CRC (LLM frames: seconds each on a CPU).
    pub verify: bool,
}

/// How bad a [`Problem`] is, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something is wrong: the store is not clean.
    Error,
    /// Something could not be checked (LLM frames without a model): not clean either.
    Warning,
    /// Normal state worth knowing (data of a deleted file not reaped yet): clean.
    Info,
}

impl Severity {
    /// The severity's lowercase name (`error`, `warning`, `info`), for messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The database file itself (SQLite's `integrity_check`).
    Database,
    /// The superblock or another `meta` record.
    Meta,
    /// `next_ino` not above every inode number in the store.
    NextIno,
    /// The pinned codec profile and canary frame.
    Profile,
    /// A key of the wrong shape for its table.
    MalformedKey,
    /// An inode record that does not decode or has no known file type.
    Inode,
    /// The root directory.
    Root,
    /// A directory entry.
    Dirent,
    /// An inode's link count against the names and subdirectories that hold it, or a
    /// named inode marked as an orphan.
    LinkCount,
    /// A directory's `parent` field.
    Parent,
    /// An inode or directory that the root does not reach.
    Disconnected,
    /// The orphan mark: on an inode that has a name, missing on one with no names and no
    /// links (or a note for an inode unlinked while open).
    Orphan,
    /// A chunk record (hot chunk) that does not decode, or a chunk of a non-file.
    Chunk,
    /// A frame whose header does not parse or does not fit its chunk.
    Frame,
    /// An extent that does not decode, is stored under a key other than its first chunk,
    /// has chunk indexes out of order, or overlaps another extent of the file.
    Extent,
    /// A chunk stored in two places.
    Duplicate,
    /// The `pending` table against the hot chunks.
    Pending,
    /// An inode's `stored` against the sum of its frame lengths.
    Stored,
    /// A chunk version above its inode's `data_ver`.
    DataVersion,
    /// Chunks at or past the end of their file.
    PastEof,
    /// Data of an inode that does not exist and is not being deleted.
    Unreferenced,
    /// A frame that does not decode or fails its CRC (`verify`).
    Decode,
    /// Frames that `verify` could not decode (no model).
    Unverified,
    /// A record that fails its checksum ([`super::seal`]).
    Checksum,
    /// A chunk a salvage marked as lost.
    Lost,
    /// The write-ahead log: damaged, cut short, or missing durable commits.
    Journal,
}

impl ProblemKind {
    /// The kind's snake_case name (`link_count`, `past_eof`, ...), for messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Database => "database",
            ProblemKind::Meta => "meta",
            ProblemKind::NextIno => "next_ino",
            ProblemKind::Profile => "profile",
            ProblemKind::MalformedKey => "malformed_key",
            ProblemKind::Inode => "inode",
            ProblemKind::Root => "root",
            ProblemKind::Dirent => "dirent",
            ProblemKind::LinkCount => "link_count",
            ProblemKind::Parent => "parent",
            ProblemKind::Disconnected => "disconnected",
            ProblemKind::Orphan => "orphan",
            ProblemKind::Chunk => "chunk",
            ProblemKind::Frame => "frame",
            ProblemKind::Extent => "extent",
            ProblemKind::Duplicate => "duplicate",
            ProblemKind::Pending => "pending",
            ProblemKind::Stored => "stored",
            ProblemKind::DataVersion => "data_version",
            ProblemKind::PastEof => "past_eof",
            ProblemKind::Unreferenced => "unreferenced",
            ProblemKind::Decode => "decode",
            ProblemKind::Unverified => "unverified",
            ProblemKind::Checksum => "checksum",
            ProblemKind::Lost => "lost",
            ProblemKind::Journal => "journal",
        }
    }
}

/// A fix [`Store::repair`] can apply, with what it needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Raise `next_ino` to this, so that no number in use is handed out again.
    RaiseNextIno(u64),
    /// Delete every chunk, extent, pending record and xattr of an inode that does not
    /// exist and is not being deleted.
    DeleteData {
        /// The inode number whose data goes.
        ino: u64,
    },
    /// Delete the chunks of `ino` from index `from` on (past its end, or every chunk of
    /// a non-file); `stored` is recomputed.
    DeleteChunksFrom {
        /// The inode whose chunks go.
        ino: u64,
        /// The first chunk index deleted.
        from: u64,
    },
    /// Delete the settled copy of a chunk that is also hot with a newer version (reads
    /// return the hot one); `stored` is recomputed.
    DropSettledCopy {
        /// The inode of the chunk.
        ino: u64,
        /// The chunk's index.
        index: u64,
    },
    /// Make the pending records of `ino` exactly its hot chunks, at their versions.
    SyncPending {
        /// The inode whose pending records are rewritten.
        ino: u64,
    },
    /// Set `stored` to the sum of the inode's frame lengths.
    RecomputeStored {
        /// The inode whose `stored` is recomputed.
        ino: u64,
    },
    /// Set the link count of `ino` to `nlink`: what its names (and for a directory, its
    /// subdirectories) give, or 0 for an orphan that has no name.
    SetNlink {
        /// The inode to fix.
        ino: u64,
        /// The link count to set.
        nlink: u32,
    },
    /// Set a directory's `parent` field to the directory whose entry names it (the root's
    /// to the root itself).
    SetParent {
        /// The directory to fix.
        ino: u64,
        /// The directory that holds its entry (the root, for the root).
        parent: u64,
    },
    /// Raise an inode's `data_ver` to its highest chunk version, so the next write takes
    /// a version above every stored one.
    RaiseDataVer {
        /// The inode to fix.
        ino: u64,
        /// The highest chunk version stored for it.
        data_ver: u64,
    },
    /// Remove the orphan mark of a named inode (the next mount would delete it).
    ClearOrphan {
        /// The inode named in a directory.
        ino: u64,
    },
    /// Mark an inode without names, links or handles as orphan: the next mount deletes
    /// it, as POSIX says it already is.
    MarkOrphan {
        /// The inode to mark.
        ino: u64,
    },
    /// Remove a directory entry whose inode does not exist.
    DeleteDirent {
        /// The directory holding the entry.
        parent: u64,
        /// The entry's name.
        name: Vec<u8>,
    },
    /// Rewrite a directory entry with its inode's kind.
    FixDirentKind {
        /// The directory holding the entry.
        parent: u64,
        /// The entry's name.
        name: Vec<u8>,
        /// The inode the entry names.
        child: u64,
        /// The inode's actual kind, which the entry will record.
        kind: Kind,
    },
}

/// One finding of [`Store::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What the problem is about.
    pub kind: ProblemKind,
    /// How bad it is.
    pub severity: Severity,
    /// The inode concerned, if any.
    pub ino: Option<u64>,
    /// The chunk index concerned, if any.
    pub chunk: Option<u64>,
    /// A path of the inode, when the root reaches it.
    pub path: Option<String>,
    /// What is wrong, what it means, and what to do when it is not repairable.
    pub message: String,
    /// The provably safe fix, when there is one; `None` leaves it to the user.
    pub repair: Option<Repair>,
}

impl Problem {
    /// An error-severity problem with no chunk, path or repair (the path is filled in
    /// when the report is finished).
    pub fn error(kind: ProblemKind, ino: Option<u64>, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            severity: Severity::Error,
            ino,
            chunk: None,
            path: None,
            message: message.into(),
            repair: None,
        }
    }

    /// An info-severity note: normal state worth knowing, which leaves the store clean.
    pub fn info(kind: ProblemKind, ino: Option<u64>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Info,
            ..Problem::error(kind, ino, message)
        }
    }

    fn at_chunk(mut self, index: u64) -> Problem {
        self.chunk = Some(index);
        self
    }

    fn repair(mut self, r: Repair) -> Problem {
        self.repair = Some(r);
        self
    }

    /// Whether [`Store::repair`] can fix it.
    pub fn repairable(&self) -> bool {
        self.repair.is_some()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity.name())?;
        if let Some(ino) = self.ino {
            write!(f, "inode {ino}")?;
            if let Some(p) = &self.path {
                write!(f, " ({p})")?;
            }
            if let Some(c) = self.chunk {
                write!(f, " chunk {c}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)?;
        if self.repairable() {
            write!(f, " [repairable]")?;
        }
        Ok(())
    }
}

/// What a check looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// Inode records found (damaged ones included).
    pub inodes: u64,
    /// Directory inodes among them.
    pub dirs: u64,
    /// Regular file inodes among them (and those with an unknown type, served as files).
    pub files: u64,
    /// Directory entries.
    pub dirents: u64,
    /// Orphan marks (inodes unlinked while open, or being deleted).
    pub orphans: u64,
    /// Extended attribute records.
    pub xattrs: u64,
    /// Hot chunk records.
    pub hot_chunks: u64,
    /// Chunks held in extents (settled).
    pub settled_chunks: u64,
    /// Extent records.
    pub extents: u64,
    /// Pending records (chunks waiting for the compactor).
    pub pending: u64,
    /// Bytes of frames (hot and settled) of existing inodes. (Chunk and record counts
    /// include the data of deleted inodes.)
    pub frame_bytes: u64,
    /// Plaintext bytes those frames' headers promise.
    pub plain_bytes: u64,
    /// LLM-coded frames of existing inodes.
    pub llm_frames: u64,
    /// Frames decoded and found intact by `verify`.
    pub verified_frames: u64,
    /// Plaintext bytes of the frames `verify` found intact.
    pub verified_bytes: u64,
    /// LLM frames `verify` could not decode for want of a model.
    pub unverified_frames: u64,
    /// Plaintext bytes of the LLM frames `verify` could not decode.
    pub unverified_bytes: u64,
}

impl CheckCounts {
    /// Every count by name, in a fixed order (what `llmfs fsck --json` prints).
    pub fn fields(&self) -> [(&'static str, u64); 17] {
        [
            ("inodes", self.inodes),
            ("directories", self.dirs),
            ("files", self.files),
            ("dirents", self.dirents),
            ("orphans", self.orphans),
            ("xattrs", self.xattrs),
            ("hot_chunks", self.hot_chunks),
            ("settled_chunks", self.settled_chunks),
            ("extents", self.extents),
            ("pending", self.pending),
            ("frame_bytes", self.frame_bytes),
            ("plain_bytes", self.plain_bytes),
            ("llm_frames", self.llm_frames),
            ("verified_frames", self.verified_frames),
            ("verified_bytes", self.verified_bytes),
            ("unverified_frames", self.unverified_frames),
            ("unverified_bytes", self.unverified_bytes),
        ]
    }
}

/// What [`Store::check`] found: the store's settings, what it looked at and every
/// problem, in the order found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The store's chunk size in bytes.
    pub chunk_size: u64,
    /// The llmfs release that created the store, as its superblock says.
    pub created_by: String,
    /// Whether frames were decoded and their CRCs checked ([`CheckOptions::verify`]).
    pub verified: bool,
    /// What the check looked at.
    pub counts: CheckCounts,
    /// Every problem found, each with its path when the root reaches it.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// No errors and no warnings (notes are fine).
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.severity == Severity::Info)
    }

    /// Problems of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == severity)
            .count()
    }

    /// Problems that [`Store::repair`] can fix.
    pub fn repairable(&self) -> usize {
        self.problems.iter().filter(|p| p.repairable()).count()
    }
}

/// Where a check is, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckPhase {
    /// Meta records, inodes, directory entries: `done` records, `total` unknown (0).
    Namespace,
    /// Each inode's data: `done` of `total` inodes.
    Data,
    /// Decoding frames: `done` of `total` bytes of plaintext.
    Verify,
}

/// How far a check is, handed to its progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckProgress {
    /// The pass running.
    pub phase: CheckPhase,
    /// Records, inodes or plaintext bytes done, as [`CheckPhase`] says for each phase.
    pub done: u64,
    /// The total to do, in the same unit; 0 when unknown (the namespace pass).
    pub total: u64,
}

/// An inode record's fields that the check compares.
#[derive(Clone, Copy, Debug)]
struct Record {
    kind: Kind,
    nlink: u32,
    parent: u64,
    size: u64,
    stored: u64,
    data_ver: u64,
}

/// What the check knows of one inode number.
#[derive(Debug, Default)]
struct Node {
    /// `None`: the record does not decode.
    rec: Option<Record>,
    /// Directory entries naming it.
    names: u32,
    /// The first directory entry naming it: (directory, name).
    holder: Option<(u64, Box<[u8]>)>,
    /// Named in a directory that does not exist or is not a directory: its link count
    /// cannot be told.
    named_in_bad_dir: bool,
    /// For directories: entries, and entries that are directories.
    entries: u32,
    subdirs: u32,
}

/// The state of one check.
struct Checker<'s> {
    store: &'s Store,
    cs: u64,
    nodes: BTreeMap<u64, Node>,
    orphans: BTreeSet<u64>,
    /// The greatest inode number any table holds data or records for.
    max_ino: u64,
    next_ino: Option<u64>,
    /// The pinned codec profile exists; the canary frame, if any.
    profile: bool,
    canary: Option<Vec<u8>>,
    /// Plaintext bytes `verify` will decode: frames of existing inodes whose header
    /// parses and fits.
    verify_total: u64,
    counts: CheckCounts,
    problems: Vec<Problem>,
    /// Directory entries that are damaged: link counts may be short, so not repaired.
    damaged_dirents: u64,
}

impl<'s> Checker<'s> {
    fn add(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// The engine's own check: a damaged page or index can hide records from every
    /// check above it, so it is reported first, and never repaired here.
    fn check_database(&mut self) -> Result<(), StoreError> {
        const SHOWN: usize = 8;
        let lines = match self.store.engine_integrity_check() {
            Ok(lines) => lines,
            // Damage bad enough to stop the check itself is its finding.
            Err(StoreError::Engine {
                source: super::engine::EngineError::Corrupt { why, .. },
                ..
            }) => {
                vec![why]
            }
            Err(e) => return Err(e),
        };
        if lines.is_empty() {
            return Ok(());
        }
        let more = match lines.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        self.add(Problem::error(
            ProblemKind::Database,
            None,
            format!(
                "the database file is damaged: {}{more}; {RESTORE}",
                lines[..lines.len().min(SHOWN)].join("; ")
            ),
        ));
        Ok(())
    }

    fn rec(&self, ino: u64) -> Option<Record> {
        self.nodes.get(&ino).and_then(|n| n.rec)
    }

    /// A path of `ino` through the first name of each directory up to the root.
    fn path(&self, ino: u64) -> Option<String> {
        if ino == ROOT_INO {
            return Some("/".into());
        }
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let (parent, name) = self.nodes.get(&cur)?.holder.as_ref()?;
            parts.push(String::from_utf8_lossy(name).into_owned());
            cur = *parent;
            if parts.len() > 4096 {
                return None; // a cycle
            }
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }

    fn finish(mut self, verified: bool) -> CheckReport {
        let paths: Vec<Option<String>> = self
            .problems
            .iter()
            .map(|p| p.ino.and_then(|i| self.path(i)))
            .collect();
        for (p, path) in self.problems.iter_mut().zip(paths) {
            p.path = path;
        }
        CheckReport {
            chunk_size: self.cs,
            created_by: self.store.superblock().created_by.clone(),
            verified,
            counts: self.counts,
            problems: self.problems,
        }
    }
}

impl Store {
    /// Checks every invariant of the store; reads everything and changes nothing. Meant
    /// for a store no one else has open (the product engine's lock makes sure).
    ///
    /// With `opts.verify`, every frame is decoded and its CRC checked; LLM frames go
    /// through `llm` (without it they are counted and reported as not verified).
    pub fn check(
        &self,
        opts: &CheckOptions,
        llm: Option<LlmDecoder<'_>>,
        progress: &mut dyn FnMut(CheckProgress),
    ) -> Result<CheckReport, StoreError> {
        let mut c = Checker {
            store: self,
            cs: self.chunk_size(),
            nodes: BTreeMap::new(),
            orphans: BTreeSet::new(),
            max_ino: 0,
            next_ino: None,
            profile: false,
            canary: None,
            verify_total: 0,
            counts: CheckCounts::default(),
            problems: Vec::new(),
            damaged_dirents: 0,
        };
        c.check_database()?;
        let damaged = !c.problems.is_empty();
        let walked = c.check_namespace(progress).and_then(|()| {
            c.check_data(progress)?;
            c.check_next_ino();
            c.check_profile_pinned();
            if opts.verify {
                c.verify(llm, progress)?;
            }
            Ok(())
        });
        match walked {
            Ok(()) => {}
            // What the engine's check already named stops the walk: report both.
            Err(e) if damaged => c.add(Problem::error(
                ProblemKind::Database,
                None,
                format!("the check of the records stopped at the damage: {e}"),
            )),
            Err(e) => return Err(e),
        }
        Ok(c.finish(opts.verify))
    }
}

/// Up to a few indexes, for a message: "3, 4, 9 and 12 more".
fn list_indexes(indexes: &[u64]) -> String {
    const SHOWN: usize = 6;
    let mut s = indexes
        .iter()
        .take(SHOWN)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if indexes.len() > SHOWN {
        s.push_str(&format!(" and {} more", indexes.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests;
