//! `llmfs bench`: compression ratio and speed of the LLM codec against gzip, xz and zstd,
//! printed as markdown tables, and with `--svg` drawn as a chart ([`llmfs::chart`]).
//! Every ratio is measured in-process on the given files; every result is decoded again
//! and compared before it is reported, and every LLM result decoded once more with
//! another thread count to show that the code does not depend on it.

use super::compress::parse_primer;
use super::model::{parse_segment_size, ModelArgs};
use anyhow::{bail, ensure, Context};
use clap::Args;
use llmfs::chart::{self, CodecFigures, Figures};
use llmfs::codec::container::{self, Container};
use llmfs::codec::llm::LlmModel;
use llmfs::codec::primer::{Coding, Primer};
use llmfs::codec::profile::CodecProfile;
use llmfs::codec::segment::SegmentCoder;
use llmfs::codec::TokenModel;
use llmfs::frame::Codec;
use llmfs::tier::Pool;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Segment sizes to measure, comma separated (e.g. 1K,4K,16K).
    #[arg(long, default_value = "4K", value_delimiter = ',', value_parser = parse_segment_size)]
    segment_size: Vec<usize>,
    /// Also decode every file with this many llama.cpp threads and report whether that
    /// gives the same bytes [default: 1, or 2 when --threads is 1]; 0 skips the check.
    #[arg(long, value_name = "N")]
    other_threads: Option<u32>,
    /// Primers to measure, comma separated: `builtin`, `none`, or the path of a text
    /// file to try as a primer (e.g. none,builtin,my-primer.txt). Files coded with a
    /// primer from a file decode only with that file, so only `bench` takes one.
    #[arg(long, default_value = "builtin", value_delimiter = ',', value_parser = parse_bench_primer)]
    primer: Vec<Coding>,
    /// Instead of coding: measure what mixing the model with cheap adaptive models
    /// (token n-grams, a match model) would save, per token, at the first segment size
    /// and primer.
    #[arg(long)]
    probe_mix: bool,
    /// Also draw the figures as an SVG chart into FILE: the ratio of each codec on each
    /// file and on all of them, and each codec's compress and decompress throughput.
    #[arg(long, value_name = "FILE", conflicts_with = "probe_mix")]
    svg: Option<PathBuf>,
    /// Files to compress.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One file at one segment size.
#[derive(Default, Clone)]
struct Row {
    name: String,
    /// The primer's name (`none` without one).
    primer: String,
    segment_size: usize,
    plain: usize,
    packed: usize,
    data: usize,
    gzip: usize,
    xz: usize,
    zstd: usize,
    /// gzip, xz and zstd (in that order): the time to compress and to decompress the
    /// file once.
    classic_enc: [Duration; 3],
    classic_dec: [Duration; 3],
    segments: [usize; 3],
    tokens: u64,
    ce_bits: f64,
    code_bits: f64,
    enc: Duration,
    enc_llama: Duration,
    enc_steps: u64,
    dec: Duration,
    dec_llama: Duration,
    dec_tokens: u64,
    /// Files decoded with another thread count, and how many of them gave the same bytes.
    cross_checked: usize,
    cross_identical: usize,
    /// With --lanes: the pool's wall time to encode and decode, and whether its file was
    /// byte-identical to the one-stream file.
    pool_enc: Duration,
    pool_dec: Duration,
    pool_checked: usize,
    pool_identical: usize,
    /// The container written on one stream.
    file: Vec<u8>,
}

impl Row {
    fn add(&mut self, o: &Row) {
        self.plain += o.plain;
        self.packed += o.packed;
        self.data += o.data;
        self.gzip += o.gzip;
        self.xz += o.xz;
        self.zstd += o.zstd;
        for i in 0..3 {
            self.classic_enc[i] += o.classic_enc[i];
            self.classic_dec[i] += o.classic_dec[i];
        }
        for i in 0..3 {
            self.segments[i] += o.segments[i];
        }
        self.tokens += o.tokens;
        self.ce_bits += o.ce_bits;
        self.code_bits += o.code_bits;
        self.enc += o.enc;
        self.enc_llama += o.enc_llama;
        self.enc_steps += o.enc_steps;
        self.dec += o.dec;
        self.dec_llama += o.dec_llama;
        self.dec_tokens += o.dec_tokens;
        self.cross_checked += o.cross_checked;
        self.cross_identical += o.cross_identical;
        self.pool_enc += o.pool_enc;
        self.pool_dec += o.pool_dec;
        self.pool_checked += o.pool_checked;
        self.pool_identical += o.pool_identical;
    }
}

/// A `--primer` of `bench`: a name, or a file whose text is tried as a primer.
fn parse_bench_primer(s: &str) -> Result<Coding, String> {
    let path = std::path::Path::new(s);
    if !path.is_file() {
        return parse_primer(s);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{s}: {e}"))?;
    let name = path
        .file_name()
        .map_or_else(|| s.to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Coding {
        coder_version: llmfs::codec::profile::CODER_VERSION,
        primer: Some(Arc::new(Primer::new(&name, text))),
    })
}

fn ratio(plain: usize, packed: usize) -> f64 {
    plain as f64 / packed.max(1) as f64
}

fn per_sec(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

/// The baselines, as `bench` names them in its tables and chart.
const CLASSIC: [&str; 3] = ["gzip -9", "xz -9", "zstd -19"];

fn gzip9(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data)?;
    e.finish()
}

fn gunzip(packed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(packed).read_to_end(&mut out)?;
    Ok(out)
}

fn xz9(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 9);
    e.write_all(data)?;
    e.finish()
}

fn unxz(packed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    xz2::read::XzDecoder::new(packed).read_to_end(&mut out)?;
    Ok(out)
}

fn zstd19(data: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(data, 19)
}

fn unzstd(packed: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::decode_all(packed)
}

/// Runs `f` again and again for at least 50 ms (at most 1,000 times, at least once), so
/// that a few KiB give a time above the clock's noise: its last result and the mean time
/// of one run.
fn time_per_run<T>(mut f: impl FnMut() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let mut runs = 0u32;
    loop {
        let out = f();
        runs += 1;
        let took = t0.elapsed();
        if took >= Duration::from_millis(50) || runs == 1000 {
            return (out, took / runs);
        }
    }
}

/// gzip -9, xz -9 and zstd -19 on `data`: each one's size, time to compress and time to
/// decompress, checked to give `data` back.
fn classic(data: &[u8]) -> anyhow::Result<[(usize, Duration, Duration); 3]> {
    type Coder = fn(&[u8]) -> std::io::Result<Vec<u8>>;
    let coders: [(Coder, Coder); 3] = [(gzip9, gunzip), (xz9, unxz), (zstd19, unzstd)];
    let mut out = [(0, Duration::ZERO, Duration::ZERO); 3];
    for (i, (enc, dec)) in coders.into_iter().enumerate() {
        let (packed, enc_time) = time_per_run(|| enc(data));
        let packed = packed.with_context(|| CLASSIC[i])?;
        let (plain, dec_time) = time_per_run(|| dec(&packed));
        ensure!(
            plain.with_context(|| CLASSIC[i])? == data,
            "{} did not give back the original bytes",
            CLASSIC[i]
        );
        out[i] = (packed.len(), enc_time, dec_time);
    }
    Ok(out)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Before minutes of coding, not after.
    if let Some(svg) = &args.svg {
        let dir = match svg.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() || svg.is_dir() {
            bail!("--svg {}: not a file in a directory", svg.display());
        }
    }
    let model = args.model.load()?;
    eprintln!(
        "model: {} ({}), {} llama.cpp threads; codec profile: {}",
        model.name(),
        args.model.config().path.display(),
        model.threads(),
        model.profile_for(args.primer.first().unwrap_or(&Coding::default()))
    );
    if args.probe_mix {
        let seg = args.segment_size.first().copied().unwrap_or(4096);
        let coding = args.primer.first().cloned().unwrap_or_default();
        return super::probe::run(&model, &coding, &args.files, seg);
    }
    let other_threads = args
        .other_threads
        .unwrap_or(if model.threads() == 1 { 2 } else { 1 });
    let mut rows = Vec::new();
    for coding in &args.primer {
        let primer_name = coding
            .primer
            .as_ref()
            .map_or("none", |p| p.name())
            .to_string();
        // With --lanes: the same files once more through a pool of lanes, timed, and its
        // files compared with the one-stream ones byte for byte.
        let pool = match args.model.lanes {
            Some(_) => {
                let max = args.segment_size.iter().copied().max().unwrap_or(4096);
                let (pool, _) = args.model.pool(coding, max, false)?;
                eprintln!("pool: {} lanes, {:?}", pool.lanes(), pool.config());
                Some(pool)
            }
            None => None,
        };
        for path in &args.files {
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            let classic = classic(&data).with_context(|| path.display().to_string())?;
            for &seg in &args.segment_size {
                let mut row = bench_one(&model, coding, &data, &name, seg, other_threads)?;
                (row.gzip, row.xz, row.zstd) = (classic[0].0, classic[1].0, classic[2].0);
                row.classic_enc = classic.map(|c| c.1);
                row.classic_dec = classic.map(|c| c.2);
                row.primer.clone_from(&primer_name);
                if let Some(pool) = &pool {
                    let (enc, dec, identical) =
                        pool_run(pool, &model.profile_for(coding), &data, seg, &row.file)?;
                    (row.pool_enc, row.pool_dec) = (enc, dec);
                    row.pool_checked = 1;
                    row.pool_identical = usize::from(identical);
                }
                eprintln!(
                    "{name} @ {seg} B segments, primer {primer_name}: {:.2}x",
                    ratio(row.plain, row.packed)
                );
                rows.push(row);
            }
        }
        if let Some(pool) = &pool {
            print_pool_table(&rows, &args.segment_size, pool, &primer_name);
        }
    }
    print_tables(&rows, &args.segment_size, model.threads(), other_threads);
    let model_file = args
        .model
        .config()
        .path
        .file_name()
        .map_or_else(|| model.name(), |n| n.to_string_lossy().into_owned());
    let figures = chart_figures(&rows, &args.segment_size, &model_file, model.threads());
    print_throughput(&figures);
    print_primer_table(&model, &args.primer)?;
    if let Some(svg) = &args.svg {
        chart::write(svg, &figures)?;
        eprintln!("chart: {}", svg.display());
    }
    Ok(())
}

/// `4096` as `4 KiB`.
fn size_name(n: usize) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// What the chart shows: every file and all of them together, gzip, xz and zstd, and the
/// LLM codec once per primer and segment size.
fn chart_figures(rows: &[Row], sizes: &[usize], model: &str, threads: u32) -> Figures {
    let all = with_totals(rows, sizes);
    let mut primers: Vec<&str> = Vec::new();
    for r in rows {
        if !primers.contains(&r.primer.as_str()) {
            primers.push(&r.primer);
        }
    }
    // The rows of one primer and segment size, the total last, files in bench's order.
    let of = |p: &str, seg: usize| -> Vec<&Row> {
        all.iter()
            .filter(|r| r.primer == p && r.segment_size == seg)
            .collect()
    };
    let (p0, s0) = (
        primers.first().copied().unwrap_or("none"),
        sizes.first().copied().unwrap_or(4096),
    );
    let first = of(p0, s0);
    let mut files: Vec<String> = first.iter().map(|r| r.name.clone()).collect();
    if let Some(last) = files.last_mut() {
        *last = "all files".into();
    }
    let total = first.last().copied().cloned().unwrap_or_default();
    let mut codecs: Vec<CodecFigures> = (0..3)
        .map(|i| {
            let size = |r: &Row| [r.gzip, r.xz, r.zstd][i];
            CodecFigures {
                name: CLASSIC[i].into(),
                ratios: first.iter().map(|r| ratio(r.plain, size(r))).collect(),
                encode_bps: per_sec(total.plain as f64, total.classic_enc[i]),
                decode_bps: per_sec(total.plain as f64, total.classic_dec[i]),
            }
        })
        .collect();
    for p in &primers {
        for &seg in sizes {
            let rows = of(p, seg);
            let total = rows.last().copied().cloned().unwrap_or_default();
            let mut name = format!("llmfs, primer {p}");
            if sizes.len() > 1 {
                name += &format!(", {}", size_name(seg));
            }
            codecs.push(CodecFigures {
                name,
                ratios: rows.iter().map(|r| ratio(r.plain, r.packed)).collect(),
                encode_bps: per_sec(total.plain as f64, total.enc),
                decode_bps: per_sec(total.plain as f64, total.dec),
            });
        }
    }
    let segments: Vec<String> = sizes.iter().map(|&s| size_name(s)).collect();
    Figures {
        title: "llmfs bench: the LLM codec against gzip, xz and zstd".into(),
        subtitle: format!(
            "{model}, {threads} llama.cpp thread{}, {} segments; {} file{}, {} bytes, each decoded and compared",
            if threads == 1 { "" } else { "s" },
            segments.join(", "),
            files.len().saturating_sub(1),
            if files.len() == 2 { "" } else { "s" },
            total.plain,
        ),
        files,
        codecs,
    }
}

/// The chart's second panel as a table: every codec's speed over all the files.
fn print_throughput(f: &Figures) {
    println!("\n### Throughput over all files\n");
    println!("gzip, xz and zstd: the mean of repeated runs (at least 50 ms of each) on each file; llmfs: one run, without verification.\n");
    println!("| codec | ratio | compress B/s | decompress B/s |");
    println!("| --- | ---: | ---: | ---: |");
    for c in &f.codecs {
        println!(
            "| {} | {:.2}x | {:.0} | {:.0} |",
            c.name,
            c.ratios.last().copied().unwrap_or(0.0),
            c.encode_bps,
            c.decode_bps
        );
    }
}

/// One file at one segment size under one coding, coded and decoded on one stream
/// (and decoded again with `other_threads`). The session's primer is computed before
/// the clock starts: a lane does it once, not per file ([`print_primer_table`]).
fn bench_one(
    model: &LlmModel,
    coding: &Coding,
    data: &[u8],
    name: &str,
    seg: usize,
    other_threads: u32,
) -> anyhow::Result<Row> {
    let mut session = model.session(coding, seg)?;
    session.reset()?;
    let mut coder = SegmentCoder::new(session, false);
    let (llama0, steps0) = (coder.stats().llama_time, coder.stats().steps);
    let t0 = Instant::now();
    let (packed, reports) = container::compress(data, seg, &mut coder, |_, _| {})?;
    let enc = t0.elapsed();
    let enc_llama = coder.stats().llama_time - llama0;
    let enc_steps = coder.stats().steps - steps0;
    let c = Container::parse(&packed)?;
    c.check_model(Some(&coder))?;
    let (llama_before, steps_before) = (coder.stats().llama_time, coder.stats().steps);
    let t1 = Instant::now();
    let plain = c.read_range(0, c.plain_len(), Some(&mut coder))?;
    let dec = t1.elapsed();
    ensure!(
        plain == data,
        "{name}: decoding did not give back the original bytes"
    );
    let (cross_checked, cross_identical) = if other_threads > 0 && c.needs_model() {
        let mut other = SegmentCoder::new(
            model.session_with_threads(coding, seg, other_threads)?,
            false,
        );
        let same = c
            .read_range(0, c.plain_len(), Some(&mut other))
            .is_ok_and(|p| p == data);
        eprintln!(
            "{name} @ {seg} B segments: decoding with {other_threads} threads {}",
            if same {
                "gave the same bytes"
            } else {
                "FAILED"
            }
        );
        (1, usize::from(same))
    } else {
        (0, 0)
    };
    let mut row = Row {
        name: name.into(),
        segment_size: seg,
        plain: data.len(),
        packed: packed.len(),
        enc,
        enc_llama,
        enc_steps,
        dec,
        dec_llama: coder.stats().llama_time - llama_before,
        dec_tokens: coder.stats().steps - steps_before,
        cross_checked,
        cross_identical,
        file: packed,
        ..Default::default()
    };
    for r in &reports {
        let i = match r.codec {
            Some(Codec::Llm) => 0,
            Some(Codec::Zstd) => 1,
            _ => 2,
        };
        row.segments[i] += 1;
        row.data += r.data_len;
        row.tokens += r.tokens as u64;
        row.ce_bits += r.cross_entropy_bits;
        row.code_bits += (r.code_len * 8) as f64;
    }
    Ok(row)
}

/// What each primer costs once per lane: its tokens, computed one per step.
fn print_primer_table(model: &LlmModel, codings: &[Coding]) -> anyhow::Result<()> {
    let primed: Vec<_> = codings
        .iter()
        .filter_map(|c| c.primer.as_ref().map(|p| (c, p)))
        .collect();
    if primed.is_empty() {
        return Ok(());
    }
    println!("\n### Primers\n");
    println!("| primer | bytes | tokens | computed once per lane in | tok/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (coding, p) in primed {
        let mut session = model.session(coding, 16)?;
        let t0 = Instant::now();
        session.reset()?;
        let took = t0.elapsed();
        let steps = session.stats().steps;
        println!(
            "| {} ({}) | {} | {} | {:.2} s | {:.1} |",
            p.name(),
            llmfs::codec::fingerprint::hex(&p.id()),
            p.text().len(),
            steps.saturating_sub(1),
            took.as_secs_f64(),
            per_sec(steps as f64, took)
        );
    }
    Ok(())
}

/// Encodes `data` through the pool (every segment at once), checks the file against the
/// one-stream `packed`, and decodes it through the pool: (encode time, decode time,
/// identical).
fn pool_run(
    pool: &Pool,
    profile: &CodecProfile,
    data: &[u8],
    seg: usize,
    packed: &[u8],
) -> anyhow::Result<(Duration, Duration, bool)> {
    let t0 = Instant::now();
    let (bytes, _) = container::compress_segments(data, seg, profile, |segments| {
        let tickets: Vec<_> = segments
            .iter()
            .map(|s| pool.submit_encode(Arc::new(s.to_vec().into()), true))
            .collect();
        tickets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.wait()
                    .map(|c| (c.frame, c.report))
                    .map_err(|e| (i, e.into()))
            })
            .collect()
    })?;
    let enc = t0.elapsed();
    let c = Container::parse(&bytes)?;
    let t1 = Instant::now();
    let tickets: Vec<_> = (0..c.segments())
        .map(|i| pool.submit_decode(c.frame(i).to_vec()))
        .collect();
    let mut plain = Vec::with_capacity(data.len());
    for t in tickets {
        plain.extend(t.wait()?.into_vec());
    }
    let dec = t1.elapsed();
    ensure!(
        plain == data,
        "the pool's decode did not give back the original bytes"
    );
    Ok((enc, dec, bytes == packed))
}

/// The rows, then a total per segment size and primer.
fn with_totals(rows: &[Row], sizes: &[usize]) -> Vec<Row> {
    let mut all = rows.to_vec();
    let mut primers: Vec<&str> = Vec::new();
    for r in rows {
        if !primers.contains(&r.primer.as_str()) {
            primers.push(&r.primer);
        }
    }
    for p in primers {
        for &seg in sizes {
            let mut total = Row {
                name: "**total**".into(),
                primer: p.into(),
                segment_size: seg,
                ..Default::default()
            };
            for r in rows
                .iter()
                .filter(|r| r.segment_size == seg && r.primer == p)
            {
                total.add(r);
            }
            all.push(total);
        }
    }
    all
}

fn print_pool_table(rows: &[Row], sizes: &[usize], pool: &Pool, primer: &str) {
    let c = pool.config();
    println!(
        "\n### Lanes: {} lanes of {} llama.cpp thread(s), against one stream of {} threads, primer {primer}\n",
        pool.lanes(),
        c.threads_per_lane,
        c.wide_threads.unwrap_or(c.threads_per_lane)
    );
    let rows: Vec<Row> = rows
        .iter()
        .filter(|r| r.primer == primer)
        .cloned()
        .collect();
    println!("| file | segment | encode B/s, one stream | encode B/s, lanes | speed-up | decode B/s, one stream | decode B/s, lanes | speed-up | file identical to one stream's |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let all = with_totals(&rows, sizes);
    for r in &all {
        let (e1, en) = (
            per_sec(r.plain as f64, r.enc),
            per_sec(r.plain as f64, r.pool_enc),
        );
        let (d1, dn) = (
            per_sec(r.plain as f64, r.dec),
            per_sec(r.plain as f64, r.pool_dec),
        );
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x | {} |",
            r.name,
            r.segment_size,
            e1,
            en,
            en / e1.max(1e-9),
            d1,
            dn,
            dn / d1.max(1e-9),
            if r.pool_identical == r.pool_checked {
                "yes"
            } else {
                "**NO**"
            }
        );
    }
}

fn print_tables(rows: &[Row], sizes: &[usize], threads: u32, other_threads: u32) {
    let all = with_totals(rows, sizes);
    println!("\n### Compression ratio\n");
    println!("| file | bytes | segment | primer | llmfs | gzip -9 | xz -9 | zstd -19 | bits/byte | segments llm/zstd/raw | format overhead | coded with {threads} threads, decodes with {other_threads} |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in &all {
        let cross = match (r.cross_checked, r.cross_identical) {
            (0, _) => "not checked".to_string(),
            (n, k) if n == k && n == 1 => "identical".to_string(),
            (n, k) if n == k => format!("identical ({n} of {n} files)"),
            (n, k) => format!("**DIFFERENT** ({} of {n} files)", n - k),
        };
        println!(
            "| {} | {} | {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.3} | {}/{}/{} | {} B ({:.1}%) | {} |",
            r.name,
            r.plain,
            r.segment_size,
            r.primer,
            ratio(r.plain, r.packed),
            ratio(r.plain, r.gzip),
            ratio(r.plain, r.xz),
            ratio(r.plain, r.zstd),
            (r.packed * 8) as f64 / r.plain.max(1) as f64,
            r.segments[0],
            r.segments[1],
            r.segments[2],
            r.packed - r.data,
            100.0 * (r.packed - r.data) as f64 / r.packed.max(1) as f64,
            cross,
        );
    }
    println!("\nFormat overhead: every byte of the container that is not coded data (header, segment table, frame headers with their CRCs, UTF-8 edge bytes).");
    println!("\n### Coding cost and speed\n");
    println!("Cross-entropy: the model's own bits for the LLM-coded tokens; spent: the range coder's output for them.\n");
    println!("| file | segment | primer | tokens | cross-entropy bits | bits spent | over | encode tok/s | encode B/s | decode tok/s | decode B/s | llama.cpp tok/s | llama.cpp share of encode / decode |");
    println!(
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &all {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:+.2}% | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1}% / {:.1}% |",
            r.name,
            r.segment_size,
            r.primer,
            r.tokens,
            r.ce_bits,
            r.code_bits,
            100.0 * (r.code_bits / r.ce_bits.max(1e-9) - 1.0),
            per_sec(r.tokens as f64, r.enc),
            per_sec(r.plain as f64, r.enc),
            per_sec(r.dec_tokens as f64, r.dec),
            per_sec(r.plain as f64, r.dec),
            per_sec((r.enc_steps + r.dec_tokens) as f64, r.enc_llama + r.dec_llama),
            100.0 * r.enc_llama.as_secs_f64() / r.enc.as_secs_f64().max(1e-9),
            100.0 * r.dec_llama.as_secs_f64() / r.dec.as_secs_f64().max(1e-9),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, primer: &str, plain: usize, packed: usize, enc_s: u64) -> Row {
        Row {
            name: name.into(),
            primer: primer.into(),
            segment_size: 4096,
            plain,
            packed,
            gzip: plain / 2,
            xz: plain / 3,
            zstd: plain / 4,
            classic_enc: [Duration::from_millis(1); 3],
            classic_dec: [Duration::from_micros(100); 3],
            enc: Duration::from_secs(enc_s),
            dec: Duration::from_secs(enc_s * 2),
            ..Default::default()
        }
    }

    #[test]
    fn the_chart_shows_each_file_the_total_and_each_primer() {
        let rows = [
            row("a.jsonl", "none", 4000, 400, 10),
            row("b.md", "none", 2000, 400, 10),
            row("a.jsonl", "builtin", 4000, 200, 20),
            row("b.md", "builtin", 2000, 500, 20),
        ];
        let f = chart_figures(&rows, &[4096], "m.gguf", 2);
        assert_eq!(f.files, ["a.jsonl", "b.md", "all files"]);
        let names: Vec<&str> = f.codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gzip -9",
                "xz -9",
                "zstd -19",
                "llmfs, primer none",
                "llmfs, primer builtin"
            ]
        );
        assert_eq!(f.codecs[0].ratios, [2.0, 2.0, 2.0]);
        assert_eq!(f.codecs[3].ratios, [10.0, 5.0, 7.5]);
        assert_eq!(f.codecs[4].ratios, [20.0, 4.0, 6000.0 / 700.0]);
        // 6,000 bytes in 20 s and 40 s; gzip's 2 ms and 0.2 ms.
        assert_eq!(f.codecs[3].encode_bps, 300.0);
        assert_eq!(f.codecs[3].decode_bps, 150.0);
        assert!((f.codecs[0].encode_bps - 3e6).abs() < 1.0);
        assert!((f.codecs[0].decode_bps - 3e7).abs() < 10.0);
        assert!(f
            .subtitle
            .contains("m.gguf, 2 llama.cpp threads, 4 KiB segments; 2 files, 6000 bytes"));
        chart::render(&f).unwrap();
    }

    #[test]
    fn the_baselines_give_the_bytes_back() {
        let data = b"the same few words, the same few words, again and again\n".repeat(40);
        for (i, (size, enc, dec)) in classic(&data).unwrap().into_iter().enumerate() {
            assert!(size < data.len() / 4, "{}: {size}", CLASSIC[i]);
            assert!(enc > Duration::ZERO && dec > Duration::ZERO);
        }
    }
}
