//! Command-line parsing and dispatch. Only this layer reads the environment and flags;
//! everything below it takes validated configuration structs.

use clap::{Parser, Subcommand};

mod bench;
mod compress;
mod du;
mod fsck;
mod model;
mod mount;
mod output;
mod probe;
mod service;
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
    /// What a store holds, live from the daemon for a mount point or read from an
    /// unmounted store: logical bytes, chunk bytes per codec, disk use, compaction.
    Stats(stats::StatsArgs),
    /// What files and directories in a mount hold and store, by codec, with the bytes
    /// still waiting for the model (like compsize on btrfs).
    Du(du::DuArgs),
    /// Check an unmounted store's consistency; with --repair, fix what can be proven.
    #[command(after_help = fsck::EXIT_HELP)]
    Fsck(fsck::FsckArgs),
    /// Compress a file with the language model into a .llz container.
    Compress(compress::CompressArgs),
    /// Decompress a .llz container.
    Decompress(compress::DecompressArgs),
    /// Measure ratio and speed against gzip, xz and zstd; prints markdown tables.
    Bench(bench::BenchArgs),
}

/// Subcommand names win over the mount form: a store named like one needs a path
/// (`llmfs ./fsck MOUNTPOINT`).
const SUBCOMMANDS: &[&str] = &[
    "mount",
    "stats",
    "du",
    "fsck",
    "compress",
    "decompress",
    "bench",
    "help",
];

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
    // fuser's session warns that its own unmount failed after every unmount done from
    // outside (fusermount3 -u): the mount is already gone, so that warning is noise, also
    // when RUST_LOG is set.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .filter_module("fuser::session", log::LevelFilter::Error)
        // A reply the kernel no longer wants (the request was interrupted, or the mount is
        // going away at unmount) is normal; fuser logs it as an error.
        .filter_module("fuser::reply", log::LevelFilter::Off)
        .init();
    let cli = match Cli::try_parse_from(normalize_args(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Mount(args) => match mount::parse(args) {
            Ok(cfg) => {
                mount::reexec_with_passive_openmp();
                mount::run(cfg)
            }
            Err(usage) => {
                eprintln!("llmfs: usage error: {usage}");
                return 2;
            }
        },
        Command::Stats(args) => stats::run(args),
        Command::Du(args) => du::run(args),
        Command::Fsck(args) => return fsck::run(args),
        Command::Compress(args) => compress::run_compress(args),
        Command::Decompress(args) => compress::run_decompress(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<mount::UsageError>().is_some() => {
            eprintln!("llmfs: usage error: {e:#}");
            2
        }
        Err(e) => {
            eprintln!("llmfs: error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_args;
    use std::ffi::OsString;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn subcommands_win_over_the_mount_form() {
        for sub in ["fsck", "stats", "mount"] {
            let a = args(&["llmfs", sub, "store"]);
            assert_eq!(normalize_args(a.clone()), a);
        }
        assert_eq!(
            normalize_args(args(&["llmfs", "./fsck", "mnt"])),
            args(&["llmfs", "mount", "./fsck", "mnt"])
        );
    }
}
