//! Where `compress` and `decompress` write: standard output, a special file, or a
//! regular file replaced atomically.
//!
//! A regular file (or a name that does not exist yet) is written to a new temporary file
//! next to it, created exclusively (`O_EXCL`: a symbolic link planted at its name is
//! never followed), fsync'd, then renamed over the name, and the directory is fsync'd: a
//! failure or a crash never leaves a partial file under the final name. A symbolic link
//! is followed to its target, which is replaced the same way while the link stays, as
//! `zstd -o` or `gzip -c >` write through links. A device, FIFO or socket is written in
//! place (`-o /dev/null` must not replace the device node with a regular file). A
//! directory is refused before anything is created.

use anyhow::{bail, Context};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub enum Output {
    Stdout(std::io::Stdout),
    /// A special file, written where it is.
    Direct {
        file: File,
        path: PathBuf,
    },
    /// A temporary file renamed over `target` on commit, removed if never committed.
    Replace {
        file: File,
        tmp: PathBuf,
        target: PathBuf,
        committed: bool,
    },
}

/// Symbolic links followed before giving up, as the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;

/// `path` with every symbolic link of its last component followed.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("reading the symbolic link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

impl Output {
    /// Opens `path` for writing (`-` is standard output). Fails before creating anything
    /// when `path` is a directory.
    pub fn open(path: &Path) -> anyhow::Result<Output> {
        if path.as_os_str() == "-" {
            return Ok(Output::Stdout(std::io::stdout()));
        }
        let target = resolve(path)?;
        let existing = match std::fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        if let Some(meta) = &existing {
            if meta.is_dir() {
                bail!("{} is a directory", path.display());
            }
            if !meta.is_file() {
                let file = File::options()
                    .write(true)
                    .open(&target)
                    .with_context(|| format!("opening {}", path.display()))?;
                return Ok(Output::Direct {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
        let (file, tmp) = create_temporary(&target)?;
        if let Some(meta) = &existing {
            // Keep the mode of the file being replaced, as an in-place write would.
            let mode = meta.permissions().mode() & 0o7777;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
        }
        Ok(Output::Replace {
            file,
            tmp,
            target,
            committed: false,
        })
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(s) => s,
            Output::Direct { file, .. } | Output::Replace { file, .. } => file,
        }
    }

    /// Writes `data`, naming the output in the error.
    pub fn write_all(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let name = self.name();
        self.writer()
            .write_all(data)
            .with_context(|| format!("writing {name}"))
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout(_) => "standard output".into(),
            Output::Direct { path, .. } => path.display().to_string(),
            Output::Replace { target, .. } => target.display().to_string(),
        }
    }

    /// Makes the output final: flushed, and for a regular file fsync'd and renamed into
    /// place, its directory fsync'd.
    pub fn commit(mut self) -> anyhow::Result<()> {
        let name = self.name();
        match &mut self {
            Output::Stdout(s) => s.flush().context("writing standard output")?,
            Output::Direct { file, .. } => {
                file.flush().with_context(|| format!("writing {name}"))?
            }
            Output::Replace {
                file,
                tmp,
                target,
                committed,
            } => {
                file.sync_all()
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&*tmp, &*target).with_context(|| {
                    format!("renaming {} to {}", tmp.display(), target.display())
                })?;
                *committed = true;
                let dir = match target.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                // Makes the rename durable; a directory that cannot be opened only
                // loses that.
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::Replace {
            tmp,
            committed: false,
            ..
        } = self
        {
            let _ = std::fs::remove_file(&*tmp);
        }
    }
}

/// A new file next to `target`, created exclusively under a name no other call uses.
fn create_temporary(target: &Path) -> anyhow::Result<(File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_error = None;
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut name = target.as_os_str().to_owned();
        name.push(format!(
            ".llmfs-partial-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(name);
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", tmp.display()));
            }
        }
    }
    Err(last_error.expect("the loop ran"))
        .with_context(|| format!("creating a temporary file next to {}", target.display()))
}
