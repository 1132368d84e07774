//! The LLM tier with the real default model through a real mount (minutes: it codes and
//! decodes every chunk on the CPU). Run alone, after the other tests: two llama.cpp
//! processes at once spin against each other.

// The shared harness; this target uses part of it.
#[allow(dead_code)]
#[path = "harness.rs"]
mod harness;

use harness::{corpus, llmfs_bin, stat, Mount};
use std::fs;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn logs_coded_on_two_lanes_read_back_on_one_with_another_thread_count() {
    let name = "SmolLM2-135M-Instruct.Q4_1.jsonl";
    let data = corpus(name);
    // Two lanes of one thread each: chunks are coded side by side.
    let mut m = Mount::unmounted(&["cold_after=0", "llm_lanes=2", "llm_threads=2"]);
    m.watchdog_timeout = Duration::from_secs(1800);
    m.start();
    fs::write(m.path(name), &data).unwrap();
    fs::write(m.path("other"), b"a small file to stat").unwrap();
    let st = m.wait_idle();
    let chunks = data.len().div_ceil(4096) as u64;
    assert_eq!(stat(&st, "verify_failures"), 0);
    assert!(stat(&st, "chunks_llm") >= chunks - 1, "{st:?}");
    let stored: u64 = String::from_utf8(
        xattr::get(m.path(name), "user.llmfs.stored")
            .unwrap()
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    m.stop();

    // One lane, with another llama.cpp thread count than the compaction's lanes, in
    // another process: the code must not depend on any of it. The cache is cold: every
    // chunk decodes through the model.
    m.set_options(&["llm_lanes=1", "llm_threads=2"]);
    m.start();
    let f = fs::File::open(m.path(name)).unwrap();
    // Four cold reads at once; `stat` of another file must not wait behind them.
    let readers: Vec<_> = [1u64, 3, 5, 7]
        .into_iter()
        .map(|i| {
            let f = f.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let t0 = Instant::now();
                f.read_exact_at(&mut buf, i * 4096).unwrap();
                (i, buf, t0.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t0 = Instant::now();
        fs::metadata(m.path("other")).unwrap();
        let _ = fs::read_dir(&m.mnt).unwrap().count();
        worst = worst.max(t0.elapsed());
    }
    let still_reading = readers.iter().any(|r| !r.is_finished());
    for r in readers {
        let (i, buf, took) = r.join().unwrap();
        assert_eq!(
            buf,
            data[(i * 4096) as usize..((i + 1) * 4096) as usize],
            "chunk {i}"
        );
        assert!(
            took > Duration::from_millis(100),
            "chunk {i} came from no model ({took:?})"
        );
    }
    assert!(
        still_reading,
        "the cold reads ended before the stats ran: nothing was tested"
    );
    assert!(
        worst < Duration::from_millis(500),
        "stat and readdir waited {worst:?} behind model decodes"
    );
    drop(f);
    assert_eq!(
        fs::read(m.path(name)).unwrap(),
        data,
        "read back on one lane of 2 threads"
    );
    m.stop();

    // The mount's ratio against the codec's on the same file (the same coder, segments
    // cut at the same 4 KiB boundaries).
    let llz = m.scratch("x").join("log.llz");
    let src = m.scratch("x").join("log.jsonl");
    fs::write(&src, &data).unwrap();
    let out = Command::new(llmfs_bin())
        .args(["compress", "--threads", "2", "--no-verify"])
        .arg(&src)
        .arg("-o")
        .arg(&llz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packed = fs::metadata(&llz).unwrap().len();
    let (mount_ratio, codec_ratio) = (
        data.len() as f64 / stored as f64,
        data.len() as f64 / packed as f64,
    );
    assert!(
        (mount_ratio / codec_ratio - 1.0).abs() < 0.05,
        "the mount stores {stored} bytes ({mount_ratio:.2}x), compress {packed} ({codec_ratio:.2}x)"
    );
}
