//! llmfs: a transparent compressed filesystem whose compressor is a language model.
//!
//! The crate is layered so that each layer knows nothing of the ones above it (the
//! command line, `src/cli/`, is the binary's, on top of them all):
//!
//! - [`fs`]: the filesystem core (POSIX semantics in inode numbers and offsets, the chunk
//!   cache, the compactor, per-directory policy, live statistics) and its FUSE adapter
//!   ([`fs::fuse`]); it uses the model only through [`tier`].
//! - [`tier`]: the model pool: one loaded model, lanes of llama.cpp contexts, the order
//!   in which reads, writes and the compactor get them.
//! - [`store`]: one SQLite database per store (through the [`store::engine`] seam, with
//!   an in-memory twin for tests): inodes, names, xattrs, chunk frames packed into
//!   extents, every record checksummed; fsck and salvage.
//! - [`codec`]: arithmetic coding over integer frequencies ([`codec::coder`]), the
//!   llama.cpp probability model ([`codec::llm`]), the primer, the codec profile a store
//!   is pinned to, and the standalone `.llz` container ([`codec::container`]).
//! - [`frame`]: the self-describing encoding of one segment of bytes (raw, zstd, LLM or
//!   lost), shared by the container and by the filesystem's chunks.
//! - [`chart`]: the SVG chart of `llmfs bench --svg` (plotters).

pub mod chart;
pub mod codec;
pub mod frame;
pub mod fs;
pub mod store;
pub mod tier;
