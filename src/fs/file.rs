//! File contents, the POSIX operations: open/read/write/truncate/fallocate/flush/fsync/
//! release.
//!
//! A file is a sequence of fixed-size logical chunks, each stored as one frame under
//! (ino, index); an absent chunk reads as zeros, and a chunk that becomes all zeros is
//! deleted (sparse files). Writes modify whole chunks in the node's dirty map; persisting
//! writes the dirty chunks and the inode record (size, mtime, stored bytes, content
//! version) in ONE store transaction, so a chunk and the size that goes with it are never
//! seen apart.
//!
//! The chunks under these operations (getting a chunk's plaintext, making it dirty,
//! the version checks, the cache) are [`super::chunk`]'s.
//!
//! Chunk size, 4 KiB by default (`chunk_size=` at store creation overrides it). The LLM
//! tier codes each chunk as one segment, and a cold random read decodes a whole chunk
//! at ~470 bytes/s on a CPU: ~9 s for 4 KiB, ~35 s for 16 KiB, while the LLM ratio
//! barely grows past 4 KiB (13.3x at 4 KiB, 13.8x at 16 KiB). Measured through the mount
//! with zstd (128 MiB of JSONL, 2 shared cores, 2026-11-24, on the sled store of 0.1.0;
//! the choice was not measured again on SQLite):
//!
//! | chunk | write MB/s (dd, fsync) | cold seq. read MB/s | cold random 4 KiB reads/s | zstd ratio | sled disk / chunk bytes |
//! | ---: | ---: | ---: | ---: | ---: | ---: |
//! | 4 KiB | 55 | 159 | 16,930 | 1.83x | 1.88 |
//! | 16 KiB | 68 | 338 | 7,741 | 1.98x | 1.92 |
//! | 64 KiB | 46 | 448 | 6,873 | 2.31x | 1.68 |
//!
//! Writes cost about the same at every size, random reads favour 4 KiB, and only
//! sequential reads and the zstd ratio favour big chunks, which the LLM tier replaces
//! anyway: 4 KiB.

use super::cache::ReadTally;
use super::chunk::{Preloaded, Wait};
use super::perm::{self, R, W};
use super::policy::Policy;
use super::{live, Caller, Core, FsError, FsResult, Node};
use crate::store::records::{Kind, Time};
use crate::store::Txn;
use std::sync::atomic::Ordering;

/// How many times a read decodes chunks with the model and finds them changed before it
/// gives up with EIO ([`Core::read`]): a changed chunk is fast or dirty the next time, so
/// a read takes two rounds at most unless the store contradicts itself.
const MAX_READ_ROUNDS: u32 = 64;

/// Bytes of plaintext per chunk of a new store unless `chunk_size=` says otherwise
/// (the measurements above).
pub const DEFAULT_CHUNK_SIZE: u32 = 4096;

/// Largest file size: chunk indexes and offsets stay far from overflow.
const MAX_FILE_SIZE: u64 = 1 << 50;

/// Whether a node's commit is also made durable (an fsync) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// Survives a crash of the daemon, durable with the next sync.
    Plain,
    /// Durable at once, with every commit before it.
    Durable,
}

/// How fallocate was asked to behave.
#[derive(Clone, Copy, Debug)]
pub enum Fallocate {
    /// Make sure the range is allocated (sizes grow unless `keep_size`).
    Allocate {
        /// FALLOC_FL_KEEP_SIZE: the file's size does not change.
        keep_size: bool,
    },
    /// Zero the range, freeing what it stored.
    PunchHole,
    /// Zero the range (sizes grow unless `keep_size`).
    ZeroRange {
        /// FALLOC_FL_KEEP_SIZE: the file's size does not change.
        keep_size: bool,
    },
}

/// A node as it was before an operation that changes it in memory and then commits
/// (truncate, fallocate, setattr): its record and its dirty chunks in a range of indexes,
/// for [`Core::roll_back`] when anything fails, the commit included. A failed truncate
/// or hole punch then changes nothing, unsaved writes included, and is not saved later,
/// half done, by a flush.
pub(super) struct Undo {
    inode: crate::store::records::Inode,
    meta_dirty: bool,
    chunks: std::ops::Range<u64>,
    dirty: Vec<(u64, Vec<u8>)>,
}

impl Undo {
    /// Notes `g`'s record and its dirty chunks in `chunks` (a copy, bounded by the
    /// file's dirty limit).
    pub(super) fn of(g: &Node, chunks: std::ops::Range<u64>) -> Undo {
        let chunks = chunks.start..chunks.end.max(chunks.start);
        let dirty = g
            .dirty
            .range(chunks.clone())
            .map(|(&k, v)| (k, v.clone()))
            .collect();
        Undo {
            inode: g.inode.clone(),
            meta_dirty: g.meta_dirty,
            chunks,
            dirty,
        }
    }
}

impl Core {
    /// Opens a file; `want` is the R/W access asked for.
    pub fn open(&self, caller: &Caller, ino: u64, want: u32) -> FsResult<u64> {
        let n = self.node(ino)?;
        let mut g = live(&n)?;
        match g.inode.kind() {
            Kind::Dir if want & W != 0 => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid),
            _ => {}
        }
        perm::check(&g.inode, caller, want)?;
        g.open += 1;
        Ok(self.new_fh())
    }

    /// Persists the file's dirty data (close(2) calls flush). With `sync_llm`, also
    /// codes the file's written chunks with the model before returning (or, with
    /// [`Wait::NoModel`], persists and says [`FsError::WouldBlock`] if that is needed).
    pub fn flush(&self, ino: u64, wait: Wait) -> FsResult<()> {
        self.save(ino, wait, false).map(|_| ())
    }

    /// Persists the file's dirty data and makes everything durable before returning: the
    /// data's own commit is the durable one when there is data to save (one transaction
    /// and one fsync per fsync(2)), else a sync point.
    pub fn fsync(&self, ino: u64, wait: Wait) -> FsResult<()> {
        if !self.save(ino, wait, true)? {
            self.store.sync()?;
        }
        Ok(())
    }

    /// [`Core::flush`], its commit durable when `durable` and there is something to
    /// save; returns whether everything committed so far is durable now.
    fn save(&self, ino: u64, wait: Wait, durable: bool) -> FsResult<bool> {
        let mut synced = {
            let n = self.node(ino)?;
            let mut g = live(&n)?;
            if durable && (!g.dirty.is_empty() || g.meta_dirty) {
                self.persist_with(ino, &mut g, Txn::new(), Commit::Durable)?;
                true
            } else {
                self.persist(ino, &mut g)?;
                false
            }
        };
        if self.cfg.sync_llm && self.tier.get().is_some() && self.has_pending(ino)? {
            if wait == Wait::NoModel {
                return Err(FsError::WouldBlock);
            }
            self.compact_file_now(ino)?;
            synced = false;
        }
        Ok(synced)
    }

    /// The last close of a handle; an unlinked file's data goes with its last handle.
    pub fn release(&self, ino: u64) -> FsResult<()> {
        let n = self.node(ino)?;
        let mut g = live(&n)?;
        g.open = g.open.saturating_sub(1);
        if g.open == 0 && g.inode.nlink == 0 {
            // No `ns` here: it is taken before node locks, never after (no lock cycle
            // with unlink), and a file without names is touched by no namespace change.
            let mut t = Txn::new();
            let inode = g.inode.clone();
            self.delete_inode(&mut t, ino, &inode)?;
            self.store.commit(t)?;
            self.finish_delete(ino, &mut g);
            return Ok(());
        }
        self.persist(ino, &mut g)
    }

    /// Up to `size` bytes of `ino` from `offset` (fewer at the end of the file): dirty
    /// chunks from memory, cached ones from the cache, and the rest from the store in one
    /// scan under the file's lock (nothing of the file changes meanwhile), where fast
    /// chunks are decoded at once (microseconds each; on every core when a request holds
    /// 16 or more). Chunks the model must decode are
    /// decoded without the lock, on every lane at once for a large read, and kept only
    /// if still current; with [`Wait::NoModel`] they make the read
    /// [`FsError::WouldBlock`], their frames handed to the worker that takes it over.
    pub fn read(&self, ino: u64, offset: u64, size: u32, wait: Wait) -> FsResult<Vec<u8>> {
        let n = self.node(ino)?;
        let cs = self.chunk_size();
        let mut loaded = Preloaded::new();
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > MAX_READ_ROUNDS {
                // A chunk the model decoded is kept only if still the stored version; a
                // chunk rewritten meanwhile is fast or dirty the next round. A read that
                // still finds its chunks changed is an error, never a spin.
                let what = format!("the chunks changed under {MAX_READ_ROUNDS} decodes in a row");
                return Err(self.chunk_error(ino, offset / self.chunk_size(), &what));
            }
            let missing = {
                let mut tally = ReadTally::default(); // this round's; counted if it is the last
                let mut g = live(&n)?;
                let end = offset.saturating_add(u64::from(size)).min(g.inode.size);
                if offset >= end {
                    return Ok(Vec::new());
                }
                let mut out = vec![0u8; (end - offset) as usize];
                let mut fetch = Vec::new();
                for idx in offset / cs..end.div_ceil(cs) {
                    if let Some(buf) = g.dirty.get(&idx) {
                        copy_out(&mut out, offset, idx, cs, buf);
                        continue;
                    }
                    match self.settled_now(ino, idx, &mut loaded, &mut tally)? {
                        Some(Some(plain)) => copy_out(&mut out, offset, idx, cs, &plain),
                        Some(None) => {}
                        None => fetch.push(idx),
                    }
                }
                let (fetched, missing) = self.fetch_chunks(ino, &fetch, &mut out, offset)?;
                tally.misses += fetched;
                if missing.is_empty() {
                    self.touch_atime(&mut g);
                    self.cache.count(tally);
                    return Ok(out);
                }
                missing
            };
            if wait == Wait::NoModel {
                self.hand_over(ino, missing);
                return Err(FsError::WouldBlock);
            }
            let lanes = self.tier.get().map_or(1, |t| t.config().lanes);
            for k in 0..missing.len() {
                // The next ones are decoded meanwhile on the other lanes: a large read
                // of an archived file runs at the pool's speed.
                if lanes > 1 {
                    self.prefetch_frames(ino, missing[k + 1..].iter().take(lanes - 1));
                }
                let (idx, c) = &missing[k];
                let l = self.decode_stored(ino, *idx, c, wait)?;
                loaded.insert(*idx, Some(l));
            }
        }
    }

    /// relatime: atime moves when it is older than mtime/ctime or a day old; it is
    /// persisted with the next flush rather than costing a write per read.
    fn touch_atime(&self, g: &mut Node) {
        if !self.cfg.update_atime {
            return;
        }
        let now = Time::now();
        let i = &g.inode;
        if i.atime <= i.mtime || i.atime <= i.ctime || now.secs - i.atime.secs >= 86_400 {
            g.inode.atime = now;
            g.atime_dirty = true;
        }
    }

    /// Writes `data` at `offset`; `kill_suid` asks to drop setuid/setgid (a write by
    /// anyone but root).
    pub fn write(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        kill_suid: bool,
        wait: Wait,
    ) -> FsResult<u32> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let n = self.node(ino)?;
        self.with_chunks(ino, &n, wait, |g, pre| {
            if g.inode.kind() != Kind::File {
                return Err(FsError::Invalid);
            }
            // Over the memory limits, what is held goes to the store before more is
            // taken: a full device fails this write, not one already acknowledged.
            if g.dirty_bytes > self.cfg.dirty_file_limit
                || self.dirty_total.load(Ordering::Relaxed) > self.cfg.dirty_total_limit
            {
                self.persist(ino, g)?;
            }
            self.write_locked(ino, g, offset, data, pre)?;
            let now = Time::now();
            g.inode.size = g.inode.size.max(end);
            g.inode.mtime = now;
            g.inode.ctime = now;
            if kill_suid {
                clear_suid(&mut g.inode.mode);
            }
            g.meta_dirty = true;
            Ok(data.len() as u32)
        })
    }

    /// Copies `data` into the dirty chunks it covers; the partial chunks at either end
    /// are loaded first, so nothing changes when one of them is missing.
    fn write_locked(
        &self,
        ino: u64,
        g: &mut Node,
        offset: u64,
        data: &[u8],
        pre: &mut Preloaded,
    ) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let cs = self.chunk_size();
        let end = offset + data.len() as u64;
        for edge in [offset, end - 1] {
            let idx = edge / cs;
            let whole = offset <= idx * cs && end >= (idx + 1) * cs;
            if !whole {
                self.dirty_chunk(ino, g, idx, false, pre)?;
            }
        }
        // Whole chunks are framed ahead while the commit that takes them would frame them
        // on its own thread (fewer than `PARALLEL_FRAMING` dirty), not when stored raw.
        let ahead = g.policy != Some(super::policy::Policy::None)
            && g.dirty.len() < super::chunk::PARALLEL_FRAMING;
        let mut pos = 0usize;
        while pos < data.len() {
            let off = offset + pos as u64;
            let idx = off / cs;
            let within = (off % cs) as usize;
            let take = (cs as usize - within).min(data.len() - pos);
            let buf = self.dirty_chunk(ino, g, idx, within == 0 && take == cs as usize, pre)?;
            buf[within..within + take].copy_from_slice(&data[pos..pos + take]);
            if ahead && within + take == cs as usize {
                // Filled to its end: likely whole when it is committed.
                self.ahead.offer(ino, idx, buf);
            }
            self.cache.remove(ino, idx);
            pos += take;
        }
        Ok(())
    }

    /// copy_file_range(2): up to 1 MiB per call, through the read and write paths.
    pub fn copy_range(
        &self,
        from: (u64, u64),
        to: (u64, u64),
        len: u64,
        kill_suid: bool,
        wait: Wait,
    ) -> FsResult<u32> {
        let data = self.read(from.0, from.1, len.min(1 << 20) as u32, wait)?;
        if data.is_empty() {
            return Ok(0);
        }
        self.write(to.0, to.1, &data, kill_suid, wait)
    }

    /// Persists the dirty chunks and record of a node in one transaction.
    pub(super) fn persist(&self, ino: u64, g: &mut Node) -> FsResult<()> {
        if g.dirty.is_empty() && !g.meta_dirty {
            // close(2) of a file only read costs no write, or one for its atime.
            return self.persist_atime(ino, g);
        }
        self.persist_with(ino, g, Txn::new(), Commit::Plain)
    }

    /// Saves an access time that is all that changed; on a full device it stays in
    /// memory only (logged once until a save works again): reads, closes and unmount
    /// never fail for it.
    fn persist_atime(&self, ino: u64, g: &mut Node) -> FsResult<()> {
        if !g.atime_dirty {
            return Ok(());
        }
        let mut t = Txn::new();
        t.put_inode(ino, &g.inode);
        match self.store.commit(t) {
            Ok(()) => {
                if self.atime_skipped.swap(false, Ordering::Relaxed) {
                    log::info!("access times are saved again");
                }
            }
            Err(crate::store::StoreError::NoSpace) => {
                if !self.atime_skipped.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "the store's device is full: access times are kept in memory only \
                         until there is room"
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        g.atime_dirty = false;
        Ok(())
    }

    /// Persists the node in one transaction with `t`. Nothing in memory changes unless
    /// the commit succeeds, so a failed one (a full device) loses nothing.
    fn persist_with(&self, ino: u64, g: &mut Node, mut t: Txn, how: Commit) -> FsResult<()> {
        let raw = self.node_policy(ino, g)? == Policy::None;
        let mut inode = g.inode.clone();
        let written = self.frame_dirty(ino, g, &mut inode, &mut t, raw)?;
        t.put_inode(ino, &inode);
        match how {
            Commit::Plain => self.store.commit(t)?,
            Commit::Durable => self.store.commit_durable(t)?,
        }
        g.inode = inode;
        self.dirty_committed(ino, g, written);
        g.meta_dirty = false;
        g.atime_dirty = false;
        Ok(())
    }

    /// Puts `g` back as `undo` noted it. The operation only removed entries of the chunk
    /// cache and committed nothing, so what is not dirty reads from the store as before.
    pub(super) fn roll_back(&self, g: &mut Node, undo: Undo) {
        let now: Vec<u64> = g.dirty.range(undo.chunks).map(|(&k, _)| k).collect();
        for idx in now {
            if let Some(buf) = g.dirty.remove(&idx) {
                g.dirty_bytes -= buf.len();
                self.dirty_total.fetch_sub(buf.len(), Ordering::Relaxed);
            }
        }
        for (idx, buf) in undo.dirty {
            g.dirty_bytes += buf.len();
            self.dirty_total.fetch_add(buf.len(), Ordering::Relaxed);
            g.dirty.insert(idx, buf);
        }
        g.inode = undo.inode;
        g.meta_dirty = undo.meta_dirty;
    }

    /// Sets the size of a file (zeroing the cut chunk's tail, dropping stored chunks past
    /// it) and persists, as one transaction. On an error the node is changed: the caller
    /// rolls it back ([`Undo`]).
    pub(super) fn truncate_locked(
        &self,
        ino: u64,
        g: &mut Node,
        size: u64,
        pre: &mut Preloaded,
    ) -> FsResult<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let cs = self.chunk_size();
        let mut t = Txn::new();
        if size < g.inode.size {
            let keep = size.div_ceil(cs);
            // Zero the tail of the last kept chunk, so that growing again reads zeros.
            if size % cs != 0 {
                let within = (size % cs) as usize;
                let buf = self.dirty_chunk(ino, g, size / cs, false, pre)?;
                buf[within..].fill(0);
                self.cache.remove(ino, size / cs);
            }
            let dropped: Vec<u64> = g.dirty.range(keep..).map(|(k, _)| *k).collect();
            for idx in dropped {
                if let Some(buf) = g.dirty.remove(&idx) {
                    g.dirty_bytes -= buf.len();
                    self.dirty_total.fetch_sub(buf.len(), Ordering::Relaxed);
                }
            }
            for c in self.store.chunks_in(ino, keep, u64::MAX)? {
                self.cache.remove(ino, c.index);
            }
            self.store
                .drop_chunks(&mut t, ino, &mut g.inode, keep, u64::MAX)?;
        }
        g.inode.size = size;
        self.persist_with(ino, g, t, Commit::Plain)
    }

    /// fallocate(2) on `length` bytes from `offset`, as `how` says, in one commit.
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        how: Fallocate,
        wait: Wait,
    ) -> FsResult<()> {
        let end = offset.checked_add(length).ok_or(FsError::FileTooBig)?;
        if length == 0 {
            return Err(FsError::Invalid);
        }
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let n = self.node(ino)?;
        let cs = self.chunk_size();
        self.with_chunks(ino, &n, wait, |g, pre| {
            // Whatever fails, the commit included, leaves the file as it was.
            let undo = Undo::of(g, offset / cs..end.div_ceil(cs));
            let r = (|| {
                if g.inode.kind() != Kind::File {
                    return Err(FsError::NotSupported);
                }
                let keep_size = match how {
                    // Chunks are compressed and holes are not stored, so nothing can be set
                    // aside; what cannot fit even uncompressed is refused, as a filesystem
                    // that reserves would refuse it.
                    Fallocate::Allocate { keep_size } => {
                        let grow = end.saturating_sub(g.inode.size);
                        if grow > self.store.device_room() {
                            return Err(FsError::NoSpace);
                        }
                        keep_size
                    }
                    Fallocate::PunchHole => {
                        let stop = end.min(g.inode.size);
                        self.zero_range(ino, g, offset, stop, pre)?;
                        true
                    }
                    Fallocate::ZeroRange { keep_size } => {
                        let stop = end.min(g.inode.size);
                        self.zero_range(ino, g, offset, stop, pre)?;
                        keep_size
                    }
                };
                let now = Time::now();
                if !keep_size && end > g.inode.size {
                    g.inode.size = end;
                }
                g.inode.mtime = now;
                g.inode.ctime = now;
                g.meta_dirty = true;
                self.persist(ino, g)
            })();
            if r.is_err() {
                self.roll_back(g, undo);
            }
            r
        })
    }

    /// Zeros `[start, end)`: partial chunks through the write path, whole chunks by
    /// marking them empty (deleted at persist) without touching their data.
    fn zero_range(
        &self,
        ino: u64,
        g: &mut Node,
        start: u64,
        end: u64,
        pre: &mut Preloaded,
    ) -> FsResult<()> {
        if start >= end {
            return Ok(());
        }
        let cs = self.chunk_size();
        let first_whole = start.div_ceil(cs);
        let last_whole = end / cs; // exclusive
                                   // The partial chunks at either end first: nothing changes if one is missing.
        if start % cs != 0 {
            self.dirty_chunk(ino, g, start / cs, false, pre)?;
        }
        if end % cs != 0 {
            self.dirty_chunk(ino, g, end / cs, false, pre)?;
        }
        if first_whole >= last_whole {
            let zeros = vec![0u8; (end - start) as usize];
            return self.write_locked(ino, g, start, &zeros, pre);
        }
        if start < first_whole * cs {
            let zeros = vec![0u8; (first_whole * cs - start) as usize];
            self.write_locked(ino, g, start, &zeros, pre)?;
        }
        if end > last_whole * cs {
            let zeros = vec![0u8; (end - last_whole * cs) as usize];
            self.write_locked(ino, g, last_whole * cs, &zeros, pre)?;
        }
        let dirty: Vec<u64> = g
            .dirty
            .range(first_whole..last_whole)
            .map(|(k, _)| *k)
            .collect();
        let stored: Vec<u64> = self
            .store
            .chunks_in(ino, first_whole, last_whole)?
            .into_iter()
            .map(|c| c.index)
            .collect();
        for idx in dirty.into_iter().chain(stored) {
            if let Some(old) = g.dirty.insert(idx, Vec::new()) {
                g.dirty_bytes -= old.len();
                self.dirty_total.fetch_sub(old.len(), Ordering::Relaxed);
            }
            self.cache.remove(ino, idx);
        }
        Ok(())
    }
}

/// A write by a non-root user, or a chown, drops setuid, and setgid when group-exec.
pub(super) fn clear_suid(mode: &mut u32) {
    *mode &= !libc::S_ISUID;
    if *mode & libc::S_IXGRP != 0 {
        *mode &= !libc::S_ISGID;
    }
}

/// Copies the part of chunk `idx` (plaintext `chunk`, zeros past its end) that falls in
/// `out`, which holds the file from `offset`.
fn copy_out(out: &mut [u8], offset: u64, idx: u64, cs: u64, chunk: &[u8]) {
    let chunk_start = idx * cs;
    let from = offset.max(chunk_start);
    let to = (offset + out.len() as u64).min(chunk_start + cs);
    if from >= to {
        return;
    }
    let src_from = (from - chunk_start) as usize;
    let src_to = ((to - chunk_start) as usize).min(chunk.len());
    let dst = (from - offset) as usize;
    if src_from < src_to {
        out[dst..dst + (src_to - src_from)].copy_from_slice(&chunk[src_from..src_to]);
    }
    // Bytes past the chunk's stored plaintext stay zero (buffer is pre-zeroed).
}

pub(super) fn want_from_flags(flags: i32) -> u32 {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => R,
        libc::O_WRONLY => W,
        _ => R | W,
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunk::{encode_chunk, encode_chunks};
    use super::super::dir::NewNode;
    use super::super::testutil::{core, core_with, MemoryEngine};
    use super::super::CoreConfig;
    use super::*;
    use crate::frame;
    use crate::store::engine::Table;
    use crate::store::ROOT_INO;
    use std::sync::Arc;

    fn new_file(core: &Core, name: &[u8]) -> u64 {
        let what = NewNode::File {
            mode: libc::S_IFREG | 0o644,
            rdev: 0,
        };
        core.create_node(&Caller::root(), ROOT_INO, name, what, true)
            .unwrap()
            .ino
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
            .collect()
    }

    #[test]
    fn chunk_frames_match_the_shared_fast_encoder() {
        for plain in [pattern(4096, 9), b"abc ".repeat(1024), Vec::new()] {
            let framed = encode_chunk(&plain);
            assert_eq!(frame::decode(&framed, None).unwrap(), plain);
            assert_eq!(framed.len(), frame::encode_fast(&plain).len());
        }
    }

    #[test]
    fn a_large_commit_frames_its_chunks_on_every_core_in_order() {
        // Past the parallel threshold: frames in order, zeros dropped, raw when asked.
        let plains: Vec<Vec<u8>> = (0..300u32)
            .map(|i| match i % 7 {
                0 => vec![0; 4096],
                1 => pattern(4096, i),
                _ => format!("line {i} ").repeat(400).into_bytes(),
            })
            .collect();
        let items: Vec<&[u8]> = plains.iter().map(|p| &p[..]).collect();
        for raw in [false, true] {
            let frames = encode_chunks(&items, raw);
            assert_eq!(frames.len(), plains.len());
            for (i, (plain, framed)) in plains.iter().zip(&frames).enumerate() {
                match framed {
                    None => assert!(plain.iter().all(|&b| b == 0), "chunk {i}"),
                    Some(f) => {
                        assert_eq!(&frame::decode(f, None).unwrap(), plain, "chunk {i}");
                        if raw || i % 7 == 2 {
                            let want = if raw {
                                frame::Codec::Raw
                            } else {
                                frame::Codec::Zstd
                            };
                            assert_eq!(frame::codec_of(f), Some(want), "chunk {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_past_the_saved_end_are_written_without_look_ups_and_the_store_stays_whole() {
        // New files, appends, overwrites, a cut and regrowth, a sparse extension: after
        // each persist the store passes fsck (stored bytes, pending count, every chunk
        // in one place, none past the size) and the file reads back as written.
        let (_d, core) = core();
        let f = new_file(&core, b"f");
        let size = |n: u64| crate::fs::attr::SetAttr {
            size: Some(n),
            ..Default::default()
        };
        let mut want = Vec::new();
        let put = |core: &Core, off: usize, data: &[u8], want: &mut Vec<u8>| {
            core.write(f, off as u64, data, false, Wait::Model).unwrap();
            if want.len() < off + data.len() {
                want.resize(off + data.len(), 0);
            }
            want[off..off + data.len()].copy_from_slice(data);
        };
        type Step<'a> = &'a dyn Fn(&Core, &mut Vec<u8>);
        let steps: [Step; 8] = [
            &|c, w| put(c, 0, &pattern(3 * 4096, 1), w),
            &|c, w| put(c, 4096 + 10, &pattern(4 * 4096, 2), w),
            &|c, w| {
                c.setattr(&Caller::root(), f, &size(5000), Wait::Model)
                    .unwrap();
                w.truncate(5000);
            },
            &|c, w| put(c, 4000, &pattern(6 * 4096, 3), w),
            &|c, w| {
                c.setattr(&Caller::root(), f, &size(40 * 4096), Wait::Model)
                    .unwrap();
                w.resize(40 * 4096, 0);
            },
            &|c, w| put(c, 20 * 4096 + 5, &pattern(30 * 4096, 4), w),
            // Below the saved size and past the last stored chunk (51): chunks 60-69
            // are new, the store says so.
            &|c, w| {
                c.setattr(&Caller::root(), f, &size(80 * 4096), Wait::Model)
                    .unwrap();
                w.resize(80 * 4096, 0);
                put(c, 60 * 4096, &pattern(10 * 4096, 5), w);
            },
            // Over stored chunks (20-51) and holes below the last one (10-19), and new
            // ones again (70-74).
            &|c, w| put(c, 10 * 4096 + 7, &pattern(64 * 4096, 6), w),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&core, &mut want);
            core.flush(f, Wait::Model).unwrap();
            let report = core
                .store()
                .check(
                    &crate::store::fsck::CheckOptions::default(),
                    None,
                    &mut |_| {},
                )
                .unwrap();
            assert!(
                report.problems.is_empty(),
                "step {i}: {:?}",
                report.problems
            );
            for idx in 0..96 {
                core.cache.remove(f, idx);
            }
            assert_eq!(
                core.read(f, 0, 1 << 20, Wait::Model).unwrap(),
                want,
                "step {i}"
            );
        }
    }

    #[test]
    fn chunks_framed_ahead_are_used_only_while_unchanged() {
        // Whole chunks are framed ahead on the helper thread; the close uses those frames,
        // except for chunk 3, written again after it was framed: what reads back after a
        // restart over the same store is what was written last.
        let engine = MemoryEngine::new();
        let core = Core::with_engine(engine.clone(), CoreConfig::default()).unwrap();
        let f = new_file(&core, b"f");
        let mut want = format!("{:?}", (0..10_000).collect::<Vec<_>>()).into_bytes();
        want.truncate(8 * 4096 + 100);
        core.write(f, 0, &want, false, Wait::Model).unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while core.ahead.counts().0 < 8 && super::super::chunk::cores() > 1 {
            assert!(std::time::Instant::now() < end, "{:?}", core.ahead.counts());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        want[3 * 4096 + 7] = b'#';
        core.write(f, 3 * 4096 + 7, b"#", false, Wait::Model)
            .unwrap();
        core.flush(f, Wait::Model).unwrap();
        if super::super::chunk::cores() > 1 {
            assert_eq!(core.ahead.counts(), (8, 7), "made 8, used all but chunk 3");
        }
        core.shutdown().unwrap();
        drop(core);
        let core = Core::with_engine(engine, CoreConfig::default()).unwrap();
        assert_eq!(core.read(f, 0, 100_000, Wait::Model).unwrap(), want);
    }

    #[test]
    fn unaligned_writes_read_back_before_and_after_persist() {
        let (_d, core) = core();
        let f = new_file(&core, b"f");
        let data = pattern(3 * 4096 + 100, 1);
        core.write(f, 1000, &data, false, Wait::Model).unwrap();
        let mut want = vec![0u8; 1000];
        want.extend_from_slice(&data);
        assert_eq!(core.read(f, 0, 100_000, Wait::Model).unwrap(), want);
        core.flush(f, Wait::Model).unwrap();
        assert_eq!(core.read(f, 0, 100_000, Wait::Model).unwrap(), want);
        assert_eq!(
            core.read(f, 4000, 200, Wait::Model).unwrap(),
            want[4000..4200]
        );
        assert!(core.read(f, 1 << 20, 10, Wait::Model).unwrap().is_empty());
    }

    #[test]
    fn survives_reopen_and_holes_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let data = pattern(10_000, 2);
        let f;
        {
            let core = Core::load(&path, CoreConfig::default()).unwrap();
            f = new_file(&core, b"f");
            core.write(f, 5 << 32, &data, false, Wait::Model).unwrap();
            core.fsync(f, Wait::Model).unwrap();
            let e = core.getattr(f).unwrap();
            assert_eq!(e.inode.size, (5 << 32) + 10_000);
            assert!(
                e.inode.stored < 12_000,
                "only the written chunks are stored"
            );
        }
        let core = Core::load(&path, CoreConfig::default()).unwrap();
        assert_eq!(core.read(f, 5 << 32, 20_000, Wait::Model).unwrap(), data);
        assert_eq!(core.read(f, 1 << 32, 8, Wait::Model).unwrap(), vec![0; 8]);
    }

    #[test]
    fn truncate_shrinks_then_grows_with_zeros() {
        let (_d, core) = core();
        let f = new_file(&core, b"f");
        let data = pattern(20_000, 3);
        core.write(f, 0, &data, false, Wait::Model).unwrap();
        core.flush(f, Wait::Model).unwrap();
        for size in [5000, 9000] {
            let set = super::super::attr::SetAttr {
                size: Some(size),
                ..Default::default()
            };
            core.setattr(&Caller::root(), f, &set, Wait::Model).unwrap();
        }
        let got = core.read(f, 0, 20_000, Wait::Model).unwrap();
        assert_eq!(got.len(), 9000);
        assert_eq!(got[..5000], data[..5000]);
        assert!(got[5000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn punch_hole_frees_chunks() {
        let (_d, core) = core();
        let f = new_file(&core, b"f");
        core.write(f, 0, &pattern(40_000, 4), false, Wait::Model)
            .unwrap();
        core.flush(f, Wait::Model).unwrap();
        let before = core.getattr(f).unwrap().inode.stored;
        core.fallocate(f, 100, 30_000, Fallocate::PunchHole, Wait::Model)
            .unwrap();
        let got = core.read(f, 0, 40_000, Wait::Model).unwrap();
        assert_eq!(got.len(), 40_000);
        assert!(got[100..30_100].iter().all(|&b| b == 0));
        assert_eq!(got[30_100..], pattern(40_000, 4)[30_100..]);
        assert!(core.getattr(f).unwrap().inode.stored < before / 2);
    }

    #[test]
    fn unlinked_open_file_lives_until_release_and_orphans_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let core = Core::load(&path, CoreConfig::default()).unwrap();
        let f = new_file(&core, b"f");
        core.write(f, 0, b"still here", false, Wait::Model).unwrap();
        core.unlink(&Caller::root(), ROOT_INO, b"f").unwrap();
        assert_eq!(core.read(f, 0, 100, Wait::Model).unwrap(), b"still here");
        core.fsync(f, Wait::Model).unwrap();
        // A crash now leaves an orphan, which the next mount deletes.
        drop(core);
        let core = Core::load(&path, CoreConfig::default()).unwrap();
        assert!(core.getattr(f).is_err());
        core.reap_orphans().unwrap();
        assert!(core.store.chunks_in(f, 0, u64::MAX).unwrap().is_empty());
        assert!(core.store.orphans().unwrap().is_empty());

        let g = new_file(&core, b"g");
        core.unlink(&Caller::root(), ROOT_INO, b"g").unwrap();
        core.release(g).unwrap();
        assert!(core.getattr(g).is_err());
    }

    #[test]
    fn big_files_are_unlinked_at_once_and_reaped_in_the_background() {
        let (_d, core) = core();
        let f = new_file(&core, b"big");
        for i in 0..8u64 {
            core.write(f, i << 20, &pattern(4096, i as u32), false, Wait::Model)
                .unwrap();
        }
        core.write(f, 8 << 20, b"end", false, Wait::Model).unwrap();
        core.release(f).unwrap();
        core.unlink(&Caller::root(), ROOT_INO, b"big").unwrap();
        assert!(core.getattr(f).is_err(), "the name and inode go at once");
        assert_eq!(core.store.orphans().unwrap(), vec![f]);
        core.reap_orphans().unwrap();
        assert!(core.store.orphans().unwrap().is_empty());
        assert!(core.store.chunks_in(f, 0, u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn corrupted_chunk_is_eio_for_that_file_only() {
        let engine = MemoryEngine::new();
        let core = Core::with_engine(engine.clone(), CoreConfig::default()).unwrap();
        let a = new_file(&core, b"a");
        let b = new_file(&core, b"b");
        core.write(a, 0, &pattern(9000, 5), false, Wait::Model)
            .unwrap();
        core.write(b, 0, &pattern(9000, 6), false, Wait::Model)
            .unwrap();
        core.fsync(a, Wait::Model).unwrap();
        core.fsync(b, Wait::Model).unwrap();
        let key = crate::store::keys::chunk(a, 1);
        let mut record = engine.raw_get(Table::Chunk, &key).unwrap();
        let last = record.len() - 1;
        record[last] ^= 0x55;
        engine.raw_put(Table::Chunk, &key, &record);
        core.cache.remove(a, 1);
        assert!(
            core.read(a, 0, 100, Wait::Model).is_ok(),
            "chunk 0 is intact"
        );
        assert!(matches!(
            core.read(a, 5000, 100, Wait::Model),
            Err(FsError::Io(_))
        ));
        assert_eq!(
            core.read(b, 0, 9000, Wait::Model).unwrap(),
            pattern(9000, 6)
        );
    }

    #[test]
    fn a_busy_file_does_not_block_other_files() {
        let (_d, core) = core();
        let core = Arc::new(core);
        let a = new_file(&core, b"a");
        let b = new_file(&core, b"b");
        core.write(b, 0, b"hello", false, Wait::Model).unwrap();
        let node_a = core.node(a).unwrap();
        let busy = node_a.lock(); // as if a slow chunk of `a` were being coded
        let (tx, rx) = std::sync::mpsc::channel();
        let c = core.clone();
        std::thread::spawn(move || {
            let r = c.read(b, 0, 5, Wait::Model).unwrap();
            c.flush(b, Wait::Model).unwrap();
            let what = NewNode::File {
                mode: libc::S_IFREG | 0o644,
                rdev: 0,
            };
            c.create_node(&Caller::root(), ROOT_INO, b"c", what, false)
                .unwrap();
            c.unlink(&Caller::root(), ROOT_INO, b"c").unwrap();
            tx.send(r).unwrap();
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(busy);
        assert_eq!(got.expect("operations on b waited for a"), b"hello");
    }

    #[test]
    fn dirty_memory_stays_bounded_without_close() {
        let cfg = CoreConfig {
            dirty_file_limit: 64 << 10,
            dirty_total_limit: 128 << 10,
            ..CoreConfig::default()
        };
        let (_d, core) = core_with(cfg);
        let f = new_file(&core, b"log");
        let rec = b"{\"role\":\"assistant\",\"content\":\"hello\"}\n";
        for i in 0..20_000u64 {
            core.write(f, i * rec.len() as u64, rec, false, Wait::Model)
                .unwrap();
            assert!(core.dirty_total.load(Ordering::Relaxed) <= (64 << 10) + 8192);
        }
        core.flush(f, Wait::Model).unwrap();
        let got = core.read(f, 0, u32::MAX, Wait::Model).unwrap();
        assert_eq!(got.len(), 20_000 * rec.len());
        assert!(got.chunks(rec.len()).all(|c| c == rec));
    }
}
