//! Live statistics of a mounted filesystem, as one flat JSON object: what `llmfs stats
//! MOUNTPOINT` reads from the read-only attribute `user.llmfs.stats` of the root, and
//! what `llmfs stats STORE` prints for an unmounted store (the store's part).

use super::{Core, FsResult};
use crate::store::stats::{disk_usage, StoreStats};
use serde_json::{Map, Value};

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
    m
}

fn round2(x: f64) -> Value {
    ((x * 100.0).round() / 100.0).into()
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
        m.insert("pending_chunks".into(), self.store.count_pending()?.into());
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
        m.insert(
            "compaction_bytes_per_s".into(),
            bytes_per_s(c.plain_bytes, busy),
        );
        Ok(m)
    }

    /// Everything `llmfs stats` reports about a mount: the store (one walk of it), the
    /// compactor, the model and the cache.
    pub fn live_stats(&self) -> FsResult<Map<String, Value>> {
        let mut st = self.store.stats()?;
        if let Some(dir) = &self.store_dir {
            st.disk_bytes = disk_usage(dir);
        }
        let mut m = store_fields(&st);
        let c = self.compact_stats();
        let busy = c.busy.as_secs_f64();
        m.insert(
            "compact".into(),
            u8::from(self.cfg.compact && self.tier.get().is_some()).into(),
        );
        m.insert("cold_after_s".into(), self.cfg.cold_after.as_secs().into());
        m.insert("compacted_chunks_llm".into(), c.chunks_llm.into());
        m.insert("compacted_chunks_kept".into(), c.chunks_kept.into());
        m.insert("compacted_plain_bytes".into(), c.plain_bytes.into());
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
        m.insert("model_idle".into(), u8::from(idle || t.is_none()).into());
        m.insert("model_decodes".into(), ts.decodes.into());
        m.insert(
            "decode_ms_avg".into(),
            ms(ts.decode_time / ts.decodes.max(1) as u32),
        );
        m.insert("decode_ms_max".into(), ms(ts.decode_max));
        m.insert("model_encodes".into(), ts.encodes.into());
        m.insert("verify_failures".into(), ts.verify_failures.into());
        m.insert("model_cancelled".into(), ts.cancelled.into());
        m.insert("prefetches".into(), ts.prefetches.into());
        let (cache, costly) = self.cache.usage();
        m.insert("nodes_in_memory".into(), self.nodes_in_memory().into());
        m.insert("cache_bytes".into(), cache.into());
        m.insert("cache_model_decoded_bytes".into(), costly.into());
        Ok(m)
    }
}
