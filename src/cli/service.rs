//! The daemon's side of systemd's service protocol (`Type=notify`, sd_notify(3), through
//! the `sd-notify` crate): `READY=1` once the mount answers requests (the model's profile
//! and canary were checked before the mount was made), `STATUS=` with the compactor's
//! progress, `WATCHDOG=1` while the FUSE request loop answers and the model pool has
//! lanes, `STOPPING=1` on the way out. Without `NOTIFY_SOCKET` nothing is sent and no
//! thread runs.

use llmfs::fs::background::{Loop, Round};
use llmfs::fs::Core;
use sd_notify::NotifyState;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How often `STATUS=` is refreshed (the watchdog, when shorter, sets the pace).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The thread that talks to the service manager; dropping this tells it to stop (it is
/// not waited for: it may be inside a request to a mount that is going away).
pub struct Notifier {
    stop: mpsc::Sender<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Tells the service manager the daemon is stopping (no-op without one).
pub fn stopping() {
    if enabled() {
        let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("unmounting")]);
    }
}

/// Starts the notifier for the mount at `mountpoint` (whose session is about to serve
/// requests): it waits until a request through the mount is answered, says `READY=1`,
/// and then refreshes the status and feeds the watchdog. `None` without a service
/// manager.
pub fn start(core: Arc<Core>, mountpoint: PathBuf) -> std::io::Result<Option<Notifier>> {
    if !enabled() {
        return Ok(None);
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let (stop, stopped) = mpsc::channel();
    let mut ready = false;
    // The first probe at once, then every 100 ms until the mount answers.
    Loop::new("llmfs-notify", every)
        .first_in(Duration::ZERO)
        .spawn(stopped, move |round| {
            if ready {
                feed(&core, &mountpoint, watchdog, round);
            } else if let Some(first) = ready_yet(&mountpoint) {
                ready = true;
                let status = format!("mounted; {}", status_line(&first));
                if let Err(e) =
                    sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)])
                {
                    log::warn!("telling the service manager that the mount is ready failed: {e}");
                }
            } else {
                round.again_in(Duration::from_millis(100));
            }
        })?;
    Ok(Some(Notifier { stop }))
}

/// Asks the mount itself for the compactor's progress: an answer means the request
/// loop is serving (this thread's request went through the kernel to it).
fn probe(mountpoint: &std::path::Path) -> Result<Map<String, Value>, String> {
    match xattr::get(mountpoint, "user.llmfs.progress") {
        Ok(Some(raw)) => match serde_json::from_slice(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err("the mount's progress attribute is not a JSON object".into()),
        },
        Ok(None) => Err(format!(
            "{} is no longer this llmfs mount",
            mountpoint.display()
        )),
        Err(e) => Err(format!("the mount does not answer: {e}")),
    }
}

/// The `STATUS=` line: what waits for the model and what the compactor achieved.
pub fn status_line(m: &Map<String, Value>) -> String {
    let num = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    let pending = num("pending_chunks");
    let mut s = format!("{pending} chunks pending");
    if pending > 0 && num("chunk_size") > 0 {
        // The exact bytes need a walk of the store; a chunk holds at most chunk_size.
        s.push_str(&format!(
            " (at most {} KiB)",
            pending * num("chunk_size") / 1024
        ));
    }
    if num("compact") == 0 {
        s.push_str(" (no compaction on this mount)");
    }
    let coded = num("compacted_chunks_llm");
    if coded > 0 {
        let before = num("compacted_llm_plain_bytes");
        let after = num("compacted_llm_bytes");
        s.push_str(&format!(
            "; {coded} chunks LLM-coded since mount, {before} -> {after} bytes ({:.1}x), {} bytes/s",
            before as f64 / after.max(1) as f64,
            m.get("compaction_bytes_per_s")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                .round()
        ));
    }
    s
}

/// READY=1 only once the mount answers: the first request blocks until the session
/// serves, and fails only if the mount went away.
fn ready_yet(mountpoint: &std::path::Path) -> Option<Map<String, Value>> {
    probe(mountpoint)
        .map_err(|e| log::debug!("not ready yet: {e}"))
        .ok()
}

/// A round once ready: the status, and the watchdog fed while the mount and the model
/// are healthy.
fn feed(
    core: &Core,
    mountpoint: &std::path::Path,
    watchdog: Option<Duration>,
    round: &mut Round<'_>,
) {
    let health = probe(mountpoint).and_then(|m| {
        core.model().map_or(Ok(()), |p| p.health())?;
        Ok(m)
    });
    let logged = health
        .as_ref()
        .map_err(|why| format!("{why}; not feeding the watchdog"));
    round.check("health check", &logged);
    match health {
        Ok(m) => {
            let status = format!("mounted; {}", status_line(&m));
            let mut states = vec![NotifyState::Status(&status)];
            if watchdog.is_some() {
                states.push(NotifyState::Watchdog);
            }
            let _ = sd_notify::notify(&states);
        }
        Err(why) => {
            // No WATCHDOG=1: the service manager restarts the daemon when this lasts.
            let status = format!("unhealthy: {why}");
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_says_what_is_pending_and_the_ratio() {
        let m: Map<String, Value> = serde_json::from_str(
            r#"{"pending_chunks":12,"chunk_size":4096,"compact":1,"compacted_chunks_llm":3,
                "compacted_llm_plain_bytes":12000,"compacted_llm_bytes":1000,
                "compaction_bytes_per_s":151.7}"#,
        )
        .unwrap();
        assert_eq!(
            status_line(&m),
            "12 chunks pending (at most 48 KiB); 3 chunks LLM-coded since mount, 12000 -> 1000 bytes (12.0x), \
             152 bytes/s"
        );
        let idle: Map<String, Value> =
            serde_json::from_str(r#"{"pending_chunks":0,"compact":0}"#).unwrap();
        assert_eq!(
            status_line(&idle),
            "0 chunks pending (no compaction on this mount)"
        );
    }
}
