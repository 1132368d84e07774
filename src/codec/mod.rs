//! The LLM codec: arithmetic coding driven by a language model's next-token probabilities.
//!
//! - [`coder`]: range coding under a [`coder::ProbabilityModel`], independent of llama.cpp.
//! - [`token_model`]: the [`TokenModel`] seam the segment coder codes through.
//! - [`llm`]: the GGUF model through llama.cpp, the real [`TokenModel`].
//! - [`synthetic`]: a deterministic byte model, for tests and benchmarks only.
//! - [`profile`]: the [`CodecProfile`], everything a code stream depends on.
//! - [`segment`]: one segment coded as the smallest of LLM, zstd and raw, verified,
//!   cancellable.
//! - [`container`]: the standalone file format of `llmfs compress`; [`legacy`] decodes
//!   its first version.
//! - [`fingerprint`]: the identity of a model file.
//! - [`primer`]: the text every segment follows (coder version 3), and the [`primer::Coding`].
//!
//! What a code stream depends on, and so what moving it requires: the same model file,
//! llama.cpp build (`llama-cpp-sys-2` version), backend and GPU offload, CPU kernel set
//! (the instruction sets ggml was compiled for) and coder version; all recorded in the
//! profile and checked before decoding. It does not depend on the thread count, the
//! context length or the machine, as long as those agree.

pub mod coder;
pub mod container;
pub mod fingerprint;
pub mod legacy;
pub mod llm;
pub mod primer;
pub mod profile;
pub mod segment;
pub mod synthetic;
pub mod token_model;

pub use profile::CodecProfile;
pub use token_model::TokenModel;

/// Default plaintext bytes per segment. Measured with `llmfs bench --segment-size
/// 1K,4K,16K` (README): 4 KiB keeps most of the ratio of 16 KiB segments while a random
/// read decodes a quarter as much.
pub const DEFAULT_SEGMENT_SIZE: usize = 4096;
