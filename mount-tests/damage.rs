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
/// WAL holds the latest commits (`commit=0`: every commit is written to the WAL at once;
/// in a commit group, durable commits go to the intent log, tested below).
fn crashed_store() -> Mount {
    let mut m = Mount::with_options(&["test_model", "cold_after=0", "commit=0"]);
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

/// 30 files written and fsync'd one by one inside one commit group (`commit=5s`), then
/// kill -9: their durable commits are in the intent log and nowhere else.
fn crashed_in_a_group() -> Mount {
    let mut m = Mount::with_options(&["nomodel", "commit=5s"]);
    let wal_before = fs::metadata(wal(&m)).map_or(0, |m| m.len());
    for i in 0..30 {
        let mut f = fs::File::create(m.path(&format!("f{i}"))).unwrap();
        std::io::Write::write_all(&mut f, &content(i)).unwrap();
        f.sync_all().unwrap();
    }
    m.kill9();
    assert_eq!(
        fs::metadata(wal(&m)).map_or(0, |m| m.len()),
        wal_before,
        "the fsyncs wrote the WAL"
    );
    m
}

/// Read-only commands see the files whose commits are only in the intent log, and change
/// nothing; the next mount applies them and every file reads back.
#[test]
fn fsynced_files_in_the_intent_log_survive_a_kill_and_read_only_commands_see_them() {
    let mut m = crashed_in_a_group();
    let before = snapshot(&m.store);
    let stats = run(&["stats", "--json"], &m.store);
    assert!(stats.status.success(), "stats: {}", text(&stats));
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["files"], 30, "{v}");
    let fsck = run(&["fsck"], &m.store);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck));
    assert_eq!(
        snapshot(&m.store),
        before,
        "a read-only command changed the store"
    );
    files_read_back(&mut m, 30);
    // Applied: a clean unmount leaves nothing for the log to add.
    let stats = run(&["stats", "--json"], &m.store);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["files"], 30, "{v}");
}

/// A record of the intent log damaged while later ones are intact is refused like a
/// damaged WAL; `--repair` keeps the records before it, and what is left mounts with
/// each file whole or absent.
#[test]
fn a_flipped_bit_in_the_intent_log_is_refused_and_repair_keeps_the_intact_records() {
    let mut m = crashed_in_a_group();
    let log = m.store.join("llmfs.intents");
    let mut bytes = fs::read(&log).unwrap();
    // The fifth record of 30 (each takes one 4 KiB block): the first four stay.
    bytes[4 * 4096 + 40] ^= 0x08;
    fs::write(&log, &bytes).unwrap();
    refused_unchanged(&m, "llmfs.intents");
    let repair = run(&["fsck", "--repair"], &m.store);
    let out = text(&repair);
    assert_eq!(repair.status.code(), Some(0), "{out}");
    assert!(out.contains("kept the 4 intact records"), "{out}");
    m.start();
    let mut whole = 0;
    for i in 0..30 {
        if let Ok(got) = fs::read(m.path(&format!("f{i}"))) {
            assert!(got.is_empty() || got == content(i), "f{i} is half there");
            whole += usize::from(got == content(i));
        }
    }
    m.stop();
    assert!(whole >= 4, "{whole} files whole");
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

/// A store of 200 files in 5 directories (sizes from 100 bytes to 3 chunks), unmounted,
/// and what each file holds.
fn filled_store() -> (Mount, Vec<(String, Vec<u8>)>) {
    let mut m = Mount::with_options(&["nomodel"]);
    let mut files = Vec::new();
    for d in 0..5 {
        fs::create_dir(m.path(&format!("d{d}"))).unwrap();
        for i in 0..40 {
            let name = format!("d{d}/f{i}");
            let len = [100, 5000, 11_000][(d * 40 + i) % 3];
            let data: Vec<u8> =
                format!("file {name} ").repeat(len / 10 + 1).into_bytes()[..len].to_vec();
            fs::write(m.path(&name), &data).unwrap();
            files.push((name, data));
        }
    }
    m.stop();
    (m, files)
}

/// Pages of the database file in use whose b-tree page type is `kind` (0x0a index leaf:
/// the records table; 0x0d table leaf: frames), with the table tag of their first cell's
/// key. Pages on the free list are left out: they keep what they held before they were
/// freed, and zeroing one damages nothing.
fn pages_of_kind(db: &[u8], kind: u8) -> Vec<(usize, u8)> {
    let free = free_pages(db);
    (2..=db.len() / 8192)
        .filter(|p| db[(p - 1) * 8192] == kind && !free.contains(p))
        .map(|p| (p, first_key_tag(&db[(p - 1) * 8192..p * 8192], kind)))
        .collect()
}

/// The pages on SQLite's free list: trunk pages (from the header's offset 32, each
/// naming the next trunk and its leaves) and their leaves.
// Reads SQLite's file layout.
#[allow(clippy::disallowed_methods)]
fn free_pages(db: &[u8]) -> std::collections::HashSet<usize> {
    let be32 = |at: usize| u32::from_be_bytes(db[at..at + 4].try_into().unwrap()) as usize;
    let mut free = std::collections::HashSet::new();
    let mut trunk = be32(32);
    while trunk != 0 && free.insert(trunk) {
        let base = (trunk - 1) * 8192;
        let leaves = be32(base + 4);
        for i in 0..leaves.min(8192 / 4 - 2) {
            free.insert(be32(base + 8 + 4 * i));
        }
        trunk = be32(base);
    }
    free
}

/// An SQLite varint at `*pos` (at most 9 bytes).
fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for i in 0..9 {
        let x = b[*pos];
        *pos += 1;
        if i == 8 {
            return (v << 8) | u64::from(x);
        }
        v = (v << 7) | u64::from(x & 0x7f);
        if x & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The first byte of the key in a leaf page's first cell: the store table's tag.
// Reads SQLite's page layout.
#[allow(clippy::disallowed_methods)]
fn first_key_tag(page: &[u8], kind: u8) -> u8 {
    let mut pos = usize::from(u16::from_be_bytes([page[8], page[9]]));
    varint(page, &mut pos); // payload size
    if kind == 0x0d {
        varint(page, &mut pos); // rowid
    }
    let start = pos;
    let header = varint(page, &mut pos) as usize;
    page[start + header]
}

/// Salvages `m`'s damaged store into a new one and checks the promise: every file reads
/// back identical, or fails with EIO, or is named in the report as rebuilt; nothing
/// reads back as other bytes. Returns how many read back whole, how many failed with
/// EIO, and how many the report names as rebuilt.
fn salvage_and_compare(
    m: &mut Mount,
    files: &[(String, Vec<u8>)],
    damage: &str,
) -> (usize, usize, usize) {
    // The damaged store is refused with a way out, without a panic.
    let fsck = run(&["fsck"], &m.store);
    assert_eq!(fsck.status.code(), Some(1), "{damage}: {}", text(&fsck));
    assert!(
        text(&fsck).contains("--salvage"),
        "{damage}: {}",
        text(&fsck)
    );
    for args in [&["stats"][..], &["fsck", "--repair"]] {
        let o = run(args, &m.store);
        assert_ne!(
            o.status.code(),
            Some(101),
            "{damage}: {args:?} panicked: {}",
            text(&o)
        );
    }
    let new = m.scratch("salvaged");
    let _ = fs::remove_dir(&new);
    let out = Command::new(llmfs_bin())
        .args(["fsck", "--salvage", "--json"])
        .arg(&m.store)
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{damage}: lossy, and says so: {}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The new store is consistent: all it reports is what was lost, marked.
    for p in report["problems"].as_array().unwrap() {
        assert_eq!(p["kind"], "lost", "{damage}: {p}");
    }
    let rebuilt: Vec<String> = report["rebuilt_inodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    m.store = new;
    m.start();
    let (mut whole, mut eio) = (0, 0);
    for (name, data) in files {
        match fs::read(m.path(name)) {
            Ok(got) if &got == data => whole += 1,
            Ok(got) => assert!(
                rebuilt.contains(name),
                "{damage}: {name} reads back as {} other bytes and is not named in the report",
                got.len()
            ),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
            // Lost with its name: the report counts the damaged records.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{damage}: {name}: {e}"),
        }
    }
    m.stop();
    (whole, eio, rebuilt.len())
}

#[test]
fn a_zeroed_page_of_records_or_of_frames_is_salvaged_file_by_file() {
    for kind in [0x0a, 0x0d] {
        let (mut m, files) = filled_store();
        let db = m.store.join("llmfs.db");
        let mut bytes = fs::read(&db).unwrap();
        // A page of inode records, or one of hot chunks.
        let pages = pages_of_kind(&bytes, kind);
        let want = if kind == 0x0a { b'I' } else { b'C' };
        let (p, _) = *pages.iter().find(|(_, tag)| *tag == want).unwrap();
        bytes[(p - 1) * 8192..p * 8192].fill(0);
        fs::write(&db, &bytes).unwrap();
        let damage = format!("page {p} (type {kind:#x}) zeroed");
        let (whole, eio, rebuilt) = salvage_and_compare(&mut m, &files, &damage);
        assert!(
            whole >= files.len() / 2,
            "{damage}: only {whole} files survived"
        );
        if kind == 0x0a {
            // Inode records lost: their files come back under new records, whole.
            assert!(rebuilt > 0, "{damage}: nothing rebuilt");
        } else {
            // Hot chunks lost: their files read as I/O errors, never zeros.
            assert!(eio > 0, "{damage}: no file lost a chunk");
        }
    }
}

#[test]
fn a_cut_off_tail_or_a_damaged_first_page_is_salvaged() {
    for damage in ["the last 8 KiB cut off", "the first page overwritten"] {
        let (mut m, files) = filled_store();
        let db = m.store.join("llmfs.db");
        let mut bytes = fs::read(&db).unwrap();
        if damage.contains("cut") {
            bytes.truncate(bytes.len() - 8192);
        } else {
            bytes[..8192].copy_from_slice(&crate::harness::pseudo_random(8192, 7));
        }
        fs::write(&db, &bytes).unwrap();
        let (whole, _, _) = salvage_and_compare(&mut m, &files, damage);
        assert!(
            whole >= files.len() / 2,
            "{damage}: only {whole} files survived"
        );
    }
}

/// Every place `needle` occurs in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn flipped_bits_in_metadata_are_eio_named_in_the_log_and_found_by_fsck() {
    let mut m = Mount::with_options(&["nomodel"]);
    std::os::unix::fs::symlink("TARGET-MARKER-1234", m.path("link")).unwrap();
    fs::write(m.path("x"), b"data").unwrap();
    xattr::set(m.path("x"), "user.k", b"XATTR-MARKER-5678").unwrap();
    fs::write(m.path("NAME-MARKER-9012"), b"named").unwrap();
    fs::write(m.path("plain"), b"untouched").unwrap();
    m.stop();
    let db = m.store.join("llmfs.db");
    let mut bytes = fs::read(&db).unwrap();
    // The symlink's record: its mode sits 88 bytes before its target; S_ISUID (0o4000)
    // is bit 3 of the mode's third byte (big endian). Before checksums, this flip made
    // `ls -l` show a set-uid link, and every read of it succeeded.
    let target = find_all(&bytes, b"TARGET-MARKER-1234");
    assert!(!target.is_empty());
    for at in target {
        bytes[at - 88 + 2] ^= 0x08;
    }
    for at in find_all(&bytes, b"XATTR-MARKER-5678") {
        bytes[at + 3] ^= 0x01;
    }
    for at in find_all(&bytes, b"NAME-MARKER-9012") {
        bytes[at + 5] ^= 0x20;
    }
    fs::write(&db, &bytes).unwrap();

    let fsck = run(&["fsck"], &m.store);
    assert_eq!(fsck.status.code(), Some(1), "{}", text(&fsck));
    let out = text(&fsck);
    assert_eq!(out.matches("fails its checksum").count(), 3, "{out}");

    m.start();
    let eio = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}");
    };
    eio(
        fs::symlink_metadata(m.path("link")).map(|_| ()),
        "lstat of the link",
    );
    eio(
        xattr::get(m.path("x"), "user.k").map(|_| ()),
        "the damaged xattr",
    );
    eio(
        fs::read_dir(&m.mnt).and_then(|mut d| d.try_for_each(|e| e.map(|_| ()))),
        "a listing through the damaged name",
    );
    assert_eq!(fs::read(m.path("plain")).unwrap(), b"untouched");
    assert_eq!(fs::read(m.path("x")).unwrap(), b"data");
    m.stop();
    let log = m.log();
    for what in [
        "record fails its checksum",
        "extended attribute \"user.k\"",
        "directory entry",
    ] {
        assert!(log.contains(what), "the log does not name {what:?}:\n{log}");
    }
}
