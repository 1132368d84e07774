//! Model fingerprints: the SHA-256 of the GGUF file, which names a model exactly.
//!
//! Hashing 100 MB takes about half a second, so the digest is cached in a sidecar file
//! `MODEL.llmfs-sha256` next to the model (best effort: a read-only directory only costs
//! the hash again), valid while the model's size and mtime are unchanged.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Bytes of the digest written into containers: 64 bits tell models apart with
/// certainty in practice and keep the per-file overhead small.
pub const SHORT_LEN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_file(path: &Path) -> std::io::Result<Fingerprint> {
        let meta = std::fs::metadata(path)?;
        let stamp = format!(
            "{} {}",
            meta.len(),
            meta.modified()?
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let sidecar = sidecar_path(path);
        if let Some(fp) = read_sidecar(&sidecar, &stamp) {
            return Ok(fp);
        }
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let fp = Fingerprint(hasher.finalize().into());
        if let Err(e) = std::fs::write(&sidecar, format!("{fp} {stamp}\n")) {
            log::debug!(
                "cannot cache the model fingerprint in {}: {e}",
                sidecar.display()
            );
        }
        Ok(fp)
    }

    pub fn short(&self) -> [u8; SHORT_LEN] {
        self.0[..SHORT_LEN]
            .try_into()
            .expect("digest is longer than its prefix")
    }

    pub fn matches_short(&self, short: &[u8]) -> bool {
        self.0.starts_with(short)
    }
}

/// Hex of a (possibly shortened) fingerprint, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

fn sidecar_path(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".llmfs-sha256");
    model.with_file_name(name)
}

fn read_sidecar(sidecar: &Path, stamp: &str) -> Option<Fingerprint> {
    let text = std::fs::read_to_string(sidecar).ok()?;
    let (digest, rest) = text.trim_end().split_once(' ')?;
    if rest != stamp || digest.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digest.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Fingerprint(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_cached_and_invalidated_by_changes() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF one").unwrap();
        let a = Fingerprint::of_file(&model).unwrap();
        assert_eq!(a.0, <[u8; 32]>::from(Sha256::digest(b"GGUF one")));
        assert!(sidecar_path(&model).exists());
        assert_eq!(
            Fingerprint::of_file(&model).unwrap(),
            a,
            "cached value equals the computed one"
        );
        std::fs::write(&model, b"GGUF two, longer").unwrap();
        let b = Fingerprint::of_file(&model).unwrap();
        assert_ne!(a, b);
        let expected: [u8; 32] = Sha256::digest(b"GGUF two, longer").into();
        assert_eq!(b.0, expected);
        assert!(b.matches_short(&b.short()));
        assert!(!a.matches_short(&b.short()));
    }
}
