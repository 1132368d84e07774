//! The compactor: a named thread, `llmfs-compactor`, that re-encodes cold chunks with the
//! language model and settles them into extents.
//!
//! Which chunks wait is in the store (the `pending` table, written in the same
//! transaction as the chunk), so a restart resumes where it stopped. A chunk is cold when
//! it has not been written for `cold_after`; a file's partial tail chunk when the whole
//! file has not been written for `cold_after` (an appended log's full chunks are
//! compacted while it grows). Each chunk is coded by the model, decoded again and
//! compared (the codec verifies), and then swapped in under the file's lock only if the
//! chunk still has the content version that was coded: a write, truncate or unlink
//! meanwhile drops the result. A chunk the model does not shrink is settled as it is
//! (recorded as tried: it leaves `pending`) and is tried again only once rewritten.
//!
//! Default `cold_after` (5 minutes), and why: an LLM service appends to its logs, and a
//! chunk that is full never changes again, so only files rewritten in place (editors,
//! tools that rewrite a JSON file) risk being coded for nothing, at ~9 s of model time
//! per chunk on a CPU; those rewrite within seconds to a minute. The compactor's backlog
//! at ~200 bytes/s is hours for any sizable archive anyway, so waiting 5 minutes more
//! costs no ratio that matters, and `cold_after=0` or `sync_llm` are there for who wants
//! the model's ratio at once.

use super::cache::Cached;
use super::{Core, FsError, FsResult};
use crate::frame::{self, Codec, FrameError};
use crate::store::{PendingChunk, Txn};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_COLD_AFTER: Duration = Duration::from_secs(300);

/// A small English text coded when a store is pinned to a model profile, and decoded
/// at every mount: a build or machine whose model computes other probabilities fails
/// here, at mount, not at the first cold read of an archive.
pub const CANARY_TEXT: &[u8] = b"The assistant explained the function step by step, gave a \
short example, and listed the main points again.\n";

/// Pending records read per turn.
const BATCH: usize = 256;

#[derive(Default)]
pub struct CompactorState {
    /// Set to make the compactor look at the pending chunks again now.
    wake: Mutex<bool>,
    cond: Condvar,
    stats: Mutex<CompactStats>,
    /// Serializes settles that may pin the profile (the first LLM frame).
    pin: Mutex<()>,
    /// Chunks settled with an LLM frame since mount, for `sync_llm` waits and stats.
    settled: AtomicU64,
}

/// Compaction counters for live statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactStats {
    pub chunks_llm: u64,
    pub chunks_kept: u64,
    /// Plaintext bytes of the chunks coded, and the frame bytes before and after.
    pub plain_bytes: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Time spent coding (the model's encode and verify), for throughput.
    pub busy: Duration,
    /// Results dropped because the chunk changed while it was coded.
    pub dropped: u64,
}

/// What happened to one chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Settled with an LLM frame.
    Llm,
    /// Settled as it was: the model did not shrink it.
    Kept,
    /// The chunk changed or went away meanwhile: nothing done.
    Changed,
    /// Foreground work needed the model: try again later.
    Cancelled,
}

impl Core {
    /// Told after chunks were written: wakes the compactor.
    pub(super) fn chunks_written(&self) {
        if self.tier.get().is_some() && self.cfg.compact {
            *self.compactor.wake.lock() = true;
            self.compactor.cond.notify_all();
        }
    }

    pub fn compact_stats(&self) -> CompactStats {
        *self.compactor.stats.lock()
    }

    /// Runs the compactor until [`Core::shutdown`].
    pub fn spawn_compactor(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let core = Arc::clone(self);
        std::thread::Builder::new()
            .name("llmfs-compactor".into())
            .spawn(move || core.run_compactor())
    }

    fn run_compactor(&self) {
        let mut cursor = (0u64, 0u64);
        // When to look again although nothing woke us: the next chunk turning cold.
        let mut sleep = Duration::ZERO;
        let mut last_log = Instant::now();
        let mut logged = CompactStats::default();
        loop {
            {
                let mut woken = self.compactor.wake.lock();
                if !*woken && !sleep.is_zero() && !self.stopping() {
                    self.compactor.cond.wait_for(&mut woken, sleep);
                }
                *woken = false;
            }
            if self.stopping() {
                return;
            }
            match self.compact_pass(&mut cursor) {
                Ok(next) => sleep = next,
                Err(e) => {
                    log::error!("compaction failed: {e}; trying again in a minute");
                    sleep = Duration::from_secs(60);
                }
            }
            if last_log.elapsed() >= Duration::from_secs(60) {
                let st = self.compact_stats();
                if st.chunks_llm + st.chunks_kept > logged.chunks_llm + logged.chunks_kept {
                    log_progress(&logged, &st, self.store.count_pending());
                    logged = st;
                }
                last_log = Instant::now();
            }
        }
    }

    /// Compacts cold chunks from `cursor` on, for at most a few seconds of model time
    /// after the first coded chunk; returns how long to wait before the next pass.
    pub(super) fn compact_pass(&self, cursor: &mut (u64, u64)) -> FsResult<Duration> {
        let cold_after = self.cfg.cold_after;
        let mut next_due: Option<Duration> = None;
        let started = Instant::now();
        loop {
            let batch = self.store.pending(*cursor, BATCH)?;
            if batch.is_empty() {
                if *cursor == (0, 0) && self.store.count_pending() != 0 {
                    // The table is empty: a counter that says otherwise drifted.
                    log::debug!("pending count resynchronised");
                    self.store.recount_pending()?;
                }
                *cursor = (0, 0);
                // Everything seen was not cold yet (or nothing waits).
                return Ok(next_due
                    .unwrap_or(Duration::from_secs(60))
                    .clamp(Duration::from_millis(100), Duration::from_secs(60)));
            }
            for p in batch {
                *cursor = (p.ino, p.index + 1);
                if self.stopping() {
                    return Ok(Duration::ZERO);
                }
                if let Some(due) = self.cold_in(&p, cold_after)? {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    continue;
                }
                match self.compact_chunk(&p, false)? {
                    Outcome::Cancelled => {
                        // A reader needs the model: let it, and come back.
                        *cursor = (p.ino, p.index);
                        return Ok(Duration::from_millis(200));
                    }
                    _ if started.elapsed() > Duration::from_secs(2) => {
                        // Look at new writes and wake-ups between chunks.
                        return Ok(Duration::from_millis(1));
                    }
                    _ => {}
                }
            }
        }
    }

    /// `None` when chunk `p` is cold now, else how long until it is.
    pub(super) fn cold_in(
        &self,
        p: &PendingChunk,
        cold_after: Duration,
    ) -> FsResult<Option<Duration>> {
        let now = crate::store::records::Time::now().secs;
        let since = |t: i64| Duration::from_secs(now.saturating_sub(t).max(0) as u64);
        let written = since(p.written);
        if written < cold_after {
            return Ok(Some(cold_after - written));
        }
        let inode = match self.getattr(p.ino) {
            Ok(e) => e.inode,
            // Gone: its pending records go with its data.
            Err(FsError::NotFound) => return Ok(Some(Duration::from_secs(60))),
            Err(e) => return Err(e),
        };
        let cs = self.chunk_size();
        let full = (p.index + 1).saturating_mul(cs) <= inode.size;
        if !full {
            let quiet = since(inode.mtime.secs);
            if quiet < cold_after {
                return Ok(Some(cold_after - quiet));
            }
        }
        Ok(None)
    }

    /// Codes one pending chunk with the model and settles it (`foreground`: a writer
    /// waits, as with `sync_llm`).
    pub(super) fn compact_chunk(&self, p: &PendingChunk, foreground: bool) -> FsResult<Outcome> {
        let Some(tier) = self.tier.get() else {
            return Ok(Outcome::Cancelled);
        };
        let Some(stored) = self.store.chunk(p.ino, p.index)? else {
            return Ok(Outcome::Changed);
        };
        if !stored.hot || stored.ver != p.ver {
            return Ok(Outcome::Changed);
        }
        let plain = match self.cache.get(p.ino, p.index) {
            Some(c) if c.ver == p.ver => c.plain,
            _ => match frame::decode(&stored.frame, None) {
                Ok(plain) => Arc::new(plain),
                Err(e) => {
                    // A damaged chunk reads as EIO; coding it again cannot help.
                    let _ = self.chunk_error(p.ino, p.index, &e);
                    self.settle(p, stored.frame, false)?;
                    return Ok(Outcome::Kept);
                }
            },
        };
        let t0 = Instant::now();
        let coded = tier.encode(Arc::clone(&plain), foreground);
        let busy = t0.elapsed();
        let (new_frame, llm) = match coded {
            Err(FrameError::Cancelled) => return Ok(Outcome::Cancelled),
            Err(e) => {
                return Err(FsError::Io(format!(
                    "the model failed on chunk {} of inode {}: {e}",
                    p.index, p.ino
                )))
            }
            Ok(super::tier::Encoded::Llm(f)) if f.len() < stored.frame.len() => (f, true),
            Ok(_) => (stored.frame.clone(), false),
        };
        let before = stored.frame.len() as u64;
        let after = new_frame.len() as u64;
        if !self.settle(p, new_frame, llm)? {
            self.compactor.stats.lock().dropped += 1;
            return Ok(Outcome::Changed);
        }
        let mut st = self.compactor.stats.lock();
        if llm {
            st.chunks_llm += 1;
        } else {
            st.chunks_kept += 1;
        }
        st.plain_bytes += plain.len() as u64;
        st.bytes_before += before;
        st.bytes_after += after;
        st.busy += busy;
        Ok(if llm { Outcome::Llm } else { Outcome::Kept })
    }

    /// Swaps chunk `p` (if it is still hot at version `p.ver`) for `frame` in an extent,
    /// under the file's lock, with the file's stored bytes; the first LLM frame of a
    /// store pins the codec profile in the same transaction. Returns false when the chunk
    /// changed meanwhile (the result is dropped).
    fn settle(&self, p: &PendingChunk, frame: Vec<u8>, llm: bool) -> FsResult<bool> {
        let n = match self.node(p.ino) {
            Ok(n) => n,
            Err(FsError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut g = n.lock();
        if g.deleted {
            return Ok(false);
        }
        match self.store.chunk(p.ino, p.index)? {
            Some(c) if c.hot && c.ver == p.ver => {}
            _ => return Ok(false),
        }
        let _pin = llm.then(|| self.compactor.pin.lock());
        let mut t = Txn::new();
        if llm && self.store.meta(crate::store::MetaKey::Profile)?.is_none() {
            let (profile, canary) = self.make_canary()?;
            self.store.pin_profile(&mut t, &profile, &canary);
            log::info!("pinned the store to the model's codec profile (first LLM frame)");
        }
        let delta = self
            .store
            .settle_chunk(&mut t, p.ino, p.index, p.ver, frame)?;
        // The stored record gets its new byte count; the in-memory one, which may carry
        // unpersisted changes, moves by the same amount.
        let mut record = self.store.inode(p.ino)?.ok_or(FsError::NotFound)?;
        record.stored = (record.stored as i64 - delta).max(0) as u64;
        t.put_inode(p.ino, &record);
        self.store.commit(t)?;
        g.inode.stored = (g.inode.stored as i64 - delta).max(0) as u64;
        if llm {
            self.compactor.settled.fetch_add(1, Ordering::Relaxed);
            // Getting it again now costs the model: keep it with the costly chunks.
            if let Some(c) = self.cache.get(p.ino, p.index).filter(|c| c.ver == p.ver) {
                self.cache.put(p.ino, p.index, Cached { ..c }, true);
            }
        }
        Ok(true)
    }

    /// The profile to pin and the canary frame coded under it.
    fn make_canary(&self) -> FsResult<(Vec<u8>, Vec<u8>)> {
        let tier = self
            .tier
            .get()
            .ok_or(FsError::Io("no model attached".into()))?;
        match tier.encode(Arc::new(CANARY_TEXT.to_vec()), true) {
            Ok(super::tier::Encoded::Llm(f)) => Ok((tier.profile().to_vec(), f)),
            Ok(other) => Err(FsError::Io(format!(
                "the model does not code the canary text ({other:?}): it cannot be pinned"
            ))),
            Err(e) => Err(FsError::Io(format!("coding the canary: {e}"))),
        }
    }

    /// `sync_llm`: codes every pending chunk of `ino` now (cold or not), waiting.
    pub(super) fn compact_file_now(&self, ino: u64) -> FsResult<()> {
        loop {
            let pending: Vec<PendingChunk> = self
                .store
                .pending((ino, 0), BATCH)?
                .into_iter()
                .filter(|p| p.ino == ino)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            for p in &pending {
                while self.compact_chunk(p, true)? == Outcome::Cancelled {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Whether `ino` has chunks waiting for the compactor.
    pub(super) fn has_pending(&self, ino: u64) -> FsResult<bool> {
        Ok(self
            .store
            .pending((ino, 0), 1)?
            .first()
            .is_some_and(|p| p.ino == ino))
    }

    /// After a quiet spell, gives the database's free space back, a bounded step at a
    /// time (each step holds the database for milliseconds).
    pub(super) fn reclaim_when_idle(&self) -> FsResult<()> {
        const QUIET: Duration = Duration::from_secs(10);
        let model_idle = self.tier.get().is_none_or(|t| t.idle());
        if self.idle_for() < QUIET || !model_idle {
            return Ok(());
        }
        for _ in 0..64 {
            if self.stopping() || self.idle_for() < QUIET || !self.store.reclaim()? {
                break;
            }
        }
        Ok(())
    }

    /// Checks a store's pinned profile and canary against the attached model; `Err`
    /// names what differs. A store with no LLM frames accepts any model.
    pub fn check_pinned_profile(
        &self,
        describe: impl Fn(&[u8], &[u8]) -> Vec<String>,
    ) -> Result<(), String> {
        let Some(tier) = self.tier.get() else {
            return Ok(());
        };
        let stored = self
            .store
            .meta(crate::store::MetaKey::Profile)
            .map_err(|e| e.to_string())?;
        let Some(stored) = stored else {
            return Ok(());
        };
        let differences = describe(&stored, tier.profile());
        if !differences.is_empty() {
            return Err(format!(
                "the store's LLM frames were coded under another codec profile: {}",
                differences.join("; ")
            ));
        }
        let canary = self
            .store
            .meta(crate::store::MetaKey::Canary)
            .map_err(|e| e.to_string())?
            .ok_or("the store's canary frame is missing")?;
        let is_llm = frame::parse_header(&canary).is_ok_and(|h| h.codec == Codec::Llm);
        // A decode checks the plaintext's CRC: passing it means this model computes the
        // probabilities the store was coded with (the text itself may differ between
        // releases).
        match tier.decode((0, 0, 0), &canary) {
            Ok(_) if is_llm => Ok(()),
            Ok(_) => Err("the store's canary is not LLM-coded".into()),
            Err(e) => Err(format!(
                "the store's canary frame does not decode with this build and machine ({e}): \
                 the model computes other probabilities here than where the store was written"
            )),
        }
    }
}

/// One log line of progress: what was coded since the last line.
fn log_progress(before: &CompactStats, now: &CompactStats, pending: u64) {
    let chunks = now.chunks_llm + now.chunks_kept - before.chunks_llm - before.chunks_kept;
    let plain = now.plain_bytes - before.plain_bytes;
    let b0 = now.bytes_before - before.bytes_before;
    let b1 = now.bytes_after - before.bytes_after;
    let busy = (now.busy - before.busy).as_secs_f64().max(1e-9);
    log::info!(
        "compacted {chunks} chunks ({} LLM-coded): {b0} -> {b1} bytes ({:.1}x of the fast \
         tier), {:.0} bytes/s of text; {pending} chunks pending",
        now.chunks_llm - before.chunks_llm,
        b0 as f64 / b1.max(1) as f64,
        plain as f64 / busy
    );
}
