//! The daemon under a service manager's protocol (`Type=notify`): a test plays systemd
//! with a datagram socket of its own as `NOTIFY_SOCKET`.

use crate::harness::{is_mounted, llmfs_bin, Mount};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One datagram from the daemon, with what was true of the mount when it arrived.
struct Message {
    text: String,
    /// The mount point was mounted and a file could be written and read through it.
    usable: bool,
}

/// Listens on a fresh socket; every datagram is checked against the mount at once.
fn listen(dir: PathBuf, mnt: PathBuf) -> (PathBuf, mpsc::Receiver<Message>) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut probes = 0;
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let usable = text.contains("READY=1") && {
                probes += 1;
                let f = mnt.join(format!("ready-probe-{probes}"));
                is_mounted(&mnt)
                    && std::fs::write(&f, b"ready").is_ok()
                    && std::fs::read(&f).is_ok_and(|d| d == b"ready")
            };
            if tx.send(Message { text, usable }).is_err() {
                return;
            }
        }
    });
    (path, rx)
}

#[test]
fn ready_once_the_mount_answers_then_status_watchdog_and_stopping() {
    let mut m = Mount::unmounted(&["test_model", "cold_after=0"]);
    let (sock, rx) = listen(m.scratch("notify"), m.mnt.clone());
    m.env = vec![
        ("NOTIFY_SOCKET".into(), sock.display().to_string()),
        ("WATCHDOG_USEC".into(), "2000000".into()),
    ];
    m.start();
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("READY=1");
    assert!(first.text.contains("READY=1"), "{}", first.text);
    assert!(
        first.usable,
        "READY=1 came before the mount could be used: {}",
        first.text
    );
    assert!(first.text.contains("STATUS=mounted; "), "{}", first.text);
    // Something for the compactor, then the status must say what it did.
    let text = crate::harness::corpus("SmolLM2-135M-Instruct.Q4_1.jsonl");
    std::fs::write(m.path("log.jsonl"), &text[..16384]).unwrap();
    m.wait_idle();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut pings, mut coded) = (0, false);
    while Instant::now() < deadline && !(pings >= 2 && coded) {
        if let Ok(msg) = rx.recv_timeout(Duration::from_secs(5)) {
            assert!(!msg.text.contains("READY=1"), "READY twice: {}", msg.text);
            pings += usize::from(msg.text.contains("WATCHDOG=1"));
            coded |= msg.text.contains("chunks LLM-coded since mount");
        }
    }
    assert!(pings >= 2, "the watchdog (2 s) was fed {pings} times");
    assert!(coded, "no STATUS= with the compactor's progress");
    // A clean stop says so and exits 0.
    let status = m.signal(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", m.log());
    let mut rest = Vec::new();
    while let Ok(msg) = rx.recv_timeout(Duration::from_secs(2)) {
        rest.push(msg.text);
    }
    assert!(
        rest.iter().any(|t| t.contains("STOPPING=1")),
        "no STOPPING=1 among {rest:?}"
    );
}

#[test]
fn a_mount_that_fails_never_says_ready() {
    let m = Mount::unmounted(&[]);
    let (sock, rx) = listen(m.scratch("notify"), m.mnt.clone());
    let out = Command::new(llmfs_bin())
        .arg("mount")
        .arg(&m.store)
        .arg(&m.mnt)
        .args(["-o", "model=/nonexistent/model.gguf"])
        .env("NOTIFY_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.gguf"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut said = Vec::new();
    while let Ok(msg) = rx.recv_timeout(Duration::from_secs(1)) {
        said.push(msg.text);
    }
    assert!(
        !said.iter().any(|t| t.contains("READY=1")),
        "READY=1 from a mount that failed: {said:?}"
    );
}
