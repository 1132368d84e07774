//! The data pass: each inode's chunks, extents, pending records and xattrs, and the
//! data of inodes that do not exist.
//!
//! Per-inode tables are keyed by inode first, so for each inode number that exists (or
//! is an orphan) one range scan per table reads the keys from just after the previous
//! one up to the end of its own: its own records, plus those of any inode number in
//! between, which exists nowhere else (unreferenced). Memory stays bounded by the
//! largest file's chunk count, and every record is read once.

use super::{
    list_indexes, CheckPhase, CheckProgress, Checker, Problem, ProblemKind as K, Record, Repair,
    RESTORE,
};
use crate::frame::{self, Codec, FrameHeader};
use crate::store::engine::Table;
use crate::store::extent::Extent;
use crate::store::keys;
use crate::store::records::{HotChunk, Kind, Pending};
use crate::store::StoreError;
use crate::store::{During, StoreOp};
use std::collections::{BTreeMap, HashMap};

/// A frame, summarised: its length and its parsed header.
#[derive(Clone, Debug)]
struct FrameInfo {
    len: u64,
    header: Result<FrameHeader, String>,
}

impl FrameInfo {
    fn of(frame: &[u8]) -> FrameInfo {
        FrameInfo {
            len: frame.len() as u64,
            header: frame::parse_header(frame).map_err(|e| e.to_string()),
        }
    }
}

/// One stored chunk: (index, version, frame).
type ChunkRow = (u64, u64, FrameInfo);

/// The records of one inode, without their frames.
#[derive(Default)]
struct FileData {
    /// Hot chunks by index: version and frame, or why the record does not decode.
    hot: BTreeMap<u64, Result<(u64, FrameInfo), String>>,
    pending: BTreeMap<u64, Result<Pending, String>>,
    /// Extents by the first index in their key: their chunks, or why they do not decode.
    extents: Vec<(u64, Result<Vec<ChunkRow>, String>)>,
    xattrs: u64,
    /// Why each damaged xattr record fails.
    damaged_xattrs: Vec<String>,
}

impl FileData {
    fn is_empty(&self) -> bool {
        self.hot.is_empty()
            && self.pending.is_empty()
            && self.extents.is_empty()
            && self.xattrs == 0
    }
}

/// Records of an inode number that exists nowhere else.
#[derive(Clone, Copy, Default)]
struct Leftover {
    chunks: u64,
    extents: u64,
    pending: u64,
    xattrs: u64,
}

impl Leftover {
    /// "2 hot chunks and 1 xattr": what there is, nothing of what there is not.
    fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.chunks, "hot chunk"),
            (self.extents, "extent"),
            (self.pending, "pending record"),
            (self.xattrs, "xattr"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        .collect();
        match parts.split_last() {
            None => "nothing".into(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// Where a chunk was found.
#[derive(Clone, Copy, Debug)]
enum Place {
    Hot(u64),
    /// (extent key, version)
    Settled(u64, u64),
}

/// What one file's chunks showed, for the checks after them.
#[derive(Default)]
struct Tally {
    frame_bytes: u64,
    max_ver: u64,
    past_eof: Vec<u64>,
    /// A record of the file does not decode: its stored bytes cannot be told, and data
    /// repairs (which decode the file's extents) stay off.
    damaged: bool,
    /// Extents overlap or sit under the wrong key: a range removal could miss chunks.
    tangled: bool,
}

impl Checker<'_> {
    pub(super) fn check_data(
        &mut self,
        progress: &mut dyn FnMut(CheckProgress),
    ) -> Result<(), StoreError> {
        let mut known: Vec<u64> = self.nodes.keys().copied().collect();
        known.extend(self.orphans.iter().copied());
        known.sort_unstable();
        known.dedup();
        let total = known.len() as u64;
        let mut from = Vec::new();
        for (i, &ino) in known.iter().enumerate() {
            let to = keys::prefix_end(&keys::ino(ino));
            let (own, others) = self.load(ino, &from, to.as_deref())?;
            self.unreferenced(others);
            self.check_inode_data(ino, own);
            progress(CheckProgress {
                phase: CheckPhase::Data,
                done: i as u64 + 1,
                total,
            });
            match to {
                Some(t) => from = t,
                None => return Ok(()),
            }
        }
        let (_, others) = self.load(u64::MAX, &from, None)?;
        self.unreferenced(others);
        Ok(())
    }

    /// The records of `ino` in `[from, to)` of each per-inode table, and counts of the
    /// records of other inode numbers there.
    fn load(
        &mut self,
        ino: u64,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<(FileData, BTreeMap<u64, Leftover>), StoreError> {
        let mut own = FileData::default();
        let mut others: BTreeMap<u64, Leftover> = BTreeMap::new();
        let mut malformed = Vec::new();
        for table in [Table::Chunk, Table::Pending, Table::Extent, Table::Xattr] {
            self.store
                .engine
                .scan_checked(table, from, to, &mut |k, v| {
                    let shaped = match table {
                        Table::Xattr => k.len() > 8,
                        _ => k.len() == 16,
                    };
                    let owner = keys::u64_at(k, 0).filter(|_| shaped);
                    let Some(owner) = owner else {
                        malformed.push((table, k.len()));
                        return true;
                    };
                    let index = keys::u64_at(k, 8).unwrap_or(0);
                    if owner != ino {
                        let o = others.entry(owner).or_default();
                        match table {
                            Table::Chunk => o.chunks += 1,
                            Table::Pending => o.pending += 1,
                            Table::Extent => o.extents += 1,
                            _ => o.xattrs += 1,
                        }
                        return true;
                    }
                    match table {
                        Table::Chunk => {
                            let rec = v.and_then(|v| {
                                HotChunk::decode(v)
                                    .map(|h| (h.ver, FrameInfo::of(&h.frame)))
                                    .map_err(|e| e.to_string())
                            });
                            own.hot.insert(index, rec);
                        }
                        Table::Pending => {
                            let rec = v.and_then(|v| Pending::decode(v).map_err(|e| e.to_string()));
                            own.pending.insert(index, rec);
                        }
                        Table::Extent => {
                            let chunks = v.and_then(|v| {
                                Extent::decode(v)
                                    .map(|e| {
                                        e.chunks()
                                            .iter()
                                            .map(|c| (c.index, c.ver, FrameInfo::of(&c.frame)))
                                            .collect()
                                    })
                                    .map_err(|e| e.to_string())
                            });
                            own.extents.push((index, chunks));
                        }
                        _ => {
                            own.xattrs += 1;
                            if let Err(why) = v {
                                own.damaged_xattrs.push(why);
                            }
                        }
                    }
                    true
                })
                .during(StoreOp::Read)?;
        }
        for (table, len) in malformed {
            let want = if table == Table::Xattr {
                "more than 8"
            } else {
                "16"
            };
            self.malformed_key(table, len, want);
        }
        Ok((own, others))
    }

    fn unreferenced(&mut self, others: BTreeMap<u64, Leftover>) {
        for (ino, left) in others {
            self.max_ino = self.max_ino.max(ino);
            self.count_leftover(&left);
            self.add(
                Problem::error(
                    K::Unreferenced,
                    Some(ino),
                    format!(
                        "does not exist and is not being deleted, yet {} of it remain \
                         (nothing references them)",
                        left.describe()
                    ),
                )
                .repair(Repair::DeleteData { ino }),
            );
        }
    }

    fn count_leftover(&mut self, left: &Leftover) {
        self.counts.hot_chunks += left.chunks;
        self.counts.extents += left.extents;
        self.counts.pending += left.pending;
        self.counts.xattrs += left.xattrs;
    }

    fn check_inode_data(&mut self, ino: u64, d: FileData) {
        if !self.nodes.contains_key(&ino) {
            // An orphan whose inode is gone: a deleted file the reaper is removing.
            let left = Leftover {
                chunks: d.hot.len() as u64,
                extents: d.extents.len() as u64,
                pending: d.pending.len() as u64,
                xattrs: d.xattrs,
            };
            self.count_leftover(&left);
            let msg = if d.is_empty() {
                "was deleted; its orphan mark is cleared by the next mount".to_string()
            } else {
                format!(
                    "was deleted; {} of it are left for the background reaper of a mounted \
                     filesystem",
                    left.describe()
                )
            };
            self.add(Problem::info(K::Orphan, Some(ino), msg));
            return;
        }
        let rec = self.rec(ino);
        self.counts.xattrs += d.xattrs;
        for why in &d.damaged_xattrs {
            self.add(Problem::error(
                K::Checksum,
                Some(ino),
                format!("{why}: reading it fails with an I/O error; {RESTORE}"),
            ));
        }
        self.counts.pending += d.pending.len() as u64;
        let mut t = Tally::default();
        let mut places: HashMap<u64, Place> = HashMap::new();
        let mut dups = Vec::new();
        for (&index, hot) in &d.hot {
            self.counts.hot_chunks += 1;
            match hot {
                Ok((ver, f)) => {
                    self.check_frame(ino, rec, index, *ver, f, &mut t);
                    places.insert(index, Place::Hot(*ver));
                }
                Err(e) => {
                    t.damaged = true;
                    self.add(
                        Problem::error(
                            K::Chunk,
                            Some(ino),
                            format!(
                                "the hot chunk's record does not decode ({e}): {} read as an \
                                 I/O error; {RESTORE}",
                                self.bytes_of(index)
                            ),
                        )
                        .at_chunk(index),
                    );
                }
            }
        }
        let mut reach: Option<(u64, u64)> = None; // (key, last index) of the extents so far
        for (key, chunks) in &d.extents {
            self.counts.extents += 1;
            let chunks = match chunks {
                Ok(c) => c,
                Err(e) => {
                    t.damaged = true;
                    self.add(
                        Problem::error(
                            K::Extent,
                            Some(ino),
                            format!(
                                "the extent of chunks from {key} on does not decode ({e}): the \
                                 chunks it held read as errors or zeros; {RESTORE}"
                            ),
                        )
                        .at_chunk(*key),
                    );
                    continue;
                }
            };
            self.counts.settled_chunks += chunks.len() as u64;
            self.check_extent_shape(ino, *key, chunks, &mut reach, &mut t);
            for (index, ver, f) in chunks {
                self.check_frame(ino, rec, *index, *ver, f, &mut t);
                if let Some(old) = places.insert(*index, Place::Settled(*key, *ver)) {
                    dups.push((*index, old, *key, *ver));
                }
            }
        }
        self.check_duplicates(ino, &dups, &t);
        self.check_pending(ino, &d);
        if let Some(r) = rec {
            self.check_file_fields(ino, r, &places, &t);
        }
    }

    /// The bytes a chunk covers, for messages.
    pub(super) fn bytes_of(&self, index: u64) -> String {
        let start = index.saturating_mul(self.cs);
        format!(
            "bytes {start}..{} of the file",
            start.saturating_add(self.cs)
        )
    }

    /// The header of one frame against its chunk and file.
    fn check_frame(
        &mut self,
        ino: u64,
        rec: Option<Record>,
        index: u64,
        ver: u64,
        f: &FrameInfo,
        t: &mut Tally,
    ) {
        let cs = self.cs;
        t.frame_bytes += f.len;
        t.max_ver = t.max_ver.max(ver);
        self.counts.frame_bytes += f.len;
        let start = index.saturating_mul(cs);
        let file = rec.filter(|r| r.kind == Kind::File);
        if file.is_some_and(|r| start >= r.size) {
            t.past_eof.push(index);
        }
        let h = match &f.header {
            Ok(h) => h,
            Err(e) => {
                self.add(
                    Problem::error(
                        K::Frame,
                        Some(ino),
                        format!(
                            "the frame's header does not parse ({e}): {} read as an I/O \
                             error; {RESTORE}",
                            self.bytes_of(index)
                        ),
                    )
                    .at_chunk(index),
                );
                return;
            }
        };
        self.counts.plain_bytes += h.plain_len;
        if h.codec == Codec::Llm {
            self.counts.llm_frames += 1;
        }
        if h.codec == Codec::Lost {
            self.add(
                Problem::error(
                    K::Lost,
                    Some(ino),
                    format!(
                        "{} were lost to damage before a salvage, which marked them: they \
                         read as an I/O error (never as zeros); restore the file from a backup",
                        self.bytes_of(index)
                    ),
                )
                .at_chunk(index),
            );
        }
        // What the chunk may hold: all of it, or up to the end of the file. Shorter is
        // fine (a file grown past a partial chunk reads zeros after it).
        let room = match file {
            Some(r) if start < r.size => (r.size - start).min(cs),
            _ => cs,
        };
        if h.plain_len > room {
            let why = if h.plain_len > cs {
                format!("a chunk holds {cs}: it reads as an I/O error")
            } else {
                format!(
                    "the file ends {room} bytes into the chunk: the bytes past the end would \
                     show if the file grew"
                )
            };
            self.add(
                Problem::error(
                    K::Frame,
                    Some(ino),
                    format!(
                        "the frame holds {} bytes, but {why}; copy the file and replace it \
                         with the copy",
                        h.plain_len
                    ),
                )
                .at_chunk(index),
            );
        }
        if rec.is_some() && h.plain_len <= cs {
            self.verify_total += h.plain_len;
        }
    }

    /// An extent's key, order and overlap with the extents before it.
    fn check_extent_shape(
        &mut self,
        ino: u64,
        key: u64,
        chunks: &[ChunkRow],
        reach: &mut Option<(u64, u64)>,
        t: &mut Tally,
    ) {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return;
        };
        let (first, last) = (first.0, last.0);
        if first != key {
            t.tangled = true;
            self.add(
                Problem::error(
                    K::Extent,
                    Some(ino),
                    format!(
                        "the extent stored under chunk {key} starts at chunk {first}: reads \
                         look for its chunks elsewhere and find zeros; copy the file and \
                         check the copy; report it"
                    ),
                )
                .at_chunk(key),
            );
        }
        if chunks.windows(2).any(|w| w[0].0 >= w[1].0) {
            t.tangled = true;
            self.add(
                Problem::error(
                    K::Extent,
                    Some(ino),
                    "the extent's chunk indexes do not strictly increase; report it",
                )
                .at_chunk(key),
            );
        }
        if let Some((prev_key, prev_last)) = *reach {
            if prev_last >= first {
                t.tangled = true;
                self.add(
                    Problem::error(
                        K::Extent,
                        Some(ino),
                        format!(
                            "the extent of chunks {prev_key}..={prev_last} overlaps the one of \
                             chunks {first}..={last}: reads of chunks from {first} on look \
                             only in the second; copy the file and check the copy; report it"
                        ),
                    )
                    .at_chunk(first),
                );
            }
        }
        let far = reach.map_or(last, |(_, l)| l.max(last));
        *reach = Some((key, far));
    }

    fn check_duplicates(&mut self, ino: u64, dups: &[(u64, Place, u64, u64)], t: &Tally) {
        for &(index, old, key, ver) in dups {
            let (msg, repair) = match old {
                Place::Hot(hot) if hot > ver && !t.damaged && !t.tangled => (
                    format!(
                        "the chunk is both hot (version {hot}) and settled in the extent at \
                         chunk {key} (older version {ver}): reads return the hot one, and the \
                         settled copy is dead weight"
                    ),
                    Some(Repair::DropSettledCopy { ino, index }),
                ),
                Place::Hot(hot) => (
                    format!(
                        "the chunk is both hot (version {hot}) and settled in the extent at \
                         chunk {key} (version {ver}): reads return the hot one, which may be \
                         the older; copy the file, check the copy, and report it"
                    ),
                    None,
                ),
                Place::Settled(other, v) => (
                    format!(
                        "the chunk is settled in two extents (at chunks {other} and {key}, \
                         versions {v} and {ver}): reads return the one at {}; copy the file, \
                         check the copy, and report it",
                        other.max(key)
                    ),
                    None,
                ),
            };
            let mut p = Problem::error(K::Duplicate, Some(ino), msg).at_chunk(index);
            p.repair = repair;
            self.add(p);
        }
    }

    /// The pending records are exactly the hot chunks, at their versions.
    fn check_pending(&mut self, ino: u64, d: &FileData) {
        let mut missing = Vec::new();
        let mut stale = Vec::new();
        let mut extra = Vec::new();
        for (&index, hot) in &d.hot {
            let Ok((ver, _)) = hot else {
                continue; // what version it should say is unknown
            };
            match d.pending.get(&index) {
                None => missing.push(index),
                Some(Ok(p)) if p.ver == *ver => {}
                Some(_) => stale.push(index),
            }
        }
        for &index in d.pending.keys() {
            if !d.hot.contains_key(&index) {
                extra.push(index);
            }
        }
        let found = [
            (
                missing,
                "hot chunks without a pending record, which the compactor never codes",
            ),
            (
                stale,
                "pending records that do not match their hot chunk's version (or do not \
                 decode), which the compactor skips forever",
            ),
            (
                extra,
                "pending records of chunks that are not hot, which the compactor skips \
                 forever",
            ),
        ];
        for (indexes, what) in found {
            if let Some(&first) = indexes.first() {
                self.add(
                    Problem::error(
                        K::Pending,
                        Some(ino),
                        format!(
                            "{what}: {} (chunks {})",
                            indexes.len(),
                            list_indexes(&indexes)
                        ),
                    )
                    .at_chunk(first)
                    .repair(Repair::SyncPending { ino }),
                );
            }
        }
    }

    /// What the inode record says of its data: its end, versions and stored bytes.
    fn check_file_fields(&mut self, ino: u64, r: Record, places: &HashMap<u64, Place>, t: &Tally) {
        let fixable = !t.damaged && !t.tangled;
        if r.kind != Kind::File && !places.is_empty() {
            let mut indexes: Vec<u64> = places.keys().copied().collect();
            indexes.sort_unstable();
            let mut p = Problem::error(
                K::Chunk,
                Some(ino),
                format!(
                    "is a {:?}, not a file, but holds {} chunks (chunks {}): nothing reads them",
                    r.kind,
                    indexes.len(),
                    list_indexes(&indexes)
                ),
            )
            .at_chunk(indexes[0]);
            if fixable {
                p.repair = Some(Repair::DeleteChunksFrom { ino, from: 0 });
            }
            self.add(p);
        }
        if !t.past_eof.is_empty() {
            let mut indexes = t.past_eof.clone();
            indexes.sort_unstable();
            indexes.dedup();
            let mut p = Problem::error(
                K::PastEof,
                Some(ino),
                format!(
                    "{} chunks lie at or past the end of the file ({} bytes; chunks {}): \
                     unread now, they would show if the file grew",
                    indexes.len(),
                    r.size,
                    list_indexes(&indexes)
                ),
            )
            .at_chunk(indexes[0]);
            if fixable {
                p.repair = Some(Repair::DeleteChunksFrom {
                    ino,
                    from: r.size.div_ceil(self.cs),
                });
            }
            self.add(p);
        }
        if t.max_ver > r.data_ver {
            self.add(
                Problem::error(
                    K::DataVersion,
                    Some(ino),
                    format!(
                        "chunk versions go up to {}, above the inode's data_ver {}: the next \
                         write could reuse a version, and a reader take a stale cached chunk \
                         for current",
                        t.max_ver, r.data_ver
                    ),
                )
                .repair(Repair::RaiseDataVer {
                    ino,
                    data_ver: t.max_ver,
                }),
            );
        }
        if !t.damaged && t.frame_bytes != r.stored {
            let mut p = Problem::error(
                K::Stored,
                Some(ino),
                format!(
                    "the inode says {} bytes are stored, its frames add up to {}: du and \
                     st_blocks report the wrong size",
                    r.stored, t.frame_bytes
                ),
            );
            // Recomputing reads the frames as reads do, which tangled extents defeat.
            if !t.tangled {
                p.repair = Some(Repair::RecomputeStored { ino });
            }
            self.add(p);
        }
    }

    /// `next_ino` above every inode number any table holds (a lower one would be handed
    /// out again, and the new inode would inherit what is left of the old one).
    pub(super) fn check_next_ino(&mut self) {
        let Some(next) = self.next_ino else {
            return;
        };
        if next <= self.max_ino {
            self.add(
                Problem::error(
                    K::NextIno,
                    None,
                    format!(
                        "next_ino is {next}, but inode number {} is in use: new files would \
                         get numbers already taken",
                        self.max_ino
                    ),
                )
                .repair(Repair::RaiseNextIno(self.max_ino + 1)),
            );
        }
    }
}
