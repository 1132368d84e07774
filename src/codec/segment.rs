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

use super::coder::{self, CoderError, Distribution, ProbabilityModel};
use super::profile::CodecProfile;
use super::token_model::{SessionStats, TokenModel};
use crate::frame::{self, Codec, FrameError, LlmPayloadDecoder};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What happened to one segment, for statistics and `bench`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentReport {
    /// The codec of the chosen frame; `None` only in a `Default` report, before a segment
    /// is coded.
    pub codec: Option<Codec>,
    /// Plaintext bytes of the segment.
    pub plain_len: usize,
    /// Bytes of the chosen frame, headers included.
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

/// Encodes and decodes segments with one model session: the llama.cpp session of
/// [`super::llm`], or any other [`TokenModel`] (the synthetic model in tests).
pub struct SegmentCoder<'m> {
    model: Box<dyn TokenModel + Send + 'm>,
    /// Decode every LLM-coded segment again and compare before accepting it.
    pub verify: bool,
    cancel: Option<Arc<AtomicBool>>,
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
    /// A coder over `model`; with `verify`, every LLM frame is decoded again and compared
    /// before it is accepted.
    pub fn new(model: impl TokenModel + Send + 'm, verify: bool) -> Self {
        Self::from_boxed(Box::new(model), verify)
    }

    /// [`SegmentCoder::new`] over an already boxed model.
    pub fn from_boxed(model: Box<dyn TokenModel + Send + 'm>, verify: bool) -> Self {
        SegmentCoder {
            model,
            verify,
            cancel: None,
        }
    }

    /// The model this coder codes with.
    pub fn model(&self) -> &(dyn TokenModel + Send + 'm) {
        &*self.model
    }

    /// What this coder's LLM frames depend on.
    pub fn profile(&self) -> &CodecProfile {
        self.model.profile()
    }

    /// The model session's time and information spent so far.
    pub fn stats(&self) -> SessionStats {
        self.model.stats()
    }

    /// Readies the model for the first segment ahead of time: a primed session computes
    /// its primer's state here rather than at its first segment.
    pub fn prepare(&mut self) -> Result<(), FrameError> {
        self.start_segment()
    }

    /// A counter of model steps that a progress display may read from another thread.
    pub fn live_steps(&self) -> Option<Arc<AtomicU64>> {
        self.model.live_steps()
    }

    /// Makes [`encode`](Self::encode) and [`decode`](Self::decode) stop within one model
    /// step once `flag` is set, with [`FrameError::Cancelled`]. The flag is only read:
    /// while it stays set every call fails at once, and clearing it lets the next call run.
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.model.watch_cancel(Arc::clone(&flag));
        self.cancel = Some(flag);
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Codes `plain` as the smallest frame; LLM frames only after a verified decode.
    pub fn encode(&mut self, plain: &[u8]) -> Result<(Vec<u8>, SegmentReport), FrameError> {
        self.encode_against(plain, None)
    }

    /// [`SegmentCoder::encode`] against a fast frame of `plain` the caller made already
    /// (`None`: made here): the LLM frame is kept only if it is smaller, else `fast` is
    /// what comes back. The one place where the smaller frame is chosen.
    pub fn encode_against(
        &mut self,
        plain: &[u8],
        fast: Option<&[u8]>,
    ) -> Result<(Vec<u8>, SegmentReport), FrameError> {
        let fast = match fast {
            Some(f) => f.to_vec(),
            None => frame::encode_fast(plain),
        };
        let mut report = SegmentReport {
            plain_len: plain.len(),
            ..Default::default()
        };
        let chosen = match self.encode_llm(plain, &mut report)? {
            Some(llm) if llm.len() < fast.len() => {
                let verified = !self.verify
                    || match self.decode(&llm) {
                        Ok(back) => back == plain,
                        Err(FrameError::Cancelled) => return Err(FrameError::Cancelled),
                        Err(_) => false,
                    };
                if verified {
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
        let Some(tokens) = self.model.tokenize_exact(body) else {
            return Ok(None);
        };
        if tokens.len() > self.model.max_tokens() {
            return Ok(None);
        }
        let before = self.model.stats().cross_entropy_bits;
        self.start_segment()?;
        let code = coder::encode(&tokens, &mut self.watched()).map_err(coder_error)?;
        report.tokens = tokens.len();
        report.code_len = code.len();
        report.cross_entropy_bits = self.model.stats().cross_entropy_bits - before;
        let mut payload = Vec::with_capacity(1 + head + tail + code.len());
        payload.push(head as u8 | (tail as u8) << 2);
        payload.extend_from_slice(&plain[..head]);
        payload.extend_from_slice(&plain[plain.len() - tail..]);
        payload.extend_from_slice(&code);
        Ok(Some(frame::assemble(Codec::Llm, plain, &payload)))
    }

    /// Decodes any frame with this coder's model.
    pub fn decode(&mut self, frame_bytes: &[u8]) -> Result<frame::Plain, FrameError> {
        frame::decode(frame_bytes, Some(self))
    }

    fn start_segment(&mut self) -> Result<(), FrameError> {
        if self.cancelled() {
            return Err(FrameError::Cancelled);
        }
        self.model.reset().map_err(coder_error)
    }

    /// The model as the range coder sees it: every step first checks the cancel flag.
    fn watched(&mut self) -> Watched<'_, 'm> {
        Watched {
            model: &mut *self.model,
            cancel: self.cancel.as_deref(),
        }
    }
}

struct Watched<'a, 'm> {
    model: &'a mut (dyn TokenModel + Send + 'm),
    cancel: Option<&'a AtomicBool>,
}

impl ProbabilityModel for Watched<'_, '_> {
    fn distribution(&mut self) -> Result<&Distribution, CoderError> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(CoderError::Cancelled);
        }
        self.model.distribution()
    }

    fn push(&mut self, symbol: u32) -> Result<(), CoderError> {
        self.model.push(symbol)
    }

    fn coded(&mut self, symbol: u32) {
        self.model.coded(symbol)
    }
}

fn coder_error(e: CoderError) -> FrameError {
    match e {
        CoderError::Cancelled => FrameError::Cancelled,
        other => FrameError::Model(other.to_string()),
    }
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
            self.start_segment()?;
            let mut decoder = coder::SymbolDecoder::new(code).map_err(|e| match e {
                CoderError::InvalidData => corrupt("invalid range code"),
                other => coder_error(other),
            })?;
            let mut model = self.watched();
            loop {
                let token = decoder.next(&mut model).map_err(|e| match e {
                    CoderError::InvalidData => corrupt("invalid range code"),
                    other => coder_error(other),
                })?;
                let piece = model.model.piece(token);
                if piece.is_empty() || plain.len() - head + piece.len() > body_len {
                    // A token the encoder cannot have written.
                    return Err(corrupt("tokens do not spell the segment's length"));
                }
                plain.extend_from_slice(piece);
                if plain.len() - head == body_len {
                    break;
                }
                model.push(token).map_err(coder_error)?;
            }
        }
        plain.extend_from_slice(&payload[1 + head..1 + head + tail]);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::synthetic::SyntheticModel;

    /// The synthetic model, with a flag it sets itself after `trip_at` steps and a count
    /// of the steps taken after that.
    struct Tripwire {
        inner: SyntheticModel,
        flag: Arc<AtomicBool>,
        steps: usize,
        trip_at: usize,
        after: Arc<AtomicU64>,
    }

    impl ProbabilityModel for Tripwire {
        fn distribution(&mut self) -> Result<&Distribution, CoderError> {
            if self.flag.load(Ordering::Relaxed) {
                self.after.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.distribution()
        }
        fn push(&mut self, s: u32) -> Result<(), CoderError> {
            self.steps += 1;
            if self.steps == self.trip_at {
                self.flag.store(true, Ordering::Relaxed);
            }
            self.inner.push(s)
        }
    }

    impl TokenModel for Tripwire {
        fn tokenize_exact(&self, text: &str) -> Option<Vec<u32>> {
            self.inner.tokenize_exact(text)
        }
        fn piece(&self, token: u32) -> &[u8] {
            self.inner.piece(token)
        }
        fn max_tokens(&self) -> usize {
            self.inner.max_tokens()
        }
        fn reset(&mut self) -> Result<(), CoderError> {
            self.inner.reset()
        }
        fn profile(&self) -> &CodecProfile {
            self.inner.profile()
        }
    }

    fn tripwire(trip_at: usize) -> (SegmentCoder<'static>, Arc<AtomicBool>, Arc<AtomicU64>) {
        let flag = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicU64::new(0));
        let mut coder = SegmentCoder::new(
            Tripwire {
                inner: SyntheticModel::new(),
                flag: Arc::clone(&flag),
                steps: 0,
                trip_at,
                after: Arc::clone(&after),
            },
            true,
        );
        coder.set_cancel(Arc::clone(&flag));
        (coder, flag, after)
    }

    #[test]
    fn cancel_stops_encode_and_decode_within_a_step() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/gemma-3-270m-q4_k_m-007.md"
        );
        let text = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
        // Set in the middle of the encode.
        let (mut coder, flag, after) = tripwire(500);
        assert_eq!(
            coder.encode(text.as_bytes()).err(),
            Some(FrameError::Cancelled)
        );
        assert_eq!(after.load(Ordering::Relaxed), 0, "no step after the flag");
        // While the flag stays set, every call fails at once; cleared, it codes.
        assert_eq!(
            coder.encode(b"more text").err(),
            Some(FrameError::Cancelled)
        );
        flag.store(false, Ordering::Relaxed);
        let (frame, report) = coder.encode(text.as_bytes()).unwrap();
        assert_eq!(report.codec, Some(Codec::Llm));
        // Set in the middle of the verifying decode: n bytes encode in n - 1 steps.
        let (mut coder, _, after) = tripwire(text.len() + 300);
        assert_eq!(
            coder.encode(text.as_bytes()).err(),
            Some(FrameError::Cancelled)
        );
        assert_eq!(after.load(Ordering::Relaxed), 0);
        // And in a plain decode.
        let (mut coder, _, after) = tripwire(300);
        assert_eq!(coder.decode(&frame), Err(FrameError::Cancelled));
        assert_eq!(after.load(Ordering::Relaxed), 0);
        // Frames that need no model decode whatever the flag says.
        let (mut coder, flag, _) = tripwire(1);
        flag.store(true, Ordering::Relaxed);
        let fast = frame::encode_fast(b"zstd or raw");
        assert_eq!(coder.decode(&fast).unwrap(), b"zstd or raw");
    }

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
