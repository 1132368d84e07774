//! The store over the in-memory engine: chunk placement (hot or in one extent), the
//! transaction overlay, inode numbering across crashes, refusal of damaged stores.

use super::engine::memory::MemoryEngine;
use super::extent::Extent;
use super::records::{Kind, Time};
use super::*;
use crate::store::seal::PlantSealed;
use std::sync::Arc;

fn store() -> (Arc<MemoryEngine>, Store) {
    let e = MemoryEngine::new();
    let opts = OpenOptions {
        create: Some(CreateOptions { chunk_size: 4096 }),
        read_only: false,
    };
    let s = Store::open_engine(e.clone(), &opts).unwrap();
    (e, s)
}

fn frame(index: u64, ver: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + index * 7 + ver) as u8)
        .collect()
}

fn write(s: &Store, ino: u64, index: u64, ver: u64, len: usize) -> u64 {
    let mut t = Txn::new();
    let freed = s
        .put_chunk(
            &mut t,
            ino,
            index,
            ver,
            &frame(index, ver, len),
            Time::now(),
        )
        .unwrap();
    s.commit(t).unwrap();
    freed
}

fn settle(s: &Store, ino: u64, indexes: &[u64], len: usize) {
    let mut t = Txn::new();
    for &i in indexes {
        let ver = s.chunk(ino, i).unwrap().unwrap().ver;
        s.settle_chunk(&mut t, ino, i, ver, frame(i, ver + 1000, len))
            .unwrap();
    }
    s.commit(t).unwrap();
}

/// Every chunk in one place; every extent keyed by its first chunk and within target.
fn check_invariants(e: &MemoryEngine, s: &Store) {
    let hot: Vec<Vec<u8>> = e.raw_keys(Table::Chunk);
    assert_eq!(
        hot,
        e.raw_keys(Table::Pending),
        "hot chunks are the pending ones"
    );
    assert_eq!(
        s.count_pending(),
        hot.len() as u64,
        "the pending counter kept by commits"
    );
    let mut seen = std::collections::HashSet::new();
    for k in &hot {
        assert!(seen.insert(keys::chunk_of(k).unwrap()));
    }
    for k in e.raw_keys(Table::Extent) {
        let (ino, first) = keys::chunk_of(&k).unwrap();
        let x = Extent::decode(&e.get_unsealed(Table::Extent, &k).unwrap()).unwrap();
        assert_eq!(x.first(), Some(first), "extent keyed by its first chunk");
        assert!(x.len() == 1 || x.encoded_len() <= 2 * 2048);
        for c in x.chunks() {
            assert!(
                seen.insert((ino, c.index)),
                "chunk {} in two places",
                c.index
            );
        }
    }
}

#[test]
fn chunks_move_from_hot_to_extents_and_back() {
    let (e, s) = store();
    for i in 0..20 {
        write(&s, 5, i, i + 1, 1500);
    }
    assert_eq!(s.count_pending(), 20);
    settle(&s, 5, &(0..20).collect::<Vec<_>>(), 300);
    check_invariants(&e, &s);
    assert_eq!(s.count_pending(), 0);
    assert!(
        e.raw_keys(Table::Extent).len() >= 3,
        "2 KiB extents hold ~6 frames"
    );
    for i in 0..20 {
        let c = s.chunk(5, i).unwrap().unwrap();
        assert!(!c.hot);
        assert_eq!(*c.frame, frame(i, i + 1 + 1000, 300));
    }
    // Rewriting a settled chunk moves it back to the hot table and out of its extent.
    assert_eq!(write(&s, 5, 7, 99, 1500), 300);
    check_invariants(&e, &s);
    let c = s.chunk(5, 7).unwrap().unwrap();
    assert!(c.hot && c.ver == 99);
    // Settling it again puts it back into the extent that spans it.
    settle(&s, 5, &[7], 250);
    check_invariants(&e, &s);
    let infos = s.chunks_in(5, 0, 100).unwrap();
    assert_eq!(
        infos.iter().map(|c| c.index).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(infos.iter().all(|c| !c.hot));
}

#[test]
fn removing_ranges_edits_extents_and_hot_chunks_alike() {
    let (e, s) = store();
    for i in 0..30 {
        write(&s, 9, i, i + 1, 1000);
    }
    settle(&s, 9, &(0..24).collect::<Vec<_>>(), 300);
    let before: u64 = s
        .chunks_in(9, 0, 30)
        .unwrap()
        .iter()
        .map(|c| c.frame_len as u64)
        .sum();
    let mut t = Txn::new();
    let freed = s.remove_chunks(&mut t, 9, 3, 27).unwrap();
    s.commit(t).unwrap();
    check_invariants(&e, &s);
    let left: Vec<u64> = s
        .chunks_in(9, 0, 30)
        .unwrap()
        .iter()
        .map(|c| c.index)
        .collect();
    assert_eq!(left, [0, 1, 2, 27, 28, 29]);
    let after: u64 = s
        .chunks_in(9, 0, 30)
        .unwrap()
        .iter()
        .map(|c| c.frame_len as u64)
        .sum();
    assert_eq!(before - after, freed, "freed bytes are exact");
    assert!(s.chunk(9, 5).unwrap().is_none());
}

#[test]
fn one_transaction_sees_its_own_extent_edits() {
    let (e, s) = store();
    for i in 0..12 {
        write(&s, 3, i, i + 1, 1000);
    }
    settle(&s, 3, &(0..12).collect::<Vec<_>>(), 200);
    // Three settled chunks of one extent rewritten in one transaction: each edit must
    // see the previous one's extent, or frames would come back.
    let mut t = Txn::new();
    for i in [1, 2, 4] {
        s.put_chunk(&mut t, 3, i, 50 + i, &frame(i, 50, 900), Time::now())
            .unwrap();
    }
    let freed = s.remove_chunks(&mut t, 3, 10, 12).unwrap();
    assert_eq!(freed, 400);
    s.commit(t).unwrap();
    check_invariants(&e, &s);
    let hot: Vec<u64> = s
        .chunks_in(3, 0, 12)
        .unwrap()
        .iter()
        .filter(|c| c.hot)
        .map(|c| c.index)
        .collect();
    assert_eq!(hot, [1, 2, 4]);
    assert_eq!(s.chunks_in(3, 0, 12).unwrap().len(), 10);
}

#[test]
fn settling_out_of_order_and_with_gaps_keeps_extents_sorted() {
    let (e, s) = store();
    let order = [9u64, 3, 15, 4, 100, 0, 50, 51, 52, 8];
    for &i in &order {
        write(&s, 2, i, i + 1, 1200);
    }
    for &i in &order {
        settle(&s, 2, &[i], 350);
        check_invariants(&e, &s);
    }
    let mut want = order.to_vec();
    want.sort();
    let got: Vec<u64> = s
        .chunks_in(2, 0, 1000)
        .unwrap()
        .iter()
        .map(|c| c.index)
        .collect();
    assert_eq!(got, want);
    for &i in &order {
        assert_eq!(s.chunk(2, i).unwrap().unwrap().frame.len(), 350);
    }
}

#[test]
fn deleting_file_data_goes_in_bounded_steps() {
    let (e, s) = store();
    for i in 0..40 {
        write(&s, 4, i, i, 500);
    }
    settle(&s, 4, &(0..20).collect::<Vec<_>>(), 100);
    write(&s, 6, 0, 1, 500);
    let records = [Table::Chunk, Table::Pending, Table::Extent]
        .iter()
        .map(|&t| {
            e.raw_keys(t)
                .iter()
                .filter(|k| k.starts_with(&keys::ino(4)))
                .count()
        })
        .sum::<usize>();
    let mut steps = 0;
    loop {
        let mut t = Txn::new();
        let n = s.delete_file_data(&mut t, 4, 16).unwrap();
        assert!(n <= 16);
        s.commit(t).unwrap();
        if n == 0 {
            break;
        }
        steps += 1;
    }
    assert_eq!(steps, records.div_ceil(16));
    assert!(s.chunks_in(4, 0, u64::MAX).unwrap().is_empty());
    assert_eq!(
        s.chunks_in(6, 0, u64::MAX).unwrap().len(),
        1,
        "other files untouched"
    );
    check_invariants(&e, &s);
}

#[test]
fn inode_numbers_are_never_reused_across_reopen_and_crash() {
    let (e, s) = store();
    let a = s.alloc_ino().unwrap();
    e.sync().unwrap();
    let mut used = vec![a];
    for _ in 0..(INO_BLOCK + 10) {
        used.push(s.alloc_ino().unwrap());
    }
    drop(s);
    let s = Store::open_engine(e.clone(), &OpenOptions::default()).unwrap();
    let b = s.alloc_ino().unwrap();
    assert!(
        used.iter().all(|&u| u < b),
        "a reopened store continues above"
    );
    // A crash may lose reservations, but then also everything created with them.
    e.crash();
    let s = Store::open_engine(e.clone(), &OpenOptions::default()).unwrap();
    assert!(s.alloc_ino().unwrap() > a);
}

#[test]
fn a_database_without_superblock_is_damaged_not_new() {
    let e = MemoryEngine::new();
    e.raw_put(Table::Inode, &keys::ino(1), b"x");
    let opts = OpenOptions {
        create: Some(CreateOptions { chunk_size: 4096 }),
        read_only: false,
    };
    let err = Store::open_engine(e.clone(), &opts).err().unwrap();
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(
        e.raw_get(Table::Meta, keys::SUPERBLOCK).is_none(),
        "nothing was created"
    );
}

#[test]
fn unknown_format_version_is_refused() {
    let (e, s) = store();
    let sb = Superblock {
        format_version: 42,
        ..s.superblock().clone()
    };
    e.put_sealed(Table::Meta, keys::SUPERBLOCK, &sb.encode());
    let err = Store::open_engine(e, &OpenOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("version 42"), "{err}");
}

#[test]
fn write_stall_is_zero_when_idle_and_grows_while_a_write_hangs() {
    let p = WriteProgress::default();
    assert_eq!(p.stalled_for(), Duration::ZERO);
    p.run(|| {
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.stalled_for() >= Duration::from_millis(20));
    });
    assert_eq!(p.stalled_for(), Duration::ZERO);
}

#[test]
fn store_directories_are_judged_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        create: Some(CreateOptions { chunk_size: 4096 }),
        read_only: false,
    };
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"hi").unwrap();
    let err = Store::open(&other, &opts).err().unwrap();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let sled = dir.path().join("sled");
    std::fs::create_dir(&sled).unwrap();
    std::fs::write(sled.join("conf"), b"").unwrap();
    std::fs::write(sled.join("db"), b"").unwrap();
    let err = Store::open(&sled, &opts).err().unwrap();
    assert!(err.to_string().contains("0.1.0"), "{err}");
    let missing = dir.path().join("missing");
    assert!(matches!(
        Store::open(&missing, &OpenOptions::default()),
        Err(StoreError::Missing(_))
    ));
    let s = Store::open(&missing, &opts).unwrap();
    assert_eq!(s.chunk_size(), 4096);
    drop(s);
    let s = Store::open(&missing, &OpenOptions::default()).unwrap();
    assert!(s.inode(ROOT_INO).unwrap().unwrap().is_dir());
}

/// Every file of the store directory and its bytes, to show that nothing changed.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A copy of a store written by an earlier release (tests/fixtures).
fn fixture_store(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("llmfs.db");
    std::fs::copy(src, store.join("llmfs.db")).unwrap();
    (dir, store)
}

#[test]
fn a_format_2_store_reads_unchanged_read_only_and_is_sealed_by_a_writable_open() {
    let (_d, dir) = fixture_store("store-v2-synthetic");
    let before = snapshot(&dir);
    let ro = OpenOptions {
        create: None,
        read_only: true,
    };
    let s = Store::open(&dir, &ro).unwrap();
    assert!(s.needs_upgrade());
    assert_eq!(s.superblock().format_version, 2);
    let (ino, _) = s.lookup(ROOT_INO, b"log.jsonl").unwrap().unwrap();
    assert_eq!(s.inode(ino).unwrap().unwrap().size, 6000);
    assert_eq!(s.chunks_in(ino, 0, u64::MAX).unwrap().len(), 2);
    let report = s.check(&Default::default(), None, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let mut t = Txn::new();
    t.mark_orphan(ino);
    assert!(s.commit(t).is_err(), "a read-only store takes no write");
    drop(s);
    assert_eq!(
        snapshot(&dir),
        before,
        "a read-only open changed the store's files"
    );

    let s = Store::open(&dir, &OpenOptions::default()).unwrap();
    assert!(!s.needs_upgrade());
    assert_eq!(s.superblock().format_version, FORMAT_VERSION);
    // Every record underneath is sealed now.
    for t in Table::ALL {
        s.engine
            .scan_checked(t, &[], None, &mut |k, v| {
                assert!(v.is_ok(), "{} not sealed", keys::describe(t, k));
                true
            })
            .unwrap();
    }
    assert_eq!(s.inode(ino).unwrap().unwrap().size, 6000);
    let report = s.check(&Default::default(), None, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    drop(s);
    let s = Store::open(&dir, &ro).unwrap();
    assert!(!s.needs_upgrade());
    let (_, kind) = s.lookup(ROOT_INO, b"dir").unwrap().unwrap();
    assert_eq!(kind, Kind::Dir);
}

#[test]
fn an_engine_failure_names_the_store_operation() {
    let (e, s) = store();
    e.fail_commit(1);
    let mut t = Txn::new();
    t.put_inode(
        77,
        &crate::store::records::Inode::new(0o100644, 0, 0, Time::now()),
    );
    let err = s.commit(t).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Engine {
                op: StoreOp::Commit,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("committing to the store: "),
        "{err}"
    );
    // A full device keeps its own variant, whatever the operation: callers act on it.
    e.set_no_space(true);
    let mut t = Txn::new();
    t.put_inode(
        78,
        &crate::store::records::Inode::new(0o100644, 0, 0, Time::now()),
    );
    assert!(matches!(s.commit(t), Err(StoreError::NoSpace)));
}

/// A store whose commit was not atomic can hold a chunk twice: hot and in an extent, or
/// in two overlapping extents (fsck reports both). Every way of reading a range then
/// names, for each index, the entry the point lookup names (`chunk_ver`, `chunk`): a
/// read checks what it decoded against `chunk_ver`, and a range that offered another
/// entry first sent it round forever.
#[test]
fn a_chunk_stored_twice_reads_as_the_entry_its_point_lookup_names() {
    let (e, s) = store();
    for i in 0..7 {
        write(&s, 6, i, i + 1, 300);
    }
    settle(&s, 6, &(0..7).collect::<Vec<_>>(), 300);
    let extent_keys = e.raw_keys(Table::Extent);
    let firsts: Vec<u64> = extent_keys
        .iter()
        .filter_map(|k| keys::chunk_of(k).map(|(_, first)| first))
        .collect();
    assert_eq!(firsts, [0, 6], "the extents the settle made");
    // A second extent from chunk 3 holding chunks 3 and 4 at other versions, and chunk 1
    // hot as well as settled.
    let mut later = Extent::default();
    for (index, ver) in [(3, 50), (4, 51)] {
        later.insert(super::extent::ExtentChunk {
            index,
            ver,
            frame: frame(index, ver, 200),
        });
    }
    e.put_sealed(Table::Extent, &keys::chunk(6, 3), &later.encode());
    e.put_sealed(
        Table::Chunk,
        &keys::chunk(6, 1),
        &records::HotChunk::encode(77, &frame(1, 77, 100)),
    );
    let named: Vec<(u64, u64)> = (0..8)
        .filter_map(|i| s.chunk_ver(6, i).unwrap().map(|v| (i, v)))
        .collect();
    // Chunk 5 sits in the first extent only, past the planted one's start: the point
    // lookup finds the planted extent, without it.
    assert_eq!(named, [(0, 1), (1, 77), (2, 3), (3, 50), (4, 51), (6, 7)]);
    let frames: Vec<(u64, u64)> = s
        .frames_in(6, 0, 8)
        .unwrap()
        .iter()
        .map(|(i, c)| (*i, c.ver))
        .collect();
    assert_eq!(frames, named, "a range read");
    let infos: Vec<(u64, u64)> = s
        .chunks_in(6, 0, 8)
        .unwrap()
        .iter()
        .map(|c| (c.index, c.ver))
        .collect();
    assert_eq!(infos, named, "a range listing");
    for &(i, ver) in &named {
        let c = s.chunk(6, i).unwrap().unwrap();
        assert_eq!(c.ver, ver, "chunk {i}");
        let (_, from_range) = s.frames_in(6, i, i + 1).unwrap().remove(0);
        assert_eq!(from_range.frame, c.frame, "chunk {i}");
    }
}

#[test]
fn a_new_files_chunks_written_without_look_ups_are_the_same_records() {
    // Two new files, the same chunks: one written with the look-ups, one without (no
    // chunk of it can exist). The records, the file's record and the pending count
    // agree; a file that has chunks is never written that way by the filesystem.
    let (e, s) = store();
    let now = Time::now();
    let mut files = Vec::new();
    for (ino, of) in [(5, Chunks::Any), (6, Chunks::NoneYet)] {
        let mut t = Txn::new();
        let mut file = super::records::Inode::new(libc::S_IFREG | 0o644, 0, 0, now);
        for index in [0, 1, 7] {
            let f: crate::frame::Frame = frame(index, 1, 900).into();
            s.write_chunk(&mut t, ino, &mut file, index, &f, now, of)
                .unwrap();
        }
        t.put_inode(ino, &file);
        s.commit(t).unwrap();
        files.push(file);
    }
    assert_eq!(files[0].encode(), files[1].encode());
    assert_eq!((files[0].data_ver, files[0].stored), (3, 3 * 900));
    for table in [Table::Chunk, Table::Pending] {
        let of = |ino: u64| -> Vec<Option<Vec<u8>>> {
            [0, 1, 7]
                .iter()
                .map(|&i| {
                    e.raw_get(table, &keys::chunk(ino, i))
                        .map(|v| v[..].to_vec())
                })
                .collect()
        };
        let (a, b) = (of(5), of(6));
        assert!(a.iter().all(Option::is_some), "{table:?}");
        // Sealed records name their key: compare the unsealed values.
        let unseal = |ino: u64, v: &[Option<Vec<u8>>]| -> Vec<Vec<u8>> {
            [0u64, 1, 7]
                .iter()
                .zip(v)
                .map(|(&i, r)| {
                    seal::unseal(table, &keys::chunk(ino, i), r.as_ref().unwrap())
                        .unwrap()
                        .to_vec()
                })
                .collect()
        };
        assert_eq!(unseal(5, &a), unseal(6, &b), "{table:?}");
    }
    assert_eq!(s.count_pending(), 6);
    check_invariants(&e, &s);
}

#[test]
fn chunk_end_is_one_past_the_last_chunk_wherever_it_lives() {
    // Hot chunks with their pending records, a chunk settled into an extent, and the
    // last chunk dropped: the end follows the greatest index the store holds, in any of
    // the three tables, and never counts a dropped one.
    let (e, s) = store();
    let now = Time::now();
    let mut file = super::records::Inode::new(libc::S_IFREG | 0o644, 0, 0, now);
    assert_eq!(s.chunk_end(9).unwrap(), 0);
    let mut t = Txn::new();
    for index in [2, 5] {
        let f: crate::frame::Frame = frame(index, 1, 900).into();
        s.write_chunk(&mut t, 9, &mut file, index, &f, now, Chunks::NoneYet)
            .unwrap();
    }
    t.put_inode(9, &file);
    s.commit(t).unwrap();
    assert_eq!(s.chunk_end(9).unwrap(), 6);
    // Another file's chunks do not count.
    assert_eq!(s.chunk_end(8).unwrap(), 0);
    assert_eq!(s.chunk_end(10).unwrap(), 0);
    // Chunk 5 settled: it lives in an extent now, with no hot record or pending one.
    let ver = file.data_ver;
    let mut t = Txn::new();
    s.settle_file_chunk(&mut t, 9, &mut file, 5, ver, frame(5, 1, 300).into())
        .unwrap();
    t.put_inode(9, &file);
    s.commit(t).unwrap();
    assert!(e.raw_get(Table::Chunk, &keys::chunk(9, 5)).is_none());
    assert!(e.raw_get(Table::Pending, &keys::chunk(9, 5)).is_none());
    assert_eq!(s.chunk_end(9).unwrap(), 6);
    let mut t = Txn::new();
    s.drop_chunks(&mut t, 9, &mut file, 3, u64::MAX).unwrap();
    t.put_inode(9, &file);
    s.commit(t).unwrap();
    assert_eq!(s.chunk_end(9).unwrap(), 3);
    check_invariants(&e, &s);
}
