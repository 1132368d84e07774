//! The LLM tier through a real mount, with the built-in synthetic model (`test_model`:
//! milliseconds per chunk, the same code paths as the real model): compaction, reads from
//! a cold cache, kill -9 mid-compaction, statistics against `du`, refusals of another
//! model and of a damaged canary, `nomodel`, a damaged LLM frame, `sync_llm`, the
//! statistics in the Prometheus format.

use crate::harness::{corpus, llmfs_bin, pseudo_random, sh, stat, Mount};
use llmfs::store::records::Time;
use llmfs::store::{OpenOptions, Store, Txn};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["test_model", "cold_after=0"];

/// The corpus' JSONL logs and completions, by name.
fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl") || n.ends_with(".md") && n != "README.md")
        .map(|n| {
            let data = corpus(&n);
            (n, data)
        })
        .collect();
    files.sort();
    files
}

fn xattr(path: &std::path::Path, name: &str) -> String {
    String::from_utf8(xattr::get(path, name).unwrap().unwrap_or_default()).unwrap()
}

fn llm_chunks(codecs: &str) -> u64 {
    codecs
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("llm="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn fsck_clean(m: &Mount) {
    let out = Command::new(llmfs_bin())
        .arg("fsck")
        .arg(&m.store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn written_logs_end_up_llm_coded_and_read_back_identical_after_remount() {
    let mut m = Mount::with_options(FAST);
    let files = corpus_files();
    fs::create_dir(m.path("logs")).unwrap();
    for (name, data) in &files {
        fs::write(m.path(&format!("logs/{name}")), data).unwrap();
    }
    let binary = pseudo_random(50_000, 3);
    fs::write(m.path("blob.bin"), &binary).unwrap();
    let st = m.wait_idle();
    assert_eq!(stat(&st, "pending_chunks"), 0);
    let logical: u64 = files.iter().map(|f| f.1.len() as u64).sum::<u64>() + 50_000;
    assert_eq!(stat(&st, "logical_bytes"), logical);
    assert!(stat(&st, "chunks_llm") >= 40, "{st:?}");
    assert!(
        stat(&st, "chunks_raw") >= 12,
        "binary data stays raw: {st:?}"
    );
    assert!(stat(&st, "compacted_chunks_llm") >= 40);
    // du of the mount counts what each file stores, in 512-byte blocks.
    let du_mount: u64 = sh(&format!("du -sB1 {} | cut -f1", m.mnt.display()))
        .trim()
        .parse()
        .unwrap();
    let stored = stat(&st, "stored_bytes");
    let files_n = files.len() as u64 + 1;
    assert!(
        du_mount >= stored && du_mount < stored + 512 * files_n,
        "du of the mount {du_mount} vs stored bytes {stored}"
    );
    // disk_bytes is du of the store directory.
    let du_store: u64 = sh(&format!("du -sB1 {} | cut -f1", m.store.display()))
        .trim()
        .parse()
        .unwrap();
    let disk = stat(&st, "disk_bytes");
    assert!(
        disk.abs_diff(du_store) <= 64 << 10,
        "disk_bytes {disk} vs du {du_store}"
    );
    let log = m.path(&format!("logs/{}", files[0].0));
    assert!(llm_chunks(&xattr(&log, "user.llmfs.codecs")) >= 1);
    let file_stored: u64 = xattr(&log, "user.llmfs.stored").parse().unwrap();
    assert_eq!(
        fs::metadata(&log).unwrap().blocks(),
        file_stored.div_ceil(512)
    );
    assert!(
        xattr::list(&log)
            .unwrap()
            .all(|n| !n.to_string_lossy().starts_with("user.llmfs.")),
        "computed attributes are not listed (copies must not carry them)"
    );
    assert!(
        xattr::set(&log, "user.llmfs.stored", b"1").is_err(),
        "read-only"
    );
    m.stop();
    fsck_clean(&m);
    m.start();
    for (name, data) in &files {
        assert_eq!(
            &fs::read(m.path(&format!("logs/{name}"))).unwrap(),
            data,
            "{name}"
        );
    }
    assert_eq!(fs::read(m.path("blob.bin")).unwrap(), binary);
    assert!(
        stat(&m.stats(), "model_decodes") >= 40,
        "reads decoded through the model"
    );
}

#[test]
fn kill_9_mid_compaction_loses_nothing_and_compaction_resumes() {
    let mut m = Mount::with_options(&["test_model", "cold_after=0", "llm_threads=1"]);
    let mut want = Vec::new();
    for i in 0..6 {
        let mut data = Vec::new();
        while data.len() < 200_000 {
            for (_, f) in corpus_files().iter().skip(i) {
                data.extend_from_slice(f);
            }
        }
        data.truncate(200_000 + i * 777);
        let path = m.path(&format!("f{i}"));
        let f = fs::File::create(&path).unwrap();
        use std::io::Write;
        (&f).write_all(&data).unwrap();
        f.sync_all().unwrap();
        want.push(data);
    }
    // Let some chunks settle, then kill the daemon in the middle of the work.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stat(&m.stats(), "compacted_chunks_llm") < 20 {
        assert!(Instant::now() < deadline, "compaction did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stat(&m.stats(), "pending_chunks") > 0,
        "killed too late to test anything"
    );
    m.kill9();
    fsck_clean(&m);
    m.start();
    for (i, data) in want.iter().enumerate() {
        assert_eq!(
            &fs::read(m.path(&format!("f{i}"))).unwrap(),
            data,
            "f{i} after kill -9"
        );
    }
    let st = m.wait_idle();
    assert_eq!(stat(&st, "pending_chunks"), 0);
    m.stop();
    fsck_clean(&m);
    m.start();
    for (i, data) in want.iter().enumerate() {
        assert_eq!(
            &fs::read(m.path(&format!("f{i}"))).unwrap(),
            data,
            "f{i} at the end"
        );
    }
}

/// A store whose chunks the synthetic model coded, unmounted.
fn coded_store() -> (Mount, Vec<u8>) {
    let mut m = Mount::with_options(FAST);
    let data = corpus("SmolLM2-135M-Instruct.Q4_1.jsonl");
    fs::write(m.path("log.jsonl"), &data).unwrap();
    fs::write(m.path("plain.bin"), pseudo_random(10_000, 1)).unwrap();
    // The synthetic model codes this in about a second. A chunk whose coding a reader
    // cancelled used to wait for the compactor's next minute: a bound far above the
    // work, far below that.
    let t0 = Instant::now();
    m.wait_idle();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "compaction idle only after {:?}",
        t0.elapsed()
    );
    m.stop();
    (m, data)
}

fn mount_output(m: &Mount, opts: &[&str]) -> std::process::Output {
    let out = Command::new(llmfs_bin())
        .arg("mount")
        .arg(&m.store)
        .arg(&m.mnt)
        .arg("-o")
        .arg(opts.join(","))
        .output()
        .unwrap();
    if crate::harness::is_mounted(&m.mnt) {
        crate::harness::fusermount(&["-u"], &m.mnt);
    }
    out
}

#[test]
fn another_model_is_refused_naming_what_differs() {
    let (m, _) = coded_store();
    // The real default model against a store the synthetic model coded.
    let out = mount_output(&m, &["cold_after=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted with another model: {err}");
    assert!(err.contains("engine") && err.contains("nomodel"), "{err}");
}

#[test]
fn a_damaged_canary_is_refused_at_mount() {
    let (m, _) = coded_store();
    {
        let s = Store::open(&m.store, &OpenOptions::default()).unwrap();
        let profile = s.meta(llmfs::store::MetaKey::Profile).unwrap().unwrap();
        let mut canary = s.meta(llmfs::store::MetaKey::Canary).unwrap().unwrap();
        // A byte in the middle of the code: the last one may fall inside the code's
        // final interval and change nothing.
        let mid = canary.len() / 2;
        canary[mid] ^= 0x20;
        let mut t = Txn::new();
        s.pin_profile(&mut t, &profile, &canary);
        s.commit(t).unwrap();
        s.sync().unwrap();
        s.close().unwrap();
    }
    let out = mount_output(&m, FAST);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("canary"), "{err}");
}

#[test]
fn nomodel_mounts_with_llm_chunks_reading_as_eio_only() {
    let (mut m, _) = coded_store();
    m.set_options(&["nomodel"]);
    m.start();
    assert_eq!(
        fs::read(m.path("plain.bin")).unwrap(),
        pseudo_random(10_000, 1)
    );
    for _ in 0..3 {
        let err = fs::read(m.path("log.jsonl")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    fs::write(m.path("new"), b"works").unwrap();
    assert_eq!(fs::metadata(m.path("log.jsonl")).unwrap().len(), 38_631);
    m.stop();
    // Said once for the file, not once per read of each of its chunks.
    let log = m.log();
    assert_eq!(log.matches("cannot read chunk").count(), 1, "{log}");
}

#[test]
fn a_damaged_llm_frame_is_eio_on_its_range_with_a_log_line_naming_the_file() {
    let (mut m, data) = coded_store();
    let ino = {
        m.start();
        let ino = fs::metadata(m.path("log.jsonl")).unwrap().ino();
        m.stop();
        ino
    };
    {
        let s = Store::open(&m.store, &OpenOptions::default()).unwrap();
        let c = s.chunk(ino, 2).unwrap().expect("chunk 2 is stored");
        let mut bad = c.frame.to_vec();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        let mut t = Txn::new();
        s.put_chunk(&mut t, ino, 2, c.ver, &bad, Time::now())
            .unwrap();
        s.commit(t).unwrap();
        s.sync().unwrap();
        s.close().unwrap();
    }
    m.set_options(&["test_model", "compact=off"]);
    m.start();
    let f = fs::File::open(m.path("log.jsonl")).unwrap();
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..4096]);
    let err = f.read_exact_at(&mut buf, 2 * 4096).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    f.read_exact_at(&mut buf, 3 * 4096).unwrap();
    assert_eq!(buf, data[3 * 4096..4 * 4096]);
    drop(f);
    m.stop();
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains("chunk 2") && l.contains("/log.jsonl")),
        "no log line names the file and chunk:\n{log}"
    );
}

#[test]
fn sync_llm_codes_a_file_before_close_returns() {
    let mut m = Mount::with_options(&["test_model", "sync_llm", "cold_after=1h"]);
    let data = corpus("gemma-3-270m-q4_k_m.jsonl");
    fs::write(m.path("g.jsonl"), &data).unwrap();
    let codecs = xattr(&m.path("g.jsonl"), "user.llmfs.codecs");
    assert!(llm_chunks(&codecs) >= 9, "{codecs}");
    assert_eq!(stat(&m.stats(), "pending_chunks"), 0);
    m.stop();
    m.start();
    assert_eq!(fs::read(m.path("g.jsonl")).unwrap(), data);
}

/// fsx's data is not text, so the synthetic model never wins on it; this runs random
/// writes, truncates, hole punches and verified reads on LLM-like text while the
/// compactor codes the same chunks, so edits race LLM frames too.
#[test]
fn random_edits_of_text_race_the_compactor() {
    let ops: u64 = std::env::var("LLMFS_RACE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut m = Mount::with_options(FAST);
    let text: Vec<u8> = corpus_files().into_iter().flat_map(|f| f.1).collect();
    let path = m.path("race.txt");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut model: Vec<u8> = Vec::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    for op in 0..ops {
        match next(10) {
            0..=4 => {
                let off = next(model.len() as u64 + 8192);
                let len = 1 + next(9000);
                let src = next(text.len() as u64 - len) as usize;
                let bytes = &text[src..src + len as usize];
                f.write_all_at(bytes, off).unwrap();
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(bytes);
            }
            5 => {
                let size = next(model.len() as u64 + 4096);
                f.set_len(size).unwrap();
                model.resize(size as usize, 0);
            }
            6 if !model.is_empty() => {
                let off = next(model.len() as u64);
                let len = 1 + next(10_000);
                let rc = unsafe {
                    // SAFETY: fallocate(2) on a descriptor the File keeps open.
                    libc::fallocate(
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off as i64,
                        len as i64,
                    )
                };
                assert_eq!(rc, 0, "punch hole");
                let end = ((off + len) as usize).min(model.len());
                model[off as usize..end].fill(0);
            }
            7 => f.sync_all().unwrap(),
            _ => {
                let off = next(model.len() as u64 + 1);
                let len = next(20_000) as usize;
                let mut buf = vec![0u8; len];
                let got = f.read_at(&mut buf, off).unwrap();
                let want_end = (off as usize + len).min(model.len());
                let want = &model[(off as usize).min(want_end)..want_end];
                assert_eq!(&buf[..got], want, "op {op}: read of {len} at {off}");
            }
        }
        if op % 500 == 0 {
            std::thread::sleep(Duration::from_millis(20)); // let the compactor catch up
        }
    }
    drop(f);
    let st = m.wait_idle();
    assert!(
        stat(&st, "compacted_chunks_llm") > 0,
        "the compactor never raced: {st:?}"
    );
    m.stop();
    fsck_clean(&m);
    m.start();
    assert_eq!(fs::read(&path).unwrap(), model);
}

/// Copies a store fixture written by an earlier release into `m`'s store directory.
fn fixture_store(m: &Mount, name: &str) {
    fs::create_dir_all(&m.store).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("llmfs.db");
    fs::copy(src, m.store.join("llmfs.db")).unwrap();
}

/// A store of the previous release (format 2, coder version 2: no primer) mounts with
/// this build, reads every file back identical, and codes its new chunks as it was
/// pinned, whatever `primer=` says: its frames decode only that way.
#[test]
fn a_store_of_the_previous_release_reads_and_grows_under_its_own_coding() {
    let mut m = Mount::unmounted(&["test_model", "cold_after=0", "primer=builtin"]);
    fixture_store(&m, "store-v2-synthetic");
    m.start();
    let sums =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v2.sha256");
    sh(&format!(
        "cd {} && sha256sum --quiet -c {}",
        m.mnt.display(),
        sums.display()
    ));
    assert!(m.log().contains("primer= ignored"), "{}", m.log());
    let text = corpus("gemma-3-270m-q4_k_m-005.md");
    fs::write(m.path("new.md"), &text).unwrap();
    let st = m.wait_idle();
    assert!(
        llm_chunks(&xattr(&m.path("new.md"), "user.llmfs.codecs")) >= 1,
        "{st:?}"
    );
    let codec = st["codec"].as_str().unwrap().to_string();
    assert!(
        codec.starts_with("coder 2,") && codec.ends_with("primer none"),
        "{codec}"
    );
    m.stop();
    m.set_options(&["test_model"]);
    m.start();
    assert_eq!(fs::read(m.path("new.md")).unwrap(), text);
    sh(&format!(
        "cd {} && sha256sum --quiet -c {}",
        m.mnt.display(),
        sums.display()
    ));
    m.stop();
    // fsck knows the coding; `stats` of the unmounted store names it.
    let out = Command::new(llmfs_bin())
        .args(["fsck", "--verify"])
        .arg(&m.store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(llmfs_bin())
        .arg("stats")
        .arg(&m.store)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains("primer") && stats.contains("none"),
        "{stats}"
    );
}

/// A new store codes under the built-in primer, and `primer=none` under none; each is
/// pinned by its first LLM frame, and a remount reads it back.
#[test]
fn a_new_store_pins_the_primer_it_was_coded_with() {
    for (option, words) in [
        ("primer=builtin", "primer builtin-v1 ("),
        ("primer=none", "primer none"),
    ] {
        let mut m = Mount::with_options(&["test_model", "cold_after=0", option]);
        let text = corpus("SmolLM2-135M-Instruct.Q4_1-004.md");
        fs::write(m.path("a.md"), &text).unwrap();
        let st = m.wait_idle();
        let codec = st["codec"].as_str().unwrap().to_string();
        assert!(codec.contains(words), "{option}: {codec}");
        assert!(codec.starts_with("coder 3,"), "{codec}");
        m.stop();
        m.set_options(&["test_model"]);
        m.start();
        assert_eq!(fs::read(m.path("a.md")).unwrap(), text);
        m.stop();
    }
    let out = Command::new(llmfs_bin())
        .args(["mount", "/nonexistent", "/nonexistent", "-o", "primer=mine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("primer=mine"));
}

/// `llmfs stats --prometheus PATH`, checked to succeed.
fn prometheus(path: &std::path::Path) -> String {
    let args = [
        std::ffi::OsStr::new("stats"),
        "--prometheus".as_ref(),
        path.as_os_str(),
    ];
    String::from_utf8(crate::harness::llmfs_ok(args)).unwrap()
}

/// The value of the one sample of `name` whose labels are `{label}` then, if not
/// empty, `,extra`.
fn sample(text: &str, name: &str, label: &str, extra: &str) -> f64 {
    let labels = if extra.is_empty() {
        format!("{{{label}}}")
    } else {
        format!("{{{label},{extra}}}")
    };
    let want = format!("{name}{labels} ");
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(&want)).collect();
    assert_eq!(found.len(), 1, "one {want:?} in:\n{text}");
    found[0][want.len()..].parse().unwrap()
}

#[test]
fn prometheus_stats_report_what_a_mount_holds_compacts_and_reads_cold() {
    let mut m = Mount::with_options(FAST);
    let data = corpus("SmolLM2-135M-Instruct.Q4_1.jsonl");
    fs::write(m.path("log.jsonl"), &data).unwrap();
    fs::write(m.path("plain.bin"), pseudo_random(10_000, 1)).unwrap();
    m.wait_idle();
    let label = format!("mountpoint=\"{}\"", m.mnt.canonicalize().unwrap().display());
    let text = prometheus(&m.mnt);
    assert!(text.contains("# TYPE llmfs_cold_read_seconds histogram\n"));
    let v = |text: &str, name: &str, extra: &str| sample(text, name, &label, extra);
    assert_eq!(v(&text, "llmfs_mounted", ""), 1.0);
    let logical = v(&text, "llmfs_logical_bytes", "");
    assert!(logical >= (data.len() + 10_000) as f64, "{logical}");
    assert!(v(&text, "llmfs_chunks", "codec=\"llm\"") >= 1.0);
    assert!(v(&text, "llmfs_chunk_logical_bytes", "codec=\"raw\"") >= 10_000.0);
    assert!(
        v(&text, "llmfs_chunk_stored_bytes", "codec=\"llm\"")
            < v(&text, "llmfs_chunk_logical_bytes", "codec=\"llm\"")
    );
    assert!(v(&text, "llmfs_disk_bytes", "") > 0.0);
    assert_eq!(v(&text, "llmfs_pending_chunks", ""), 0.0);
    assert_eq!(v(&text, "llmfs_pending_bytes", ""), 0.0);
    assert!(v(&text, "llmfs_compaction_bytes_total", "") >= logical);
    assert!(v(&text, "llmfs_compaction_seconds_total", "") > 0.0);
    assert!(v(&text, "llmfs_compaction_chunks_total", "outcome=\"llm\"") >= 1.0);
    assert_eq!(v(&text, "llmfs_verify_failures_total", ""), 0.0);

    // A fresh daemon (nothing cached, in the kernel or the daemon) reads the log back
    // through the model.
    m.stop();
    m.start();
    assert_eq!(fs::read(m.path("log.jsonl")).unwrap(), data);
    let text = prometheus(&m.mnt);
    // user.llmfs.codecs: "raw=0 zstd=0 llm=7 lost=0", the log's chunks per codec.
    let codecs = xattr(&m.path("log.jsonl"), "user.llmfs.codecs");
    let llm = llm_chunks(&codecs) as f64;
    let chunks: f64 = codecs
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=')?.1.parse::<f64>().ok())
        .sum();
    assert!(llm >= 1.0, "{codecs}");
    let cold = v(&text, "llmfs_cold_read_seconds_count", "");
    assert_eq!(cold, llm, "one cold read per LLM chunk:\n{text}");
    assert_eq!(
        v(&text, "llmfs_cold_read_seconds_bucket", "le=\"+Inf\""),
        cold
    );
    assert!(v(&text, "llmfs_cold_read_seconds_sum", "") > 0.0);
    assert_eq!(v(&text, "llmfs_cache_misses_total", ""), chunks);
    assert_eq!(v(&text, "llmfs_cache_hits_total", ""), 0.0);
    assert!(v(&text, "llmfs_model_decode_bytes_total", "") >= data.len() as f64);
    assert!(v(&text, "llmfs_model_decode_seconds_total", "") > 0.0);

    // Unmounted: the store's figures, labelled with the store.
    m.stop();
    let text = prometheus(&m.store);
    let store = format!("store=\"{}\"", m.store.canonicalize().unwrap().display());
    assert_eq!(sample(&text, "llmfs_mounted", &store, ""), 0.0);
    assert_eq!(sample(&text, "llmfs_logical_bytes", &store, ""), logical);
    assert!(!text.contains("llmfs_cache_hits_total"), "{text}");
    // The mount point with no daemon: down, as a value.
    let text = prometheus(&m.mnt);
    assert_eq!(v(&text, "llmfs_mounted", ""), 0.0);
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
}
