//! `llmfs compress` and `llmfs decompress`: the codec on its own, file to file.

use super::model::{parse_segment_size, ModelArgs};
use super::output::Output;
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmfs::codec::container::{self, ContainerError, ContainerReader, Recorded};
use llmfs::codec::legacy::LegacyDecoder;
use llmfs::codec::llm::LlmModel;
use llmfs::codec::primer::Coding;
use llmfs::codec::DEFAULT_SEGMENT_SIZE;
use llmfs::frame::{Codec, Plain};
use llmfs::tier::{Pool, Ticket};
use std::collections::VecDeque;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    #[arg(long, default_value = "4K", value_parser = parse_segment_size)]
    segment_size: usize,
    /// Skip decoding each LLM segment again before accepting it. For benchmarks only:
    /// without verification a nondeterministic backend could store undecodable data.
    #[arg(long)]
    no_verify: bool,
    /// The text every segment is coded after: `builtin` (llmfs's primer for LLM logs
    /// and answers) or `none` (each segment from an empty context). Decompression needs
    /// the same primer, which the file records.
    #[arg(long, default_value = "builtin", value_parser = parse_primer)]
    primer: Coding,
}

/// A `--primer` or `primer=` value.
pub fn parse_primer(s: &str) -> Result<Coding, String> {
    Coding::named(s).map_err(|e| e.to_string())
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

fn open_input(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    if path.is_dir() {
        bail!("{} is a directory", path.display());
    }
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Box::new(file))
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    open_input(path)?
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", input_name(path)))?;
    Ok(data)
}

fn input_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".into()
    } else {
        path.display().to_string()
    }
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

/// A progress bar on stderr, shown only on a terminal and only once the job has run
/// for a second. A ticker thread reads the model's step counter, so tokens/s and the
/// position move within a segment too (estimated from the bytes per token so far).
pub struct Progress {
    bar: ProgressBar,
    state: Arc<Mutex<ProgressState>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

struct ProgressState {
    done_bytes: u64,
    done_steps: u64,
}

impl Progress {
    pub fn new(total_bytes: u64, steps: Option<Arc<AtomicU64>>) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")
                .expect("valid template"),
        );
        let state = Arc::new(Mutex::new(ProgressState {
            done_bytes: 0,
            done_steps: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = std::io::stderr().is_terminal().then(|| {
            let (bar, state, stop) = (bar.clone(), Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || tick(bar, state, stop, steps, total_bytes))
                .expect("spawning the progress thread")
        });
        Progress {
            bar,
            state,
            stop,
            ticker,
        }
    }

    /// Records that `bytes` of plaintext are done, after `steps` model steps in all.
    pub fn update(&self, bytes: u64, steps: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done_bytes = bytes;
        s.done_steps = steps;
    }

    pub fn finish(self) {}
}

impl Drop for Progress {
    /// Stops the ticker and clears the bar, on success and on error alike.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

fn tick(
    bar: ProgressBar,
    state: Arc<Mutex<ProgressState>>,
    stop: Arc<AtomicBool>,
    steps: Option<Arc<AtomicU64>>,
    total: u64,
) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() < Duration::from_secs(1) {
            continue;
        }
        if bar.is_hidden() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let (done_bytes, done_steps) = {
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            (s.done_bytes, s.done_steps)
        };
        let now_steps = steps
            .as_ref()
            .map_or(done_steps, |s| s.load(Ordering::Relaxed));
        let bytes_per_step = if done_steps > 0 {
            done_bytes as f64 / done_steps as f64
        } else {
            4.0
        };
        let in_flight = (now_steps.saturating_sub(done_steps) as f64 * bytes_per_step) as u64;
        bar.set_position((done_bytes + in_flight).min(total));
        bar.set_message(format!(
            "{:.0} tok/s",
            now_steps as f64 / start.elapsed().as_secs_f64()
        ));
    }
}

pub fn run_compress(args: CompressArgs) -> anyhow::Result<()> {
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, true)?,
    };
    let plain = read_input(&args.input)?;
    // Opened before minutes of coding, so that an unusable output fails at once.
    let mut out = Output::open(&output)?;
    let max_tokens = args.segment_size.max(DEFAULT_SEGMENT_SIZE);
    let (pool, model) = args.model.pool(&args.primer, max_tokens, !args.no_verify)?;
    let profile = model.profile_for(&args.primer);
    let progress = Progress::new(plain.len() as u64, None);
    let (bytes, reports) =
        container::compress_segments(&plain, args.segment_size, &profile, |segments| {
            // Every segment to the pool at once: its lanes code them side by side, and
            // the frames come back in order (the bytes are those of one lane).
            let tickets: Vec<_> = segments
                .iter()
                .map(|s| pool.submit_encode(Arc::new(s.to_vec().into()), true))
                .collect();
            let mut done = 0;
            let mut coded = Vec::with_capacity(tickets.len());
            for (i, t) in tickets.into_iter().enumerate() {
                let c = t.wait().map_err(|e| (i, e.into()))?;
                done += c.report.plain_len;
                progress.update(done as u64, 0);
                coded.push((c.frame, c.report));
            }
            Ok(coded)
        })?;
    progress.finish();
    out.write_all(&bytes)?;
    out.commit()?;
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

/// The coding a file's LLM segments need, with this model: the one its header names
/// (version 2), or the one of this build's whose digest it records (version 3); an error
/// says what differs.
fn file_coding(header: &container::Header, model: &LlmModel) -> Result<Coding, anyhow::Error> {
    if let Recorded::Profile(p) = &header.recorded {
        let coding = Coding::of_profile(p)?;
        header.check_profile(Some(&model.profile_for(&coding)))?;
        return Ok(coding);
    }
    let candidates = Coding::candidates();
    for c in &candidates {
        if header.check_profile(Some(&model.profile_for(c))).is_ok() {
            return Ok(c.clone());
        }
    }
    // None matches: the default's error says whether the model or the rest differs.
    header.check_profile(Some(&model.profile_for(&candidates[0])))?;
    anyhow::bail!("no coding of this build matches the file")
}

/// How a file's segments are decoded.
enum Decoder<'m> {
    /// No segment needs a model.
    Plain,
    /// Current files: segments decoded on a pool's lanes, a window of them at once.
    Pool(Pool),
    Legacy(LegacyDecoder<'m>),
}

/// A segment in flight: decoded already, or waiting on a lane.
enum Pending {
    Ready(Result<Vec<u8>, ContainerError>),
    Decoding(usize, Ticket<Plain>),
}

/// Decodes segment by segment, writing each as it comes: memory stays within a window
/// of segments (two per lane) whatever the file claims.
pub fn run_decompress(args: DecompressArgs) -> anyhow::Result<()> {
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, false)?,
    };
    let name = input_name(&args.input);
    let input = open_input(&args.input)?;
    let mut reader = ContainerReader::new(BufReader::new(input)).with_context(|| name.clone())?;
    let header = reader.header.clone();
    let mut out = Output::open(&output)?;
    let segment_size = header.segment_size as usize;
    let model;
    let mut decoder = match &header.recorded {
        Recorded::Profile(_) | Recorded::Tiny(_) if header.needs_model() => {
            let m = Arc::new(args.model.load()?);
            let coding = file_coding(&header, &m).with_context(|| name.clone())?;
            let pool =
                args.model
                    .start_pool(m, &coding, segment_size.max(DEFAULT_SEGMENT_SIZE), true)?;
            Decoder::Pool(pool)
        }
        Recorded::V1 { .. } if header.needs_model() => {
            model = args.model.load()?;
            header
                .check_profile(Some(model.profile()))
                .with_context(|| name.clone())?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            Decoder::Legacy(LegacyDecoder::new(&model, args.model.threads, cores.max(4)))
        }
        _ => Decoder::Plain,
    };
    let window = match &decoder {
        Decoder::Pool(p) => 2 * p.lanes().max(1),
        _ => 1,
    };
    let progress = Progress::new(header.plain_len, None);
    let mut done = 0u64;
    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    let mut finish_one = |p: Pending, out: &mut Output| -> anyhow::Result<()> {
        let data = match p {
            Pending::Ready(r) => r,
            Pending::Decoding(index, t) => t.wait().map(Plain::into_vec).map_err(|e| {
                let (start, end) = header.segment_bounds(index);
                ContainerError::Segment {
                    index,
                    start,
                    end,
                    error: e.into(),
                }
            }),
        }
        .with_context(|| name.clone())?;
        out.write_all(&data)?;
        done += data.len() as u64;
        progress.update(done, 0);
        Ok(())
    };
    while let Some((index, frame)) = reader.next_frame().with_context(|| name.clone())? {
        let pending = match &mut decoder {
            Decoder::Plain => Pending::Ready(container::decode_frame(&header, index, &frame, None)),
            Decoder::Legacy(l) => Pending::Ready(l.decode(&header, index, &frame)),
            Decoder::Pool(pool) => match container::check_frame(&header, index, &frame) {
                Ok(Codec::Llm) => Pending::Decoding(index, pool.submit_decode(frame)),
                Ok(_) => Pending::Ready(container::decode_frame(&header, index, &frame, None)),
                Err(e) => Pending::Ready(Err(e)),
            },
        };
        in_flight.push_back(pending);
        while in_flight.len() >= window {
            let p = in_flight.pop_front().expect("not empty");
            finish_one(p, &mut out)?;
        }
    }
    while let Some(p) = in_flight.pop_front() {
        finish_one(p, &mut out)?;
    }
    progress.finish();
    if let Decoder::Legacy(l) = &decoder {
        if let Some(t) = l.threads() {
            log::info!("version 1 file decoded with {t} llama.cpp threads; compress it again to make it decode anywhere");
        }
    }
    out.commit()
}
