//! The language model inside the filesystem: one named thread, `llmfs-model`, owns the
//! model and codes chunks for everyone else.
//!
//! Work comes in four kinds, served in this order:
//! 1. decodes a reader waits for (a cold read, an edit of a model-coded chunk);
//! 2. encodes a writer waits for (`sync_llm`);
//! 3. prefetches: the next chunk of a file read sequentially, decoded into the cache;
//! 4. the compactor's encodes.
//!
//! Kinds 3 and 4 run under a cancel flag that the coder checks at every token: when work
//! of kind 1 or 2 arrives, the running background job stops within one model step and
//! is tried again later, so a reader never waits behind a 9-second encode.
//!
//! Concurrent decodes of one chunk version are coded once: later callers wait for the
//! first one's result.

use crate::frame::FrameError;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What the filesystem needs from a language-model codec.
pub trait ChunkCodec {
    /// Codes `plain` with the model, and decodes the result again to compare.
    fn encode(&mut self, plain: &[u8]) -> Result<Encoded, FrameError>;
    /// Decodes an LLM frame (checking its CRC).
    fn decode(&mut self, frame: &[u8]) -> Result<Vec<u8>, FrameError>;
    /// The flag that stops an encode or decode at the next token with
    /// [`FrameError::Cancelled`].
    fn set_cancel(&mut self, flag: Arc<AtomicBool>);
    /// What the code depends on (the encoded codec profile), pinned to a store with its
    /// first LLM frame.
    fn profile(&self) -> Vec<u8>;
}

/// What an encode gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// An LLM frame smaller than the fast one, decoded again and found equal.
    Llm(Vec<u8>),
    /// The model did not win (or cannot code the bytes): keep the fast frame.
    NotWon,
    /// The decode of the model's frame gave other bytes: keep the fast frame.
    VerifyFailed,
}

/// Starts the codec on the worker thread (the model and its session live on that
/// thread's stack) and hands it to `serve`, which returns at shutdown.
pub type Starter =
    Box<dyn FnOnce(&mut dyn FnMut(&mut dyn ChunkCodec)) -> Result<(), String> + Send>;

/// (ino, chunk index, content version): one plaintext for good.
pub type ChunkKey = (u64, u64, u64);

type DecodeResult = Result<Arc<Vec<u8>>, String>;
type Prefetched = Box<dyn FnOnce(DecodeResult) + Send>;

/// A frame to decode and everyone waiting for it.
type Waiting = (Arc<Vec<u8>>, Vec<mpsc::Sender<DecodeResult>>);

struct EncodeJob {
    plain: Arc<Vec<u8>>,
    reply: mpsc::Sender<Result<Encoded, FrameError>>,
}

enum Job {
    Decode(ChunkKey, Arc<Vec<u8>>),
    Encode(EncodeJob, bool),
    Prefetch(Vec<u8>, Prefetched),
}

#[derive(Default)]
struct Queue {
    decodes: VecDeque<ChunkKey>,
    /// Frames to decode and who waits for each.
    waiting: HashMap<ChunkKey, Waiting>,
    fg_encodes: VecDeque<EncodeJob>,
    prefetch: Option<(ChunkKey, Vec<u8>, Prefetched)>,
    bg_encode: Option<EncodeJob>,
    /// A background job (prefetch or compaction) is running.
    running_bg: bool,
    stop: bool,
    /// The model could not start: every job fails with this.
    failed: Option<String>,
}

/// Counters for live statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct TierStats {
    pub decodes: u64,
    pub decode_time: Duration,
    pub decode_max: Duration,
    pub encodes: u64,
    pub encode_time: Duration,
    pub encoded_plain_bytes: u64,
    pub cancelled: u64,
    pub verify_failures: u64,
    pub prefetches: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Raised to stop the running background job at its next token.
    cancel_bg: Arc<AtomicBool>,
    stats: Mutex<TierStats>,
}

pub struct ModelWorker {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    profile: Vec<u8>,
}

impl ModelWorker {
    /// Starts the worker thread; returns once the codec is up (or failed to start).
    pub fn start(starter: Starter) -> Result<ModelWorker, String> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            cancel_bg: Arc::new(AtomicBool::new(false)),
            stats: Mutex::new(TierStats::default()),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Vec<u8>>();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("llmfs-model".into())
            .spawn(move || {
                let mut ready = Some(ready_tx);
                let result = starter(&mut |codec: &mut dyn ChunkCodec| {
                    if let Some(r) = ready.take() {
                        let _ = r.send(codec.profile());
                    }
                    serve(&s, codec);
                });
                let why = match result {
                    Ok(()) => "the model worker stopped".to_string(),
                    Err(e) => e,
                };
                fail_all(&s, &why);
            })
            .map_err(|e| format!("starting the model thread: {e}"))?;
        let ready = ready_rx.recv();
        let mut worker = ModelWorker {
            shared,
            thread: Mutex::new(Some(thread)),
            profile: Vec::new(),
        };
        match ready {
            Ok(profile) => {
                worker.profile = profile;
                Ok(worker)
            }
            Err(_) => {
                worker.stop();
                let why = worker.shared.queue.lock().failed.clone();
                Err(why.unwrap_or_else(|| "the model did not start".into()))
            }
        }
    }

    /// The profile of the codec this worker runs.
    pub fn profile(&self) -> &[u8] {
        &self.profile
    }

    /// Decodes an LLM frame of chunk `key`, waiting (seconds on a CPU). Callers of the
    /// same key share one decode.
    pub fn decode(&self, key: ChunkKey, frame: &[u8]) -> Result<Arc<Vec<u8>>, String> {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(why) = &q.failed {
                return Err(why.clone());
            }
            match q.waiting.get_mut(&key) {
                Some((_, waiters)) => waiters.push(tx),
                None => {
                    q.waiting.insert(key, (Arc::new(frame.to_vec()), vec![tx]));
                    q.decodes.push_back(key);
                }
            }
            self.preempt(&q);
        }
        self.shared.wake.notify_all();
        rx.recv()
            .unwrap_or_else(|_| Err("the model worker stopped".into()))
    }

    /// Encodes `plain`, waiting; `foreground` (a writer waits) goes before background
    /// work and is never cancelled; background encodes return
    /// [`FrameError::Cancelled`] when foreground work needs the model.
    pub fn encode(&self, plain: Arc<Vec<u8>>, foreground: bool) -> Result<Encoded, FrameError> {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock();
            if let Some(why) = &q.failed {
                return Err(FrameError::Model(why.clone()));
            }
            let job = EncodeJob { plain, reply: tx };
            if foreground {
                q.fg_encodes.push_back(job);
                self.preempt(&q);
            } else {
                // One compactor: a newer background job replaces an unstarted one.
                q.bg_encode = Some(job);
            }
        }
        self.shared.wake.notify_all();
        rx.recv()
            .unwrap_or_else(|_| Err(FrameError::Model("the model worker stopped".into())))
    }

    /// Decodes `frame` in the background when the model has nothing else to do, and
    /// hands the result to `done` (dropped unheard if foreground work comes first).
    pub fn prefetch(&self, key: ChunkKey, frame: Vec<u8>, done: Prefetched) {
        {
            let mut q = self.shared.queue.lock();
            if q.failed.is_some() || q.waiting.contains_key(&key) {
                return;
            }
            q.prefetch = Some((key, frame, done));
        }
        self.shared.wake.notify_all();
    }

    /// Whether the model has nothing to do.
    pub fn idle(&self) -> bool {
        let q = self.shared.queue.lock();
        q.decodes.is_empty()
            && q.fg_encodes.is_empty()
            && q.prefetch.is_none()
            && q.bg_encode.is_none()
            && !q.running_bg
    }

    pub fn stats(&self) -> TierStats {
        *self.shared.stats.lock()
    }

    /// Asks a running background job to stop at its next token.
    fn preempt(&self, q: &Queue) {
        if q.running_bg {
            self.shared.cancel_bg.store(true, Ordering::SeqCst);
        }
    }

    /// Stops the worker (a running background job is cancelled) and waits for it.
    pub fn stop(&self) {
        self.shared.queue.lock().stop = true;
        self.shared.cancel_bg.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                log::error!("the model thread panicked");
            }
        }
    }
}

impl Drop for ModelWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker's loop: takes jobs by priority until told to stop.
fn serve(s: &Shared, codec: &mut dyn ChunkCodec) {
    let never = Arc::new(AtomicBool::new(false));
    loop {
        let job = {
            let mut q = s.queue.lock();
            loop {
                if q.stop {
                    return;
                }
                if let Some(key) = q.decodes.pop_front() {
                    let frame = q.waiting.get(&key).map(|w| Arc::clone(&w.0));
                    if let Some(frame) = frame {
                        break Job::Decode(key, frame);
                    }
                    continue;
                }
                if let Some(job) = q.fg_encodes.pop_front() {
                    break Job::Encode(job, false);
                }
                if let Some((key, frame, done)) = q.prefetch.take() {
                    if q.waiting.contains_key(&key) {
                        continue; // a reader asked for it meanwhile
                    }
                    q.running_bg = true;
                    break Job::Prefetch(frame, done);
                }
                if let Some(job) = q.bg_encode.take() {
                    q.running_bg = true;
                    break Job::Encode(job, true);
                }
                s.wake.wait(&mut q);
            }
        };
        match job {
            Job::Decode(key, frame) => {
                codec.set_cancel(Arc::clone(&never));
                let t0 = Instant::now();
                let r = codec
                    .decode(&frame)
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                let took = t0.elapsed();
                {
                    let mut st = s.stats.lock();
                    st.decodes += 1;
                    st.decode_time += took;
                    st.decode_max = st.decode_max.max(took);
                }
                let waiters = s.queue.lock().waiting.remove(&key);
                for w in waiters.map(|w| w.1).unwrap_or_default() {
                    let _ = w.send(r.clone());
                }
            }
            Job::Encode(job, background) => {
                let flag = if background {
                    s.cancel_bg.store(false, Ordering::SeqCst);
                    Arc::clone(&s.cancel_bg)
                } else {
                    Arc::clone(&never)
                };
                codec.set_cancel(flag);
                let t0 = Instant::now();
                let r = codec.encode(&job.plain);
                let took = t0.elapsed();
                {
                    let mut st = s.stats.lock();
                    match &r {
                        Err(FrameError::Cancelled) => st.cancelled += 1,
                        Ok(outcome) => {
                            st.encodes += 1;
                            st.encode_time += took;
                            st.encoded_plain_bytes += job.plain.len() as u64;
                            if *outcome == Encoded::VerifyFailed {
                                st.verify_failures += 1;
                            }
                        }
                        Err(_) => {}
                    }
                }
                if background {
                    s.queue.lock().running_bg = false;
                }
                let _ = job.reply.send(r);
            }
            Job::Prefetch(frame, done) => {
                s.cancel_bg.store(false, Ordering::SeqCst);
                codec.set_cancel(Arc::clone(&s.cancel_bg));
                let r = codec.decode(&frame);
                s.queue.lock().running_bg = false;
                match r {
                    Err(FrameError::Cancelled) => s.stats.lock().cancelled += 1,
                    r => {
                        s.stats.lock().prefetches += 1;
                        done(r.map(Arc::new).map_err(|e| e.to_string()));
                    }
                }
            }
        }
    }
}

/// The codec is gone: every waiting and later job gets `why`.
fn fail_all(s: &Shared, why: &str) {
    let mut q = s.queue.lock();
    q.failed = Some(why.to_string());
    for (_, (_, waiters)) in q.waiting.drain() {
        for w in waiters {
            let _ = w.send(Err(why.to_string()));
        }
    }
    q.decodes.clear();
    let bg = q.bg_encode.take();
    for job in q.fg_encodes.drain(..).chain(bg) {
        let _ = job.reply.send(Err(FrameError::Model(why.to_string())));
    }
    q.prefetch = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A codec that takes `delay` per call and "codes" by reversing bytes, counting
    /// calls; encodes check the cancel flag every millisecond.
    struct SlowCodec {
        delay: Duration,
        cancel: Arc<AtomicBool>,
        decodes: Arc<AtomicUsize>,
    }

    impl ChunkCodec for SlowCodec {
        fn encode(&mut self, plain: &[u8]) -> Result<Encoded, FrameError> {
            let end = Instant::now() + self.delay;
            while Instant::now() < end {
                if self.cancel.load(Ordering::SeqCst) {
                    return Err(FrameError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Encoded::Llm(plain.iter().rev().copied().collect()))
        }
        fn decode(&mut self, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
            self.decodes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            Ok(frame.iter().rev().copied().collect())
        }
        fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
            self.cancel = flag;
        }
        fn profile(&self) -> Vec<u8> {
            b"slow-reverse".to_vec()
        }
    }

    fn worker(delay: Duration) -> (ModelWorker, Arc<AtomicUsize>) {
        let decodes = Arc::new(AtomicUsize::new(0));
        let d = decodes.clone();
        let w = ModelWorker::start(Box::new(move |serve| {
            let mut c = SlowCodec {
                delay,
                cancel: Arc::new(AtomicBool::new(false)),
                decodes: d,
            };
            serve(&mut c);
            Ok(())
        }))
        .unwrap();
        (w, decodes)
    }

    #[test]
    fn concurrent_decodes_of_one_chunk_decode_once() {
        let (w, decodes) = worker(Duration::from_millis(100));
        let w = Arc::new(w);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || w.decode((1, 2, 3), b"abc").unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), b"cba");
        }
        assert_eq!(decodes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_decode_cancels_a_background_encode_and_goes_first() {
        let (w, _) = worker(Duration::from_millis(300));
        let w = Arc::new(w);
        let bg = {
            let w = w.clone();
            std::thread::spawn(move || w.encode(Arc::new(b"xyz".to_vec()), false))
        };
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(*w.decode((1, 1, 1), b"ab").unwrap(), b"ba");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "the decode waited behind the encode: {:?}",
            t0.elapsed()
        );
        assert!(matches!(bg.join().unwrap(), Err(FrameError::Cancelled)));
        // Retried, it completes.
        assert_eq!(
            w.encode(Arc::new(b"xyz".to_vec()), false).unwrap(),
            Encoded::Llm(b"zyx".to_vec())
        );
        assert_eq!(w.stats().cancelled, 1);
    }

    #[test]
    fn a_codec_that_cannot_start_fails_every_call_with_its_reason() {
        let err = ModelWorker::start(Box::new(|_serve| Err("no model here".into())))
            .err()
            .unwrap();
        assert!(err.contains("no model here"), "{err}");
    }
}
