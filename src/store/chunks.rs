//! Chunks: where a chunk's frame lives (the hot `chunk` table until the compactor
//! settles it into an extent of its file), the compactor's queue (`pending`), and the
//! removal of a file's data in bounded steps.

use super::engine::{Engine, Table};
use super::extent::{Extent, ExtentChunk};
use super::records::{HotChunk, Inode, Pending, Time};
use super::{keys, ChunkInfo, PendingChunk, Store, StoreError, StoredChunk, Txn};
use crate::frame::Frame;
use crate::store::{During, StoreOp};
use std::sync::atomic::Ordering;

/// What a writer knows of a file's chunks in the store, for [`Store::write_chunk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// Anything: each chunk written is looked up (hot, in an extent, pending) to be
    /// replaced and its bytes freed.
    Any,
    /// None at this index: no chunk of the file was ever written (its `data_ver` is 0;
    /// inode numbers are never reused), or the index is past the file's end as the
    /// store holds it (a truncate drops the chunks past its cut in the same commit), so
    /// there is nothing to look up. A new file's close and a sequential writer's commits
    /// write their chunks without three look-ups each (one a range scan).
    NoneYet,
}

impl Store {
    /// Chunk `index` of `ino`: its version and frame, wherever it lives.
    pub fn chunk(&self, ino: u64, index: u64) -> Result<Option<StoredChunk>, StoreError> {
        self.chunk_in(None, ino, index)
    }

    pub(super) fn chunk_in(
        &self,
        txn: Option<&Txn>,
        ino: u64,
        index: u64,
    ) -> Result<Option<StoredChunk>, StoreError> {
        if let Some(v) = self.get(txn, Table::Chunk, &keys::chunk(ino, index))? {
            let h = HotChunk::decode(&v)?;
            return Ok(Some(StoredChunk {
                ver: h.ver,
                frame: h.frame.into(),
                hot: true,
            }));
        }
        if let Some((_, v)) = self.extent_floor(txn, ino, index)? {
            if let Some((ver, frame)) = Extent::lookup(&v, index)? {
                return Ok(Some(StoredChunk {
                    ver,
                    frame: frame.to_vec().into(),
                    hot: false,
                }));
            }
        }
        Ok(None)
    }

    /// The content version of chunk `index` of `ino`, `None` for a hole: what a reader
    /// compares before it caches what it decoded.
    pub fn chunk_ver(&self, ino: u64, index: u64) -> Result<Option<u64>, StoreError> {
        if let Some(v) = self
            .engine
            .get(Table::Chunk, &keys::chunk(ino, index))
            .during(StoreOp::Read)?
        {
            return Ok(Some(HotChunk::decode_ver(&v)?));
        }
        match self.extent_floor(None, ino, index)? {
            Some((_, v)) => Ok(Extent::lookup(&v, index)?.map(|(ver, _)| ver)),
            None => Ok(None),
        }
    }

    /// One past the greatest chunk index of `ino` in the store, wherever the chunk lives
    /// (hot, settled in an extent, or pending): no chunk of the file exists at or past it,
    /// so a writer may write those with [`Chunks::NoneYet`]. Three reads of the last
    /// record of each table. Tighter than the file's saved size, which a `fallocate` or
    /// a truncate upward raise with no chunk behind them (fio allocates its file first:
    /// every chunk of its writes after the first commit was looked up three times).
    pub fn chunk_end(&self, ino: u64) -> Result<u64, StoreError> {
        let (low, high) = (keys::chunk(ino, 0), keys::chunk(ino, u64::MAX));
        let past = |key: &[u8]| -> Result<u64, StoreError> {
            keys::chunk_of(key)
                .map(|(_, index)| index.saturating_add(1))
                .ok_or_else(|| StoreError::Corrupt(format!("chunk key of inode {ino} malformed")))
        };
        let mut end = 0;
        for table in [Table::Chunk, Table::Pending] {
            if let Some((key, _)) = self.floor(None, table, &low, &high)? {
                end = end.max(past(&key)?);
            }
        }
        if let Some((_, v)) = self.extent_floor(None, ino, u64::MAX)? {
            if let Some(&(last, _, _)) = Extent::summary(&v)?.last() {
                end = end.max(last.saturating_add(1));
            }
        }
        Ok(end)
    }

    /// The extent of `ino` with the greatest first index <= `index`.
    pub(super) fn extent_floor(
        &self,
        txn: Option<&Txn>,
        ino: u64,
        index: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let found = self.floor(
            txn,
            Table::Extent,
            &keys::chunk(ino, 0),
            &keys::chunk(ino, index),
        )?;
        Ok(found.and_then(|(k, v)| keys::chunk_of(&k).map(|(_, first)| (first, v))))
    }

    /// Extents of `ino` that may hold chunks in `[from, to)`: (first index, extent).
    pub(super) fn extents_overlapping(
        &self,
        txn: Option<&Txn>,
        ino: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Extent)>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        // The extent starting before `from` that may reach into the range (one starting
        // at `from` is the scan's: it is not read twice).
        if let Some((first, v)) = from
            .checked_sub(1)
            .map_or(Ok(None), |below| self.extent_floor(txn, ino, below))?
        {
            let e = Extent::decode(&v)?;
            if e.last().is_some_and(|l| l >= from) {
                out.push((first, e));
            }
        }
        self.scan_indexed(
            txn,
            Table::Extent,
            ino,
            from..to,
            Extent::decode,
            &mut |first, e| out.push((first, e)),
        )?;
        Ok(out)
    }

    /// Visits the records of `table` keyed (`ino`, index) with the index in `range`,
    /// through `txn`, in index order, each value decoded by `decode`; a malformed key or
    /// value stops the scan and is the error.
    fn scan_indexed<T>(
        &self,
        txn: Option<&Txn>,
        table: Table,
        ino: u64,
        range: std::ops::Range<u64>,
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
        visit: &mut dyn FnMut(u64, T),
    ) -> Result<(), StoreError> {
        let mut bad = None;
        self.scan(
            txn,
            table,
            &keys::chunk(ino, range.start),
            Some(&keys::chunk(ino, range.end)),
            &mut |k, v| {
                match (keys::chunk_of(k), decode(v)) {
                    (Some((_, index)), Ok(x)) => visit(index, x),
                    (_, Err(e)) => bad = Some(e),
                    (None, _) => {
                        bad = Some(StoreError::Corrupt(format!(
                            "{} key malformed",
                            table.name()
                        )))
                    }
                }
                bad.is_none()
            },
        )?;
        bad.map_or(Ok(()), Err)
    }

    // ---- a file's chunks, with its record ----
    //
    // The file-level operations: each changes chunks of file `ino` and, in the same
    // call, the record `file` that goes with them (its content version and stored
    // bytes). The caller puts `file` into the same transaction; nothing else in the
    // crate does arithmetic on `stored` or `data_ver`.

    /// Adds to `txn` the new content `frame` of chunk `index` of `ino`: a hot chunk
    /// waiting for the compactor since `written`, under the file's next content version
    /// (`file.data_ver` moves to it), with `file.stored` moved by the bytes it adds and
    /// those of the frame it replaces, which is looked up unless `of` says the store holds
    /// no chunk at `index`. Returns the chunk's version.
    #[allow(clippy::too_many_arguments)]
    pub fn write_chunk(
        &self,
        txn: &mut Txn,
        ino: u64,
        file: &mut Inode,
        index: u64,
        frame: &Frame,
        written: Time,
        of: Chunks,
    ) -> Result<u64, StoreError> {
        let ver = file.data_ver + 1;
        let freed = match of {
            Chunks::Any => self.put_chunk(txn, ino, index, ver, frame, written)?,
            Chunks::NoneYet => {
                self.put_new_chunk(txn, ino, index, ver, frame, written);
                0
            }
        };
        file.data_ver = ver;
        file.shift_stored(frame.len() as u64, freed);
        Ok(ver)
    }

    /// Adds to `txn` the removal of every chunk of `ino` in `[from, to)`, hot or settled,
    /// with `file.stored` moved by the bytes freed.
    pub fn drop_chunks(
        &self,
        txn: &mut Txn,
        ino: u64,
        file: &mut Inode,
        from: u64,
        to: u64,
    ) -> Result<(), StoreError> {
        let freed = self.remove_chunks(txn, ino, from, to)?;
        file.shift_stored(0, freed);
        Ok(())
    }

    /// Adds to `txn` the settling of hot chunk `index` of `ino` (which the caller checked
    /// is still at version `ver`) with `frame`, into an extent, with `file.stored` moved
    /// by the difference. Returns (bytes added, bytes freed), for a copy of the record
    /// held elsewhere (the filesystem's in-memory one) to follow with
    /// `Inode::shift_stored`.
    pub fn settle_file_chunk(
        &self,
        txn: &mut Txn,
        ino: u64,
        file: &mut Inode,
        index: u64,
        ver: u64,
        frame: Frame,
    ) -> Result<(u64, u64), StoreError> {
        let added = frame.len() as u64;
        let freed = self.settle_chunk(txn, ino, index, ver, frame.into_vec())?;
        file.shift_stored(added, freed);
        Ok((added, freed))
    }

    // ---- the parts ----

    /// Every stored chunk of `ino` with `from <= index < to`, in index order.
    pub fn chunks_in(&self, ino: u64, from: u64, to: u64) -> Result<Vec<ChunkInfo>, StoreError> {
        self.chunks_in_txn(None, ino, from, to)
    }

    pub(super) fn chunks_in_txn(
        &self,
        txn: Option<&Txn>,
        ino: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<ChunkInfo>, StoreError> {
        let mut out = Vec::new();
        self.visit_chunks_in(txn, ino, from, to, &mut |index, ver, frame, hot| {
            out.push(ChunkInfo {
                index,
                ver,
                frame_len: frame.len(),
                hot,
                codec: crate::frame::codec_of(frame),
            })
        })?;
        out.sort_by_key(|c| c.index);
        Ok(out)
    }

    /// Every stored chunk of `ino` with `from <= index < to`, with its frame, in index
    /// order: one scan of each table for a whole range (a read of many chunks costs two
    /// queries, not two per chunk).
    pub fn frames_in(
        &self,
        ino: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, StoredChunk)>, StoreError> {
        let mut out = Vec::new();
        self.visit_chunks_in(None, ino, from, to, &mut |index, ver, frame, hot| {
            let frame = frame.to_vec().into();
            out.push((index, StoredChunk { ver, frame, hot }))
        })?;
        out.sort_by_key(|(index, _)| *index);
        Ok(out)
    }

    /// Calls `visit(index, version, frame, hot)` for every stored chunk of `ino` in
    /// `[from, to)` as `txn` would leave them: the hot ones in index order, then the
    /// settled ones in index order, each index once.
    ///
    /// A chunk is stored in one place, but a store whose commit was not atomic can hold
    /// an index twice (fsck reports a duplicate). The entry visited is then the one
    /// [`Store::chunk_ver`] names, the hot one, else the one in the extent with the
    /// greatest first index at or below it: a read checks the version it decoded against
    /// `chunk_ver`, and an entry `chunk_ver` does not name sent it round forever (found by
    /// the torn-write fault test once fast chunks stopped being cached by reads).
    fn visit_chunks_in(
        &self,
        txn: Option<&Txn>,
        ino: u64,
        from: u64,
        to: u64,
        visit: &mut ChunkVisitor,
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        // In index order, as the scan visits them (no allocation when there are none).
        let mut hot = Vec::new();
        self.scan_indexed(
            txn,
            Table::Chunk,
            ino,
            from..to,
            HotChunk::decode,
            &mut |index, h| {
                hot.push(index);
                visit(index, h.ver, &h.frame, true)
            },
        )?;
        let extents = self.extents_overlapping(txn, ino, from, to)?;
        for (k, (_, e)) in extents.iter().enumerate() {
            // Extents come in order of their first index: the next one starting at or
            // below a chunk's index shadows this extent's entry for it.
            let next_first = extents.get(k + 1).map(|(first, _)| *first);
            for c in e.chunks().iter().filter(|c| {
                (from..to).contains(&c.index)
                    && hot.binary_search(&c.index).is_err()
                    && next_first.is_none_or(|n| n > c.index)
            }) {
                visit(c.index, c.ver, &c.frame, false);
            }
        }
        Ok(())
    }

    /// Adds to `txn` the removal of every chunk of `ino` in `[from, to)`, hot or settled;
    /// returns the frame bytes freed.
    pub(super) fn remove_chunks(
        &self,
        txn: &mut Txn,
        ino: u64,
        from: u64,
        to: u64,
    ) -> Result<u64, StoreError> {
        let mut freed = 0u64;
        for c in self
            .chunks_in_txn(Some(txn), ino, from, to)?
            .into_iter()
            .filter(|c| c.hot)
        {
            txn.delete(Table::Chunk, keys::chunk(ino, c.index));
            if self
                .get(Some(txn), Table::Pending, &keys::chunk(ino, c.index))?
                .is_some()
            {
                txn.pending_delta -= 1;
            }
            txn.delete(Table::Pending, keys::chunk(ino, c.index));
            freed += c.frame_len as u64;
        }
        for (first, mut e) in self.extents_overlapping(Some(txn), ino, from, to)? {
            freed += e.remove_range(from, to);
            self.put_extent(txn, ino, first, &e);
        }
        Ok(freed)
    }

    /// Writes `extent`, which was stored under `old_first`, under its (possibly new)
    /// first index; an empty extent is deleted.
    pub(super) fn put_extent(&self, txn: &mut Txn, ino: u64, old_first: u64, e: &Extent) {
        match e.first() {
            None => txn.delete(Table::Extent, keys::chunk(ino, old_first)),
            Some(first) => {
                if first != old_first {
                    txn.delete(Table::Extent, keys::chunk(ino, old_first));
                }
                txn.put(Table::Extent, keys::chunk(ino, first), e.encode());
            }
        }
    }

    /// Adds to `txn` chunk `index` of `ino` as a hot chunk of version `ver`, waiting for
    /// the compactor since `written`; returns the frame bytes of what it replaces. The
    /// chunk alone: the file's record is left as it is, so this is for tests and tools
    /// that plant a frame under a version they choose (damage, in the mount tests); the
    /// filesystem writes through [`Store::write_chunk`].
    pub fn put_chunk(
        &self,
        txn: &mut Txn,
        ino: u64,
        index: u64,
        ver: u64,
        frame: &[u8],
        written: Time,
    ) -> Result<u64, StoreError> {
        let key = keys::chunk(ino, index);
        // A chunk lives in one place: a hot one is just replaced, a settled one leaves
        // its extent (appends, the common case, find no extent spanning them).
        let freed = match self.get(Some(txn), Table::Chunk, &key)? {
            Some(old) => HotChunk::decode(&old)?.frame.len() as u64,
            None => match self.extent_floor(Some(txn), ino, index)? {
                Some((first, v)) if Extent::lookup(&v, index)?.is_some() => {
                    let mut e = Extent::decode(&v)?;
                    let freed = e.remove_range(index, index + 1);
                    self.put_extent(txn, ino, first, &e);
                    freed
                }
                _ => 0,
            },
        };
        let new = self.get(Some(txn), Table::Pending, &key)?.is_none();
        self.put_hot(txn, key, ver, frame, written, new);
        Ok(freed)
    }

    /// [`Store::put_chunk`] of a chunk that is nowhere yet: not hot, in no extent, not
    /// pending (its file has no chunk in the store).
    fn put_new_chunk(
        &self,
        txn: &mut Txn,
        ino: u64,
        index: u64,
        ver: u64,
        frame: &[u8],
        written: Time,
    ) {
        self.put_hot(txn, keys::chunk(ino, index), ver, frame, written, true);
    }

    /// Puts hot chunk `key` and its pending record; `new` when no pending record of it
    /// existed (the count of pending chunks grows).
    fn put_hot(
        &self,
        txn: &mut Txn,
        key: Vec<u8>,
        ver: u64,
        frame: &[u8],
        written: Time,
        new: bool,
    ) {
        if new {
            txn.pending_delta += 1;
        }
        txn.put(Table::Chunk, key.clone(), HotChunk::encode(ver, frame));
        let pending = Pending {
            ver,
            written: written.secs,
        };
        txn.put(Table::Pending, key, pending.encode());
    }

    /// Chunks waiting for the compactor, from (ino, index) on, at most `limit`.
    pub fn pending(&self, from: (u64, u64), limit: usize) -> Result<Vec<PendingChunk>, StoreError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.engine
            .scan(
                Table::Pending,
                &keys::chunk(from.0, from.1),
                None,
                &mut |k, v| {
                    match (keys::chunk_of(k), Pending::decode(v)) {
                        (Some((ino, index)), Ok(p)) => out.push(PendingChunk {
                            ino,
                            index,
                            ver: p.ver,
                            written: p.written,
                        }),
                        (_, Err(e)) => bad = Some(e),
                        (None, _) => {
                            bad = Some(StoreError::Corrupt("pending key malformed".into()))
                        }
                    }
                    bad.is_none() && out.len() < limit
                },
            )
            .during(StoreOp::Read)?;
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Number of chunks waiting for the compactor (a counter: no scan).
    pub fn count_pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed).max(0) as u64
    }

    /// Counts the pending records again (at open, and when the compactor has seen the
    /// whole table: the counter then cannot drift for long).
    pub fn recount_pending(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        self.engine
            .scan_checked(Table::Pending, &[], None, &mut |_, _| {
                n += 1;
                true
            })
            .during(StoreOp::Read)?;
        self.pending.store(n as i64, Ordering::Relaxed);
        Ok(n)
    }

    /// Adds to `txn` the settling of hot chunk `index` of `ino` (which the caller checked
    /// is still at version `ver`) with `frame`: it leaves the hot and pending tables and
    /// joins an extent. Returns the frame bytes of the hot chunk it replaces.
    pub(super) fn settle_chunk(
        &self,
        txn: &mut Txn,
        ino: u64,
        index: u64,
        ver: u64,
        frame: Vec<u8>,
    ) -> Result<u64, StoreError> {
        let key = keys::chunk(ino, index);
        let old = match self.get(Some(txn), Table::Chunk, &key)? {
            Some(v) => HotChunk::decode(&v)?.frame.len() as u64,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "settling chunk {index} of inode {ino}, which is not hot"
                )))
            }
        };
        txn.delete(Table::Chunk, key.clone());
        if self.get(Some(txn), Table::Pending, &key)?.is_some() {
            txn.pending_delta -= 1;
        }
        txn.delete(Table::Pending, key);
        self.place_settled(txn, ino, ExtentChunk { index, ver, frame })?;
        Ok(old)
    }

    /// Adds to `txn` a settled chunk where no chunk is (a salvage marking a lost one).
    pub(crate) fn put_settled(
        &self,
        txn: &mut Txn,
        ino: u64,
        index: u64,
        ver: u64,
        frame: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.place_settled(txn, ino, ExtentChunk { index, ver, frame })
    }

    /// Puts `chunk` into the extent that spans its index, or onto the end of the one
    /// before it if it has room, or onto the front of the next one if that has room,
    /// else into a new one.
    pub(super) fn place_settled(
        &self,
        txn: &mut Txn,
        ino: u64,
        chunk: ExtentChunk,
    ) -> Result<(), StoreError> {
        let index = chunk.index;
        let target = self.engine.extent_target();
        let grow = Extent::growth(chunk.frame.len());
        if let Some((first, v)) = self.extent_floor(Some(txn), ino, index)? {
            let mut e = Extent::decode(&v)?;
            let spans = e.last().is_some_and(|l| l > index);
            if spans || e.encoded_len() + grow <= target {
                e.insert(chunk);
                self.put_split(txn, ino, first, e, target);
                return Ok(());
            }
        }
        let mut after = None;
        self.scan(
            Some(txn),
            Table::Extent,
            &keys::chunk(ino, index),
            keys::prefix_end(&keys::ino(ino)).as_deref(),
            &mut |k, v| {
                after = keys::chunk_of(k).map(|(_, f)| (f, v.to_vec()));
                false
            },
        )?;
        if let Some((first, v)) = after {
            let mut e = Extent::decode(&v)?;
            if e.encoded_len() + grow <= target {
                e.insert(chunk);
                self.put_extent(txn, ino, first, &e);
                return Ok(());
            }
        }
        let mut e = Extent::default();
        e.insert(chunk);
        txn.put(Table::Extent, keys::chunk(ino, index), e.encode());
        Ok(())
    }

    /// Writes `e` (stored under `first`), split in two if it outgrew `target`.
    pub(super) fn put_split(
        &self,
        txn: &mut Txn,
        ino: u64,
        first: u64,
        mut e: Extent,
        target: usize,
    ) {
        if e.encoded_len() > target && e.len() > 1 {
            let mid = e.chunks()[e.len() / 2].index;
            let tail = e.split_off(mid);
            self.put_extent(txn, ino, first, &e);
            self.put_extent(txn, ino, mid, &tail);
        } else {
            self.put_extent(txn, ino, first, &e);
        }
    }

    /// Adds to `txn` the removal of up to `max` records of `ino`'s data (chunks, extents,
    /// pending records, xattrs); returns how many. A file's data goes in bounded steps,
    /// so deleting a big file never makes one huge commit.
    pub fn delete_file_data(
        &self,
        txn: &mut Txn,
        ino: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let from = keys::ino(ino);
        let to = keys::prefix_end(&from);
        let mut n = 0;
        for table in [Table::Chunk, Table::Pending, Table::Extent, Table::Xattr] {
            let mut doomed = Vec::new();
            self.scan(Some(txn), table, &from, to.as_deref(), &mut |k, _| {
                doomed.push(k.to_vec());
                n + doomed.len() < max
            })?;
            n += doomed.len();
            if table == Table::Pending {
                txn.pending_delta -= doomed.len() as i64;
            }
            for k in doomed {
                txn.delete(table, k);
            }
            if n >= max {
                break;
            }
        }
        Ok(n)
    }
}

/// What [`Store::visit_chunks_in`] calls per chunk: (index, version, frame, hot).
type ChunkVisitor<'a> = dyn FnMut(u64, u64, &[u8], bool) + 'a;
