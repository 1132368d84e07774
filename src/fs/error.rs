//! The one error type at the filesystem boundary, and its one errno mapping.

use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every way a filesystem operation fails, each with its errno ([`FsError::to_errno`]).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such name or inode, or an inode already deleted (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The name, or an attribute created with `XATTR_CREATE`, already exists (`EEXIST`).
    #[error("file exists")]
    Exists,
    /// An operation that needs a directory got something else: a lookup or entry in a
    /// file, `rmdir` of a file, a directory renamed over a file (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// An operation that must not act on a directory got one: `unlink` of a directory, a
    /// file renamed over a directory, a directory opened for writing or truncated
    /// (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// Removing or replacing a directory that still has entries (`ENOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// The mode bits deny the caller the access asked for (`EACCES`).
    #[error("permission denied")]
    Access,
    /// The caller does not own the file, or is not root, where that is required (chown,
    /// chmod, setting a given time, sticky directories, `trusted.` attributes), or sets a
    /// computed `llmfs.` attribute (`EPERM`).
    #[error("operation not permitted")]
    Perm,
    /// An argument is invalid for the operation: `.` or `..` where a new or removable
    /// name is needed, a directory moved under itself, readlink of a non-symlink, an
    /// unknown policy value, a zero-length allocation (`EINVAL`).
    #[error("invalid argument")]
    Invalid,
    /// A name longer than 255 bytes (`ENAMETOOLONG`).
    #[error("name too long")]
    NameTooLong,
    /// No such extended attribute, or one the caller may not see (`ENODATA`).
    #[error("no such attribute")]
    NoAttr,
    /// An extended attribute name that is empty or longer than 255 bytes (`ERANGE`).
    #[error("buffer too small")]
    Range,
    /// An extended attribute value too large to store (`E2BIG`).
    #[error("value too large")]
    TooBig,
    /// Something llmfs does not implement: `system.` (ACL) or unknown attribute
    /// namespaces, `fallocate` of anything but a regular file (`EOPNOTSUPP`).
    #[error("operation not supported")]
    NotSupported,
    /// A write, truncate or allocation would take a file past the largest size llmfs
    /// stores (`EFBIG`).
    #[error("file too large")]
    FileTooBig,
    /// A link would take an inode past the most links it may have (`EMLINK`).
    #[error("too many links")]
    TooManyLinks,
    /// A directory handle that is not open (`EBADF`).
    #[error("bad file handle")]
    BadHandle,
    /// The device that holds the store is full (`ENOSPC`).
    #[error("no space left on the device that holds the store")]
    NoSpace,
    /// Data could not be read or written; the cause was logged where it happened.
    #[error("I/O error: {0}")]
    Io(String),
    /// The call would wait for the language model, and its caller said it must not (see
    /// [`super::chunk::Wait`]); the FUSE adapter hands such requests to a worker.
    #[error("the request needs the language model")]
    WouldBlock,
    /// Inside the core only: an edit needs chunk N decoded by the model first.
    #[error("chunk {0} must be decoded first")]
    NeedChunk(u64),
}

impl FsError {
    /// The errno the kernel is told for this error.
    pub fn to_errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Access => libc::EACCES,
            FsError::Perm => libc::EPERM,
            FsError::Invalid => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::BadHandle => libc::EBADF,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Io(_) => libc::EIO,
            // Never meant to reach the kernel; if one does, the caller may try again.
            FsError::WouldBlock | FsError::NeedChunk(_) => libc::EAGAIN,
        }
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> FsError {
        // Store errors become errnos here, and this is where they are logged (once).
        match e {
            StoreError::NoSpace => {
                // Ordinary on a full device and told to the caller by its errno: one line a
                // minute says the device is full, not one per request.
                static LAST: AtomicU64 = AtomicU64::new(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let last = LAST.load(Ordering::Relaxed);
                if now >= last + 60
                    && LAST
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    log::warn!(
                        "the store's device is full: writes fail with ENOSPC until files are \
                         deleted (this is logged at most once a minute)"
                    );
                }
                FsError::NoSpace
            }
            e => {
                log::error!("store error: {e}");
                FsError::Io(e.to_string())
            }
        }
    }
}

/// The result of a filesystem core operation.
pub type FsResult<T> = Result<T, FsError>;
