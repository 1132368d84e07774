//! The cache of decoded chunks, bounded in bytes, least recently used out first, in two
//! classes: chunks that were cheap to get (written, or decoded from zstd in microseconds)
//! and chunks the language model decoded (seconds each on a CPU). Cheap chunks are
//! evicted first, so a burst of fresh writes never pushes out a chunk that cost 9 s.
//!
//! Each entry carries the chunk's content version (see [`crate::store::records::Inode`]);
//! writers replace or drop entries under the file's lock, so an entry is always the
//! chunk's current plaintext.

use parking_lot::Mutex;
use std::sync::Arc;

type Key = (u64, u64);

/// A decoded chunk: its content version and plaintext.
#[derive(Clone, Debug)]
pub struct Cached {
    pub ver: u64,
    pub plain: Arc<Vec<u8>>,
}

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: usize,
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
        }
    }

    pub fn get(&self, ino: u64, index: u64) -> Option<Cached> {
        let mut g = self.inner.lock();
        if let Some(c) = g.costly.get(&(ino, index)) {
            return Some(c.clone());
        }
        g.cheap.get(&(ino, index)).cloned()
    }

    /// Caches a chunk; `costly` when the model had to decode it.
    pub fn put(&self, ino: u64, index: u64, entry: Cached, costly: bool) {
        self.remove(ino, index);
        if entry.plain.len() > self.capacity {
            return;
        }
        let mut g = self.inner.lock();
        g.bytes += entry.plain.len();
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
                Some((_, v)) => g.bytes -= v.plain.len(),
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
                g.bytes -= v.plain.len();
            }
        }
    }

    /// Bytes of decoded chunks held, and how many of them the model decoded.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.inner.lock();
        let costly = g.costly.iter().map(|(_, v)| v.plain.len()).sum();
        (g.bytes, costly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> Cached {
        Cached {
            ver: 1,
            plain: Arc::new(vec![0; len]),
        }
    }

    #[test]
    fn evicts_least_recently_used_past_capacity() {
        let c = ChunkCache::new(10);
        c.put(1, 0, entry(4), false);
        c.put(1, 1, entry(4), false);
        assert!(c.get(1, 0).is_some());
        c.put(1, 2, entry(4), false);
        assert!(c.get(1, 1).is_none(), "least recently used goes first");
        assert!(c.get(1, 0).is_some() && c.get(1, 2).is_some());
    }

    #[test]
    fn cheap_chunks_go_before_costly_ones() {
        let c = ChunkCache::new(12);
        c.put(1, 0, entry(4), true);
        for i in 1..10 {
            c.put(2, i, entry(4), false);
        }
        assert!(
            c.get(1, 0).is_some(),
            "a model-decoded chunk outlives fresh writes"
        );
        assert_eq!(c.usage(), (12, 4));
        c.put(3, 0, entry(4), true);
        c.put(3, 1, entry(4), true);
        c.put(3, 2, entry(4), true);
        assert!(c.get(1, 0).is_none(), "costly ones still go, oldest first");
        assert_eq!(c.usage().0, 12);
    }
}
