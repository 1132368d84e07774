//! A generator of LLM service logs: fresh JSONL completions for the archive benchmark.
//!
//! ```sh
//! cargo run --release --example gen_log -- --model MODEL.gguf --bytes 600K --seed 1 -o log.jsonl
//! ```
//!
//! It completes the prompts of `tests/corpus/prompts.txt` in turn, each request with its
//! own sampler seed, so that no completion repeats another: repeating a small corpus would
//! let gzip, xz and zstd exploit repetition across the file and flatter them. Records use
//! the corpus's schema and generation settings (`tests/corpus/README.md`): the model's own
//! chat template, repeat penalty 1.1 over the last 64 tokens, top-k 40, top-p 0.95,
//! temperature 0.8, at most 450 new tokens. It stops after the record that brings the
//! file to `--bytes`.
//!
//! Deterministic for a given seed, model, thread count and machine (the same seed gave
//! other completions with 1 and 2 threads here). Every request starts from a fresh
//! context, so a run that was interrupted continues from its `OUT.partial` file and
//! produces the same bytes, given the same thread count. The finished file is renamed
//! into place, so `OUT` existing means it is complete.

use anyhow::{bail, Context, Result};
use clap::Parser;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Instant;

const TEMPERATURE: f32 = 0.8;
const TOP_K: i32 = 40;
const TOP_P: f32 = 0.95;
const REPEAT_PENALTY: f32 = 1.1;
const REPEAT_LAST_N: i32 = 64;

#[derive(Parser)]
#[command(about = "Generate a JSONL log of LLM completions (a benchmark input)")]
struct Args {
    /// GGUF model that writes the completions.
    #[arg(long)]
    model: PathBuf,
    /// Size to reach, e.g. 600K or 1M (K = 1024).
    #[arg(long, value_parser = parse_size)]
    bytes: u64,
    /// Base seed: each request's sampler seed is derived from it and the request number.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (written as OUT.partial, renamed when complete).
    #[arg(short, long)]
    output: PathBuf,
    /// Prompts, one per line, used in turn.
    #[arg(long, default_value = "tests/corpus/prompts.txt")]
    prompts: PathBuf,
    /// llama.cpp threads (default: every core).
    #[arg(long)]
    threads: Option<i32>,
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 450)]
    max_tokens: usize,
    /// The "model" field of every record (default: the GGUF's file name without .gguf).
    #[arg(long)]
    model_name: Option<String>,
    /// First number of the request ids (req-BASE-0000, req-BASE-0001, ...).
    #[arg(long, default_value_t = 2000)]
    id_base: u32,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("not a size: {s:?} (examples: 600K, 1M, 65536)"))
}

/// The sampler seed of request `index`: a SplitMix64 step, so that neighbouring base seeds
/// do not share request seeds shifted by one.
fn request_seed(base: u64, index: u64) -> u32 {
    let mut z = base
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

struct Generator<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    template: LlamaChatTemplate,
    n_ctx: usize,
    max_tokens: usize,
}

struct Completion {
    text: String,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Generator<'_> {
    fn complete(&mut self, prompt: &str, seed: u32) -> Result<Completion> {
        let chat = [LlamaChatMessage::new("user".into(), prompt.into())?];
        let formatted = self
            .model
            .apply_chat_template(&self.template, &chat, true)?;
        let vocab = self.model.vocab();
        let prompt_ids = vocab.tokenize(formatted.as_bytes(), false, true);
        if prompt_ids.len() + self.max_tokens > self.n_ctx {
            bail!(
                "prompt of {} tokens does not fit the context",
                prompt_ids.len()
            );
        }
        self.ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(self.n_ctx, 1);
        let last = prompt_ids.len() as i32 - 1;
        for (i, &t) in prompt_ids.iter().enumerate() {
            batch.add(t, i as i32, &[0], i as i32 == last)?;
        }
        self.ctx.decode(&mut batch)?;

        let mut sampler = LlamaSampler::chain_simple([
            LlamaSampler::penalties(
                self.model.n_vocab(),
                REPEAT_LAST_N,
                REPEAT_PENALTY,
                0.0,
                0.0,
            ),
            LlamaSampler::top_k(TOP_K),
            LlamaSampler::top_p(TOP_P, 1),
            LlamaSampler::temp(TEMPERATURE),
            LlamaSampler::dist(seed),
        ]);
        let mut bytes = Vec::new();
        let mut generated = 0;
        let mut pos = prompt_ids.len() as i32;
        let mut logits_at = batch.n_tokens() - 1;
        while generated < self.max_tokens {
            // `sample` also accepts the token into the chain (the repeat penalty's history).
            let token: LlamaToken = sampler.sample(&self.ctx, logits_at);
            if vocab.is_eog(token) {
                break;
            }
            bytes.extend(vocab.token_to_piece(token, false, None));
            generated += 1;
            batch.clear();
            batch.add(token, pos, &[0], true)?;
            self.ctx.decode(&mut batch)?;
            pos += 1;
            logits_at = 0;
        }
        Ok(Completion {
            // A completion cut at the token limit may end inside a UTF-8 character.
            text: String::from_utf8_lossy(&bytes).into_owned(),
            prompt_tokens: prompt_ids.len(),
            completion_tokens: generated,
        })
    }
}

/// Keeps the complete records of an interrupted run and says how many there are.
fn resume(partial: &Path) -> Result<u64> {
    let Ok(file) = File::open(partial) else {
        return Ok(0);
    };
    let mut good_len = 0u64;
    let mut records = 0u64;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if serde_json::from_slice::<serde_json::Value>(&line).is_err() {
            break;
        }
        good_len += line.len() as u64 + 1;
        records += 1;
    }
    OpenOptions::new()
        .write(true)
        .open(partial)?
        .set_len(good_len)?;
    Ok(records)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let prompts: Vec<String> = std::fs::read_to_string(&args.prompts)
        .with_context(|| format!("reading {}", args.prompts.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        bail!("{} has no prompts", args.prompts.display());
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));

    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    // The corpus names its model by the GGUF file ("SmolLM2-135M-Instruct.Q4_1"); the
    // GGUF's own general.name is a training-run label, the fallback.
    let model_name = args
        .model_name
        .clone()
        .or_else(|| {
            args.model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .or_else(|| model.meta_val_str("general.name").ok())
        .unwrap_or_else(|| "unnamed".into());
    let template = model
        .chat_template(None)
        .context("the model has no built-in chat template")?;
    // Room for the longest prompt (under 40 tokens) and the completion.
    let n_ctx = (args.max_tokens + 62).min(model.n_ctx_train() as usize);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx as u32))
        .with_n_batch(n_ctx as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = model.new_context(&backend, params)?;
    let mut gen = Generator {
        model: &model,
        ctx,
        template,
        n_ctx,
        max_tokens: args.max_tokens,
    };

    let mut partial = args.output.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut index = resume(&partial)?;
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    let mut size = out.metadata()?.len();
    if index > 0 {
        eprintln!(
            "gen_log: continuing {} after {index} records ({size} bytes)",
            partial.display()
        );
    }
    eprintln!(
        "gen_log: {model_name}, {threads} threads, seed {}, target {} bytes -> {}",
        args.seed,
        args.bytes,
        args.output.display()
    );
    let t0 = Instant::now();
    let (mut tokens, start_size) = (0usize, size);
    while size < args.bytes {
        let prompt = &prompts[(index % prompts.len() as u64) as usize];
        let c = gen.complete(prompt, request_seed(args.seed, index))?;
        tokens += c.completion_tokens;
        let line = format!(
            "{{\"id\":\"req-{}-{index:04}\",\"model\":{},\"temperature\":{TEMPERATURE},\"prompt\":{},\"completion\":{},\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{}}}}}\n",
            args.id_base,
            serde_json::to_string(&model_name)?,
            serde_json::to_string(prompt)?,
            serde_json::to_string(&c.text)?,
            c.prompt_tokens,
            c.completion_tokens,
        );
        out.write_all(line.as_bytes())?;
        size += line.len() as u64;
        index += 1;
        let secs = t0.elapsed().as_secs_f64();
        let rate = (size - start_size) as f64 / secs;
        eprintln!(
            "gen_log: {index} records, {size}/{} bytes ({:.0}%), {:.0} tokens/s, ETA {:.0} s",
            args.bytes,
            100.0 * size as f64 / args.bytes as f64,
            tokens as f64 / secs,
            args.bytes.saturating_sub(size) as f64 / rate
        );
    }
    out.sync_all()?;
    drop(out);
    std::fs::rename(&partial, &args.output)?;
    eprintln!(
        "gen_log: wrote {} ({size} bytes, {index} records)",
        args.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("600K"), Ok(600 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("K").is_err());
    }

    #[test]
    fn request_seeds_differ() {
        let seeds: std::collections::HashSet<u32> = (0..1000).map(|i| request_seed(1, i)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(request_seed(1, 1), request_seed(2, 0));
    }
}
