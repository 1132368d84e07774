//! A real mount of the `llmfs` daemon for one test: a temporary store and mountpoint,
//! the daemon in a child process, and a teardown that always unmounts and reaps it.
//!
//! The daemon's stderr goes to a file rather than a pipe, so a chatty daemon can never
//! block on a full pipe and every failure message can quote the whole log.
//!
//! A watchdog thread per mount bounds the whole test: a daemon that deadlocks leaves the
//! test's own threads blocked in system calls on the mount, where no teardown can reach
//! them. After [`TEST_TIMEOUT`] the watchdog aborts the FUSE connection (fusectl) and
//! kills the daemon, so those calls fail with ENOTCONN and the test fails instead of
//! hanging the runner.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a mount may take to appear in /proc/self/mountinfo.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after an unmount or a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `fusermount3` call may take before the teardown escalates.
const FUSERMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one test may keep a mount before the watchdog aborts it (default; the
/// environment variable LLMFS_MOUNT_TEST_TIMEOUT, in seconds, overrides it).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

fn test_timeout() -> Duration {
    std::env::var("LLMFS_MOUNT_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(TEST_TIMEOUT, Duration::from_secs)
}
const FUSECTL: &str = "/sys/fs/fuse/connections";

pub fn llmfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_llmfs")
}

/// Fails the test early, with a clear message, when FUSE cannot work on this machine:
/// a missing /dev/fuse or fusermount3 must never turn into a silently skipped suite.
/// Runs `llmfs ARGS`, checks that it succeeded (with its output in the message), and
/// returns its standard output.
pub fn llmfs_ok<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Vec<u8> {
    let out = Command::new(llmfs_bin())
        .args(args)
        .output()
        .expect("run llmfs");
    assert!(
        out.status.success(),
        "llmfs failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE (load the fuse module or run with --device /dev/fuse)"
    );
    // The watchdog aborts hung connections through fusectl; mount it when it is not.
    if fs::read_dir(FUSECTL).is_ok_and(|mut d| d.next().is_none()) {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none", FUSECTL])
            .stderr(Stdio::null())
            .status();
    }
    let found = Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "fusermount3 is missing: install the Debian package fuse3"
    );
}

pub struct Mount {
    /// Holds store, mountpoint and log; removed last, after the unmount.
    dir: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    log: PathBuf,
    options: Vec<String>,
    child: Option<Child>,
    /// Number of daemon starts, so each start's log is kept apart.
    starts: u32,
    /// What the watchdog must abort: the running daemon's pid and FUSE connection.
    live: Arc<Mutex<Option<Live>>>,
    watchdog: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    /// Set before the first start to change the watchdog's timeout for this mount.
    pub watchdog_timeout: Duration,
    /// Environment variables the daemon gets on top of the test's.
    pub env: Vec<(String, String)>,
}

struct Live {
    pid: u32,
    /// /sys/fs/fuse/connections/N/abort of this mount.
    abort: PathBuf,
}

/// Waits for the mount's owner to go away; past the deadline, aborts the connection.
fn spawn_watchdog(
    live: Arc<Mutex<Option<Live>>>,
    mnt: PathBuf,
    timeout: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        if rx.recv_timeout(timeout) != Err(mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        if let Some(l) = live.lock().unwrap().take() {
            eprintln!(
                "watchdog: test held {} for more than {timeout:?}; aborting the FUSE connection \
                 and killing the daemon (pid {})",
                mnt.display(),
                l.pid
            );
            // Kill first, then abort: a daemon that is only slow, not stopped, and sees
            // the abort first unmounts, and the test's next operation would go to the
            // bare directory underneath and succeed. Killed, it leaves the mount in
            // place, answering ENOTCONN. The abort frees requests a daemon stuck in
            // the kernel would hold.
            // SAFETY: kill(2) on the pid of our own child daemon, which has not been
            // reaped: `live` is cleared before every wait that reaps it.
            unsafe { libc::kill(l.pid as i32, libc::SIGKILL) };
            let _ = fs::write(&l.abort, "1");
        }
    });
    (tx, handle)
}

impl Mount {
    /// A fresh store mounted with no options.
    pub fn new() -> Mount {
        Mount::with_options(&[])
    }

    /// A fresh store mounted with `-o OPTIONS` (one entry per option).
    pub fn with_options(options: &[&str]) -> Mount {
        let mut m = Mount::unmounted(options);
        m.start();
        m
    }

    /// A fresh store and mountpoint, not mounted yet.
    pub fn unmounted(options: &[&str]) -> Mount {
        require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("llmfs-mt-")
            .tempdir()
            .expect("create temp dir");
        // pjdfstest-like checks and `allow_other` users must be able to reach the mountpoint.
        set_mode(dir.path(), 0o755);
        let store = dir.path().join("store");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("create mountpoint");
        set_mode(&mnt, 0o755);
        Mount {
            log: dir.path().join("daemon.log"),
            dir,
            store,
            mnt,
            options: options.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
            live: Arc::new(Mutex::new(None)),
            watchdog: None,
            watchdog_timeout: test_timeout(),
            env: Vec::new(),
        }
    }

    /// Changes the options of the next start (a remount with other options).
    pub fn set_options(&mut self, options: &[&str]) {
        self.options = options.iter().map(|s| s.to_string()).collect();
    }

    /// The daemon's live statistics (`llmfs stats MNT --json`).
    pub fn stats(&self) -> serde_json::Map<String, serde_json::Value> {
        self.stats_with(&[])
    }

    /// Waits until nothing is pending compaction and the model is idle, then returns
    /// the statistics (`llmfs stats MNT --wait-idle --json`).
    pub fn wait_idle(&self) -> serde_json::Map<String, serde_json::Value> {
        self.stats_with(&["--wait-idle"])
    }

    fn stats_with(&self, extra: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        let out = Command::new(llmfs_bin())
            .arg("stats")
            .arg(&self.mnt)
            .arg("--json")
            .args(extra)
            .output()
            .expect("run llmfs stats");
        assert!(
            out.status.success(),
            "llmfs stats failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        match serde_json::from_slice(&out.stdout).expect("stats JSON") {
            serde_json::Value::Object(m) => m,
            other => panic!("stats is not an object: {other}"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A scratch directory outside the mount (same temp dir), for reference copies.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("create scratch dir");
        p
    }

    /// The arguments of `llmfs mount` for this store.
    pub fn mount_args(&self) -> Vec<String> {
        let mut args = vec![
            "mount".to_string(),
            self.store.display().to_string(),
            self.mnt.display().to_string(),
        ];
        if !self.options.is_empty() {
            args.push("-o".into());
            args.push(self.options.join(","));
        }
        args
    }

    /// Starts the daemon and waits until the mount is live.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        use std::io::Write;
        writeln!(&log, "==== start {} ====", self.starts).unwrap();
        let child = Command::new(llmfs_bin())
            .args(self.mount_args())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn llmfs daemon");
        self.child = Some(child);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_mounted(&self.mnt) {
                self.arm_watchdog();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "llmfs daemon exited with {status} before the mount appeared\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "mount did not appear at {} within {MOUNT_TIMEOUT:?}\n--- daemon log ---\n{}",
                    self.mnt.display(),
                    self.log()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Starts the watchdog's clock again from now (for a test that times the watchdog
    /// itself from a moment of its own, not from the mount's start).
    pub fn rearm_watchdog(&mut self) {
        if let Some((stop, handle)) = self.watchdog.take() {
            drop(stop);
            let _ = handle.join();
        }
        // Not `arm_watchdog`: its stat of the mountpoint would wait on a stopped daemon.
        self.watchdog = Some(spawn_watchdog(
            self.live.clone(),
            self.mnt.clone(),
            self.watchdog_timeout,
        ));
    }

    fn arm_watchdog(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(&self.mnt).expect("stat the new mount").dev();
        let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
        *self.live.lock().unwrap() = Some(Live {
            pid: self.pid(),
            abort: Path::new(FUSECTL).join(minor.to_string()).join("abort"),
        });
        if self.watchdog.is_none() {
            self.watchdog = Some(spawn_watchdog(
                self.live.clone(),
                self.mnt.clone(),
                self.watchdog_timeout,
            ));
        }
    }

    /// Unmounts with `fusermount3 -u` and waits for the daemon to exit; the daemon must
    /// exit successfully (a clean unmount is part of what is tested).
    pub fn stop(&mut self) {
        let mut ok = fusermount(&["-u"], &self.mnt);
        // A file closed just before may keep the mount busy (EBUSY) until the kernel has
        // finished its release, which goes to the daemon in the background: seen once in
        // CI, on loaded cores, right after reading every file of a directory. Try again
        // for a few seconds before calling the unmount a failure.
        let t0 = Instant::now();
        while !ok && is_mounted(&self.mnt) && t0.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(100));
            ok = fusermount(&["-u"], &self.mnt);
        }
        assert!(
            ok,
            "fusermount3 -u {} failed\n{}",
            self.mnt.display(),
            self.log()
        );
        let status = self.wait_exit();
        assert!(
            status.success(),
            "daemon exited with {status} after unmount\n--- daemon log ---\n{}",
            self.log()
        );
    }

    /// Sends a signal to the daemon and waits for it to exit and the mount to go.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        let pid = self.pid();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
        self.wait_exit()
    }

    /// SIGKILL: the daemon gets no chance to flush; the dead mount is detached.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if is_mounted(&self.mnt) {
            // After SIGKILL the connection is aborted; a lazy unmount always succeeds.
            fusermount(&["-uz"], &self.mnt);
        }
        assert!(
            !is_mounted(&self.mnt),
            "mount still present after kill -9 and fusermount3 -uz"
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is not running").id()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        *self.live.lock().unwrap() = None;
        let child = self.child.as_mut().expect("daemon is not running");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "daemon did not exit within {EXIT_TIMEOUT:?}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon wrote to stdout/stderr, across all starts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mnt)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        *self.live.lock().unwrap() = None;
        if let Some((stop, handle)) = self.watchdog.take() {
            drop(stop);
            let _ = handle.join();
        }
        // Escalate: clean unmount, lazy unmount, SIGKILL. Each step is bounded in time so
        // that a hung daemon can fail a test but never hang the runner.
        if is_mounted(&self.mnt) && !fusermount(&["-u"], &self.mnt) {
            fusermount(&["-uz"], &self.mnt);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mnt) {
            fusermount(&["-uz"], &self.mnt);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- llmfs daemon log ({}) ---\n{}",
                self.mnt.display(),
                self.log()
            );
        }
    }
}

/// Runs `fusermount3 ARGS MNT` with a time limit; true when it exited successfully.
pub fn fusermount(args: &[&str], mnt: &Path) -> bool {
    let Ok(mut child) = Command::new("fusermount3")
        .args(args)
        .arg(mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + FUSERMOUNT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// True when `mnt` is a mount point in this mount namespace.
pub fn is_mounted(mnt: &Path) -> bool {
    let want = mountinfo_escape(mnt);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p == want)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn mountinfo_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.display().to_string().chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs a shell command; panics with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
// The same bytes on every machine: the generator's words, little endian.
#[allow(clippy::disallowed_methods)]
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A number from the statistics.
pub fn stat(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> u64 {
    m.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no integer {key} in the statistics: {m:?}"))
}

/// A file of the vendored LLM corpus (tests/corpus).
pub fn corpus(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Compressible text that looks like LLM output records.
pub fn text_record(i: usize) -> String {
    format!(
        "{{\"id\":{i},\"role\":\"assistant\",\"content\":\"Here is a summary of item {i}: the \
         filesystem stores chunks in a key-value store and compresses them with a model.\"}}\n"
    )
}
