//! The language model as a [`ProbabilityModel`]: llama.cpp through `llama-cpp-2`.
//!
//! Determinism decides everything here (see DESIGN.md, measured on these machines):
//! llama.cpp gives bit-identical logits for the same model, backend and offload only when
//! tokens are fed one per `decode` call from a fresh KV state. Prefill of a whole segment
//! in one batch gives different logits, so the encoder never uses it: encoder and decoder
//! run exactly the same sequence of single-token steps. Even so, callers verify each
//! encoded segment by decoding it again ([`super::segment`]).

use super::coder::{CoderError, Distribution, ProbabilityModel};
use super::fingerprint::Fingerprint;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} not found. Fetch the default model with `scripts/fetch-model.sh`, or pass --model PATH / set LLMFS_MODEL")]
    NotFound { path: PathBuf },
    #[error("cannot read model file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF model llama.cpp can load")]
    NotGguf { path: PathBuf },
    #[error("llama.cpp: {0}")]
    Llama(String),
}

/// Where the probabilities are computed. Recorded in every container: logits, and so
/// the coded bits, are reproducible only on the same backend and offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu = 0,
    Cuda = 1,
    Metal = 2,
    Vulkan = 3,
}

impl Backend {
    /// The backend this build of llmfs computes with.
    pub fn compiled() -> Backend {
        if cfg!(feature = "cuda") {
            Backend::Cuda
        } else if cfg!(feature = "metal") {
            Backend::Metal
        } else if cfg!(feature = "vulkan") {
            Backend::Vulkan
        } else {
            Backend::Cpu
        }
    }

    pub fn from_bits(b: u8) -> Backend {
        match b & 3 {
            1 => Backend::Cuda,
            2 => Backend::Metal,
            3 => Backend::Vulkan,
            _ => Backend::Cpu,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
            Backend::Vulkan => "vulkan",
        }
    }
}

/// How to load a model: validated by the CLI, never read from the environment here.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub path: PathBuf,
    /// Layers offloaded to the GPU (0: CPU only).
    pub gpu_layers: u32,
    /// llama.cpp threads; `None` uses every available core.
    pub threads: Option<u32>,
}

/// The process-wide llama.cpp backend: it may be initialised only once.
fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::Llama(e.clone()))
}

/// A loaded GGUF model with what coding needs precomputed: its fingerprint and the
/// bytes of every token.
pub struct LlmModel {
    model: LlamaModel,
    fingerprint: Fingerprint,
    gpu_layers: u32,
    threads: i32,
    /// The token that starts every segment's context.
    start: LlamaToken,
    /// The bytes each token stands for, indexed by token id.
    pieces: Vec<Vec<u8>>,
    n_ctx_train: u32,
}

impl LlmModel {
    pub fn load(config: &ModelConfig) -> Result<LlmModel, ModelError> {
        let path = &config.path;
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::NotFound { path: path.clone() },
            _ => ModelError::Unreadable {
                path: path.clone(),
                source: e,
            },
        })?;
        if !meta.is_file() {
            return Err(ModelError::Unreadable {
                path: path.clone(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        check_gguf_magic(path)?;
        let fingerprint = Fingerprint::of_file(path).map_err(|e| ModelError::Unreadable {
            path: path.clone(),
            source: e,
        })?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        let model = LlamaModel::load_from_file(backend()?, path, &params)
            .map_err(|_| ModelError::NotGguf { path: path.clone() })?;
        let n_vocab = model.n_vocab().max(0) as usize;
        let pieces: Vec<Vec<u8>> = (0..n_vocab)
            .map(|t| {
                model
                    .vocab()
                    .token_to_piece(LlamaToken(t as i32), false, None)
            })
            .collect();
        let vocab = model.vocab();
        let start = [vocab.bos(), vocab.eos()]
            .into_iter()
            .find(|t| (0..n_vocab as i32).contains(&t.0))
            .unwrap_or(LlamaToken(0));
        let threads = config
            .threads
            .map(|t| t as i32)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
        let n_ctx_train = model.n_ctx_train();
        Ok(LlmModel {
            model,
            fingerprint,
            gpu_layers: config.gpu_layers,
            threads,
            start,
            pieces,
            n_ctx_train,
        })
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn backend(&self) -> Backend {
        Backend::compiled()
    }

    pub fn gpu_layers(&self) -> u32 {
        self.gpu_layers
    }

    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// A human-readable name: the GGUF's `general.name`, or "unnamed".
    pub fn name(&self) -> String {
        self.model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "unnamed".into())
    }

    /// The bytes of `token`, empty for tokens that stand for no text.
    pub fn piece(&self, token: u32) -> &[u8] {
        self.pieces.get(token as usize).map_or(&[], Vec::as_slice)
    }

    /// Tokenizes `text` into token ids if, and only if, the tokens spell exactly `text`
    /// again, piece by piece. Otherwise the text cannot be LLM-coded.
    pub fn tokenize_exact(&self, text: &str) -> Option<Vec<u32>> {
        let tokens = self.model.vocab().tokenize(text.as_bytes(), false, false);
        let mut pos = 0;
        let mut ids = Vec::with_capacity(tokens.len());
        for t in tokens {
            let piece = self.piece(t.0 as u32);
            if piece.is_empty() || !text.as_bytes()[pos..].starts_with(piece) {
                return None;
            }
            pos += piece.len();
            ids.push(t.0 as u32);
        }
        (pos == text.len()).then_some(ids)
    }

    /// A context able to code segments of up to `max_tokens` tokens.
    pub fn session(&self, max_tokens: usize) -> Result<LlmSession<'_>, ModelError> {
        // The context length does not change the logits (measured), so size it to the
        // longest segment rather than the model's training length.
        let n_ctx = (max_tokens + 2)
            .min(self.n_ctx_train.max(64) as usize)
            .max(16) as u32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| ModelError::Llama(e.to_string()))?;
        Ok(LlmSession {
            model: self,
            ctx,
            batch: LlamaBatch::new(1, 1),
            n_ctx: n_ctx as usize,
            pos: 0,
            weights: vec![0.0; self.n_vocab()],
            weight_sum: 0.0,
            dist: Distribution::default(),
            fresh: false,
            stats: SessionStats::default(),
            live_steps: Arc::new(AtomicU64::new(0)),
        })
    }
}

fn check_gguf_magic(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| ModelError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        })?;
    if &magic != b"GGUF" {
        return Err(ModelError::NotGguf {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Time and information spent by a session, for `llmfs bench`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Tokens evaluated by llama.cpp (one `decode` call each).
    pub steps: u64,
    /// Wall time inside llama.cpp's `decode`.
    pub llama_time: Duration,
    /// Wall time turning logits into frequency tables.
    pub table_time: Duration,
    /// Model cross-entropy of the coded tokens, in bits, under the float probabilities.
    pub cross_entropy_bits: f64,
}

/// One llama.cpp context coding one segment at a time, each from a fresh KV state.
pub struct LlmSession<'m> {
    model: &'m LlmModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
    /// Position of the next token fed to the context.
    pos: i32,
    /// exp(logit - max) per token: the one float softmax, unnormalised.
    weights: Vec<f32>,
    weight_sum: f64,
    dist: Distribution,
    /// Whether `dist` matches the current logits.
    fresh: bool,
    pub stats: SessionStats,
    /// `stats.steps`, readable from another thread while a segment is being coded.
    live_steps: Arc<AtomicU64>,
}

impl<'m> LlmSession<'m> {
    /// A counter of model steps that a progress display may read from another thread.
    pub fn live_steps(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.live_steps)
    }

    pub fn model(&self) -> &'m LlmModel {
        self.model
    }

    /// The most tokens one segment may have in this context.
    pub fn max_tokens(&self) -> usize {
        self.n_ctx - 1
    }

    /// Starts a new segment: empties the KV cache and feeds the start token.
    pub fn reset(&mut self) -> Result<(), CoderError> {
        self.ctx.clear_kv_cache();
        self.pos = 0;
        self.step(self.model.start)
    }

    fn step(&mut self, token: LlamaToken) -> Result<(), CoderError> {
        if self.pos as usize >= self.n_ctx {
            return Err(CoderError::Model(format!(
                "segment longer than the context of {} tokens",
                self.n_ctx
            )));
        }
        let t0 = Instant::now();
        self.batch.clear();
        self.batch
            .add(token, self.pos, &[0], true)
            .map_err(|e| CoderError::Model(e.to_string()))?;
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| CoderError::Model(e.to_string()))?;
        self.pos += 1;
        self.fresh = false;
        self.stats.steps += 1;
        self.live_steps.store(self.stats.steps, Ordering::Relaxed);
        self.stats.llama_time += t0.elapsed();
        Ok(())
    }
}

impl ProbabilityModel for LlmSession<'_> {
    fn distribution(&mut self) -> Result<&Distribution, CoderError> {
        if !self.fresh {
            let t0 = Instant::now();
            let logits = self.ctx.get_logits_ith(0);
            if logits.len() != self.weights.len() {
                return Err(CoderError::Model(format!(
                    "{} logits for a vocabulary of {}",
                    logits.len(),
                    self.weights.len()
                )));
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for (w, &l) in self.weights.iter_mut().zip(logits) {
                *w = (l - max).exp();
                sum += f64::from(*w);
            }
            self.weight_sum = sum;
            self.dist.set_from_weights(&self.weights)?;
            self.fresh = true;
            self.stats.table_time += t0.elapsed();
        }
        Ok(&self.dist)
    }

    fn push(&mut self, symbol: u32) -> Result<(), CoderError> {
        if symbol as usize >= self.model.n_vocab() {
            return Err(CoderError::SymbolOutOfRange(symbol));
        }
        self.step(LlamaToken(symbol as i32))
    }

    fn coded(&mut self, symbol: u32) {
        if let Some(&w) = self.weights.get(symbol as usize) {
            let p = f64::from(w) / self.weight_sum;
            self.stats.cross_entropy_bits -= if p > 0.0 { p.log2() } else { -126.0 };
        }
    }
}
