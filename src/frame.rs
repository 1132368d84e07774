//! Frames: the self-describing encoding of one segment of bytes.
//!
//! A frame is what the container stores per segment and what the filesystem stores per
//! chunk. Its layout (all integers little endian, `varint` is unsigned LEB128):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | tag | 1 byte | high nibble: frame format version (1); low nibble: [`Codec`] |
//! | plain_len | varint | length of the plaintext |
//! | crc | 4 bytes | CRC-32 (IEEE) of the plaintext |
//! | payload | rest | codec specific; raw: the plaintext; zstd: one zstd frame; LLM: see [`crate::codec::segment`]; lost: why (UTF-8) |
//!
//! A *lost* frame holds no data: `llmfs fsck --salvage` puts one where a chunk of a file
//! could not be recovered, so that reading it is an I/O error naming why, never zeros.
//!
//! The model fingerprint of LLM frames is not repeated per frame: the container header
//! and the filesystem superblock record it once, and both refuse a different model
//! before any frame is decoded. The CRC makes every decode verifiable: a mismatch is an
//! error, never silently wrong bytes.

// Defines an on-disk layout (the frame layout); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use std::io::Read;

/// Format version written in the high nibble of the tag byte.
pub const FRAME_VERSION: u8 = 1;

/// zstd level used for the fast tier. Level 1 against 3 at 4 KiB chunks (`zstd -b1 -B4096`
/// on `tests/corpus`): 212 against 154 MB/s on one core, 2.24x against 2.25x;
/// `scripts/bench-ab.sh` has it 1.09-1.14x faster on sequential writes and 4-7% faster on
/// `tar -xf` (both builds in the same run, 2026-12-06). The fast tier is what chunks wait
/// in for the model, so its speed is worth more than its last percent. Decoding does not
/// depend on the level: frames written at level 3 read the same.
pub const ZSTD_LEVEL: i32 = 1;

/// How the payload of a frame is coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is: the payload is the plaintext.
    Raw = 0,
    /// One zstd frame ([`ZSTD_LEVEL`] for the fast tier).
    Zstd = 1,
    /// Range-coded tokens under the language model ([`crate::codec::segment`]); decoding
    /// needs the model.
    Llm = 2,
    /// A chunk that salvage could not recover: it reads as an error.
    Lost = 3,
}

impl Codec {
    /// Every codec, in the order of their numbers.
    pub const ALL: [Codec; 4] = [Codec::Raw, Codec::Zstd, Codec::Llm, Codec::Lost];

    /// The codec's lowercase name (`raw`, `zstd`, `llm`, `lost`), for statistics and
    /// messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::Llm => "llm",
            Codec::Lost => "lost",
        }
    }

    fn from_nibble(n: u8) -> Option<Codec> {
        Codec::ALL.get(usize::from(n)).copied()
    }
}

/// Why a frame could not be parsed or decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame ends inside its header (tag, length or CRC), or is empty.
    #[error("frame is truncated")]
    Truncated,
    /// The tag's high nibble is not [`FRAME_VERSION`].
    #[error(
        "frame format version {0} is not supported (this build reads version {FRAME_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// The tag's low nibble names no [`Codec`].
    #[error("unknown codec {0} in frame")]
    UnknownCodec(u8),
    /// The payload does not decode (bad zstd stream, invalid range code, impossible
    /// length); the text says where.
    #[error("frame payload is corrupted: {0}")]
    Corrupt(String),
    /// The payload decoded, but to bytes whose length or CRC-32 differs from the
    /// header's.
    #[error(
        "checksum mismatch: decoded {got_len} bytes with CRC {got:08x}, frame says CRC {want:08x}"
    )]
    Checksum {
        /// The CRC the frame header records.
        want: u32,
        /// The CRC of the decoded bytes.
        got: u32,
        /// The length of the decoded bytes.
        got_len: usize,
    },
    /// An LLM frame is to be decoded and no model is loaded (or handed to [`decode`]).
    #[error("frame is LLM-coded and no model is loaded to decode it")]
    NeedsModel,
    /// The coder failed for a reason other than the data (a llama.cpp error, a model pool
    /// that is shut down or failed); the text is its message.
    #[error("the language model failed: {0}")]
    Model(String),
    /// The chunk was lost to damage (a [`Codec::Lost`] frame): the text says how.
    #[error("this chunk was lost: {0}")]
    Lost(String),
    /// The caller's cancel flag was set ([`crate::codec::segment::SegmentCoder::set_cancel`]):
    /// nothing is wrong with the data, try again later.
    #[error("coding was cancelled")]
    Cancelled,
}

/// A stored frame's bytes, as a type of their own: a frame and the plaintext it codes
/// are both bytes, and a function that takes one must not be handed the other. It
/// derefs to the bytes for reading; [`Frame::into_vec`] gives them up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame(Vec<u8>);

impl Frame {
    /// The bytes, given up (to a codec or a store record).
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// The codec its header names; `None` when the header is damaged.
    pub fn codec(&self) -> Option<Codec> {
        codec_of(&self.0)
    }

    /// Whether decoding it needs the model.
    pub fn needs_model(&self) -> bool {
        needs_model(&self.0)
    }
}

/// What [`Frame`] and [`Plain`] share: made from bytes, read as bytes.
macro_rules! bytes_type {
    ($t:ident) => {
        impl From<Vec<u8>> for $t {
            fn from(bytes: Vec<u8>) -> $t {
                $t(bytes)
            }
        }

        impl std::ops::Deref for $t {
            type Target = [u8];

            fn deref(&self) -> &[u8] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $t {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
    };
}

bytes_type!(Frame);

/// A chunk's plaintext, as a type of its own: what a frame decodes to (its CRC checked)
/// and what the filesystem caches, never to be stored or coded as a frame (nor a frame
/// as it). It derefs to the bytes for reading; [`Plain::into_vec`] gives them up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plain(Vec<u8>);

impl Plain {
    /// The bytes, given up.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Bytes allocated for it (memory accounting).
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

bytes_type!(Plain);

impl PartialEq<Vec<u8>> for Plain {
    fn eq(&self, other: &Vec<u8>) -> bool {
        &self.0 == other
    }
}

impl PartialEq<[u8]> for Plain {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Plain {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Plain {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.0 == other[..]
    }
}

impl PartialEq<Plain> for Vec<u8> {
    fn eq(&self, other: &Plain) -> bool {
        self == &other.0
    }
}

/// The fixed part of a frame, parsed without touching the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// How the payload is coded.
    pub codec: Codec,
    /// Length of the plaintext in bytes.
    pub plain_len: u64,
    /// CRC-32 (IEEE) of the plaintext, stored little endian.
    pub crc: u32,
    /// Offset of the payload within the frame.
    pub header_len: usize,
}

/// A decoder for LLM payloads; the frame layer only dispatches to it.
pub trait LlmPayloadDecoder {
    /// Decodes an LLM payload to exactly `plain_len` bytes; the caller checks them
    /// against the frame's CRC.
    fn decode_llm_payload(
        &mut self,
        payload: &[u8],
        plain_len: usize,
    ) -> Result<Vec<u8>, FrameError>;
}

/// CRC-32 (IEEE) of `data`, as frames record it.
pub fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Writes the header of a frame for `plain` coded with `codec`.
pub fn write_header(out: &mut Vec<u8>, codec: Codec, plain: &[u8]) {
    out.push((FRAME_VERSION << 4) | codec as u8);
    varint::put(out, plain.len() as u64);
    out.extend_from_slice(&crc(plain).to_le_bytes());
}

/// Encodes `plain` with the fast tier: zstd, or raw when zstd does not shrink it.
pub fn encode_fast(plain: &[u8]) -> Vec<u8> {
    let zstd = zstd::bulk::compress(plain, ZSTD_LEVEL).ok();
    let mut out = Vec::with_capacity(plain.len().min(64) + 16);
    match zstd {
        Some(z) if z.len() < plain.len() => {
            write_header(&mut out, Codec::Zstd, plain);
            out.extend_from_slice(&z);
        }
        _ => {
            write_header(&mut out, Codec::Raw, plain);
            out.extend_from_slice(plain);
        }
    }
    out
}

/// A frame that stands for `plain_len` bytes that were lost, saying why.
pub fn lost(plain_len: u64, why: &str) -> Vec<u8> {
    let mut out = vec![(FRAME_VERSION << 4) | Codec::Lost as u8];
    varint::put(&mut out, plain_len);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(why.as_bytes());
    out
}

/// Builds a frame around an already coded payload.
pub fn assemble(codec: Codec, plain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    write_header(&mut out, codec, plain);
    out.extend_from_slice(payload);
    out
}

/// The codec a frame's header names; `None` when the header is damaged (the frame then
/// fails to decode, whoever asks).
pub fn codec_of(frame: &[u8]) -> Option<Codec> {
    parse_header(frame).ok().map(|h| h.codec)
}

/// Whether decoding `frame` needs the model (the one question the filesystem asks of a
/// frame before it decides which thread decodes it).
pub fn needs_model(frame: &[u8]) -> bool {
    codec_of(frame) == Some(Codec::Llm)
}

/// Parses the tag, plaintext length and CRC at the start of `frame`, without touching the
/// payload.
pub fn parse_header(frame: &[u8]) -> Result<FrameHeader, FrameError> {
    let tag = *frame.first().ok_or(FrameError::Truncated)?;
    let version = tag >> 4;
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let codec = Codec::from_nibble(tag & 0x0f).ok_or(FrameError::UnknownCodec(tag & 0x0f))?;
    let mut pos = 1;
    let plain_len = varint::get(frame, &mut pos).ok_or(FrameError::Truncated)?;
    let crc_bytes = frame.get(pos..pos + 4).ok_or(FrameError::Truncated)?;
    let crc = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
    Ok(FrameHeader {
        codec,
        plain_len,
        crc,
        header_len: pos + 4,
    })
}

/// Decodes a frame and checks its CRC. `llm` is needed only for LLM frames.
pub fn decode(frame: &[u8], llm: Option<&mut dyn LlmPayloadDecoder>) -> Result<Plain, FrameError> {
    let header = parse_header(frame)?;
    let payload = &frame[header.header_len..];
    let plain_len = usize::try_from(header.plain_len).map_err(|_| {
        FrameError::Corrupt(format!("plaintext length {} too large", header.plain_len))
    })?;
    let plain = match header.codec {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => decode_zstd(payload, plain_len)?,
        Codec::Llm => llm
            .ok_or(FrameError::NeedsModel)?
            .decode_llm_payload(payload, plain_len)?,
        Codec::Lost => {
            return Err(FrameError::Lost(
                String::from_utf8_lossy(payload).into_owned(),
            ))
        }
    };
    verify(&header, &plain)?;
    Ok(Plain(plain))
}

/// Decodes a fast-tier frame (raw or zstd) straight into `out`, which must hold exactly
/// its plaintext length, and checks its CRC like [`decode`]: a read is spared the buffer
/// and the copy [`decode`] would cost it per chunk. An LLM frame is [`FrameError::NeedsModel`], a lost
/// chunk [`FrameError::Lost`]; a frame promising another length is an error before
/// anything is decoded.
pub fn decode_fast_into(frame: &[u8], out: &mut [u8]) -> Result<(), FrameError> {
    let header = parse_header(frame)?;
    let payload = &frame[header.header_len..];
    if header.plain_len != out.len() as u64 {
        return Err(FrameError::Corrupt(format!(
            "the frame holds {} bytes, {} were expected",
            header.plain_len,
            out.len()
        )));
    }
    match header.codec {
        // Of another length, the bytes fail the check as they are.
        Codec::Raw if payload.len() != out.len() => return verify(&header, payload),
        Codec::Raw => out.copy_from_slice(payload),
        Codec::Zstd => {
            let n = decode_zstd_into(payload, out)?;
            if n != out.len() {
                return verify(&header, &out[..n]);
            }
        }
        Codec::Llm => return Err(FrameError::NeedsModel),
        Codec::Lost => {
            return Err(FrameError::Lost(
                String::from_utf8_lossy(payload).into_owned(),
            ))
        }
    }
    verify(&header, out)
}

/// Checks decoded bytes against the frame's length and CRC.
pub fn verify(header: &FrameHeader, plain: &[u8]) -> Result<(), FrameError> {
    let got = crc(plain);
    if plain.len() as u64 != header.plain_len || got != header.crc {
        return Err(FrameError::Checksum {
            want: header.crc,
            got,
            got_len: plain.len(),
        });
    }
    Ok(())
}

/// Frames up to this size decode in one call into a buffer of exactly the promised
/// length, with a zstd context kept per thread: a new context per 4 KiB chunk was 37% of
/// a cold sequential read's time (a profile of the daemon, 2026-12-05).
const ONE_SHOT_MAX: usize = 1 << 24;

thread_local! {
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        zstd::bulk::Decompressor::new().ok().into();
}

/// Decodes a zstd payload into `out` with this thread's context; the bytes written. A
/// payload that decodes to more than `out` holds fails (the buffer is too small).
fn decode_zstd_into(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let one_shot = DCTX.with(|d| {
        d.borrow_mut()
            .as_mut()
            .map(|d| d.decompress_to_buffer(payload, &mut *out))
    });
    match one_shot {
        Some(r) => r.map_err(|e| FrameError::Corrupt(format!("zstd: {e}"))),
        None => {
            let plain = decode_zstd(payload, out.len())?;
            let n = plain.len().min(out.len());
            out[..n].copy_from_slice(&plain[..n]);
            Ok(plain.len())
        }
    }
}

fn decode_zstd(payload: &[u8], plain_len: usize) -> Result<Vec<u8>, FrameError> {
    if plain_len <= ONE_SHOT_MAX {
        // A payload that decodes to more than the header promised fails here (the buffer
        // is too small); to less, the caller's length and CRC checks find it.
        let one_shot = DCTX.with(|d| {
            d.borrow_mut()
                .as_mut()
                .map(|d| d.decompress(payload, plain_len))
        });
        if let Some(r) = one_shot {
            return r.map_err(|e| FrameError::Corrupt(format!("zstd: {e}")));
        }
    }
    // Bounded read: a corrupted length or payload can neither allocate without limit
    // nor produce more bytes than the header promised.
    let mut decoder = zstd::stream::read::Decoder::new(payload)
        .map_err(|e| FrameError::Corrupt(format!("zstd: {e}")))?;
    let mut out = Vec::with_capacity(plain_len.min(1 << 24));
    (&mut decoder)
        .take(plain_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Corrupt(format!("zstd: {e}")))?;
    Ok(out)
}

/// Unsigned LEB128, used by every on-disk layout of the crate.
pub mod varint {
    /// Appends `v` as unsigned LEB128 (1 to 10 bytes).
    pub fn put(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Reads a varint at `*pos`, advancing it; `None` when truncated or over 64 bits.
    pub fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos)?;
            *pos += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_round_trip_text_and_binary() {
        let text = b"The quick brown fox jumps over the lazy dog. ".repeat(50);
        let f = encode_fast(&text);
        assert_eq!(parse_header(&f).unwrap().codec, Codec::Zstd);
        assert!(f.len() < text.len() / 5);
        assert_eq!(decode(&f, None).unwrap(), text);

        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let f = encode_fast(&random);
        assert!(
            f.len() <= random.len() + 6,
            "raw fallback grows by the header only"
        );
        assert_eq!(decode(&f, None).unwrap(), random);

        let f = encode_fast(b"");
        assert!(decode(&f, None).unwrap().is_empty());
    }

    #[test]
    fn corruption_is_an_error_never_wrong_bytes() {
        let text = b"hello hello hello hello hello hello hello".repeat(20);
        let f = encode_fast(&text);
        for i in 0..f.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut bad = f.clone();
                bad[i] ^= bit;
                if let Ok(out) = decode(&bad, None) {
                    assert_eq!(
                        out, text,
                        "a decode that succeeds must give the original bytes"
                    );
                }
            }
        }
        for cut in 0..f.len() {
            assert!(decode(&f[..cut], None).is_err());
        }
    }

    #[test]
    fn a_zstd_payload_longer_or_shorter_than_its_header_says_is_an_error() {
        let plain = b"twelve bytes of text, then some more of it".repeat(40);
        let z = zstd::bulk::compress(&plain, ZSTD_LEVEL).unwrap();
        // A header promising less (a bit flipped in the length), or more, than the
        // payload holds: an error either way, on the one-shot path and the streaming one.
        for promised in [plain.len() / 2, plain.len() + 7, ONE_SHOT_MAX + 1] {
            let mut f = assemble(Codec::Zstd, &plain[..promised.min(plain.len())], &z);
            if promised > plain.len() {
                f = Vec::new();
                f.push((FRAME_VERSION << 4) | Codec::Zstd as u8);
                varint::put(&mut f, promised as u64);
                f.extend_from_slice(&crc(&plain).to_le_bytes());
                f.extend_from_slice(&z);
            }
            assert!(decode(&f, None).is_err(), "promised {promised}");
        }
        let ok = assemble(Codec::Zstd, &plain, &z);
        assert_eq!(decode(&ok, None).unwrap(), plain);
    }

    #[test]
    fn a_fast_frame_decodes_in_place_and_a_bad_one_is_an_error() {
        let text = b"a line of generated text, a line of it again\n".repeat(90);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for plain in [&text[..], &noise[..], &b""[..]] {
            let f = encode_fast(plain);
            let mut out = vec![0xAAu8; plain.len()];
            decode_fast_into(&f, &mut out).unwrap();
            assert_eq!(out, plain);
            // A buffer of another length and a cut frame are errors; a flipped bit
            // anywhere is an error or changes nothing of the bytes (a bit zstd ignores).
            let mut longer = vec![0u8; plain.len() + 1];
            assert!(decode_fast_into(&f, &mut longer).is_err());
            let mut refused = 0;
            for i in 0..f.len() {
                let mut bad = f.clone();
                bad[i] ^= 0x10;
                let mut out = vec![0u8; plain.len()];
                match decode_fast_into(&bad, &mut out) {
                    Ok(()) => assert_eq!(out, plain, "byte {i} of {}", f.len()),
                    Err(_) => refused += 1,
                }
            }
            assert!(
                refused * 10 >= f.len() * 9,
                "{refused} of {} flips refused",
                f.len()
            );
            for cut in 0..f.len() {
                let mut out = vec![0u8; plain.len()];
                assert!(
                    decode_fast_into(&f[..cut], &mut out).is_err(),
                    "cut at {cut}"
                );
            }
        }
        // A zstd payload that holds more or fewer bytes than its header says.
        let z = zstd::bulk::compress(&text, ZSTD_LEVEL).unwrap();
        for promised in [text.len() / 2, text.len() + 7] {
            let mut f = Vec::new();
            f.push((FRAME_VERSION << 4) | Codec::Zstd as u8);
            varint::put(&mut f, promised as u64);
            f.extend_from_slice(&crc(&text).to_le_bytes());
            f.extend_from_slice(&z);
            let mut out = vec![0u8; promised];
            assert!(
                decode_fast_into(&f, &mut out).is_err(),
                "promised {promised}"
            );
        }
        let mut out = vec![0u8; 10];
        let e = decode_fast_into(&lost(10, "gone"), &mut out).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }

    #[test]
    fn a_lost_chunk_reads_as_an_error_saying_why() {
        let f = lost(4096, "page 12 of the database was unreadable");
        let h = parse_header(&f).unwrap();
        assert_eq!((h.codec, h.plain_len), (Codec::Lost, 4096));
        let e = decode(&f, None).unwrap_err();
        assert!(e.to_string().contains("page 12"), "{e}");
    }

    #[test]
    fn llm_frame_without_model_is_a_clear_error() {
        let f = assemble(Codec::Llm, b"abc", &[1, 2, 3]);
        assert_eq!(decode(&f, None), Err(FrameError::NeedsModel));
    }

    #[test]
    fn varint_round_trip_and_overflow() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            varint::put(&mut b, v);
            let mut pos = 0;
            assert_eq!(varint::get(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        let mut pos = 0;
        assert_eq!(varint::get(&[0xff; 11], &mut pos), None);
    }
}
