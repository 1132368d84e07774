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

use super::background;
use super::{Core, FsError, FsResult};
use crate::frame::{self, Frame};
use crate::store::PendingChunk;
use crate::tier::{Coded, Encoded, TierError};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a chunk stays unwritten before the compactor gives it to the model
/// (`cold_after=` overrides it): a log being appended to is not coded chunk by chunk.
pub const DEFAULT_COLD_AFTER: Duration = Duration::from_secs(300);

/// A small English text coded when a store is pinned to a model profile, and decoded
/// at every mount: a build or machine whose model computes other probabilities fails
/// here, at mount, not at the first cold read of an archive.
pub const CANARY_TEXT: &[u8] = b"The assistant explained the function step by step, gave a \
short example, and listed the main points again.\n";

/// Pending records read per turn.
const BATCH: usize = 256;

/// The compactor's shared state: its wake-up, counters and the chunks in flight.
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
    /// Chunks handed to a worker and not done yet.
    in_flight: Mutex<std::collections::HashSet<(u64, u64)>>,
    /// A worker's encode was stopped for a reader: the next pass waits a little.
    backoff: std::sync::atomic::AtomicBool,
    /// A worker failed: the next pass waits a minute.
    failed: std::sync::atomic::AtomicBool,
    /// Workers coding now, and since when one has been (for the wall time of `busy`).
    active: Mutex<(usize, Option<Instant>)>,
}

/// Compaction counters for live statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactStats {
    /// Chunks settled with an LLM frame.
    pub chunks_llm: u64,
    /// Chunks the model did not shrink (or whose decode did not verify), settled with
    /// their fast frame.
    pub chunks_kept: u64,
    /// Plaintext bytes of the chunks coded, and the frame bytes before and after.
    pub plain_bytes: u64,
    /// Frame bytes of those chunks before they were coded.
    pub bytes_before: u64,
    /// Frame bytes of those chunks as settled.
    pub bytes_after: u64,
    /// Wall time during which chunks were being coded (encode and verify, on any lane),
    /// for throughput.
    pub busy: Duration,
    /// Results dropped because the chunk changed while it was coded.
    pub dropped: u64,
    /// Chunks of files whose policy keeps them from the model (`compress=fast|none`),
    /// settled as they were.
    pub chunks_skipped: u64,
    /// Plaintext and frame bytes of the chunks that were LLM-coded (the model's ratio).
    pub llm_plain_bytes: u64,
    /// Frame bytes of the chunks that were LLM-coded.
    pub llm_frame_bytes: u64,
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
    /// Handed to a compaction worker.
    Queued,
}

impl Core {
    /// Told after chunks were written: wakes the compactor.
    pub(super) fn chunks_written(&self) {
        if self.tier.get().is_some() && self.cfg.compact {
            *self.compactor.wake.lock() = true;
            self.compactor.cond.notify_all();
        }
    }

    /// The compaction counters since mount, with the time spent coding so far.
    pub fn compact_stats(&self) -> CompactStats {
        // Lock order: `active`, then `stats` (as in `active`).
        let a = self.compactor.active.lock();
        let mut st = *self.compactor.stats.lock();
        if let Some(t0) = a.1 {
            st.busy += t0.elapsed(); // the interval still open: workers coding now
        }
        st
    }

    /// Runs the compactor until [`Core::shutdown`]: `llmfs-compactor` finds cold chunks
    /// and hands each to one of `llmfs-compact-N`, one worker per model lane, so every
    /// lane codes at once.
    pub fn spawn_compactor(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let workers = self.tier.get().map_or(1, |t| t.lanes()).max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<PendingChunk>(0);
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for i in 0..workers {
            let (core, rx) = (Arc::clone(self), Arc::clone(&rx));
            handles.push(
                std::thread::Builder::new()
                    .name(format!("llmfs-compact-{i}"))
                    .spawn(move || core.compact_worker(&rx))?,
            );
        }
        let (core, waker) = (Arc::clone(self), Arc::clone(self));
        let mut cursor = (0u64, 0u64);
        let mut last_log = Instant::now();
        let mut logged = CompactStats::default();
        // The first pass at once; later ones when woken (chunks written) or when the
        // next chunk turns cold, as the pass says.
        background::Loop::new("llmfs-compactor", Duration::from_secs(60))
            .first_in(Duration::ZERO)
            .finally(move || {
                // The body and its sender are gone: the workers see the channel close.
                for h in handles {
                    if h.join().is_err() {
                        log::error!("a compaction worker panicked");
                    }
                }
            })
            .spawn(
                move |sleep: Duration| {
                    let mut woken = waker.compactor.wake.lock();
                    if !*woken && !sleep.is_zero() && !waker.stopping() {
                        waker.compactor.cond.wait_for(&mut woken, sleep);
                    }
                    *woken = false;
                    drop(woken);
                    waker.stopping()
                },
                move |round| {
                    let pass = core.pass_with(&mut cursor, &mut |p| core.hand_out(&tx, p));
                    let retry = pass
                        .as_ref()
                        .map_err(|e| format!("{e}; trying again in a minute"));
                    round.check("compaction", &retry);
                    // On an error, the loop's interval: a minute.
                    if let Ok(next) = pass {
                        round.again_in(next);
                    }
                    if core.compactor.failed.swap(false, Ordering::Relaxed) {
                        round.again_in(Duration::from_secs(60));
                    }
                    if last_log.elapsed() >= Duration::from_secs(60) {
                        let st = core.compact_stats();
                        if st.chunks_llm + st.chunks_kept > logged.chunks_llm + logged.chunks_kept {
                            log_progress(&logged, &st, core.store.count_pending());
                            logged = st;
                        }
                        last_log = Instant::now();
                    }
                },
            )
    }

    /// A worker: codes the chunks it is handed until the channel closes.
    fn compact_worker(&self, rx: &Mutex<std::sync::mpsc::Receiver<PendingChunk>>) {
        let name = std::thread::current()
            .name()
            .unwrap_or("llmfs-compact")
            .to_string();
        let mut errors = background::Streaks::new(name);
        loop {
            let next = rx.lock().recv();
            let Ok(p) = next else {
                return;
            };
            let r = self.compact_chunk(&p, false);
            let retry = r
                .as_ref()
                .map_err(|e| format!("{e}; trying again in a minute"));
            errors.check("compaction", &retry);
            let cancelled = matches!(r, Ok(Outcome::Cancelled));
            match r {
                Ok(Outcome::Cancelled) => self.compactor.backoff.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(_) => self.compactor.failed.store(true, Ordering::Relaxed),
            }
            self.compactor.in_flight.lock().remove(&(p.ino, p.index));
            if cancelled {
                // The chunk is still pending, and the pass that handed it out may have
                // ended already (it then slept up to a minute: `stats --wait-idle`
                // waited that long). Wake the loop once the chunk is out of `in_flight`,
                // which a pass skips; its next pass backs off first (readers have the
                // lanes).
                *self.compactor.wake.lock() = true;
                self.compactor.cond.notify_all();
            }
        }
    }

    /// Hands `p` to a free worker (waiting for one), unless it is being coded already.
    fn hand_out(
        &self,
        tx: &std::sync::mpsc::SyncSender<PendingChunk>,
        p: &PendingChunk,
    ) -> FsResult<Outcome> {
        if self.compactor.backoff.swap(false, Ordering::Relaxed) {
            return Ok(Outcome::Cancelled); // readers are using the lanes
        }
        if !self.compactor.in_flight.lock().insert((p.ino, p.index)) {
            return Ok(Outcome::Changed);
        }
        let mut job = *p;
        loop {
            match tx.try_send(job) {
                Ok(()) => return Ok(Outcome::Queued),
                Err(std::sync::mpsc::TrySendError::Full(j)) => {
                    if self.stopping() {
                        self.compactor.in_flight.lock().remove(&(p.ino, p.index));
                        return Ok(Outcome::Cancelled);
                    }
                    job = j;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    return Err(FsError::Io("the compaction workers stopped".into()))
                }
            }
        }
    }

    /// Compacts cold chunks from `cursor` on, one at a time on this thread, for at most a
    /// few seconds of model time after the first coded chunk; returns how long to wait
    /// before the next pass.
    #[cfg(test)]
    pub(super) fn compact_pass(&self, cursor: &mut (u64, u64)) -> FsResult<Duration> {
        self.pass_with(cursor, &mut |p| self.compact_chunk(p, false))
    }

    /// A pass over the pending chunks from `cursor` on, giving each cold one to `code`.
    fn pass_with(
        &self,
        cursor: &mut (u64, u64),
        code: &mut dyn FnMut(&PendingChunk) -> FsResult<Outcome>,
    ) -> FsResult<Duration> {
        let cold_after = self.cfg.cold_after;
        let mut next_due: Option<Duration> = None;
        let started = Instant::now();
        let from_start = *cursor == (0, 0);
        loop {
            let batch = self.store.pending(*cursor, BATCH)?;
            if batch.is_empty() {
                if *cursor == (0, 0) && self.store.count_pending() != 0 {
                    // The table is empty: a counter that says otherwise drifted.
                    log::debug!("pending count resynchronised");
                    self.store.recount_pending()?;
                }
                *cursor = (0, 0);
                if !from_start {
                    // This pass began where the last one stopped (a reader took the
                    // lanes, or its time was up): what lies before that place was not
                    // seen, a chunk whose coding was cancelled among it. Go round once
                    // more from the start before sleeping.
                    return Ok(Duration::from_millis(1));
                }
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
                match code(&p)? {
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
        match self.policy(p.ino) {
            Ok(policy) if !policy.uses_model() => {
                // compress=fast or none: settled as it is, never given to the model.
                if !self.settle(p, stored.frame, false)? {
                    return Ok(Outcome::Changed);
                }
                self.compactor.stats.lock().chunks_skipped += 1;
                return Ok(Outcome::Kept);
            }
            Ok(_) => {}
            Err(FsError::NotFound) => return Ok(Outcome::Changed),
            Err(e) => return Err(e),
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
        self.active(1);
        // The stored fast frame is the one to beat: the codec decides, once.
        let coded = tier.encode_against(Arc::clone(&plain), stored.frame.to_vec(), foreground);
        self.active(-1);
        let (new_frame, llm) = match coded.map(Coded::outcome) {
            Err(TierError::Cancelled | TierError::Stopped) => return Ok(Outcome::Cancelled),
            Err(e) => {
                return Err(FsError::Io(format!(
                    "the model failed on chunk {} of inode {}: {e}",
                    p.index, p.ino
                )))
            }
            Ok(Encoded::Llm(f)) => (Frame::from(f), true),
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
            st.llm_plain_bytes += plain.len() as u64;
            st.llm_frame_bytes += after;
        } else {
            st.chunks_kept += 1;
        }
        st.plain_bytes += plain.len() as u64;
        st.bytes_before += before;
        st.bytes_after += after;
        Ok(if llm { Outcome::Llm } else { Outcome::Kept })
    }

    /// One more (`1`) or one less (`-1`) chunk being coded; `busy` counts the wall time
    /// during which any is, so that its bytes per second are the pool's, not a lane's.
    fn active(&self, delta: i32) {
        let mut a = self.compactor.active.lock();
        if delta > 0 {
            if a.0 == 0 {
                a.1 = Some(Instant::now());
            }
            a.0 += 1;
        } else {
            a.0 = a.0.saturating_sub(1);
            if a.0 == 0 {
                if let Some(t0) = a.1.take() {
                    self.compactor.stats.lock().busy += t0.elapsed();
                }
            }
        }
    }

    /// Settles chunk `p` with `frame` if it is still the version that was coded
    /// ([`Core::swap_if_current`]); the first LLM frame of a store pins the codec profile
    /// in the same transaction. Returns false when the chunk changed meanwhile.
    fn settle(&self, p: &PendingChunk, frame: Frame, llm: bool) -> FsResult<bool> {
        // Settles that may pin the profile go one at a time.
        let _pin = llm.then(|| self.compactor.pin.lock());
        let swapped = self.swap_if_current(p.ino, p.index, p.ver, frame, |t| {
            if llm && self.store.meta(crate::store::MetaKey::Profile)?.is_none() {
                let (profile, canary) = self.make_canary()?;
                self.store.pin_profile(t, &profile, &canary);
                log::info!("pinned the store to the model's codec profile (first LLM frame)");
            }
            Ok(())
        })?;
        if swapped && llm {
            self.compactor.settled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(swapped)
    }

    /// The profile to pin and the canary frame coded under it.
    fn make_canary(&self) -> FsResult<(Vec<u8>, Vec<u8>)> {
        let tier = self
            .tier
            .get()
            .ok_or(FsError::Io("no model attached".into()))?;
        match tier
            .encode(Arc::new(CANARY_TEXT.to_vec().into()), true)
            .map(Coded::outcome)
        {
            Ok(Encoded::Llm(f)) => Ok((tier.profile().to_vec(), f)),
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
        let is_llm = frame::needs_model(&canary);
        // A decode checks the plaintext's CRC: passing it means this model computes the
        // probabilities the store was coded with (the text itself may differ between
        // releases).
        match tier.decode((0, 0, 0), &canary, crate::tier::SYSTEM) {
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
