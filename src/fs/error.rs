//! The one error type at the filesystem boundary, and its one errno mapping.

use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("invalid argument")]
    Invalid,
    #[error("name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small")]
    Range,
    #[error("value too large")]
    TooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("bad file handle")]
    BadHandle,
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

pub type FsResult<T> = Result<T, FsError>;
