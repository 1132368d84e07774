//! `llmfs du PATH...`: what a subtree of a mount holds and stores, by codec, the way
//! `compsize` answers it for btrfs. Each file's figures come from the daemon (the
//! computed attribute `user.llmfs.du`); this walks the tree, counts each inode once
//! (hard links), and stays on the mount it started on.

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DuArgs {
    /// Files or directories inside an llmfs mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print one JSON object (the sum over every path) instead of a table.
    #[arg(long)]
    pub json: bool,
}

const DU_ATTR: &str = "user.llmfs.du";

/// Sums of the figures of every file seen.
#[derive(Default)]
struct Totals {
    files: u64,
    dirs: u64,
    /// Figure name → sum (the daemon's numeric fields).
    sums: BTreeMap<String, u64>,
    /// Policy name → files with it.
    policies: BTreeMap<String, u64>,
    seen: HashSet<(u64, u64)>,
    /// Paths whose figures could not be read, with why.
    errors: Vec<String>,
}

impl Totals {
    fn get(&self, k: &str) -> u64 {
        self.sums.get(k).copied().unwrap_or(0)
    }

    fn add_file(&mut self, m: &Map<String, Value>) {
        self.files += 1;
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                *self.sums.entry(k.clone()).or_default() += n;
            }
        }
        let policy = m.get("policy").and_then(Value::as_str).unwrap_or("?");
        *self.policies.entry(policy.to_string()).or_default() += 1;
    }

    /// Walks `path` (a file, or a directory and everything under it on the same
    /// filesystem).
    fn walk(&mut self, path: &Path, dev: u64) -> anyhow::Result<()> {
        let md = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if md.dev() != dev || !self.seen.insert((md.dev(), md.ino())) {
            return Ok(());
        }
        if md.is_dir() {
            self.dirs += 1;
            let entries = match std::fs::read_dir(path) {
                Ok(e) => e,
                Err(e) => {
                    self.errors.push(format!("{}: {e}", path.display()));
                    return Ok(());
                }
            };
            for e in entries {
                match e {
                    Ok(e) => self.walk(&e.path(), dev)?,
                    Err(e) => self.errors.push(format!("{}: {e}", path.display())),
                }
            }
        } else if md.is_file() {
            match file_figures(path) {
                Ok(m) => self.add_file(&m),
                Err(e) => self.errors.push(format!("{}: {e:#}", path.display())),
            }
        }
        Ok(())
    }
}

/// The daemon's figures for one file.
fn file_figures(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let raw = xattr::get(path, DU_ATTR)
        .context("reading its figures")?
        .context("not in an llmfs mount (no user.llmfs.du attribute)")?;
    match serde_json::from_slice(&raw).context("the daemon's figures are not JSON")? {
        Value::Object(m) => Ok(m),
        _ => anyhow::bail!("the daemon's figures are not a JSON object"),
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}x", a as f64 / b as f64)
    }
}

const CODECS: [&str; 4] = ["llm", "zstd", "raw", "lost"];

fn print_table(t: &Totals) {
    let policies: Vec<String> = t.policies.iter().map(|(p, n)| format!("{p} {n}")).collect();
    println!(
        "{} files, {} directories; compress policy: {}",
        t.files,
        t.dirs,
        if policies.is_empty() {
            "-".into()
        } else {
            policies.join(", ")
        }
    );
    println!(
        "{:<10} {:>8} {:>14} {:>14} {:>8}",
        "codec", "chunks", "logical bytes", "stored bytes", "ratio"
    );
    for c in CODECS {
        let chunks = t.get(&format!("chunks_{c}"));
        if chunks == 0 {
            continue;
        }
        let plain = t.get(&format!("plain_bytes_{c}"));
        let frames = t.get(&format!("frame_bytes_{c}"));
        println!(
            "{c:<10} {chunks:>8} {plain:>14} {frames:>14} {:>8}",
            ratio(plain, frames)
        );
    }
    let chunks: u64 = CODECS.iter().map(|c| t.get(&format!("chunks_{c}"))).sum();
    let logical = t.get("logical_bytes");
    let stored = t.get("stored_bytes");
    println!(
        "{:<10} {chunks:>8} {logical:>14} {stored:>14} {:>8}",
        "total",
        ratio(logical, stored)
    );
    println!(
        "pending for the model: {} chunks, {} bytes",
        t.get("pending_chunks"),
        t.get("pending_bytes")
    );
    if t.get("damaged_chunks") > 0 {
        println!(
            "damaged chunks: {} (llmfs fsck says more)",
            t.get("damaged_chunks")
        );
    }
}

pub fn run(args: DuArgs) -> anyhow::Result<()> {
    let mut t = Totals::default();
    for p in &args.paths {
        let dev = std::fs::symlink_metadata(p)
            .with_context(|| format!("reading {}", p.display()))?
            .dev();
        t.walk(p, dev)?;
    }
    if t.files == 0 && !t.errors.is_empty() {
        anyhow::bail!("{}", t.errors.join("; "));
    }
    if args.json {
        let mut m = Map::new();
        m.insert("files".into(), t.files.into());
        m.insert("directories".into(), t.dirs.into());
        for (k, v) in &t.sums {
            m.insert(k.clone(), (*v).into());
        }
        m.insert(
            "policies".into(),
            Value::Object(
                t.policies
                    .iter()
                    .map(|(p, n)| (p.clone(), (*n).into()))
                    .collect(),
            ),
        );
        println!("{}", Value::Object(m));
    } else {
        print_table(&t);
    }
    for e in &t.errors {
        eprintln!("llmfs du: {e}");
    }
    if t.errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} paths could not be read", t.errors.len())
    }
}
