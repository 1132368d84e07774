//! The daemon as a command: option parsing, signals, the mount.fuse3 argument form.

use crate::harness::{is_mounted, llmfs_bin, text_record, Mount};
use std::fs::{self, File};
use std::io::Write;
use std::process::Command;

#[test]
fn unknown_mount_option_is_a_usage_error() {
    let m = Mount::unmounted(&[]);
    let out = Command::new(llmfs_bin())
        .args(["mount"])
        .arg(&m.store)
        .arg(&m.mnt)
        .args(["-o", "noatime,bogus_opt_xyz=3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status for an unknown option; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("bogus_opt_xyz"),
        "message must name the option:\n{stderr}"
    );
    assert!(!is_mounted(&m.mnt), "nothing may be mounted");
}

#[test]
fn sigterm_and_sigint_unmount_cleanly_with_data_on_disk() {
    let mut m = Mount::new();
    for (i, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        let p = m.path(&format!("acked-{i}"));
        // Written and closed, never fsync'd: an acknowledged write must survive a clean stop.
        let mut f = File::create(&p).unwrap();
        f.write_all(b"acknowledged").unwrap();
        drop(f);
        let status = m.signal(sig);
        assert!(
            status.success(),
            "daemon exit status after signal {sig}: {status}\n{}",
            m.log()
        );
        assert!(!m.is_mounted(), "still mounted after signal {sig}");
        m.start();
        assert_eq!(fs::read(&p).unwrap(), b"acknowledged", "after signal {sig}");
    }
}

/// mount(8) -t fuse.llmfs runs mount.fuse3, which runs `llmfs STORE MNT -o OPTS` with the
/// generic options it adds itself (rw, nosuid, nodev, noatime...).
#[test]
fn mount_fuse3_argument_form_with_generic_options() {
    let mut m = Mount::unmounted(&[]);
    let child = Command::new(llmfs_bin())
        .arg(&m.store)
        .arg(&m.mnt)
        .args(["-o", "rw,nosuid,nodev,noexec,noatime"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut child = child;
    while !is_mounted(&m.mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("`llmfs STORE MNT -o rw,nosuid,nodev,noexec,noatime` exited {st}:\n{err}");
        }
        assert!(std::time::Instant::now() < deadline, "no mount after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs::write(m.path("x"), b"y").unwrap();
    assert!(crate::harness::fusermount(&["-u"], &m.mnt));
    let st = child.wait().unwrap();
    assert!(st.success(), "exit status after fusermount3 -u: {st}");
    // The same store through the harness: the file is there.
    m.start();
    assert_eq!(fs::read(m.path("x")).unwrap(), b"y");
}

#[test]
fn read_only_mount_refuses_writes() {
    let mut m = Mount::new();
    fs::write(m.path("f"), b"data").unwrap();
    m.stop();
    let mut ro = Mount::unmounted(&["ro"]);
    // Reuse the first store in the read-only mount.
    ro.store = m.store.clone();
    ro.start();
    assert_eq!(fs::read(ro.path("f")).unwrap(), b"data");
    let err = fs::write(ro.path("g"), b"x").expect_err("create on a ro mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::OpenOptions::new()
        .write(true)
        .open(ro.path("f"))
        .expect_err("open for write on ro");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

/// scripts/mount.fuse.llmfs, what `mount -t fuse.llmfs` and fstab run: it must return
/// once the mount is live, leave the daemon running, and report a daemon error.
#[test]
fn mount_helper_backgrounds_the_daemon_and_reports_errors() {
    let m = Mount::unmounted(&[]);
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mount.fuse.llmfs");
    let logdir = m.scratch("helper-logs");
    let run = |opts: &str| {
        Command::new("sh")
            .arg(helper)
            .arg(&m.store)
            .arg(&m.mnt)
            .args(["-o", opts])
            .env("LLMFS_BIN", llmfs_bin())
            .env("LLMFS_LOG_DIR", &logdir)
            .output()
            .unwrap()
    };
    let out = run("rw,nofail,_netdev,x-systemd.automount,noatime,defaults");
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&m.mnt), "helper returned but nothing is mounted");
    fs::write(m.path("via-helper"), b"ok").unwrap();
    assert!(crate::harness::fusermount(&["-u"], &m.mnt));
    let log_file = fs::read_dir(&logdir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fs::read_to_string(&log_file).unwrap().contains("unmounted") {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not log its unmount:\n{}",
            fs::read_to_string(&log_file).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let out = run("rw,no_such_option");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(32),
        "helper status for a bad option: {stderr}"
    );
    assert!(
        stderr.contains("no_such_option"),
        "helper must pass on the daemon's message: {stderr}"
    );
    assert!(!is_mounted(&m.mnt));
}

/// The harness's promise: a daemon that stops answering fails the test, it does not hang
/// the runner. A stopped daemon stands in for a deadlocked one.
#[test]
fn harness_watchdog_turns_a_hung_daemon_into_a_failure() {
    let mut m = Mount::unmounted(&["nomodel"]);
    m.start();
    fs::write(m.path("f"), b"x").unwrap();
    // SAFETY: kill(2) on our own child daemon, still running.
    let rc = unsafe { libc::kill(m.pid() as i32, libc::SIGSTOP) };
    assert_eq!(rc, 0, "SIGSTOP to the daemon");
    // kill(2) returns before the group stop is complete: one thread takes the signal
    // and tells the others, and until it runs, another thread can still answer a
    // request (a create succeeded on a "stopped" daemon on CI's loaded 2 cores,
    // 2026-12-05). Wait until /proc shows every thread stopped.
    wait_until_every_thread_is_stopped(m.pid());
    // The watchdog's short timeout counts from the stop, not from the mount's start:
    // counted from the start, a slow first write let it fire before the stop, and the
    // daemon, still running, saw the abort and unmounted (CI, 2026-12-05).
    m.watchdog_timeout = std::time::Duration::from_secs(3);
    m.rearm_watchdog();
    let started = std::time::Instant::now();
    assert!(
        m.is_mounted(),
        "the mount went before the daemon was stopped"
    );
    // A name never looked up before: the kernel cannot answer from its caches (a
    // read_dir of the root can be served from the cached listing), so the create must
    // reach the stopped daemon.
    let fresh = m.path("never-looked-up");
    let creator = std::thread::spawn(move || fs::write(&fresh, b"y"));
    let result = creator.join().unwrap();
    let err = result.expect_err("a create on a hung mount cannot succeed");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        ),
        "after the watchdog's abort: {err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "watchdog too slow"
    );
}

/// Polls /proc/PID/task/*/stat until every thread of PID is in state `T` (stopped).
fn wait_until_every_thread_is_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("list the daemon's threads");
        let running: Vec<String> = tasks
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("stat")).ok())
            // The state follows the command name's closing parenthesis.
            .filter(|stat| {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                !matches!(state.and_then(|r| r.chars().next()), Some('T') | Some('t'))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon threads not stopped 10 s after SIGSTOP: {running:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A store written by an unknown format version is refused with a message naming it,
/// before anything is mounted.
#[test]
fn store_of_unknown_format_version_is_refused() {
    use llmfs::store::{OpenOptions, Store, Txn};
    let mut m = Mount::new();
    fs::write(m.path("f"), b"data").unwrap();
    m.stop();
    {
        let s = Store::open(&m.store, &OpenOptions::default()).unwrap();
        let mut sb = s.superblock().clone();
        sb.format_version = 99;
        let mut t = Txn::new();
        t.put_superblock(&sb);
        s.commit(t).unwrap();
        s.sync().unwrap();
    }
    let out = Command::new(llmfs_bin())
        .arg("mount")
        .arg(&m.store)
        .arg(&m.mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mounting a version-99 store must fail"
    );
    assert!(!is_mounted(&m.mnt));
    assert!(
        stderr.contains("99") && stderr.to_lowercase().contains("version"),
        "the message must name the store's version: {stderr}"
    );
}

/// `llmfs fsck ARGS STORE` on the mount's (stopped) store: exit status, stdout + stderr.
fn run_fsck(args: &[&str], m: &Mount) -> (Option<i32>, String) {
    let mut tries = 0;
    loop {
        let out = Command::new(llmfs_bin())
            .arg("fsck")
            .args(args)
            .arg(&m.store)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A store this test process opened and closed can look in use for a moment: a
        // child another test spawns at that instant inherits the lock file's descriptor
        // until its exec closes it. Only a stopped daemon's store is checked here, so
        // "in use" for long would still fail.
        if out.status.code() == Some(8) && text.contains("in use") && tries < 20 && !m.is_mounted()
        {
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        return (out.status.code(), text);
    }
}

/// `llmfs fsck` on a store the daemon wrote: refused while mounted, clean once unmounted
/// (with --verify too); damage planted offline through the store API is named, the
/// repairable part repaired, and the store still mounts.
#[test]
fn fsck_passes_what_the_daemon_wrote_and_names_planted_damage() {
    use llmfs::store::records::Time;
    use llmfs::store::{OpenOptions, Store, Txn, ROOT_INO};
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut m = Mount::new();
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(
        m.path("dir/notes.txt"),
        "the model answered.\n".repeat(2000),
    )
    .unwrap();
    fs::write(m.path("small"), b"x").unwrap();
    fs::hard_link(m.path("small"), m.path("dir/again")).unwrap();
    std::os::unix::fs::symlink("small", m.path("link")).unwrap();
    let (code, text) = run_fsck(&[], &m);
    assert_eq!(code, Some(8), "a mounted store is refused:\n{text}");
    assert!(text.contains("in use"), "{text}");
    m.stop();

    let (code, text) = run_fsck(&[], &m);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the store is clean"), "{text}");
    let (code, text) = run_fsck(&["--verify", "--json"], &m);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["clean"], true, "{text}");
    assert_eq!(v["counts"]["files"], 2, "{text}");
    assert!(
        v["counts"]["verified_frames"].as_u64().unwrap() >= 11,
        "{text}"
    );

    // A wrong link count (repairable) and a frame that does not parse (not).
    let notes = {
        let s = Store::open(&m.store, &OpenOptions::default()).unwrap();
        let (dir, _) = s.lookup(ROOT_INO, b"dir").unwrap().unwrap();
        let (notes, _) = s.lookup(dir, b"notes.txt").unwrap().unwrap();
        let mut i = s.inode(notes).unwrap().unwrap();
        i.nlink = 3;
        i.data_ver += 1;
        let mut t = Txn::new();
        let bad = [0xf1, 0, 0];
        let freed = s
            .put_chunk(&mut t, notes, 1, i.data_ver, &bad, Time::now())
            .unwrap();
        i.stored = i.stored + bad.len() as u64 - freed;
        t.put_inode(notes, &i);
        s.commit(t).unwrap();
        s.sync().unwrap();
        notes
    };
    let (code, text) = run_fsck(&[], &m);
    assert_eq!(code, Some(1), "{text}");
    let named = format!("inode {notes} (/dir/notes.txt)");
    assert!(
        text.contains(&format!(
            "{named} chunk 1: the frame's header does not parse"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{named}: the link count is 3")) && text.contains("[repairable]"),
        "{text}"
    );
    let (code, text) = run_fsck(&["--repair"], &m);
    assert_eq!(code, Some(1), "the damaged frame remains:\n{text}");
    assert!(text.contains("repaired 1 problems"), "{text}");
    let (code, text) = run_fsck(&[], &m);
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("link count"), "{text}");

    m.start();
    assert_eq!(fs::metadata(m.path("dir/notes.txt")).unwrap().nlink(), 1);
    let mut f = File::open(m.path("dir/notes.txt")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"the model answered.\n"));
    let err = f.read_exact(&mut first).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "the damaged chunk: {err}"
    );
}

/// A database page damaged beneath the store's records (a B-tree leaf whose header
/// claims more cells than fit) is found by fsck's database check and reported as
/// damage (exit 1), naming the file as damaged, not taken for a clean store.
#[test]
// Reads the page size from SQLite's file header, as its layout says.
#[allow(clippy::disallowed_methods)]
fn fsck_finds_a_damaged_database_page() {
    let mut m = Mount::new();
    for i in 0..200 {
        fs::write(m.path(&format!("f{i}")), text_record(i).repeat(3)).unwrap();
    }
    m.stop();
    let db = m.store.join("llmfs.db");
    let mut bytes = fs::read(&db).unwrap();
    let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n => n as usize,
    };
    // Page 1 starts with the 100-byte file header; a table leaf page's first byte is 13.
    let leaf = (1..bytes.len() / page)
        .find(|p| bytes[p * page] == 13)
        .expect("a table leaf page");
    bytes[leaf * page + 3..leaf * page + 5].copy_from_slice(&[0xff, 0xff]);
    fs::write(&db, &bytes).unwrap();
    let (code, text) = run_fsck(&[], &m);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the database file is damaged"), "{text}");
    assert!(text.contains("NOT clean"), "{text}");
}

/// The daemon runs with OpenMP threads that sleep at barriers: it restarts itself with
/// OMP_WAIT_POLICY=passive (same pid), the harness's environment not naming one.
#[test]
fn the_daemon_runs_with_passive_openmp_threads() {
    let environ = |m: &Mount| fs::read(format!("/proc/{}/environ", m.pid())).unwrap();
    let has = |env: &[u8], var: &[u8]| env.split(|b| *b == 0).any(|v| v == var);
    let m = Mount::new();
    assert!(has(&environ(&m), b"OMP_WAIT_POLICY=passive"));
    assert!(m.is_mounted());
}
