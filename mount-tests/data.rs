//! File contents through the mount: trees copied in, appended logs, truncation, sparse
//! files past 4 GiB, and `du` reporting the compressed size. Every scenario checks again
//! after a remount, so that what was read back came from the store, not a cache.

use crate::harness::{pseudo_random, sh, text_record, Mount};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// A tree with the shapes that break chunking: empty, one byte, chunk-size edges, large
/// random and large text files, nested directories, a symlink and a hard link.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("one"), b"1").unwrap();
    for (i, len) in [4095usize, 4096, 4097, 65535, 65536, 65537, 131072 + 7]
        .iter()
        .enumerate()
    {
        fs::write(
            root.join(format!("a/edge-{len}")),
            pseudo_random(*len, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("a/b/random-3M"), pseudo_random(3 << 20, 99)).unwrap();
    let text: String = (0..20_000).map(text_record).collect();
    fs::write(root.join("a/b/c/log.jsonl"), text).unwrap();
    std::os::unix::fs::symlink("b/c/log.jsonl", root.join("a/link-to-log")).unwrap();
    fs::hard_link(root.join("one"), root.join("a/one-hardlink")).unwrap();
    sh(&format!(
        "chmod 640 {0}/one; chmod 700 {0}/a/b",
        root.display()
    ));
}

/// One line per entry: path, mode, type, mtime (ns); for non-directories also size,
/// symlink target and link count (a directory's size and link count differ between
/// filesystems by design).
fn listing(root: &Path) -> String {
    sh(&format!(
        "cd {} && {{ find . -type d -printf '%P %m %y %T@\\n'; \
         find . ! -type d -printf '%P %m %y %T@ %s %l %n\\n'; }} | sort",
        root.display()
    ))
}

#[test]
fn copy_tree_in_then_diff_and_remount() {
    let mut m = Mount::new();
    let src = m.scratch("src");
    make_tree(&src);
    let dst = m.path("tree");
    sh(&format!("cp -a {} {}", src.display(), dst.display()));
    sh(&format!(
        "diff -r --no-dereference {} {}",
        src.display(),
        dst.display()
    ));
    assert_eq!(listing(&src), listing(&dst), "metadata differs after cp -a");

    m.stop();
    m.start();
    sh(&format!(
        "diff -r --no-dereference {} {}",
        src.display(),
        dst.display()
    ));
    assert_eq!(
        listing(&src),
        listing(&dst),
        "metadata differs after remount"
    );
}

#[test]
fn jsonl_append_with_fsync_survives_remount() {
    let mut m = Mount::new();
    let path = m.path("completions.jsonl");
    let mut expected = Vec::new();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    for i in 0..3000 {
        let rec = text_record(i);
        f.write_all(rec.as_bytes()).unwrap();
        expected.extend_from_slice(rec.as_bytes());
        if i % 50 == 49 {
            f.sync_all().unwrap();
        }
        if i % 500 == 499 {
            // A reader opening the log mid-stream sees exactly what was appended so far.
            assert_eq!(
                fs::read(&path).unwrap(),
                expected,
                "content after {} records",
                i + 1
            );
        }
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::metadata(&path).unwrap().len(), expected.len() as u64);

    m.stop();
    m.start();
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len(), expected.len(), "length after remount");
    assert!(got == expected, "content differs after remount");

    // Appending after a remount continues at the end.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"after\":\"remount\"}\n").unwrap();
    drop(f);
    expected.extend_from_slice(b"{\"after\":\"remount\"}\n");
    assert!(fs::read(&path).unwrap() == expected, "append after remount");
}

#[test]
fn truncate_and_extend_shows_zeros() {
    let mut m = Mount::new();
    let path = m.path("t");
    let data = pseudo_random(300_000, 7);
    fs::write(&path, &data).unwrap();

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Shrink into the middle of a chunk, then grow past the old end: the old bytes must
    // not come back.
    f.set_len(10_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 10_000);
    f.set_len(400_000).unwrap();
    let mut buf = vec![0xAAu8; 400_000];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..10_000], &data[..10_000], "kept prefix");
    let first_nonzero = buf[10_000..].iter().position(|&b| b != 0);
    assert_eq!(first_nonzero, None, "extended range must read as zeros");

    // Write past the end leaves a hole that reads as zeros.
    f.write_all_at(b"tail", 500_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 500_004);
    let mut hole = vec![0xAAu8; 100_000];
    f.read_exact_at(&mut hole, 400_000).unwrap();
    assert!(
        hole.iter().all(|&b| b == 0),
        "hole before a write past EOF reads as zeros"
    );

    // Truncate to zero and extend: nothing of the old file may reappear.
    f.set_len(0).unwrap();
    f.set_len(300_000).unwrap();
    let mut all = vec![0xAAu8; 300_000];
    f.read_exact_at(&mut all, 0).unwrap();
    assert!(
        all.iter().all(|&b| b == 0),
        "truncate to 0 then extend must read as zeros"
    );
    f.write_all_at(b"x", 12_345).unwrap();
    f.sync_all().unwrap();
    drop(f);

    m.stop();
    m.start();
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len(), 300_000);
    assert_eq!(got[12_345], b'x');
    assert_eq!(
        got.iter().filter(|&&b| b != 0).count(),
        1,
        "only the one byte written is non-zero"
    );

    // truncate(2) by path, not only ftruncate.
    sh(&format!("truncate -s 1 {}", path.display()));
    assert_eq!(fs::read(&path).unwrap(), vec![0u8]);
}

#[test]
fn sparse_file_past_4_gib() {
    const GIB: u64 = 1 << 30;
    let mut m = Mount::new();
    let path = m.path("sparse");
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(b"five", 5 * GIB).unwrap();
    // Exactly at 4 GiB: a 32-bit offset anywhere on the path would land this at 0.
    f.write_all_at(b"four", 4 * GIB).unwrap();
    f.sync_all().unwrap();
    check_sparse(&f, 5 * GIB);
    drop(f);

    m.stop();
    m.start();
    let f = File::open(&path).unwrap();
    check_sparse(&f, 5 * GIB);
}

fn check_sparse(f: &File, five: u64) {
    let four = 4 << 30;
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), five + 4, "size");
    assert!(
        md.blocks() * 512 < 1 << 20,
        "a 5 GiB sparse file with 8 bytes of data uses {} bytes",
        md.blocks() * 512
    );
    let mut buf = [0xAAu8; 4];
    f.read_exact_at(&mut buf, five).unwrap();
    assert_eq!(&buf, b"five");
    f.read_exact_at(&mut buf, four).unwrap();
    assert_eq!(&buf, b"four");
    let mut head = vec![0xAAu8; 64 << 10];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0), "start of the file is a hole");
    // Around the 4 GiB boundary and just before the last write.
    for off in [four - 65536, four + 4, five - 65536, 2 * (1 << 30)] {
        let mut hole = vec![0xAAu8; 65536];
        f.read_exact_at(&mut hole, off).unwrap();
        assert!(
            hole.iter().all(|&b| b == 0),
            "hole at offset {off} is not zeros"
        );
    }
}

/// `du` must show the stored (compressed) size and `du --apparent-size` the logical one.
#[test]
fn du_shows_compressed_size() {
    let m = Mount::new();
    let text: String = (0..100_000).map(text_record).collect();
    let text_path = m.path("text.jsonl");
    let random_path = m.path("random.bin");
    for (p, bytes) in [
        (&text_path, text.as_bytes().to_vec()),
        (&random_path, pseudo_random(4 << 20, 3)),
    ] {
        let mut f = File::create(p).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
    let du = |p: &Path, apparent: bool| -> u64 {
        let flag = if apparent { "--apparent-size" } else { "" };
        sh(&format!("du -B1 {flag} {}", p.display()))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // The kernel may serve cached attributes for up to their timeout after the fsync.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (used, apparent) = loop {
        let used = du(&text_path, false);
        let apparent = du(&text_path, true);
        if used * 4 < apparent || Instant::now() > deadline {
            break (used, apparent);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(apparent, text.len() as u64);
    assert!(used > 0, "du shows 0 bytes for a file with data");
    assert!(
        used * 4 < apparent,
        "repetitive text: du {used} should be well under a quarter of the apparent {apparent}"
    );
    // Incompressible data is stored raw: about its own size, never much more.
    let used = du(&random_path, false);
    let apparent = du(&random_path, true);
    assert_eq!(apparent, 4 << 20);
    assert!(
        used >= apparent * 9 / 10 && used <= apparent + apparent / 20 + 65536,
        "random data: du {used} vs apparent {apparent}"
    );
}

#[test]
fn statfs_reports_real_numbers() {
    let m = Mount::new();
    let out = sh(&format!("stat -f -c '%b %a %S %c' {}", m.mnt.display()));
    let v: Vec<u64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    let (blocks, avail, bsize, files) = (v[0], v[1], v[2], v[3]);
    assert!(blocks > 0 && bsize > 0, "statfs: {out}");
    assert!(avail <= blocks, "statfs: {out}");
    assert!(files > 0, "statfs: {out}");
}
