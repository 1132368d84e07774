//! Decoding version 1 containers, whose code depends on an unrecorded thread count.
//!
//! The first container format coded with flash attention left on ("auto"), so
//! llama.cpp's CPU attention split long KV ranges into one chunk per thread: a segment
//! decodes only with the thread count it was encoded with, and the format did not record
//! it (`llmfs compress` used every core by default). [`LegacyDecoder`] decodes such files
//! with that version's context settings ([`LlmModel::legacy_session`]), trying thread
//! counts on the first LLM segment that needs one and keeping the count that works for
//! the rest. Each frame's CRC tells a wrong count from the right one. Segments shorter
//! than about 500 tokens decode with any count.

use super::container::{decode_frame, ContainerError, Header};
use super::llm::LlmModel;
use super::segment::SegmentCoder;
use crate::frame::{self, FrameError};

/// Decodes the segments of a version 1 container, finding the llama.cpp thread count its
/// LLM segments were written with and keeping the coder that works.
pub struct LegacyDecoder<'m> {
    model: &'m LlmModel,
    /// Thread counts to try, in order.
    candidates: Vec<u32>,
    /// The coder that decoded the last LLM segment, and its thread count.
    current: Option<(u32, SegmentCoder<'m>)>,
}

impl<'m> LegacyDecoder<'m> {
    /// Tries `preferred` first (the user's `--threads`), then 1 to `max_threads`.
    pub fn new(model: &'m LlmModel, preferred: Option<u32>, max_threads: u32) -> Self {
        let mut candidates: Vec<u32> = preferred.into_iter().collect();
        candidates.extend((1..=max_threads.max(1)).filter(|t| Some(*t) != preferred));
        LegacyDecoder {
            model,
            candidates,
            current: None,
        }
    }

    /// The thread count that decoded the last LLM segment.
    pub fn threads(&self) -> Option<u32> {
        self.current.as_ref().map(|(t, _)| *t)
    }

    /// Decodes segment `index` of a version 1 container.
    pub fn decode(
        &mut self,
        header: &Header,
        index: usize,
        frame_bytes: &[u8],
    ) -> Result<Vec<u8>, ContainerError> {
        let is_llm = frame::needs_model(frame_bytes);
        if !is_llm {
            return decode_frame(header, index, frame_bytes, None);
        }
        let segment_size = header.segment_size as usize;
        let mut tried = Vec::new();
        if let Some((threads, coder)) = &mut self.current {
            match decode_frame(header, index, frame_bytes, Some(coder)) {
                Err(e) if wrong_threads(&e) => tried.push(*threads),
                other => return other,
            }
        }
        for &threads in &self.candidates {
            if tried.contains(&threads) {
                continue;
            }
            let session = self
                .model
                .legacy_session(segment_size, threads)
                .map_err(|e| segment_error(header, index, FrameError::Model(e.to_string())))?;
            let mut coder = SegmentCoder::new(session, false);
            match decode_frame(header, index, frame_bytes, Some(&mut coder)) {
                Err(e) if wrong_threads(&e) => tried.push(threads),
                other => {
                    if other.is_ok() && self.threads() != Some(threads) {
                        log::info!(
                            "version 1 file: segment {index} decodes with {threads} llama.cpp threads"
                        );
                        self.current = Some((threads, coder));
                    }
                    return other;
                }
            }
        }
        let (start, end) = header.segment_bounds(index);
        Err(ContainerError::V1ThreadsExhausted {
            index,
            start,
            end,
            tried: describe(&tried),
        })
    }
}

/// A decode that a different thread count could fix: a wrong count decodes other tokens,
/// which fail the CRC or overrun the segment.
fn wrong_threads(e: &ContainerError) -> bool {
    matches!(
        e,
        ContainerError::Segment {
            error: FrameError::Checksum { .. } | FrameError::Corrupt(_),
            ..
        }
    )
}

fn segment_error(header: &Header, index: usize, error: FrameError) -> ContainerError {
    let (start, end) = header.segment_bounds(index);
    ContainerError::Segment {
        index,
        start,
        end,
        error,
    }
}

/// "1-4" or "8, 1-4": the counts tried, compactly.
fn describe(tried: &[u32]) -> String {
    let mut sorted = tried.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_ranges() {
        assert_eq!(super::describe(&[3, 1, 2, 4]), "1-4");
        assert_eq!(super::describe(&[8, 1, 2]), "1-2, 8");
        assert_eq!(super::describe(&[]), "");
    }
}
