//! `llmfs stats`: what a store holds, in which codec, against what it costs on disk.

use clap::Args;
use llmfs::store::stats::StoreStats;
use std::path::PathBuf;

#[derive(Args)]
pub struct StatsArgs {
    /// The store directory (unmounted).
    pub store: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// Prints `fields` (plus the ratios derived from them) as a table or a JSON object.
pub fn print(st: &StoreStats, json: bool) {
    let mut fields: Vec<(String, String)> = st
        .fields()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    fields.push((
        "ratio_stored".into(),
        format!("{:.2}", ratio(st.logical_bytes, st.stored_bytes)),
    ));
    fields.push((
        "ratio_disk".into(),
        format!("{:.2}", ratio(st.logical_bytes, st.disk_bytes)),
    ));
    if json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (k, v) in fields {
            println!("{k:<24} {v:>16}");
        }
    }
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let st = llmfs::store::stats::collect(&args.store)
        .map_err(|e| anyhow::anyhow!("reading store {}: {e}", args.store.display()))?;
    print(&st, args.json);
    Ok(())
}
