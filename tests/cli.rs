//! The `llmfs` command as a user runs it: exit codes and messages for every error a user
//! can cause, file/stdin/stdout round trips with the real model, the code's independence
//! from the thread count, older file versions, and where outputs are written.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Model processes share the CPU through this lock. Tests run two at a time on two
/// cores and llama.cpp's OpenMP threads busy-wait, so oversubscribed processes slow each
/// other 5-10x: ordinary commands run with one thread each under the shared side, and a
/// test that needs several threads holds the exclusive side.
static CPU: RwLock<()> = RwLock::new(());

fn shared_cpu() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive_cpu() -> RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

/// Runs llmfs with one llama.cpp thread (unless `args` say otherwise), sharing the CPU.
fn llmfs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let _cpu = shared_cpu();
    let one_thread =
        matches!(args.first(), Some(&("compress" | "decompress"))) && !args.contains(&"--threads");
    let mut all = args.to_vec();
    if one_thread {
        all.extend(["--threads", "1"]);
    }
    run_llmfs(&all, stdin)
}

/// Runs llmfs exactly as told; the caller holds the CPU lock it needs.
fn run_llmfs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmfs"));
    cmd.args(args);
    let mut child = cmd
        .env("LLMFS_MODEL", common::model_path())
        // Threads wait for each other asleep rather than spinning: on a machine shared
        // with other jobs a spinning 2-thread decode took 267 s, a sleeping one 33 s
        // (one thread: 29 s). It changes the waiting, never the arithmetic.
        .env("OMP_WAIT_POLICY", "passive")
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

/// An error line names each cause once: "frame is truncated: frame is truncated" is
/// what a cause printed both in its parent's message and as its source looks like.
fn assert_no_repeated_cause(msg: &str) {
    for line in msg.lines().filter(|l| l.contains("error")) {
        let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.len() < 8 || !parts[i + 1..].contains(p),
                "`{p}` repeated in: {line}"
            );
        }
    }
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

    assert_no_repeated_cause(&stderr(&o));

    let o = llmfs(&["decompress", "-"], Some(&bad[..bad.len() / 2]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_no_repeated_cause(&stderr(&o));

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
        Some(&common::corpus("SmolLM2-135M-Instruct.Q4_1-004.md")[..500]),
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
    assert!(
        msg.contains("wrong model") && msg.contains("fingerprint starts b179c9"),
        "names the file's model: {msg}"
    );
    let other_fp = std::fs::read_to_string(dir.path().join("other.gguf.llmfs-sha256")).unwrap();
    assert!(
        msg.contains(other_fp.split(' ').next().unwrap()),
        "names the loaded model: {msg}"
    );
}

#[test]
fn a_model_replaced_in_place_is_not_taken_for_the_old_one() {
    // The fingerprint cache once trusted size and mtime: another model of the same size
    // with the old mtime read as the old one, and the failure as corruption.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    let original = std::fs::read(common::model_path()).unwrap();
    std::fs::write(&model, &original).unwrap();
    let mtime = std::fs::metadata(&model).unwrap().modified().unwrap();
    let o = llmfs(
        &["compress", "-", "--no-verify", "--model", p(&model)],
        Some(&common::corpus("SmolLM2-135M-Instruct.Q4_1-006.md")[..500]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("m.gguf.llmfs-sha256").exists());
    let packed = o.stdout;
    let mut other = original;
    let last = other.len() - 1;
    other[last] ^= 1;
    std::fs::write(&model, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&model)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = llmfs(&["decompress", "-", "--model", p(&model)], Some(&packed));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong model"), "{}", stderr(&o));
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
        &[
            "mount",
            "/nonexistent/store",
            "/nonexistent/mnt",
            "-o",
            "cache_size=16Q",
        ],
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
    assert!(
        stderr(&o).contains("mount point /nonexistent/mnt does not exist"),
        "{}",
        stderr(&o)
    );
}

/// Text of `len` bytes from the corpus with multibyte characters mixed in, so that
/// segment edges split some of them.
fn multibyte_text(len: usize) -> Vec<u8> {
    let extra = "Crème brûlée, naïve café, Ångström. 日本語のテキストも圧縮できます。中文文本也可以。한국어도 됩니다.\n";
    let mut text = Vec::new();
    for i in 0.. {
        let model = if i % 2 == 0 {
            "SmolLM2-135M-Instruct.Q4_1"
        } else {
            "gemma-3-270m-q4_k_m"
        };
        text.extend(common::corpus(&format!("{model}-{:03}.md", i / 2 % 24)));
        text.extend(extra.as_bytes());
        if text.len() >= len {
            break;
        }
    }
    text.truncate(len);
    text
}

/// `multibyte_text(len)` with a three-byte character across byte `at`.
fn text_split_at(len: usize, at: usize) -> Vec<u8> {
    let base = multibyte_text(len);
    let mut cut = at - 1;
    while base[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    let mut text = base[..cut].to_vec();
    text.resize(at - 1, b' ');
    text.extend("語".as_bytes());
    text.extend(&base[cut..]);
    text.truncate(len);
    assert_eq!(text[at] & 0xc0, 0x80, "byte {at} continues a character");
    text
}

/// Compresses with 2 llama.cpp threads and decompresses with 1 and 3, each in its own
/// process. With flash attention on (the first container version) this failed from
/// about 500 tokens on: llama.cpp split the attention over the threads.
#[test]
fn the_thread_count_and_the_lanes_do_not_change_the_code() {
    let _cpu = exclusive_cpu();
    let dir = tempfile::tempdir().unwrap();
    // 4 KiB segments: a full one whose edge splits a character, then a short one.
    // 16 KiB: one full segment of about 3,700 tokens.
    for (segment, text, segments) in [
        ("4K", text_split_at(5_500, 4096), 2),
        ("16K", multibyte_text(16_384), 1),
    ] {
        let input = dir.path().join(format!("text-{segment}"));
        std::fs::write(&input, &text).unwrap();
        let packed = dir.path().join(format!("text-{segment}.llz"));
        // Two lanes of one thread each, coding side by side.
        let o = run_llmfs(
            &[
                "compress",
                "--lanes",
                "2",
                "--threads",
                "2",
                "--no-verify",
                "--segment-size",
                segment,
                p(&input),
                "-o",
                p(&packed),
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let all_llm = format!("{segments} of {segments} segments LLM-coded");
        assert!(stderr(&o).contains(&all_llm), "{}", stderr(&o));
        if segments > 1 {
            // One lane alone writes the same bytes.
            let single = dir.path().join(format!("text-{segment}-1.llz"));
            let o = run_llmfs(
                &[
                    "compress",
                    "--lanes",
                    "1",
                    "--threads",
                    "1",
                    "--no-verify",
                    "--segment-size",
                    segment,
                    p(&input),
                    "-o",
                    p(&single),
                ],
                None,
            );
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(
                std::fs::read(&single).unwrap() == std::fs::read(&packed).unwrap(),
                "{segment}: one lane and two lanes wrote different files"
            );
        }
        // One lane, in another process, with one thread and with three.
        for threads in ["1", "3"] {
            let out = dir.path().join(format!("out-{segment}-{threads}"));
            let o = run_llmfs(
                &[
                    "decompress",
                    "--lanes",
                    "1",
                    "--threads",
                    threads,
                    p(&packed),
                    "-o",
                    p(&out),
                ],
                None,
            );
            assert!(
                o.status.success(),
                "{segment} segments, {threads} threads: {}",
                stderr(&o)
            );
            assert!(
                std::fs::read(&out).unwrap() == text,
                "{segment} segments, {threads} threads"
            );
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn version_1_files_decode_by_trying_thread_counts() {
    // Written with 2 threads; 1 thread fails with that version's settings.
    let mut text = Vec::new();
    for i in 0..3 {
        text.extend(common::corpus(&format!(
            "SmolLM2-135M-Instruct.Q4_1-{i:03}.md"
        )));
    }
    text.truncate(4096);
    let o = llmfs(&["decompress", "-"], Some(&fixture("v1-threads2.llz")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == text);
    assert!(
        stderr(&o).contains("with 2 llama.cpp threads"),
        "{}",
        stderr(&o)
    );

    let short = &common::corpus("gemma-3-270m-q4_k_m-001.md")[..300];
    let v1 = fixture("v1-short.llz");
    let o = llmfs(&["decompress", "-"], Some(&v1));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, short);
    // A CRC no thread count can match: every count is tried, then a clear refusal.
    let mut bad = v1.clone();
    bad[19] ^= 1;
    let o = llmfs(&["decompress", "-"], Some(&bad));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("did not decode with any thread count tried (1-"),
        "{msg}"
    );
    assert!(msg.contains("--threads N"), "{msg}");
    assert_no_repeated_cause(&msg);
}

#[test]
fn a_profile_this_build_cannot_reproduce_is_refused_before_decoding() {
    // Version 2 records the whole profile: each difference is named.
    let v2 = fixture("v2-threads2.llz");
    let at = v2
        .windows(7)
        .position(|w| w == b"0.1.161")
        .expect("the llama.cpp build is recorded");
    let mut other = v2.clone();
    other[at..at + 7].copy_from_slice(b"0.1.999");
    let o = llmfs(&["decompress", "-"], Some(&other));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("llama.cpp build: recorded 0.1.999, this build 0.1.161"),
        "{msg}"
    );
    assert_no_repeated_cause(&msg);
    // Version 3 records a digest: the model matches, the rest does not.
    let o = llmfs(
        &["compress", "-", "--no-verify"],
        Some(&common::corpus("SmolLM2-135M-Instruct.Q4_1-008.md")[..500]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut packed = o.stdout;
    assert_eq!(&packed[..4], b"LLZ\x03");
    packed[9] ^= 1; // a byte of the profile digest
    let o = llmfs(&["decompress", "-"], Some(&packed));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(msg.contains("is not this build's"), "{msg}");
    assert!(
        msg.contains("primer builtin-v1"),
        "names this build's coding: {msg}"
    );
    assert_no_repeated_cause(&msg);
}

/// Files of the previous release (container and coder version 2, no primer) decode with
/// this build, with other thread and lane counts than they were written with.
#[test]
fn version_2_files_still_decode() {
    let mut text = Vec::new();
    for i in 0..3 {
        text.extend(common::corpus(&format!(
            "SmolLM2-135M-Instruct.Q4_1-{i:03}.md"
        )));
    }
    text.truncate(4096);
    let o = llmfs(
        &["decompress", "-", "--threads", "1"],
        Some(&fixture("v2-threads2.llz")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == text);
    let log = &common::corpus("SmolLM2-135M-Instruct.Q4_1.jsonl")[..6000];
    let o = llmfs(
        &["decompress", "-", "--lanes", "2", "--threads", "2"],
        Some(&fixture("v2-jsonl-6000.llz")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == log);
}

/// The primer makes the code of a 4 KiB file of LLM logs smaller than without it, and
/// each decodes with another thread count than it was coded with.
#[test]
fn a_small_file_is_small_and_the_primer_pays() {
    let text = &common::corpus("SmolLM2-135M-Instruct.Q4_1.jsonl")[8192..12288];
    let mut sizes = Vec::new();
    for primer in ["none", "builtin"] {
        let o = llmfs(
            &["compress", "-", "--no-verify", "--primer", primer],
            Some(text),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        sizes.push(o.stdout.len());
        let back = llmfs(&["decompress", "-", "--threads", "1"], Some(&o.stdout));
        assert!(back.status.success(), "{}", stderr(&back));
        assert!(back.stdout == text, "primer {primer}");
    }
    assert!(
        sizes[1] < sizes[0],
        "with the primer {} bytes, without {}",
        sizes[1],
        sizes[0]
    );
}

#[test]
fn bench_reports_decoding_with_another_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("short.md");
    std::fs::write(
        &input,
        &common::corpus("SmolLM2-135M-Instruct.Q4_1-003.md")[..400],
    )
    .unwrap();
    let o = llmfs(&["bench", "--threads", "1", p(&input)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("coded with 1 threads, decodes with 2"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("| short.md")).unwrap();
    assert!(row.ends_with("| identical |"), "{row}");
}

/// A container of model-free frames: random bytes, which are never LLM-coded.
fn model_free_container() -> (Vec<u8>, Vec<u8>) {
    let mut x = 0x2545F4914F6CDD1Du64;
    let data: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let o = llmfs(&["compress", "-", "--segment-size", "1K"], Some(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    (data, o.stdout)
}

fn partial_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("llmfs-partial"))
        .collect()
}

#[test]
fn outputs_write_into_special_files_and_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let (data, packed) = model_free_container();
    let llz = dir.path().join("data.llz");
    std::fs::write(&llz, &packed).unwrap();

    // /dev/null stays the device.
    for cmd in ["compress", "decompress"] {
        let input = if cmd == "compress" {
            dir.path().join("in")
        } else {
            llz.clone()
        };
        std::fs::write(dir.path().join("in"), b"x").unwrap();
        let o = llmfs(&[cmd, p(&input), "-o", "/dev/null"], None);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(
            meta.file_type().is_char_device(),
            "{cmd} replaced /dev/null"
        );
    }

    // A FIFO is written into, not replaced.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        })
    };
    let o = llmfs(&["decompress", p(&llz), "-o", p(&fifo)], None);
    // Had llmfs never opened the FIFO, the reader would wait forever: open it once
    // more, without blocking, so that it sees an end either way.
    let _ = std::fs::File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(reader.join().unwrap() == data);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A symbolic link stays a link; its target gets the output, existing or not.
    let target = dir.path().join("target");
    std::fs::write(&target, b"old contents").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("target", &link).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("sub/new", &dangling).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (out, written) in [
        (&link, target.clone()),
        (&dangling, dir.path().join("sub/new")),
    ] {
        let o = llmfs(&["decompress", p(&llz), "-o", p(out)], None);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::symlink_metadata(out)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read(&written).unwrap() == data);
    }

    // A link planted where the old temporary name was is left alone, and so is its target.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out = dir.path().join("out");
    std::os::unix::fs::symlink(&victim, dir.path().join("out.llmfs-partial")).unwrap();
    let o = llmfs(&["decompress", p(&llz), "-o", p(&out)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::read(&out).unwrap() == data);
    std::fs::remove_file(dir.path().join("out.llmfs-partial")).unwrap();
    assert!(
        partial_files(dir.path()).is_empty(),
        "{:?}",
        partial_files(dir.path())
    );
}

#[test]
fn output_to_a_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = model_free_container();
    let llz = dir.path().join("data.llz");
    std::fs::write(&llz, &packed).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for args in [
        ["decompress", p(&llz), "-o", p(&sub)],
        ["compress", p(&llz), "-o", p(&sub)],
    ] {
        let o = llmfs(&args, None);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
        assert!(
            partial_files(dir.path()).is_empty(),
            "{:?}",
            partial_files(dir.path())
        );
        assert!(std::fs::read_dir(&sub).unwrap().next().is_none());
    }
    // A failed decode leaves nothing either.
    let mut bad = packed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&llz, &bad).unwrap();
    let out = dir.path().join("out");
    let o = llmfs(&["decompress", p(&llz), "-o", p(&out)], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!out.exists());
    assert!(
        partial_files(dir.path()).is_empty(),
        "{:?}",
        partial_files(dir.path())
    );
}

#[test]
// Writes a container and its frames byte for byte, as their layouts say.
#[allow(clippy::disallowed_methods)]
fn decompress_streams_in_bounded_memory() {
    // A legitimate file of 1 GiB of zeros in 16 MiB segments takes a few KB; the header
    // claims its length. Under a 512 MiB address-space limit, decoding it must still
    // work: one segment at a time (the first version held the whole output in memory).
    let zeros = vec![0u8; 16 << 20];
    let frame = zstd::bulk::compress(&zeros, 3).unwrap();
    let mut llz = b"LLZ\x02\x00".to_vec();
    let varint = |out: &mut Vec<u8>, mut v: u64| {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    let segments = 64u64;
    varint(&mut llz, 16 << 20);
    varint(&mut llz, segments << 24);
    let mut f = vec![0x11u8]; // frame version 1, zstd
    varint(&mut f, 16 << 20);
    f.extend_from_slice(&crc32fast::hash(&zeros).to_le_bytes());
    f.extend_from_slice(&frame);
    for _ in 1..segments {
        varint(&mut llz, f.len() as u64);
    }
    for _ in 0..segments {
        llz.extend_from_slice(&f);
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("zeros.llz");
    std::fs::write(&input, &llz).unwrap();
    let _cpu = shared_cpu();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 524288 && exec \"$0\" decompress {} -o /dev/null",
            p(&input)
        ))
        .arg(env!("CARGO_BIN_EXE_llmfs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The same header with half the frames cut off fails cleanly, with no huge buffer.
    let cut = &llz[..llz.len() / 2];
    let o = llmfs(&["decompress", "-", "-o", "/dev/null"], Some(cut));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}
