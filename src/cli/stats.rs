//! `llmfs stats STORE`: a small table of what an unmounted store holds.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct StatsArgs {
    /// The store directory (not mounted: sled allows one user at a time).
    pub store: PathBuf,
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    if !args.store.join("conf").exists() && !args.store.join("db").exists() {
        anyhow::bail!("{} is not an llmfs store", args.store.display());
    }
    let st = llmfs::store::stats::collect(&args.store).map_err(|e| {
        anyhow::anyhow!(
            "reading store {} (is it mounted?): {e}",
            args.store.display()
        )
    })?;
    println!("{:<24} {:>16}", "files", st.files);
    println!("{:<24} {:>16}", "directories", st.dirs);
    println!("{:<24} {:>16}", "logical_bytes", st.logical_bytes);
    println!("{:<24} {:>16}", "chunk_bytes", st.chunk_bytes);
    for (codec, n, bytes, plain) in &st.per_codec {
        println!("{:<24} {:>16}", format!("chunks_{codec}"), n);
        println!("{:<24} {:>16}", format!("chunk_bytes_{codec}"), bytes);
        println!("{:<24} {:>16}", format!("plain_bytes_{codec}"), plain);
    }
    if st.bad_chunks > 0 {
        println!("{:<24} {:>16}", "unreadable_chunk_headers", st.bad_chunks);
    }
    println!("{:<24} {:>16}", "disk_bytes", st.disk_bytes);
    if st.chunk_bytes > 0 {
        println!(
            "{:<24} {:>16.2}",
            "space_amplification",
            st.disk_bytes as f64 / st.chunk_bytes as f64
        );
    }
    Ok(())
}
