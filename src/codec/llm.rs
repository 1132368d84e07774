//! The language model as a [`TokenModel`]: llama.cpp through `llama-cpp-2`.
//!
//! Determinism decides everything here (see DESIGN.md, measured on these machines):
//! llama.cpp gives bit-identical logits for the same model, backend, offload and CPU
//! kernels only when tokens are fed one per `decode` call from a fresh KV state, and
//! only with flash attention disabled. Prefill of a whole segment in one batch gives
//! different logits, so the encoder never uses it: encoder and decoder run exactly the
//! same sequence of single-token steps. Flash attention on the CPU splits a long KV
//! range into one chunk per thread and merges the partial sums, so with it the logits
//! depend on the thread count (a file coded with 2 threads did not decode with 1 or 3);
//! without it, attention is computed row by row and the thread count, the context length
//! and the batch size do not change a bit (tested in `tests/cli.rs` and
//! `tests/codec.rs`). What the code still depends on is the [`CodecProfile`] each
//! session reports. Even so, callers verify each encoded segment by decoding it again
//! ([`super::segment`]).

use super::coder::{CoderError, Distribution, ProbabilityModel};
use super::fingerprint::Fingerprint;
use super::primer::Coding;
pub use super::profile::Backend;
use super::profile::{
    CodecProfile, Engine, KernelSet, ModelId, CODER_VERSION, LLAMA_CPP_SYS_VERSION,
};
use super::token_model::{SessionStats, TokenModel};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2::{
    llama_flash_attn_type, LLAMA_FLASH_ATTN_TYPE_AUTO, LLAMA_FLASH_ATTN_TYPE_DISABLED,
};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Why a model could not be loaded or a llama.cpp context made.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No file exists at `path`.
    #[error("model file {path} not found. Fetch the default model with `scripts/fetch-model.sh`, or pass --model PATH / set LLMFS_MODEL")]
    NotFound {
        /// The path the model was looked for at.
        path: PathBuf,
    },
    /// The model file exists but cannot be stat'ed, opened or read, or is not a regular
    /// file.
    #[error("cannot read model file {path}: {error}")]
    Unreadable {
        /// The model file.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The file does not start with the GGUF magic, or llama.cpp refused to load it.
    #[error("{path} is not a GGUF model llama.cpp can load")]
    NotGguf {
        /// The model file.
        path: PathBuf,
    },
    /// The file is 0 bytes long (typically an interrupted download).
    #[error("model file {path} is empty (0 bytes), an interrupted download perhaps: fetch it again with `scripts/fetch-model.sh`, or pass --model PATH / set LLMFS_MODEL")]
    Empty {
        /// The model file.
        path: PathBuf,
    },
    /// llama.cpp failed (backend initialisation, context creation), or a context cannot
    /// hold or exactly tokenize the primer; the message says which.
    #[error("llama.cpp: {0}")]
    Llama(String),
}

/// How to load a model: validated by the CLI, never read from the environment here.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The GGUF model file to load.
    pub path: PathBuf,
    /// Layers offloaded to the GPU (0: CPU only).
    pub gpu_layers: u32,
    /// llama.cpp threads; `None` uses every available core. With this coder version
    /// the thread count changes speed only, never the code.
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

/// The CPU kernels this build's ggml was compiled with, from `llama_print_system_info`.
fn kernel_set() -> &'static KernelSet {
    static KERNELS: OnceLock<KernelSet> = OnceLock::new();
    KERNELS.get_or_init(|| {
        // SAFETY: llama_print_system_info takes no arguments and returns a pointer to a
        // NUL-terminated string in a static buffer, valid until its next call; the
        // OnceLock makes this the only call, and the text is copied at once.
        let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) }
            .to_string_lossy()
            .into_owned();
        log::debug!("llama.cpp system info: {info}");
        KernelSet::from_system_info(std::env::consts::ARCH, &info)
    })
}

/// llama.cpp makes contexts by mutating the model (`llama-cpp-2` calls creating them in
/// parallel unsound), so every context of the process is created under this lock.
static NEW_CONTEXT: Mutex<()> = Mutex::new(());

/// A loaded GGUF model with what coding needs precomputed: its fingerprint, its codec
/// profile and the bytes of every token.
pub struct LlmModel {
    model: LlamaModel,
    fingerprint: Fingerprint,
    profile: CodecProfile,
    gpu_layers: u32,
    threads: u32,
    /// The token that starts every segment's context.
    start: LlamaToken,
    /// The bytes each token stands for, indexed by token id.
    pieces: Vec<Vec<u8>>,
    n_ctx_train: u32,
}

impl LlmModel {
    /// Loads the model at `config.path`: checks that it is a nonempty GGUF file,
    /// fingerprints it (hashing it unless its sidecar cache is valid), loads it into
    /// llama.cpp with `config.gpu_layers` layers offloaded and precomputes every token's
    /// bytes.
    pub fn load(config: &ModelConfig) -> Result<LlmModel, ModelError> {
        let path = &config.path;
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::NotFound { path: path.clone() },
            _ => ModelError::Unreadable {
                path: path.clone(),
                error: e,
            },
        })?;
        if !meta.is_file() {
            return Err(ModelError::Unreadable {
                path: path.clone(),
                error: std::io::Error::other("not a regular file"),
            });
        }
        if meta.len() == 0 {
            return Err(ModelError::Empty { path: path.clone() });
        }
        check_gguf_magic(path)?;
        let fingerprint = Fingerprint::of_file(path).map_err(|e| ModelError::Unreadable {
            path: path.clone(),
            error: e,
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
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
        let n_ctx_train = model.n_ctx_train();
        let name = model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "unnamed".into());
        let profile = CodecProfile {
            coder_version: CODER_VERSION,
            engine: Engine::LlamaCpp,
            build: LLAMA_CPP_SYS_VERSION.into(),
            backend: Backend::compiled(),
            gpu_layers: config.gpu_layers,
            kernels: kernel_set().clone(),
            model: ModelId::new(&fingerprint, &name),
            primer: None,
        };
        Ok(LlmModel {
            model,
            fingerprint,
            profile,
            gpu_layers: config.gpu_layers,
            threads,
            start,
            pieces,
            n_ctx_train,
        })
    }

    /// The SHA-256 of the model file.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// What the code of this model's sessions depends on, in this build, without the
    /// coding ([`profile_for`](Self::profile_for) adds it).
    pub fn profile(&self) -> &CodecProfile {
        &self.profile
    }

    /// The llama.cpp backend this build computes with ([`Backend::compiled`]).
    pub fn backend(&self) -> Backend {
        Backend::compiled()
    }

    /// Layers offloaded to the GPU, as configured (0: CPU only).
    pub fn gpu_layers(&self) -> u32 {
        self.gpu_layers
    }

    /// The llama.cpp threads a session uses.
    pub fn threads(&self) -> u32 {
        self.threads
    }

    /// Number of tokens in the model's vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// A human-readable name: the GGUF's `general.name`, or "unnamed".
    pub fn name(&self) -> String {
        self.profile.model.name.clone()
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

    /// A context able to code segments of up to `max_tokens` tokens under `coding` (coder
    /// version and primer): flash attention disabled, so the code depends on neither the
    /// thread count nor the context length.
    pub fn session(
        &self,
        coding: &Coding,
        max_tokens: usize,
    ) -> Result<LlmSession<'_>, ModelError> {
        self.session_with_threads(coding, max_tokens, self.threads)
    }

    /// [`session`](Self::session) with `threads` llama.cpp threads instead of the
    /// model's; the code is the same.
    pub fn session_with_threads(
        &self,
        coding: &Coding,
        max_tokens: usize,
        threads: u32,
    ) -> Result<LlmSession<'_>, ModelError> {
        let primer = self.primer_tokens(coding)?;
        let n_ctx = self.n_ctx_for(max_tokens + primer.as_ref().map_or(0, Vec::len));
        self.session_with(
            n_ctx,
            threads,
            LLAMA_FLASH_ATTN_TYPE_DISABLED,
            self.profile_for(coding),
            primer,
        )
    }

    /// The profile of sessions coding under `coding`.
    pub fn profile_for(&self, coding: &Coding) -> CodecProfile {
        let mut p = self.profile.clone();
        p.coder_version = coding.coder_version;
        p.primer = coding.primer_id();
        p
    }

    /// The primer's tokens, which must spell it exactly.
    fn primer_tokens(&self, coding: &Coding) -> Result<Option<Vec<u32>>, ModelError> {
        let Some(primer) = &coding.primer else {
            return Ok(None);
        };
        match self.tokenize_exact(primer.text()) {
            Some(t) => Ok(Some(t)),
            None => Err(ModelError::Llama(format!(
                "the primer {} does not tokenize exactly with this model",
                primer.name()
            ))),
        }
    }

    /// A context that decodes what the first container format (coder version 1) wrote:
    /// flash attention "auto" (on, for the CPU), the context sized as that version sized
    /// it for `segment_size`, and `threads` threads. Its code depends on the thread count
    /// of the machine that wrote it, which that format did not record.
    pub fn legacy_session(
        &self,
        segment_size: usize,
        threads: u32,
    ) -> Result<LlmSession<'_>, ModelError> {
        let mut profile = self.profile.clone();
        profile.coder_version = 1;
        let max_tokens = segment_size.max(super::DEFAULT_SEGMENT_SIZE);
        self.session_with(
            self.n_ctx_for(max_tokens),
            threads,
            LLAMA_FLASH_ATTN_TYPE_AUTO,
            profile,
            None,
        )
    }

    /// A context of exactly `n_ctx` cells (the primer's included); for tests that check
    /// the code does not depend on it.
    pub fn session_with_n_ctx(
        &self,
        coding: &Coding,
        n_ctx: u32,
    ) -> Result<LlmSession<'_>, ModelError> {
        self.session_with(
            n_ctx,
            self.threads,
            LLAMA_FLASH_ATTN_TYPE_DISABLED,
            self.profile_for(coding),
            self.primer_tokens(coding)?,
        )
    }

    /// Sized to the longest segment rather than the model's training length: smaller
    /// contexts are faster to create and clear, and the length does not change the logits.
    fn n_ctx_for(&self, max_tokens: usize) -> u32 {
        (max_tokens + 2)
            .min(self.n_ctx_train.max(64) as usize)
            .max(16) as u32
    }

    fn session_with(
        &self,
        n_ctx: u32,
        threads: u32,
        flash_attention: llama_flash_attn_type,
        profile: CodecProfile,
        primer: Option<Vec<u32>>,
    ) -> Result<LlmSession<'_>, ModelError> {
        if let Some(p) = &primer {
            if p.len() + 2 > n_ctx as usize {
                return Err(ModelError::Llama(format!(
                    "a context of {n_ctx} cells cannot hold the primer's {} tokens",
                    p.len()
                )));
            }
        }
        let threads = threads.clamp(1, 1024) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(flash_attention);
        let ctx = {
            let _guard = NEW_CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
            self.model
                .new_context(backend()?, params)
                .map_err(|e| ModelError::Llama(e.to_string()))?
        };
        Ok(LlmSession {
            model: self,
            ctx,
            batch: LlamaBatch::new(1, 1),
            n_ctx: n_ctx as usize,
            profile,
            pos: 0,
            weights: vec![0.0; self.n_vocab()],
            weight_sum: 0.0,
            dist: Distribution::default(),
            fresh: false,
            stats: SessionStats::default(),
            live_steps: Arc::new(AtomicU64::new(0)),
            primer: primer.map(|tokens| Primed {
                tokens,
                ready: None,
            }),
            cancel: None,
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
            error: e,
        })?;
    if &magic != b"GGUF" {
        return Err(ModelError::NotGguf {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// A primer's tokens in a session, and once computed what a segment starts from.
struct Primed {
    tokens: Vec<u32>,
    /// After the start token and the primer's tokens: the distribution of the first
    /// segment token (the weights behind it and their sum). The primer's KV cells stay
    /// in the context, at positions `0..=tokens.len()`.
    ready: Option<(Distribution, Vec<f32>, f64)>,
}

/// One llama.cpp context coding one segment at a time, each from the same state: the
/// start token, then the primer's tokens when the session has one.
pub struct LlmSession<'m> {
    model: &'m LlmModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
    profile: CodecProfile,
    /// Position of the next token fed to the context.
    pos: i32,
    /// exp(logit - max) per token: the one float softmax, unnormalised.
    weights: Vec<f32>,
    weight_sum: f64,
    dist: Distribution,
    /// Whether `dist` matches the current logits.
    fresh: bool,
    stats: SessionStats,
    /// `stats.steps`, readable from another thread while a segment is being coded.
    live_steps: Arc<AtomicU64>,
    primer: Option<Primed>,
    /// Checked before each of the primer's steps (see [`TokenModel::watch_cancel`]).
    cancel: Option<Arc<AtomicBool>>,
}

impl<'m> LlmSession<'m> {
    /// The model this session runs.
    pub fn model(&self) -> &'m LlmModel {
        self.model
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

impl TokenModel for LlmSession<'_> {
    fn tokenize_exact(&self, text: &str) -> Option<Vec<u32>> {
        self.model.tokenize_exact(text)
    }

    fn piece(&self, token: u32) -> &[u8] {
        self.model.piece(token)
    }

    /// The most tokens one segment may have in this context.
    fn max_tokens(&self) -> usize {
        self.n_ctx - 1 - self.primer.as_ref().map_or(0, |p| p.tokens.len())
    }

    /// Starts a new segment. Without a primer: empties the KV cache and feeds the start
    /// token. With one, the first time: the same, then the primer's tokens one per step
    /// (as the coder feeds a segment's, so its KV state is the same on every machine the
    /// code is), keeping the distribution that follows. After that: removes the last
    /// segment's cells (llama.cpp places the next tokens at the first free cell, right
    /// after the primer's) and restores that distribution: no model step at all.
    fn reset(&mut self) -> Result<(), CoderError> {
        let Some(primer) = self.primer.as_mut() else {
            self.ctx.clear_kv_cache();
            self.pos = 0;
            return self.step(self.model.start);
        };
        let primed_pos = primer.tokens.len() as i32 + 1;
        if let Some((dist, weights, sum)) = &primer.ready {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(0), Some(primed_pos as u32), None)
                .map_err(|e| CoderError::Model(e.to_string()))?;
            if !removed {
                return Err(CoderError::Model(
                    "llama.cpp could not remove the last segment's cells".into(),
                ));
            }
            self.pos = primed_pos;
            self.dist.clone_from(dist);
            self.weights.copy_from_slice(weights);
            self.weight_sum = *sum;
            self.fresh = true;
            return Ok(());
        }
        let tokens: Vec<LlamaToken> = primer
            .tokens
            .iter()
            .map(|&t| LlamaToken(t as i32))
            .collect();
        self.ctx.clear_kv_cache();
        self.pos = 0;
        self.step(self.model.start)?;
        for t in tokens {
            // A cancelled priming leaves `ready` unset: the next reset starts it over.
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(CoderError::Cancelled);
            }
            self.step(t)?;
        }
        self.distribution()?;
        let ready = (self.dist.clone(), self.weights.clone(), self.weight_sum);
        if let Some(p) = self.primer.as_mut() {
            p.ready = Some(ready);
        }
        Ok(())
    }

    fn profile(&self) -> &CodecProfile {
        &self.profile
    }

    fn stats(&self) -> SessionStats {
        self.stats
    }

    fn live_steps(&self) -> Option<Arc<AtomicU64>> {
        Some(Arc::clone(&self.live_steps))
    }

    fn watch_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
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
