//! Coding one segment: the smallest of LLM, zstd and raw, with the LLM result verified.
//!
//! LLM payload layout (inside a [`crate::frame`] of codec `Llm`):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | edges | 1 byte | bits 0-1: `head` length, bits 2-3: `tail` length (0-3 each) |
//! | head | 0-3 bytes | UTF-8 continuation bytes the segment starts with (a character split by the previous segment edge), stored raw |
//! | tail | 0-3 bytes | the start of a character the segment edge splits, stored raw |
//! | code | rest | range-coded token ids of the body between head and tail ([`super::coder`]) |
//!
//! Segments are cut at fixed byte offsets, so a multi-byte character can straddle two;
//! carrying its bytes outside the token stream keeps the rest of non-English text
//! LLM-coded. The body's length is the frame's plaintext length minus head and tail,
//! and the decoder stops once the tokens spell that many bytes: no token count is stored.

use super::coder::{self, CoderError};
use super::llm::LlmSession;
use crate::frame::{self, Codec, FrameError, LlmPayloadDecoder};

/// What happened to one segment, for statistics and `bench`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentReport {
    pub codec: Option<Codec>,
    pub plain_len: usize,
    pub frame_len: usize,
    /// Tokens of the body, when it tokenized exactly.
    pub tokens: usize,
    /// Bytes of range-coded tokens (the LLM payload's `code` field).
    pub code_len: usize,
    /// Bytes of coded data in the chosen frame (range code, zstd stream or raw bytes):
    /// the frame length less every header and edge byte.
    pub data_len: usize,
    /// The model's cross-entropy of those tokens, in bits.
    pub cross_entropy_bits: f64,
    /// Whether an LLM encoding was discarded because decoding it gave other bytes.
    pub verify_failed: bool,
}

/// Encodes and decodes segments with one model session.
pub struct SegmentCoder<'m> {
    session: LlmSession<'m>,
    /// Decode every LLM-coded segment again and compare before accepting it.
    pub verify: bool,
}

/// Splits `plain` into a head of continuation bytes, a body that is valid UTF-8, and the
/// tail of an unfinished character; `None` when the body is not UTF-8.
pub fn split_utf8_edges(plain: &[u8]) -> Option<(usize, &str, usize)> {
    let head = plain
        .iter()
        .take(3)
        .take_while(|&&b| b & 0xc0 == 0x80)
        .count();
    let rest = &plain[head..];
    let tail = match rest.iter().rposition(|&b| b & 0xc0 != 0x80) {
        Some(i) if rest.len() - i <= 3 => {
            let need = match rest[i] {
                b if b >= 0xf0 => 4,
                b if b >= 0xe0 => 3,
                b if b >= 0xc0 => 2,
                _ => 1,
            };
            if rest.len() - i < need {
                rest.len() - i
            } else {
                0
            }
        }
        _ => 0,
    };
    let body = std::str::from_utf8(&rest[..rest.len() - tail]).ok()?;
    Some((head, body, tail))
}

impl<'m> SegmentCoder<'m> {
    pub fn new(session: LlmSession<'m>, verify: bool) -> Self {
        SegmentCoder { session, verify }
    }

    pub fn session(&self) -> &LlmSession<'m> {
        &self.session
    }

    /// Codes `plain` as the smallest frame; LLM frames only after a verified decode.
    pub fn encode(&mut self, plain: &[u8]) -> Result<(Vec<u8>, SegmentReport), FrameError> {
        let fast = frame::encode_fast(plain);
        let mut report = SegmentReport {
            plain_len: plain.len(),
            ..Default::default()
        };
        let chosen = match self.encode_llm(plain, &mut report)? {
            Some(llm) if llm.len() < fast.len() => {
                if !self.verify || self.decode_llm_frame(&llm).as_deref() == Ok(plain) {
                    llm
                } else {
                    log::warn!(
                        "LLM decode of a {}-byte segment did not give back its bytes; keeping the fast frame",
                        plain.len()
                    );
                    report.verify_failed = true;
                    fast
                }
            }
            _ => fast,
        };
        let header = frame::parse_header(&chosen)?;
        report.codec = Some(header.codec);
        report.frame_len = chosen.len();
        report.data_len = match header.codec {
            Codec::Llm => report.code_len,
            _ => chosen.len() - header.header_len,
        };
        Ok((chosen, report))
    }

    /// The LLM frame for `plain`, or `None` when the text cannot be LLM-coded.
    fn encode_llm(
        &mut self,
        plain: &[u8],
        report: &mut SegmentReport,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        let Some((head, body, tail)) = split_utf8_edges(plain) else {
            return Ok(None);
        };
        if body.is_empty() {
            return Ok(None);
        }
        let Some(tokens) = self.session.model().tokenize_exact(body) else {
            return Ok(None);
        };
        if tokens.len() > self.session.max_tokens() {
            return Ok(None);
        }
        let before = self.session.stats.cross_entropy_bits;
        self.session.reset().map_err(model_error)?;
        let code = coder::encode(&tokens, &mut self.session).map_err(model_error)?;
        report.tokens = tokens.len();
        report.code_len = code.len();
        report.cross_entropy_bits = self.session.stats.cross_entropy_bits - before;
        let mut payload = Vec::with_capacity(1 + head + tail + code.len());
        payload.push(head as u8 | (tail as u8) << 2);
        payload.extend_from_slice(&plain[..head]);
        payload.extend_from_slice(&plain[plain.len() - tail..]);
        payload.extend_from_slice(&code);
        Ok(Some(frame::assemble(Codec::Llm, plain, &payload)))
    }

    fn decode_llm_frame(&mut self, llm_frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        frame::decode(llm_frame, Some(self))
    }

    /// Decodes any frame with this coder's model.
    pub fn decode(&mut self, frame_bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
        frame::decode(frame_bytes, Some(self))
    }
}

fn model_error(e: CoderError) -> FrameError {
    FrameError::Model(e.to_string())
}

impl LlmPayloadDecoder for SegmentCoder<'_> {
    fn decode_llm_payload(
        &mut self,
        payload: &[u8],
        plain_len: usize,
    ) -> Result<Vec<u8>, FrameError> {
        let corrupt = |what: &str| FrameError::Corrupt(format!("LLM payload: {what}"));
        let edges = *payload.first().ok_or(FrameError::Truncated)?;
        let (head, tail) = (usize::from(edges & 3), usize::from((edges >> 2) & 3));
        if edges >> 4 != 0 {
            return Err(corrupt("reserved bits set"));
        }
        let code = payload
            .get(1 + head + tail..)
            .ok_or(FrameError::Truncated)?;
        let body_len = plain_len
            .checked_sub(head + tail)
            .ok_or_else(|| corrupt("edges longer than the segment"))?;
        let mut plain = Vec::with_capacity(plain_len);
        plain.extend_from_slice(&payload[1..1 + head]);
        if body_len > 0 {
            self.session.reset().map_err(model_error)?;
            let model = self.session.model();
            let mut overshoot = false;
            coder::decode(code, &mut self.session, |token| {
                let piece = model.piece(token);
                if piece.is_empty() || plain.len() - head + piece.len() > body_len {
                    // A token the encoder cannot have written: stop, and fail below.
                    overshoot = true;
                    return Ok(false);
                }
                plain.extend_from_slice(piece);
                Ok(plain.len() - head < body_len)
            })
            .map_err(|e| match e {
                CoderError::InvalidData => corrupt("invalid range code"),
                other => model_error(other),
            })?;
            if overshoot {
                return Err(corrupt("tokens do not spell the segment's length"));
            }
        }
        plain.extend_from_slice(&payload[1 + head..1 + head + tail]);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_edges() {
        let s = "héllo wörld 日本語".as_bytes();
        assert_eq!(split_utf8_edges(s), Some((0, "héllo wörld 日本語", 0)));
        // Cut inside 'é' at the start and inside '語' at the end.
        let cut = &s[2..s.len() - 1];
        let (head, body, tail) = split_utf8_edges(cut).unwrap();
        assert_eq!((head, tail), (1, 2));
        assert_eq!(body, "llo wörld 日本");
        assert_eq!(
            split_utf8_edges(&[0x80, 0x80, 0x80, 0x80]),
            None,
            "4 continuation bytes are not text"
        );
        assert_eq!(split_utf8_edges(&[0xff, b'a']), None);
        assert_eq!(split_utf8_edges(b""), Some((0, "", 0)));
        assert_eq!(split_utf8_edges(&[0xe6]), Some((0, "", 1)));
    }
}
