//! llmfs: a transparent compressed filesystem whose compressor is a language model.
//!
//! The crate is layered so that each layer knows nothing of the ones above it:
//!
//! - [`frame`]: the self-describing encoding of one segment of bytes (raw, zstd or LLM),
//!   shared by the standalone container and by the filesystem's chunks.
//! - [`codec`]: arithmetic coding over integer frequencies ([`codec::coder`]), the
//!   llama.cpp probability model ([`codec::llm`]) and the standalone container format
//!   ([`codec::container`]).
//! - [`store`] and [`fs`]: the sled-backed filesystem core and its FUSE adapter.
//! - [`chart`]: the SVG chart of `llmfs bench --svg`.

pub mod chart;
pub mod codec;
pub mod frame;
pub mod fs;
pub mod store;
pub mod tier;
