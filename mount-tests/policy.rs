//! Per-directory compression policy (`user.llmfs.compress`) and `llmfs du`, through a
//! real mount with the synthetic test model.

use crate::harness::{corpus, llmfs_bin, llmfs_ok, Mount};
use std::fs;
use std::path::Path;
use std::process::Command;

const FAST: &[&str] = &["test_model", "cold_after=0"];
const ATTR: &str = "user.llmfs.compress";

fn codecs(path: &Path) -> String {
    String::from_utf8(xattr::get(path, "user.llmfs.codecs").unwrap().unwrap()).unwrap()
}

fn count(codecs: &str, codec: &str) -> u64 {
    codecs
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{codec}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn policy(path: &Path) -> Option<String> {
    xattr::get(path, ATTR)
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// `llmfs du --json PATHS`.
fn du(paths: &[&Path]) -> serde_json::Map<String, serde_json::Value> {
    let mut args = vec![std::ffi::OsStr::new("du"), "--json".as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    match serde_json::from_slice(&llmfs_ok(args)).unwrap() {
        serde_json::Value::Object(m) => m,
        other => panic!("du is not an object: {other}"),
    }
}

fn n(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> u64 {
    m.get(k)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{k} missing in {m:?}"))
}

#[test]
fn directories_keep_what_they_hold_from_the_model_and_pass_it_on() {
    let mut m = Mount::with_options(FAST);
    let text = corpus("SmolLM2-135M-Instruct.Q4_1.jsonl");
    let text = &text[..text.len().min(64 << 10)];
    for d in ["logs", "bin", "media"] {
        fs::create_dir(m.path(d)).unwrap();
    }
    xattr::set(m.path("bin"), ATTR, b"fast").unwrap();
    xattr::set(m.path("media"), ATTR, b"none\n").unwrap();
    // Inherited by a directory created below, and by the files in it.
    fs::create_dir(m.path("bin/sub")).unwrap();
    assert_eq!(policy(&m.path("bin/sub")).as_deref(), Some("fast"));
    assert_eq!(policy(&m.path("logs")), None);
    fs::write(m.path("logs/a.jsonl"), text).unwrap();
    fs::write(m.path("bin/sub/b.jsonl"), text).unwrap();
    fs::write(m.path("media/c.jsonl"), text).unwrap();
    assert_eq!(policy(&m.path("bin/sub/b.jsonl")).as_deref(), Some("fast"));
    assert_eq!(policy(&m.path("media/c.jsonl")).as_deref(), Some("none"));
    // A bad value is refused and changes nothing.
    let err = xattr::set(m.path("logs"), ATTR, b"gzip").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(policy(&m.path("logs")), None);
    // The attribute is listed (cp -a and tar --xattrs carry it).
    let names: Vec<_> = xattr::list(m.path("bin")).unwrap().collect();
    assert!(names.iter().any(|n| n == ATTR), "{names:?}");

    let st = m.wait_idle();
    assert!(
        crate::harness::stat(&st, "compacted_chunks_skipped") > 0,
        "{st:?}"
    );
    let chunks = (text.len() as u64).div_ceil(4096);
    let a = codecs(&m.path("logs/a.jsonl"));
    let b = codecs(&m.path("bin/sub/b.jsonl"));
    let c = codecs(&m.path("media/c.jsonl"));
    assert_eq!(count(&a, "llm"), chunks, "logs: {a}");
    assert_eq!(
        (count(&b, "llm"), count(&b, "zstd")),
        (0, chunks),
        "bin: {b}"
    );
    assert_eq!(
        (count(&c, "llm"), count(&c, "raw")),
        (0, chunks),
        "media: {c}"
    );

    // du over the subtrees: logical bytes, per codec, nothing pending.
    let all = du(&[&m.mnt]);
    assert_eq!(n(&all, "files"), 3);
    assert_eq!(n(&all, "logical_bytes"), 3 * text.len() as u64);
    assert_eq!(n(&all, "chunks_llm"), chunks);
    assert_eq!(n(&all, "chunks_zstd"), chunks);
    assert_eq!(n(&all, "chunks_raw"), chunks);
    assert_eq!(n(&all, "plain_bytes_raw"), text.len() as u64);
    assert_eq!(n(&all, "pending_bytes"), 0);
    let raw = du(&[&m.path("media")]);
    assert!(n(&raw, "stored_bytes") >= text.len() as u64, "{raw:?}");
    let logs = du(&[&m.path("logs")]);
    assert!(
        n(&logs, "stored_bytes") < n(&du(&[&m.path("bin")]), "stored_bytes"),
        "the model's frames are smaller than zstd's"
    );

    // Everything reads back, also after a remount (the policy is stored).
    m.stop();
    m.start();
    for f in ["logs/a.jsonl", "bin/sub/b.jsonl", "media/c.jsonl"] {
        assert_eq!(fs::read(m.path(f)).unwrap(), text, "{f}");
    }
    assert_eq!(policy(&m.path("bin/sub")).as_deref(), Some("fast"));
    // A file created after the remount still inherits.
    fs::write(m.path("media/d.bin"), b"after the remount").unwrap();
    assert_eq!(policy(&m.path("media/d.bin")).as_deref(), Some("none"));
}

#[test]
fn changing_a_files_policy_queues_it_for_the_model_or_keeps_it_away() {
    let mut m = Mount::with_options(&["test_model", "cold_after=1h"]);
    let text = corpus("gemma-3-270m-q4_k_m.jsonl");
    let text = &text[..text.len().min(32 << 10)];
    fs::create_dir(m.path("bin")).unwrap();
    xattr::set(m.path("bin"), ATTR, b"fast").unwrap();
    fs::write(m.path("bin/log.jsonl"), text).unwrap();
    fs::write(m.path("waiting.jsonl"), text).unwrap();
    m.stop();
    m.start();
    // Not cold yet: the llm file's bytes wait for the model, the fast one's do not.
    let waiting = du(&[&m.path("waiting.jsonl")]);
    assert_eq!(n(&waiting, "pending_bytes"), text.len() as u64);
    assert_eq!(n(&du(&[&m.path("bin")]), "pending_bytes"), 0);
    // Taking a file out of the model's way: nothing of it is pending any more.
    xattr::set(m.path("waiting.jsonl"), ATTR, b"fast").unwrap();
    assert_eq!(n(&du(&[&m.path("waiting.jsonl")]), "pending_bytes"), 0);

    // Settle the fast file's chunks (cold now), then give it back to the model.
    m.stop();
    m.set_options(FAST);
    m.start();
    m.wait_idle();
    let c = codecs(&m.path("bin/log.jsonl"));
    assert_eq!(count(&c, "llm"), 0, "{c}");
    xattr::remove(m.path("bin/log.jsonl"), ATTR).unwrap();
    assert_eq!(policy(&m.path("bin/log.jsonl")), None);
    m.wait_idle();
    let chunks = (text.len() as u64).div_ceil(4096);
    let c = codecs(&m.path("bin/log.jsonl"));
    assert_eq!(count(&c, "llm"), chunks, "{c}");
    assert_eq!(fs::read(m.path("bin/log.jsonl")).unwrap(), text);
    let d = du(&[&m.path("bin/log.jsonl")]);
    assert_eq!(n(&d, "chunks_llm"), chunks);
    assert_eq!(n(&d, "logical_bytes"), text.len() as u64);
}

#[test]
fn du_outside_a_mount_says_so() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let out = Command::new(llmfs_bin())
        .arg("du")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in an llmfs mount"), "{err}");
}
