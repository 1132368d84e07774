//! The standalone container written by `llmfs compress`.
//!
//! Layout of version 3, written by this build (varints are unsigned LEB128,
//! [`crate::frame::varint`]): a one-segment file spends 18 bytes on it, and the LLM
//! payload one more on its UTF-8 edges ([`super::segment`]).
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | magic | 3 bytes | `LLZ` |
//! | version | 1 byte | container format version (3) |
//! | flags | 1 byte | bit 0: the codec's identity follows (when any segment is LLM-coded); bit 1: segments of [`DEFAULT_SEGMENT_SIZE`](super::DEFAULT_SEGMENT_SIZE) bytes, no segment_size field; other bits 0 |
//! | identity | 6 bytes, if flag bit 0 | [`CodecProfile::tiny`]: 3 bytes of the model's fingerprint, 3 of a digest of the rest of the codec profile (coder version, primer, llama.cpp build, backend, offload, CPU kernels) |
//! | segment_size | varint, unless flag bit 1 | plaintext bytes per segment (the last may be shorter), at most [`MAX_SEGMENT_SIZE`] |
//! | plain_len | varint | total plaintext length; the segment count follows from it |
//! | frame lengths | varint each | byte length of every frame but the last (the last runs to the end) |
//! | frames | rest | one [`crate::frame`] per segment, in order, without its plain_len field (the segment's length, known from the header) |
//!
//! A decoder finds the coding by the identity: the model's fingerprint must match, and
//! the digest one of the codings this build has for that model ([`super::primer::Coding`]),
//! else the file is refused, saying whether the model or the rest differs. The digest's
//! 3 bytes make a chance match 1 in 16 million, and every segment's CRC is checked.
//!
//! Version 2 recorded the whole [`CodecProfile`] (flag bit 0, a length byte and the
//! profile, about 37 bytes) and frames with their plain_len. Version 1 (llmfs before the
//! codec profile) had, instead of the profile, flags bits 0-1: [`Backend`], bit 2: GPU
//! offload, bit 3: an 8-byte model fingerprint follows. Its LLM segments were coded with
//! flash attention on, so their code depends on the thread count of the machine that
//! wrote them, which it did not record; [`super::legacy`] decodes them by trying thread
//! counts. Both still decode.
//!
//! The segment table lets a reader decode any byte range by decoding only the segments
//! it touches ([`Container::read_range`]), or stream the file segment by segment
//! ([`ContainerReader`]). Every frame carries its own CRC. A reader allocates at most
//! one segment (16 MiB at most) at a time, whatever the header claims.

use super::profile::{Backend, CodecProfile, TINY_LEN};
use super::segment::{SegmentCoder, SegmentReport};
use crate::frame::{self, varint, Codec, FrameError};
use std::io::Read;

/// The first three bytes of every container; the fourth is its version.
pub const MAGIC: &[u8; 3] = b"LLZ";
/// The container version this build writes.
pub const VERSION: u8 = 3;
const FLAG_PROFILE: u8 = 1;
/// Version 3: segments of the default size, no segment_size field.
const FLAG_DEFAULT_SEGMENT: u8 = 2;
const V1_FLAG_OFFLOAD: u8 = 1 << 2;
const V1_FLAG_MODEL: u8 = 1 << 3;
/// Largest segment size: bounds what one frame may allocate.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 24;
/// Bytes a frame may take beyond its plaintext: a raw frame's tag, length and CRC.
const FRAME_OVERHEAD: u64 = 1 + 10 + 4;

/// Why a container could not be written, parsed or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The input does not start with [`MAGIC`]: not a container at all.
    #[error("not an llmfs compressed file (bad magic)")]
    BadMagic,
    /// The version byte after the magic is one this build does not read (not 1 to
    /// [`VERSION`]).
    #[error("compressed file format version {0} is not supported (this build reads versions 1 to {VERSION})")]
    UnsupportedVersion(u8),
    /// The input ends inside the header or segment table, or the table claims more frames
    /// or bytes than the input holds.
    #[error("compressed file is truncated or its header is corrupted")]
    Truncated,
    /// A header field is invalid (unknown flag bits, an undecodable version 2 profile, a
    /// bad segment size or frame length, a last frame too long, data after an empty
    /// file); the message names it.
    #[error("compressed file header is corrupted: {0}")]
    BadHeader(String),
    /// The file's LLM segments were coded by a model whose fingerprint differs from the
    /// loaded model's.
    #[error(
        "wrong model: the file was compressed with the model whose fingerprint starts {expected}, \
         but the loaded model {loaded_name} has fingerprint {loaded}"
    )]
    WrongModel {
        /// Hex of the fingerprint prefix the file records (3 bytes in version 3, 8 in
        /// version 1; a version 2 file's other model is a `ProfileMismatch`).
        expected: String,
        /// Hex of the loaded model's full fingerprint.
        loaded: String,
        /// The loaded model's name, for the message.
        loaded_name: String,
    },
    /// The codec profile the file records differs from the loaded one beyond the model
    /// (coder version, primer, llama.cpp build, backend, offload, CPU kernels; for a
    /// version 2 file, any field, the model included); one message per difference.
    #[error("this build cannot decode the file's LLM-coded segments: {}", .0.join("; "))]
    ProfileMismatch(Vec<String>),
    /// The file has LLM-coded segments but no model was loaded; holds the model the file
    /// records (its fingerprint prefix in hex).
    #[error("the file has LLM-coded segments and needs its model (fingerprint {0}) to decompress")]
    NeedsModel(String),
    /// Segment `index` failed to encode or decode.
    #[error("segment {index} (bytes {start}..{end}): {error}")]
    Segment {
        /// Zero-based segment number.
        index: usize,
        /// Plaintext offset of the segment's first byte.
        start: u64,
        /// Plaintext offset just past the segment's last byte.
        end: u64,
        /// What the frame coder reported.
        error: FrameError,
    },
    /// A version 1 LLM segment decoded with none of the llama.cpp thread counts tried
    /// (version 1 code depends on the writer's thread count, which it did not record).
    #[error(
        "segment {index} (bytes {start}..{end}) of this version 1 file did not decode with any thread count \
         tried ({tried}): version 1 files decode only with the thread count they were written with. \
         Pass that machine's core count with --threads N, or decompress it there and compress it again"
    )]
    V1ThreadsExhausted {
        /// Zero-based segment number.
        index: usize,
        /// Plaintext offset of the segment's first byte.
        start: u64,
        /// Plaintext offset just past the segment's last byte.
        end: u64,
        /// The thread counts tried, as a readable list.
        tried: String,
    },
    /// A segment size of zero or above [`MAX_SEGMENT_SIZE`] was asked for when
    /// compressing.
    #[error("segment size must be between 1 byte and {MAX_SEGMENT_SIZE} bytes")]
    BadSegmentSize,
    /// Reading the input failed with an I/O error other than an interruption.
    #[error("reading the compressed file: {0}")]
    Io(std::io::Error),
}

/// What the file's LLM segments depend on, as its header records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No segment is LLM-coded: the file decodes without a model.
    Nothing,
    /// Version 3: the model's fingerprint and the rest of the profile, by digest
    /// ([`CodecProfile::tiny`]).
    Tiny([u8; 2 * TINY_LEN]),
    /// Version 2: the full profile.
    Profile(CodecProfile),
    /// Version 1: backend, offload and the first 8 bytes of the model's fingerprint.
    V1 {
        /// The llama.cpp backend the writer used (flags bits 0-1).
        backend: Backend,
        /// Whether the writer offloaded layers to a GPU (flags bit 2).
        offloaded: bool,
        /// The first 8 bytes of the model's fingerprint.
        model: [u8; 8],
    },
}

/// The container's fields other than the frames.
#[derive(Clone, Debug)]
pub struct Header {
    /// Container format version the file was written with (1 to [`VERSION`]).
    pub version: u8,
    /// What the LLM segments depend on, or [`Recorded::Nothing`].
    pub recorded: Recorded,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_size: u64,
    /// Total plaintext length in bytes.
    pub plain_len: u64,
}

impl Header {
    /// Number of segments: `plain_len` divided by `segment_size`, rounded up (0 for an
    /// empty file).
    pub fn segments(&self) -> u64 {
        self.plain_len.div_ceil(self.segment_size)
    }

    /// The plaintext bytes of segment `index`.
    pub fn segment_bounds(&self, index: usize) -> (u64, u64) {
        let start = (index as u64).saturating_mul(self.segment_size);
        (
            start,
            start.saturating_add(self.segment_size).min(self.plain_len),
        )
    }

    /// The longest frame a segment of this file can legitimately have.
    pub fn max_frame_len(&self) -> u64 {
        self.segment_size + FRAME_OVERHEAD
    }

    /// Whether any segment needs the model.
    pub fn needs_model(&self) -> bool {
        self.recorded != Recorded::Nothing
    }

    /// Refuses, before any segment is decoded, a coder that cannot reproduce the code:
    /// another model, or for version 2 any difference of the codec profile. Version 1
    /// files are checked here for their model, backend and offload; their thread count
    /// is found while decoding ([`super::legacy`]).
    pub fn check_profile(&self, loaded: Option<&CodecProfile>) -> Result<(), ContainerError> {
        let needed = match &self.recorded {
            Recorded::Nothing => return Ok(()),
            Recorded::Tiny(t) => super::fingerprint::hex(&t[..TINY_LEN]),
            Recorded::Profile(p) => p.model.to_string(),
            Recorded::V1 { model, .. } => super::fingerprint::hex(model),
        };
        let Some(loaded) = loaded else {
            return Err(ContainerError::NeedsModel(needed));
        };
        match &self.recorded {
            Recorded::Tiny(t) => {
                let mine = loaded.tiny();
                if t[..TINY_LEN] != mine[..TINY_LEN] {
                    return Err(ContainerError::WrongModel {
                        expected: needed,
                        loaded: super::fingerprint::hex(&loaded.model.fingerprint),
                        loaded_name: loaded.model.name.clone(),
                    });
                }
                if t[TINY_LEN..] != mine[TINY_LEN..] {
                    return Err(ContainerError::ProfileMismatch(vec![format!(
                        "the file's codec profile (digest {}) is not this build's ({loaded}, digest {}): \
                         another coder version, primer, llama.cpp build, backend, GPU offload or \
                         CPU kernel set wrote it; decompress it with the llmfs build and machine \
                         that wrote it",
                        super::fingerprint::hex(&t[TINY_LEN..]),
                        super::fingerprint::hex(&mine[TINY_LEN..])
                    )]));
                }
                Ok(())
            }
            Recorded::Profile(p) => {
                let differences = loaded.differences(p);
                if differences.is_empty() {
                    Ok(())
                } else {
                    Err(ContainerError::ProfileMismatch(differences))
                }
            }
            Recorded::V1 {
                backend,
                offloaded,
                model,
            } => {
                if !loaded.model.fingerprint.starts_with(model) {
                    return Err(ContainerError::WrongModel {
                        expected: needed,
                        loaded: super::fingerprint::hex(&loaded.model.fingerprint),
                        loaded_name: loaded.model.name.clone(),
                    });
                }
                let mut differences = Vec::new();
                if *backend != loaded.backend || *offloaded != (loaded.gpu_layers > 0) {
                    differences.push(format!(
                        "backend: recorded {}{}, loaded {} with {} GPU layers",
                        backend.name(),
                        if *offloaded { " with GPU offload" } else { "" },
                        loaded.backend.name(),
                        loaded.gpu_layers
                    ));
                }
                if differences.is_empty() {
                    Ok(())
                } else {
                    Err(ContainerError::ProfileMismatch(differences))
                }
            }
            Recorded::Nothing => Ok(()),
        }
    }

    /// Reads the header, not the segment table, from `input`.
    fn read(input: &mut impl Read) -> Result<Header, ContainerError> {
        let mut magic = [0u8; 4];
        let n = read_up_to(input, &mut magic)?;
        if n < 4 {
            return Err(if MAGIC.starts_with(&magic[..n.min(3)]) {
                ContainerError::Truncated
            } else {
                ContainerError::BadMagic
            });
        }
        if &magic[..3] != MAGIC {
            return Err(ContainerError::BadMagic);
        }
        let version = magic[3];
        let flags = read_byte(input)?;
        let recorded = match version {
            1 => {
                if flags >> 4 != 0 {
                    return Err(ContainerError::BadHeader(format!(
                        "unknown flags {flags:#04x}"
                    )));
                }
                if flags & V1_FLAG_MODEL != 0 {
                    let mut model = [0u8; 8];
                    read_exact(input, &mut model)?;
                    Recorded::V1 {
                        backend: Backend::from_bits(flags),
                        offloaded: flags & V1_FLAG_OFFLOAD != 0,
                        model,
                    }
                } else {
                    Recorded::Nothing
                }
            }
            3 => {
                if flags & !(FLAG_PROFILE | FLAG_DEFAULT_SEGMENT) != 0 {
                    return Err(ContainerError::BadHeader(format!(
                        "unknown flags {flags:#04x}"
                    )));
                }
                if flags & FLAG_PROFILE != 0 {
                    let mut t = [0u8; 2 * TINY_LEN];
                    read_exact(input, &mut t)?;
                    Recorded::Tiny(t)
                } else {
                    Recorded::Nothing
                }
            }
            2 => {
                if flags & !FLAG_PROFILE != 0 {
                    return Err(ContainerError::BadHeader(format!(
                        "unknown flags {flags:#04x}"
                    )));
                }
                if flags & FLAG_PROFILE != 0 {
                    let len = usize::from(read_byte(input)?);
                    let mut bytes = vec![0u8; len];
                    read_exact(input, &mut bytes)?;
                    let profile = CodecProfile::decode(&bytes)
                        .map_err(|e| ContainerError::BadHeader(e.to_string()))?;
                    Recorded::Profile(profile)
                } else {
                    Recorded::Nothing
                }
            }
            v => return Err(ContainerError::UnsupportedVersion(v)),
        };
        let segment_size = if version == 3 && flags & FLAG_DEFAULT_SEGMENT != 0 {
            super::DEFAULT_SEGMENT_SIZE as u64
        } else {
            read_varint(input)?
        };
        let plain_len = read_varint(input)?;
        if segment_size == 0 || segment_size > MAX_SEGMENT_SIZE {
            return Err(ContainerError::BadHeader(format!(
                "segment size {segment_size}"
            )));
        }
        Ok(Header {
            version,
            recorded,
            segment_size,
            plain_len,
        })
    }

    /// Reads the segment table: the length of every frame but the last, each checked
    /// against the longest frame a segment can have. The table grows only as its bytes
    /// are read, so a claimed segment count allocates nothing by itself.
    fn read_table(&self, input: &mut impl Read) -> Result<Vec<u64>, ContainerError> {
        let segments = self.segments();
        let mut lens = Vec::with_capacity(segments.min(1 << 12) as usize);
        for _ in 1..segments {
            let len = read_varint(input)?;
            if len > self.max_frame_len() {
                return Err(ContainerError::BadHeader(format!(
                    "a frame of {len} bytes for segments of {}",
                    self.segment_size
                )));
            }
            lens.push(len);
        }
        Ok(lens)
    }

    /// Writes a version 3 header: the file's codec by [`Recorded::Tiny`] (a full
    /// profile is cut to it).
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let tiny = match &self.recorded {
            Recorded::Tiny(t) => Some(*t),
            Recorded::Profile(p) => Some(p.tiny()),
            Recorded::Nothing | Recorded::V1 { .. } => None,
        };
        let default_size = self.segment_size == super::DEFAULT_SEGMENT_SIZE as u64;
        out.push(
            if tiny.is_some() { FLAG_PROFILE } else { 0 }
                | if default_size {
                    FLAG_DEFAULT_SEGMENT
                } else {
                    0
                },
        );
        if let Some(t) = tiny {
            out.extend_from_slice(&t);
        }
        if !default_size {
            varint::put(out, self.segment_size);
        }
        varint::put(out, self.plain_len);
    }

    /// Whether frames are stored without their plain_len (version 3).
    fn short_frames(&self) -> bool {
        self.version >= 3
    }

    /// The frame of segment `index` as [`crate::frame`] reads it, from the bytes the file
    /// holds: version 3 frames get their plain_len back (the segment's length).
    fn full_frame(&self, index: usize, stored: &[u8]) -> Vec<u8> {
        if !self.short_frames() || stored.is_empty() {
            return stored.to_vec();
        }
        let (start, end) = self.segment_bounds(index);
        let mut f = Vec::with_capacity(stored.len() + 4);
        f.push(stored[0]);
        varint::put(&mut f, end - start);
        f.extend_from_slice(&stored[1..]);
        f
    }
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, ContainerError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ContainerError::Io(e)),
        }
    }
    Ok(n)
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), ContainerError> {
    if read_up_to(input, buf)? < buf.len() {
        return Err(ContainerError::Truncated);
    }
    Ok(())
}

fn read_byte(input: &mut impl Read) -> Result<u8, ContainerError> {
    let mut b = [0u8];
    read_exact(input, &mut b)?;
    Ok(b[0])
}

fn read_varint(input: &mut impl Read) -> Result<u64, ContainerError> {
    let mut buf = Vec::with_capacity(10);
    loop {
        let b = read_byte(input)?;
        buf.push(b);
        if b & 0x80 == 0 || buf.len() == 10 {
            break;
        }
    }
    varint::get(&buf, &mut 0).ok_or(ContainerError::Truncated)
}

/// Encodes `plain` into a container, segment by segment. `progress` is told the
/// plaintext bytes done after each segment.
pub fn compress(
    plain: &[u8],
    segment_size: usize,
    coder: &mut SegmentCoder<'_>,
    mut progress: impl FnMut(usize, &SegmentReport),
) -> Result<(Vec<u8>, Vec<SegmentReport>), ContainerError> {
    let profile = coder.profile().clone();
    let mut done = 0;
    compress_segments(plain, segment_size, &profile, |segments| {
        let mut coded = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let (f, report) = coder.encode(seg).map_err(|e| (i, e))?;
            done += seg.len();
            progress(done, &report);
            coded.push((f, report));
        }
        Ok(coded)
    })
}

/// A segment's frame and what happened.
pub type CodedSegment = (Vec<u8>, SegmentReport);

/// Encodes `plain` into a container whose segments `code` codes under `profile`: it gets
/// every segment at once and returns their frames and reports in order (a model pool
/// codes them on all its lanes), or the index of a segment that failed and why. The
/// bytes do not depend on how, or in what order, the segments were coded.
pub fn compress_segments(
    plain: &[u8],
    segment_size: usize,
    profile: &CodecProfile,
    code: impl FnOnce(&[&[u8]]) -> Result<Vec<CodedSegment>, (usize, FrameError)>,
) -> Result<(Vec<u8>, Vec<SegmentReport>), ContainerError> {
    if segment_size == 0 || segment_size as u64 > MAX_SEGMENT_SIZE {
        return Err(ContainerError::BadSegmentSize);
    }
    let segments: Vec<&[u8]> = plain.chunks(segment_size).collect();
    let coded = code(&segments).map_err(|(index, error)| {
        let start = (index * segment_size) as u64;
        ContainerError::Segment {
            index,
            start,
            end: (start + segments.get(index).map_or(0, |s| s.len() as u64)),
            error,
        }
    })?;
    let (mut frames, mut reports): (Vec<_>, Vec<_>) = coded.into_iter().unzip();
    let mut any_llm = reports.iter().any(|r| r.codec == Some(Codec::Llm));
    if any_llm {
        any_llm = keep_llm_frames(plain, segment_size, &mut frames, &mut reports);
    }
    let header = Header {
        version: VERSION,
        recorded: if any_llm {
            Recorded::Tiny(profile.tiny())
        } else {
            Recorded::Nothing
        },
        segment_size: segment_size as u64,
        plain_len: plain.len() as u64,
    };
    Ok((assemble(&header, &frames), reports))
}

/// Whether the LLM frames save more than the codec's identity in the header costs; if
/// not (a tiny file), they are replaced by their fast frames and the file needs no model
/// at all.
fn keep_llm_frames(
    plain: &[u8],
    segment_size: usize,
    frames: &mut [Vec<u8>],
    reports: &mut [SegmentReport],
) -> bool {
    let cost = 2 * TINY_LEN;
    let mut fast = Vec::new();
    let mut saved = 0usize;
    for (i, seg) in plain.chunks(segment_size).enumerate() {
        if reports[i].codec == Some(Codec::Llm) {
            let f = frame::encode_fast(seg);
            saved += f.len().saturating_sub(frames[i].len());
            fast.push((i, f));
        }
    }
    if saved > cost {
        return true;
    }
    for (i, f) in fast {
        let header = frame::parse_header(&f).expect("a frame just encoded");
        let r = &mut reports[i];
        r.codec = Some(header.codec);
        r.frame_len = f.len();
        r.data_len = f.len() - header.header_len;
        frames[i] = f;
    }
    false
}

/// Writes a version 3 container around already encoded frames (each stored without its
/// plain_len, which the header implies).
pub fn assemble(header: &Header, frames: &[Vec<u8>]) -> Vec<u8> {
    // Where each frame's bytes resume after its plain_len field.
    let rest: Vec<usize> = frames.iter().map(|f| 1 + short_saving(f)).collect();
    let mut out = Vec::with_capacity(frames.iter().map(Vec::len).sum::<usize>() + 64);
    header.write(&mut out);
    for (f, &r) in frames
        .iter()
        .zip(&rest)
        .take(frames.len().saturating_sub(1))
    {
        varint::put(&mut out, (f.len() + 1 - r) as u64);
    }
    for (f, &r) in frames.iter().zip(&rest) {
        out.extend_from_slice(&f[..1]);
        out.extend_from_slice(&f[r..]);
    }
    out
}

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    let mut buf = Vec::with_capacity(10);
    varint::put(&mut buf, v);
    buf.len()
}

/// Bytes a frame loses in a version 3 file: its plain_len field.
fn short_saving(f: &[u8]) -> usize {
    let h = frame::parse_header(f).expect("a frame just encoded");
    varint_len(h.plain_len)
}

/// Checks that the frame of segment `index` holds exactly that segment's length, before
/// anything decodes it: a corrupted length must not make the model run, or a buffer
/// grow, for longer than one segment. Returns the frame's codec.
pub fn check_frame(
    header: &Header,
    index: usize,
    frame_bytes: &[u8],
) -> Result<Codec, ContainerError> {
    let (start, end) = header.segment_bounds(index);
    let result = frame::parse_header(frame_bytes).and_then(|h| {
        if h.plain_len != end - start {
            return Err(FrameError::Corrupt(format!(
                "frame holds {} bytes, segment has {}",
                h.plain_len,
                end - start
            )));
        }
        Ok(h.codec)
    });
    result.map_err(|error| ContainerError::Segment {
        index,
        start,
        end,
        error,
    })
}

/// Decodes the frame of segment `index`, after checking that it holds exactly that
/// segment's length: a corrupted length must not make the model run, or a buffer grow,
/// for longer than one segment.
pub fn decode_frame(
    header: &Header,
    index: usize,
    frame_bytes: &[u8],
    coder: Option<&mut SegmentCoder<'_>>,
) -> Result<Vec<u8>, ContainerError> {
    let (start, end) = header.segment_bounds(index);
    let result = frame::parse_header(frame_bytes).and_then(|h| {
        if h.plain_len != end - start {
            return Err(FrameError::Corrupt(format!(
                "frame holds {} bytes, segment has {}",
                h.plain_len,
                end - start
            )));
        }
        match coder {
            Some(c) => c.decode(frame_bytes).map(frame::Plain::into_vec),
            None => frame::decode(frame_bytes, None).map(frame::Plain::into_vec),
        }
    });
    result.map_err(|error| ContainerError::Segment {
        index,
        start,
        end,
        error,
    })
}

/// A parsed container header and segment table over borrowed bytes, for random access.
pub struct Container<'a> {
    bytes: &'a [u8],
    /// The parsed header.
    pub header: Header,
    /// Start of every frame in `bytes`, plus the end of the last.
    frame_bounds: Vec<usize>,
}

impl<'a> Container<'a> {
    /// Parses the header and segment table of `bytes` and checks that the frames they
    /// describe fit in it; no frame is decoded or checksummed yet.
    pub fn parse(bytes: &'a [u8]) -> Result<Container<'a>, ContainerError> {
        let mut input = bytes;
        let header = Header::read(&mut input)?;
        // Every frame takes at least 5 bytes (a tag and a CRC): a count beyond that is
        // corruption, caught before it sizes anything.
        if header.segments() > (bytes.len() / 5) as u64 {
            return Err(ContainerError::Truncated);
        }
        let lens = header.read_table(&mut input)?;
        let mut pos = bytes.len() - input.len();
        let mut frame_bounds = Vec::with_capacity(lens.len() + 2);
        frame_bounds.push(pos);
        for len in lens {
            pos = pos
                .checked_add(len as usize)
                .filter(|&n| n <= bytes.len())
                .ok_or(ContainerError::Truncated)?;
            frame_bounds.push(pos);
        }
        if header.segments() > 0 {
            if (bytes.len() - pos) as u64 > header.max_frame_len() {
                return Err(ContainerError::BadHeader("last frame too long".into()));
            }
            frame_bounds.push(bytes.len());
        } else if pos != bytes.len() {
            return Err(ContainerError::BadHeader("data after an empty file".into()));
        }
        Ok(Container {
            bytes,
            header,
            frame_bounds,
        })
    }

    /// Total plaintext length in bytes.
    pub fn plain_len(&self) -> u64 {
        self.header.plain_len
    }

    /// Number of frames (segments) the file holds.
    pub fn segments(&self) -> usize {
        self.frame_bounds.len().saturating_sub(1)
    }

    /// The frame of segment `index`, as [`crate::frame`] reads it.
    pub fn frame(&self, index: usize) -> Vec<u8> {
        let stored = &self.bytes[self.frame_bounds[index]..self.frame_bounds[index + 1]];
        self.header.full_frame(index, stored)
    }

    /// Bytes of the container before the first frame: the header and the segment table.
    pub fn header_len(&self) -> usize {
        self.frame_bounds[0]
    }

    /// Whether any segment needs the model ([`Header::needs_model`]).
    pub fn needs_model(&self) -> bool {
        self.header.needs_model()
    }

    /// Refuses a coder that cannot reproduce the file's code ([`Header::check_profile`]).
    pub fn check_model(&self, coder: Option<&SegmentCoder<'_>>) -> Result<(), ContainerError> {
        self.header.check_profile(coder.map(SegmentCoder::profile))
    }

    /// Decodes segment `index`.
    pub fn decode_segment(
        &self,
        index: usize,
        coder: Option<&mut SegmentCoder<'_>>,
    ) -> Result<Vec<u8>, ContainerError> {
        decode_frame(&self.header, index, &self.frame(index), coder)
    }

    /// Decodes the plaintext bytes `offset..offset + len` (clamped to the file), touching
    /// only the segments that hold them.
    pub fn read_range(
        &self,
        offset: u64,
        len: u64,
        mut coder: Option<&mut SegmentCoder<'_>>,
    ) -> Result<Vec<u8>, ContainerError> {
        let end = offset.saturating_add(len).min(self.header.plain_len);
        let mut out = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        let seg = self.header.segment_size;
        for index in offset / seg..=(end - 1) / seg {
            let data = self.decode_segment(index as usize, coder.as_deref_mut())?;
            let seg_start = index * seg;
            let from = offset.saturating_sub(seg_start) as usize;
            let to = ((end - seg_start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out)
    }
}

/// Reads a container from a stream, one frame at a time.
pub struct ContainerReader<R> {
    input: R,
    /// The parsed header, read by [`ContainerReader::new`].
    pub header: Header,
    lens: Vec<u64>,
    next: usize,
}

impl<R: Read> ContainerReader<R> {
    /// Reads the header and the segment table.
    pub fn new(mut input: R) -> Result<ContainerReader<R>, ContainerError> {
        let header = Header::read(&mut input)?;
        let lens = header.read_table(&mut input)?;
        if header.plain_len == 0 && read_up_to(&mut input, &mut [0u8])? > 0 {
            return Err(ContainerError::BadHeader("data after an empty file".into()));
        }
        Ok(ContainerReader {
            input,
            header,
            lens,
            next: 0,
        })
    }

    /// Number of frames (segments) the stream holds: one per table entry plus the last,
    /// unless the file is empty.
    pub fn segments(&self) -> usize {
        self.lens.len() + usize::from(self.header.plain_len > 0)
    }

    /// The next frame and its segment index, or `None` after the last.
    pub fn next_frame(&mut self) -> Result<Option<(usize, Vec<u8>)>, ContainerError> {
        let index = self.next;
        if index >= self.segments() {
            return Ok(None);
        }
        let frame = if let Some(&len) = self.lens.get(index) {
            let mut frame = vec![0u8; len as usize];
            read_exact(&mut self.input, &mut frame)?;
            frame
        } else {
            // The last frame runs to the end of the file.
            let mut frame = Vec::new();
            (&mut self.input)
                .take(self.header.max_frame_len() + 1)
                .read_to_end(&mut frame)
                .map_err(ContainerError::Io)?;
            if frame.len() as u64 > self.header.max_frame_len() {
                return Err(ContainerError::BadHeader("last frame too long".into()));
            }
            frame
        };
        self.next += 1;
        Ok(Some((index, self.header.full_frame(index, &frame))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_container(plain: &[u8], segment_size: usize) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = plain.chunks(segment_size).map(frame::encode_fast).collect();
        let header = Header {
            version: VERSION,
            recorded: Recorded::Nothing,
            segment_size: segment_size as u64,
            plain_len: plain.len() as u64,
        };
        assemble(&header, &frames)
    }

    fn stream_all(bytes: &[u8]) -> Result<Vec<u8>, ContainerError> {
        let mut r = ContainerReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some((i, f)) = r.next_frame()? {
            out.extend(decode_frame(&r.header, i, &f, None)?);
        }
        Ok(out)
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
        assert_eq!(stream_all(&bytes).unwrap(), plain);
        let empty = fast_container(b"", 4096);
        assert_eq!(Container::parse(&empty).unwrap().segments(), 0);
        assert_eq!(stream_all(&empty).unwrap(), b"");
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
            let streamed = stream_all(&bad);
            for out in [decoded, streamed].into_iter().flatten() {
                assert_eq!(out, plain, "a decode that succeeds must be exact");
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

    #[test]
    fn a_huge_claimed_length_allocates_one_segment_at_a_time() {
        // 1 TiB of zeros claimed, in 16 MiB segments: every frame is a small zstd frame,
        // so the file is legitimate; a reader must stream it, never size a buffer by it.
        let zeros = vec![0u8; MAX_SEGMENT_SIZE as usize];
        let f = frame::encode_fast(&zeros);
        let header = Header {
            version: VERSION,
            recorded: Recorded::Nothing,
            segment_size: MAX_SEGMENT_SIZE,
            plain_len: 1 << 40,
        };
        let mut bytes = Vec::new();
        header.write(&mut bytes);
        for _ in 0..3 {
            varint::put(&mut bytes, f.len() as u64);
        }
        for _ in 0..3 {
            bytes.extend_from_slice(&f);
        }
        // Parsing the slice refuses at once: the claimed segments cannot fit the bytes.
        assert!(Container::parse(&bytes).is_err());
        // Streaming reads the table until the bytes run out (or a frame's bytes read as
        // a length are too long), and fails there.
        assert!(ContainerReader::new(&bytes[..]).is_err());
        // A frame longer than a segment can be is refused before it is read.
        let mut long = Vec::new();
        Header {
            plain_len: 200,
            segment_size: 100,
            ..header
        }
        .write(&mut long);
        varint::put(&mut long, 1 << 30);
        assert!(matches!(
            ContainerReader::new(&long[..]),
            Err(ContainerError::BadHeader(_))
        ));
    }

    #[test]
    fn a_profile_is_recorded_only_where_it_pays() {
        use crate::codec::synthetic::SyntheticModel;
        let mut coder = SegmentCoder::new(SyntheticModel::new(), true);
        // A few bytes: the LLM frame saves less than the profile costs.
        let (tiny, reports) = compress(b"Hello there.", 4096, &mut coder, |_, _| {}).unwrap();
        assert_ne!(reports[0].codec, Some(Codec::Llm));
        let c = Container::parse(&tiny).unwrap();
        assert!(!c.needs_model());
        assert_eq!(c.read_range(0, 100, None).unwrap(), b"Hello there.");
        // A paragraph: it pays.
        let text = b"The quick brown fox jumps over the lazy dog, and then it rests in the \
            shade of a tree while the dog keeps watching the field around the farm house."
            .repeat(3);
        let (packed, _) = compress(&text, 4096, &mut coder, |_, _| {}).unwrap();
        let c = Container::parse(&packed).unwrap();
        assert_eq!(c.header.recorded, Recorded::Tiny(coder.profile().tiny()));
        assert_eq!(c.read_range(0, u64::MAX, Some(&mut coder)).unwrap(), text);
    }

    #[test]
    fn a_one_segment_file_spends_at_most_20_bytes_beside_its_code() {
        use crate::codec::synthetic::SyntheticModel;
        let mut coder = SegmentCoder::new(SyntheticModel::new(), true);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/SmolLM2-135M-Instruct.Q4_1-003.md");
        let text = std::fs::read(path).unwrap();
        let text = &text[..4096.min(text.len())];
        let (packed, reports) = compress(text, 4096, &mut coder, |_, _| {}).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].codec, Some(Codec::Llm));
        let overhead = packed.len() - reports[0].code_len;
        assert!(overhead <= 20, "{overhead} bytes beside the code");
        let c = Container::parse(&packed).unwrap();
        assert_eq!(c.read_range(0, u64::MAX, Some(&mut coder)).unwrap(), text);
        let mut streamed = ContainerReader::new(&packed[..]).unwrap();
        let (i, f) = streamed.next_frame().unwrap().unwrap();
        assert_eq!(
            decode_frame(&streamed.header, i, &f, Some(&mut coder)).unwrap(),
            text
        );
    }

    #[test]
    fn a_file_of_another_coding_is_refused_saying_what_differs() {
        use crate::codec::primer::Coding;
        use crate::codec::synthetic::SyntheticModel;
        let text = b"The quick brown fox jumps over the lazy dog, and then it rests in the \
            shade of a tree while the dog keeps watching the field around the farm house."
            .repeat(3);
        let mut primed = SegmentCoder::new(SyntheticModel::new(), true);
        let (packed, _) = compress(&text, 1000, &mut primed, |_, _| {}).unwrap();
        let c = Container::parse(&packed).unwrap();
        assert_eq!(c.header.segment_size, 1000);
        let unprimed = SegmentCoder::new(SyntheticModel::with_coding(&Coding::unprimed()), true);
        let err = c.check_model(Some(&unprimed)).unwrap_err().to_string();
        assert!(err.contains("primer"), "{err}");
        let mut other_model = primed.profile().clone();
        other_model.model.fingerprint[0] ^= 1;
        let err = c.header.check_profile(Some(&other_model)).unwrap_err();
        assert!(matches!(err, ContainerError::WrongModel { .. }), "{err}");
        c.check_model(Some(&primed)).unwrap();
    }

    #[test]
    fn version_2_files_still_parse_and_check_their_whole_profile() {
        use crate::codec::synthetic::SyntheticModel;
        let coder = SegmentCoder::new(SyntheticModel::new(), true);
        let profile = coder.profile().short();
        let plain = b"abc".repeat(10);
        let mut v2 = b"LLZ\x02\x01".to_vec();
        let p = profile.encode();
        v2.push(p.len() as u8);
        v2.extend_from_slice(&p);
        varint::put(&mut v2, 4096);
        varint::put(&mut v2, plain.len() as u64);
        v2.extend_from_slice(&frame::encode_fast(&plain));
        let c = Container::parse(&v2).unwrap();
        assert_eq!(c.header.version, 2);
        assert_eq!(c.header.recorded, Recorded::Profile(profile));
        c.check_model(Some(&coder)).unwrap();
        assert_eq!(c.read_range(0, u64::MAX, None).unwrap(), plain);
    }

    #[test]
    fn version_1_headers_still_parse() {
        // flags: backend 0, offload, model fingerprint present.
        let mut v1 = b"LLZ\x01\x0c".to_vec();
        v1.extend_from_slice(&[0xb1, 0x79, 0xc9, 0x52, 0x3d, 0x0e, 0x6a, 0x0f]);
        varint::put(&mut v1, 4096);
        varint::put(&mut v1, 3);
        v1.extend_from_slice(&frame::encode_fast(b"abc"));
        let c = Container::parse(&v1).unwrap();
        assert_eq!(c.header.version, 1);
        assert!(matches!(
            c.header.recorded,
            Recorded::V1 {
                backend: Backend::Cpu,
                offloaded: true,
                ..
            }
        ));
        assert!(matches!(
            c.check_model(None),
            Err(ContainerError::NeedsModel(ref fp)) if fp == "b179c9523d0e6a0f"
        ));
    }
}
