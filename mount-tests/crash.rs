//! Crash safety: kill -9 of the daemon in the middle of writes, and corrupted chunks in
//! the store.

use crate::harness::{pseudo_random, sh, text_record, Mount};
use llmfs::store::records::Time;
use llmfs::store::{self, Store, Txn};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a writer thread has made durable: whole files (written, fsync'd, closed, never
/// touched again) and the fsync'd prefix of an append-only log.
#[derive(Default)]
struct Durable {
    files: BTreeMap<PathBuf, Vec<u8>>,
    log_prefix: Vec<u8>,
}

/// Writes until the mount dies under it; every error after the kill is expected.
fn writer(dir: PathBuf, seed: u64, durable: Arc<Mutex<Durable>>, stop: Arc<AtomicBool>) {
    let log_path = dir.join(format!("log-{seed}.jsonl"));
    let Ok(mut log) = OpenOptions::new().create(true).append(true).open(&log_path) else {
        return;
    };
    let mut log_len = 0usize;
    let mut pending = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A whole file: its content only counts as durable after fsync returned.
        let path = dir.join(format!("f-{seed}-{i}"));
        let data = pseudo_random(
            1000 + (i * 7919 + seed as usize * 31) % 200_000,
            seed * 10_000 + i as u64,
        );
        let ok = (|| -> std::io::Result<()> {
            let mut f = File::create(&path)?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        if ok.is_err() {
            return;
        }
        durable.lock().unwrap().files.insert(path, data);

        // Appends to the log; fsync every third round.
        let rec = text_record(i);
        if log.write_all(rec.as_bytes()).is_err() {
            return;
        }
        pending.extend_from_slice(rec.as_bytes());
        log_len += rec.len();
        if i % 3 == 2 {
            if log.sync_all().is_err() {
                return;
            }
            let mut d = durable.lock().unwrap();
            d.log_prefix.extend_from_slice(&pending);
            assert_eq!(d.log_prefix.len(), log_len);
            pending.clear();
        }
    }
}

#[test]
fn kill_9_during_writes_keeps_every_fsynced_file() {
    let mut m = Mount::new();
    // Kill at different moments: right after start, mid-stream, after a while.
    for (round, delay_ms) in [150u64, 900, 2000].into_iter().enumerate() {
        let dir = m.path(&format!("round-{round}"));
        fs::create_dir(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut states = Vec::new();
        for w in 0..3u64 {
            let durable = Arc::new(Mutex::new(Durable::default()));
            states.push((w, durable.clone()));
            let (dir, stop) = (dir.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                writer(dir, round as u64 * 10 + w, durable, stop)
            }));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        m.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in writers {
            t.join().expect("writer thread panicked");
        }

        m.start();
        let mut checked = 0;
        for (w, durable) in &states {
            let d = durable.lock().unwrap();
            for (path, data) in &d.files {
                let got = fs::read(path).unwrap_or_else(|e| {
                    panic!("round {round}: fsync'd {} unreadable: {e}", path.display())
                });
                assert!(
                    got == *data,
                    "round {round}: fsync'd {} differs after kill -9",
                    path.display()
                );
                checked += 1;
            }
            let log_path = dir.join(format!("log-{}.jsonl", round as u64 * 10 + w));
            if !d.log_prefix.is_empty() {
                let got = fs::read(&log_path).unwrap();
                assert!(
                    got.len() >= d.log_prefix.len()
                        && got[..d.log_prefix.len()] == d.log_prefix[..],
                    "round {round}: fsync'd prefix ({} bytes) of {} lost; file has {} bytes",
                    d.log_prefix.len(),
                    log_path.display(),
                    got.len()
                );
            }
        }
        // Files caught mid-write may hold any prefix, but must read without errors.
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            fs::read(&p)
                .unwrap_or_else(|e| panic!("round {round}: {} unreadable: {e}", p.display()));
        }
        assert!(
            round == 0 || checked > 0,
            "round {round}: no file was fsync'd before the kill"
        );
    }
    m.stop();
    // Fsyncs inside a commit group went to the intent log, and the restarts applied what
    // the kills left there: the path under test is the log's, not only the WAL's.
    let log = m.log();
    assert!(
        log.contains("from llmfs.intents that had not reached the database"),
        "no restart applied the intent log:\n{log}"
    );
    // The store must open without repair, offline too.
    let out = std::process::Command::new(crate::harness::llmfs_bin())
        .arg("stats")
        .arg(&m.store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "llmfs stats after kill -9: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flips bytes inside the stored frame of chunk `index` of inode `ino`.
fn corrupt_chunk(store: &std::path::Path, ino: u64, index: u64) -> u64 {
    let s = Store::open(store, &store::OpenOptions::default()).expect("open store offline");
    let stored = s.chunk(ino, index).unwrap().unwrap_or_else(|| {
        panic!(
            "no chunk {index} stored for inode {ino}: does the FUSE inode differ from the store's?"
        )
    });
    let mut bad = stored.frame.to_vec();
    let n = bad.len();
    // The payload's tail (not the header): a checksum, not a parse error, must catch it.
    for b in &mut bad[n - n.min(16)..] {
        *b ^= 0x5A;
    }
    let mut t = Txn::new();
    s.put_chunk(&mut t, ino, index, stored.ver, &bad, Time::now())
        .unwrap();
    s.commit(t).unwrap();
    s.sync().unwrap();
    s.chunk_size()
}

#[test]
fn corrupted_chunk_gives_eio_on_that_file_only() {
    let mut m = Mount::new();
    let victim = m.path("victim.bin");
    let bystander = m.path("bystander.jsonl");
    let victim_data = pseudo_random(1 << 20, 11);
    let text: String = (0..5000).map(text_record).collect();
    fs::write(&victim, &victim_data).unwrap();
    fs::write(&bystander, &text).unwrap();
    let ino = fs::metadata(&victim).unwrap().ino();
    let by_ino = fs::metadata(&bystander).unwrap().ino();
    m.stop();

    let chunk_size = corrupt_chunk(&m.store, ino, 1);
    // Also a compressed (zstd) chunk of another file in a second pass below.
    m.start();

    let f = File::open(&victim).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = f
        .read_exact_at(&mut buf, chunk_size + 100)
        .expect_err("reading a corrupted chunk must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "corrupted chunk: want EIO, got {err}"
    );
    // The file's other chunks still read.
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..] == victim_data[..4096], "chunk 0 of the victim");
    f.read_exact_at(&mut buf, 2 * chunk_size).unwrap();
    let o = 2 * chunk_size as usize;
    assert!(buf[..] == victim_data[o..o + 4096], "chunk 2 of the victim");
    drop(f);
    assert!(
        fs::read(&bystander).unwrap() == text.as_bytes(),
        "other files are untouched"
    );

    // A log line names the file (inode number or name) and the chunk index.
    let log = m.log();
    let words = |l: &str| -> Vec<String> {
        l.split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
            .map(str::to_string)
            .collect()
    };
    let named = log.lines().any(|l| {
        let w = words(l);
        let names_file = w.contains(&ino.to_string()) || l.contains("victim.bin");
        names_file && l.to_lowercase().contains("chunk") && w.contains(&"1".to_string())
    });
    assert!(
        named,
        "no log line names inode {ino} (victim.bin) and chunk 1:\n{log}"
    );

    // The same through a compressed frame: corrupt the text file's first chunk.
    m.stop();
    corrupt_chunk(&m.store, by_ino, 0);
    m.start();
    let err = fs::read(&bystander).expect_err("reading a corrupted zstd chunk must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "corrupted zstd chunk: want EIO, got {err}"
    );
    // The mount is still alive and serves the rest.
    assert!(m.is_mounted());
    sh(&format!("ls -l {}", m.mnt.display()));
}

/// Owner, mode and times set on an open file are saved with its data, by the close: with
/// `commit=0` a kill -9 right after the close keeps them (the file's own calls, then
/// `tar -x`, which sets them on every file it extracts, checked by `tar -d` after the
/// restart).
#[test]
fn attributes_set_before_a_close_survive_a_kill_after_it() {
    attributes_survive_a_kill(&["nomodel", "commit=0"], false);
}

/// The same with the default commit window, where a kill -9 may take the last 50 ms of
/// commits nobody fsync'd: an fsync of the directory after the close makes them durable,
/// the attributes with the data.
#[test]
fn attributes_set_before_a_close_survive_a_kill_after_a_directory_fsync() {
    attributes_survive_a_kill(&["nomodel"], true);
}

fn attributes_survive_a_kill(options: &[&str], fsync_dirs: bool) {
    let mut m = Mount::with_options(options);
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    {
        let f = File::create(m.path("set-by-hand")).unwrap();
        f.write_all_at(b"its data", 0).unwrap();
        std::os::unix::fs::fchown(&f, Some(1000), Some(1001)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o640))
            .unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
            .unwrap();
    }
    // A tree with modes and times of its own, archived outside the mount.
    let src = tempfile::tempdir().unwrap();
    for (i, mode) in [0o600u32, 0o644, 0o755, 0o444].into_iter().enumerate() {
        let p = src.path().join(format!("f{i}"));
        fs::write(&p, pseudo_random(300 + i * 5000, i as u64)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(when + Duration::from_secs(i as u64 * 3600))
            .unwrap();
    }
    let archive = src.path().join("tree.tar");
    sh(&format!(
        "tar -cf {} -C {} f0 f1 f2 f3",
        archive.display(),
        src.path().display()
    ));
    fs::create_dir(m.path("x")).unwrap();
    sh(&format!(
        "tar -xpf {} -C {}",
        archive.display(),
        m.path("x").display()
    ));
    if fsync_dirs {
        File::open(&m.mnt).unwrap().sync_all().unwrap();
        File::open(m.path("x")).unwrap().sync_all().unwrap();
    }
    m.kill9();
    m.start();
    let md = fs::metadata(m.path("set-by-hand")).unwrap();
    assert_eq!(
        (
            md.uid(),
            md.gid(),
            md.mode() & 0o7777,
            md.mtime(),
            md.atime()
        ),
        (1000, 1001, 0o640, 1_000_000_000, 1_000_000_000)
    );
    assert_eq!(fs::read(m.path("set-by-hand")).unwrap(), b"its data");
    // tar -d compares each file's contents, mode, mtime, owner and size.
    sh(&format!(
        "tar -df {} -C {}",
        archive.display(),
        m.path("x").display()
    ));
}
