//! `llmfs stats`: what a store holds, in which codec, against what it costs on disk; live
//! from the daemon for a mount point (its root's `user.llmfs.stats`), or read from an
//! unmounted store. As a table, one JSON object (`--json`), or the Prometheus text
//! format (`--prometheus`, [`llmfs::fs::prometheus`]).

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use llmfs::codec::{primer, CodecProfile};
use llmfs::fs::prometheus::{self, Origin};
use llmfs::store::StoreError;
use serde_json::{Map, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct StatsArgs {
    /// A mount point (live figures from the daemon) or an unmounted store directory.
    pub path: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the figures in the Prometheus text exposition format (for node_exporter's
    /// textfile collector), labelled with the mount point, or with the store for an
    /// unmounted store (then only the store's figures). A directory that is neither a
    /// live mount nor a store gives `llmfs_mounted 0` alone.
    #[arg(long)]
    pub prometheus: bool,
    /// On a mount point: wait until no chunk is pending compaction and the model is
    /// idle (progress on a terminal), then print.
    #[arg(long)]
    pub wait_idle: bool,
}

const LIVE_ATTR: &str = "user.llmfs.stats";
const PROGRESS_ATTR: &str = "user.llmfs.progress";

/// The daemon's live figures, if `path` is the root of an llmfs mount.
fn live(path: &Path) -> anyhow::Result<Option<Map<String, Value>>> {
    read_attr(path, LIVE_ATTR)
}

fn read_attr(path: &Path, attr: &str) -> anyhow::Result<Option<Map<String, Value>>> {
    let Ok(Some(raw)) = xattr::get(path, attr) else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw).context("the daemon's statistics are not JSON")? {
        Value::Object(m) => Ok(Some(m)),
        _ => anyhow::bail!("the daemon's statistics are not a JSON object"),
    }
}

fn num(m: &Map<String, Value>, key: &str) -> u64 {
    m.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Adds what the codec profile (hex, as the store or daemon gives it) says in words:
/// `codec` (coder version, engine, build, backend, kernels, model, primer) and `primer`.
fn describe_codec(m: &mut Map<String, Value>) {
    let Some(hex) = m.get("codec_profile").and_then(Value::as_str) else {
        return;
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    match bytes.map(|b| CodecProfile::decode(&b)) {
        Some(Ok(p)) => {
            m.insert("primer".into(), primer::describe(p.primer.as_ref()).into());
            m.insert("codec".into(), p.to_string().into());
        }
        Some(Err(e)) => {
            m.insert("codec".into(), format!("unreadable profile: {e}").into());
        }
        None => {
            m.insert("codec".into(), "unreadable profile".into());
        }
    }
}

/// How the figures are printed.
#[derive(Clone, Copy)]
enum Format {
    Table,
    Json,
    Prometheus,
}

fn print(m: &Map<String, Value>, format: Format, origin: Origin<'_>) {
    match format {
        Format::Json => {
            println!("{}", Value::Object(m.clone()));
            return;
        }
        Format::Prometheus => {
            print!("{}", prometheus::render(m, origin));
            return;
        }
        Format::Table => {}
    }
    for (k, v) in m {
        println!("{k:<28} {v:>16}");
    }
}

/// The daemon's statistics, walked after `since`: it reuses a walk for a few seconds
/// (so that readers in a loop cost nothing), and after waiting for idle the figures must
/// include the last compaction.
fn fresh_stats(path: &Path, since: Instant) -> anyhow::Result<Map<String, Value>> {
    loop {
        let m = live(path)?.context("the mount went away")?;
        let age = Duration::from_millis(num(&m, "stats_age_ms"));
        if age <= since.elapsed() {
            return Ok(m);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the daemon until nothing is pending and the model is idle.
fn wait_idle(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
        b
    });
    let start = Instant::now();
    let mut first_pending = None;
    // Without a terminal (a script, a log): one line every half minute.
    let mut last_line = Instant::now();
    loop {
        let m = read_attr(path, PROGRESS_ATTR)?.context("the mount went away")?;
        let pending = num(&m, "pending_chunks");
        if num(&m, "compact") == 0 && pending > 0 {
            anyhow::bail!(
                "{pending} chunks are pending but compaction is off on this mount (compact=off, \
                 nomodel, or no model): nothing will drain them"
            );
        }
        if pending == 0 && num(&m, "model_idle") == 1 {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return fresh_stats(path, Instant::now());
        }
        let first = *first_pending.get_or_insert(pending);
        let done = first.saturating_sub(pending);
        let eta = if done > 0 {
            let per = start.elapsed().as_secs_f64() / done as f64;
            format!(", about {:.0} s left", per * pending as f64)
        } else {
            String::new()
        };
        let line = format!(
            "{pending} chunks pending compaction ({} bytes/s of text{eta})",
            m.get("compaction_bytes_per_s")
                .cloned()
                .unwrap_or(Value::from(0))
        );
        if let Some(b) = &bar {
            b.set_message(line);
            b.tick();
        } else if last_line.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "llmfs stats: {line}, {:.0} s so far",
                start.elapsed().as_secs_f64()
            );
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether `path`, which is no live mount, is a mount point with no daemon behind it: a
/// directory that holds no store (the daemon is not running), or a dead FUSE mount (the
/// daemon was killed: "Transport endpoint is not connected").
fn not_mounted(path: &Path, e: &StoreError) -> bool {
    let dead = std::fs::metadata(path).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    let dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
    dead || dir && matches!(e, StoreError::Missing(_) | StoreError::NotAStore { .. })
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let format = if args.prometheus {
        Format::Prometheus
    } else if args.json {
        Format::Json
    } else {
        Format::Table
    };
    // The label of every sample: the absolute path, whatever the caller's directory.
    let path = std::fs::canonicalize(&args.path).unwrap_or_else(|_| args.path.clone());
    let path = path.to_string_lossy();
    if let Some(m) = live(&args.path)? {
        let mut m = if args.wait_idle {
            wait_idle(&args.path)?
        } else {
            m
        };
        describe_codec(&mut m);
        print(&m, format, Origin::Mount(&path));
        return Ok(());
    }
    if args.wait_idle {
        anyhow::bail!(
            "{} is not an llmfs mount point: --wait-idle needs a mounted filesystem",
            args.path.display()
        );
    }
    let st = match llmfs::store::stats::collect(&args.path) {
        Ok(st) => st,
        Err(e) if args.prometheus && not_mounted(&args.path, &e) => {
            // For monitoring, a filesystem that is down is a value, not an error.
            eprintln!(
                "llmfs: {path} is neither a live llmfs mount nor a store ({e}): reporting \
                 llmfs_mounted 0"
            );
            print!(
                "{}",
                prometheus::render(&Map::new(), Origin::NotMounted(&path))
            );
            return Ok(());
        }
        Err(e) => anyhow::bail!("reading store {}: {e}", args.path.display()),
    };
    let mut m = llmfs::fs::report::store_fields(&st);
    describe_codec(&mut m);
    print(&m, format, Origin::Store(&path));
    Ok(())
}
