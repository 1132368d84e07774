//! The `llmfs` command as a user runs it: exit codes and messages for every error a user
//! can cause, and file/stdin/stdout round trips with the real model.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn llmfs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmfs"));
    cmd.args(args);
    if matches!(args.first(), Some(&("compress" | "decompress"))) {
        // One llama.cpp thread per process: tests run two at a time on two cores, and
        // oversubscribed OpenMP teams spin against each other.
        cmd.args(["--threads", "1"]);
    }
    let mut child = cmd
        .env("LLMFS_MODEL", common::model_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running llmfs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        pipe.write_all(data).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn file_and_pipe_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.md");
    std::fs::write(&input, common::corpus("SmolLM2-135M-Instruct.Q4_1-020.md")).unwrap();
    let o = llmfs(&["compress", p(&input)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let packed = dir.path().join("log.md.llz");
    assert!(packed.exists());
    std::fs::remove_file(&input).unwrap();
    let o = llmfs(&["decompress", p(&packed)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&input).unwrap(),
        common::corpus("SmolLM2-135M-Instruct.Q4_1-020.md")
    );

    let text = b"Piped through standard input and output.\n";
    let o = llmfs(&["compress", "-"], Some(text));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = llmfs(&["decompress", "-"], Some(&o.stdout));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, text);
}

#[test]
fn corrupt_and_truncated_files_exit_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::corpus("SmolLM2-135M-Instruct.Q4_1-005.md");
    let o = llmfs(&["compress", "-", "--no-verify"], Some(&text));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut bad = o.stdout.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let f = dir.path().join("bad.llz");
    std::fs::write(&f, &bad).unwrap();
    let o = llmfs(
        &["decompress", p(&f), "-o", p(&dir.path().join("out"))],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("segment 0"), "{}", stderr(&o));
    assert!(
        !dir.path().join("out").exists(),
        "no output may be left behind"
    );

    let o = llmfs(&["decompress", "-"], Some(&bad[..bad.len() / 2]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let o = llmfs(&["decompress", "-"], Some(b"plain text, not a container"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not an llmfs compressed file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn wrong_model_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let o = llmfs(
        &["compress", "-", "--no-verify"],
        Some(b"Hello from the right model."),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let packed = o.stdout;
    // Another model: the same weights with one byte of the last tensor changed.
    let mut other = std::fs::read(common::model_path()).unwrap();
    let last = other.len() - 1;
    other[last] ^= 1;
    let other_path = dir.path().join("other.gguf");
    std::fs::write(&other_path, other).unwrap();
    let o = llmfs(
        &["decompress", "-", "--model", p(&other_path)],
        Some(&packed),
    );
    assert_eq!(o.status.code(), Some(1));
    let msg = stderr(&o);
    assert!(msg.contains("wrong model"), "{msg}");
    assert!(
        msg.contains("b179c9523d0e6a0f"),
        "names the file's model: {msg}"
    );
    let other_fp = std::fs::read_to_string(dir.path().join("other.gguf.llmfs-sha256")).unwrap();
    assert!(
        msg.contains(other_fp.split(' ').next().unwrap()),
        "names the loaded model: {msg}"
    );
}

#[test]
fn user_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let o = llmfs(&["compress", p(dir.path())], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));

    let o = llmfs(&["compress", p(&dir.path().join("missing.txt"))], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.txt"), "{}", stderr(&o));

    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"text").unwrap();
    let o = llmfs(
        &["compress", p(&input), "--model", "/nonexistent/model.gguf"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("fetch-model.sh"), "{}", stderr(&o));

    let o = llmfs(&["compress", p(&input), "--model", p(&input)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a GGUF"), "{}", stderr(&o));

    for args in [
        &["compress", "--segment-size", "0", "x"][..],
        &["compress", "--segment-size", "4Q", "x"],
        &["compress", "--segment-size", "17M", "x"],
        &["bench", "--segment-size", "4K,17M", "x"],
        &["mount", "/nonexistent/store", "/nonexistent/mnt", "-o", "cache_size=16Q"],
        &["compress", "--bogus", "x"],
        &["bench"],
        &["frobnicate"],
    ] {
        let o = llmfs(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = llmfs(&["decompress", p(&input)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-o OUTPUT"), "{}", stderr(&o));
}

#[test]
fn mount_sizes_take_the_syntax_of_every_size_flag() {
    // Parsed, then refused for the missing mount point: not a usage error.
    let o = llmfs(
        &[
            "mount",
            "/nonexistent/store",
            "/nonexistent/mnt",
            "-o",
            "cache_size=16KiB,dirty_limit=1MiB,chunk_size=4kb",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
}
