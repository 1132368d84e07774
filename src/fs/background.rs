//! The daemon's named background loops (the flusher, the watchdog, the compactor, the
//! service-manager notifier): one [`Loop`] spawns the thread, waits between rounds on
//! the loop's stop signal, and runs a round; errors a round meets go through
//! [`Streaks`], which logs each streak of failures once (and its end), not every
//! failure of a loop that retries every few seconds.
//!
//! Threads that block on something other than a timer (a FUSE session, a worker taking
//! jobs from a channel, a model lane) are not loops of this kind; a worker may still log
//! its errors through a [`Streaks`] of its own.

use parking_lot::{Condvar, Mutex};
use std::fmt::Display;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Errors logged once per streak: the first failure of a step (at error level, with the
/// thread's name), again only if the error changes while the step keeps failing, and an
/// info line when it succeeds again, with the number of failures in between.
pub struct Streaks {
    name: String,
    /// Per step: failures in a row and the error last logged.
    steps: Vec<(&'static str, u64, String)>,
}

impl Streaks {
    /// Streaks of the thread (or loop) `name`, which prefixes every line.
    pub fn new(name: impl Into<String>) -> Streaks {
        Streaks {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Notes the outcome of `what` (a step: "background flush"), logging as above.
    pub fn check<T, E: Display>(&mut self, what: &'static str, result: &Result<T, E>) {
        let i = match self.steps.iter().position(|s| s.0 == what) {
            Some(i) => i,
            None => {
                self.steps.push((what, 0, String::new()));
                self.steps.len() - 1
            }
        };
        let (_, failures, last) = &mut self.steps[i];
        match result {
            Ok(_) => {
                if *failures > 0 {
                    let s = if *failures == 1 { "" } else { "s" };
                    log::info!(
                        "{}: {what} works again after {failures} failure{s}",
                        self.name
                    );
                    *failures = 0;
                    last.clear();
                }
            }
            Err(e) => {
                *failures += 1;
                let e = e.to_string();
                if *failures == 1 {
                    log::error!("{}: {what} failed: {e}", self.name);
                } else if e != *last {
                    log::error!(
                        "{}: {what} failed ({failures} times in a row now): {e}",
                        self.name
                    );
                }
                *last = e;
            }
        }
    }

    /// Failures in a row of `what` so far (0: it last succeeded, or never ran).
    pub fn failures(&self, what: &str) -> u64 {
        self.steps.iter().find(|s| s.0 == what).map_or(0, |s| s.1)
    }
}

/// What a loop waits on between rounds: `wait(d)` returns after at most `d` (earlier
/// when woken) and says whether the loop must stop. Closures are signals (one over a
/// stop flag calls [`wait_flag`]), and so is the receiving end of a stop channel.
pub trait Signal {
    /// Waits at most `d` (less when woken); true when the loop must stop.
    fn wait(&mut self, d: Duration) -> bool;
}

impl<F: FnMut(Duration) -> bool> Signal for F {
    fn wait(&mut self, d: Duration) -> bool {
        self(d)
    }
}

/// The receiving end of a stop channel: a message, or the sender gone, stops the loop.
impl Signal for mpsc::Receiver<()> {
    fn wait(&mut self, d: Duration) -> bool {
        !matches!(self.recv_timeout(d), Err(mpsc::RecvTimeoutError::Timeout))
    }
}

/// Waits on a stop flag and its condition variable (notified to stop, or only to wake
/// the loop early): true once the flag is set.
pub fn wait_flag(flag: &(Mutex<bool>, Condvar), d: Duration) -> bool {
    let mut stop = flag.0.lock();
    if !*stop {
        flag.1.wait_for(&mut stop, d);
    }
    *stop
}

/// One round of a loop: notes errors and may change when the next round runs.
pub struct Round<'a> {
    streaks: &'a mut Streaks,
    next: Option<Duration>,
}

impl Round<'_> {
    /// Notes the outcome of the step `what` ([`Streaks::check`]).
    pub fn check<T, E: Display>(&mut self, what: &'static str, result: &Result<T, E>) {
        self.streaks.check(what, result);
    }

    /// Runs the next round after `d` (at most) instead of the loop's interval.
    pub fn again_in(&mut self, d: Duration) {
        self.next = Some(d);
    }
}

/// A named thread that runs rounds of a body every `every` until its [`Signal`] says
/// stop: it waits first (for `first_in`, by default `every`), then runs a round, and so
/// on.
pub struct Loop {
    name: String,
    every: Duration,
    first: Duration,
    finally: Option<Box<dyn FnOnce() + Send>>,
}

impl Loop {
    /// A loop for thread `name` that runs its round every `every` (unless a round asks
    /// for another wait); nothing runs until it is started.
    pub fn new(name: impl Into<String>, every: Duration) -> Loop {
        Loop {
            name: name.into(),
            every,
            first: every,
            finally: None,
        }
    }

    /// Runs the first round after `d` rather than after the interval.
    pub fn first_in(mut self, d: Duration) -> Loop {
        self.first = d;
        self
    }

    /// Runs `f` on the thread once the loop stopped and its body was dropped.
    pub fn finally(mut self, f: impl FnOnce() + Send + 'static) -> Loop {
        self.finally = Some(Box::new(f));
        self
    }

    /// Spawns the thread.
    pub fn spawn<S, B>(self, stop: S, body: B) -> std::io::Result<JoinHandle<()>>
    where
        S: Signal + Send + 'static,
        B: FnMut(&mut Round<'_>) + Send + 'static,
    {
        std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || self.run(stop, body))
    }

    fn run(self, mut stop: impl Signal, mut body: impl FnMut(&mut Round<'_>)) {
        let mut streaks = Streaks::new(self.name);
        let mut next = self.first;
        while !stop.wait(next) {
            let mut round = Round {
                streaks: &mut streaks,
                next: None,
            };
            body(&mut round);
            next = round.next.unwrap_or(self.every);
        }
        drop((stop, body));
        if let Some(f) = self.finally {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Once};
    use std::time::Instant;

    /// Lines logged by threads whose messages start with "bg-test".
    static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record<'_>) {
            let msg = r.args().to_string();
            if msg.starts_with("bg-test") {
                LINES.lock().push((r.level(), msg));
            }
        }
        fn flush(&self) {}
    }

    fn lines_of(name: &str) -> Vec<(log::Level, String)> {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            log::set_logger(&Capture).expect("no other logger in the library's tests");
            log::set_max_level(log::LevelFilter::Info);
        });
        let prefix = format!("{name}:");
        LINES
            .lock()
            .iter()
            .filter(|l| l.1.starts_with(&prefix))
            .cloned()
            .collect()
    }

    #[test]
    fn a_streak_of_failures_is_logged_once_and_its_end_once() {
        lines_of("bg-test-init");
        let script: Vec<Result<(), &str>> = vec![
            Err("disk full"),
            Err("disk full"),
            Err("disk full"),
            Ok(()),
            Ok(()),
            Err("disk full"),
            Err("I/O error"),
            Err("I/O error"),
            Ok(()),
        ];
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (s, mut steps) = (Arc::clone(&stop), script.into_iter());
        let t = Loop::new("bg-test-streak", Duration::from_millis(1))
            .spawn(
                move |d| wait_flag(&s, d),
                move |round| match steps.next() {
                    Some(r) => {
                        round.check("flush", &r);
                        // Another step's streaks are its own.
                        round.check::<(), &str>("sync", &Ok(()));
                    }
                    None => {
                        *stop.0.lock() = true;
                    }
                },
            )
            .unwrap();
        t.join().unwrap();
        use log::Level::{Error, Info};
        let want = vec![
            (Error, "bg-test-streak: flush failed: disk full".to_string()),
            (
                Info,
                "bg-test-streak: flush works again after 3 failures".into(),
            ),
            (Error, "bg-test-streak: flush failed: disk full".into()),
            (
                Error,
                "bg-test-streak: flush failed (2 times in a row now): I/O error".into(),
            ),
            (
                Info,
                "bg-test-streak: flush works again after 3 failures".into(),
            ),
        ];
        assert_eq!(lines_of("bg-test-streak"), want);
    }

    #[test]
    fn streaks_count_failures_per_step() {
        let mut s = Streaks::new("bg-test-count");
        s.check::<(), _>("a", &Err("x"));
        s.check::<(), _>("a", &Err("x"));
        s.check::<(), &str>("b", &Ok(()));
        assert_eq!((s.failures("a"), s.failures("b")), (2, 0));
        s.check::<(), &str>("a", &Ok(()));
        assert_eq!(s.failures("a"), 0);
    }

    #[test]
    fn a_loop_stops_when_signalled_without_waiting_out_its_interval() {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = Arc::clone(&stop);
        let (done_tx, done_rx) = mpsc::channel();
        let rounds = Arc::new(Mutex::new(0));
        let r = Arc::clone(&rounds);
        let t = Loop::new("bg-test-stop", Duration::from_secs(3600))
            .first_in(Duration::ZERO)
            .finally(move || done_tx.send(()).unwrap())
            .spawn(
                move |d| wait_flag(&s, d),
                move |_| {
                    assert_eq!(std::thread::current().name(), Some("bg-test-stop"));
                    *r.lock() += 1;
                },
            )
            .unwrap();
        // The first round runs at once; then the loop waits its hour.
        let t0 = Instant::now();
        while *rounds.lock() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        // Woken only (as the flusher is by a deletion): one more round, no stop.
        stop.1.notify_all();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        assert!(*rounds.lock() <= 2);
        {
            *stop.0.lock() = true;
            stop.1.notify_all();
        }
        let t0 = Instant::now();
        t.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(done_rx.try_recv().is_ok(), "finally ran");
    }

    #[test]
    fn a_stop_channel_stops_a_loop() {
        let (tx, rx) = mpsc::channel();
        let t = Loop::new("bg-test-channel", Duration::from_secs(3600))
            .spawn(rx, |_| {})
            .unwrap();
        tx.send(()).unwrap();
        t.join().unwrap();
        // The sender gone stops it too.
        let (tx, rx) = mpsc::channel::<()>();
        let t = Loop::new("bg-test-channel", Duration::from_secs(3600))
            .spawn(rx, |_| {})
            .unwrap();
        drop(tx);
        t.join().unwrap();
    }

    #[test]
    fn rounds_run_at_the_interval_or_when_the_round_asks() {
        let every = Duration::from_millis(40);
        let t0 = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let (waits, tm) = (Arc::new(Mutex::new(Vec::new())), Arc::clone(&times));
        let (w, rounds) = (Arc::clone(&waits), Arc::clone(&times));
        let t = Loop::new("bg-test-interval", every)
            .spawn(
                move |d| {
                    w.lock().push(d);
                    std::thread::sleep(d);
                    tm.lock().len() >= 4
                },
                move |round| {
                    let mut times = rounds.lock();
                    times.push(t0.elapsed());
                    if times.len() == 2 {
                        round.again_in(Duration::ZERO);
                    }
                },
            )
            .unwrap();
        t.join().unwrap();
        // Each wait is the interval, except the one the second round asked for.
        let z = Duration::ZERO;
        assert_eq!(*waits.lock(), vec![every, every, z, every, every]);
        let times = times.lock();
        assert_eq!(times.len(), 4);
        assert!(times[0] >= every);
        assert!(times[1] - times[0] >= every);
        assert!(times[3] - times[2] >= every);
    }
}
