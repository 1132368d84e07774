//! Guarding the write-ahead log: a damaged, truncated or deleted WAL is found before
//! SQLite opens the database, and the store is refused instead of silently rolled back.
//!
//! SQLite's recovery keeps the WAL's frames up to the first one whose checksum fails and
//! drops everything after it without a word; a read-write open then writes over the
//! dropped frames, and closing the last connection checkpoints and deletes the log. So a
//! flipped bit in the middle of the WAL after a crash lost up to every commit since the
//! last checkpoint, fsync'd ones included, while mount, `stats` and `fsck` all said
//! "clean". Two independent checks now run before SQLite reads anything:
//!
//! 1. **The frames** ([`super::wal`]): a frame of the current WAL generation that fails its
//!    checksum while later frames of the same generation are intact is damage, not the
//!    torn tail a crash leaves.
//! 2. **The durable-commit stamp**: every durable commit ([`super::SqliteEngine`]'s
//!    `sync`) writes an increasing number into the database, and after the commit is on
//!    disk the same number into a small file next to it, `llmfs.synced`. A database that
//!    opens with a smaller number than the file lost durable commits, however that
//!    happened: a WAL deleted, truncated, with a damaged header, or an older copy of the
//!    database put back. The file is written after the fsync of the commit it names, so
//!    it can lag behind the database (a crash in between, a power loss) but never lead it.
//!
//! `llmfs.synced` (big endian):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | magic | 8 bytes | `LLMFSYNC` |
//! | stamp | 8 bytes | the stamp of the last durable commit known to be on disk |
//! | crc | 4 bytes | CRC-32 of the 16 bytes before it |
//!
//! A torn or damaged file is no evidence either way (logged); a missing one (a store
//! older than this file, or a copy without it) is created at the next read-write open.

// Defines an on-disk layout (`llmfs.synced` and the durable-commit stamp); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use super::super::EngineError;
use super::wal;
use super::DB_FILE;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file in the store directory that records the stamp of the last durable commit
/// known to be on disk (layout above).
pub const SYNCED_FILE: &str = "llmfs.synced";
const MAGIC: &[u8; 8] = b"LLMFSYNC";
const LEN: usize = 20;

fn encode(stamp: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&stamp.to_be_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The stamp as the database holds it (the value of its `SYNC_POINT` record): 8 bytes,
/// big endian.
pub(super) fn stamp_value(stamp: u64) -> [u8; 8] {
    stamp.to_be_bytes()
}

/// The stamp in a `SYNC_POINT` value ([`stamp_value`]); `None` unless it is 8 bytes.
pub(super) fn stamp_of(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

/// The stamp in `llmfs.synced`: `Ok(None)` when the file is missing, `Err(why)` when it is
/// unreadable or damaged (no evidence either way).
pub fn read_synced(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join(SYNCED_FILE);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut b = Vec::with_capacity(LEN);
    f.by_ref()
        .take(LEN as u64 + 1)
        .read_to_end(&mut b)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() != LEN || &b[..8] != MAGIC {
        return Err(format!("{} is not a stamp file", path.display()));
    }
    let crc = u32::from_be_bytes(b[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[..16]) != crc {
        return Err(format!("{} fails its checksum", path.display()));
    }
    Ok(Some(u64::from_be_bytes(
        b[8..16].try_into().expect("8 bytes"),
    )))
}

/// Where durable stamps go, held open by a read-write engine.
pub struct SyncedFile {
    file: File,
    path: PathBuf,
}

impl SyncedFile {
    /// Opens (creating) `llmfs.synced` in `dir` and writes `stamp` to it, durably: the
    /// stamp the database holds at open, which every later durable commit raises.
    pub fn create(dir: &Path, stamp: u64) -> Result<SyncedFile, EngineError> {
        let path = dir.join(SYNCED_FILE);
        let file = open_or_create(&path)?;
        let f = SyncedFile { file, path };
        f.record(stamp)?;
        f.file.sync_all().map_err(|source| EngineError::Io {
            path: f.path.clone(),
            source,
        })?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(f)
    }

    /// Records `stamp` after its commit is durable. Not fsync'd: the file may lag the
    /// database after a power loss (no false alarm), and the next durable commit's write
    /// carries it along; a crash of the process loses nothing of it.
    pub fn record(&self, stamp: u64) -> Result<(), EngineError> {
        self.file
            .write_all_at(&encode(stamp), 0)
            .map_err(|source| EngineError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// An I/O error on `path`, as the engine reports it.
pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` opened for reading and writing, created when missing, never truncated.
pub(super) fn open_or_create(path: &Path) -> Result<File, EngineError> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))
}

/// The WAL of the store in `dir` and its analysis; `None` when there is no WAL or it is
/// empty. The log is read whole: it is folded into the database at 500 pages, at 1,000 at
/// the latest, so it holds a few MiB (one commit of the whole dirty limit at most, 64 MiB
/// by default).
fn analyze(dir: &Path) -> Result<Option<(Vec<u8>, wal::WalAnalysis)>, EngineError> {
    let path = dir.join(format!("{DB_FILE}-wal"));
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.is_empty() => return Ok(None),
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let db = dir.join(DB_FILE);
    let mut header = [0u8; 100];
    let page_size = File::open(&db)
        .and_then(|f| f.read_exact_at(&mut header, 0))
        .ok()
        .and_then(|()| wal::db_page_size(&header));
    let analysis = wal::analyze(&bytes, page_size);
    Ok(Some((bytes, analysis)))
}

/// Checks, before a store is opened, that its database holds every durable commit
/// (`db_stamp` is the stamp SQLite reads with the WAL's intact frames applied) and that
/// no intact commit of the WAL lies beyond a damaged frame.
///
/// `db_stamp` counts the intent log's records that the open applies, and
/// `intents_damage` says why the log lost records ([`super::intents`]).
pub fn check(dir: &Path, db_stamp: u64, intents_damage: Option<String>) -> Result<(), EngineError> {
    let mut findings: Vec<String> = intents_damage.into_iter().collect();
    let mut rebuildable = false;
    if dir.join(format!("{DB_FILE}.rebuilt")).exists() {
        findings.push(format!(
            "an interrupted repair left {DB_FILE}.rebuilt behind (the database rebuilt from \
             the WAL)"
        ));
        rebuildable = true;
    }
    if let Some((_, analysis)) = analyze(dir)? {
        if let Some(d) = &analysis.damage {
            findings.push(format!(
                "{DB_FILE}-wal: {}",
                d.summary.trim_end_matches('.')
            ));
            rebuildable = true;
        }
    }
    match read_synced(dir) {
        Ok(Some(recorded)) if recorded > db_stamp => findings.push(format!(
            "the database opens at durable commit #{db_stamp}, but commit #{recorded} was on \
             disk (recorded in {SYNCED_FILE}): the last {} fsync'd commits are missing",
            recorded - db_stamp
        )),
        Ok(_) => {}
        Err(why) => log::warn!("{why}: the check for lost durable commits is skipped this time"),
    }
    if findings.is_empty() {
        return Ok(());
    }
    Err(EngineError::Journal(Box::new(JournalDamage {
        dir: dir.to_path_buf(),
        findings,
        rebuildable,
    })))
}

/// What [`repair`] did, in words, one line each.
pub type Repaired = Vec<String>;

/// The operator's decision on a store [`check`] refused (`llmfs fsck --repair`): the
/// database is rebuilt from every intact frame of the WAL when frames are damaged;
/// otherwise the loss is accepted. Either way every file that is replaced is kept next
/// to the store, renamed `NAME.before-repair-SECONDS`, and `llmfs.synced` is set to what
/// the database now holds. The caller holds the store's lock.
pub fn repair(dir: &Path) -> Result<Repaired, EngineError> {
    let mut done = Vec::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = |name: &str| dir.join(format!("{name}.before-repair-{stamp}"));
    let db = dir.join(DB_FILE);
    let wal_name = format!("{DB_FILE}-wal");
    let wal_path = dir.join(&wal_name);
    let tmp = dir.join(format!("{DB_FILE}.rebuilt"));
    let wal_there = wal_path.exists();
    if tmp.exists() && !wal_there {
        // A rebuild stopped between removing the WAL and putting the rebuilt database in
        // place: the rebuilt file was complete (fsync'd) before anything was moved.
        std::fs::rename(&tmp, &db).map_err(io_error(&db))?;
        done.push(format!(
            "finished an interrupted rebuild: {DB_FILE} is the database rebuilt from the WAL"
        ));
    }
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(io_error(&tmp))?;
    }
    let damaged = analyze(dir)?.filter(|(_, a)| a.damage.is_some());
    if let Some((wal_bytes, analysis)) = damaged {
        let db_bytes = std::fs::read(&db).map_err(io_error(&db))?;
        let rebuilt =
            wal::rebuild(&db_bytes, &wal_bytes, &analysis).map_err(|why| EngineError::Corrupt {
                path: wal_path.clone(),
                why: format!("the database cannot be rebuilt from it: {why}"),
            })?;
        let d = analysis.damage.as_ref().expect("filtered on damage");
        std::fs::write(&tmp, &rebuilt)
            .and_then(|()| File::open(&tmp)?.sync_all())
            .map_err(io_error(&tmp))?;
        // Keep the old files under new names (hard links: no copy), then take the WAL
        // away before the rebuilt database takes the old one's name: a WAL left next to
        // the rebuilt database would be applied to it again. A crash in between leaves
        // the old database without its WAL (refused by the stamp check) and the complete
        // rebuilt file, which the next repair puts in place.
        std::fs::hard_link(&db, kept(DB_FILE)).map_err(io_error(&db))?;
        std::fs::hard_link(&wal_path, kept(&wal_name)).map_err(io_error(&wal_path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        std::fs::remove_file(&wal_path).map_err(io_error(&wal_path))?;
        std::fs::rename(&tmp, &db).map_err(io_error(&db))?;
        done.push(format!(
            "rebuilt {DB_FILE} from the database and every intact frame of the WAL, up to \
             frame {} ({} commits SQLite would have dropped are kept)",
            d.last_intact_commit_frame, d.later_commits
        ));
        if !d.unverified_pages.is_empty() {
            done.push(format!(
                "{} pages came from damaged frames and may hold damaged records: the check \
                 that follows reads every record and names any that fail",
                d.unverified_pages.len()
            ));
        }
    } else if std::fs::metadata(&wal_path).is_ok_and(|m| m.len() > 0) {
        // The WAL's intact prefix is part of the store: keep a copy of the whole file,
        // and leave it for SQLite to read.
        std::fs::copy(&wal_path, kept(&wal_name)).map_err(io_error(&wal_path))?;
        done.push(format!(
            "accepted the loss of the missing durable commits; the WAL as it was is kept as \
             {}",
            kept(&wal_name).display()
        ));
    } else {
        done.push(
            "accepted the loss of the missing durable commits: there is no WAL to take them \
             from"
                .to_string(),
        );
    }
    // The stamp file goes with the database as it is now (the next writable open sets
    // it to the database's own stamp).
    let synced = dir.join(SYNCED_FILE);
    if synced.exists() {
        std::fs::rename(&synced, kept(SYNCED_FILE)).map_err(io_error(&synced))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    done.push(format!(
        "the files replaced are kept next to the store as *.before-repair-{stamp}: delete them \
         once the store reads as it should"
    ));
    Ok(done)
}

/// Why the journal check refused a store, and what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalDamage {
    /// The store directory.
    pub dir: PathBuf,
    /// What was found, one sentence each.
    pub findings: Vec<String>,
    /// `llmfs fsck --repair` can rebuild the database from the WAL's intact frames (the
    /// frames are there); otherwise repair can only accept what is lost.
    pub rebuildable: bool,
}

impl std::fmt::Display for JournalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        write!(
            f,
            "the store's write-ahead log is damaged or missing: {}. Opening the store now would \
             silently lose those commits, so nothing was opened or changed. ",
            self.findings.join("; ")
        )?;
        if self.rebuildable {
            write!(
                f,
                "Run `llmfs fsck {dir}` for the details, then `llmfs fsck --repair {dir}` to \
                 rebuild the database from every intact frame of the log (the damaged files are \
                 kept next to it)"
            )
        } else {
            write!(
                f,
                "Put back the store's files if you have them (llmfs.db-wal next to llmfs.db); \
                 otherwise `llmfs fsck --repair {dir}` accepts the loss and checks what is left \
                 (the old files are kept next to it)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_file_round_trips_and_damage_is_no_evidence() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_synced(dir.path()), Ok(None));
        let f = SyncedFile::create(dir.path(), 7).unwrap();
        assert_eq!(read_synced(dir.path()), Ok(Some(7)));
        f.record(1 << 40).unwrap();
        assert_eq!(read_synced(dir.path()), Ok(Some(1 << 40)));
        let path = dir.path().join(SYNCED_FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[12] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(read_synced(dir.path()).unwrap_err().contains("checksum"));
        std::fs::write(&path, b"short").unwrap();
        assert!(read_synced(dir.path()).is_err());
    }
}
