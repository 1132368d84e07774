//! The seam between the segment coder and whatever predicts tokens.
//!
//! [`super::segment::SegmentCoder`] needs a tokenizer that spells text back exactly, the
//! bytes of each token, a fresh state per segment, next-token probabilities
//! ([`ProbabilityModel`]) and the [`CodecProfile`] its code depends on. The llama.cpp
//! session ([`super::llm::LlmSession`]) is the real implementation;
//! [`super::synthetic::SyntheticModel`] is a deterministic byte model that runs in
//! microseconds, for tests and benchmarks of the layers above.

use super::coder::{CoderError, ProbabilityModel};
use super::profile::CodecProfile;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

/// A token predictor that can code segments of text.
pub trait TokenModel: ProbabilityModel {
    /// Token ids that spell exactly `text`, piece by piece, or `None` when the text
    /// cannot be coded with this model's tokens.
    fn tokenize_exact(&self, text: &str) -> Option<Vec<u32>>;
    /// The bytes of `token`; empty for ids that stand for no text or do not exist.
    fn piece(&self, token: u32) -> &[u8];
    /// The most tokens one segment may have.
    fn max_tokens(&self) -> usize;
    /// Starts a new segment from the model's fresh state; encoder and decoder call it
    /// before every segment.
    fn reset(&mut self) -> Result<(), CoderError>;
    /// What the code this model writes depends on.
    fn profile(&self) -> &CodecProfile;
    /// Time and information spent so far, for statistics.
    fn stats(&self) -> SessionStats {
        SessionStats::default()
    }
    /// A counter of model steps that a progress display may read from another thread.
    fn live_steps(&self) -> Option<Arc<AtomicU64>> {
        None
    }
    /// A flag that work of many model steps inside [`reset`](Self::reset) (a primer's)
    /// checks before each step, failing with [`CoderError::Cancelled`] once it is set.
    fn watch_cancel(&mut self, _flag: Arc<AtomicBool>) {}
}

/// Time and information spent by a model session, for `llmfs bench`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Tokens evaluated by the model (one llama.cpp `decode` call each).
    pub steps: u64,
    /// Wall time inside the model's evaluation.
    pub llama_time: Duration,
    /// Wall time turning predictions into frequency tables.
    pub table_time: Duration,
    /// Model cross-entropy of the coded tokens, in bits, under the float probabilities.
    pub cross_entropy_bits: f64,
}
