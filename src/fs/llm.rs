//! The codecs the model thread can run: a GGUF model through llama.cpp (the product),
//! or the synthetic model (tests only: its profile can never pass for a real model's, so a
//! store it coded refuses every real model and the other way round).

use super::tier::{ChunkCodec, Encoded, Starter};
use crate::codec::llm::{LlmModel, ModelConfig};
use crate::codec::profile::CodecProfile;
use crate::codec::segment::SegmentCoder;
use crate::codec::synthetic::SyntheticModel;
use crate::frame::{Codec, FrameError};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

impl ChunkCodec for SegmentCoder<'_> {
    fn encode(&mut self, plain: &[u8]) -> Result<Encoded, FrameError> {
        let (frame, report) = SegmentCoder::encode(self, plain)?;
        Ok(if report.verify_failed {
            Encoded::VerifyFailed
        } else if report.codec == Some(Codec::Llm) {
            Encoded::Llm(frame)
        } else {
            Encoded::NotWon
        })
    }

    fn decode(&mut self, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        SegmentCoder::decode(self, frame)
    }

    fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        SegmentCoder::set_cancel(self, flag);
    }

    fn profile(&self) -> Vec<u8> {
        SegmentCoder::profile(self).encode()
    }
}

/// Starts the GGUF model of `cfg` for chunks of `chunk_size` bytes (every LLM frame is
/// verified by a decode before it is accepted).
pub fn gguf(cfg: ModelConfig, chunk_size: usize) -> Starter {
    Box::new(move |serve| {
        let model = LlmModel::load(&cfg).map_err(|e| e.to_string())?;
        log::info!(
            "model {} ({}) loaded, {} llama.cpp threads",
            cfg.path.display(),
            model.name(),
            model.threads()
        );
        // A chunk never has more tokens than bytes.
        let session = model.session(chunk_size).map_err(|e| e.to_string())?;
        let mut coder = SegmentCoder::new(session, true);
        serve(&mut coder);
        Ok(())
    })
}

/// Starts the synthetic model: for tests of the filesystem, never for data anyone keeps.
pub fn synthetic() -> Starter {
    Box::new(|serve| {
        let mut coder = SegmentCoder::new(SyntheticModel::new(), true);
        serve(&mut coder);
        Ok(())
    })
}

/// What differs between a store's pinned profile and a running codec's, in words (empty
/// when they code alike); a profile that does not parse is a difference too.
pub fn profile_differences(stored: &[u8], running: &[u8]) -> Vec<String> {
    match (CodecProfile::decode(stored), CodecProfile::decode(running)) {
        (Ok(s), Ok(r)) => r.differences(&s),
        (Err(e), _) => vec![format!("the store's profile is unreadable ({e})")],
        (_, Err(e)) => vec![format!("the running codec's profile is unreadable ({e})")],
    }
}
