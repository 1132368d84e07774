//! The cache of decoded chunks, bounded in bytes, least recently used out first.
//! Decoding an LLM chunk costs seconds on a CPU, so hot chunks must stay decoded.

use parking_lot::Mutex;
use std::sync::Arc;

type Key = (u64, u64);

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    lru: lru::LruCache<Key, Arc<Vec<u8>>>,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(capacity_bytes: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
        }
    }

    pub fn get(&self, ino: u64, index: u64) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().lru.get(&(ino, index)).cloned()
    }

    pub fn put(&self, ino: u64, index: u64, plain: Arc<Vec<u8>>) {
        if plain.len() > self.capacity {
            self.remove(ino, index);
            return;
        }
        let mut g = self.inner.lock();
        g.bytes += plain.len();
        if let Some(old) = g.lru.put((ino, index), plain) {
            g.bytes -= old.len();
        }
        while g.bytes > self.capacity {
            match g.lru.pop_lru() {
                Some((_, v)) => g.bytes -= v.len(),
                None => break,
            }
        }
    }

    pub fn remove(&self, ino: u64, index: u64) {
        let mut g = self.inner.lock();
        if let Some(v) = g.lru.pop(&(ino, index)) {
            g.bytes -= v.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_capacity() {
        let c = ChunkCache::new(10);
        c.put(1, 0, Arc::new(vec![0; 4]));
        c.put(1, 1, Arc::new(vec![0; 4]));
        assert!(c.get(1, 0).is_some());
        c.put(1, 2, Arc::new(vec![0; 4]));
        assert!(c.get(1, 1).is_none(), "least recently used goes first");
        assert!(c.get(1, 0).is_some() && c.get(1, 2).is_some());
    }
}
