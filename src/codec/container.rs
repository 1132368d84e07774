//! The standalone container written by `llmfs compress`.
//!
//! Layout (varints are unsigned LEB128, [`crate::frame::varint`]):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | magic | 3 bytes | `LLZ` |
//! | version | 1 byte | container format version (1) |
//! | flags | 1 byte | bits 0-1: [`Backend`] the probabilities were computed on; bit 2: GPU offload; bit 3: a model fingerprint follows |
//! | fingerprint | 8 bytes, if flag bit 3 | first 8 bytes of the SHA-256 of the GGUF model (present when any segment is LLM-coded) |
//! | segment_size | varint | plaintext bytes per segment (the last may be shorter) |
//! | plain_len | varint | total plaintext length; the segment count follows from it |
//! | frame lengths | varint each | byte length of every frame but the last (the last runs to the end) |
//! | frames | rest | one [`crate::frame`] per segment, in order |
//!
//! The segment table lets a reader decode any byte range by decoding only the segments
//! it touches ([`Container::read_range`]). Every frame carries its own CRC.

use super::fingerprint::{self, Fingerprint, SHORT_LEN};
use super::llm::Backend;
use super::segment::{SegmentCoder, SegmentReport};
use crate::frame::{self, varint, Codec, FrameError};

pub const MAGIC: &[u8; 3] = b"LLZ";
pub const VERSION: u8 = 1;
const FLAG_OFFLOAD: u8 = 1 << 2;
const FLAG_MODEL: u8 = 1 << 3;
/// Largest segment size accepted when reading: bounds what one frame may allocate.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("not an llmfs compressed file (bad magic)")]
    BadMagic,
    #[error(
        "compressed file format version {0} is not supported (this build reads version {VERSION})"
    )]
    UnsupportedVersion(u8),
    #[error("compressed file is truncated or its header is corrupted")]
    Truncated,
    #[error("compressed file header is corrupted: {0}")]
    BadHeader(String),
    #[error(
        "wrong model: the file was compressed with the model whose fingerprint starts {expected}, \
         but the loaded model {loaded_name} has fingerprint {loaded}"
    )]
    WrongModel {
        expected: String,
        loaded: String,
        loaded_name: String,
    },
    #[error("the file has LLM-coded segments and needs its model (fingerprint {0}) to decompress")]
    NeedsModel(String),
    #[error("segment {index} (bytes {start}..{end}) is corrupted: {source}{hint}")]
    Segment {
        index: usize,
        start: u64,
        end: u64,
        source: FrameError,
        hint: String,
    },
    #[error("segment size must be between 1 byte and {MAX_SEGMENT_SIZE} bytes")]
    BadSegmentSize,
}

/// A parsed container header and segment table over borrowed bytes.
pub struct Container<'a> {
    bytes: &'a [u8],
    pub backend: Backend,
    pub offloaded: bool,
    pub model: Option<[u8; SHORT_LEN]>,
    pub segment_size: u64,
    pub plain_len: u64,
    /// Start of every frame in `bytes`, plus the end of the last.
    frame_bounds: Vec<usize>,
}

/// Encodes `plain` into a container, segment by segment. `progress` is told the
/// plaintext bytes done after each segment.
pub fn compress(
    plain: &[u8],
    segment_size: usize,
    coder: &mut SegmentCoder<'_>,
    mut progress: impl FnMut(usize, &SegmentReport),
) -> Result<(Vec<u8>, Vec<SegmentReport>), ContainerError> {
    if segment_size == 0 || segment_size as u64 > MAX_SEGMENT_SIZE {
        return Err(ContainerError::BadSegmentSize);
    }
    let mut frames = Vec::new();
    let mut reports = Vec::new();
    let mut done = 0;
    for (index, seg) in plain.chunks(segment_size).enumerate() {
        let (f, report) = coder
            .encode(seg)
            .map_err(|source| ContainerError::Segment {
                index,
                start: done as u64,
                end: (done + seg.len()) as u64,
                source,
                hint: String::new(),
            })?;
        done += seg.len();
        progress(done, &report);
        frames.push(f);
        reports.push(report);
    }
    let any_llm = reports.iter().any(|r| r.codec == Some(Codec::Llm));
    let model = coder.session().model();
    let header = Header {
        backend: model.backend(),
        offloaded: model.gpu_layers() > 0,
        model: any_llm.then(|| model.fingerprint().short()),
        segment_size: segment_size as u64,
        plain_len: plain.len() as u64,
    };
    let out = assemble(&header, &frames);
    Ok((out, reports))
}

/// The container's fields other than the frames.
pub struct Header {
    pub backend: Backend,
    pub offloaded: bool,
    pub model: Option<[u8; SHORT_LEN]>,
    pub segment_size: u64,
    pub plain_len: u64,
}

/// Writes a container around already encoded frames.
pub fn assemble(header: &Header, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(Vec::len).sum::<usize>() + 32);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let mut flags = header.backend as u8;
    if header.offloaded {
        flags |= FLAG_OFFLOAD;
    }
    if header.model.is_some() {
        flags |= FLAG_MODEL;
    }
    out.push(flags);
    if let Some(fp) = &header.model {
        out.extend_from_slice(fp);
    }
    varint::put(&mut out, header.segment_size);
    varint::put(&mut out, header.plain_len);
    for f in frames.iter().take(frames.len().saturating_sub(1)) {
        varint::put(&mut out, f.len() as u64);
    }
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

impl<'a> Container<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Container<'a>, ContainerError> {
        if bytes.len() < 4 || &bytes[..3] != MAGIC {
            return Err(if bytes.len() < 4 && MAGIC.starts_with(bytes) {
                ContainerError::Truncated
            } else {
                ContainerError::BadMagic
            });
        }
        if bytes[3] != VERSION {
            return Err(ContainerError::UnsupportedVersion(bytes[3]));
        }
        let flags = *bytes.get(4).ok_or(ContainerError::Truncated)?;
        if flags >> 4 != 0 {
            return Err(ContainerError::BadHeader(format!(
                "unknown flags {flags:#04x}"
            )));
        }
        let mut pos = 5;
        let model = if flags & FLAG_MODEL != 0 {
            let fp = bytes
                .get(pos..pos + SHORT_LEN)
                .ok_or(ContainerError::Truncated)?;
            pos += SHORT_LEN;
            Some(fp.try_into().expect("slice of SHORT_LEN"))
        } else {
            None
        };
        let segment_size = varint::get(bytes, &mut pos).ok_or(ContainerError::Truncated)?;
        let plain_len = varint::get(bytes, &mut pos).ok_or(ContainerError::Truncated)?;
        if segment_size == 0 || segment_size > MAX_SEGMENT_SIZE {
            return Err(ContainerError::BadHeader(format!(
                "segment size {segment_size}"
            )));
        }
        let segments = plain_len.div_ceil(segment_size);
        // Every frame takes at least 6 bytes: a count beyond that is corruption, caught
        // before it sizes an allocation.
        if segments > (bytes.len() / 6) as u64 {
            return Err(ContainerError::Truncated);
        }
        let mut lens = Vec::with_capacity(segments as usize);
        for _ in 1..segments {
            let len = varint::get(bytes, &mut pos).ok_or(ContainerError::Truncated)?;
            lens.push(usize::try_from(len).map_err(|_| ContainerError::Truncated)?);
        }
        let mut frame_bounds = Vec::with_capacity(segments as usize + 1);
        frame_bounds.push(pos);
        for len in lens {
            let next = pos
                .checked_add(len)
                .filter(|&n| n <= bytes.len())
                .ok_or(ContainerError::Truncated)?;
            frame_bounds.push(next);
            pos = next;
        }
        if segments > 0 {
            frame_bounds.push(bytes.len());
        } else if pos != bytes.len() {
            return Err(ContainerError::BadHeader("data after an empty file".into()));
        }
        Ok(Container {
            bytes,
            backend: Backend::from_bits(flags),
            offloaded: flags & FLAG_OFFLOAD != 0,
            model,
            segment_size,
            plain_len,
            frame_bounds,
        })
    }

    pub fn segments(&self) -> usize {
        self.frame_bounds.len().saturating_sub(1)
    }

    pub fn frame(&self, index: usize) -> &'a [u8] {
        &self.bytes[self.frame_bounds[index]..self.frame_bounds[index + 1]]
    }

    /// Bytes of the container that are not frame payloads' own headers: the header and
    /// the segment table.
    pub fn header_len(&self) -> usize {
        self.frame_bounds[0]
    }

    /// Whether any segment needs the model.
    pub fn needs_model(&self) -> bool {
        self.model.is_some()
    }

    /// Refuses a coder whose model is not the one the file was written with.
    pub fn check_model(&self, coder: Option<&SegmentCoder<'_>>) -> Result<(), ContainerError> {
        let Some(expected) = self.model else {
            return Ok(());
        };
        let Some(coder) = coder else {
            return Err(ContainerError::NeedsModel(fingerprint::hex(&expected)));
        };
        let loaded: &Fingerprint = coder.session().model().fingerprint();
        if !loaded.matches_short(&expected) {
            return Err(ContainerError::WrongModel {
                expected: fingerprint::hex(&expected),
                loaded: loaded.to_string(),
                loaded_name: coder.session().model().name(),
            });
        }
        Ok(())
    }

    /// Decodes segment `index`.
    pub fn decode_segment(
        &self,
        index: usize,
        mut coder: Option<&mut SegmentCoder<'_>>,
    ) -> Result<Vec<u8>, ContainerError> {
        let start = index as u64 * self.segment_size;
        let end = (start + self.segment_size).min(self.plain_len);
        let frame_bytes = self.frame(index);
        // Check the frame's length before decoding: a corrupted length must not make the
        // model run for longer than one segment.
        let result = frame::parse_header(frame_bytes).and_then(|h| {
            if h.plain_len == end - start {
                Ok(())
            } else {
                Err(FrameError::Corrupt(format!(
                    "frame holds {} bytes, segment has {}",
                    h.plain_len,
                    end - start
                )))
            }
        });
        let result = result.and_then(|()| match coder.as_deref_mut() {
            Some(c) => c.decode(frame_bytes),
            None => frame::decode(frame_bytes, None),
        });
        result.map_err(|source| {
            let hint = match (&source, coder) {
                (FrameError::Checksum { .. }, Some(c)) if self.backend != c.session().model().backend() => {
                    format!(
                        " (the file was encoded on the {} backend and this decoder computes on {}: \
                         llama.cpp's probabilities differ between backends, decode it with a {} build)",
                        self.backend.name(),
                        c.session().model().backend().name(),
                        self.backend.name()
                    )
                }
                (FrameError::Checksum { .. }, Some(c)) if self.offloaded != (c.session().model().gpu_layers() > 0) => {
                    format!(
                        " (the file was encoded {} GPU offload and this decoder runs {} it: use the same --gpu-layers)",
                        if self.offloaded { "with" } else { "without" },
                        if self.offloaded { "without" } else { "with" }
                    )
                }
                _ => String::new(),
            };
            ContainerError::Segment { index, start, end, source, hint }
        })
    }

    /// Decodes the plaintext bytes `offset..offset + len` (clamped to the file), touching
    /// only the segments that hold them.
    pub fn read_range(
        &self,
        offset: u64,
        len: u64,
        mut coder: Option<&mut SegmentCoder<'_>>,
    ) -> Result<Vec<u8>, ContainerError> {
        let end = offset.saturating_add(len).min(self.plain_len);
        let mut out = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        let first = offset / self.segment_size;
        let last = (end - 1) / self.segment_size;
        for index in first..=last {
            let seg = self.decode_segment(index as usize, coder.as_deref_mut())?;
            let seg_start = index * self.segment_size;
            let from = offset.saturating_sub(seg_start) as usize;
            let to = ((end - seg_start) as usize).min(seg.len());
            out.extend_from_slice(&seg[from..to]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_container(plain: &[u8], segment_size: usize) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = plain.chunks(segment_size).map(frame::encode_fast).collect();
        let header = Header {
            backend: Backend::Cpu,
            offloaded: false,
            model: None,
            segment_size: segment_size as u64,
            plain_len: plain.len() as u64,
        };
        assemble(&header, &frames)
    }

    #[test]
    fn fast_round_trip_and_ranges() {
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = fast_container(&plain, 1000);
        let c = Container::parse(&bytes).unwrap();
        assert_eq!(c.segments(), 10);
        assert!(!c.needs_model());
        assert_eq!(c.read_range(0, u64::MAX, None).unwrap(), plain);
        assert_eq!(c.read_range(999, 2, None).unwrap(), &plain[999..1001]);
        assert_eq!(c.read_range(9_990, 100, None).unwrap(), &plain[9_990..]);
        assert!(c.read_range(20_000, 5, None).unwrap().is_empty());
        let empty = fast_container(b"", 4096);
        assert_eq!(Container::parse(&empty).unwrap().segments(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let plain = b"some text some text some text".repeat(40);
        let good = fast_container(&plain, 128);
        let mut x = 88172645463325252u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut bad = good.clone();
            let kind = next() % 3;
            match kind {
                0 => bad.truncate((next() as usize) % good.len()),
                1 => {
                    let i = (next() as usize) % bad.len();
                    bad[i] ^= (next() as u8) | 1;
                }
                _ => bad = (0..next() % 64).map(|_| next() as u8).collect(),
            }
            let decoded = Container::parse(&bad).and_then(|c| c.read_range(0, u64::MAX, None));
            if let (Ok(out), 0 | 1) = (decoded, kind) {
                // Only a flip in a field that does not change the bytes (the backend
                // bits, say) may decode, and then to the original.
                assert_eq!(out, plain);
            }
        }
    }

    #[test]
    fn header_errors() {
        assert!(matches!(
            Container::parse(b"PK\x03\x04"),
            Err(ContainerError::BadMagic)
        ));
        assert!(matches!(
            Container::parse(b"LL"),
            Err(ContainerError::Truncated)
        ));
        assert!(matches!(
            Container::parse(b"LLZ\x09\x00"),
            Err(ContainerError::UnsupportedVersion(9))
        ));
    }
}
