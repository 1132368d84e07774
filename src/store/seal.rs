//! Checksums on every record: [`Sealed`], the engine the store runs on, wraps the database
//! engine and seals each value it writes with a CRC-32 over the record's table, key and
//! value, and checks it on every read.
//!
//! Why per record: SQLite's pages carry no checksum, and before this layer one flipped
//! bit in an inode record could grow a file by a megabyte of zeros, set S_ISUID on a root
//! file or rename it, while every read succeeded and fsck called the store clean. Frames
//! carry a CRC of their plaintext, but the records around them (a hot chunk's version,
//! an extent's table of indexes) did not: a flipped index would have served a chunk's
//! bytes at another offset. Now a record that fails its seal is an error for whatever
//! reads it (EIO through the mount, one log line naming the record) and a finding of
//! fsck; nothing else in the store is affected.
//!
//! Layout of a sealed value (big endian):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | value | rest | the record's value as [`super::records`] and [`super::extent`] encode it |
//! | seal | 4 bytes | CRC-32 (IEEE) of: the table's tag byte, the key's length (u16), the key, the value |
//!
//! The key and table are inside the checksum, so a bit flipped in a key (a name, an
//! inode number) or a record read under the wrong table is caught too.
//!
//! Stores of format 2 (written before this layer) hold unsealed records. They are read
//! in [`Mode::Legacy`] (by read-only commands) and sealed once, in place, by the first
//! read-write open ([`migrate`]), in batches that record how far they got, so that an
//! interrupted upgrade resumes and every record is known to be sealed or not.
//!
//! What is not covered: SQLite's interior B-tree pages. A bit flipped in a divider key can
//! send a lookup to the wrong leaf, where the record is not found; `llmfs fsck` finds that
//! damage with SQLite's `integrity_check`.

// Defines an on-disk layout (the seal appended to every record); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use super::engine::{Engine, EngineError, EngineSpace, Entry, RawOp, Table};
use super::keys;
use std::sync::Arc;

/// Bytes a seal adds to every value.
pub const SEAL_LEN: usize = 4;

/// The byte that stands for `t` inside a seal.
fn table_tag(t: Table) -> u8 {
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

fn checksum(t: Table, key: &[u8], value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[table_tag(t)]);
    // Keys are at most a few hundred bytes (a name); longer ones still hash whole.
    h.update(&(key.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    h.update(key);
    h.update(value);
    h.finalize()
}

/// `value` with its seal appended, as stored.
pub fn seal(t: Table, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + SEAL_LEN);
    v.extend_from_slice(value);
    v.extend_from_slice(&checksum(t, key, value).to_be_bytes());
    v
}

/// `ops` with every value sealed, as they go to the database.
pub fn seal_ops(ops: &[RawOp]) -> Vec<RawOp> {
    ops.iter()
        .map(|op| match op {
            RawOp::Put(t, k, v) => RawOp::Put(*t, k.clone(), seal(*t, k, v)),
            RawOp::Delete(t, k) => RawOp::Delete(*t, k.clone()),
        })
        .collect()
}

/// The value inside a stored record, or why it is damaged.
pub fn unseal<'v>(t: Table, key: &[u8], stored: &'v [u8]) -> Result<&'v [u8], String> {
    let Some(split) = stored.len().checked_sub(SEAL_LEN) else {
        return Err(format!(
            "{} is {} bytes, shorter than its checksum",
            keys::describe(t, key),
            stored.len()
        ));
    };
    let (value, seal) = stored.split_at(split);
    let want = u32::from_be_bytes(seal.try_into().expect("4 bytes"));
    let got = checksum(t, key, value);
    if want != got {
        return Err(format!(
            "{} fails its checksum (stored {want:08x}, computed {got:08x})",
            keys::describe(t, key)
        ));
    }
    Ok(value)
}

/// How records are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every record is sealed (format 3).
    Strict,
    /// A format 2 store being read before its upgrade: records up to and including
    /// `sealed_through` (in [`Table::ALL`] order, then key order) were sealed by an
    /// interrupted upgrade, the rest are not. Nothing can be written.
    Legacy {
        /// The last record the interrupted upgrade sealed; `None` when it sealed none.
        sealed_through: Option<(Table, Vec<u8>)>,
    },
}

/// What [`Sealed::scan_checked`] hands each record to: its key and its value or why the
/// record is damaged; false stops the scan.
pub type CheckedVisit<'a> = dyn FnMut(&[u8], Result<&[u8], String>) -> bool + 'a;

/// The store's engine: seals what it writes, checks what it reads.
pub struct Sealed {
    inner: Arc<dyn Engine>,
    mode: Mode,
}

fn damaged(why: String) -> EngineError {
    EngineError::Damaged(why)
}

impl Sealed {
    /// The seal layer over `inner`, reading records as `mode` says.
    pub fn new(inner: Arc<dyn Engine>, mode: Mode) -> Sealed {
        Sealed { inner, mode }
    }

    /// The engine underneath (for the upgrade and for tests that plant damage).
    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    /// How this store's records are read (strict, or legacy before the format 3 upgrade).
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether the record `(t, key)` is stored sealed in this mode.
    fn is_sealed(&self, t: Table, key: &[u8]) -> bool {
        match &self.mode {
            Mode::Strict => true,
            // The upgrade rewrites these two itself, last.
            Mode::Legacy { .. }
                if t == Table::Meta && (key == CURSOR_KEY || key == keys::SUPERBLOCK) =>
            {
                false
            }
            Mode::Legacy { sealed_through } => match sealed_through {
                None => false,
                Some((ct, ck)) => (t, key) <= (*ct, ck.as_slice()),
            },
        }
    }

    fn open<'v>(&self, t: Table, key: &[u8], stored: &'v [u8]) -> Result<&'v [u8], String> {
        if self.is_sealed(t, key) {
            unseal(t, key, stored)
        } else {
            Ok(stored)
        }
    }

    /// Like [`Engine::scan`], but a record that fails its seal is handed to `visit` as
    /// `Err(why)` and the scan goes on: for fsck, which reports every damaged record.
    pub fn scan_checked(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut CheckedVisit<'_>,
    ) -> Result<(), EngineError> {
        self.inner.scan(table, from, to, &mut |k, v| {
            visit(k, self.open(table, k, v))
        })
    }
}

impl Engine for Sealed {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.inner.get(table, key)? {
            None => Ok(None),
            Some(mut v) => {
                let len = self.open(table, key, &v).map_err(damaged)?.len();
                v.truncate(len);
                Ok(Some(v))
            }
        }
    }

    /// Stops at a damaged record with [`EngineError::Damaged`]: whatever lists past it
    /// (a directory, a file's chunks) fails there, after the records before it.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        let mut bad = None;
        self.inner
            .scan(table, from, to, &mut |k, v| match self.open(table, k, v) {
                Ok(v) => visit(k, v),
                Err(why) => {
                    bad = Some(why);
                    false
                }
            })?;
        match bad {
            Some(why) => Err(damaged(why)),
            None => Ok(()),
        }
    }

    fn floor(&self, table: Table, low: &[u8], high: &[u8]) -> Result<Option<Entry>, EngineError> {
        match self.inner.floor(table, low, high)? {
            None => Ok(None),
            Some((k, mut v)) => {
                let len = self.open(table, &k, &v).map_err(damaged)?.len();
                v.truncate(len);
                Ok(Some((k, v)))
            }
        }
    }

    fn commit(&self, ops: &[RawOp], durable: bool) -> Result<(), EngineError> {
        if self.mode != Mode::Strict {
            return Err(EngineError::Other(
                "a store of format 2 is read-only until its first read-write open upgrades it"
                    .into(),
            ));
        }
        self.inner.commit(&seal_ops(ops), durable)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.inner.sync()
    }

    fn set_commit_window(&self, window: std::time::Duration) {
        self.inner.set_commit_window(window)
    }

    fn reclaim(&self) -> Result<bool, EngineError> {
        self.inner.reclaim()
    }

    fn integrity_check(&self) -> Result<Vec<String>, EngineError> {
        self.inner.integrity_check()
    }

    fn close(&self) -> Result<(), EngineError> {
        self.inner.close()
    }

    fn space(&self) -> Result<EngineSpace, EngineError> {
        self.inner.space()
    }

    fn extent_target(&self) -> usize {
        self.inner.extent_target()
    }

    fn room(&self) -> u64 {
        self.inner.room()
    }
}

/// The meta record an interrupted upgrade leaves: how far it got.
const CURSOR_KEY: &[u8] = b"seal_cursor";

/// Records sealed per commit of the upgrade.
const MIGRATE_BATCH: usize = 512;

/// Where an interrupted upgrade of `engine` stopped, if one did.
pub fn upgrade_cursor(engine: &dyn Engine) -> Result<Option<(Table, Vec<u8>)>, EngineError> {
    let Some(v) = engine.get(Table::Meta, CURSOR_KEY)? else {
        return Ok(None);
    };
    let bad = || EngineError::Damaged("the store's upgrade cursor is malformed".into());
    let (&t, key) = v.split_first().ok_or_else(bad)?;
    let table = *Table::ALL.get(usize::from(t)).ok_or_else(bad)?;
    Ok(Some((table, key.to_vec())))
}

fn cursor_value(t: Table, key: &[u8]) -> Vec<u8> {
    let index = Table::ALL.iter().position(|x| *x == t).unwrap_or(0) as u8;
    let mut v = vec![index];
    v.extend_from_slice(key);
    v
}

/// Seals every record of a format 2 store in place, resuming after an interrupted run.
/// `skip` names meta records the caller rewrites itself (the superblock). Each batch
/// commits its records with the cursor, so after a crash every record before the cursor
/// is sealed and every one after it is not. Returns the records sealed; the caller then
/// writes the new superblock and removes the cursor, durably, in one commit.
pub fn migrate(
    engine: &dyn Engine,
    skip: &[&[u8]],
    progress: &mut dyn FnMut(u64),
) -> Result<u64, EngineError> {
    let mut cursor = upgrade_cursor(engine)?;
    let mut done = 0u64;
    for t in Table::ALL {
        if cursor.as_ref().is_some_and(|(ct, _)| *ct > t) {
            continue;
        }
        loop {
            let from = match &cursor {
                Some((ct, k)) if *ct == t => {
                    let mut next = k.clone();
                    next.push(0);
                    next
                }
                _ => Vec::new(),
            };
            let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            engine.scan(t, &from, None, &mut |k, v| {
                batch.push((k.to_vec(), v.to_vec()));
                batch.len() < MIGRATE_BATCH
            })?;
            let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
                break;
            };
            let mut ops: Vec<RawOp> = batch
                .iter()
                .filter(|(k, _)| !(t == Table::Meta && (k == CURSOR_KEY || skip.contains(&&**k))))
                .map(|(k, v)| RawOp::Put(t, k.clone(), seal(t, k, v)))
                .collect();
            done += ops.len() as u64;
            ops.push(RawOp::Put(
                Table::Meta,
                CURSOR_KEY.to_vec(),
                cursor_value(t, &last),
            ));
            engine.commit(&ops, false)?;
            cursor = Some((t, last));
            progress(done);
        }
    }
    Ok(done)
}

/// The operations that end an upgrade: the cursor goes (with the caller's superblock).
pub fn finish_migration_ops() -> Vec<RawOp> {
    vec![RawOp::Delete(Table::Meta, CURSOR_KEY.to_vec())]
}

/// Planting records in the in-memory engine as the store would have written them.
#[cfg(test)]
pub(crate) trait PlantSealed {
    /// The value of a record, unsealed (panics on damage: tests plant it themselves).
    fn get_unsealed(&self, t: Table, key: &[u8]) -> Option<Vec<u8>>;
    /// Stores `value` sealed, bypassing the store.
    fn put_sealed(&self, t: Table, key: &[u8], value: &[u8]);
}

#[cfg(test)]
impl PlantSealed for super::engine::memory::MemoryEngine {
    fn get_unsealed(&self, t: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.raw_get(t, key)
            .map(|v| unseal(t, key, &v).expect("a sealed record").to_vec())
    }

    fn put_sealed(&self, t: Table, key: &[u8], value: &[u8]) {
        self.raw_put(t, key, &seal(t, key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::memory::MemoryEngine;
    use super::*;

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_caught() {
        let key = keys::named(1, b"notes.txt");
        let value = b"\x00\x00\x00\x00\x00\x00\x00\x2a\x00".to_vec();
        let stored = seal(Table::Dirent, &key, &value);
        assert_eq!(unseal(Table::Dirent, &key, &stored).unwrap(), value);
        for bit in 0..stored.len() * 8 {
            let mut bad = stored.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(unseal(Table::Dirent, &key, &bad).is_err(), "bit {bit}");
        }
        let mut other = key.clone();
        other[9] ^= 4;
        let err = unseal(Table::Dirent, &other, &stored).unwrap_err();
        assert!(err.contains("directory entry"), "{err}");
        assert!(
            unseal(Table::Xattr, &key, &stored).is_err(),
            "another table"
        );
        assert!(unseal(Table::Dirent, &key, &stored[..3]).is_err());
    }

    #[test]
    fn reads_check_and_scans_stop_at_damage() {
        let mem = MemoryEngine::new();
        let e = Sealed::new(mem.clone(), Mode::Strict);
        let ops: Vec<RawOp> = (0u64..5)
            .map(|i| RawOp::Put(Table::Inode, keys::ino(i), vec![i as u8; 10]))
            .collect();
        e.commit(&ops, false).unwrap();
        assert_eq!(
            e.get(Table::Inode, &keys::ino(3)).unwrap().unwrap(),
            [3; 10]
        );
        let mut raw = mem.raw_get(Table::Inode, &keys::ino(3)).unwrap();
        raw[2] ^= 0x10;
        mem.raw_put(Table::Inode, &keys::ino(3), &raw);
        let err = e.get(Table::Inode, &keys::ino(3)).unwrap_err().to_string();
        assert!(err.contains("inode 3"), "{err}");
        let mut seen = 0;
        let r = e.scan(Table::Inode, &[], None, &mut |_, _| {
            seen += 1;
            true
        });
        assert!(r.is_err());
        assert_eq!(seen, 3, "the records before the damage were visited");
        let mut results = Vec::new();
        e.scan_checked(Table::Inode, &[], None, &mut |_, v| {
            results.push(v.is_ok());
            true
        })
        .unwrap();
        assert_eq!(results, [true, true, true, false, true]);
    }

    #[test]
    fn an_interrupted_upgrade_resumes_and_seals_each_record_once() {
        let mem = MemoryEngine::new();
        let ops: Vec<RawOp> = (0u64..1300)
            .map(|i| RawOp::Put(Table::Chunk, keys::chunk(7, i), vec![i as u8; 20]))
            .chain([RawOp::Put(Table::Meta, b"super".to_vec(), b"sb".to_vec())])
            .collect();
        mem.commit(&ops, true).unwrap();
        // The second batch of chunks fails: the first is sealed, the cursor says so.
        mem.fail_commit(3);
        assert!(migrate(&*mem, &[b"super"], &mut |_| {}).is_err());
        let cursor = upgrade_cursor(&*mem).unwrap().unwrap();
        assert_eq!(cursor.0, Table::Chunk);
        let legacy = Sealed::new(
            mem.clone(),
            Mode::Legacy {
                sealed_through: Some(cursor),
            },
        );
        let mut n = 0;
        legacy
            .scan(Table::Chunk, &[], None, &mut |k, v| {
                assert_eq!(v, vec![keys::chunk_of(k).unwrap().1 as u8; 20]);
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 1300, "a half-upgraded store reads whole");
        let sealed = migrate(&*mem, &[b"super"], &mut |_| {}).unwrap();
        assert_eq!(sealed, 1300 - 512);
        mem.commit(&finish_migration_ops(), true).unwrap();
        let strict = Sealed::new(mem.clone(), Mode::Strict);
        let mut n = 0;
        strict
            .scan(Table::Chunk, &[], None, &mut |_, v| {
                assert_eq!(v.len(), 20);
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 1300);
        assert_eq!(
            mem.raw_get(Table::Meta, b"super").unwrap(),
            b"sb",
            "skipped records are the caller's"
        );
    }
}
