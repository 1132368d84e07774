//! The codecs lanes run: a GGUF model through llama.cpp (the product), or the synthetic
//! model (tests only: its profile can never pass for a real model's, so a store it coded
//! refuses every real model and the other way round).

use super::{ChunkCodec, Coded, Lane, LaneSpec, LaneStarter};
use crate::codec::llm::LlmModel;
use crate::codec::primer::Coding;
use crate::codec::profile::CodecProfile;
use crate::codec::segment::SegmentCoder;
use crate::codec::synthetic::SyntheticModel;
use crate::codec::token_model::SessionStats;
use crate::frame::{FrameError, Plain};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

impl ChunkCodec for SegmentCoder<'_> {
    fn encode(&mut self, plain: &[u8], fast: Option<&[u8]>) -> Result<Coded, FrameError> {
        let (frame, report) = SegmentCoder::encode_against(self, plain, fast)?;
        Ok(Coded { frame, report })
    }

    fn decode(&mut self, frame: &[u8]) -> Result<Plain, FrameError> {
        SegmentCoder::decode(self, frame)
    }

    fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        SegmentCoder::set_cancel(self, flag);
    }

    fn profile(&self) -> Vec<u8> {
        SegmentCoder::profile(self).encode()
    }

    fn prepare(&mut self) -> Result<(), FrameError> {
        SegmentCoder::prepare(self)
    }

    fn stats(&self) -> SessionStats {
        SegmentCoder::stats(self)
    }
}

/// Lanes over one loaded GGUF model (its weights shared), coding under `coding`
/// segments of up to `max_tokens` tokens; `verify` decodes every LLM frame again before
/// accepting it. Each lane is a llama.cpp context of its own, created on the lane's
/// thread; with a primer, each computes the primer's state when its lane starts (the pool
/// calls `prepare` before the first job), or at its first segment if that was cancelled.
pub fn gguf(model: Arc<LlmModel>, coding: Coding, max_tokens: usize, verify: bool) -> LaneStarter {
    Arc::new(move |spec: LaneSpec, serve: &mut dyn FnMut(Lane<'_>)| {
        let session = model
            .session_with_threads(&coding, max_tokens, spec.threads)
            .map_err(|e| e.to_string())?;
        let mut narrow = SegmentCoder::new(session, verify);
        let mut wide = match spec.wide_threads {
            Some(t) => Some(SegmentCoder::new(
                model
                    .session_with_threads(&coding, max_tokens, t)
                    .map_err(|e| e.to_string())?,
                verify,
            )),
            None => None,
        };
        serve(Lane {
            narrow: &mut narrow,
            wide: wide.as_mut().map(|w| w as &mut dyn ChunkCodec),
        });
        Ok(())
    })
}

/// Lanes running the synthetic model under `coding`: for tests of the filesystem, never
/// for data anyone keeps.
pub fn synthetic(coding: Coding, verify: bool) -> LaneStarter {
    Arc::new(move |_spec: LaneSpec, serve: &mut dyn FnMut(Lane<'_>)| {
        let mut coder = SegmentCoder::new(SyntheticModel::with_coding(&coding), verify);
        serve(Lane {
            narrow: &mut coder,
            wide: None,
        });
        Ok(())
    })
}

/// What differs between a stored profile and a running codec's, in words (empty when
/// they code alike); a profile that does not parse is a difference too.
pub fn profile_differences(stored: &[u8], running: &[u8]) -> Vec<String> {
    match (CodecProfile::decode(stored), CodecProfile::decode(running)) {
        (Ok(s), Ok(r)) => r.differences(&s),
        (Err(e), _) => vec![format!("the store's profile is unreadable ({e})")],
        (_, Err(e)) => vec![format!("the running codec's profile is unreadable ({e})")],
    }
}
