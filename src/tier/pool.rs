//! The pool's scheduler: one queue, N lane threads taking jobs from it by priority.
//!
//! Everything the lanes decide is decided under the queue's lock: which job a lane
//! takes, whether it runs wide, and which background job a reader stops. Each job gets
//! a cancel flag of its own when a lane takes it, so a reader arriving at any moment
//! either finds the job's flag or finds the lane idle. (The single model thread before
//! the pool cleared one shared flag after letting go of the lock: a reader arriving in
//! between set it, the thread cleared it, and the reader waited behind a whole encode.)

use super::{ChunkCodec, ChunkKey, Coded, Lane, LaneSpec, LaneStarter, TierError, SYSTEM};
use crate::codec::token_model::SessionStats;
use crate::frame::Plain;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How many lanes, and their threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Lanes: independent llama.cpp contexts, each coding one chunk at a time.
    pub lanes: usize,
    /// llama.cpp threads of each lane's context.
    pub threads_per_lane: u32,
    /// Threads of lane 0's wide context for lone reads; `None`: no wide context.
    pub wide_threads: Option<u32>,
    /// Decoded chunks kept for readers after a prefetch, in bytes.
    pub prefetch_bytes: usize,
}

impl PoolConfig {
    /// `lanes` lanes sharing a budget of `threads` llama.cpp threads (each lane gets its
    /// share, at least one); lane 0 gets a wide context with the whole budget when its
    /// share is smaller. Defaults: one lane per core, every core.
    pub fn new(lanes: Option<usize>, threads: Option<u32>) -> PoolConfig {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = threads.unwrap_or(cores as u32).max(1);
        let lanes = lanes.unwrap_or(threads as usize).clamp(1, 256);
        let per_lane = (threads / lanes as u32).max(1);
        PoolConfig {
            lanes,
            threads_per_lane: per_lane,
            wide_threads: (per_lane < threads).then_some(threads),
            prefetch_bytes: 4 << 20,
        }
    }
}

/// Counters of the pool, for live statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Lanes running.
    pub lanes: usize,
    /// Frames decoded (reads and prefetches).
    pub decodes: u64,
    /// Time spent decoding, summed over lanes.
    pub decode_time: Duration,
    /// The longest single decode.
    pub decode_max: Duration,
    /// Plaintext bytes the decodes gave (prefetches included), for throughput.
    pub decoded_plain_bytes: u64,
    /// Decodes that ran on the wide context.
    pub wide_decodes: u64,
    /// Chunks encoded (each with its verifying decode).
    pub encodes: u64,
    /// Time spent encoding and verifying, summed over lanes.
    pub encode_time: Duration,
    /// Plaintext bytes encoded.
    pub encoded_plain_bytes: u64,
    /// Jobs stopped before they finished (an encode preempted by a read, a prefetch
    /// nobody waits for any more, a shutdown).
    pub cancelled: u64,
    /// Encodes whose decode did not give back the plaintext (the fast frame was kept).
    pub verify_failures: u64,
    /// Prefetches decoded and kept for a reader who had not asked yet.
    pub prefetches: u64,
    /// Reads served from a prefetched chunk.
    pub prefetch_hits: u64,
    /// Model steps and time of every lane's context.
    pub session: SessionStats,
}

/// A job's result, to wait for.
pub struct Ticket<T>(mpsc::Receiver<Result<T, TierError>>);

impl<T> Ticket<T> {
    /// Waits for the job's result ([`TierError::Stopped`] if the pool went away).
    pub fn wait(self) -> Result<T, TierError> {
        self.0.recv().unwrap_or(Err(TierError::Stopped))
    }
}

type Decoded = Result<Arc<Plain>, TierError>;

/// Someone waiting for a decode: a reader sharing it, or a caller who owns the result.
enum Waiter {
    Shared(mpsc::Sender<Decoded>),
    Owned(mpsc::Sender<Result<Plain, TierError>>),
}

impl Waiter {
    fn send(self, r: &Decoded) {
        match self {
            Waiter::Shared(tx) => {
                let _ = tx.send(r.clone());
            }
            Waiter::Owned(tx) => {
                let _ = tx.send(r.clone().map(Arc::unwrap_or_clone));
            }
        }
    }
}

/// A frame to decode and who waits for it.
struct Waiting {
    frame: Arc<Vec<u8>>,
    waiters: Vec<Waiter>,
    /// Queued as a prefetch (no reader yet), or taken by a lane.
    state: DecodeState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Reader,
    Prefetch,
    Running,
}

struct EncodeJob {
    plain: Arc<Plain>,
    /// The frame to beat, made already ([`ChunkCodec::encode`]).
    fast: Option<Vec<u8>>,
    reply: mpsc::Sender<Result<Coded, TierError>>,
}

enum Job {
    Decode { key: ChunkKey, frame: Arc<Vec<u8>> },
    Encode(EncodeJob),
}

#[derive(Clone)]
enum LaneState {
    Idle,
    Busy {
        /// A prefetch or compaction: stopped when a reader needs the lane.
        background: bool,
        /// The key of a running decode (a reader may join it).
        key: Option<ChunkKey>,
        cancel: Arc<AtomicBool>,
    },
    Gone,
}

#[derive(Default)]
struct Queue {
    /// Reader decodes by requester, served round-robin.
    readers: BTreeMap<u32, VecDeque<ChunkKey>>,
    /// The requester served last.
    last_served: Option<u32>,
    waiting: HashMap<ChunkKey, Waiting>,
    fg_encodes: VecDeque<EncodeJob>,
    prefetches: VecDeque<ChunkKey>,
    bg_encodes: VecDeque<EncodeJob>,
    lanes: Vec<LaneState>,
    /// Lane 0 runs a read on its wide context: the other lanes take reads only.
    wide_running: bool,
    /// Lane 0 has a wide context.
    wide_lane: bool,
    prefetched: Prefetched,
    stop: bool,
    /// The model could not start: every job fails with this.
    failed: Option<String>,
}

impl Queue {
    /// Why no job is taken any more, if none is: the pool stopped, or never started.
    fn refusal(&self) -> Option<TierError> {
        if self.stop {
            return Some(TierError::Stopped);
        }
        self.failed.clone().map(TierError::Failed)
    }
}

/// Decoded chunks a prefetch left for readers, oldest out first, bounded in bytes.
#[derive(Default)]
struct Prefetched {
    order: VecDeque<ChunkKey>,
    chunks: HashMap<ChunkKey, Arc<Plain>>,
    bytes: usize,
    limit: usize,
}

impl Prefetched {
    fn put(&mut self, key: ChunkKey, plain: Arc<Plain>) {
        if self.chunks.contains_key(&key) || plain.len() > self.limit {
            return;
        }
        self.bytes += plain.len();
        self.chunks.insert(key, plain);
        self.order.push_back(key);
        while self.bytes > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.chunks.remove(&old) {
                self.bytes -= p.len();
            }
        }
    }

    fn take(&mut self, key: &ChunkKey) -> Option<Arc<Plain>> {
        let p = self.chunks.remove(key)?;
        self.bytes -= p.len();
        self.order.retain(|k| k != key);
        Some(p)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: Mutex<PoolStats>,
    /// Keys for decodes no one else can share (the CLI, fsck).
    unique: AtomicU64,
    /// Set by [`Pool::stop`]: stops a lane's preparation (a primer's state, seconds of
    /// model time) within one model step, as each job's own flag stops the job.
    stopping: Arc<AtomicBool>,
    /// Test hook: a lane sleeps this long after taking a background job, before it
    /// starts (to widen the window a reader may arrive in).
    #[cfg(test)]
    pause_after_take: Mutex<Duration>,
}

/// The pool of lanes.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    profile: Vec<u8>,
    config: PoolConfig,
}

impl Pool {
    /// Starts `config.lanes` lanes built by `starter`; returns once every lane is up
    /// (lanes after the first that fail to start are logged and left out).
    pub fn start(config: PoolConfig, starter: LaneStarter) -> Result<Pool, TierError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                lanes: vec![LaneState::Idle; config.lanes],
                wide_lane: config.wide_threads.is_some(),
                prefetched: Prefetched {
                    limit: config.prefetch_bytes,
                    ..Prefetched::default()
                },
                ..Queue::default()
            }),
            wake: Condvar::new(),
            stats: Mutex::new(PoolStats {
                lanes: config.lanes,
                ..PoolStats::default()
            }),
            unique: AtomicU64::new(0),
            stopping: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            pause_after_take: Mutex::new(Duration::ZERO),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<Vec<u8>, String>)>();
        let mut threads = Vec::new();
        for index in 0..config.lanes {
            let spec = LaneSpec {
                index,
                threads: config.threads_per_lane,
                wide_threads: if index == 0 {
                    config.wide_threads
                } else {
                    None
                },
            };
            let (s, starter, ready) = (Arc::clone(&shared), Arc::clone(&starter), ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("llmfs-lane-{index}"))
                .spawn(move || {
                    let mut told = false;
                    let result = starter(spec, &mut |lane: Lane<'_>| {
                        let _ = ready.send((index, Ok(lane.narrow.profile())));
                        told = true;
                        serve(&s, index, lane);
                    });
                    if !told {
                        let why = result
                            .err()
                            .unwrap_or_else(|| "the lane did not start".into());
                        let _ = ready.send((index, Err(why)));
                    } else if let Err(why) = result {
                        log::error!("model lane {index} stopped: {why}");
                    }
                    {
                        let mut q = s.queue.lock();
                        q.lanes[index] = LaneState::Gone;
                        if index == 0 {
                            q.wide_lane = false;
                        }
                    }
                    s.wake.notify_all();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let _ = ready_tx.send((index, Err(format!("starting its thread: {e}"))));
                }
            }
        }
        drop(ready_tx);
        let mut profiles: BTreeMap<usize, Result<Vec<u8>, String>> = BTreeMap::new();
        while profiles.len() < config.lanes {
            match ready_rx.recv() {
                Ok((i, r)) => {
                    profiles.insert(i, r);
                }
                Err(_) => break,
            }
        }
        let mut pool = Pool {
            shared,
            threads: Mutex::new(threads),
            profile: Vec::new(),
            config,
        };
        let first = match profiles.remove(&0) {
            Some(Ok(p)) => p,
            Some(Err(why)) => {
                pool.fail(&why);
                pool.stop();
                return Err(TierError::Failed(why));
            }
            None => {
                pool.stop();
                return Err(TierError::Failed("the model did not start".into()));
            }
        };
        for (i, r) in profiles {
            match r {
                Ok(p) if p == first => {}
                Ok(_) => {
                    pool.stop();
                    return Err(TierError::Failed(format!(
                        "lane {i} codes under another profile than lane 0"
                    )));
                }
                Err(why) => log::warn!("model lane {i} did not start ({why}): running without it"),
            }
        }
        pool.profile = first;
        Ok(pool)
    }

    /// The codec profile every lane codes under.
    pub fn profile(&self) -> &[u8] {
        &self.profile
    }

    /// The lanes and threads the pool runs.
    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Decodes the LLM frame of chunk `key` for a reader, `who` (the requesting user),
    /// waiting. Readers of one key share one decode; a chunk a prefetch decoded is
    /// handed over at once.
    pub fn decode(&self, key: ChunkKey, frame: &[u8], who: u32) -> Result<Arc<Plain>, TierError> {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(e) = q.refusal() {
                return Err(e);
            }
            if let Some(p) = q.prefetched.take(&key) {
                self.shared.stats.lock().prefetch_hits += 1;
                return Ok(p);
            }
            match q.waiting.get_mut(&key) {
                Some(w) => {
                    w.waiters.push(Waiter::Shared(tx));
                    match w.state {
                        DecodeState::Prefetch => {
                            // Queued as a prefetch: now a reader waits for it.
                            w.state = DecodeState::Reader;
                            q.prefetches.retain(|k| *k != key);
                            q.readers.entry(who).or_default().push_back(key);
                        }
                        DecodeState::Running => {
                            // Running as a prefetch: no longer to be stopped for a reader.
                            for l in &mut q.lanes {
                                if let LaneState::Busy {
                                    background,
                                    key: Some(k),
                                    ..
                                } = l
                                {
                                    if *k == key {
                                        *background = false;
                                    }
                                }
                            }
                        }
                        DecodeState::Reader => {}
                    }
                }
                None => {
                    q.waiting.insert(
                        key,
                        Waiting {
                            frame: Arc::new(frame.to_vec()),
                            waiters: vec![Waiter::Shared(tx)],
                            state: DecodeState::Reader,
                        },
                    );
                    q.readers.entry(who).or_default().push_back(key);
                }
            }
            preempt(&mut q);
        }
        self.shared.wake.notify_all();
        rx.recv().unwrap_or(Err(TierError::Stopped))
    }

    /// Decodes `frame` without waiting (for callers with many in flight: the CLI, fsck).
    pub fn submit_decode(&self, frame: Vec<u8>) -> Ticket<Plain> {
        let n = self.shared.unique.fetch_add(1, Ordering::Relaxed);
        let key = (u64::MAX, n, u64::MAX);
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(e) = q.refusal() {
                let _ = tx.send(Err(e));
                return Ticket(rx);
            }
            q.waiting.insert(
                key,
                Waiting {
                    frame: Arc::new(frame),
                    waiters: vec![Waiter::Owned(tx)],
                    state: DecodeState::Reader,
                },
            );
            q.readers.entry(SYSTEM).or_default().push_back(key);
            preempt(&mut q);
        }
        self.shared.wake.notify_all();
        Ticket(rx)
    }

    /// Encodes `plain`, waiting; `foreground` (a writer waits) goes before background
    /// work and is never stopped; a background encode returns [`TierError::Cancelled`]
    /// when a reader needed its lane.
    pub fn encode(&self, plain: Arc<Plain>, foreground: bool) -> Result<Coded, TierError> {
        self.submit_encode(plain, foreground).wait()
    }

    /// [`Pool::encode`] against `fast`, a fast frame of `plain` the caller has already:
    /// the LLM frame comes back only if it is smaller, else `fast` does.
    pub fn encode_against(
        &self,
        plain: Arc<Plain>,
        fast: Vec<u8>,
        foreground: bool,
    ) -> Result<Coded, TierError> {
        self.submit(plain, Some(fast), foreground).wait()
    }

    /// [`Pool::encode`] without waiting.
    pub fn submit_encode(&self, plain: Arc<Plain>, foreground: bool) -> Ticket<Coded> {
        self.submit(plain, None, foreground)
    }

    fn submit(&self, plain: Arc<Plain>, fast: Option<Vec<u8>>, foreground: bool) -> Ticket<Coded> {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(e) = q.refusal() {
                let _ = tx.send(Err(e));
                return Ticket(rx);
            }
            let job = EncodeJob {
                plain,
                fast,
                reply: tx,
            };
            if foreground {
                q.fg_encodes.push_back(job);
                preempt(&mut q);
            } else {
                q.bg_encodes.push_back(job);
            }
        }
        self.shared.wake.notify_all();
        Ticket(rx)
    }

    /// Decodes `frame` of chunk `key` in the background when a lane is free, keeping the
    /// result for the reader who asks next ([`Pool::decode`]). Nothing is called back:
    /// the lane never touches the filesystem.
    pub fn prefetch(&self, key: ChunkKey, frame: Vec<u8>) {
        {
            let mut q = self.shared.queue.lock();
            if q.refusal().is_some()
                || q.waiting.contains_key(&key)
                || q.prefetched.chunks.contains_key(&key)
            {
                return;
            }
            // A bounded window: the oldest queued prefetch gives way.
            let window = 4 * q.lanes.len().max(1);
            while q.prefetches.len() >= window {
                if let Some(old) = q.prefetches.pop_front() {
                    q.waiting.remove(&old);
                }
            }
            q.waiting.insert(
                key,
                Waiting {
                    frame: Arc::new(frame),
                    waiters: Vec::new(),
                    state: DecodeState::Prefetch,
                },
            );
            q.prefetches.push_back(key);
        }
        self.shared.wake.notify_all();
    }

    /// Whether `key` is decoded, being decoded or queued already.
    pub fn has(&self, key: &ChunkKey) -> bool {
        let q = self.shared.queue.lock();
        q.waiting.contains_key(key) || q.prefetched.chunks.contains_key(key)
    }

    /// Whether the pool has nothing to do.
    pub fn idle(&self) -> bool {
        let q = self.shared.queue.lock();
        q.readers.values().all(VecDeque::is_empty)
            && q.fg_encodes.is_empty()
            && q.prefetches.is_empty()
            && q.bg_encodes.is_empty()
            && q.lanes.iter().all(|l| !matches!(l, LaneState::Busy { .. }))
    }

    /// Lanes serving now.
    pub fn lanes(&self) -> usize {
        let q = self.shared.queue.lock();
        q.lanes
            .iter()
            .filter(|l| !matches!(l, LaneState::Gone))
            .count()
    }

    /// `Err` (why) when the pool can serve no more: it failed, or every lane is gone.
    pub fn health(&self) -> Result<(), String> {
        let q = self.shared.queue.lock();
        if let Some(why) = &q.failed {
            return Err(format!("the model pool failed: {why}"));
        }
        if !q.stop && q.lanes.iter().all(|l| matches!(l, LaneState::Gone)) {
            return Err("every model lane is gone".into());
        }
        Ok(())
    }

    /// The pool's counters since it started.
    pub fn stats(&self) -> PoolStats {
        *self.shared.stats.lock()
    }

    fn fail(&self, why: &str) {
        let mut q = self.shared.queue.lock();
        q.failed = Some(why.to_string());
        fail_all(&mut q, why);
    }

    /// Stops every lane (running background jobs are cancelled) and waits for them.
    pub fn stop(&self) {
        {
            let mut q = self.shared.queue.lock();
            q.stop = true;
            self.shared.stopping.store(true, Ordering::SeqCst);
            for l in &q.lanes {
                if let LaneState::Busy { cancel, .. } = l {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
            fail_all(&mut q, "the model pool stopped");
            q.readers.clear();
        }
        self.shared.wake.notify_all();
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                log::error!("a model lane panicked");
            }
        }
    }

    #[cfg(test)]
    fn pause_after_take(&self, d: Duration) {
        *self.shared.pause_after_take.lock() = d;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every queued job gets `why`; running ones finish and find no one left.
fn fail_all(q: &mut Queue, why: &str) {
    let failed: Decoded = Err(TierError::Failed(why.to_string()));
    for (_, w) in q.waiting.drain() {
        for tx in w.waiters {
            tx.send(&failed);
        }
    }
    q.readers.clear();
    q.prefetches.clear();
    for job in q.fg_encodes.drain(..).chain(q.bg_encodes.drain(..)) {
        let _ = job.reply.send(Err(TierError::Failed(why.to_string())));
    }
}

/// Foreground jobs waiting for a lane beyond the lanes free for them stop background
/// jobs, one per job, at their next model step.
fn preempt(q: &mut Queue) {
    let waiting_fg = q.readers.values().map(VecDeque::len).sum::<usize>() + q.fg_encodes.len();
    let free = q
        .lanes
        .iter()
        .filter(|l| match l {
            LaneState::Idle => true,
            LaneState::Busy { cancel, .. } => cancel.load(Ordering::SeqCst),
            LaneState::Gone => false,
        })
        .count();
    let mut short = waiting_fg.saturating_sub(free);
    for l in &q.lanes {
        if short == 0 {
            break;
        }
        if let LaneState::Busy {
            background: true,
            cancel,
            ..
        } = l
        {
            if !cancel.swap(true, Ordering::SeqCst) {
                short -= 1;
            }
        }
    }
}

/// The next job for lane `index`, under the queue's lock: (job, run wide, background).
fn pick(q: &mut Queue, index: usize, has_wide: bool) -> Option<(Job, bool, bool)> {
    // Readers, round-robin between requesters.
    let whos: Vec<u32> = q
        .readers
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(w, _)| *w)
        .collect();
    if !whos.is_empty() {
        // A lone read on an idle pool is lane 0's, which has the wide context.
        let lone = whos.len() == 1
            && q.readers.get(&whos[0]).map_or(0, VecDeque::len) == 1
            && q.fg_encodes.is_empty()
            && q.prefetches.is_empty()
            && q.bg_encodes.is_empty()
            && q.lanes.iter().all(|l| !matches!(l, LaneState::Busy { .. }));
        if lone && index != 0 && q.wide_lane && matches!(q.lanes[0], LaneState::Idle) {
            return None;
        }
        let next = match q.last_served {
            Some(last) => whos.iter().copied().find(|w| *w > last).unwrap_or(whos[0]),
            None => whos[0],
        };
        q.last_served = Some(next);
        let key = q.readers.get_mut(&next).and_then(VecDeque::pop_front)?;
        if q.readers.get(&next).is_some_and(VecDeque::is_empty) {
            q.readers.remove(&next);
        }
        let w = q.waiting.get_mut(&key)?;
        w.state = DecodeState::Running;
        let frame = Arc::clone(&w.frame);
        let others_busy = q
            .lanes
            .iter()
            .enumerate()
            .any(|(i, l)| i != index && matches!(l, LaneState::Busy { .. }));
        let queued = q.readers.values().any(|d| !d.is_empty())
            || !q.fg_encodes.is_empty()
            || !q.prefetches.is_empty()
            || !q.bg_encodes.is_empty();
        let wide = has_wide && !others_busy && !queued;
        return Some((Job::Decode { key, frame }, wide, false));
    }
    if q.wide_running {
        return None;
    }
    if let Some(job) = q.fg_encodes.pop_front() {
        return Some((Job::Encode(job), false, false));
    }
    while let Some(key) = q.prefetches.pop_front() {
        if let Some(w) = q.waiting.get_mut(&key) {
            w.state = DecodeState::Running;
            let frame = Arc::clone(&w.frame);
            return Some((Job::Decode { key, frame }, false, true));
        }
    }
    q.bg_encodes
        .pop_front()
        .map(|job| (Job::Encode(job), false, true))
}

/// A lane's loop: takes jobs until the pool stops.
fn serve(s: &Shared, index: usize, mut lane: Lane<'_>) {
    let has_wide = lane.wide.is_some();
    // The primer's state first (seconds of model time per context), so that the first
    // job does not wait for it; the wide context first, as a lone read runs there.
    if let Some(w) = lane.wide.as_mut() {
        prepare(s, &mut **w, index);
    }
    prepare(s, &mut *lane.narrow, index);
    // Statistics count jobs' model time, not the primer's.
    let mut last_stats = lane.narrow.stats();
    let mut last_wide_stats = lane.wide.as_ref().map(|w| w.stats()).unwrap_or_default();
    loop {
        let (job, wide, cancel) = {
            let mut q = s.queue.lock();
            loop {
                if q.stop {
                    return;
                }
                if let Some((job, wide, background)) = pick(&mut q, index, has_wide) {
                    // A fresh flag per job, set up under the lock: a reader that comes
                    // later finds this job's flag (see the module doc).
                    let cancel = Arc::new(AtomicBool::new(false));
                    let key = match &job {
                        Job::Decode { key, .. } => Some(*key),
                        Job::Encode(_) => None,
                    };
                    q.lanes[index] = LaneState::Busy {
                        background,
                        key,
                        cancel: Arc::clone(&cancel),
                    };
                    if wide {
                        q.wide_running = true;
                    }
                    break (job, wide, cancel);
                }
                s.wake.wait(&mut q);
            }
        };
        #[cfg(test)]
        {
            let pause = *s.pause_after_take.lock();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        let codec: &mut dyn ChunkCodec = match (&mut lane.wide, wide) {
            (Some(w), true) => &mut **w,
            _ => &mut *lane.narrow,
        };
        codec.set_cancel(cancel);
        run(s, codec, job, wide);
        // The lane's model time, for the pool's statistics.
        let (now, last) = if wide {
            (codec.stats(), &mut last_wide_stats)
        } else {
            (codec.stats(), &mut last_stats)
        };
        {
            let mut st = s.stats.lock();
            st.session.steps += now.steps - last.steps;
            st.session.llama_time += now.llama_time.saturating_sub(last.llama_time);
            st.session.table_time += now.table_time.saturating_sub(last.table_time);
            st.session.cross_entropy_bits += now.cross_entropy_bits - last.cross_entropy_bits;
        }
        *last = now;
        {
            let mut q = s.queue.lock();
            q.lanes[index] = LaneState::Idle;
            if wide {
                q.wide_running = false;
            }
        }
        s.wake.notify_all();
    }
}

/// Readies a lane's codec before its first job; a failure is logged, and met again by
/// the first job.
fn prepare(s: &Shared, codec: &mut dyn ChunkCodec, index: usize) {
    if s.queue.lock().stop {
        return;
    }
    codec.set_cancel(Arc::clone(&s.stopping));
    let t0 = Instant::now();
    match codec.prepare() {
        Ok(()) => log::debug!("lane {index} ready in {:?}", t0.elapsed()),
        Err(crate::frame::FrameError::Cancelled) => {
            log::debug!("lane {index}: preparing cancelled")
        }
        Err(e) => log::warn!("lane {index}: preparing the model failed: {e}"),
    }
}

/// Runs one job on `codec` and delivers its result.
fn run(s: &Shared, codec: &mut dyn ChunkCodec, job: Job, wide: bool) {
    match job {
        Job::Decode { key, frame } => {
            let t0 = Instant::now();
            let r = codec.decode(&frame).map(Arc::new);
            let took = t0.elapsed();
            let cancelled = matches!(r, Err(crate::frame::FrameError::Cancelled));
            {
                let mut st = s.stats.lock();
                if cancelled {
                    st.cancelled += 1;
                } else {
                    st.decodes += 1;
                    st.decode_time += took;
                    if let Ok(plain) = &r {
                        st.decoded_plain_bytes += plain.len() as u64;
                    }
                    st.decode_max = st.decode_max.max(took);
                    st.wide_decodes += u64::from(wide);
                }
            }
            let mut q = s.queue.lock();
            let Some(w) = q.waiting.remove(&key) else {
                return;
            };
            if w.waiters.is_empty() {
                // A prefetch: kept for the reader who asks next (dropped if stopped).
                if let Ok(plain) = r {
                    s.stats.lock().prefetches += 1;
                    q.prefetched.put(key, plain);
                }
                return;
            }
            if cancelled {
                // Only prefetches are stopped, and a reader joining one keeps it going;
                // should one be stopped anyway, its readers ask again.
                q.waiting.insert(
                    key,
                    Waiting {
                        state: DecodeState::Reader,
                        ..w
                    },
                );
                q.readers.entry(SYSTEM).or_default().push_back(key);
                return;
            }
            let r: Decoded = r.map_err(TierError::from);
            for tx in w.waiters {
                tx.send(&r);
            }
        }
        Job::Encode(job) => {
            let t0 = Instant::now();
            let r = codec.encode(&job.plain, job.fast.as_deref());
            let took = t0.elapsed();
            {
                let mut st = s.stats.lock();
                match &r {
                    Err(crate::frame::FrameError::Cancelled) => st.cancelled += 1,
                    Ok(coded) => {
                        st.encodes += 1;
                        st.encode_time += took;
                        st.encoded_plain_bytes += job.plain.len() as u64;
                        if coded.report.verify_failed {
                            st.verify_failures += 1;
                        }
                    }
                    Err(_) => {}
                }
            }
            let _ = job.reply.send(r.map_err(TierError::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::segment::SegmentReport;
    use crate::frame::{Codec, FrameError};
    use std::sync::atomic::AtomicUsize;

    /// A codec that takes `delay` per call (checking its cancel flag every millisecond)
    /// and "codes" by reversing bytes; counts calls and which context ran them.
    struct SlowCodec {
        delay: Duration,
        encode_delay: Duration,
        cancel: Arc<AtomicBool>,
        decodes: Arc<AtomicUsize>,
        wide_calls: Arc<AtomicUsize>,
        wide: bool,
        /// How long `prepare` takes (a primer's state), checking the flag likewise.
        prepare_delay: Duration,
    }

    impl SlowCodec {
        fn wait(&self, delay: Duration) -> Result<(), FrameError> {
            let end = Instant::now() + delay;
            while Instant::now() < end {
                if self.cancel.load(Ordering::SeqCst) {
                    return Err(FrameError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.wide {
                self.wide_calls.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    impl ChunkCodec for SlowCodec {
        fn encode(&mut self, plain: &[u8], _fast: Option<&[u8]>) -> Result<Coded, FrameError> {
            self.wait(self.encode_delay)?;
            Ok(Coded {
                frame: plain.iter().rev().copied().collect(),
                report: SegmentReport {
                    codec: Some(Codec::Llm),
                    ..SegmentReport::default()
                },
            })
        }
        fn decode(&mut self, frame: &[u8]) -> Result<Plain, FrameError> {
            self.decodes.fetch_add(1, Ordering::SeqCst);
            self.wait(self.delay)?;
            Ok(frame.iter().rev().copied().collect::<Vec<u8>>().into())
        }
        fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
            self.cancel = flag;
        }
        fn profile(&self) -> Vec<u8> {
            b"slow-reverse".to_vec()
        }
        fn prepare(&mut self) -> Result<(), FrameError> {
            let end = Instant::now() + self.prepare_delay;
            while Instant::now() < end {
                if self.cancel.load(Ordering::SeqCst) {
                    return Err(FrameError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }

    struct Fixture {
        pool: Arc<Pool>,
        decodes: Arc<AtomicUsize>,
        wide_calls: Arc<AtomicUsize>,
    }

    fn pool(lanes: usize, wide: bool, delay: Duration) -> Fixture {
        pool_with(lanes, wide, delay, delay)
    }

    /// Decodes take `delay`, encodes `encode_delay`.
    fn pool_with(lanes: usize, wide: bool, delay: Duration, encode_delay: Duration) -> Fixture {
        pool_prepared(lanes, wide, delay, encode_delay, Duration::ZERO)
    }

    /// Each lane's codecs also take `prepare_delay` to get ready.
    fn pool_prepared(
        lanes: usize,
        wide: bool,
        delay: Duration,
        encode_delay: Duration,
        prepare_delay: Duration,
    ) -> Fixture {
        let decodes = Arc::new(AtomicUsize::new(0));
        let wide_calls = Arc::new(AtomicUsize::new(0));
        let (d, w) = (decodes.clone(), wide_calls.clone());
        let config = PoolConfig {
            lanes,
            threads_per_lane: 1,
            wide_threads: wide.then_some(lanes as u32),
            prefetch_bytes: 1 << 20,
        };
        let starter: LaneStarter =
            Arc::new(move |spec: LaneSpec, serve: &mut dyn FnMut(Lane<'_>)| {
                let codec = |wide| SlowCodec {
                    delay,
                    encode_delay,
                    cancel: Arc::new(AtomicBool::new(false)),
                    decodes: d.clone(),
                    wide_calls: w.clone(),
                    wide,
                    prepare_delay,
                };
                let mut narrow = codec(false);
                let mut wide = spec.wide_threads.map(|_| codec(true));
                serve(Lane {
                    narrow: &mut narrow,
                    wide: wide.as_mut().map(|w| w as &mut dyn ChunkCodec),
                });
                Ok(())
            });
        Fixture {
            pool: Arc::new(Pool::start(config, starter).unwrap()),
            decodes,
            wide_calls,
        }
    }

    fn read(p: &Arc<Pool>, key: ChunkKey, who: u32) -> std::thread::JoinHandle<Duration> {
        let p = Arc::clone(p);
        std::thread::spawn(move || {
            let t0 = Instant::now();
            assert_eq!(*p.decode(key, b"ab", who).unwrap(), b"ba");
            t0.elapsed()
        })
    }

    #[test]
    fn concurrent_reads_of_different_chunks_run_on_different_lanes() {
        let f = pool(2, false, Duration::from_millis(300));
        let t0 = Instant::now();
        let a = read(&f.pool, (1, 0, 1), 0);
        let b = read(&f.pool, (2, 0, 1), 0);
        a.join().unwrap();
        b.join().unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "two reads on two lanes took {:?}",
            t0.elapsed()
        );
    }

    /// An unmount does not wait for lanes still computing their primer's state.
    #[test]
    fn stop_cuts_a_lanes_preparation_short() {
        let f = pool_prepared(
            2,
            true,
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        f.pool.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn concurrent_reads_of_one_chunk_decode_once() {
        let f = pool(2, false, Duration::from_millis(100));
        let threads: Vec<_> = (0..4).map(|_| read(&f.pool, (1, 2, 3), 0)).collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(f.decodes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_lone_read_on_an_idle_pool_runs_wide_and_busy_ones_do_not() {
        let f = pool(2, true, Duration::from_millis(50));
        read(&f.pool, (1, 0, 1), 0).join().unwrap();
        assert_eq!(f.wide_calls.load(Ordering::SeqCst), 1);
        let busy: Vec<_> = (0..4).map(|i| read(&f.pool, (2, i, 1), 0)).collect();
        for t in busy {
            t.join().unwrap();
        }
        assert!(f.pool.stats().wide_decodes <= 2, "{:?}", f.pool.stats());
    }

    #[test]
    fn background_encodes_use_every_lane() {
        let f = pool(3, false, Duration::from_millis(200));
        let t0 = Instant::now();
        let tickets: Vec<_> = (0..3)
            .map(|i| f.pool.submit_encode(Arc::new(vec![i; 10].into()), false))
            .collect();
        for t in tickets {
            t.wait().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_millis(380),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn a_read_stops_a_background_encode_within_a_step() {
        let f = pool_with(1, false, Duration::from_millis(100), Duration::from_secs(2));
        let bg = f
            .pool
            .submit_encode(Arc::new(b"xyz".to_vec().into()), false);
        std::thread::sleep(Duration::from_millis(50));
        let took = read(&f.pool, (1, 1, 1), 7).join().unwrap();
        assert!(
            took < Duration::from_millis(600),
            "the read waited {took:?}"
        );
        assert_eq!(bg.wait().unwrap_err(), TierError::Cancelled);
        assert_eq!(f.pool.stats().cancelled, 1);
    }

    /// The race the single model thread had: a reader arriving after a lane took a
    /// background job but before the job began must still stop it. The hook holds the
    /// lane in that window; with one shared flag cleared after the lock, the reader set
    /// it during the pause, the lane cleared it, and the read waited the whole encode.
    #[test]
    fn a_read_arriving_as_a_background_job_starts_still_stops_it() {
        let f = pool_with(1, false, Duration::from_millis(100), Duration::from_secs(2));
        f.pool.pause_after_take(Duration::from_millis(150));
        let bg = f
            .pool
            .submit_encode(Arc::new(b"xyz".to_vec().into()), false);
        std::thread::sleep(Duration::from_millis(50)); // inside the pause
        let took = read(&f.pool, (1, 1, 1), 7).join().unwrap();
        assert!(
            took < Duration::from_millis(700),
            "the read waited behind the encode: {took:?}"
        );
        assert_eq!(bg.wait().unwrap_err(), TierError::Cancelled);
    }

    #[test]
    fn one_users_flood_of_reads_delays_another_by_one_decode_per_lane() {
        let f = pool(1, false, Duration::from_millis(100));
        let flood: Vec<_> = (0..10).map(|i| read(&f.pool, (9, i, 1), 1000)).collect();
        std::thread::sleep(Duration::from_millis(30));
        let took = read(&f.pool, (1, 0, 1), 0).join().unwrap();
        // Round-robin: one flood decode running, at most one more before ours.
        assert!(
            took < Duration::from_millis(350),
            "the other user waited {took:?}"
        );
        for t in flood {
            t.join().unwrap();
        }
    }

    #[test]
    fn prefetched_chunks_are_handed_to_the_reader_without_a_decode() {
        let f = pool(2, false, Duration::from_millis(50));
        f.pool.prefetch((5, 1, 1), b"cd".to_vec());
        let t0 = Instant::now();
        while !f.pool.idle() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = f.decodes.load(Ordering::SeqCst);
        assert_eq!(*f.pool.decode((5, 1, 1), b"cd", 0).unwrap(), b"dc");
        assert_eq!(f.decodes.load(Ordering::SeqCst), before);
        assert_eq!(f.pool.stats().prefetch_hits, 1);
    }

    #[test]
    fn a_pool_whose_lanes_cannot_start_fails_with_the_reason() {
        let starter: LaneStarter = Arc::new(|_, _| Err("no model here".into()));
        let err = Pool::start(PoolConfig::new(Some(2), Some(2)), starter)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no model here"), "{err}");
    }

    #[test]
    fn the_thread_budget_is_shared_between_lanes() {
        let c = PoolConfig::new(Some(2), Some(2));
        assert_eq!(
            (c.lanes, c.threads_per_lane, c.wide_threads),
            (2, 1, Some(2))
        );
        let c = PoolConfig::new(Some(1), Some(2));
        assert_eq!((c.lanes, c.threads_per_lane, c.wide_threads), (1, 2, None));
        let c = PoolConfig::new(Some(1), Some(1));
        assert_eq!((c.lanes, c.threads_per_lane, c.wide_threads), (1, 1, None));
        let c = PoolConfig::new(Some(4), Some(2));
        assert_eq!((c.lanes, c.threads_per_lane), (4, 1));
    }
}
