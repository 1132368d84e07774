//! Salvage: a new store built from every record of a damaged one that still reads
//! (`llmfs fsck --salvage STORE NEWSTORE`), for damage no repair in place can fix: a
//! damaged database page, a file cut short, a first page gone.
//!
//! SQLite stops at the first damaged page of a B-tree, so the records are read without
//! it ([`super::engine::product::salvage_scan`]): every page in use, with the WAL's
//! latest pages laid over them. Each record proves itself with its checksum
//! ([`super::seal`]); one that fails is dropped and counted. The old store is only read.
//!
//! What the new store holds, and how a loss shows in it:
//! - every record that reads, as it was;
//! - a file whose chunks are fewer than its record says it stored (`stored`) lost
//!   chunks: each chunk of it that is missing gets a *lost* frame
//!   ([`crate::frame::Codec::Lost`]), so that reading it is an I/O error naming the
//!   salvage, never zeros (a hole of a sparse file among them reads as an error too: the
//!   safe side);
//! - a file or directory whose record is lost but whose name or data remains gets a
//!   new record (a file owned by root, mode 0600, as long as its data reaches; a
//!   directory mode 0700), and everything the root no longer reaches is linked into
//!   `/lost+found` as `#INODE`;
//! - then fsck's repairs run on it (link counts, stored bytes, names of inodes that
//!   are gone, pending records), and a last check says what is left.

use super::engine::{product, Table};
use super::extent::Extent;
use super::fsck::{CheckOptions, CheckReport};
use super::records::{decode_dirent, HotChunk, Inode, Kind, Superblock, Time};
use super::{keys, seal, CreateOptions, OpenOptions, Store, StoreError, Txn, ROOT_INO};
use crate::store::{During, StoreOp};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Records per commit while the new store is filled.
const BATCH_RECORDS: usize = 2048;
/// Bytes of values per commit while the new store is filled.
const BATCH_BYTES: usize = 16 << 20;
/// Damaged records named in the report (the rest are counted).
const NAMED: usize = 50;

/// Records of one table: found in the old store, written to the new one, dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCount {
    /// Records of the table read from the old store's pages (damaged ones included).
    pub found: u64,
    /// Records written to the new store: found, intact and not duplicates (the old
    /// superblock and inode counter are not carried over, so not counted).
    pub kept: u64,
    /// Failed their checksum, or did not decode.
    pub damaged: u64,
    /// A second copy of a key (only the first is kept).
    pub duplicates: u64,
}

/// What a salvage did.
#[derive(Debug)]
pub struct SalvageReport {
    /// The damaged store, only read.
    pub source: PathBuf,
    /// The new store salvage created.
    pub target: PathBuf,
    /// Chunk size of both stores in bytes: the old superblock's, or inferred when it was
    /// lost.
    pub chunk_size: u64,
    /// The old store's superblock read (else the chunk size was inferred).
    pub superblock_found: bool,
    /// Records carried checksums (format 3); a format 2 store's cannot be verified.
    pub sealed: bool,
    /// What the page scan of the old store's files read.
    pub scan: product::SalvageScan,
    /// Record counts per table, by table name.
    pub tables: BTreeMap<&'static str, TableCount>,
    /// The first damaged records, named.
    pub damaged: Vec<String>,
    /// Files that lost chunks: (inode, path in the new store, chunks marked lost).
    pub lost_chunks: Vec<(u64, String, u64)>,
    /// Inodes whose record was lost and rebuilt, with their path in the new store: their
    /// owner, mode and times are new, their size is as far as their data reaches.
    pub rebuilt: Vec<(u64, String)>,
    /// Inodes linked into /lost+found.
    pub relinked: Vec<u64>,
    /// Problems fsck repaired in the new store.
    pub repaired: usize,
    /// What fsck found in the new store after its repairs.
    pub check: CheckReport,
}

impl SalvageReport {
    /// Nothing of the old store was lost: every record read, nothing marked.
    pub fn lossless(&self) -> bool {
        self.tables.values().all(|c| c.damaged == 0)
            && self.scan.pages.damaged.is_empty()
            && self.lost_chunks.is_empty()
            && self.rebuilt.is_empty()
            && self.relinked.is_empty()
    }
}

/// What the first pass learns: the old store's superblock and its frames' sizes.
#[derive(Default)]
struct Survey {
    superblock: Option<(Superblock, bool)>,
    max_plain: u64,
}

/// Builds a new store in `target` (missing or empty) from the records of the store in
/// `source` that still read. `progress` gets a line now and then.
pub fn salvage(
    source: &Path,
    target: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<SalvageReport, StoreError> {
    let survey = survey(source)?;
    let (superblock_found, sealed, chunk_size) = match &survey.superblock {
        Some((sb, sealed)) => (true, *sealed, sb.chunk_size),
        // No superblock: the chunk size is the smallest that holds every frame.
        None => (
            false,
            true,
            survey.max_plain.clamp(512, 1 << 20).next_power_of_two() as u32,
        ),
    };
    progress(&format!(
        "read the old store's layout: chunk size {chunk_size}, records {}",
        if sealed {
            "with checksums"
        } else {
            "without checksums (format 2: they cannot be verified)"
        }
    ));
    let opts = OpenOptions {
        create: Some(CreateOptions { chunk_size }),
        read_only: false,
    };
    if std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_some()) {
        return Err(StoreError::NotAStore {
            path: target.to_path_buf(),
            found: "files already (salvage writes into a new, empty directory)".into(),
        });
    }
    let store = Store::open(target, &opts)?;
    let mut fill = Fill {
        store: &store,
        sealed,
        txn: Txn::new(),
        records: 0,
        bytes: 0,
        seen: HashSet::new(),
        tables: BTreeMap::new(),
        damaged: Vec::new(),
        max_ino: ROOT_INO,
        failed: None,
    };
    let scan =
        product::salvage_scan(source, &mut |t, k, v| fill.record(t, k, v)).during(StoreOp::Read)?;
    if let Some(e) = fill.failed.take() {
        return Err(e);
    }
    fill.flush()?;
    let (tables, damaged, max_ino) = (fill.tables, fill.damaged, fill.max_ino);
    progress(&format!(
        "copied {} records ({} damaged, dropped); {} pages damaged or missing",
        tables.values().map(|c| c.kept).sum::<u64>(),
        tables.values().map(|c| c.damaged).sum::<u64>(),
        scan.pages.damaged.len()
    ));
    // Inode numbers stay as they were: none may be handed out again.
    let mut t = Txn::new();
    t.put(
        Table::Meta,
        keys::NEXT_INO.to_vec(),
        keys::next_ino_value(max_ino + 1 + super::INO_BLOCK),
    );
    store.commit(t)?;
    drop(store);
    let store = Store::open(target, &OpenOptions::default())?;
    let rebuilt = rebuild_lost_records(&store)?;
    let relinked = relink_unreachable(&store)?;
    let lost_chunks = mark_lost_chunks(&store, &rebuilt)?;
    let rebuilt = rebuilt
        .into_iter()
        .map(|ino| (ino, store.find_path(ino).unwrap_or_else(|| "?".into())))
        .collect();
    progress("checking the new store and repairing what is derived");
    let first = store.check(&CheckOptions::default(), None, &mut |_| {})?;
    let repaired = store.repair(&first)?.repaired;
    let check = store.check(&CheckOptions::default(), None, &mut |_| {})?;
    store.sync()?;
    store.close()?;
    Ok(SalvageReport {
        source: source.to_path_buf(),
        target: target.to_path_buf(),
        chunk_size: u64::from(chunk_size),
        superblock_found,
        sealed,
        scan,
        tables,
        damaged,
        lost_chunks,
        rebuilt,
        relinked,
        repaired,
        check,
    })
}

/// First pass: the superblock (and whether records are sealed), and the largest
/// plaintext of any frame, for a store whose superblock is lost.
fn survey(source: &Path) -> Result<Survey, StoreError> {
    let mut s = Survey::default();
    product::salvage_scan(source, &mut |t, k, v| match t {
        Table::Meta if k == keys::SUPERBLOCK => {
            if let Ok(sb) = seal::unseal(t, k, v)
                .map_err(|_| ())
                .and_then(|v| Superblock::decode(v).map_err(|_| ()))
            {
                s.superblock = Some((sb, true));
            } else if let Ok(sb) = Superblock::decode(v) {
                s.superblock.get_or_insert((sb, false));
            }
        }
        Table::Chunk | Table::Extent => {
            let v = seal::unseal(t, k, v).unwrap_or(v);
            let frames: Vec<Vec<u8>> = if t == Table::Chunk {
                HotChunk::decode(v)
                    .map(|h| vec![h.frame])
                    .unwrap_or_default()
            } else {
                Extent::decode(v)
                    .map(|e| e.chunks().iter().map(|c| c.frame.clone()).collect())
                    .unwrap_or_default()
            };
            for f in frames {
                if let Ok(h) = crate::frame::parse_header(&f) {
                    s.max_plain = s.max_plain.max(h.plain_len);
                }
            }
        }
        _ => {}
    })
    .during(StoreOp::Read)?;
    Ok(s)
}

/// The second pass: records checked and written into the new store in batches.
struct Fill<'s> {
    store: &'s Store,
    sealed: bool,
    txn: Txn,
    records: usize,
    bytes: usize,
    seen: HashSet<(Table, Vec<u8>)>,
    tables: BTreeMap<&'static str, TableCount>,
    damaged: Vec<String>,
    max_ino: u64,
    failed: Option<StoreError>,
}

impl Fill<'_> {
    fn record(&mut self, t: Table, key: &[u8], stored: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let count = self.tables.entry(t.name()).or_default();
        count.found += 1;
        let value = if self.sealed {
            match seal::unseal(t, key, stored) {
                Ok(v) => v,
                Err(why) => {
                    count.damaged += 1;
                    if self.damaged.len() < NAMED {
                        self.damaged.push(why);
                    }
                    return;
                }
            }
        } else {
            stored
        };
        if t == Table::Meta && key != keys::PROFILE && key != keys::CANARY {
            return; // the new store has its own superblock and inode counter
        }
        if !self.seen.insert((t, key.to_vec())) {
            count.duplicates += 1;
            return;
        }
        count.kept += 1;
        if let Some(ino) = keys::u64_at(key, 0).filter(|_| t != Table::Meta) {
            self.max_ino = self.max_ino.max(ino);
        }
        if t == Table::Dirent {
            if let Ok((child, _)) = decode_dirent(value) {
                self.max_ino = self.max_ino.max(child);
            }
        }
        self.txn.put(t, key.to_vec(), value.to_vec());
        self.records += 1;
        self.bytes += value.len();
        if self.records >= BATCH_RECORDS || self.bytes >= BATCH_BYTES {
            if let Err(e) = self.flush() {
                self.failed = Some(e);
            }
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.records = 0;
        self.bytes = 0;
        self.store.commit(std::mem::take(&mut self.txn))
    }
}

/// Inodes named by a directory entry, or holding data, whose own record is gone: a
/// new record for each (files and directories; a symlink's target or a device's
/// number is gone with its record, so those names go, by fsck's repair).
fn rebuild_lost_records(store: &Store) -> Result<Vec<u64>, StoreError> {
    let mut have = BTreeSet::new();
    store.for_each_inode(|ino, _| {
        have.insert(ino);
        true
    })?;
    // (kind named by a dirent, the parent naming it)
    let mut wanted: BTreeMap<u64, (Kind, u64)> = BTreeMap::new();
    store.for_each_dirent(|parent, _, d| {
        if let Ok((child, kind)) = d {
            if !have.contains(&child) && matches!(kind, Kind::File | Kind::Dir) {
                wanted.entry(child).or_insert((kind, parent));
            }
        }
        // A directory that lost its record still holds its entries.
        if !have.contains(&parent) {
            wanted.insert(parent, (Kind::Dir, 0));
        }
        true
    })?;
    // Data of files that lost both record and name: (end of the data, newest version).
    let mut data_end: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let cs = store.chunk_size();
    for t in [Table::Chunk, Table::Extent] {
        store
            .engine
            .scan_checked(t, &[], None, &mut |k, v| {
                let (Some((ino, _)), Ok(v)) = (keys::chunk_of(k), v) else {
                    return true;
                };
                let frames: Vec<(u64, u64, Vec<u8>)> = if t == Table::Chunk {
                    let index = keys::u64_at(k, 8).unwrap_or(0);
                    HotChunk::decode(v)
                        .map(|h| vec![(index, h.ver, h.frame)])
                        .unwrap_or_default()
                } else {
                    Extent::decode(v)
                        .map(|e| {
                            e.chunks()
                                .iter()
                                .map(|c| (c.index, c.ver, c.frame.clone()))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                for (index, ver, f) in frames {
                    let len = crate::frame::parse_header(&f).map_or(cs, |h| h.plain_len.min(cs));
                    let end = index.saturating_mul(cs).saturating_add(len);
                    let e = data_end.entry(ino).or_default();
                    *e = (e.0.max(end), e.1.max(ver));
                }
                true
            })
            .during(StoreOp::Read)?;
    }
    let orphans: BTreeSet<u64> = store.orphans()?.into_iter().collect();
    for &ino in data_end.keys() {
        if !have.contains(&ino) && !orphans.contains(&ino) {
            wanted.entry(ino).or_insert((Kind::File, 0));
        }
    }
    let mut rebuilt = Vec::new();
    let mut t = Txn::new();
    for (ino, (kind, parent)) in wanted {
        let mut inode = match kind {
            Kind::Dir => {
                let mut i = Inode::new(libc::S_IFDIR | 0o700, 0, 0, Time::now());
                i.nlink = 2;
                i.parent = if parent == 0 { ROOT_INO } else { parent };
                i
            }
            _ => Inode::new(libc::S_IFREG | 0o600, 0, 0, Time::now()),
        };
        let (end, newest) = data_end.get(&ino).copied().unwrap_or_default();
        inode.size = end;
        inode.data_ver = newest;
        t.put_inode(ino, &inode);
        rebuilt.push(ino);
    }
    store.commit(t)?;
    Ok(rebuilt)
}

/// Everything the root does not reach (a name lost, or a directory on the way): linked
/// into `/lost+found` as `#INODE`.
fn relink_unreachable(store: &Store) -> Result<Vec<u64>, StoreError> {
    let mut kinds: BTreeMap<u64, Kind> = BTreeMap::new();
    store.for_each_inode(|ino, i| {
        if let Ok(i) = i {
            kinds.insert(ino, i.kind());
        }
        true
    })?;
    let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    store.for_each_dirent(|parent, _, d| {
        if let Ok((child, _)) = d {
            children.entry(parent).or_default().push(child);
        }
        true
    })?;
    let mut reached = BTreeSet::from([ROOT_INO]);
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        for &c in children.get(&dir).map(Vec::as_slice).unwrap_or(&[]) {
            if kinds.get(&c) == Some(&Kind::Dir) && reached.insert(c) {
                stack.push(c);
            } else {
                reached.insert(c);
            }
        }
    }
    let orphans: BTreeSet<u64> = store.orphans()?.into_iter().collect();
    // Only the tops of what is cut off: a directory's own entries come along with it.
    let named: BTreeSet<u64> = children.values().flatten().copied().collect();
    let lost: Vec<u64> = kinds
        .keys()
        .copied()
        .filter(|i| !reached.contains(i) && !orphans.contains(i))
        .filter(|i| !named.contains(i) || !is_under_lost_dir(*i, &children, &kinds, &reached))
        .collect();
    if lost.is_empty() {
        return Ok(lost);
    }
    let mut t = Txn::new();
    let lf = match store.lookup(ROOT_INO, b"lost+found")? {
        Some((ino, Kind::Dir)) => ino,
        _ => {
            let ino = store.alloc_ino()?;
            let mut dir = Inode::new(libc::S_IFDIR | 0o700, 0, 0, Time::now());
            dir.nlink = 2;
            dir.parent = ROOT_INO;
            t.put_inode(ino, &dir);
            t.link(ROOT_INO, b"lost+found", ino, Kind::Dir);
            ino
        }
    };
    for &ino in &lost {
        let kind = kinds[&ino];
        t.link(lf, format!("#{ino}").as_bytes(), ino, kind);
        if kind == Kind::Dir {
            if let Some(mut i) = store.inode(ino)? {
                i.parent = lf;
                t.put_inode(ino, &i);
            }
        }
    }
    store.commit(t)?;
    Ok(lost)
}

/// Whether `ino` is named inside a directory that is itself cut off (it comes along
/// when that directory is relinked).
fn is_under_lost_dir(
    ino: u64,
    children: &BTreeMap<u64, Vec<u64>>,
    kinds: &BTreeMap<u64, Kind>,
    reached: &BTreeSet<u64>,
) -> bool {
    children.iter().any(|(parent, kids)| {
        kids.contains(&ino) && !reached.contains(parent) && kinds.get(parent) == Some(&Kind::Dir)
    })
}

/// Files whose chunks hold fewer frame bytes than their record says they stored lost
/// chunks: each chunk of them that is missing is marked lost (reads fail, never zeros).
/// (A rebuilt record says nothing of what was stored: `rebuilt` inodes are left alone.)
fn mark_lost_chunks(store: &Store, rebuilt: &[u64]) -> Result<Vec<(u64, String, u64)>, StoreError> {
    let cs = store.chunk_size();
    let mut files = Vec::new();
    store.for_each_inode(|ino, i| {
        if let Ok(i) = i {
            if i.kind() == Kind::File && !rebuilt.contains(&ino) {
                files.push((ino, i));
            }
        }
        true
    })?;
    let mut out = Vec::new();
    for (ino, mut inode) in files {
        let chunks = store.chunks_in(ino, 0, u64::MAX)?;
        let held: u64 = chunks.iter().map(|c| c.frame_len as u64).sum();
        if held >= inode.stored {
            continue;
        }
        let present: BTreeSet<u64> = chunks.iter().map(|c| c.index).collect();
        let why =
            "lost to damage of the store it was salvaged from (llmfs fsck --salvage marked it)";
        let mut t = Txn::new();
        let mut marked = 0;
        for index in 0..inode.size.div_ceil(cs) {
            if present.contains(&index) {
                continue;
            }
            let len = (inode.size - index * cs).min(cs);
            inode.data_ver += 1;
            store.put_settled(
                &mut t,
                ino,
                index,
                inode.data_ver,
                crate::frame::lost(len, why),
            )?;
            marked += 1;
        }
        t.put_inode(ino, &inode);
        store.commit(t)?;
        let path = store.find_path(ino).unwrap_or_else(|| "?".into());
        out.push((ino, path, marked));
    }
    Ok(out)
}
