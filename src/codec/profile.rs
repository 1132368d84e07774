//! The codec profile: everything an LLM code stream depends on, recorded with the code.
//!
//! An LLM-coded segment decodes only where the model computes bit-identical
//! probabilities for every token, so whatever changes them is written next to the code
//! (in the container header, and in the filesystem's superblock) and compared before any
//! segment is decoded:
//!
//! - the coder version: how llmfs drives the model and turns its logits into code
//!   (one token per step from a fresh KV state, flash attention disabled, the start
//!   token, the softmax and integer frequency table, the range coder, the payload
//!   layout). [`CODER_VERSION`] is the one this build writes; version 1 was the first
//!   container format's, which left flash attention on and so depended on the thread
//!   count ([`super::legacy`] decodes it).
//! - the engine and its build: llama.cpp as vendored by `llama-cpp-sys-2` (pinned with
//!   `=` in Cargo.toml, its version recorded here), or the synthetic test model.
//! - the backend (CPU, CUDA, Metal, Vulkan) and the number of layers offloaded to a GPU.
//! - the CPU kernel set: ggml picks its CPU kernels when it is compiled (the
//!   instruction sets enabled by its CMake options, see README), so the same llama.cpp
//!   version built for another instruction set computes other floats.
//! - the model: a prefix of the SHA-256 of the GGUF file (8 to 32 bytes; containers keep
//!   8), and its name for messages.
//! - the primer (coder version 3 on): the text every segment's tokens follow
//!   ([`super::primer`]), by a digest of its bytes.
//!
//! Thread count, context length and batch size are not recorded: with this coder
//! version they do not change the probabilities (measured, and tested in
//! `tests/cli.rs` and `tests/codec.rs`).
//!
//! Encoding (varints are unsigned LEB128, strings are a length byte and the bytes):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | version | 1 byte | profile encoding version ([`PROFILE_VERSION`]) |
//! | coder | varint | coder version |
//! | engine | 1 byte | 0: llama.cpp, 1: synthetic test model |
//! | build | string, at most 32 bytes | the engine's build (`llama-cpp-sys-2` version) |
//! | backend | 1 byte | [`Backend`] |
//! | gpu_layers | varint | layers offloaded to the GPU (0: none) |
//! | arch | 1 byte, then a string if 0 | CPU architecture: an index into `ARCHES` plus one, or 0 and the name (at most 16 bytes) |
//! | kernels | varint | bit set of ggml CPU features ([`KERNEL_FEATURES`]) |
//! | vector length | varint | SVE or RVV vector length in bytes where the CPU has one, else 0 |
//! | fingerprint | string, 8 to 32 bytes | SHA-256 prefix of the model file |
//! | name | string, at most 64 bytes | the model's name (may be empty) |
//! | primer | string, 0 or 8 bytes | SHA-256 prefix of the primer's bytes; empty: none (encoding version 2 on) |

use super::fingerprint::{self, Fingerprint, SHORT_LEN};
use crate::frame::varint;
use std::fmt;

/// The coder version this build writes: 3, each segment's tokens after a primer
/// ([`super::primer`]). It also decodes version 2 (a segment from the start token alone,
/// as 3 without a primer), and version 1 through [`super::legacy`].
pub const CODER_VERSION: u32 = 3;
/// The oldest coder version a [`CodecProfile`] session codes.
pub const OLDEST_CODER_VERSION: u32 = 2;
/// The encoding version of [`CodecProfile::encode`]: 2 adds the primer. Version 1 (no
/// primer field) still decodes.
pub const PROFILE_VERSION: u8 = 2;

const MAX_BUILD_LEN: usize = 32;
const MAX_ARCH_LEN: usize = 16;
const MAX_NAME_LEN: usize = 64;
/// The longest encoding: every varint at its u32 maximum, every string at its limit.
pub const MAX_ENCODED_LEN: usize = 1
    + 5
    + 1
    + (1 + MAX_BUILD_LEN)
    + 1
    + 5
    + (2 + MAX_ARCH_LEN)
    + 5
    + 5
    + (1 + 32)
    + (1 + MAX_NAME_LEN)
    + (1 + PRIMER_ID_LEN);

/// Bytes of the model fingerprint, and of the profile digest, a version 3 container
/// records ([`CodecProfile::tiny`]).
pub const TINY_LEN: usize = 3;

/// Bytes of a primer's id (a SHA-256 prefix of its text).
pub const PRIMER_ID_LEN: usize = 8;

/// The `llama-cpp-sys-2` version this build links: Cargo.toml pins it with `=`, and a
/// unit test checks that the two agree.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// Where the probabilities are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// llama.cpp on the CPU only.
    Cpu = 0,
    /// ggml's CUDA backend (NVIDIA GPUs; the `cuda` feature).
    Cuda = 1,
    /// ggml's Metal backend (Apple GPUs; the `metal` feature).
    Metal = 2,
    /// ggml's Vulkan backend (the `vulkan` feature).
    Vulkan = 3,
}

impl Backend {
    /// The backend this build of llmfs computes with.
    pub fn compiled() -> Backend {
        if cfg!(feature = "cuda") {
            Backend::Cuda
        } else if cfg!(feature = "metal") {
            Backend::Metal
        } else if cfg!(feature = "vulkan") {
            Backend::Vulkan
        } else {
            Backend::Cpu
        }
    }

    /// The backend numbered by the low two bits of `b` (0 CPU, 1 CUDA, 2 Metal, 3
    /// Vulkan); the other bits are ignored.
    pub fn from_bits(b: u8) -> Backend {
        match b & 3 {
            1 => Backend::Cuda,
            2 => Backend::Metal,
            3 => Backend::Vulkan,
            _ => Backend::Cpu,
        }
    }

    /// The backend's lowercase name (`cpu`, `cuda`, `metal`, `vulkan`), for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
            Backend::Vulkan => "vulkan",
        }
    }
}

/// What computes the probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// llama.cpp through `llama-cpp-2` ([`super::llm`]).
    LlamaCpp = 0,
    /// The synthetic byte model of [`super::synthetic`], for tests and benchmarks only.
    Synthetic = 1,
}

impl Engine {
    /// The engine's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::LlamaCpp => "llama.cpp",
            Engine::Synthetic => "synthetic test model",
        }
    }
}

/// The ggml CPU features that select kernels, as named by `llama_print_system_info`,
/// in bit order: the features of the usual x86-64 and Arm builds come first, so that
/// their bit set takes two bytes. OpenMP is left out: it schedules the same kernels.
/// Append new names; never reorder, or recorded profiles change meaning.
pub const KERNEL_FEATURES: &[&str] = &[
    "SSE3",
    "SSSE3",
    "AVX",
    "AVX2",
    "F16C",
    "FMA",
    "BMI2",
    "LLAMAFILE",
    "REPACK",
    "NEON",
    "ARM_FMA",
    "FP16_VA",
    "DOTPROD",
    "MATMUL_INT8",
    "AVX_VNNI",
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AMX_INT8",
    "SVE",
    "SME",
    "SME2",
    "RISCV_V",
    "VSX",
    "VXE",
    "WASM_SIMD",
    "ACCELERATE",
    "CPU_HBM",
    "KLEIDIAI",
];

/// Architectures written as one byte (their index plus one); others are spelled out.
/// Append only.
const ARCHES: &[&str] = &[
    "x86_64",
    "aarch64",
    "any",
    "riscv64",
    "powerpc64",
    "s390x",
    "loongarch64",
    "arm",
    "x86",
    "wasm32",
];

/// The CPU kernels the engine was compiled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSet {
    /// `std::env::consts::ARCH` of the build, or `any` for an engine whose arithmetic
    /// does not depend on it.
    pub arch: String,
    /// Bit `i` set: feature [`KERNEL_FEATURES`]`[i]` is compiled in.
    pub features: u32,
    /// SVE or RVV vector length in bytes (a property of the CPU that ggml reads at run
    /// time), 0 where there is none.
    pub vector_len: u32,
}

impl KernelSet {
    /// The kernel set of an engine whose results do not depend on the CPU.
    pub fn portable() -> KernelSet {
        KernelSet {
            arch: "any".into(),
            features: 0,
            vector_len: 0,
        }
    }

    /// Parses the CPU part of `llama_print_system_info()`, e.g.
    /// `CPU : SSE3 = 1 | AVX2 = 1 | … | OPENMP = 1 | REPACK = 1 |`.
    pub fn from_system_info(arch: &str, info: &str) -> KernelSet {
        let mut set = KernelSet {
            arch: arch.chars().take(MAX_ARCH_LEN).collect(),
            features: 0,
            vector_len: 0,
        };
        // Backends are listed one after another ("CPU : … | CUDA : … |"); a backend's
        // name is the token before " : ".
        let mut in_cpu = false;
        for item in info.split('|') {
            let mut item = item.trim();
            if let Some((backend, rest)) = item.split_once(" : ") {
                in_cpu = backend.trim().eq_ignore_ascii_case("CPU");
                item = rest.trim();
            }
            if !in_cpu {
                continue;
            }
            let Some((name, value)) = item.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name == "SVE_CNT" || name == "RVV_VLEN" {
                set.vector_len = value.parse().unwrap_or(u32::MAX);
            } else if let Some(bit) = KERNEL_FEATURES.iter().position(|&f| f == name) {
                if value != "0" {
                    set.features |= 1 << bit;
                }
            }
        }
        set
    }

    fn describe(&self) -> String {
        let mut out = self.arch.clone();
        for (i, name) in KERNEL_FEATURES.iter().enumerate() {
            if self.features & (1 << i) != 0 {
                out.push(' ');
                out.push_str(name);
            }
        }
        if self.features >> KERNEL_FEATURES.len() != 0 {
            out.push_str(&format!(" (unknown features {:#x})", self.features));
        }
        if self.vector_len != 0 {
            out.push_str(&format!(" vector length {}", self.vector_len));
        }
        out
    }
}

/// The model a profile names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    /// A prefix (8 to 32 bytes) of the SHA-256 of the model file.
    pub fingerprint: Vec<u8>,
    /// The model's name for messages, possibly empty; never compared.
    pub name: String,
}

impl ModelId {
    /// The id of the model with this full fingerprint, its name cut to the longest a
    /// profile records.
    pub fn new(fingerprint: &Fingerprint, name: &str) -> ModelId {
        ModelId {
            fingerprint: fingerprint.0.to_vec(),
            name: truncate_utf8(name, MAX_NAME_LEN).to_string(),
        }
    }

    /// Whether two ids name the same file: their fingerprints agree on the shorter one.
    pub fn same_model(&self, other: &ModelId) -> bool {
        let n = self.fingerprint.len().min(other.fingerprint.len());
        n >= SHORT_LEN && self.fingerprint[..n] == other.fingerprint[..n]
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fingerprint::hex(&self.fingerprint))?;
        if !self.name.is_empty() {
            write!(f, " ({})", self.name)?;
        }
        Ok(())
    }
}

/// Everything a code stream depends on; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecProfile {
    /// Version of the coder, which fixes how tokens become code (see [`CODER_VERSION`]);
    /// a profile this build codes with has [`OLDEST_CODER_VERSION`] to [`CODER_VERSION`].
    pub coder_version: u32,
    /// What computes the probabilities.
    pub engine: Engine,
    /// The engine's build: the `llama-cpp-sys-2` version for llama.cpp.
    pub build: String,
    /// The backend the probabilities are computed on.
    pub backend: Backend,
    /// Layers offloaded to the GPU (0: CPU only); offload can change the floating-point
    /// results.
    pub gpu_layers: u32,
    /// The CPU kernels this build's ggml was compiled with.
    pub kernels: KernelSet,
    /// The model the code was computed with.
    pub model: ModelId,
    /// The primer's id ([`super::primer::Primer::id`]); `None`: segments start from the
    /// start token alone.
    pub primer: Option<[u8; PRIMER_ID_LEN]>,
}

/// Why an encoded codec profile could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// The bytes end inside the profile.
    #[error("codec profile is truncated")]
    Truncated,
    /// The profile's encoding version byte is not one this build reads (1 to the current
    /// version).
    #[error("codec profile encoding version {0} is not supported (this build reads version {PROFILE_VERSION})")]
    UnsupportedVersion(u8),
    /// A field is invalid (unknown engine, backend or architecture, a number out of
    /// range, a string too long or not text, a short fingerprint, trailing bytes); the
    /// payload names it.
    #[error("codec profile is corrupted: {0}")]
    Corrupt(&'static str),
}

impl CodecProfile {
    /// The profile with the model fingerprint cut to its first 8 bytes and no name: what
    /// a version 2 container recorded, to keep small files small.
    pub fn short(&self) -> CodecProfile {
        let mut p = self.clone();
        p.model.fingerprint.truncate(SHORT_LEN);
        p.model.name.clear();
        p
    }

    /// The profile's binary encoding, versioned, as [`CodecProfile::decode`] reads it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(PROFILE_VERSION);
        varint::put(out, u64::from(self.coder_version));
        out.push(self.engine as u8);
        put_str(out, truncate_utf8(&self.build, MAX_BUILD_LEN).as_bytes());
        out.push(self.backend as u8);
        varint::put(out, u64::from(self.gpu_layers));
        match ARCHES.iter().position(|&a| a == self.kernels.arch) {
            Some(i) => out.push(i as u8 + 1),
            None => {
                out.push(0);
                put_str(
                    out,
                    truncate_utf8(&self.kernels.arch, MAX_ARCH_LEN).as_bytes(),
                );
            }
        }
        varint::put(out, u64::from(self.kernels.features));
        varint::put(out, u64::from(self.kernels.vector_len));
        let fp_len = self.model.fingerprint.len().clamp(SHORT_LEN, 32);
        let mut fp = self.model.fingerprint.clone();
        fp.resize(fp_len, 0);
        put_str(out, &fp);
        put_str(
            out,
            truncate_utf8(&self.model.name, MAX_NAME_LEN).as_bytes(),
        );
        put_str(out, self.primer.as_ref().map_or(&[][..], |p| &p[..]));
    }

    /// A digest of everything but the model (coder version, engine and build, backend,
    /// kernels, primer): with a prefix of the model's fingerprint, what a small container
    /// records of its profile. 3 bytes of it are 1 in 16 million against a chance match,
    /// and a decode checks each segment's CRC anyway.
    pub fn digest_without_model(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut p = self.clone();
        p.model = ModelId {
            fingerprint: vec![0; SHORT_LEN],
            name: String::new(),
        };
        Sha256::digest(p.encode()).into()
    }

    /// What a version 3 container records: the first [`TINY_LEN`] bytes of the model's
    /// fingerprint, then of [`digest_without_model`](Self::digest_without_model).
    pub fn tiny(&self) -> [u8; 2 * TINY_LEN] {
        let mut out = [0u8; 2 * TINY_LEN];
        for (o, b) in out.iter_mut().zip(&self.model.fingerprint[..]) {
            *o = *b;
        }
        out[TINY_LEN..].copy_from_slice(&self.digest_without_model()[..TINY_LEN]);
        out
    }

    /// Decodes a profile that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<CodecProfile, ProfileError> {
        let mut pos = 0;
        let p = Self::decode_at(bytes, &mut pos)?;
        if pos != bytes.len() {
            return Err(ProfileError::Corrupt("bytes after the profile"));
        }
        Ok(p)
    }

    /// Decodes a profile starting at `*pos`, advancing it past the profile.
    pub fn decode_at(bytes: &[u8], pos: &mut usize) -> Result<CodecProfile, ProfileError> {
        let version = *bytes.get(*pos).ok_or(ProfileError::Truncated)?;
        *pos += 1;
        if !(1..=PROFILE_VERSION).contains(&version) {
            return Err(ProfileError::UnsupportedVersion(version));
        }
        let coder_version = get_u32(bytes, pos)?;
        let engine = match get_byte(bytes, pos)? {
            0 => Engine::LlamaCpp,
            1 => Engine::Synthetic,
            _ => return Err(ProfileError::Corrupt("unknown engine")),
        };
        let build = get_text(bytes, pos, MAX_BUILD_LEN)?;
        let backend = match get_byte(bytes, pos)? {
            b @ 0..=3 => Backend::from_bits(b),
            _ => return Err(ProfileError::Corrupt("unknown backend")),
        };
        let gpu_layers = get_u32(bytes, pos)?;
        let arch = match get_byte(bytes, pos)? {
            0 => get_text(bytes, pos, MAX_ARCH_LEN)?,
            i => ARCHES
                .get(usize::from(i) - 1)
                .ok_or(ProfileError::Corrupt("unknown architecture"))?
                .to_string(),
        };
        let features = get_u32(bytes, pos)?;
        let vector_len = get_u32(bytes, pos)?;
        let fingerprint = get_str(bytes, pos, 32)?.to_vec();
        if fingerprint.len() < SHORT_LEN {
            return Err(ProfileError::Corrupt(
                "model fingerprint shorter than 8 bytes",
            ));
        }
        let name = get_text(bytes, pos, MAX_NAME_LEN)?;
        let primer = if version >= 2 {
            match get_str(bytes, pos, PRIMER_ID_LEN)? {
                [] => None,
                id => Some(
                    id.try_into()
                        .map_err(|_| ProfileError::Corrupt("primer id of the wrong length"))?,
                ),
            }
        } else {
            None
        };
        Ok(CodecProfile {
            coder_version,
            engine,
            build,
            backend,
            gpu_layers,
            kernels: KernelSet {
                arch,
                features,
                vector_len,
            },
            model: ModelId { fingerprint, name },
            primer,
        })
    }

    /// What differs between the profile a code stream was `recorded` with and the one
    /// this build codes with (`self`), one human-readable line each; empty when the
    /// recorded code decodes here.
    pub fn differences(&self, recorded: &CodecProfile) -> Vec<String> {
        let mut out = Vec::new();
        let (r, l) = (recorded, self);
        if r.engine != l.engine {
            out.push(format!(
                "engine: recorded {}, loaded {}",
                r.engine.name(),
                l.engine.name()
            ));
        }
        if !r.model.same_model(&l.model) {
            out.push(format!("model: recorded {}, loaded {}", r.model, l.model));
        }
        if r.coder_version != l.coder_version {
            let why = if r.coder_version > l.coder_version {
                " (written by a newer llmfs)"
            } else {
                ""
            };
            out.push(format!(
                "coder version: recorded {}, this build codes version {}{why}",
                r.coder_version, l.coder_version
            ));
        }
        if r.engine == l.engine && r.build != l.build {
            out.push(format!(
                "{} build: recorded {}, this build {}",
                r.engine.name(),
                r.build,
                l.build
            ));
        }
        if (r.backend, r.gpu_layers) != (l.backend, l.gpu_layers) {
            out.push(format!(
                "backend: recorded {} with {} GPU layers, loaded {} with {} (use the same build and --gpu-layers)",
                r.backend.name(),
                r.gpu_layers,
                l.backend.name(),
                l.gpu_layers
            ));
        }
        if r.kernels != l.kernels {
            out.push(format!(
                "CPU kernels: recorded {}, this build {}",
                r.kernels.describe(),
                l.kernels.describe()
            ));
        }
        if r.primer != l.primer {
            out.push(format!(
                "primer: recorded {}, loaded {}",
                super::primer::describe(r.primer.as_ref()),
                super::primer::describe(l.primer.as_ref())
            ));
        }
        out
    }
}

impl fmt::Display for CodecProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coder {}, {} {}, {} with {} GPU layers, CPU kernels {}, model {}, primer {}",
            self.coder_version,
            self.engine.name(),
            self.build,
            self.backend.name(),
            self.gpu_layers,
            self.kernels.describe(),
            self.model,
            super::primer::describe(self.primer.as_ref())
        )
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn get_byte(bytes: &[u8], pos: &mut usize) -> Result<u8, ProfileError> {
    let b = *bytes.get(*pos).ok_or(ProfileError::Truncated)?;
    *pos += 1;
    Ok(b)
}

fn get_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, ProfileError> {
    let v = varint::get(bytes, pos).ok_or(ProfileError::Truncated)?;
    u32::try_from(v).map_err(|_| ProfileError::Corrupt("number out of range"))
}

fn get_str<'a>(bytes: &'a [u8], pos: &mut usize, max: usize) -> Result<&'a [u8], ProfileError> {
    let len = usize::from(get_byte(bytes, pos)?);
    if len > max {
        return Err(ProfileError::Corrupt("string too long"));
    }
    let s = bytes.get(*pos..*pos + len).ok_or(ProfileError::Truncated)?;
    *pos += len;
    Ok(s)
}

fn get_text(bytes: &[u8], pos: &mut usize, max: usize) -> Result<String, ProfileError> {
    let s = get_str(bytes, pos, max)?;
    let s = std::str::from_utf8(s).map_err(|_| ProfileError::Corrupt("text is not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(ProfileError::Corrupt("control character in text"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CodecProfile {
        CodecProfile {
            coder_version: CODER_VERSION,
            engine: Engine::LlamaCpp,
            build: LLAMA_CPP_SYS_VERSION.into(),
            backend: Backend::Cpu,
            gpu_layers: 0,
            kernels: KernelSet::from_system_info(
                "x86_64",
                "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ",
            ),
            model: ModelId {
                fingerprint: (0..32).collect(),
                name: "SmolLM2 135M Instruct".into(),
            },
            primer: Some([9; PRIMER_ID_LEN]),
        }
    }

    #[test]
    fn system_info_parses_cpu_features_only() {
        let k = sample().kernels;
        assert_eq!(
            k.describe(),
            "x86_64 SSE3 SSSE3 AVX AVX2 F16C FMA BMI2 LLAMAFILE REPACK"
        );
        let with_gpu = KernelSet::from_system_info(
            "aarch64",
            "CPU : NEON = 1 | SVE = 1 | SVE_CNT = 32 | DOTPROD = 1 | CUDA : ARCHS = 900 | FORCE_MMQ = 1 | ",
        );
        assert_eq!(
            with_gpu.describe(),
            "aarch64 NEON DOTPROD SVE vector length 32"
        );
        assert!(KERNEL_FEATURES.len() <= 32);
    }

    #[test]
    fn round_trip_full_and_short() {
        let p = sample();
        assert_eq!(CodecProfile::decode(&p.encode()).unwrap(), p);
        let s = p.short();
        let bytes = s.encode();
        assert_eq!(CodecProfile::decode(&bytes).unwrap(), s);
        assert!(bytes.len() <= 49, "{} bytes in every store", bytes.len());
        assert!(
            p.differences(&s).is_empty(),
            "a short fingerprint matches its model"
        );
    }

    #[test]
    fn encodings_are_bounded() {
        let huge = CodecProfile {
            coder_version: u32::MAX,
            engine: Engine::Synthetic,
            build: "b".repeat(100),
            backend: Backend::Vulkan,
            gpu_layers: u32::MAX,
            kernels: KernelSet {
                arch: "a".repeat(100),
                features: u32::MAX,
                vector_len: u32::MAX,
            },
            model: ModelId {
                fingerprint: vec![7; 100],
                name: "é".repeat(100),
            },
            primer: Some([1; PRIMER_ID_LEN]),
        };
        let bytes = huge.encode();
        assert_eq!(bytes.len(), MAX_ENCODED_LEN);
        const {
            assert!(
                MAX_ENCODED_LEN < 256,
                "a container stores the length in a byte"
            )
        };
        let back = CodecProfile::decode(&bytes).unwrap();
        assert_eq!(back.model.name.len(), 64);
        assert_eq!(back.model.fingerprint.len(), 32);
    }

    #[test]
    fn differences_name_what_differs() {
        let loaded = sample();
        assert!(loaded.differences(&loaded).is_empty());
        let mut other = sample();
        other.model.fingerprint[3] ^= 1;
        other.build = "0.1.170".into();
        other.kernels.features |= 1 << 15;
        other.gpu_layers = 12;
        let d = loaded.differences(&other);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].starts_with("model: recorded 00010202"), "{d:?}");
        assert!(d[0].contains("loaded 00010203"), "{d:?}");
        assert!(d[0].contains("(SmolLM2 135M Instruct)"), "{d:?}");
        assert!(d[1].contains("llama.cpp build: recorded 0.1.170, this build 0.1.161"));
        assert!(d[2].contains("12 GPU layers"), "{d:?}");
        assert!(d[3].contains("AVX512"), "{d:?}");
        let mut newer = sample();
        newer.coder_version = CODER_VERSION + 1;
        assert!(loaded.differences(&newer)[0].contains("newer llmfs"));
        let mut unprimed = sample();
        unprimed.primer = None;
        assert!(loaded.differences(&unprimed)[0].starts_with("primer: recorded none"));
    }

    #[test]
    fn version_1_profiles_still_decode_without_a_primer() {
        let mut p = sample();
        p.primer = None;
        p.coder_version = 2;
        let mut v1 = p.encode();
        // Version 1 had no primer field: the encoding without its last (empty) string.
        v1[0] = 1;
        v1.pop();
        assert_eq!(CodecProfile::decode(&v1).unwrap(), p);
        assert_ne!(p.digest_without_model(), sample().digest_without_model());
    }

    #[test]
    fn bad_bytes_are_errors_never_panics() {
        let good = sample().encode();
        for cut in 0..good.len() {
            assert!(CodecProfile::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut x = 0x9E3779B97F4A7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bad = good.clone();
            let i = (x as usize) % bad.len();
            bad[i] = (x >> 32) as u8;
            if let Ok(p) = CodecProfile::decode(&bad) {
                // Whatever decodes must survive its own encoding.
                assert_eq!(CodecProfile::decode(&p.encode()).unwrap(), p);
            }
        }
        assert_eq!(
            CodecProfile::decode(&[9]),
            Err(ProfileError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn llama_cpp_sys_version_matches_the_cargo_pin() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("llama-cpp-sys-2 = {{ version = \"={LLAMA_CPP_SYS_VERSION}\"");
        assert!(
            manifest.contains(&pin),
            "Cargo.toml must pin llama-cpp-sys-2 to ={LLAMA_CPP_SYS_VERSION}, the version the codec profile records"
        );
    }
}
