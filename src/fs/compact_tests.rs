//! The LLM tier's races and contracts, over the in-memory store and a fake codec, in
//! milliseconds: compaction racing writes, truncates and unlinks; exact stored bytes;
//! profile pinning; no file lock held across a model decode; crashes mid-compaction.

use super::chunk::Wait;
use super::compact::Outcome;
use super::dir::NewNode;
use super::testutil::{fake_tier, MemoryEngine};
use super::*;
use crate::store::ROOT_INO;
use std::time::{Duration, Instant};

/// LLM-log-like text: words drawn by a fixed generator, so that zstd -19 (the fake
/// model) beats the fast tier's zstd level on every chunk.
pub(super) fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "answered",
        "question",
        "with",
        "a",
        "short",
        "example",
        "and",
        "then",
        "explained",
        "why",
        "function",
        "returns",
        "value",
        "list",
        "of",
        "steps",
        "user",
        "assistant",
        "{\"role\":",
        "\"content\":",
        "because",
        "first",
        "second",
        "finally",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x % 11 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

pub(super) fn cfg() -> CoreConfig {
    CoreConfig {
        cold_after: Duration::ZERO,
        ..CoreConfig::default()
    }
}

pub(super) fn core_on(engine: &Arc<MemoryEngine>, delay: Duration, profile: &[u8]) -> Arc<Core> {
    let core = Core::with_engine(engine.clone(), cfg()).unwrap();
    core.attach_model(fake_tier(delay, profile)).unwrap();
    Arc::new(core)
}

pub(super) fn file(core: &Core, name: &str, data: &[u8]) -> u64 {
    let what = NewNode::File {
        mode: libc::S_IFREG | 0o644,
        rdev: 0,
    };
    let ino = core
        .create_node(&Caller::root(), ROOT_INO, name.as_bytes(), what, false)
        .unwrap()
        .ino;
    core.write(ino, 0, data, false, Wait::Model).unwrap();
    core.flush(ino, Wait::Model).unwrap();
    ino
}

pub(super) fn read_all(core: &Core, ino: u64) -> Vec<u8> {
    core.read(ino, 0, u32::MAX, Wait::Model).unwrap()
}

/// Runs compaction passes until nothing is pending.
pub(super) fn compact_all(core: &Core) {
    let mut cursor = (0, 0);
    for _ in 0..1000 {
        if core.store().count_pending() == 0 {
            return;
        }
        core.compact_pass(&mut cursor).unwrap();
    }
    panic!("compaction did not finish");
}

/// Stored bytes of every file equal the sum of its frames.
pub(super) fn check_stored(core: &Core, inos: &[u64]) {
    for &ino in inos {
        let frames: u64 = core
            .store()
            .chunks_in(ino, 0, u64::MAX)
            .unwrap()
            .iter()
            .map(|c| c.frame_len as u64)
            .sum();
        assert_eq!(
            core.getattr(ino).unwrap().inode.stored,
            frames,
            "inode {ino} in memory"
        );
        assert_eq!(
            core.store().inode(ino).unwrap().unwrap().stored,
            frames,
            "inode {ino} stored"
        );
    }
}

#[test]
fn cold_chunks_become_llm_frames_and_read_back_identical_from_a_cold_cache() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"fake-1");
    let sizes = [100, 4096, 4097, 20_000, 33_333];
    let inos: Vec<u64> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| file(&core, &format!("f{i}"), &text(n, i as u64)))
        .collect();
    compact_all(&core);
    let st = core.store().stats().unwrap();
    assert!(st.codec(crate::frame::Codec::Llm).chunks >= 15, "{st:?}");
    assert_eq!(st.pending_chunks, 0);
    assert!(st.extents >= 1);
    check_stored(&core, &inos);
    core.shutdown().unwrap();
    drop(core);
    // A new core: nothing cached, every chunk decodes through the model.
    let core = core_on(&engine, Duration::ZERO, b"fake-1");
    assert!(matches!(
        core.read(inos[3], 0, 100, Wait::NoModel),
        Err(FsError::WouldBlock)
    ));
    for (i, &ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&core, ino), text(sizes[i], i as u64), "file {i}");
    }
    assert!(core.model().unwrap().stats().decodes >= 15);
}

#[test]
fn the_partial_tail_chunk_waits_for_the_whole_file_to_be_cold() {
    let engine = MemoryEngine::new();
    let core = Core::with_engine(
        engine,
        CoreConfig {
            cold_after: Duration::from_secs(3600),
            ..CoreConfig::default()
        },
    )
    .unwrap();
    core.attach_model(fake_tier(Duration::ZERO, b"p")).unwrap();
    let ino = file(&core, "log", &text(10_000, 1));
    let pending = core.store().pending((0, 0), 100).unwrap();
    assert_eq!(pending.len(), 3);
    // Written just now: nothing is cold.
    for p in &pending {
        assert!(core
            .cold_in(p, Duration::from_secs(3600))
            .unwrap()
            .is_some());
    }
    // With cold_after 0 the full chunks are cold, and so is the tail once the file is.
    for p in &pending {
        assert!(core.cold_in(p, Duration::ZERO).unwrap().is_none());
    }
    let _ = ino;
}

#[test]
fn a_write_during_compaction_wins_and_the_result_is_dropped() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::from_millis(300), b"p");
    let ino = file(&core, "f", &text(8192, 7));
    let p = core.store().pending((ino, 0), 1).unwrap()[0];
    let c = core.clone();
    let compacting = std::thread::spawn(move || c.compact_chunk(&p, false).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    core.write(ino, 10, b"CHANGED", false, Wait::Model).unwrap();
    core.flush(ino, Wait::Model).unwrap();
    assert_eq!(compacting.join().unwrap(), Outcome::Changed);
    let mut want = text(8192, 7);
    want[10..17].copy_from_slice(b"CHANGED");
    assert_eq!(read_all(&core, ino), want);
    assert_eq!(core.compact_stats().dropped, 1);
    compact_all(&core);
    check_stored(&core, &[ino]);
    assert_eq!(read_all(&core, ino), want);
}

#[test]
fn truncate_and_unlink_during_compaction_drop_the_result() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::from_millis(200), b"p");
    let a = file(&core, "a", &text(12_000, 1));
    let b = file(&core, "b", &text(12_000, 2));
    let pa = core.store().pending((a, 2), 1).unwrap()[0];
    let pb = core.store().pending((b, 0), 1).unwrap()[0];
    let c = core.clone();
    let ta = std::thread::spawn(move || c.compact_chunk(&pa, false).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    let set = attr::SetAttr {
        size: Some(5000),
        ..Default::default()
    };
    core.setattr(&Caller::root(), a, &set, Wait::Model).unwrap();
    assert_eq!(ta.join().unwrap(), Outcome::Changed);
    let c = core.clone();
    let tb = std::thread::spawn(move || c.compact_chunk(&pb, false).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    core.unlink(&Caller::root(), ROOT_INO, b"b").unwrap();
    assert_eq!(tb.join().unwrap(), Outcome::Changed);
    assert_eq!(read_all(&core, a), text(12_000, 1)[..5000].to_vec());
    assert!(core.store().chunks_in(b, 0, u64::MAX).unwrap().is_empty());
    compact_all(&core);
    check_stored(&core, &[a]);
    assert_eq!(read_all(&core, a), text(12_000, 1)[..5000].to_vec());
}

#[test]
fn a_model_decode_holds_no_file_lock() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let ino = file(&core, "f", &text(8192, 3));
    compact_all(&core);
    core.shutdown().unwrap();
    drop(core);
    let core = core_on(&engine, Duration::from_millis(400), b"p");
    // Chunk 1 is rewritten (hot); chunk 0 stays LLM-coded and not cached.
    core.write(ino, 5000, b"hot", false, Wait::Model).unwrap();
    let c = core.clone();
    let slow = std::thread::spawn(move || c.read(ino, 0, 100, Wait::Model).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    core.getattr(ino).unwrap();
    assert_eq!(
        core.read(ino, 4996, 12, Wait::NoModel).unwrap(),
        [
            &text(8192, 3)[4996..5000],
            b"hot",
            &text(8192, 3)[5003..5008]
        ]
        .concat()
    );
    core.write(ino, 6000, b"more", false, Wait::NoModel)
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "waited {:?}",
        t0.elapsed()
    );
    assert_eq!(slow.join().unwrap(), text(8192, 3)[..100].to_vec());
}

#[test]
fn an_edit_of_a_model_coded_chunk_decodes_it_once() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let ino = file(&core, "f", &text(4096, 4));
    compact_all(&core);
    core.shutdown().unwrap();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"p");
    assert!(matches!(
        core.write(ino, 100, b"xy", false, Wait::NoModel),
        Err(FsError::WouldBlock)
    ));
    core.write(ino, 100, b"xy", false, Wait::Model).unwrap();
    core.write(ino, 200, b"zw", false, Wait::NoModel).unwrap();
    let mut want = text(4096, 4);
    want[100..102].copy_from_slice(b"xy");
    want[200..202].copy_from_slice(b"zw");
    assert_eq!(read_all(&core, ino), want);
    assert_eq!(core.model().unwrap().stats().decodes, 1);
    // A truncate that cuts the chunk needs it too, and does not need it again.
    let set = attr::SetAttr {
        size: Some(1000),
        ..Default::default()
    };
    core.setattr(&Caller::root(), ino, &set, Wait::NoModel)
        .unwrap();
    assert_eq!(read_all(&core, ino), want[..1000].to_vec());
}

#[test]
fn the_first_llm_frame_pins_the_profile_and_the_canary_guards_it() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"profile-A");
    let same = |a: &[u8], b: &[u8]| {
        if a == b {
            vec![]
        } else {
            vec![format!(
                "stored {}, loaded {}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            )]
        }
    };
    assert!(
        core.check_pinned_profile(same).is_ok(),
        "no LLM frames: any model"
    );
    file(&core, "f", &text(9000, 5));
    compact_all(&core);
    assert_eq!(
        core.store()
            .meta(crate::store::MetaKey::Profile)
            .unwrap()
            .as_deref(),
        Some(&b"profile-A"[..])
    );
    core.shutdown().unwrap();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"profile-A");
    core.check_pinned_profile(same).unwrap();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"profile-B");
    let err = core.check_pinned_profile(same).unwrap_err();
    assert!(
        err.contains("profile-A") && err.contains("profile-B"),
        "{err}"
    );
    drop(core);
    // A canary that no longer decodes to its text is caught.
    let key = crate::store::keys::CANARY;
    let mut canary = engine
        .raw_get(crate::store::engine::Table::Meta, key)
        .unwrap();
    let last = canary.len() - 1;
    canary[last] ^= 1;
    engine.raw_put(crate::store::engine::Table::Meta, key, &canary);
    let core = core_on(&engine, Duration::ZERO, b"profile-A");
    assert!(core.check_pinned_profile(same).is_err());
}

#[test]
fn without_a_model_only_llm_chunks_are_unreadable() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let ino = file(&core, "f", &text(8192, 6));
    compact_all(&core);
    core.write(ino, 4096, &text(4096, 9), false, Wait::Model)
        .unwrap();
    core.flush(ino, Wait::Model).unwrap();
    core.shutdown().unwrap();
    drop(core);
    let core = Core::with_engine(engine, cfg()).unwrap();
    assert!(matches!(
        core.read(ino, 0, 100, Wait::Model),
        Err(FsError::Io(_))
    ));
    assert_eq!(
        core.read(ino, 4096, 4096, Wait::Model).unwrap(),
        text(4096, 9)
    );
}

#[test]
fn a_crash_mid_compaction_loses_nothing_fsynced() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let inos: Vec<u64> = (0..4)
        .map(|i| file(&core, &format!("f{i}"), &text(7000 + i * 3000, i as u64)))
        .collect();
    core.store().sync().unwrap();
    // Some chunks settle, not durably, then the machine dies.
    let mut cursor = (0, 0);
    core.compact_pass(&mut cursor).unwrap();
    engine.crash();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"p");
    for (i, &ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&core, ino), text(7000 + i * 3000, i as u64));
    }
    compact_all(&core);
    core.store().sync().unwrap();
    engine.crash();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"p");
    check_stored(&core, &inos);
    for (i, &ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&core, ino), text(7000 + i * 3000, i as u64));
    }
}

#[test]
fn the_compactor_thread_drains_pending_chunks_and_stops_at_shutdown() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::from_millis(2), b"p");
    let handle = core.spawn_compactor().unwrap();
    let ino = file(&core, "f", &text(30_000, 8));
    let deadline = Instant::now() + Duration::from_secs(20);
    while core.store().count_pending() > 0 {
        assert!(Instant::now() < deadline, "compactor did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    core.shutdown().unwrap();
    handle.join().unwrap();
    check_stored(&core, &[ino]);
    assert!(core.compact_stats().chunks_llm >= 7);
}

#[test]
fn live_statistics_count_cold_reads_cache_hits_and_the_models_bytes() {
    let num = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no {k} in {m:?}"))
    };
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let data = text(20_000, 7);
    let chunks = 20_000u64.div_ceil(core.chunk_size()) as f64;
    let ino = file(&core, "f", &data);
    let st = core.store().stats().unwrap();
    assert_eq!(
        st.pending_plain_bytes, 20_000,
        "written, awaiting the model"
    );
    compact_all(&core);
    let m = core.live_stats(Wait::Model).unwrap();
    assert_eq!(num(&m, "pending_bytes"), 0.0);
    assert_eq!(num(&m, "compacted_plain_bytes"), 20_000.0);
    let llm = num(&m, "chunks_llm");
    assert!(llm >= 4.0, "{m:?}");
    // Every figure but the derived ones (ratios and averages, left to PromQL) is a
    // metric of `llmfs stats --prometheus`.
    let read = super::prometheus::keys_read();
    let derived = [
        "ratio_stored",
        "ratio_disk",
        "compaction_bytes_per_s",
        "decode_ms_avg",
    ];
    for (k, v) in &m {
        if v.is_number() || v.is_object() {
            assert!(
                read.contains(k) || derived.contains(&k.as_str()),
                "{k} is in no metric"
            );
        }
    }
    core.shutdown().unwrap();
    drop(core);

    // A new core: nothing cached, the model decodes every LLM chunk a reader needs.
    let core = core_on(&engine, Duration::from_millis(20), b"p");
    // As the FUSE layer does it: first without the model, then again with it. The
    // first try counts nothing.
    assert!(matches!(
        core.read(ino, 0, u32::MAX, Wait::NoModel),
        Err(FsError::WouldBlock)
    ));
    assert_eq!(read_all(&core, ino), data);
    let m = core.live_stats(Wait::Model).unwrap();
    assert_eq!(num(&m, "cache_misses"), chunks);
    assert_eq!(num(&m, "cache_hits"), 0.0);
    assert_eq!(num(&m, "cold_reads"), llm);
    assert!(num(&m, "cold_read_s_sum") >= 0.02 * llm, "{m:?}");
    let buckets = m["cold_read_buckets"].as_object().unwrap();
    assert_eq!(buckets["0.01"], 0, "every decode took 20 ms: {buckets:?}");
    assert_eq!(buckets["80"].as_f64(), Some(llm));
    assert_eq!(num(&m, "model_decodes"), llm);
    assert_eq!(num(&m, "model_decoded_bytes"), num(&m, "plain_bytes_llm"));
    assert!(num(&m, "model_decode_s") >= 0.02 * llm);
    assert_eq!(read_all(&core, ino), data);
    let m = core.live_stats(Wait::Model).unwrap();
    assert_eq!(
        num(&m, "cache_hits"),
        llm,
        "read again: every chunk the model decoded is cached"
    );
    assert_eq!(
        num(&m, "cache_misses"),
        chunks + (chunks - llm),
        "a fast chunk a read decodes is not cached"
    );
    assert_eq!(num(&m, "cold_reads"), llm);
}

/// A read decodes fast chunks from the store without caching them (the kernel's page
/// cache keeps what was read; caching them cost a cold read a sixth of its speed), while
/// the chunks a write just committed stay cached for the next append or edit.
#[test]
fn reads_do_not_cache_fast_chunks_and_writes_do() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let data = text(20_000, 3);
    let chunks = 20_000u64.div_ceil(core.chunk_size());
    let ino = file(&core, "f", &data);
    let (hits, misses) = core.cache.hits_misses();
    assert_eq!(read_all(&core, ino), data);
    assert_eq!(
        core.cache.hits_misses(),
        (hits + chunks, misses),
        "the chunks just written are read from the cache"
    );
    core.shutdown().unwrap();
    drop(core);

    let core = core_on(&engine, Duration::ZERO, b"p");
    for round in 1..=2 {
        assert_eq!(read_all(&core, ino), data);
        assert_eq!(
            core.cache.hits_misses(),
            (0, round * chunks),
            "round {round}: every fast chunk decoded from the store again"
        );
    }
}

/// A file of `data` (one chunk) coded by the model, and a new core over its store:
/// nothing cached, the chunk settled as an LLM frame.
fn one_llm_chunk_cold(data: &[u8]) -> (Arc<MemoryEngine>, Arc<Core>, u64) {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"fake-1");
    let ino = file(&core, "f", data);
    compact_all(&core);
    core.shutdown().unwrap();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"fake-1");
    (engine, core, ino)
}

#[test]
fn a_cold_read_handed_to_a_worker_fetches_its_frame_once() {
    let (engine, core, ino) = one_llm_chunk_cold(&text(4096, 7));
    let before = engine.frame_reads();
    // The FUSE thread: fetches the frame, learns it needs the model, hands it over.
    assert!(matches!(
        core.read(ino, 0, 4096, Wait::NoModel),
        Err(FsError::WouldBlock)
    ));
    let fuse_thread = engine.frame_reads() - before;
    // The worker: decodes the frame it was handed, then checks its version once.
    assert_eq!(core.read(ino, 0, 4096, Wait::Model).unwrap(), text(4096, 7));
    let worker = engine.frame_reads() - before - fuse_thread;
    assert_eq!(fuse_thread, 1, "one settled chunk: one extent read");
    assert_eq!(
        worker, 1,
        "the version check only (the frame was handed over)"
    );
    // Without a hand-off (a worker's first try), the frame is fetched by the worker.
    let core2 = core_on(&engine, Duration::ZERO, b"fake-1");
    let before = engine.frame_reads();
    assert_eq!(
        core2.read(ino, 0, 4096, Wait::Model).unwrap(),
        text(4096, 7)
    );
    assert_eq!(engine.frame_reads() - before, 2, "fetch and version check");
}

#[test]
fn an_edit_of_a_cold_chunk_handed_to_a_worker_fetches_its_frame_once() {
    let (engine, core, ino) = one_llm_chunk_cold(&text(4096, 3));
    let before = engine.frame_reads();
    // A write into the middle of the LLM chunk needs its plaintext: the FUSE thread
    // fetches the frame and hands the request over.
    assert!(matches!(
        core.write(ino, 100, b"EDIT", false, Wait::NoModel),
        Err(FsError::WouldBlock)
    ));
    assert_eq!(engine.frame_reads() - before, 1);
    // The worker's first, model-less try fetches nothing; the decode uses the frame
    // handed over; the version check reads once.
    assert_eq!(
        core.write(ino, 100, b"EDIT", false, Wait::Model).unwrap(),
        4
    );
    assert_eq!(engine.frame_reads() - before, 2);
    let mut want = text(4096, 3);
    want[100..104].copy_from_slice(b"EDIT");
    assert_eq!(read_all(&core, ino), want);
}

/// A large cold read decodes its fast chunks on every core: the bytes come back in
/// order, and a chunk that fails its checksum fails the read (EIO) wherever it falls in
/// the split, while reads that do not touch it go on.
#[test]
fn a_large_read_decodes_on_every_core_in_order_and_a_bad_chunk_fails_it() {
    use crate::store::engine::Table;
    use crate::store::records::HotChunk;
    use crate::store::{keys, seal};
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let cs = core.chunk_size();
    let data = text(40 * cs as usize, 5);
    let ino = file(&core, "f", &data);
    core.shutdown().unwrap();
    drop(core);
    let core = core_on(&engine, Duration::ZERO, b"p");
    assert_eq!(read_all(&core, ino), data);
    // Reads that start and end inside chunks, decoded on every core or not.
    for (from, len) in [
        (1000u64, 30 * cs + 77),
        (cs - 1, 20 * cs),
        (5, 100),
        (39 * cs + 3, cs),
    ] {
        let got = core.read(ino, from, len as u32, Wait::Model).unwrap();
        let end = (from + len).min(data.len() as u64);
        assert_eq!(got, data[from as usize..end as usize], "{from}+{len}");
    }

    for bad in [3u64, 30] {
        let key = keys::chunk(ino, bad);
        let good = engine.raw_get(Table::Chunk, &key).unwrap();
        let mut chunk = HotChunk::decode(seal::unseal(Table::Chunk, &key, &good).unwrap()).unwrap();
        let last = chunk.frame.len() - 1;
        chunk.frame[last] ^= 0x40;
        let sealed = seal::seal(
            Table::Chunk,
            &key,
            &HotChunk::encode(chunk.ver, &chunk.frame),
        );
        engine.raw_put(Table::Chunk, &key, &sealed);
        assert!(
            matches!(
                core.read(ino, 0, u32::MAX, Wait::Model),
                Err(FsError::Io(_))
            ),
            "chunk {bad} damaged"
        );
        let before = bad * cs;
        assert_eq!(
            core.read(ino, 0, before as u32, Wait::Model).unwrap(),
            data[..before as usize]
        );
        let after = (bad + 1) * cs;
        assert_eq!(
            core.read(ino, after, u32::MAX, Wait::Model).unwrap(),
            data[after as usize..]
        );
        engine.raw_put(Table::Chunk, &key, &good);
    }
    assert_eq!(read_all(&core, ino), data);
}

/// A chunk shorter than its place (a file cut inside a chunk, then grown) reads as its
/// bytes and then zeros, decoded in place or not.
#[test]
fn a_short_chunk_inside_a_file_reads_as_zeros_past_its_end() {
    let engine = MemoryEngine::new();
    let core = core_on(&engine, Duration::ZERO, b"p");
    let cs = core.chunk_size();
    let data = text(40 * cs as usize, 8);
    let ino = file(&core, "f", &data);
    let cut = 10 * cs + 100;
    let set = |size| super::attr::SetAttr {
        size: Some(size),
        ..Default::default()
    };
    core.setattr(&Caller::root(), ino, &set(cut), Wait::Model)
        .unwrap();
    core.setattr(&Caller::root(), ino, &set(40 * cs), Wait::Model)
        .unwrap();
    core.write(ino, 30 * cs, &data[..cs as usize], false, Wait::Model)
        .unwrap();
    core.flush(ino, Wait::Model).unwrap();
    core.shutdown().unwrap();
    drop(core);
    let mut want = data[..cut as usize].to_vec();
    want.resize(40 * cs as usize, 0);
    want[30 * cs as usize..31 * cs as usize].copy_from_slice(&data[..cs as usize]);
    let core = core_on(&engine, Duration::ZERO, b"p");
    assert_eq!(read_all(&core, ino), want);
    let got = core.read(ino, 10 * cs + 50, 100, Wait::Model).unwrap();
    assert_eq!(got, want[(10 * cs + 50) as usize..(10 * cs + 150) as usize]);
}
