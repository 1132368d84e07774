//! `llmfs mount`: parses mount options into a validated configuration and runs the daemon.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct MountArgs {
    /// Directory holding the sled store (created on first use).
    pub store: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Comma-separated mount options.
    #[arg(short = 'o')]
    pub options: Vec<String>,
}

pub fn run(_args: MountArgs) -> anyhow::Result<()> {
    anyhow::bail!("mount is not implemented yet")
}
