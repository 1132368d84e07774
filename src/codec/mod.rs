//! The LLM codec: arithmetic coding driven by a language model's next-token probabilities.
//!
//! - [`coder`]: range coding under a [`coder::ProbabilityModel`], independent of llama.cpp.
//! - [`llm`]: the GGUF model through llama.cpp as a probability model.
//! - [`segment`]: one segment coded as the smallest of LLM, zstd and raw, verified.
//! - [`container`]: the standalone file format of `llmfs compress`.
//! - [`fingerprint`]: the identity of a model file.

pub mod coder;
pub mod container;
pub mod fingerprint;
pub mod llm;
pub mod segment;

/// Default plaintext bytes per segment. Measured with `llmfs bench --segment-size
/// 1K,4K,16K` (README): 4 KiB keeps most of the ratio of 16 KiB segments while a random
/// read decodes a quarter as much.
pub const DEFAULT_SEGMENT_SIZE: usize = 4096;
