//! Media damage after a crash: a WAL with a flipped bit, cut short or deleted, found
//! before anything opens the store; commands that only read never change it; fsck names
//! the damage and `--repair` rebuilds or accepts it as the operator decides.

use crate::harness::{llmfs_bin, Mount};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], store: &Path) -> Output {
    Command::new(llmfs_bin())
        .args(args)
        .arg(store)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of the store directory and its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn content(i: usize) -> Vec<u8> {
    format!("record {i} ").repeat(500).into_bytes()
}

/// 30 files written and fsync'd one by one with the compactor racing, then kill -9: the
/// WAL holds the latest commits.
fn crashed_store() -> Mount {
    let mut m = Mount::with_options(&["test_model", "cold_after=0"]);
    for i in 0..30 {
        let mut f = fs::File::create(m.path(&format!("f{i}"))).unwrap();
        std::io::Write::write_all(&mut f, &content(i)).unwrap();
        f.sync_all().unwrap();
    }
    m.kill9();
    let wal = m.store.join("llmfs.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 100_000,
        "the commits are in the WAL"
    );
    m
}

fn wal(m: &Mount) -> std::path::PathBuf {
    m.store.join("llmfs.db-wal")
}

/// The read-only commands change nothing and say the store is damaged; the mount is
/// refused naming the WAL; fsck exits 1 naming what --repair will do.
fn refused_unchanged(m: &Mount, expect: &str) {
    let before = snapshot(&m.store);
    let stats = run(&["stats"], &m.store);
    assert!(!stats.status.success(), "stats: {}", text(&stats));
    assert!(text(&stats).contains("write-ahead log"), "{}", text(&stats));
    let fsck = run(&["fsck"], &m.store);
    assert_eq!(fsck.status.code(), Some(1), "{}", text(&fsck));
    assert!(text(&fsck).contains(expect), "{}", text(&fsck));
    assert!(text(&fsck).contains("--repair"), "{}", text(&fsck));
    let json = run(&["fsck", "--json"], &m.store);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["problems"][0]["kind"], "journal");
    let mount = Command::new(llmfs_bin())
        .arg("mount")
        .arg(&m.store)
        .arg(&m.mnt)
        .args(["-o", "test_model"])
        .output()
        .unwrap();
    assert!(!mount.status.success(), "mounted: {}", text(&mount));
    assert!(text(&mount).contains("fsck --repair"), "{}", text(&mount));
    assert_eq!(
        snapshot(&m.store),
        before,
        "a refused or read-only command changed the store"
    );
}

fn files_read_back(m: &mut Mount, n: usize) {
    m.start();
    for i in 0..n {
        assert_eq!(
            fs::read(m.path(&format!("f{i}"))).unwrap(),
            content(i),
            "f{i}"
        );
    }
    m.stop();
}

#[test]
fn a_flipped_bit_in_the_wal_is_found_and_every_intact_commit_is_rebuilt() {
    let mut m = crashed_store();
    let mut bytes = fs::read(wal(&m)).unwrap();
    // In the first third: SQLite alone would silently drop every later commit.
    let at = bytes.len() / 3;
    bytes[at] ^= 0x04;
    fs::write(wal(&m), &bytes).unwrap();
    refused_unchanged(&m, "fails its checksum");
    let repair = run(&["fsck", "--repair"], &m.store);
    assert_eq!(repair.status.code(), Some(0), "{}", text(&repair));
    assert!(
        text(&repair).contains("rebuilt llmfs.db"),
        "{}",
        text(&repair)
    );
    let kept: Vec<String> = fs::read_dir(&m.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("before-repair"))
        .collect();
    assert!(
        kept.iter().any(|n| n.starts_with("llmfs.db-wal.")),
        "the damaged WAL is kept: {kept:?}"
    );
    files_read_back(&mut m, 30);
}

#[test]
fn a_deleted_or_cut_wal_is_refused_until_the_operator_accepts_the_loss() {
    for cut in [true, false] {
        let mut m = crashed_store();
        if cut {
            let bytes = fs::read(wal(&m)).unwrap();
            fs::write(wal(&m), &bytes[..bytes.len() / 2]).unwrap();
        } else {
            fs::remove_file(wal(&m)).unwrap();
        }
        refused_unchanged(&m, "fsync'd commits are missing");
        let repair = run(&["fsck", "--repair"], &m.store);
        let out = text(&repair);
        assert!(out.contains("accepted the loss"), "{out}");
        assert_ne!(repair.status.code(), Some(8), "{out}");
        // What is left mounts, and what it holds reads back whole or not at all.
        m.start();
        for i in 0..30 {
            if let Ok(got) = fs::read(m.path(&format!("f{i}"))) {
                assert!(got.is_empty() || got == content(i), "f{i} is half there");
            }
        }
        m.stop();
    }
}
