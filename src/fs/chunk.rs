//! A chunk's life in the filesystem: the one place that gets a chunk's plaintext
//! (the cache, the version check that decides whether a decode is still current, the
//! model's queue and read-ahead), makes it dirty for an edit, turns dirty chunks into
//! frames for a commit, and swaps a compacted frame in if the chunk is still the one
//! that was compacted. The POSIX operations over whole files are in [`super::file`];
//! the compactor that chooses what to compact is in [`super::compact`].
//!
//! Versions: every chunk write takes the file's next content version in the commit
//! that stores it, so (inode, index, version) names one plaintext for good. A decode
//! done without the file's lock is kept (and cached) only if the store still holds that
//! version; a compacted frame replaces the hot one only if it still does.
//!
//! Decoding never holds a file's lock when it may need the language model: reads decode
//! without the lock and keep a result only if the chunk's content version is unchanged
//! (per chunk: a writer elsewhere in the file costs nothing); edits that need a chunk
//! the model must decode drop the lock, have it decoded ([`FsError::NeedChunk`]), and
//! start again. A caller that must not wait for the model at all (a FUSE request
//! thread) passes [`Wait::NoModel`] and gets [`FsError::WouldBlock`], and hands the
//! request to a worker.

use super::cache::{Cached, ReadTally};
use super::{live, Core, FsError, FsResult, Node, NodeRef};
use crate::frame::{self, Codec, Frame, Plain};
use crate::store::records::{Inode, Time};
use crate::store::{StoredChunk, Txn};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a call may wait for the language model to decode a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// It may (a worker thread): seconds per model-coded chunk on a CPU.
    Model,
    /// It may, for user `uid`: the model's queue is fair between users, so one user's
    /// flood of cold reads delays another's by about one decode per lane.
    ModelFor(u32),
    /// It must not (a FUSE request thread): [`FsError::WouldBlock`] instead.
    NoModel,
}

impl Wait {
    /// Who the model works for.
    fn requester(self) -> u32 {
        match self {
            Wait::ModelFor(uid) => uid,
            _ => crate::tier::SYSTEM,
        }
    }
}

/// A chunk as decoded from the store.
#[derive(Clone, Debug)]
pub(super) struct LoadedChunk {
    pub ver: u64,
    pub plain: Arc<Plain>,
    /// The model decoded it (the cache keeps such chunks longer).
    pub costly: bool,
}

/// A chunk as loaded from the store, or `None` for a hole.
pub(super) type Loaded = Option<LoadedChunk>;

/// Chunks decoded without the file's lock, for an operation to use once it holds the
/// lock again, if they are still current.
pub(super) type Preloaded = HashMap<u64, Loaded>;

impl Core {
    /// The current plaintext of a chunk that is not dirty, if it is at hand under the
    /// file's lock: cached, or decoded meanwhile and still the stored version (then it is
    /// cached). `Some(None)`: a hole. `None`: it must be loaded. Counts a hit or a load in
    /// `tally`.
    pub(super) fn settled_now(
        &self,
        ino: u64,
        idx: u64,
        loaded: &mut Preloaded,
        tally: &mut ReadTally,
    ) -> FsResult<Option<Option<Arc<Plain>>>> {
        if let Some(c) = self.cache.get(ino, idx) {
            tally.hits += 1;
            return Ok(Some(Some(c.plain)));
        }
        let Some(l) = loaded.remove(&idx) else {
            return Ok(None);
        };
        tally.misses += 1;
        let now = self.store.chunk_ver(ino, idx)?;
        match l {
            Some(l) if now == Some(l.ver) => {
                let entry = Cached {
                    ver: l.ver,
                    plain: l.plain.clone(),
                };
                self.cache.put(ino, idx, entry, l.costly);
                Ok(Some(Some(l.plain)))
            }
            None if now.is_none() => Ok(Some(None)),
            _ => Ok(None),
        }
    }

    /// Reads ahead for a reader that just read up to chunk `idx` of `ino`: the next
    /// LLM-coded chunks that are not cached, up to one per lane, are queued as
    /// prefetches, which free lanes decode and the pool keeps for the reader. So `cat`
    /// of an archived file decodes on every lane at once. (The pool never calls back into
    /// the filesystem: no lane takes a file lock or reads the store.)
    pub fn prefetch(&self, ino: u64, idx: u64) {
        let Some(tier) = self.tier.get() else {
            return;
        };
        // Only after a chunk the model decoded: a reader of the fast tier costs no look
        // into the store for chunks that need no model.
        if idx == 0 || !self.cache.is_costly(ino, idx - 1) {
            return;
        }
        let window = tier.config().lanes as u64;
        let Ok(size) = self.getattr(ino).map(|e| e.inode.size) else {
            return;
        };
        let cs = self.chunk_size();
        self.prefetch_chunks(ino, idx..(idx + window).min(size.div_ceil(cs)));
    }

    /// Queues the LLM-coded ones among `indexes` of `ino` that are not cached as
    /// prefetches.
    pub(super) fn prefetch_chunks(&self, ino: u64, indexes: impl Iterator<Item = u64>) {
        let Some(tier) = self.tier.get() else {
            return;
        };
        let wanted: Vec<u64> = indexes
            .filter(|&i| self.cache.get(ino, i).is_none())
            .collect();
        let (Some(&lo), Some(&hi)) = (wanted.iter().min(), wanted.iter().max()) else {
            return;
        };
        // One scan for the window (a read-ahead's chunks are neighbours).
        let Ok(frames) = self.store.frames_in(ino, lo, hi + 1) else {
            return;
        };
        for (idx, c) in frames {
            if !wanted.contains(&idx) || !frame::needs_model(&c.frame) {
                continue;
            }
            let key = (ino, idx, c.ver);
            if !tier.has(&key) {
                tier.prefetch(key, c.frame.into_vec());
            }
        }
    }

    /// Chunks `indexes` (ascending, not dirty, not cached) of `ino` from the store in one
    /// scan, for a caller holding the file's lock and building `out`, the file's bytes from
    /// `offset`: fast ones are decoded into `out` at once (not cached; on every core when
    /// there are many), model ones come back as frames (those a FUSE thread handed over
    /// are not fetched again). Holes are left as they are in `out`. Returns how many
    /// chunks were fetched, and the model's.
    pub(super) fn fetch_chunks(
        &self,
        ino: u64,
        indexes: &[u64],
        out: &mut [u8],
        offset: u64,
    ) -> FsResult<(u64, Vec<(u64, StoredChunk)>)> {
        let mut model = Vec::new();
        // Frames a FUSE thread fetched for the worker that now asks.
        let indexes: Vec<u64> = indexes
            .iter()
            .copied()
            .filter(|&idx| match self.handoff.take(ino, idx) {
                Some(c) => {
                    model.push((idx, c));
                    false
                }
                None => true,
            })
            .collect();
        let (Some(&lo), Some(&hi)) = (indexes.first(), indexes.last()) else {
            return Ok((model.len() as u64, model));
        };
        let mut wanted = indexes.iter().copied().peekable();
        let mut fast = Vec::new();
        for (idx, c) in self.store.frames_in(ino, lo, hi + 1)? {
            // The range may hold chunks the caller has at hand already.
            while wanted.next_if(|&w| w < idx).is_some() {}
            if wanted.next_if_eq(&idx).is_none() {
                continue;
            }
            if frame::needs_model(&c.frame) {
                model.push((idx, c));
            } else {
                fast.push((idx, c));
            }
        }
        let fetched = (model.len() + fast.len()) as u64;
        // Each fast chunk's part of `out` (ascending and disjoint: cut off in turn).
        let cs = self.chunk_size();
        let end = offset + out.len() as u64;
        let mut rest = &mut out[..];
        let mut at = offset;
        let mut jobs = Vec::with_capacity(fast.len());
        for (idx, c) in &fast {
            let (from, to) = ((idx * cs).clamp(at, end), ((idx + 1) * cs).clamp(at, end));
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((from - at) as usize);
            let (mine, tail) = tail.split_at_mut((to - from) as usize);
            rest = tail;
            at = to;
            // Each job's own part, behind a lock no other job takes (it only makes the
            // part shareable with the thread that decodes it).
            jobs.push((*idx, c, from - idx * cs, Mutex::new(mine)));
        }
        // Not cached: decoding it again costs microseconds, the kernel keeps what was
        // read in its page cache (FOPEN_KEEP_CACHE), and a cold read of a large file
        // would push the chunks appends are editing out of the cache. Caching each chunk
        // here (a lock per chunk on every FUSE thread) cost a cold read about a sixth of
        // its speed.
        let decoded = parallel_map(
            &jobs,
            PARALLEL_DECODING,
            "llmfs-decoding",
            |(idx, c, skip, dst)| {
                self.decode_fast_into(ino, *idx, c, *skip as usize, &mut dst.lock())
            },
        );
        decoded.into_iter().collect::<FsResult<()>>()?;
        Ok((fetched, model))
    }

    /// Decodes fast chunk `idx` into `dst`, its bytes from `skip` on (as many as `dst`
    /// holds; zeros past the chunk's end are left as `dst` has them): in place when the
    /// whole chunk falls in `dst`, through a buffer otherwise.
    fn decode_fast_into(
        &self,
        ino: u64,
        idx: u64,
        c: &StoredChunk,
        skip: usize,
        dst: &mut [u8],
    ) -> FsResult<()> {
        let whole = frame::parse_header(&c.frame)
            .ok()
            .and_then(|h| usize::try_from(h.plain_len).ok())
            .filter(|&len| skip == 0 && len <= dst.len());
        match whole {
            Some(len) => frame::decode_fast_into(&c.frame, &mut dst[..len])
                .map_err(|e| self.chunk_error(ino, idx, &e)),
            None => {
                let plain = self.decode_chunk(ino, idx, c.ver, &c.frame, Wait::NoModel)?;
                let part = plain.get(skip..).unwrap_or_default();
                let n = part.len().min(dst.len());
                dst[..n].copy_from_slice(&part[..n]);
                Ok(())
            }
        }
    }

    /// Decodes a chunk fetched from the store (with the model if it needs it), without
    /// any lock.
    pub(super) fn decode_stored(
        &self,
        ino: u64,
        idx: u64,
        c: &StoredChunk,
        wait: Wait,
    ) -> FsResult<LoadedChunk> {
        let plain = self.decode_chunk(ino, idx, c.ver, &c.frame, wait)?;
        Ok(LoadedChunk {
            ver: c.ver,
            plain: Arc::new(plain),
            costly: frame::needs_model(&c.frame),
        })
    }

    /// Hands the frames of chunks that need the model to the worker that takes the
    /// request over ([`Handoff`]).
    pub(super) fn hand_over(&self, ino: u64, chunks: Vec<(u64, StoredChunk)>) {
        for (idx, c) in chunks {
            self.handoff.put(ino, idx, c);
        }
    }

    /// Queues `chunks` (LLM frames at hand) as prefetches, unless queued already.
    pub(super) fn prefetch_frames<'a>(
        &self,
        ino: u64,
        chunks: impl Iterator<Item = &'a (u64, StoredChunk)>,
    ) {
        let Some(tier) = self.tier.get() else {
            return;
        };
        for (idx, c) in chunks {
            let key = (ino, *idx, c.ver);
            if !tier.has(&key) {
                tier.prefetch(key, c.frame.to_vec());
            }
        }
    }

    /// Loads chunk `idx` from the store and decodes it, without any lock.
    ///
    /// A worker that takes over a request a FUSE thread could not finish without the
    /// model gets the frame that thread fetched ([`Handoff`]), and an attempt without the
    /// model on a chunk held for such a worker fetches nothing: a cold read, or an edit
    /// of a cold chunk, fetches its frame once.
    pub(super) fn load_chunk(&self, ino: u64, idx: u64, wait: Wait) -> FsResult<Loaded> {
        let handed = match wait {
            // Known to need the model, and held for the worker: nothing to fetch.
            Wait::NoModel if self.handoff.holds(ino, idx) => return Err(FsError::WouldBlock),
            Wait::NoModel => None,
            _ => self.handoff.take(ino, idx),
        };
        let c = match handed {
            Some(c) => c,
            None => match self.store.chunk(ino, idx)? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let costly = frame::needs_model(&c.frame);
        let plain = match self.decode_chunk(ino, idx, c.ver, &c.frame, wait) {
            Err(FsError::WouldBlock) => {
                self.handoff.put(ino, idx, c);
                return Err(FsError::WouldBlock);
            }
            r => r?,
        };
        Ok(Some(LoadedChunk {
            ver: c.ver,
            plain: Arc::new(plain),
            costly,
        }))
    }

    /// Decodes one stored frame; corruption is EIO with one log line naming the file.
    pub(super) fn decode_chunk(
        &self,
        ino: u64,
        idx: u64,
        ver: u64,
        framed: &[u8],
        wait: Wait,
    ) -> FsResult<Plain> {
        let cs = self.chunk_size();
        let result = frame::parse_header(framed).and_then(|h| {
            if h.plain_len > cs {
                // Bounded before anything is allocated or decoded.
                return Err(frame::FrameError::Corrupt(format!(
                    "frame claims {} bytes, chunks hold {cs}",
                    h.plain_len
                )));
            }
            Ok(h)
        });
        let decoded = match result {
            Ok(h) if h.codec == Codec::Llm => {
                if wait == Wait::NoModel {
                    return Err(FsError::WouldBlock);
                }
                self.decode_llm(ino, idx, ver, framed, wait.requester())
            }
            Ok(_) => frame::decode(framed, None),
            Err(e) => Err(e),
        };
        decoded.map_err(|e| self.chunk_error(ino, idx, &e))
    }

    /// Logs an unreadable chunk once, naming the file, and turns it into EIO.
    pub(super) fn chunk_error(&self, ino: u64, idx: u64, e: &dyn std::fmt::Display) -> FsError {
        // The path costs a scan of the names: once per file and cause is enough (a
        // `nomodel` mount reading an archive would otherwise log, and scan, per chunk).
        let what = e.to_string();
        let first = {
            let mut logged = self.logged_errors.lock();
            if logged.len() > 4096 {
                logged.clear();
            }
            logged.insert((ino, cause_of(&what)))
        };
        if first {
            let path = self.store.find_path(ino).unwrap_or_else(|| "?".into());
            log::error!(
                "cannot read chunk {idx} of inode {ino} ({path}): {what} (said once per file; \
                 every such read fails with EIO)"
            );
        }
        FsError::Io(format!("chunk {idx} of inode {ino}: {what}"))
    }

    /// The plaintext of chunk `idx` (not dirty) under the file's lock, for an edit: cached,
    /// preloaded (if still current), or decoded now if that needs no model. Otherwise
    /// [`FsError::NeedChunk`]: the caller drops the lock and preloads it.
    pub(super) fn chunk_for_edit(
        &self,
        ino: u64,
        idx: u64,
        pre: &mut Preloaded,
    ) -> FsResult<Option<Arc<Plain>>> {
        if let Some(now) = self.settled_now(ino, idx, pre, &mut ReadTally::default())? {
            return Ok(now);
        }
        match self.load_chunk(ino, idx, Wait::NoModel) {
            Ok(l) => Ok(l.map(|l| l.plain)),
            Err(FsError::WouldBlock) => Err(FsError::NeedChunk(idx)),
            Err(e) => Err(e),
        }
    }

    /// Runs `op` under the file's lock; when it needs a chunk the model must decode, the
    /// lock is dropped while it is decoded (or [`FsError::WouldBlock`] with
    /// [`Wait::NoModel`]) and `op` runs again. `op` asks for its chunks before it changes
    /// anything, so running it again is safe.
    pub(super) fn with_chunks<T>(
        &self,
        ino: u64,
        n: &NodeRef,
        wait: Wait,
        mut op: impl FnMut(&mut Node, &mut Preloaded) -> FsResult<T>,
    ) -> FsResult<T> {
        let mut pre = Preloaded::new();
        loop {
            let need = {
                let mut g = live(n)?;
                match op(&mut g, &mut pre) {
                    Err(FsError::NeedChunk(idx)) => idx,
                    r => return r,
                }
            };
            if wait == Wait::NoModel {
                return Err(FsError::WouldBlock);
            }
            let l = self.load_chunk(ino, need, wait)?;
            pre.insert(need, l);
        }
    }

    /// Makes chunk `idx` dirty (loading its current contents unless `whole`, where the
    /// caller overwrites all of it) and returns its buffer.
    pub(super) fn dirty_chunk<'a>(
        &self,
        ino: u64,
        g: &'a mut Node,
        idx: u64,
        whole: bool,
        pre: &mut Preloaded,
    ) -> FsResult<&'a mut Vec<u8>> {
        let cs = self.chunk_size() as usize;
        if !g.dirty.contains_key(&idx) {
            let mut buf = vec![0u8; cs];
            if !whole && idx * (cs as u64) < g.inode.size {
                if let Some(p) = self.chunk_for_edit(ino, idx, pre)? {
                    let n = p.len().min(cs);
                    buf[..n].copy_from_slice(&p[..n]);
                }
            }
            g.dirty.insert(idx, buf);
            g.dirty_bytes += cs;
            self.dirty_total.fetch_add(cs, Ordering::Relaxed);
        }
        let buf = g
            .dirty
            .get_mut(&idx)
            .ok_or_else(|| FsError::Io("dirty chunk vanished".into()))?;
        if buf.len() < cs {
            // An empty buffer stands for zeros (punched); make it real.
            let added = cs - buf.len();
            buf.resize(cs, 0);
            g.dirty_bytes += added;
            self.dirty_total.fetch_add(added, Ordering::Relaxed);
        }
        g.dirty
            .get_mut(&idx)
            .ok_or_else(|| FsError::Io("dirty chunk vanished".into()))
    }

    /// Swaps hot chunk `index` of `ino` for `frame` (into an extent) if the store still
    /// holds it hot at version `ver`, the one `frame` was made from: under the file's lock, in one
    /// commit with the file's stored bytes and what `with` adds. The in-memory record,
    /// which may carry unsaved changes, moves by the same bytes; a cached plaintext of
    /// that version is kept with the costly chunks when `frame` needs the model. Returns
    /// false (and drops `frame`) when the chunk changed meanwhile or the file is gone.
    pub(super) fn swap_if_current(
        &self,
        ino: u64,
        index: u64,
        ver: u64,
        frame: Frame,
        with: impl FnOnce(&mut Txn) -> FsResult<()>,
    ) -> FsResult<bool> {
        let n = match self.node(ino) {
            Ok(n) => n,
            Err(FsError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut g = n.lock();
        if g.deleted {
            return Ok(false);
        }
        match self.store.chunk(ino, index)? {
            Some(c) if c.hot && c.ver == ver => {}
            _ => return Ok(false),
        }
        let costly = frame::needs_model(&frame);
        let mut t = Txn::new();
        with(&mut t)?;
        let mut record = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        let (added, freed) =
            self.store
                .settle_file_chunk(&mut t, ino, &mut record, index, ver, frame)?;
        t.put_inode(ino, &record);
        self.store.commit(t)?;
        g.inode.shift_stored(added, freed);
        if costly {
            // Getting it again now costs the model: keep it with the costly chunks.
            if let Some(c) = self.cache.get(ino, index).filter(|c| c.ver == ver) {
                self.cache.put(ino, index, Cached { ..c }, true);
            }
        }
        Ok(true)
    }

    /// Adds `g`'s dirty chunks to `t` as frames (stored raw when `raw`, the policy
    /// `none`; else the fast tier's), with `file`, the record to commit with them, moved
    /// along by the store; a chunk that is all zeros is dropped (sparse files). Changes
    /// nothing in memory: a commit that fails loses nothing.
    pub(super) fn frame_dirty(
        &self,
        ino: u64,
        g: &Node,
        file: &mut Inode,
        t: &mut Txn,
        raw: bool,
    ) -> FsResult<Written> {
        let cs = self.chunk_size();
        let now = Time::now();
        let plains: Vec<&[u8]> = g
            .dirty
            .iter()
            .map(|(&idx, buf)| {
                let len = file.size.saturating_sub(idx * cs).min(cs) as usize;
                &buf[..len.min(buf.len())]
            })
            .collect();
        // Frames the helper made ahead for exactly these plaintexts ([`super::ahead`]);
        // the rest are made now (all of them when stored raw).
        let ahead: Vec<Option<Frame>> = g
            .dirty
            .keys()
            .zip(&plains)
            .map(|(&idx, plain)| self.ahead.take(ino, idx, plain).filter(|_| !raw))
            .collect();
        let rest: Vec<&[u8]> = plains
            .iter()
            .zip(&ahead)
            .filter(|(_, a)| a.is_none())
            .map(|(p, _)| *p)
            .collect();
        let mut made = encode_chunks(&rest, raw).into_iter();
        let frames = ahead
            .into_iter()
            .map(|a| a.or_else(|| made.next().flatten()));
        // Chunks past the end of the file as the store holds it have nothing to replace
        // (a truncate drops the chunks past its cut in its own commit): none of a file
        // whose chunks were never written, none past the saved size of another. When more
        // than a few chunks lie below the saved size (a file allocated or truncated up
        // before it is written, as fio does), past the last chunk the store holds either.
        let first_new = if file.data_ver == 0 {
            0
        } else {
            let saved = self.store.inode(ino)?.map_or(u64::MAX, |i| i.size);
            let saved = saved.div_ceil(cs);
            if g.dirty.range(..saved).nth(LOOKED_UP_FREELY).is_some() {
                saved.min(self.store.chunk_end(ino)?)
            } else {
                saved
            }
        };
        let mut written = Vec::with_capacity(plains.len());
        for ((&idx, plain), framed) in g.dirty.keys().zip(plains).zip(frames) {
            let of = if idx >= first_new {
                crate::store::Chunks::NoneYet
            } else {
                crate::store::Chunks::Any
            };
            match framed {
                None => {
                    self.store.drop_chunks(t, ino, file, idx, idx + 1)?;
                    written.push((idx, 0, 0));
                }
                Some(framed) => {
                    let ver = self
                        .store
                        .write_chunk(t, ino, file, idx, &framed, now, of)?;
                    written.push((idx, ver, plain.len()));
                }
            }
        }
        Ok(Written(written))
    }

    /// After the commit that carried `written` ([`Core::frame_dirty`]): the dirty
    /// buffers become the cached plaintext of their new versions (no copy), and `g` holds
    /// no dirty chunk.
    pub(super) fn dirty_committed(&self, ino: u64, g: &mut Node, written: Written) {
        let wrote_chunks = !written.0.is_empty();
        let mut dirty = std::mem::take(&mut g.dirty);
        for (idx, ver, len) in written.0 {
            self.handoff.forget(ino, idx);
            match dirty.remove(&idx) {
                Some(mut buf) if len > 0 => {
                    buf.truncate(len);
                    let entry = Cached {
                        ver,
                        plain: Arc::new(super::cache::fit(buf).into()),
                    };
                    self.cache.put(ino, idx, entry, false);
                }
                _ => self.cache.remove(ino, idx),
            }
        }
        self.dirty_total.fetch_sub(g.dirty_bytes, Ordering::Relaxed);
        g.dirty_bytes = 0;
        if wrote_chunks {
            self.chunks_written();
        }
    }
}

/// Frames a FUSE request thread fetched but could not decode without the model, for the
/// worker that takes the request over, so that a cold read fetches each frame from the
/// store once. Entries live a few seconds and the map is bounded; one that went stale
/// costs a decode, never a wrong read: what it decodes to is kept only if the store
/// still holds its version.
#[derive(Default)]
pub(super) struct Handoff(Mutex<HashMap<(u64, u64), (Instant, StoredChunk)>>);

impl Handoff {
    /// How long an entry waits for the worker that takes its request over.
    const TTL: Duration = Duration::from_secs(10);
    /// Bound on entries (LLM frames of a few hundred bytes each).
    const MAX: usize = 256;

    fn put(&self, ino: u64, idx: u64, c: StoredChunk) {
        let mut m = self.0.lock();
        if m.len() >= Self::MAX {
            m.retain(|_, (at, _)| at.elapsed() < Self::TTL);
            if m.len() >= Self::MAX {
                m.clear();
            }
        }
        m.insert((ino, idx), (Instant::now(), c));
    }

    fn take(&self, ino: u64, idx: u64) -> Option<StoredChunk> {
        let mut m = self.0.lock();
        if m.is_empty() {
            return None;
        }
        m.remove(&(ino, idx))
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, c)| c)
    }

    /// Whether a fresh entry for the chunk is held (it needed the model when fetched).
    fn holds(&self, ino: u64, idx: u64) -> bool {
        let m = self.0.lock();
        !m.is_empty()
            && m.get(&(ino, idx))
                .is_some_and(|(at, _)| at.elapsed() < Self::TTL)
    }

    /// Drops the entry of a chunk just written: its frame is not the current one.
    fn forget(&self, ino: u64, idx: u64) {
        let mut m = self.0.lock();
        if !m.is_empty() {
            m.remove(&(ino, idx));
        }
    }
}

/// The dirty chunks a commit wrote: (index, version, plaintext length; 0 when the chunk
/// was all zeros and went away).
pub(super) struct Written(Vec<(u64, u64, usize)>);

/// Chunks framed at once for a commit from this many on are compressed on every core
/// (a write past the dirty limit frames 2,048 at a time); fewer, on the calling thread.
pub(super) const PARALLEL_FRAMING: usize = 64;

/// Fast chunks a read decodes at once from this many on are decoded on every core (a
/// 128 KiB read request holds 32): decoding is most of a cold read's time, and a read
/// request is served by one thread.
const PARALLEL_DECODING: usize = 16;

/// Chunks below the saved size that a commit looks up one by one before it asks the
/// store where the file's chunks end ([`crate::store::Store::chunk_end`], three reads):
/// the last partial chunk of an append is one.
const LOOKED_UP_FREELY: usize = 3;

/// The frames of `plains` for a commit, in order: stored raw when `raw`, else the fast
/// tier's; `None` for a chunk of zeros (not stored).
pub(super) fn encode_chunks(plains: &[&[u8]], raw: bool) -> Vec<Option<Frame>> {
    let one = |plain: &&[u8]| {
        if plain.iter().all(|&x| x == 0) {
            None
        } else if raw {
            Some(frame::assemble(Codec::Raw, plain, plain).into())
        } else {
            Some(encode_chunk(plain))
        }
    };
    if raw {
        return plains.iter().map(one).collect();
    }
    parallel_map(plains, PARALLEL_FRAMING, "llmfs-framing", one)
}

/// `f` of every item, in order: on every core when there are at least `min` items (a
/// scoped thread per core but the caller's, named `name`), else on the calling thread.
/// A thread that cannot be started leaves its part to the caller.
pub(super) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    min: usize,
    name: &str,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() < min.max(2) || cores() < 2 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(cores());
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .skip(1)
            .map(|part| {
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(s, move || part.iter().map(f).collect::<Vec<_>>())
                    .map_err(|_| part)
            })
            .collect();
        let mut out: Vec<R> = items[..per].iter().map(f).collect();
        for part in parts {
            match part {
                Ok(thread) => match thread.join() {
                    Ok(done) => out.extend(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(part) => out.extend(part.iter().map(f)),
            }
        }
        out
    })
}

/// The cores this process may use, asked once: std reads the cgroup's CPU quota from
/// files to answer, too slow to ask per commit.
pub(super) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The fast-tier frame of a chunk: the same frame as [`frame::encode_fast`], but with
/// one zstd context per thread. A fresh context per 4 KiB chunk costs little CPU but
/// churns the allocator enough to double the daemon's RSS under sustained writes.
pub(super) fn encode_chunk(plain: &[u8]) -> Frame {
    thread_local! {
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            zstd::bulk::Compressor::new(frame::ZSTD_LEVEL).ok().into();
    }
    let zstd = ZSTD.with(|c| c.borrow_mut().as_mut().and_then(|c| c.compress(plain).ok()));
    let bytes = match zstd {
        Some(z) if z.len() < plain.len() => frame::assemble(frame::Codec::Zstd, plain, &z),
        Some(_) => frame::assemble(frame::Codec::Raw, plain, plain),
        None => frame::encode_fast(plain),
    };
    bytes.into()
}

/// The kind of a chunk error, for logging each kind once per file: the message up to
/// its first detail.
fn cause_of(message: &str) -> String {
    message
        .split([':', '('])
        .next()
        .unwrap_or(message)
        .to_string()
}
