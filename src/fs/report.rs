//! Live statistics of a mounted filesystem, as one flat JSON object: what `llmfs stats
//! MOUNTPOINT` reads from the read-only attribute `user.llmfs.stats` of the root, and
//! what `llmfs stats STORE` prints for an unmounted store (the store's part).

use super::chunk::Wait;
use super::{Core, FsError, FsResult};
use crate::store::stats::{disk_usage, StoreStats};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds, in seconds, of the buckets of [`Counters::cold_reads`]: a chunk a
/// prefetch already decoded is handed over in microseconds, one decoded on a GPU takes
/// tenths of a second, on a CPU seconds to tens of seconds (a lone cold read took 20 s
/// on one 1-thread lane), more behind other readers' decodes.
pub const COLD_READ_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];

/// A latency histogram of atomic counters (one `fetch_add` per bucket hit, no lock):
/// the counts per bucket (the last one for everything past [`COLD_READ_BUCKETS`]) and
/// the sum in microseconds.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; COLD_READ_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one latency `d` in its bucket and adds it to the sum (in whole
    /// microseconds).
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = COLD_READ_BUCKETS
            .iter()
            .position(|&le| s <= le)
            .unwrap_or(COLD_READ_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (count, sum in seconds, cumulative count per upper bound in [`COLD_READ_BUCKETS`]).
    /// The count is the sum of the buckets, so it is never below the last one.
    pub fn snapshot(&self) -> (u64, f64, Vec<u64>) {
        let mut cumulative = Vec::with_capacity(self.counts.len());
        let mut n = 0;
        for c in &self.counts {
            n += c.load(Ordering::Relaxed);
            cumulative.push(n);
        }
        cumulative.pop();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (n, sum, cumulative)
    }
}

/// Counters of events the statistics report, kept where the events happen.
#[derive(Default)]
pub struct Counters {
    /// How long a request (a read, or an edit of an LLM-coded chunk) waited for the model
    /// to decode a chunk it needed, queueing included; successful decodes only.
    pub cold_reads: Histogram,
}

/// The store's walked figures, reused for a while: a walk reads every value of the store
/// (0.8 s at 50,000 files), and four users reading `user.llmfs.stats` in a loop raised
/// `stat` p50 from 0.058 ms to 61 ms when every read walked. Now one walk runs at a
/// time, and its result serves every reader for `MIN_AGE` or ten times the walk's
/// own length, whichever is longer: walks take at most a tenth of the store's time.
#[derive(Default)]
pub struct StatsCache {
    /// Held while a walk runs: later readers wait for it and take its result.
    walk: Mutex<()>,
    last: Mutex<Option<Walked>>,
    /// Walks done since mount.
    walks: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct Walked {
    at: Instant,
    took: Duration,
    stats: StoreStats,
}

/// The shortest time a walk's result is reused.
const MIN_AGE: Duration = Duration::from_secs(2);
/// A result is reused for this many times the walk's own length.
const DUTY: u32 = 10;

impl Walked {
    fn fresh(&self) -> bool {
        self.at.elapsed() < MIN_AGE.max(self.took * DUTY)
    }
}

/// The store's figures by name.
pub fn store_fields(st: &StoreStats) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in st.fields() {
        m.insert(k, v.into());
    }
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    m.insert(
        "ratio_stored".into(),
        round2(ratio(st.logical_bytes, st.stored_bytes)),
    );
    m.insert(
        "ratio_disk".into(),
        round2(ratio(st.logical_bytes, st.disk_bytes)),
    );
    if let Some(p) = &st.pinned_profile {
        m.insert("codec_profile".into(), hex(p).into());
    }
    m
}

/// Bytes in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn round2(x: f64) -> Value {
    ((x * 100.0).round() / 100.0).into()
}

/// Seconds to the microsecond, for counters of time.
fn secs(d: Duration) -> Value {
    ((d.as_secs_f64() * 1e6).round() / 1e6).into()
}

/// The compactor's speed over its busy time (0 before it has worked).
fn bytes_per_s(bytes: u64, busy_s: f64) -> Value {
    round2(if busy_s > 0.0 {
        bytes as f64 / busy_s
    } else {
        0.0
    })
}

impl Core {
    /// What `llmfs stats --wait-idle` polls: whether work is left, without walking the
    /// store (the full statistics read every value).
    pub fn progress(&self) -> FsResult<Map<String, Value>> {
        let mut m = Map::new();
        let c = self.compact_stats();
        let busy = c.busy.as_secs_f64();
        m.insert("pending_chunks".into(), self.store.count_pending().into());
        m.insert("chunk_size".into(), self.chunk_size().into());
        m.insert(
            "compact".into(),
            u8::from(self.cfg.compact && self.tier.get().is_some()).into(),
        );
        m.insert(
            "model_idle".into(),
            u8::from(self.tier.get().is_none_or(|t| t.idle())).into(),
        );
        m.insert("compacted_chunks_llm".into(), c.chunks_llm.into());
        m.insert("compacted_plain_bytes".into(), c.plain_bytes.into());
        m.insert("compacted_llm_plain_bytes".into(), c.llm_plain_bytes.into());
        m.insert("compacted_llm_bytes".into(), c.llm_frame_bytes.into());
        m.insert(
            "compaction_bytes_per_s".into(),
            bytes_per_s(c.plain_bytes, busy),
        );
        Ok(m)
    }

    /// The store's walked figures, from the cache when they are fresh enough, else from
    /// one walk (see [`StatsCache`]); with their age. While another walk runs, the last
    /// result is served as it is; [`Wait::NoModel`] (a FUSE request thread) never walks.
    fn walked_stats(&self, wait: Wait) -> FsResult<(StoreStats, Duration)> {
        let cache = &self.stats_cache;
        let last = || cache.last.lock().clone();
        if let Some(w) = last().filter(Walked::fresh) {
            return Ok((w.stats, w.at.elapsed()));
        }
        let _walking = match (cache.walk.try_lock(), last()) {
            (Some(g), _) => g,
            (None, Some(stale)) => return Ok((stale.stats, stale.at.elapsed())),
            (None, None) if wait == Wait::NoModel => return Err(FsError::WouldBlock),
            (None, None) => cache.walk.lock(),
        };
        if wait == Wait::NoModel {
            return Err(FsError::WouldBlock);
        }
        if let Some(w) = last().filter(Walked::fresh) {
            return Ok((w.stats, w.at.elapsed())); // a walk that ended while this one waited
        }
        let t0 = Instant::now();
        cache
            .walks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut stats = self.store.stats()?;
        if let Some(dir) = &self.store_dir {
            stats.disk_bytes = disk_usage(dir);
        }
        *self.stats_cache.last.lock() = Some(Walked {
            at: Instant::now(),
            took: t0.elapsed(),
            stats: stats.clone(),
        });
        Ok((stats, Duration::ZERO))
    }

    /// Everything `llmfs stats` reports about a mount: the store (walked at most every
    /// few seconds, `stats_age_ms` says how long ago), the compactor, the model and the
    /// cache.
    pub fn live_stats(&self, wait: Wait) -> FsResult<Map<String, Value>> {
        let (st, age) = self.walked_stats(wait)?;
        let mut m = store_fields(&st);
        m.insert("stats_age_ms".into(), (age.as_millis() as u64).into());
        m.insert(
            "stats_walks".into(),
            self.stats_cache
                .walks
                .load(std::sync::atomic::Ordering::Relaxed)
                .into(),
        );
        // The pending count is kept by every commit: always current.
        m.insert("pending_chunks".into(), self.store.count_pending().into());
        let c = self.compact_stats();
        let busy = c.busy.as_secs_f64();
        m.insert(
            "compact".into(),
            u8::from(self.cfg.compact && self.tier.get().is_some()).into(),
        );
        m.insert("cold_after_s".into(), self.cfg.cold_after.as_secs().into());
        m.insert("compacted_chunks_llm".into(), c.chunks_llm.into());
        m.insert("compacted_chunks_kept".into(), c.chunks_kept.into());
        m.insert("compacted_chunks_skipped".into(), c.chunks_skipped.into());
        m.insert("compacted_plain_bytes".into(), c.plain_bytes.into());
        m.insert("compacted_frame_bytes_before".into(), c.bytes_before.into());
        m.insert("compacted_frame_bytes_after".into(), c.bytes_after.into());
        m.insert("compaction_dropped".into(), c.dropped.into());
        m.insert("compaction_busy_s".into(), round2(busy));
        m.insert(
            "compaction_bytes_per_s".into(),
            bytes_per_s(c.plain_bytes, busy),
        );
        let t = self.tier.get().map(|t| (t.stats(), t.idle()));
        let (ts, idle) = t.unwrap_or_default();
        let ms = |d: std::time::Duration| round2(d.as_secs_f64() * 1000.0);
        m.insert("model".into(), u8::from(t.is_some()).into());
        if let Some(p) = self.tier.get().map(|t| t.profile()) {
            m.insert("codec_profile".into(), hex(p).into());
        }
        m.insert("model_idle".into(), u8::from(idle || t.is_none()).into());
        m.insert("model_lanes".into(), ts.lanes.into());
        m.insert("model_decodes".into(), ts.decodes.into());
        m.insert("model_wide_decodes".into(), ts.wide_decodes.into());
        m.insert("model_decode_s".into(), secs(ts.decode_time));
        m.insert("model_decoded_bytes".into(), ts.decoded_plain_bytes.into());
        m.insert(
            "decode_ms_avg".into(),
            ms(ts.decode_time / ts.decodes.max(1) as u32),
        );
        m.insert("decode_ms_max".into(), ms(ts.decode_max));
        m.insert("model_encodes".into(), ts.encodes.into());
        m.insert("model_encode_s".into(), secs(ts.encode_time));
        m.insert("model_encoded_bytes".into(), ts.encoded_plain_bytes.into());
        m.insert("model_tokens".into(), ts.session.steps.into());
        m.insert("verify_failures".into(), ts.verify_failures.into());
        m.insert("model_cancelled".into(), ts.cancelled.into());
        m.insert("prefetches".into(), ts.prefetches.into());
        m.insert("prefetch_hits".into(), ts.prefetch_hits.into());
        let (n, sum, buckets) = self.counters.cold_reads.snapshot();
        m.insert("cold_reads".into(), n.into());
        m.insert("cold_read_s_sum".into(), ((sum * 1e6).round() / 1e6).into());
        let buckets: Map<String, Value> = COLD_READ_BUCKETS
            .iter()
            .zip(buckets)
            .map(|(le, n)| (le.to_string(), n.into()))
            .collect();
        m.insert("cold_read_buckets".into(), buckets.into());
        let (cache, costly) = self.cache.usage();
        let (hits, misses) = self.cache.hits_misses();
        m.insert("nodes_in_memory".into(), self.nodes_in_memory().into());
        m.insert("cache_bytes".into(), cache.into());
        m.insert("cache_model_decoded_bytes".into(), costly.into());
        m.insert("cache_capacity_bytes".into(), self.cache.capacity().into());
        m.insert("cache_hits".into(), hits.into());
        m.insert("cache_misses".into(), misses.into());
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_each_latency_in_its_bucket_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(10)); // on a bound: counted in it (le)
        h.observe(Duration::from_millis(11));
        h.observe(Duration::from_secs(9));
        h.observe(Duration::from_secs(100)); // past the last bound: +Inf only
        let (n, sum, cumulative) = h.snapshot();
        assert_eq!(n, 4);
        assert!((sum - 109.021).abs() < 1e-9, "{sum}");
        assert_eq!(cumulative.len(), COLD_READ_BUCKETS.len());
        let at = |le: f64| cumulative[COLD_READ_BUCKETS.iter().position(|&b| b == le).unwrap()];
        assert_eq!(
            (at(0.01), at(0.05), at(5.0), at(10.0), at(80.0)),
            (1, 2, 2, 3, 3)
        );
    }
}
