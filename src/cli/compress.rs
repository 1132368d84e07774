//! `llmfs compress` and `llmfs decompress`: the codec on its own, file to file.

use super::model::{parse_size, ModelArgs};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmfs::codec::container::{self, Container};
use llmfs::codec::segment::SegmentCoder;
use llmfs::codec::DEFAULT_SEGMENT_SIZE;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct CompressArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// File to compress, or - for standard input.
    input: PathBuf,
    /// Where to write; default INPUT.llz, or standard output when INPUT is -.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Plaintext bytes per independently decodable segment (e.g. 4K, 16K).
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    segment_size: usize,
    /// Skip decoding each LLM segment again before accepting it. For benchmarks only:
    /// without verification a nondeterministic backend could store undecodable data.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Args)]
pub struct DecompressArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// File to decompress, or - for standard input.
    input: PathBuf,
    /// Where to write; default INPUT without .llz, or standard output when INPUT is -.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
    } else {
        if path.is_dir() {
            bail!("{} is a directory", path.display());
        }
        data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(data)
}

/// Writes to a temporary file renamed into place, so a failure never leaves a partial
/// output behind under the final name.
fn write_output(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(data)
            .and_then(|_| out.flush())
            .context("writing standard output")?;
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".llmfs-partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn default_output(input: &Path, compress: bool) -> anyhow::Result<PathBuf> {
    if input.as_os_str() == "-" {
        return Ok("-".into());
    }
    if compress {
        let mut name = input.as_os_str().to_owned();
        name.push(".llz");
        return Ok(name.into());
    }
    match input.extension() {
        Some(ext) if ext == "llz" => Ok(input.with_extension("")),
        _ => bail!(
            "cannot infer the output name of {} (no .llz suffix): pass -o OUTPUT",
            input.display()
        ),
    }
}

/// A progress bar on stderr that appears only on a terminal and only once the job has
/// run for a second.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    shown: bool,
    tokens: u64,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")
                .expect("valid template"),
        );
        Progress {
            bar,
            start: Instant::now(),
            shown: false,
            tokens: 0,
        }
    }

    pub fn update(&mut self, bytes: u64, tokens: u64) {
        self.tokens += tokens;
        if !self.shown
            && self.start.elapsed() > Duration::from_secs(1)
            && std::io::stderr().is_terminal()
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        self.bar
            .set_message(format!("{:.0} tok/s", self.tokens as f64 / secs));
        self.bar.set_position(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn run_compress(args: CompressArgs) -> anyhow::Result<()> {
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, true)?,
    };
    let plain = read_input(&args.input)?;
    let model = args.model.load()?;
    let max_tokens = args.segment_size.max(DEFAULT_SEGMENT_SIZE);
    let mut coder = SegmentCoder::new(model.session(max_tokens)?, !args.no_verify);
    let mut progress = Progress::new(plain.len() as u64);
    let (bytes, reports) =
        container::compress(&plain, args.segment_size, &mut coder, |done, r| {
            progress.update(done as u64, r.tokens as u64)
        })?;
    progress.finish();
    write_output(&output, &bytes)?;
    let llm = reports
        .iter()
        .filter(|r| r.codec == Some(llmfs::frame::Codec::Llm))
        .count();
    log::info!(
        "{} bytes -> {} bytes ({:.2}x), {} of {} segments LLM-coded",
        plain.len(),
        bytes.len(),
        plain.len() as f64 / bytes.len().max(1) as f64,
        llm,
        reports.len()
    );
    Ok(())
}

pub fn run_decompress(args: DecompressArgs) -> anyhow::Result<()> {
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, false)?,
    };
    let bytes = read_input(&args.input)?;
    let c = Container::parse(&bytes).with_context(|| format!("{}", args.input.display()))?;
    let model = if c.needs_model() {
        Some(args.model.load()?)
    } else {
        None
    };
    let mut coder = match &model {
        Some(m) => Some(SegmentCoder::new(
            m.session((c.segment_size as usize).max(DEFAULT_SEGMENT_SIZE))?,
            true,
        )),
        None => None,
    };
    c.check_model(coder.as_ref())?;
    let mut plain = Vec::with_capacity(c.plain_len.min(1 << 30) as usize);
    let mut progress = Progress::new(c.plain_len);
    for i in 0..c.segments() {
        let steps_before = coder.as_ref().map_or(0, |c| c.session().stats.steps);
        plain.extend_from_slice(&c.decode_segment(i, coder.as_mut())?);
        let steps = coder.as_ref().map_or(0, |c| c.session().stats.steps) - steps_before;
        progress.update(plain.len() as u64, steps);
    }
    progress.finish();
    write_output(&output, &plain)
}
