//! `llmfs fsck`: checks an unmounted store and, with `--repair`, applies the repairs
//! the check proves safe (see [`llmfs::store::fsck`]).

use super::model::ModelArgs;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmfs::codec::primer::Coding;
use llmfs::codec::profile::{CodecProfile, Engine};
use llmfs::store::engine::sqlite::journal::JournalDamage;
use llmfs::store::engine::EngineError;
use llmfs::store::fsck::{
    CheckOptions, CheckPhase, CheckProgress, CheckReport, LlmDecoder, Problem, ProblemKind,
    Severity,
};
use llmfs::store::{MetaKey, OpenOptions, Store, StoreError};
use llmfs::tier::{self, Pool};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The store is clean (after `--repair`: clean now).
pub const EXIT_CLEAN: i32 = 0;
/// Problems were found (and, with `--repair`, some remain).
pub const EXIT_PROBLEMS: i32 = 1;
/// The store could not be checked: missing, in use, not a store, unreadable.
pub const EXIT_FAILED: i32 = 8;

pub const EXIT_HELP: &str = "Exit status: 0 the store is clean (with --repair: clean after \
the repairs; with --salvage: nothing was lost), 1 problems were found, a store too damaged to \
open among them (with --repair: some remain; with --salvage: something was lost, and said), 2 \
usage error, 8 the check could not run (store missing, mounted, not a store, I/O error).";

#[derive(Args)]
pub struct FsckArgs {
    /// The store directory (unmounted: a mounted store is refused).
    pub store: PathBuf,
    /// Also decode every chunk and check its CRC (LLM-coded chunks need the model and
    /// take seconds each on a CPU; without the model they are reported as not verified).
    #[arg(long)]
    pub verify: bool,
    /// Apply the repairs the check proves safe (recompute derived fields, remove records
    /// nothing references), then check again. Without it nothing is written.
    #[arg(long)]
    pub repair: bool,
    /// Build a new store in NEWSTORE from every record of STORE that still reads, for
    /// damage no repair in place can fix (a damaged database page, a file cut short);
    /// STORE is only read. What is lost reads as an I/O error in the new store.
    #[arg(long, requires = "newstore", conflicts_with_all = ["repair", "verify"])]
    pub salvage: bool,
    /// With --salvage: the new store's directory (missing or empty).
    pub newstore: Option<PathBuf>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A decoder of batches of LLM frames, owned.
type ModelDecoder = Box<dyn FnMut(Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>>>;

/// The language model for `--verify` of LLM-coded chunks, as the store's pinned profile
/// names it (the synthetic test model, or a GGUF: `--model` and the usual defaults): a
/// decoder of batches of whole frames, each batch decoded on every lane of a pool at
/// once. `None` when the store holds no LLM frames. A model that is not the store's is
/// caught by the canary, first thing of the check.
fn model_decoder(args: &FsckArgs, store: &Store) -> anyhow::Result<Option<ModelDecoder>> {
    let Some(pinned) = store.meta(MetaKey::Profile)? else {
        return Ok(None);
    };
    let recorded = CodecProfile::decode(&pinned)
        .map_err(|e| anyhow::anyhow!("the store's pinned codec profile is unreadable: {e}"))?;
    let coding = Coding::of_profile(&recorded)
        .map_err(|e| anyhow::anyhow!("the store's LLM frames were coded with {e}"))?;
    let pool = if recorded.engine == Engine::Synthetic {
        Pool::start(
            args.model.pool_config(),
            tier::lanes::synthetic(coding, true),
        )
        .map_err(anyhow::Error::new)?
    } else {
        args.model
            .pool(&coding, store.chunk_size() as usize, true)?
            .0
    };
    Ok(Some(Box::new(move |frames: Vec<Vec<u8>>| {
        let tickets: Vec<_> = frames.into_iter().map(|f| pool.submit_decode(f)).collect();
        tickets
            .into_iter()
            .map(|t| {
                t.wait()
                    .map(llmfs::frame::Plain::into_vec)
                    .map_err(|e| e.to_string())
            })
            .collect()
    })))
}

pub fn run(args: FsckArgs) -> i32 {
    if args.salvage {
        return salvage(&args);
    }
    if args.newstore.is_some() {
        eprintln!("llmfs fsck: a second directory is only for --salvage");
        return 2;
    }
    // Without --repair nothing in the store's files changes: no checkpoint, no upgrade.
    let opts = OpenOptions {
        create: None,
        read_only: !args.repair,
    };
    let mut journal_repairs = Vec::new();
    let store = match Store::open(&args.store, &opts) {
        Ok(s) => s,
        Err(StoreError::Engine {
            source: EngineError::Journal(_),
            ..
        }) if args.repair => {
            match llmfs::store::engine::product::repair_journal(&args.store) {
                Ok(done) => journal_repairs = done,
                Err(e) => {
                    let e = StoreError::engine(llmfs::store::StoreOp::Open, e);
                    return cannot_check(&args, "repairing its WAL", &e);
                }
            }
            match Store::open(&args.store, &opts) {
                Ok(s) => s,
                Err(e) => return cannot_check(&args, "opening it after the WAL repair", &e),
            }
        }
        Err(StoreError::Engine {
            source: EngineError::Journal(damage),
            ..
        }) => return report_journal(&args, &damage),
        Err(e) => return cannot_check(&args, "opening it", &e),
    };
    for line in &journal_repairs {
        if !args.json {
            println!("repaired the WAL: {line}");
        }
    }
    let mut decoder = if args.verify {
        match model_decoder(&args, &store) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("llmfs fsck: loading the model: {e:#}");
                return EXIT_FAILED;
            }
        }
    } else {
        None
    };
    let opts = CheckOptions {
        verify: args.verify,
    };
    let mut shown = ProgressDisplay::new();
    // Spelled out: a coercion to the shorter trait-object lifetime does not reach
    // inside an Option.
    let llm: Option<LlmDecoder<'_>> = match decoder.as_mut() {
        Some(d) => Some(d.as_mut()),
        None => None,
    };
    let checked = store.check(&opts, llm, &mut |p| shown.update(p));
    drop(shown);
    let mut report = match checked {
        Ok(r) => r,
        Err(e) => return cannot_check(&args, "checking it", &e),
    };
    report.problems.extend(codec_problem(&store));
    if !args.repair || report.repairable() == 0 {
        print_report(&args, &report, None);
        return if report.is_clean() {
            EXIT_CLEAN
        } else {
            EXIT_PROBLEMS
        };
    }
    match repair_and_recheck(&store, &report) {
        Ok(after) => {
            print_report(&args, &report, Some(&after));
            if after.report.is_clean() {
                EXIT_CLEAN
            } else {
                EXIT_PROBLEMS
            }
        }
        Err(e) => {
            print_report(&args, &report, None);
            cannot_check(&args, "repairing it", &e)
        }
    }
}

/// Whether this build can code the store's LLM frames at all: its pinned profile must
/// parse, and name a coder version and primer this build has. (The model, build and
/// machine are checked by a mount, and by `--verify`, against the canary.)
fn codec_problem(store: &Store) -> Option<Problem> {
    let pinned = store.meta(MetaKey::Profile).ok()??;
    let why = match CodecProfile::decode(&pinned) {
        Err(e) => format!("the pinned codec profile does not parse ({e}): a mount with a model will refuse the store; report it"),
        Ok(p) => match Coding::of_profile(&p) {
            Ok(_) => return None,
            Err(e) => format!(
                "the store's LLM frames were coded with {e}: this build cannot decode them \
                 (mount with -o nomodel to read everything else)"
            ),
        },
    };
    Some(Problem::error(ProblemKind::Profile, None, why))
}

/// `--salvage`: a new store from every record that still reads.
fn salvage(args: &FsckArgs) -> i32 {
    let Some(target) = &args.newstore else {
        return 2;
    };
    let quiet = args.json;
    let report = match llmfs::store::salvage::salvage(&args.store, target, &mut |line| {
        if !quiet {
            eprintln!("{line}");
        }
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "llmfs fsck: cannot salvage {} into {}: {e}",
                args.store.display(),
                target.display()
            );
            return EXIT_FAILED;
        }
    };
    if args.json {
        let tables: serde_json::Map<String, Value> = report
            .tables
            .iter()
            .map(|(t, c)| {
                (
                    t.to_string(),
                    json!({"found": c.found, "kept": c.kept, "damaged": c.damaged, "duplicates": c.duplicates}),
                )
            })
            .collect();
        println!(
            "{}",
            json!({
                "store": args.store.display().to_string(),
                "salvaged_into": target.display().to_string(),
                "lossless": report.lossless(),
                "tables": tables,
                "damaged_pages": report.scan.pages.damaged.iter().map(|(p, w)| json!({"page": p, "why": w})).collect::<Vec<_>>(),
                "damaged_records": report.damaged,
                "files_with_lost_chunks": report.lost_chunks.iter().map(|(i, p, n)| json!({"ino": i, "path": p, "chunks": n})).collect::<Vec<_>>(),
                "rebuilt_inodes": report.rebuilt.iter().map(|(i, p)| json!({"ino": i, "path": p})).collect::<Vec<_>>(),
                "relinked_into_lost_found": report.relinked,
                "clean": report.check.is_clean(),
                "problems": report.check.problems.iter().map(problem_json).collect::<Vec<_>>(),
            })
        );
    } else {
        print_salvage(&report);
    }
    if report.lossless() && report.check.is_clean() {
        EXIT_CLEAN
    } else {
        EXIT_PROBLEMS
    }
}

fn print_salvage(r: &llmfs::store::salvage::SalvageReport) {
    let p = &r.scan.pages;
    println!(
        "salvaged {} into {} (chunk size {}{})",
        r.source.display(),
        r.target.display(),
        r.chunk_size,
        if r.superblock_found {
            ""
        } else {
            ", inferred: the superblock was lost"
        }
    );
    println!(
        "read {} pages ({} leaf, {} interior, {} overflow, {} free left out), {}",
        p.pages, p.leaf_pages, p.interior_pages, p.overflow_pages, p.free_pages, r.scan.wal
    );
    for (page, why) in &p.damaged {
        println!("damaged page {page}: {why}");
    }
    println!("| table | found | kept | damaged | duplicates |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (t, c) in &r.tables {
        println!(
            "| {t} | {} | {} | {} | {} |",
            c.found, c.kept, c.damaged, c.duplicates
        );
    }
    if !r.sealed {
        println!("the old store was of format 2: its records carry no checksums and were copied unverified");
    }
    const SHOWN: usize = 20;
    let more = |n: usize| {
        if n > SHOWN {
            println!("... and {} more (--json lists them all)", n - SHOWN);
        }
    };
    for d in r.damaged.iter().take(SHOWN) {
        println!("dropped: {d}");
    }
    more(r.damaged.len());
    for (ino, path, n) in r.lost_chunks.iter().take(SHOWN) {
        println!(
            "lost: inode {ino} ({path}): {n} chunks could not be recovered; they read as I/O \
             errors in the new store"
        );
    }
    more(r.lost_chunks.len());
    for (ino, path) in r.rebuilt.iter().take(SHOWN) {
        println!(
            "rebuilt: inode {ino} ({path}) had lost its record: its data is kept under a new one \
             (owner root, mode 0600 or 0700; size as far as the data found reaches)"
        );
    }
    more(r.rebuilt.len());
    for ino in r.relinked.iter().take(SHOWN) {
        println!("relinked: inode {ino} is no longer reachable from the root: /lost+found/#{ino}");
    }
    more(r.relinked.len());
    println!(
        "repaired {} derived fields in the new store; checked it:",
        r.repaired
    );
    for p in r
        .check
        .problems
        .iter()
        .filter(|p| p.severity != Severity::Info)
    {
        println!("{p}");
    }
    println!("{}", tally(&r.check));
    println!(
        "{}",
        if r.lossless() {
            "nothing was lost: every record of the old store is in the new one"
        } else {
            "the new store holds everything that still read; what is listed above was lost"
        }
    );
}

/// A store whose WAL lost commits or is damaged: nothing was opened; what was found and
/// what `--repair` would do.
fn report_journal(args: &FsckArgs, damage: &JournalDamage) -> i32 {
    let fix = if damage.rebuildable {
        "rebuild the database from every intact frame of the WAL"
    } else {
        "accept the loss and check what is left"
    };
    let dir = args.store.display();
    if args.json {
        let problems: Vec<Value> = damage
            .findings
            .iter()
            .map(|f| {
                json!({
                    "severity": "error",
                    "kind": "journal",
                    "ino": null,
                    "chunk": null,
                    "path": null,
                    "message": f,
                    "repairable": true,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"store": dir.to_string(), "clean": false, "problems": problems})
        );
        return EXIT_PROBLEMS;
    }
    for f in &damage.findings {
        println!("error: the write-ahead log: {f} [repairable]");
    }
    println!(
        "{dir}: the store was not opened (opening it would silently lose those commits); \
         nothing was changed"
    );
    println!(
        "`llmfs fsck --repair {dir}` will {fix}, keeping the files it replaces next to the store"
    );
    println!("the store is NOT clean");
    EXIT_PROBLEMS
}

/// A failure to open or read the store: damage is a problem found (exit 1), anything
/// else means the check could not run (exit 8).
fn cannot_check(args: &FsckArgs, doing: &str, e: &StoreError) -> i32 {
    let damaged = matches!(
        e,
        StoreError::Corrupt(_)
            | StoreError::Engine {
                source: EngineError::Corrupt { .. },
                ..
            }
    );
    if args.json {
        println!(
            "{}",
            json!({
                "store": args.store.display().to_string(),
                "clean": false,
                "error": format!("{doing}: {e}"),
            })
        );
    }
    if damaged {
        let dir = args.store.display();
        eprintln!(
            "error: {dir}: {doing}: {e}; `llmfs fsck --salvage {dir} NEWSTORE` copies every \
             record that still reads into a new store"
        );
        EXIT_PROBLEMS
    } else {
        eprintln!(
            "llmfs fsck: cannot check {}: {doing}: {e}",
            args.store.display()
        );
        EXIT_FAILED
    }
}

/// What `--repair` did, and what a check found after it.
struct Repaired {
    repaired: usize,
    report: CheckReport,
}

fn repair_and_recheck(store: &Store, first: &CheckReport) -> Result<Repaired, StoreError> {
    let summary = store.repair(first)?;
    let mut report = store.check(&CheckOptions::default(), None, &mut |_| {})?;
    // The second check does not decode frames again (hours with LLM frames): what the
    // first one's decoding found still stands where its chunk is still there.
    for p in &first.problems {
        let carried = match (p.kind, p.ino, p.chunk) {
            (ProblemKind::Decode, Some(ino), Some(index)) => store.chunk(ino, index)?.is_some(),
            (ProblemKind::Decode | ProblemKind::Unverified, _, _) => true,
            _ => false,
        };
        if carried {
            report.problems.push(p.clone());
        }
    }
    Ok(Repaired {
        repaired: summary.repaired,
        report,
    })
}

fn print_report(args: &FsckArgs, report: &CheckReport, after: Option<&Repaired>) {
    let last = after.map_or(report, |a| &a.report);
    if args.json {
        let mut v = json!({
            "store": args.store.display().to_string(),
            "chunk_size": report.chunk_size,
            "created_by": report.created_by,
            "verified": report.verified,
            "clean": last.is_clean(),
            "counts": report.counts.fields().iter().map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<String, Value>>(),
            "problems": report.problems.iter().map(problem_json).collect::<Vec<_>>(),
        });
        if let Some(a) = after {
            v["repaired"] = json!(a.repaired);
            v["remaining"] = json!(a
                .report
                .problems
                .iter()
                .map(problem_json)
                .collect::<Vec<_>>());
        }
        println!("{v}");
        return;
    }
    for p in &report.problems {
        println!("{p}");
    }
    let c = &report.counts;
    println!(
        "{}: chunk size {}, created by {}",
        args.store.display(),
        report.chunk_size,
        report.created_by
    );
    println!(
        "checked {} inodes ({} files, {} directories), {} names, {} orphans, {} chunks ({} hot, \
         {} settled in {} extents, {} LLM-coded), {} bytes of frames for {} bytes of text",
        c.inodes,
        c.files,
        c.dirs,
        c.dirents,
        c.orphans,
        c.hot_chunks + c.settled_chunks,
        c.hot_chunks,
        c.settled_chunks,
        c.extents,
        c.llm_frames,
        c.frame_bytes,
        c.plain_bytes
    );
    if report.verified {
        println!(
            "verified {} frames ({} bytes of text); {} LLM-coded not verified",
            c.verified_frames, c.verified_bytes, c.unverified_frames
        );
    }
    println!("{}", tally(report));
    match after {
        None if report.repairable() > 0 => println!(
            "{} problems are repairable: run `llmfs fsck --repair {}`",
            report.repairable(),
            args.store.display()
        ),
        None => {}
        Some(a) => {
            println!("repaired {} problems; checked again:", a.repaired);
            for p in a
                .report
                .problems
                .iter()
                .filter(|p| p.severity != Severity::Info)
            {
                println!("{p}");
            }
            println!("{}", tally(&a.report));
        }
    }
    println!(
        "{}",
        if last.is_clean() {
            "the store is clean"
        } else {
            "the store is NOT clean"
        }
    );
}

fn tally(r: &CheckReport) -> String {
    format!(
        "{} errors, {} warnings, {} notes",
        r.count(Severity::Error),
        r.count(Severity::Warning),
        r.count(Severity::Info)
    )
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "severity": p.severity.name(),
        "kind": p.kind.name(),
        "ino": p.ino,
        "chunk": p.chunk,
        "path": p.path,
        "message": p.message,
        "repairable": p.repairable(),
    })
}

/// A progress line on stderr, only on a terminal and once the check has run for a
/// second: records read, inodes checked, then bytes of text verified with an ETA.
struct ProgressDisplay {
    bar: Option<ProgressBar>,
    phase: Option<CheckPhase>,
    started: Instant,
    shown: bool,
}

impl ProgressDisplay {
    fn new() -> ProgressDisplay {
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()));
        ProgressDisplay {
            bar,
            phase: None,
            started: Instant::now(),
            shown: false,
        }
    }

    fn update(&mut self, p: CheckProgress) {
        let Some(bar) = &self.bar else {
            return;
        };
        if self.phase != Some(p.phase) {
            self.phase = Some(p.phase);
            let template = match p.phase {
                CheckPhase::Namespace => "{spinner} reading inodes and names: {pos} records",
                CheckPhase::Data => "{bar:30} {pos}/{len} inodes' data checked, ETA {eta}",
                CheckPhase::Verify => "{bar:30} {bytes}/{total_bytes} of text verified, ETA {eta}",
            };
            bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
            bar.reset();
        }
        bar.set_length(p.total);
        bar.set_position(p.done);
        if !self.shown && self.started.elapsed() > Duration::from_secs(1) {
            self.shown = true;
            bar.set_draw_target(ProgressDrawTarget::stderr());
            // Redrawn while one slow LLM frame decodes, so the ETA keeps moving.
            bar.enable_steady_tick(Duration::from_millis(250));
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
