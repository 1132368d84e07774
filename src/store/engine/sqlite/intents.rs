//! The intent log: durable commits made without writing the group's pages.
//!
//! A durable commit (an fsync in the mount) used to write the open group to the WAL and
//! fsync it: at least four 8 KiB pages (a frame's leaf, the frames' key index, the inode's
//! leaf, the leaf with the pending records and the durable-commit stamp) for an fsync every
//! 64 appended lines of 100-200 bytes, 4.8-7 bytes written to disk per byte appended once
//! the checkpoint wrote them again. Now, while every earlier commit of the WAL is on disk,
//! a durable commit appends the store changes of the open group that no record holds yet
//! (keys and values, a few KB) to this preallocated file and `fdatasync`s it, and the group
//! stays open; the group's pages reach the WAL once, when it ends (its window, its size, a
//! checkpoint, a close), and that WAL is fsync'd before the log starts over. At open, the
//! records that follow the database's own durable stamp are applied to it, in order, as one
//! commit.
//!
//! Each record names the stamp the database held when the log started over (its base) and
//! its own durable stamp (base + 1, + 2, ...: every durable commit of a generation is in
//! the log), so a record left from an earlier generation never matches a later database,
//! and nothing needs to be erased when the log starts over. Records start on 4 KiB
//! boundaries: an `fdatasync` writes whole blocks of this record only, never a block of an
//! earlier one (whose loss would be silent), and a scan finds every record.
//!
//! Record (big endian), at a multiple of [`BLOCK`], padded with zeros to the next one:
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | magic | 8 bytes | `LLMFSINT` |
//! | base | 8 bytes | the database's durable stamp when this generation began |
//! | stamp | 8 bytes | this durable commit's stamp |
//! | len | 4 bytes | bytes of changes that follow the header |
//! | crc | 4 bytes | CRC-32 of the 28 bytes before it and the changes |
//! | changes | len bytes | `P` table key-length key value-length value, or `D` table key-length key; table as the SQL key's tag byte, lengths u32 |
//!
//! At open, the records of the database's generation are read from the start: the first
//! that fails its checksum, is cut short or is missing ends them (the torn tail of a crash
//! holds a record that was never acknowledged). A record of the generation that reads
//! intact *after* that point is damage, not a torn tail: the store is refused, and
//! `llmfs fsck --repair` keeps the intact records before it and accepts the loss of the
//! rest.

// Defines an on-disk layout (`llmfs.intents`); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use super::super::{EngineError, RawOp};
use super::journal::{io_error, open_or_create};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The intent log, in the store directory.
pub const INTENTS_FILE: &str = "llmfs.intents";
/// Records start at multiples of this.
pub const BLOCK: usize = 4096;
/// The log's largest size. It is made with [`LOG_START`] bytes of zeros and grows, by
/// writing zeros, when a run of records needs more: a record is written over blocks the
/// file already has, so its `fdatasync` writes those blocks and no file metadata.
pub const LOG_BYTES: u64 = 1 << 20;
/// The log's size when it is made: a store that sees few fsyncs stays small on disk.
pub const LOG_START: u64 = 256 << 10;
/// The most changes a record takes: a commit that would need more writes the group's
/// pages instead (as large as the record, they gain nothing from it).
pub const RECORD_MAX: usize = 256 << 10;
const MAGIC: &[u8; 8] = b"LLMFSINT";
const HEADER: usize = 32;

/// The intent log of a read-write engine.
pub struct IntentLog {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    next: u64,
    /// The file's length: blocks written already.
    len: u64,
    /// The durable stamp of the database this generation of records builds on.
    base: u64,
}

impl IntentLog {
    /// Opens the log in `dir` (making it, zero-filled, when it is missing or short) for a
    /// database whose durable stamp is `base`: records are written from the start.
    pub fn open(dir: &Path, base: u64) -> Result<IntentLog, EngineError> {
        let mut log = IntentLog::open_file(dir, base)?;
        log.grow(LOG_START)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        Ok(log)
    }

    fn open_file(dir: &Path, base: u64) -> Result<IntentLog, EngineError> {
        let path = dir.join(INTENTS_FILE);
        let file = open_or_create(&path)?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        Ok(IntentLog {
            file,
            path,
            next: 0,
            len,
            base,
        })
    }

    /// Makes the file at least `want` bytes long (at most [`LOG_BYTES`]), durably.
    /// Written, not `fallocate`d: a write into an unwritten extent changes the file's
    /// metadata, which the `fdatasync` of every record would then journal.
    fn grow(&mut self, want: u64) -> Result<(), EngineError> {
        let want = want.min(LOG_BYTES);
        if self.len >= want {
            return Ok(());
        }
        let zeros = vec![0u8; (want - self.len) as usize];
        self.file
            .write_all_at(&zeros, self.len)
            .and_then(|()| self.file.sync_all())
            .map_err(io_error(&self.path))?;
        self.len = want;
        Ok(())
    }

    /// The log starts over for a database whose every commit is on disk, at durable stamp
    /// `base`. Nothing is written: the old records name another base.
    pub fn restart(&mut self, base: u64) {
        self.next = 0;
        self.base = base;
    }

    /// The durable stamp of the database this generation builds on.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Appends the record of durable commit `stamp`, holding `ops`, and makes it durable.
    /// `Ok(false)`: it does not fit (the caller writes the group's pages instead).
    pub fn append(&mut self, stamp: u64, ops: &[RawOp]) -> Result<bool, EngineError> {
        let size = HEADER + changes_len(ops);
        let padded = size.div_ceil(BLOCK) * BLOCK;
        let end = self.next + padded as u64;
        if size - HEADER > RECORD_MAX || end > LOG_BYTES {
            return Ok(false);
        }
        if end > self.len {
            if let Err(e) = self.grow(end.max(self.len * 2)) {
                // A full device, say: this commit writes the WAL instead.
                log::debug!("the intent log cannot grow: {e}");
                return Ok(false);
            }
        }
        let mut b = Vec::with_capacity(padded);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.base.to_be_bytes());
        b.extend_from_slice(&stamp.to_be_bytes());
        b.extend_from_slice(&((size - HEADER) as u32).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        encode_changes(ops, &mut b);
        let crc = record_crc(&b[..28], &b[HEADER..]);
        b[28..32].copy_from_slice(&crc.to_be_bytes());
        b.resize(padded, 0);
        self.file
            .write_all_at(&b, self.next)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(&self.path))?;
        self.next += padded as u64;
        Ok(true)
    }
}

fn record_crc(header: &[u8], changes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(changes);
    h.finalize()
}

/// Bytes one change takes in a record.
pub fn change_len(op: &RawOp) -> usize {
    match op {
        RawOp::Put(_, k, v) => 10 + k.len() + v.len(),
        RawOp::Delete(_, k) => 6 + k.len(),
    }
}

fn changes_len(ops: &[RawOp]) -> usize {
    ops.iter().map(change_len).sum()
}

fn encode_changes(ops: &[RawOp], b: &mut Vec<u8>) {
    for op in ops {
        match op {
            RawOp::Put(t, k, v) => {
                b.extend_from_slice(&[b'P', super::tag(*t)]);
                b.extend_from_slice(&(k.len() as u32).to_be_bytes());
                b.extend_from_slice(k);
                b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                b.extend_from_slice(v);
            }
            RawOp::Delete(t, k) => {
                b.extend_from_slice(&[b'D', super::tag(*t)]);
                b.extend_from_slice(&(k.len() as u32).to_be_bytes());
                b.extend_from_slice(k);
            }
        }
    }
}

/// `n` bytes of `b` from `*at`, moving `at` past them.
fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

fn take_u32(b: &[u8], at: &mut usize) -> Option<usize> {
    let s = take(b, at, 4)?;
    Some(u32::from_be_bytes(s.try_into().ok()?) as usize)
}

fn decode_changes(b: &[u8]) -> Option<Vec<RawOp>> {
    let mut ops = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let kind = take(b, &mut at, 2)?;
        let table = super::table_of(kind[1])?;
        let n = take_u32(b, &mut at)?;
        let key = take(b, &mut at, n)?.to_vec();
        ops.push(match kind[0] {
            b'P' => {
                let n = take_u32(b, &mut at)?;
                RawOp::Put(table, key, take(b, &mut at, n)?.to_vec())
            }
            b'D' => RawOp::Delete(table, key),
            _ => return None,
        });
    }
    Some(ops)
}

/// One intact record: (base, stamp, its changes, the bytes it takes with its padding).
fn parse(log: &[u8], at: usize) -> Option<(u64, u64, Vec<RawOp>, usize)> {
    let h = log.get(at..at + HEADER)?;
    if &h[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(h[24..28].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(h[28..32].try_into().expect("4 bytes"));
    let changes = log.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    if record_crc(&h[..28], changes) != crc {
        return None;
    }
    let ops = decode_changes(changes)?;
    Some((
        word(8),
        word(16),
        ops,
        (HEADER + len).div_ceil(BLOCK) * BLOCK,
    ))
}

/// What the log holds for a database at durable stamp `base`.
#[derive(Debug, Default)]
pub struct Replay {
    /// The records of that generation, in order: (stamp, changes).
    pub records: Vec<(u64, Vec<RawOp>)>,
    /// Where those records end in the file.
    pub end: u64,
    /// A record of the generation that reads intact after the first that does not: the
    /// records between are lost (in words, for the operator).
    pub damage: Option<String>,
}

impl Replay {
    /// The durable stamp the database reaches once the records are applied.
    pub fn last_stamp(&self) -> Option<u64> {
        self.records.last().map(|r| r.0)
    }
}

/// The log in `dir`, whole; `None` when there is none.
fn read_file(dir: &Path) -> Result<Option<Vec<u8>>, EngineError> {
    let path = dir.join(INTENTS_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Reads the log in `dir` for a database at durable stamp `base`. A missing log holds
/// nothing.
pub fn read(dir: &Path, base: u64) -> Result<Replay, EngineError> {
    Ok(read_file(dir)?.map_or_else(Replay::default, |log| scan(&log, base)))
}

/// The latest generation of records in the log in `dir` (the one its first block
/// starts), for a database whose stamp is not known (a salvage): its base and records.
pub fn read_latest(dir: &Path) -> Result<Option<(u64, Replay)>, EngineError> {
    Ok(read_file(dir)?.and_then(|log| parse(&log, 0).map(|(base, ..)| (base, scan(&log, base)))))
}

fn scan(log: &[u8], base: u64) -> Replay {
    let mut r = Replay::default();
    let mut at = 0;
    let mut want = base + 1;
    while let Some((b, stamp, ops, len)) = parse(log, at) {
        if b != base || stamp != want {
            break;
        }
        r.records.push((stamp, ops));
        at += len;
        want += 1;
    }
    r.end = at as u64;
    // Anything of this generation further on means the record at `at` was damaged.
    let later = (at + BLOCK..log.len())
        .step_by(BLOCK)
        .filter_map(|off| parse(log, off).map(|p| (off, p)))
        .find(|(_, (b, stamp, _, _))| *b == base && *stamp >= want);
    if let Some((off, (_, stamp, _, _))) = later {
        r.damage = Some(format!(
            "{INTENTS_FILE}: the record of durable commit #{want} at byte {at} is damaged or \
             missing while that of #{stamp} at byte {off} is intact: durable commits #{want} \
             to #{} are lost",
            stamp - 1
        ));
    }
    r
}

/// Cuts the log in `dir` after its intact records of generation `base` (`fsck --repair`
/// of a damaged log): a copy of the whole file is kept as `kept` first. Returns how many
/// records stay.
pub fn cut_after_intact(dir: &Path, base: u64, kept: &Path) -> Result<usize, EngineError> {
    let path = dir.join(INTENTS_FILE);
    let replay = read(dir, base)?;
    std::fs::copy(&path, kept).map_err(io_error(&path))?;
    let file = File::options()
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let len = file.metadata().map_err(io_error(&path))?.len();
    let zeros = vec![0u8; len.saturating_sub(replay.end) as usize];
    file.write_all_at(&zeros, replay.end)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    Ok(replay.records.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::Table;

    fn ops(i: u8) -> Vec<RawOp> {
        vec![
            RawOp::Put(Table::Chunk, vec![i, 1], vec![i; 3000]),
            RawOp::Put(Table::Inode, vec![i], b"inode".to_vec()),
            RawOp::Delete(Table::Pending, vec![i, 0]),
        ]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_or_damage_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IntentLog::open(dir.path(), 7).unwrap();
        let len = || {
            std::fs::metadata(dir.path().join(INTENTS_FILE))
                .unwrap()
                .len()
        };
        assert_eq!(len(), LOG_START);
        for s in 8..12 {
            assert!(log.append(s, &ops(s as u8)).unwrap());
        }
        let r = read(dir.path(), 7).unwrap();
        assert_eq!(r.records.len(), 4);
        assert_eq!(r.last_stamp(), Some(11));
        assert_eq!(r.records[2], (10, ops(10)));
        assert!(r.damage.is_none());
        // Another generation's database sees none of them.
        assert!(read(dir.path(), 11).unwrap().records.is_empty());
        assert!(read(dir.path(), 6).unwrap().records.is_empty());

        // The log starts over: the new generation's records replace the old ones in turn.
        log.restart(11);
        assert!(log.append(12, &ops(12)).unwrap());
        let r = read(dir.path(), 11).unwrap();
        assert_eq!((r.records.len(), r.damage.is_none()), (1, true));
        assert!(read(dir.path(), 7).unwrap().records.is_empty());

        // Every bit flipped in the last record of a generation: it is a torn tail, never
        // accepted; flipped in an earlier one, it is damage.
        let path = dir.path().join(INTENTS_FILE);
        let good = std::fs::read(&path).unwrap();
        let mut log = IntentLog::open(dir.path(), 20).unwrap();
        for s in 21..24 {
            assert!(log.append(s, &ops(s as u8)).unwrap());
        }
        let good2 = std::fs::read(&path).unwrap();
        assert_ne!(good, good2);
        let rec = BLOCK; // each record here takes one block
        for bit in (0..rec * 8).step_by(7) {
            let mut b = good2.clone();
            b[2 * rec + bit / 8] ^= 1 << (bit % 8);
            let r = scan(&b, 20);
            let inside = bit / 8 < HEADER + changes_len(&ops(22));
            // Padding is outside the checksum and means nothing.
            assert_eq!(r.records.len(), if inside { 2 } else { 3 }, "bit {bit}");
            assert!(r.damage.is_none());
            let mut b = good2.clone();
            b[rec + bit / 8] ^= 1 << (bit % 8);
            let r = scan(&b, 20);
            if inside {
                assert_eq!(r.records.len(), 1, "bit {bit} of the middle record");
                assert!(
                    r.damage.as_deref().unwrap().contains("#22"),
                    "{:?}",
                    r.damage
                );
            } else {
                assert_eq!(r.records.len(), 3);
            }
        }
        // fsck --repair keeps what is intact before the damage.
        let mut b = good2.clone();
        b[rec + 40] ^= 4;
        std::fs::write(&path, &b).unwrap();
        let kept = dir.path().join("kept");
        assert_eq!(cut_after_intact(dir.path(), 20, &kept).unwrap(), 1);
        assert_eq!(std::fs::read(&kept).unwrap(), b);
        let r = read(dir.path(), 20).unwrap();
        assert_eq!((r.records.len(), r.damage.is_none()), (1, true));
    }

    #[test]
    fn a_record_too_big_or_past_the_end_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IntentLog::open(dir.path(), 0).unwrap();
        let big = vec![RawOp::Put(Table::Chunk, vec![1], vec![0; RECORD_MAX])];
        assert!(!log.append(1, &big).unwrap());
        let mut n = 0;
        let mid = vec![RawOp::Put(Table::Chunk, vec![1], vec![0; RECORD_MAX - 100])];
        while log.append(n + 1, &mid).unwrap() {
            n += 1;
        }
        assert_eq!(n, LOG_BYTES / (RECORD_MAX as u64));
        assert!(!log.append(n + 1, &ops(1)).unwrap());
        // It grew to hold them, and no further.
        let len = std::fs::metadata(dir.path().join(INTENTS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, LOG_BYTES);
        assert_eq!(read(dir.path(), 0).unwrap().records.len(), n as usize);
    }
}
