//! The cache of decoded chunks, bounded in bytes, least recently used out first, in two
//! classes: chunks that were cheap to get (the plaintext of chunks just written, which
//! the next append or edit of the chunk needs) and chunks the language model decoded
//! (seconds each on a CPU). Cheap chunks are evicted first, so a burst of fresh writes
//! never pushes out a chunk that cost 9 s. A fast chunk a read decodes from the store is
//! not cached: decoding it again takes microseconds and the kernel's page cache keeps
//! what was read.
//!
//! Each entry carries the chunk's content version (see [`crate::store::records::Inode`]);
//! writers replace or drop entries under the file's lock, so an entry is always the
//! chunk's current plaintext.
//!
//! An entry is charged what it holds in memory, not the length of its plaintext: the
//! buffer's capacity and the bookkeeping around it ([`ENTRY_OVERHEAD`]). Charging the
//! length let 100,000 files of 100 bytes, each cached in a 4 KiB write buffer, take the
//! daemon to 464 MB with a 64 MiB cache (measured); small buffers are also shrunk to fit
//! before they are cached.

use crate::frame::Plain;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Key = (u64, u64);

/// Bytes an entry costs besides its buffer: the LRU node with its key and entry, the
/// `Arc` and `Vec` headers and the allocator's rounding (measured with the mount test
/// of many small files: about 150 bytes; rounded up).
pub const ENTRY_OVERHEAD: usize = 192;

/// What an entry is charged.
fn cost(c: &Cached) -> usize {
    c.plain.capacity() + ENTRY_OVERHEAD
}

/// `buf` with its spare capacity given back when that is more than a quarter of it: a
/// chunk's write buffer is `chunk_size` bytes whatever the file's length.
pub fn fit(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() - buf.len() > buf.capacity() / 4 {
        buf.shrink_to_fit();
    }
    buf
}

/// What one read found: chunks served from the cache, and chunks it loaded from the
/// store (holes included). A read counts the round that served it, once it succeeds:
/// a read first tried on a FUSE thread without the model ([`super::chunk::Wait::NoModel`])
/// and then again on a slow-request thread, or one that goes round again because the
/// file changed meanwhile, counts each chunk once. Edits are not counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadTally {
    pub hits: u64,
    pub misses: u64,
}

/// A decoded chunk: its content version and plaintext.
#[derive(Clone, Debug)]
pub struct Cached {
    pub ver: u64,
    pub plain: Arc<Plain>,
}

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Chunks reads found here, and chunks they had to load from the store, since
    /// mount: for statistics ([`ReadTally`]).
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    cheap: lru::LruCache<Key, Cached>,
    costly: lru::LruCache<Key, Cached>,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(capacity_bytes: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner {
                cheap: lru::LruCache::unbounded(),
                costly: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Adds what a read found ([`ReadTally`]) to the counts since mount.
    pub fn count(&self, t: ReadTally) {
        self.hits.fetch_add(t.hits, Ordering::Relaxed);
        self.misses.fetch_add(t.misses, Ordering::Relaxed);
    }

    /// (hits, misses) of reads since mount.
    pub fn hits_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Bytes the cache may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, ino: u64, index: u64) -> Option<Cached> {
        let mut g = self.inner.lock();
        if let Some(c) = g.costly.get(&(ino, index)) {
            return Some(c.clone());
        }
        g.cheap.get(&(ino, index)).cloned()
    }

    /// Whether the chunk is cached as one the model decoded.
    pub fn is_costly(&self, ino: u64, index: u64) -> bool {
        self.inner.lock().costly.contains(&(ino, index))
    }

    /// Caches a chunk; `costly` when the model had to decode it.
    pub fn put(&self, ino: u64, index: u64, entry: Cached, costly: bool) {
        self.remove(ino, index);
        if cost(&entry) > self.capacity {
            return;
        }
        let mut g = self.inner.lock();
        g.bytes += cost(&entry);
        if costly {
            g.costly.put((ino, index), entry);
        } else {
            g.cheap.put((ino, index), entry);
        }
        while g.bytes > self.capacity {
            let popped = match g.cheap.pop_lru() {
                Some(x) => Some(x),
                None => g.costly.pop_lru(),
            };
            match popped {
                Some((_, v)) => g.bytes -= cost(&v),
                None => break,
            }
        }
    }

    pub fn remove(&self, ino: u64, index: u64) {
        let mut g = self.inner.lock();
        for class in [true, false] {
            let removed = if class {
                g.costly.pop(&(ino, index))
            } else {
                g.cheap.pop(&(ino, index))
            };
            if let Some(v) = removed {
                g.bytes -= cost(&v);
            }
        }
    }

    /// Bytes the cache holds (as charged), and how many of them the model decoded.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.inner.lock();
        let costly = g.costly.iter().map(|(_, v)| cost(v)).sum();
        (g.bytes, costly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> Cached {
        Cached {
            ver: 1,
            plain: Arc::new(vec![0; len].into()),
        }
    }

    /// Room for `n` entries of 4 bytes.
    fn room(n: usize) -> usize {
        n * (4 + ENTRY_OVERHEAD)
    }

    #[test]
    fn evicts_least_recently_used_past_capacity() {
        let c = ChunkCache::new(room(2) + 2);
        c.put(1, 0, entry(4), false);
        c.put(1, 1, entry(4), false);
        assert!(c.get(1, 0).is_some());
        c.put(1, 2, entry(4), false);
        assert!(c.get(1, 1).is_none(), "least recently used goes first");
        assert!(c.get(1, 0).is_some() && c.get(1, 2).is_some());
    }

    #[test]
    fn cheap_chunks_go_before_costly_ones() {
        let c = ChunkCache::new(room(3));
        c.put(1, 0, entry(4), true);
        for i in 1..10 {
            c.put(2, i, entry(4), false);
        }
        assert!(
            c.get(1, 0).is_some(),
            "a model-decoded chunk outlives fresh writes"
        );
        assert_eq!(c.usage(), (room(3), room(1)));
        c.put(3, 0, entry(4), true);
        c.put(3, 1, entry(4), true);
        c.put(3, 2, entry(4), true);
        assert!(c.get(1, 0).is_none(), "costly ones still go, oldest first");
        assert_eq!(c.usage().0, room(3));
    }

    #[test]
    fn a_small_chunk_in_a_big_buffer_is_charged_its_buffer_until_shrunk() {
        let c = ChunkCache::new(64 << 10);
        let buffer = || {
            let mut b = Vec::with_capacity(4096);
            b.extend_from_slice(b"100 bytes");
            b
        };
        let wasteful = Cached {
            ver: 1,
            plain: Arc::new(buffer().into()),
        };
        c.put(1, 0, wasteful, false);
        assert!(c.usage().0 >= 4096);
        let fitted = Cached {
            ver: 1,
            plain: Arc::new(fit(buffer()).into()),
        };
        c.put(1, 0, fitted, false);
        assert!(c.usage().0 < 64 + ENTRY_OVERHEAD, "{:?}", c.usage());
    }
}
