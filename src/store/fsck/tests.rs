//! fsck over realistic stores built through the filesystem core on the in-memory engine,
//! with damage planted through typed transactions, raw engine writes and torn commits.

use super::*;
use crate::frame::{self, Codec};
use crate::fs::dir::NewNode;
use crate::fs::xattr::SetXattr;
use crate::fs::{attr::SetAttr, chunk::Wait, Caller, Core, CoreConfig};
use crate::store::engine::memory::MemoryEngine;
use crate::store::engine::Table;
use crate::store::extent::{Extent, ExtentChunk};
use crate::store::keys;
use crate::store::records::{HotChunk, Inode, Pending, Time};
use crate::store::seal::PlantSealed;
use crate::store::Txn;
use std::sync::Arc;

const CS: u64 = 4096;

/// A store with directories, hard links, a symlink, xattrs, a file grown past a partial
/// chunk, a sparse file, an open unlinked file, and LLM-coded settled chunks.
struct Fixture {
    engine: Arc<MemoryEngine>,
    core: Core,
    inos: Vec<(&'static str, u64)>,
}

impl Fixture {
    fn new() -> Fixture {
        let engine = MemoryEngine::new();
        let core = Core::with_engine(engine.clone(), CoreConfig::default()).unwrap();
        let mut fx = Fixture {
            engine,
            core,
            inos: Vec::new(),
        };
        let root = Caller::root();
        let c = &fx.core;
        let dir = |parent, name: &[u8]| {
            c.create_node(&root, parent, name, NewNode::Dir { mode: 0o755 }, false)
                .unwrap()
                .ino
        };
        let d = dir(ROOT_INO, b"d");
        let e = dir(d, b"e");
        let a = write_file(c, ROOT_INO, b"a", 0, &text(3 * CS as usize + 100));
        c.setxattr(&root, a, b"user.note", b"kept", SetXattr::Any)
            .unwrap();
        let b = write_file(c, d, b"b", 0, &text(9000));
        c.link(&root, b, e, b"b2").unwrap();
        let l = c
            .create_node(
                &root,
                ROOT_INO,
                b"l",
                NewNode::Symlink { target: b"a" },
                false,
            )
            .unwrap()
            .ino;
        let g = write_file(c, ROOT_INO, b"g", 0, &text(100));
        let grow = SetAttr {
            size: Some(10_000),
            ..Default::default()
        };
        c.setattr(&root, g, &grow, Wait::Model).unwrap();
        let s = write_file(c, ROOT_INO, b"s", 10 * CS, &text(500));
        // Open, written, unlinked: an orphan the next mount deletes.
        let o = c
            .create_node(
                &root,
                ROOT_INO,
                b"o",
                NewNode::File {
                    mode: libc::S_IFREG | 0o644,
                    rdev: 0,
                },
                true,
            )
            .unwrap()
            .ino;
        c.write(o, 0, &text(300), false, Wait::Model).unwrap();
        c.flush(o, Wait::Model).unwrap();
        c.unlink(&root, ROOT_INO, b"o").unwrap();
        settle_llm(c.store(), a, &[0, 1, 2]);
        let mut t = Txn::new();
        c.store()
            .pin_profile(&mut t, b"test profile", &fake_llm(b"the canary text"));
        c.store().commit(t).unwrap();
        fx.inos = vec![
            ("d", d),
            ("e", e),
            ("a", a),
            ("b", b),
            ("l", l),
            ("g", g),
            ("s", s),
            ("o", o),
        ];
        fx
    }

    fn ino(&self, name: &str) -> u64 {
        self.inos.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn store(&self) -> &Store {
        self.core.store()
    }

    fn check(&self) -> CheckReport {
        self.store()
            .check(&CheckOptions::default(), None, &mut |_| {})
            .unwrap()
    }

    fn verify(&self, llm: Option<LlmDecoder<'_>>) -> CheckReport {
        let opts = CheckOptions { verify: true };
        self.store().check(&opts, llm, &mut |_| {}).unwrap()
    }

    /// Commits what `plant` adds: damage through typed operations.
    fn plant(&self, plant: impl FnOnce(&Store, &mut Txn)) {
        let mut t = Txn::new();
        plant(self.store(), &mut t);
        self.store().commit(t).unwrap();
    }

    fn inode(&self, ino: u64) -> Inode {
        self.store().inode(ino).unwrap().unwrap()
    }

    /// Repairs what `r` proposes and checks again: the store must be clean.
    fn repair_to_clean(&self, r: &CheckReport) -> CheckReport {
        let summary = self.store().repair(r).unwrap();
        assert_eq!(summary.repaired, r.repairable());
        let again = self.check();
        assert!(again.is_clean(), "after repair: {:#?}", found(&again));
        again
    }
}

fn text(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 64);
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(format!("line {i}: the model answered the question.\n").as_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

fn write_file(core: &Core, parent: u64, name: &[u8], offset: u64, data: &[u8]) -> u64 {
    let what = NewNode::File {
        mode: libc::S_IFREG | 0o644,
        rdev: 0,
    };
    let ino = core
        .create_node(&Caller::root(), parent, name, what, true)
        .unwrap()
        .ino;
    core.write(ino, offset, data, false, Wait::Model).unwrap();
    core.release(ino).unwrap();
    ino
}

/// A stand-in for an LLM frame: zstd with its bytes flipped, which only
/// [`fake_decoder`] reads back.
fn fake_llm(plain: &[u8]) -> Vec<u8> {
    let payload: Vec<u8> = zstd::bulk::compress(plain, 1)
        .unwrap()
        .iter()
        .map(|b| b ^ 0x55)
        .collect();
    frame::assemble(Codec::Llm, plain, &payload)
}

fn fake_decode_one(framed: &[u8]) -> Result<Vec<u8>, String> {
    let h = frame::parse_header(framed).map_err(|e| e.to_string())?;
    let z: Vec<u8> = framed[h.header_len..].iter().map(|b| b ^ 0x55).collect();
    zstd::bulk::decompress(&z, 1 << 20).map_err(|e| e.to_string())
}

/// Decodes a batch as a pool would, in order.
fn fake_decoder(frames: Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>> {
    frames.iter().map(|f| fake_decode_one(f)).collect()
}

/// Settles hot chunks with LLM frames as the compactor does: extent, record, one commit.
fn settle_llm(s: &Store, ino: u64, indexes: &[u64]) {
    for &i in indexes {
        let c = s.chunk(ino, i).unwrap().unwrap();
        let plain = frame::decode(&c.frame, None).unwrap();
        let mut t = Txn::new();
        let mut rec = s.inode(ino).unwrap().unwrap();
        s.settle_file_chunk(&mut t, ino, &mut rec, i, c.ver, fake_llm(&plain).into())
            .unwrap();
        t.put_inode(ino, &rec);
        s.commit(t).unwrap();
    }
}

/// Writes `framed` as hot chunk `index` of `ino` the way the core persists a chunk: a
/// new content version, and the record's stored bytes and version moved with it.
fn rewrite_chunk(s: &Store, t: &mut Txn, ino: u64, index: u64, framed: &[u8]) {
    let mut rec = match t.change(Table::Inode, &keys::ino(ino)) {
        Some(Some(v)) => Inode::decode(v).unwrap(),
        _ => s.inode(ino).unwrap().unwrap(),
    };
    s.write_chunk(
        t,
        ino,
        &mut rec,
        index,
        &framed.to_vec().into(),
        Time::now(),
        crate::store::Chunks::Any,
    )
    .unwrap();
    t.put_inode(ino, &rec);
}

/// (kind, inode, repairable) of every problem that is not a note, sorted.
fn found(r: &CheckReport) -> Vec<(ProblemKind, Option<u64>, bool)> {
    let mut v: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.severity != Severity::Info)
        .map(|p| (p.kind, p.ino, p.repairable()))
        .collect();
    v.sort_by_key(|x| (x.0.name(), x.1, x.2));
    v
}

/// The problems that are not notes are exactly `want` (in any order).
fn assert_found(r: &CheckReport, mut want: Vec<(ProblemKind, Option<u64>, bool)>) {
    want.sort_by_key(|x| (x.0.name(), x.1, x.2));
    assert_eq!(found(r), want, "{:#?}", r.problems);
}

fn of_kind(r: &CheckReport, kind: ProblemKind) -> Vec<&Problem> {
    r.problems.iter().filter(|p| p.kind == kind).collect()
}

fn problem(r: &CheckReport, kind: ProblemKind) -> &Problem {
    r.problems
        .iter()
        .find(|p| p.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} problem in {:#?}", r.problems))
}

#[test]
fn a_store_built_through_the_filesystem_is_clean() {
    let fx = Fixture::new();
    let r = fx.check();
    assert!(r.is_clean(), "{:#?}", r.problems);
    let c = r.counts;
    assert_eq!((c.inodes, c.dirs, c.files), (9, 3, 5));
    assert_eq!(c.dirents, 8, "7 names and the hard link");
    assert_eq!((c.orphans, c.xattrs), (1, 1));
    assert!(c.settled_chunks >= 3 && c.extents >= 1 && c.llm_frames == 3);
    assert_eq!(c.pending, c.hot_chunks);
    // Only the open unlinked file is worth a note, and it names it.
    let notes: Vec<_> = r.problems.iter().map(|p| (p.kind, p.ino)).collect();
    assert_eq!(notes, [(ProblemKind::Orphan, Some(fx.ino("o")))]);
    // The grown file's tail chunk holds fewer bytes than the chunk: that is fine.
    let g = fx.store().chunks_in(fx.ino("g"), 0, 10).unwrap();
    assert_eq!(g.len(), 1);
}

#[test]
fn verify_decodes_every_frame_and_llm_frames_need_a_model() {
    let fx = Fixture::new();
    let mut dec = fake_decoder;
    let mut last = None;
    let opts = CheckOptions { verify: true };
    let r = fx
        .store()
        .check(&opts, Some(&mut dec), &mut |p| {
            if p.phase == CheckPhase::Verify {
                last = Some(p)
            }
        })
        .unwrap();
    assert!(r.is_clean(), "{:#?}", r.problems);
    let c = r.counts;
    assert_eq!(c.verified_frames, c.hot_chunks + c.settled_chunks);
    assert_eq!(c.unverified_frames, 0);
    let last = last.unwrap();
    assert_eq!(
        (last.done, last.total),
        (c.verified_bytes, c.verified_bytes)
    );
    assert!(last.total > 3 * CS);

    let r = fx.verify(None);
    assert!(!r.is_clean());
    assert_found(&r, vec![(ProblemKind::Unverified, None, false)]);
    assert_eq!(r.counts.unverified_frames, 3);
    assert!(problem(&r, ProblemKind::Unverified)
        .message
        .contains("not verified: no model"));
}

#[test]
fn damaged_frames_are_found_by_verify_only() {
    let fx = Fixture::new();
    let (a, b) = (fx.ino("a"), fx.ino("b"));
    // A zstd frame whose payload (not header) is damaged, same length.
    let hot = fx.store().chunk(b, 1).unwrap().unwrap();
    let mut bad = hot.frame.to_vec();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    fx.engine.put_sealed(
        Table::Chunk,
        &keys::chunk(b, 1),
        &HotChunk::encode(hot.ver, &bad),
    );
    // An LLM frame in an extent, damaged the same way.
    let key = keys::chunk(a, 0);
    let mut e = Extent::decode(&fx.engine.get_unsealed(Table::Extent, &key).unwrap()).unwrap();
    let mut c2 = e.get(2).unwrap().clone();
    let n = c2.frame.len();
    c2.frame[n - 2] ^= 0x01;
    e.insert(c2);
    fx.engine.put_sealed(Table::Extent, &key, &e.encode());

    assert!(fx.check().is_clean(), "headers are intact");
    let mut dec = fake_decoder;
    let r = fx.verify(Some(&mut dec));
    assert_found(
        &r,
        vec![
            (ProblemKind::Decode, Some(a), false),
            (ProblemKind::Decode, Some(b), false),
        ],
    );
    let bad = of_kind(&r, ProblemKind::Decode);
    let at: Vec<_> = bad.iter().map(|p| (p.ino, p.chunk)).collect();
    assert_eq!(at, [(Some(b), Some(1)), (Some(a), Some(2))]);
    assert_eq!(bad[0].path.as_deref(), Some("/d/b"));
}

#[test]
fn a_model_that_fails_the_canary_verifies_no_llm_frame() {
    let fx = Fixture::new();
    let mut wrong = |frames: Vec<Vec<u8>>| {
        frames
            .iter()
            .map(|_| Ok(b"something else".to_vec()))
            .collect::<Vec<_>>()
    };
    let r = fx.verify(Some(&mut wrong));
    let kinds: Vec<_> = found(&r).into_iter().map(|f| f.0).collect();
    assert_eq!(kinds, [ProblemKind::Decode, ProblemKind::Unverified]);
    assert!(problem(&r, ProblemKind::Decode).message.contains("canary"));
    assert_eq!(r.counts.unverified_frames, 3);
}

#[test]
fn header_damage_is_found_without_verify() {
    let fx = Fixture::new();
    let (b, g) = (fx.ino("b"), fx.ino("g"));
    fx.plant(|s, t| {
        rewrite_chunk(s, t, b, 0, &[0xf1, 0, 0]);
        // More text than a chunk holds; and more than is left to g's end in chunk 2.
        let big = text(5000);
        rewrite_chunk(s, t, b, 1, &frame::assemble(Codec::Raw, &big, &big));
        let tail = text(2000);
        rewrite_chunk(s, t, g, 2, &frame::assemble(Codec::Raw, &tail, &tail));
    });
    let r = fx.check();
    assert_found(
        &r,
        vec![
            (ProblemKind::Frame, Some(b), false),
            (ProblemKind::Frame, Some(b), false),
            (ProblemKind::Frame, Some(g), false),
        ],
    );
    let msgs: Vec<&str> = of_kind(&r, ProblemKind::Frame)
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    assert!(msgs[0].contains("does not parse"), "{msgs:?}");
    assert!(msgs[1].contains("a chunk holds 4096"), "{msgs:?}");
    assert!(
        msgs[2].contains("ends 1808 bytes into the chunk"),
        "{msgs:?}"
    );
}

#[test]
fn namespace_damage_is_found_and_derived_fields_repaired() {
    let fx = Fixture::new();
    let (d, e, a, b) = (fx.ino("d"), fx.ino("e"), fx.ino("a"), fx.ino("b"));
    fx.plant(|s, t| {
        t.link(ROOT_INO, b"dangling", 777, Kind::File); // no inode 777
        t.link(d, b"wrongkind", a, Kind::Dir); // a is a file: and a's second name
        let mut i = s.inode(b).unwrap().unwrap();
        i.nlink = 7;
        t.put_inode(b, &i);
        let mut i = s.inode(e).unwrap().unwrap();
        i.parent = ROOT_INO;
        i.nlink = 9;
        t.put_inode(e, &i);
        let mut root = s.inode(ROOT_INO).unwrap().unwrap();
        root.parent = 5;
        t.put_inode(ROOT_INO, &root);
        t.put(
            Table::Meta,
            keys::NEXT_INO.to_vec(),
            keys::next_ino_value(3),
        );
    });
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::Dirent, Some(ROOT_INO), true),
            (K::Dirent, Some(d), true),
            (K::LinkCount, Some(a), true),
            (K::LinkCount, Some(b), true),
            (K::LinkCount, Some(e), true),
            (K::NextIno, None, true),
            (K::Parent, Some(e), true),
            (K::Root, Some(ROOT_INO), true),
        ],
    );
    assert_eq!(
        problem(&r, K::Parent).path.as_deref(),
        Some("/d/e"),
        "messages name the path"
    );
    fx.repair_to_clean(&r);
    assert_eq!(fx.inode(a).nlink, 2, "the kind is fixed, the name kept");
    assert_eq!(
        fx.store().lookup(d, b"wrongkind").unwrap(),
        Some((a, Kind::File))
    );
    assert_eq!(fx.store().lookup(ROOT_INO, b"dangling").unwrap(), None);
    assert_eq!(
        (fx.inode(b).nlink, fx.inode(e).nlink, fx.inode(e).parent),
        (2, 2, d)
    );
    assert_eq!(fx.inode(ROOT_INO).parent, ROOT_INO);
    let fresh = fx.store().alloc_ino().unwrap();
    assert!(fresh > fx.ino("o"), "next_ino raised: {fresh}");
}

#[test]
fn orphan_marks_against_names() {
    let fx = Fixture::new();
    let (a, s) = (fx.ino("a"), fx.ino("s"));
    let lost = write_file(&fx.core, ROOT_INO, b"lost", 0, &text(10));
    let leaked = write_file(&fx.core, ROOT_INO, b"leaked", 0, &text(10));
    fx.plant(|st, t| {
        t.mark_orphan(a); // named: the next mount would delete it
        t.unlink(ROOT_INO, b"lost"); // links, no name
        t.unlink(ROOT_INO, b"leaked"); // no links, no name, not an orphan
        let mut i = st.inode(leaked).unwrap().unwrap();
        i.nlink = 0;
        t.put_inode(leaked, &i);
        t.unlink(ROOT_INO, b"s"); // orphan mark, no name, but links
        t.mark_orphan(s);
    });
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::Disconnected, Some(lost), false),
            (K::LinkCount, Some(s), true),
            (K::Orphan, Some(a), true),
            (K::Orphan, Some(leaked), true),
        ],
    );
    assert!(problem(&r, K::Disconnected).message.contains("no name"));
    fx.store().repair(&r).unwrap();
    let again = fx.check();
    assert_found(&again, vec![(K::Disconnected, Some(lost), false)]);
    let mut want = vec![fx.ino("o"), s, leaked];
    want.sort_unstable();
    assert_eq!(fx.store().orphans().unwrap(), want);
}

#[test]
fn directory_cycles_and_entries_in_files_are_errors() {
    let fx = Fixture::new();
    let root = Caller::root();
    let p = fx
        .core
        .create_node(&root, ROOT_INO, b"p", NewNode::Dir { mode: 0o755 }, false)
        .unwrap()
        .ino;
    let q = fx
        .core
        .create_node(&root, p, b"q", NewNode::Dir { mode: 0o755 }, false)
        .unwrap()
        .ino;
    let a = fx.ino("a");
    fx.plant(|s, t| {
        // p leaves the root and moves under its own child, consistently counted.
        t.unlink(ROOT_INO, b"p");
        t.link(q, b"p", p, Kind::Dir);
        let mut r = s.inode(ROOT_INO).unwrap().unwrap();
        r.nlink -= 1;
        t.put_inode(ROOT_INO, &r);
        let mut i = s.inode(p).unwrap().unwrap();
        i.parent = q;
        t.put_inode(p, &i);
        let mut i = s.inode(q).unwrap().unwrap();
        i.nlink = 3;
        t.put_inode(q, &i);
        t.link(a, b"inside", fx.ino("b"), Kind::File); // an entry in a file
    });
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::Dirent, Some(a), false),
            (K::Disconnected, Some(p), false),
            (K::LinkCount, Some(fx.ino("b")), false),
        ],
    );
    assert!(problem(&r, K::Disconnected).message.contains("cycle"));
}

#[test]
fn a_damaged_or_missing_root_and_inode_are_errors() {
    let fx = Fixture::new();
    let l = fx.ino("l");
    fx.engine
        .put_sealed(Table::Inode, &keys::ino(l), b"\x02 not an inode");
    fx.engine.put_sealed(Table::Chunk, b"short", b"x");
    let r = fx.check();
    assert_found(
        &r,
        vec![
            (ProblemKind::Inode, Some(l), false),
            (ProblemKind::MalformedKey, None, false),
        ],
    );
    fx.plant(|_, t| t.delete_inode_record(ROOT_INO));
    let r = fx.check();
    assert_eq!(problem(&r, ProblemKind::Root).ino, Some(ROOT_INO));
    assert!(!r.is_clean());
}

#[test]
fn chunk_damage_is_found_and_what_nothing_reads_removed() {
    let fx = Fixture::new();
    let (d, a, b, g, s) = (
        fx.ino("d"),
        fx.ino("a"),
        fx.ino("b"),
        fx.ino("g"),
        fx.ino("s"),
    );
    let frame_b0 = fx.store().chunk(b, 0).unwrap().unwrap().frame;
    fx.plant(|st, t| {
        rewrite_chunk(st, t, g, 7, &frame::encode_fast(&text(50))); // past g's end
        rewrite_chunk(st, t, d, 0, &frame::encode_fast(&text(50))); // a directory's
        let mut i = st.inode(b).unwrap().unwrap();
        i.stored += 11;
        i.data_ver -= 1; // below its newest chunk's
        t.put_inode(b, &i);
        // s is gone without an orphan mark: its chunks are nobody's.
        t.delete_inode_record(s);
        t.unlink(ROOT_INO, b"s");
    });
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::Chunk, Some(d), true),
            (K::DataVersion, Some(b), true),
            (K::PastEof, Some(g), true),
            (K::Stored, Some(b), true),
            (K::Unreferenced, Some(s), true),
        ],
    );
    let left = &problem(&r, K::Unreferenced).message;
    assert!(
        left.contains("yet 1 hot chunk and 1 pending record of it"),
        "{left}"
    );
    fx.repair_to_clean(&r);
    assert!(fx.store().chunks_in(g, 0, u64::MAX).unwrap().len() == 1);
    assert!(fx.store().chunks_in(d, 0, u64::MAX).unwrap().is_empty());
    assert!(fx.store().chunks_in(s, 0, u64::MAX).unwrap().is_empty());
    assert_eq!(fx.store().chunk(b, 0).unwrap().unwrap().frame, frame_b0);
    for ino in [d, g, b] {
        let sum: u64 = fx
            .store()
            .chunks_in(ino, 0, u64::MAX)
            .unwrap()
            .iter()
            .map(|c| c.frame_len as u64)
            .sum();
        assert_eq!(fx.inode(ino).stored, sum);
    }
    let _ = a;
}

#[test]
fn pending_records_must_be_exactly_the_hot_chunks() {
    let fx = Fixture::new();
    let (a, b) = (fx.ino("a"), fx.ino("b"));
    fx.plant(|_, t| {
        t.delete(Table::Pending, keys::chunk(b, 0));
        let stale = Pending {
            ver: 999,
            written: 5,
        };
        t.put(Table::Pending, keys::chunk(b, 1), stale.encode());
        let extra = Pending { ver: 1, written: 5 };
        t.put(Table::Pending, keys::chunk(a, 0), extra.encode()); // settled, not hot
    });
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::Pending, Some(a), true),
            (K::Pending, Some(b), true),
            (K::Pending, Some(b), true),
        ],
    );
    fx.repair_to_clean(&r);
    assert_eq!(
        fx.engine.raw_keys(Table::Pending),
        fx.engine.raw_keys(Table::Chunk)
    );
    let p = fx.store().pending((b, 0), 4).unwrap();
    let hot_ver = fx.store().chunk(b, 1).unwrap().unwrap().ver;
    assert_eq!((p[1].index, p[1].ver, p[1].written), (1, hot_ver, 5));
}

#[test]
fn a_chunk_in_two_places_and_tangled_extents() {
    let fx = Fixture::new();
    let a = fx.ino("a");
    let settled = fx.store().chunk(a, 0).unwrap().unwrap();
    // A newer hot copy of a settled chunk (the settled one not removed), counted.
    let newer = frame::encode_fast(&text(CS as usize));
    fx.plant(|s, t| {
        let mut i = s.inode(a).unwrap().unwrap();
        i.data_ver += 1;
        i.stored += newer.len() as u64;
        t.put(
            Table::Chunk,
            keys::chunk(a, 0),
            HotChunk::encode(i.data_ver, &newer),
        );
        let p = Pending {
            ver: i.data_ver,
            written: 0,
        };
        t.put(Table::Pending, keys::chunk(a, 0), p.encode());
        t.put_inode(a, &i);
    });
    let r = fx.check();
    assert_found(&r, vec![(ProblemKind::Duplicate, Some(a), true)]);
    assert_eq!(problem(&r, ProblemKind::Duplicate).chunk, Some(0));
    fx.repair_to_clean(&r);
    let now = fx.store().chunks_in(a, 0, 1).unwrap();
    assert_eq!(now.len(), 1, "one copy left");
    assert!(now[0].hot);
    assert_ne!(
        fx.store().chunk(a, 0).unwrap().unwrap().frame,
        settled.frame
    );

    // A second extent, under chunk 0, holding chunk 0 (newer than the hot one) and
    // chunk 1 again: a duplicate of each kind and an overlap, none repairable.
    let (key, e) = fx
        .engine
        .raw_keys(Table::Extent)
        .into_iter()
        .filter(|k| keys::chunk_of(k).unwrap().0 == a)
        .map(|k| {
            let e = Extent::decode(&fx.engine.get_unsealed(Table::Extent, &k).unwrap()).unwrap();
            (k, e)
        })
        .find(|(_, e)| e.get(1).is_some())
        .unwrap();
    assert_eq!(keys::chunk_of(&key), Some((a, 1)), "the repair re-keyed it");
    let mut other = Extent::default();
    let hot_ver = fx.store().chunk(a, 0).unwrap().unwrap().ver;
    other.insert(ExtentChunk {
        index: 0,
        ver: hot_ver + 1,
        frame: settled.frame.to_vec(),
    });
    other.insert(e.get(1).unwrap().clone());
    fx.engine
        .put_sealed(Table::Extent, &keys::chunk(a, 0), &other.encode());
    let r = fx.check();
    use ProblemKind as K;
    assert_found(
        &r,
        vec![
            (K::DataVersion, Some(a), true),
            (K::Duplicate, Some(a), false),
            (K::Duplicate, Some(a), false),
            (K::Extent, Some(a), false),
            (K::Stored, Some(a), false),
        ],
    );
}

#[test]
fn an_undecodable_extent_is_an_error_and_blocks_data_repairs() {
    let fx = Fixture::new();
    let a = fx.ino("a");
    fx.engine
        .put_sealed(Table::Extent, &keys::chunk(a, 0), b"\x01\x05garbage");
    fx.plant(|s, t| {
        let mut i = s.inode(a).unwrap().unwrap();
        i.size = 10; // chunks 1.. now lie past the end
        t.put_inode(a, &i);
    });
    let r = fx.check();
    assert_found(
        &r,
        vec![
            (ProblemKind::Extent, Some(a), false),
            (ProblemKind::PastEof, Some(a), false),
        ],
    );
}

#[test]
fn a_deleted_file_left_to_the_reaper_is_a_note() {
    let fx = Fixture::new();
    let s = fx.ino("s");
    fx.plant(|_, t| {
        t.delete_inode_record(s);
        t.unlink(ROOT_INO, b"s");
        t.mark_orphan(s);
    });
    let r = fx.check();
    assert!(r.is_clean(), "{:#?}", r.problems);
    let note = r.problems.iter().find(|p| p.ino == Some(s)).unwrap();
    assert_eq!(note.severity, Severity::Info);
    assert!(note.message.contains("reaper"));
}

#[test]
fn a_torn_unlink_is_found_and_repaired() {
    let fx = Fixture::new();
    let b = write_file(&fx.core, ROOT_INO, b"torn", 0, &text(6000));
    // The unlink's operations in key order: the root's record, the file's record,
    // the name, the chunks... Only the two records land.
    fx.engine.tear_commit(1, 2);
    assert!(fx.core.unlink(&Caller::root(), ROOT_INO, b"torn").is_err());
    let r = fx.check();
    assert_found(
        &r,
        vec![
            (ProblemKind::Dirent, Some(ROOT_INO), true),
            (ProblemKind::Unreferenced, Some(b), true),
        ],
    );
    fx.repair_to_clean(&r);
}

#[test]
fn a_torn_write_is_found_and_repaired() {
    let fx = Fixture::new();
    let root = Caller::root();
    let f = write_file(&fx.core, ROOT_INO, b"w", 0, &text(100));
    let fh = fx.core.open(&root, f, crate::fs::perm::W).unwrap();
    let _ = fh;
    fx.core
        .write(f, 0, &text(3 * CS as usize), false, Wait::Model)
        .unwrap();
    // The persist's operations: the record, three chunks, three pending records.
    // Chunk 2 is lost (a hole: fine), chunk 1 has no pending record, chunk 0's is the
    // old version's, and the record counts all three frames.
    fx.engine.tear_commit(1, 3);
    assert!(fx.core.flush(f, Wait::Model).is_err());
    let r = fx.check();
    assert_found(
        &r,
        vec![
            (ProblemKind::Pending, Some(f), true),
            (ProblemKind::Pending, Some(f), true),
            (ProblemKind::Stored, Some(f), true),
        ],
    );
    fx.repair_to_clean(&r);
}

#[test]
fn repair_fixes_exactly_the_repairable_problems() {
    let fx = Fixture::new();
    let (b, g) = (fx.ino("b"), fx.ino("g"));
    let lost = write_file(&fx.core, ROOT_INO, b"lost", 0, &text(10));
    fx.plant(|s, t| {
        t.link(ROOT_INO, b"dangling", 888, Kind::File);
        rewrite_chunk(s, t, b, 0, &[0xf1, 0, 0]);
        rewrite_chunk(s, t, g, 9, &frame::encode_fast(&text(50)));
        t.unlink(ROOT_INO, b"lost");
    });
    let before = fx.check();
    let kept: Vec<_> = found(&before).into_iter().filter(|f| !f.2).collect();
    assert_eq!(kept.len(), 2, "{before:#?}");
    assert_eq!(before.repairable(), 2);
    let summary = fx.store().repair(&before).unwrap();
    assert_eq!(summary.repaired, 2);
    let after = fx.check();
    assert_eq!(found(&after), kept);
    assert!(after.problems.iter().any(|p| p.ino == Some(lost)));
    // A report with nothing to repair writes nothing.
    let commits = fx.engine.commits();
    let none = fx.store().repair(&after).unwrap();
    assert_eq!((none.repaired, none.commits), (0, 0));
    assert_eq!(fx.engine.commits(), commits);
}

#[test]
fn renames_and_a_big_deletion_leave_the_store_clean() {
    use crate::fs::rename::RenameMode;
    let fx = Fixture::new();
    let root = Caller::root();
    let c = &fx.core;
    let dir = |parent, name: &[u8]| {
        c.create_node(&root, parent, name, NewNode::Dir { mode: 0o755 }, false)
            .unwrap()
            .ino
    };
    let r1 = dir(ROOT_INO, b"r1");
    let sub = dir(r1, b"sub");
    dir(sub, b"deeper");
    let r2 = dir(ROOT_INO, b"r2");
    c.rename(&root, r1, b"sub", r2, b"moved", RenameMode::Replace)
        .unwrap();
    dir(r1, b"empty");
    c.rename(&root, r2, b"moved", r1, b"empty", RenameMode::Replace)
        .unwrap();
    c.rename(&root, r1, b"empty", ROOT_INO, b"r2", RenameMode::Exchange)
        .unwrap();
    write_file(c, ROOT_INO, b"t1", 0, &text(10));
    let t2 = write_file(c, ROOT_INO, b"t2", 0, &text(20));
    c.link(&root, t2, r1, b"t2b").unwrap();
    c.rename(&root, ROOT_INO, b"t1", ROOT_INO, b"t2", RenameMode::Replace)
        .unwrap();
    // More chunks than an unlink deletes inline: left to the background reaper.
    let big = write_file(c, ROOT_INO, b"big", 0, &text(1100 * CS as usize));
    c.unlink(&root, ROOT_INO, b"big").unwrap();
    let r = fx.check();
    assert!(r.is_clean(), "{:#?}", found(&r));
    assert_eq!(fx.inode(t2).nlink, 1);
    let note = r.problems.iter().find(|p| p.ino == Some(big)).unwrap();
    assert!(note.message.contains("1100 hot chunks"), "{}", note.message);
}
