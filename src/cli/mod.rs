//! Command-line parsing and dispatch. Only this layer reads the environment and flags;
//! everything below it takes validated configuration structs.

use clap::{Parser, Subcommand};

mod bench;
mod compress;
mod model;
mod mount;
mod output;
mod stats;

#[derive(Parser)]
#[command(
    name = "llmfs",
    version,
    about = "A transparent compressed filesystem whose compressor is a language model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a store (created on first use) at MOUNTPOINT, in the foreground.
    Mount(mount::MountArgs),
    /// Print what an unmounted store holds: logical bytes, chunk bytes per codec, disk use.
    Stats(stats::StatsArgs),
    /// Compress a file with the language model into a .llz container.
    Compress(compress::CompressArgs),
    /// Decompress a .llz container.
    Decompress(compress::DecompressArgs),
    /// Measure ratio and speed against gzip, xz and zstd; prints markdown tables.
    Bench(bench::BenchArgs),
}

const SUBCOMMANDS: &[&str] = &["mount", "stats", "compress", "decompress", "bench", "help"];

/// `mount -t fuse.llmfs STORE DIR -o OPTS` runs `llmfs STORE DIR -o OPTS` through
/// mount.fuse3: a first argument that is not a subcommand or a flag means `mount`.
fn normalize_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        if !first.starts_with('-') && !SUBCOMMANDS.contains(&first) {
            args.insert(1, "mount".into());
        }
    }
    args
}

pub fn main() -> i32 {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match Cli::try_parse_from(normalize_args(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Mount(args) => match mount::parse(args) {
            Ok(cfg) => mount::run(cfg),
            Err(usage) => {
                eprintln!("llmfs: usage error: {usage}");
                return 2;
            }
        },
        Command::Stats(args) => stats::run(args),
        Command::Compress(args) => compress::run_compress(args),
        Command::Decompress(args) => compress::run_decompress(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("llmfs: error: {e:#}");
            1
        }
    }
}
