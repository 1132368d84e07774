//! Framing ahead: a chunk that a write fills to its end is compressed on a helper thread
//! (`llmfs-ahead`) while the writer goes on, so that the commit that persists it (the
//! flush of a close, an fsync) finds its frame made instead of compressing it then,
//! serial with the writer: `tar -x` writes each file and closes it at once, and waits
//! for the close. Only while the file has fewer dirty chunks than a commit frames on
//! every core at once (`PARALLEL_FRAMING`, 64): a sequential writer's commits at the
//! dirty limit are framed on both cores already, and offering its chunks cost it 5% of
//! its speed in copies and compares for nothing (measured: fio 1 MiB writes, 184-202
//! against 195-209 MB/s).
//!
//! Measured with `tar -xf` of /usr/include (8,838 entries, -o nomodel, 5 runs of each
//! build alternating, 2 cores): 1.84 s against 1.89 s at the median; 18,722 of its
//! 24,346 whole chunks were framed ahead, and every one of those was used.
//!
//! A prepared frame is used only for exactly the plaintext it was made from: the helper
//! keeps a copy of the chunk as it was offered, and the commit compares it byte for byte
//! with the chunk it persists (4 KiB, tens of nanoseconds). A chunk written again
//! meanwhile, truncated, or made of zeros is framed by the commit as before, so nothing
//! here decides what is stored, only when the compression runs. Everything is best
//! effort and bounded: no helper on one core, and a chunk is not offered while the
//! helper is [`QUEUE`] chunks behind or [`MAX_HELD`] chunks are queued or prepared
//! (about 8 MiB at most, plaintext and frames); entries nobody took (a file deleted
//! before its close) are dropped after [`STALE`] when room is needed.

use super::chunk::{cores, encode_chunk};
use crate::frame::Frame;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Chunks offered and not yet framed by the helper, at most.
const QUEUE: usize = 1024;
/// Chunks queued or prepared at once, at most: a file offers fewer than 64 before its
/// commit takes them, so this is many files written at once.
const MAX_HELD: usize = 1024;
/// A prepared frame nobody took for this long goes when room is needed.
const STALE: Duration = Duration::from_secs(5);

/// What is held for a chunk.
enum Slot {
    /// Offered; the helper frames it unless the entry changed by then.
    Queued(u64),
    /// Framed: the plaintext it was made from, and the frame.
    Ready(Box<[u8]>, Frame),
}

struct Held {
    at: Instant,
    slot: Slot,
}

/// What the helper thread shares with the filesystem.
#[derive(Default)]
struct Shared {
    held: Mutex<HashMap<(u64, u64), Held>>,
    /// Frames the helper made.
    made: AtomicU64,
}

/// A chunk offered to the helper: the offer's sequence number names its entry.
struct Job {
    key: (u64, u64),
    seq: u64,
    plain: Box<[u8]>,
}

/// The helper thread's queue and the frames it made, by (inode, chunk index).
#[derive(Default)]
pub(super) struct Ahead {
    shared: Arc<Shared>,
    /// Started at the first offer; `None` with one core or when the thread could not be
    /// started (then nothing is framed ahead). The helper ends when this sender is
    /// dropped with the filesystem.
    queue: OnceLock<Option<SyncSender<Job>>>,
    next: AtomicU64,
    /// Frames a commit used.
    used: AtomicU64,
}

impl Ahead {
    /// Offers chunk `idx` of `ino`, whose plaintext is now `plain` (a whole chunk), for
    /// framing ahead; does nothing when the helper is behind or enough is held.
    pub(super) fn offer(&self, ino: u64, idx: u64, plain: &[u8]) {
        let Some(queue) = self.queue() else {
            return;
        };
        let key = (ino, idx);
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut m = self.shared.held.lock();
            if m.len() >= MAX_HELD {
                m.retain(|_, h| h.at.elapsed() < STALE);
                if m.len() >= MAX_HELD {
                    return;
                }
            }
            let at = Instant::now();
            m.insert(
                key,
                Held {
                    at,
                    slot: Slot::Queued(seq),
                },
            );
        }
        let job = Job {
            key,
            seq,
            plain: plain.into(),
        };
        if queue.try_send(job).is_err() {
            // Behind (or gone): the commit frames this chunk itself.
            let mut m = self.shared.held.lock();
            if is_queued(&m, key, seq) {
                m.remove(&key);
            }
        }
    }

    /// The frame prepared for chunk `idx` of `ino` if it was made from exactly `plain`.
    /// The entry goes either way: a job still queued for it is skipped.
    pub(super) fn take(&self, ino: u64, idx: u64, plain: &[u8]) -> Option<Frame> {
        let mut m = self.shared.held.lock();
        if m.is_empty() {
            return None;
        }
        match m.remove(&(ino, idx))?.slot {
            Slot::Ready(made_from, frame) if *made_from == *plain => {
                self.used.fetch_add(1, Ordering::Relaxed);
                Some(frame)
            }
            _ => None,
        }
    }

    /// Frames the helper made and frames commits used, since the start.
    pub(super) fn counts(&self) -> (u64, u64) {
        let made = self.shared.made.load(Ordering::Relaxed);
        (made, self.used.load(Ordering::Relaxed))
    }

    fn queue(&self) -> Option<&SyncSender<Job>> {
        self.queue
            .get_or_init(|| {
                if cores() < 2 {
                    return None;
                }
                let (tx, rx) = sync_channel(QUEUE);
                let shared = Arc::clone(&self.shared);
                let spawned = std::thread::Builder::new()
                    .name("llmfs-ahead".into())
                    .spawn(move || run(&shared, &rx));
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        log::debug!("no thread to frame chunks ahead ({e}): commits frame them");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Whether `key`'s entry is still the offer `seq`, not taken or offered again since.
fn is_queued(m: &HashMap<(u64, u64), Held>, key: (u64, u64), seq: u64) -> bool {
    matches!(m.get(&key), Some(Held { slot: Slot::Queued(s), .. }) if *s == seq)
}

/// The helper: frames each job whose entry still waits for it, until the queue's
/// sender is dropped.
fn run(shared: &Shared, rx: &Receiver<Job>) {
    while let Ok(Job { key, seq, plain }) = rx.recv() {
        if !is_queued(&shared.held.lock(), key, seq) {
            continue;
        }
        // A chunk of zeros is not stored; the commit drops it (not framed here).
        let frame = (!plain.iter().all(|&b| b == 0)).then(|| encode_chunk(&plain));
        let mut m = shared.held.lock();
        if !is_queued(&m, key, seq) {
            continue;
        }
        match frame {
            Some(frame) => {
                let at = Instant::now();
                m.insert(
                    key,
                    Held {
                        at,
                        slot: Slot::Ready(plain, frame),
                    },
                );
                shared.made.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                m.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u8) -> Vec<u8> {
        format!("chunk {seed} of a log line, ")
            .repeat(200)
            .into_bytes()[..4096]
            .to_vec()
    }

    /// Waits (at most 10 s) until the helper made `n` frames in all.
    fn made(a: &Ahead, n: u64) {
        let end = Instant::now() + Duration::from_secs(10);
        while a.counts().0 < n {
            assert!(
                Instant::now() < end,
                "the helper made {:?} of {n}",
                a.counts()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_frame_made_ahead_is_given_only_for_the_plaintext_it_was_made_from() {
        if cores() < 2 {
            // No helper on one core: nothing is ever prepared.
            let a = Ahead::default();
            a.offer(1, 0, &text(1));
            assert!(a.take(1, 0, &text(1)).is_none());
            return;
        }
        let a = Ahead::default();
        a.offer(1, 0, &text(1));
        a.offer(1, 1, &text(2));
        a.offer(2, 0, &vec![0; 4096]);
        made(&a, 2);
        // Zeros are left to the commit (it stores no frame for them).
        assert!(a.take(2, 0, &vec![0; 4096]).is_none());
        // The same bytes: the frame the commit would have made.
        assert_eq!(
            a.take(1, 0, &text(1)).as_deref(),
            Some(&encode_chunk(&text(1))[..])
        );
        // Other bytes (written again since): nothing, and the entry is gone.
        let mut changed = text(2);
        changed[4095] ^= 1;
        assert!(a.take(1, 1, &changed).is_none());
        assert!(
            a.take(1, 1, &text(2)).is_none(),
            "taken once, mismatched or not"
        );
        assert!(a.take(1, 0, &text(1)).is_none(), "taken once");
        assert_eq!(a.counts(), (2, 1));
    }

    #[test]
    fn what_is_held_is_bounded_and_an_offer_taken_before_its_turn_is_skipped() {
        if cores() < 2 {
            return;
        }
        let a = Ahead::default();
        let plain = text(3);
        for idx in 0..(MAX_HELD as u64 + 500) {
            a.offer(7, idx, &plain);
        }
        assert!(a.shared.held.lock().len() <= MAX_HELD);
        // Whatever is still queued is dropped by a take; the helper then skips it.
        for idx in 0..(MAX_HELD as u64 + 500) {
            a.take(7, idx, &plain);
        }
        assert!(a.shared.held.lock().is_empty());
        let before = a.counts().0;
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.shared.held.lock().is_empty(), "nothing taken comes back");
        assert!(a.counts().0 <= before + 1, "skipped jobs are not framed");
    }
}
