//! The model tier: a pool of *lanes* that run the language model for everyone else.
//!
//! One model is loaded (its weights shared); each lane is a llama.cpp context of its own
//! on a named thread (`llmfs-lane-N`), fed one token per step with flash attention off.
//! Independent contexts give the same logits as a lone one (measured, DESIGN.md), so a
//! chunk coded on any lane decodes on any other, in any pool, process or thread count.
//! On 2 cores two 1-thread lanes code 81 tokens/s together where one context with both
//! threads codes 72: lanes are how a machine's cores (and later a GPU) all code at once.
//!
//! What it serves, in this order (`pool` has the scheduling):
//! 1. decodes a reader waits for (a cold read, an edit of a model-coded chunk), taken
//!    round-robin between the users asking, so that one user's flood of cold reads
//!    delays another's by one decode per lane at most;
//! 2. encodes a writer waits for (`sync_llm`, the canary);
//! 3. prefetches: the chunks after one a reader just read, decoded ahead on free lanes
//!    and kept in the pool until a reader asks;
//! 4. background encodes (the compactor, one job per lane).
//!
//! Background jobs stop within one model step when a reader needs their lane, and are
//! tried again later. A lone read on an otherwise idle pool runs on lane 0's *wide*
//! context, which has every thread of the pool's budget, when the pool has one: the
//! fastest single stream where OpenMP threads spin, and none where they wait passively
//! (the daemon's default), as several sleeping threads are slower than one.
//!
//! The tier knows nothing of the filesystem: it codes frames for keys it is given, and
//! its callers (the filesystem core, `llmfs compress`, `fsck --verify`) own the rest.

pub mod lanes;
mod pool;

pub use pool::{Pool, PoolConfig, PoolStats, Ticket};

use crate::codec::segment::SegmentReport;
use crate::codec::token_model::SessionStats;
use crate::frame::{Codec, FrameError, Plain};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// (ino, chunk index, content version): one plaintext for good. Requests for the same
/// key share one decode.
pub type ChunkKey = (u64, u64, u64);

/// The requester of work that no user asked for (the compactor, fsck, the CLI).
pub const SYSTEM: u32 = u32::MAX;

/// What a lane needs from a codec: the segment coder over a model context.
pub trait ChunkCodec {
    /// Codes `plain` as its smallest frame (LLM, zstd or raw); an LLM frame only after
    /// it decoded back to `plain` when the codec verifies. `fast` is the frame to beat
    /// when the caller has one already (the filesystem's stored fast frame, which is
    /// then what comes back when the model does not win); `None`: the codec makes it.
    fn encode(&mut self, plain: &[u8], fast: Option<&[u8]>) -> Result<Coded, FrameError>;
    /// Decodes any frame (checking its CRC).
    fn decode(&mut self, frame: &[u8]) -> Result<Plain, FrameError>;
    /// The flag that stops an encode or decode at the next model step with
    /// [`FrameError::Cancelled`].
    fn set_cancel(&mut self, flag: Arc<AtomicBool>);
    /// What the code depends on (the encoded codec profile).
    fn profile(&self) -> Vec<u8>;
    /// Computes what every segment starts from (a primer's state) ahead of the first
    /// job.
    fn prepare(&mut self) -> Result<(), FrameError> {
        Ok(())
    }
    /// Model steps and time so far, for statistics.
    fn stats(&self) -> SessionStats {
        SessionStats::default()
    }
}

/// A coded segment: the frame chosen and what happened.
#[derive(Clone, Debug)]
pub struct Coded {
    /// The chosen frame: an LLM frame when it won and verified, else the fast frame.
    pub frame: Vec<u8>,
    /// What happened coding the segment.
    pub report: SegmentReport,
}

/// What an encode means to the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// An LLM frame smaller than the fast one, decoded again and found equal.
    Llm(Vec<u8>),
    /// The model did not win (or cannot code the bytes): keep the fast frame.
    NotWon,
    /// The decode of the model's frame gave other bytes: keep the fast frame.
    VerifyFailed,
}

impl Coded {
    /// A frame coded by other means (a test's stand-in codec), with the report its header
    /// gives.
    pub fn from_frame(frame: Vec<u8>) -> Result<Coded, FrameError> {
        let h = crate::frame::parse_header(&frame)?;
        Ok(Coded {
            report: SegmentReport {
                codec: Some(h.codec),
                plain_len: h.plain_len as usize,
                frame_len: frame.len(),
                ..SegmentReport::default()
            },
            frame,
        })
    }

    /// What the filesystem does with the result: keep the LLM frame, or keep its fast
    /// frame and why.
    pub fn outcome(self) -> Encoded {
        if self.report.verify_failed {
            Encoded::VerifyFailed
        } else if self.report.codec == Some(Codec::Llm) {
            Encoded::Llm(self.frame)
        } else {
            Encoded::NotWon
        }
    }
}

/// How a lane is to be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneSpec {
    /// The lane's number, 0 up; lane 0 may also get the wide context.
    pub index: usize,
    /// llama.cpp threads of the lane's context.
    pub threads: u32,
    /// Threads of a second, wide context for lone reads (lane 0 only, when the pool
    /// has more threads than this lane).
    pub wide_threads: Option<u32>,
}

/// The codecs of one lane, living on its thread.
pub struct Lane<'a> {
    /// The lane's context with [`LaneSpec::threads`] threads.
    pub narrow: &'a mut dyn ChunkCodec,
    /// The wide context for lone reads, when [`LaneSpec::wide_threads`] asked for one.
    pub wide: Option<&'a mut dyn ChunkCodec>,
}

/// Builds a lane's codecs on the lane's own thread (a llama.cpp context lives on the
/// stack of the thread that uses it) and hands them to `serve`, which returns when the
/// pool stops. Called once per lane, concurrently.
pub type LaneStarter =
    Arc<dyn Fn(LaneSpec, &mut dyn FnMut(Lane<'_>)) -> Result<(), String> + Send + Sync>;

/// Why the tier did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// A reader needed the lane: nothing is wrong with the data, try again later.
    #[error("cancelled: a reader needed the model")]
    Cancelled,
    /// The pool was stopped (unmount).
    #[error("the model pool stopped")]
    Stopped,
    /// The model could not start or failed on a lane.
    #[error("the model failed: {0}")]
    Failed(String),
    /// The frame did not decode (damaged, or coded by another model).
    #[error(transparent)]
    Frame(FrameError),
}

impl From<FrameError> for TierError {
    fn from(e: FrameError) -> TierError {
        match e {
            FrameError::Cancelled => TierError::Cancelled,
            other => TierError::Frame(other),
        }
    }
}

impl From<TierError> for FrameError {
    fn from(e: TierError) -> FrameError {
        match e {
            TierError::Frame(f) => f,
            TierError::Cancelled => FrameError::Cancelled,
            other => FrameError::Model(other.to_string()),
        }
    }
}
