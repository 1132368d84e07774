//! Model fingerprints: the SHA-256 of the GGUF file, which names a model exactly.
//!
//! Hashing 100 MB takes about half a second, so the digest is cached in a sidecar file
//! `MODEL.llmfs-sha256` next to the model (best effort: a read-only directory only costs
//! the hash again). The cache is trusted only while the file is the same inode of the
//! same device with the same size, mtime and ctime (ctime cannot be set back by a
//! program, so rewriting the file in place invalidates it even when the mtime is
//! restored), and while a digest of 16 sampled 4 KiB blocks still matches. Anything else
//! re-hashes the whole file.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes of the digest that version 1 and 2 containers recorded, and the fewest a
/// codec profile's model id keeps: 64 bits tell models apart with certainty in
/// practice. (Version 3 containers record 3 bytes: [`super::profile::TINY_LEN`].)
pub const SHORT_LEN: usize = 8;

/// The SHA-256 digest of a model's GGUF file (32 bytes); displays as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The SHA-256 of the file at `path`, from the sidecar cache `PATH.llmfs-sha256` when
    /// its stamp still matches, else by hashing the whole file (and caching the result,
    /// best effort). Fails only when the model file cannot be opened, stat'ed or read.
    pub fn of_file(path: &Path) -> std::io::Result<Fingerprint> {
        let mut file = File::open(path)?;
        let stamp = Stamp::of(&mut file)?;
        let sidecar = sidecar_path(path);
        if let Some(fp) = read_sidecar(&sidecar, &stamp) {
            return Ok(fp);
        }
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let fp = Fingerprint(hasher.finalize().into());
        // The stamp is taken again: a file that changed while it was hashed is not cached.
        if Stamp::of(&mut file).ok().as_ref() == Some(&stamp) {
            if let Err(e) = write_sidecar(&sidecar, &format!("{fp} {}\n", stamp.line())) {
                log::debug!(
                    "cannot cache the model fingerprint in {}: {e}",
                    sidecar.display()
                );
            }
        }
        Ok(fp)
    }

    /// The first [`SHORT_LEN`] bytes of the digest.
    pub fn short(&self) -> [u8; SHORT_LEN] {
        self.0[..SHORT_LEN]
            .try_into()
            .expect("digest is longer than its prefix")
    }

    /// Whether the digest starts with `short` (a prefix a container recorded); an empty
    /// `short` matches any digest.
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

/// What identifies one version of a file without reading all of it.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// SHA-256 prefix of 16 blocks of 4 KiB spread evenly over the file.
    samples: [u8; 8],
}

const SIDECAR_VERSION: &str = "v2";

impl Stamp {
    fn of(file: &mut File) -> std::io::Result<Stamp> {
        let meta = file.metadata()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        let size = meta.len();
        let mut hasher = Sha256::new();
        let mut block = vec![0u8; 4096];
        for i in 0..16u64 {
            let offset = size.saturating_sub(4096) / 15 * i;
            file.seek(SeekFrom::Start(offset))?;
            let mut n = 0;
            while n < block.len() {
                match file.read(&mut block[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            hasher.update(&block[..n]);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size,
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            samples: digest[..8].try_into().expect("8 of 32 bytes"),
        })
    }

    fn line(&self) -> String {
        format!(
            "{SIDECAR_VERSION} {} {} {} {} {} {}",
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            hex(&self.samples)
        )
    }
}

fn read_sidecar(sidecar: &Path, stamp: &Stamp) -> Option<Fingerprint> {
    let text = std::fs::read_to_string(sidecar).ok()?;
    let (digest, rest) = text.trim_end().split_once(' ')?;
    if rest != stamp.line() || digest.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digest.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Fingerprint(out))
}

/// Writes the sidecar through a new temporary file renamed over it, so that a reader
/// never sees half a line and a symbolic link planted at the temporary name is not
/// followed.
fn write_sidecar(sidecar: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = sidecar.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, sidecar));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

    #[test]
    fn same_size_and_mtime_is_not_taken_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        let one = vec![1u8; 100_000];
        std::fs::write(&model, &one).unwrap();
        let mtime = std::fs::metadata(&model).unwrap().modified().unwrap();
        let a = Fingerprint::of_file(&model).unwrap();
        // Another model of the same size, written in place, its mtime set back.
        let mut two = one.clone();
        two[100] = 2; // where GGUFs differ: their metadata comes first
        std::fs::write(&model, &two).unwrap();
        File::options()
            .write(true)
            .open(&model)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let b = Fingerprint::of_file(&model).unwrap();
        assert_eq!(b.0, <[u8; 32]>::from(Sha256::digest(&two)));
        assert_ne!(a, b);
        // Replaced by rename: a new inode.
        let other = dir.path().join("other");
        std::fs::write(&other, &one).unwrap();
        std::fs::rename(&other, &model).unwrap();
        assert_eq!(Fingerprint::of_file(&model).unwrap(), a);
    }

    #[test]
    fn a_sidecar_from_the_old_format_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF three").unwrap();
        let meta = std::fs::metadata(&model).unwrap();
        let stamp = format!(
            "{} {}",
            meta.len(),
            meta.modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::write(
            sidecar_path(&model),
            format!("{} {stamp}\n", "ab".repeat(32)),
        )
        .unwrap();
        let fp = Fingerprint::of_file(&model).unwrap();
        assert_eq!(fp.0, <[u8; 32]>::from(Sha256::digest(b"GGUF three")));
    }
}
