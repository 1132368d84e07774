//! Binary encodings of the values of the store (see [`super::keys`] for where they live).
//! Fixed-width integers are big endian, counters and versions are varints
//! ([`crate::frame::varint`]). Versioning is per store ([`FORMAT_VERSION`] in the
//! superblock), not per record: only the inode starts with a version byte of its own
//! (`INODE_VERSION`); directory entries, hot chunks, pending records and extents are
//! read as the store's format says. Every value is sealed with a CRC-32 around it
//! ([`super::seal`]), so a record damaged on disk is an error, never a wrong value.

// Defines an on-disk layout (the store's record layouts); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use super::StoreError;
use crate::frame::varint;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of the store layout as a whole; a store of another version is refused.
/// Version 1 was the sled store of llmfs 0.1.0; version 2 the SQLite store without
/// record checksums, which the first read-write open upgrades to 3 ([`super::seal`]).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this release reads (and upgrades).
pub const OLDEST_FORMAT: u32 = 2;
const SUPER_MAGIC: &[u8; 6] = b"LLMFS\0";
const INODE_VERSION: u8 = 2;

/// The store's first record ([`super::keys::SUPERBLOCK`]): magic `LLMFS\0`, then format
/// version and chunk size as big-endian u32, then the creating release's name (the rest,
/// UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The store's layout version, [`OLDEST_FORMAT`] to [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Logical chunk size in bytes, fixed at creation.
    pub chunk_size: u32,
    /// The llmfs release that created the store, for messages.
    pub created_by: String,
}

impl Superblock {
    /// The record's bytes, as [`Superblock::decode`] reads them.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.extend_from_slice(SUPER_MAGIC);
        v.extend_from_slice(&self.format_version.to_be_bytes());
        v.extend_from_slice(&self.chunk_size.to_be_bytes());
        v.extend_from_slice(self.created_by.as_bytes());
        v
    }

    /// Parses a superblock record; [`StoreError::Corrupt`] for a bad magic or truncation,
    /// [`StoreError::UnsupportedVersion`] for a format this release does not read.
    pub fn decode(b: &[u8]) -> Result<Superblock, StoreError> {
        let bad = |why: &str| StoreError::Corrupt(format!("superblock: {why}"));
        if b.get(..6) != Some(SUPER_MAGIC.as_slice()) {
            return Err(bad("not an llmfs store (bad magic)"));
        }
        let mut r = Reader { b, pos: 6 };
        let format_version = r.u32().ok_or_else(|| bad("truncated"))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&format_version) {
            return Err(StoreError::UnsupportedVersion(format_version));
        }
        let chunk_size = r.u32().ok_or_else(|| bad("truncated"))?;
        let created_by = String::from_utf8_lossy(b.get(r.pos..).unwrap_or(&[])).into_owned();
        Ok(Superblock {
            format_version,
            chunk_size,
            created_by,
        })
    }
}

/// A timestamp as stored: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Whole seconds since the Unix epoch; negative before it.
    pub secs: i64,
    /// Nanoseconds added to `secs`, always below 1,000,000,000 (also for times before the
    /// epoch).
    pub nsecs: u32,
}

impl Time {
    /// The system clock's current time.
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    /// `t` as seconds and nanoseconds, rounding times before the epoch down so that
    /// `nsecs` stays nonnegative.
    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Time {
                        secs: -(d.as_secs() as i64),
                        nsecs: 0,
                    }
                } else {
                    Time {
                        secs: -(d.as_secs() as i64) - 1,
                        nsecs: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// The time as a `SystemTime`; the inverse of [`Time::from_system`].
    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nsecs)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nsecs))
        }
    }
}

/// The kind of an inode, from the `S_IFMT` bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (also what an inode with unknown type bits reads as).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
}

impl Kind {
    /// The kind named by the `S_IFMT` bits of `mode`, or `None` for bits naming no type.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The kind's byte in directory entries (its position in the enum, 0 to 6).
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind of a directory entry byte, or `None` for a byte above 6.
    pub fn from_byte(b: u8) -> Option<Kind> {
        [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDev,
            Kind::BlockDev,
        ]
        .get(usize::from(b))
        .copied()
    }
}

/// An inode record: its version byte (2), then the fields in order, fixed-width and big
/// endian (times as i64 seconds and u32 nanoseconds), the symlink target taking the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Full `st_mode`: file type bits and permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Hard links to the inode (a directory's count is 2 plus its subdirectories); 0 for
    /// an unlinked inode still open.
    pub nlink: u32,
    /// Logical size in bytes.
    pub size: u64,
    /// Bytes of chunk frames stored for this file (what `st_blocks` reports).
    pub stored: u64,
    /// Last access time (reads move it relatime-style when the mount updates atimes).
    pub atime: Time,
    /// Last modification time of the contents.
    pub mtime: Time,
    /// Last change time of the inode (contents, mode, owner, links, attributes).
    pub ctime: Time,
    /// Device number of a character or block device; 0 otherwise.
    pub rdev: u32,
    /// For directories, the parent directory (for `..`); 0 otherwise.
    pub parent: u64,
    /// The content version of the file's most recently written chunk: every chunk write
    /// takes the next one, in the same commit as this record, so (ino, index, version)
    /// names one plaintext for good (compaction and read caching compare it).
    pub data_ver: u64,
    /// For symlinks, the target.
    pub target: Vec<u8>,
}

impl Inode {
    /// A fresh inode of `mode` owned by `uid`:`gid`, with one link, no data and all three
    /// times `now`.
    pub fn new(mode: u32, uid: u32, gid: u32, now: Time) -> Inode {
        Inode {
            mode,
            uid,
            gid,
            nlink: 1,
            size: 0,
            stored: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            parent: 0,
            data_ver: 0,
            target: Vec::new(),
        }
    }

    /// Moves `stored` by frame bytes added and freed, never below zero (a count that
    /// drifted from the frames, which fsck repairs, must not wrap). Only the store's
    /// chunk operations call it, in the transaction that adds or frees the frames.
    pub(crate) fn shift_stored(&mut self, added: u64, freed: u64) {
        self.stored = self.stored.saturating_add(added).saturating_sub(freed);
    }

    /// The inode's kind from its mode; unknown type bits read as [`Kind::File`].
    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode).unwrap_or(Kind::File)
    }

    /// Whether the inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == Kind::Dir
    }

    /// The record's bytes, as [`Inode::decode`] reads them.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(89 + self.target.len());
        v.push(INODE_VERSION);
        for x in [self.mode, self.uid, self.gid, self.nlink] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.stored.to_be_bytes());
        for t in [self.atime, self.mtime, self.ctime] {
            v.extend_from_slice(&t.secs.to_be_bytes());
            v.extend_from_slice(&t.nsecs.to_be_bytes());
        }
        v.extend_from_slice(&self.rdev.to_be_bytes());
        v.extend_from_slice(&self.parent.to_be_bytes());
        v.extend_from_slice(&self.data_ver.to_be_bytes());
        v.extend_from_slice(&self.target);
        v
    }

    /// Parses an inode record; [`StoreError::Corrupt`] if it is truncated or of another
    /// record version.
    pub fn decode(b: &[u8]) -> Result<Inode, StoreError> {
        let bad = || StoreError::Corrupt("inode record truncated".into());
        let mut r = Reader { b, pos: 0 };
        let version = r.u8().ok_or_else(bad)?;
        if version != INODE_VERSION {
            return Err(StoreError::Corrupt(format!(
                "inode record version {version}"
            )));
        }
        let mode = r.u32().ok_or_else(bad)?;
        let uid = r.u32().ok_or_else(bad)?;
        let gid = r.u32().ok_or_else(bad)?;
        let nlink = r.u32().ok_or_else(bad)?;
        let size = r.u64().ok_or_else(bad)?;
        let stored = r.u64().ok_or_else(bad)?;
        let mut times = [Time::default(); 3];
        for t in &mut times {
            let secs = r.u64().ok_or_else(bad)? as i64;
            let nsecs = r.u32().ok_or_else(bad)?;
            *t = Time { secs, nsecs };
        }
        let rdev = r.u32().ok_or_else(bad)?;
        let parent = r.u64().ok_or_else(bad)?;
        let data_ver = r.u64().ok_or_else(bad)?;
        let target = b.get(r.pos..).unwrap_or(&[]).to_vec();
        let [atime, mtime, ctime] = times;
        Ok(Inode {
            mode,
            uid,
            gid,
            nlink,
            size,
            stored,
            atime,
            mtime,
            ctime,
            rdev,
            parent,
            data_ver,
            target,
        })
    }
}

/// The value of a directory entry: the child inode and its kind (so readdir needs no
/// inode lookups).
pub fn encode_dirent(child: u64, kind: Kind) -> Vec<u8> {
    let mut v = child.to_be_bytes().to_vec();
    v.push(kind.to_byte());
    v
}

/// Parses a directory entry's value ([`encode_dirent`]): [`StoreError::Corrupt`] if it is
/// short or its kind byte is unknown.
pub fn decode_dirent(b: &[u8]) -> Result<(u64, Kind), StoreError> {
    let bad = || StoreError::Corrupt("directory entry malformed".into());
    let ino = super::keys::u64_at(b, 0).ok_or_else(bad)?;
    let kind = b.get(8).and_then(|&k| Kind::from_byte(k)).ok_or_else(bad)?;
    Ok((ino, kind))
}

/// A hot chunk's value: its content version, then its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotChunk {
    /// The chunk's content version ([`Inode::data_ver`] when it was written).
    pub ver: u64,
    /// The chunk's frame ([`crate::frame`]).
    pub frame: Vec<u8>,
}

impl HotChunk {
    /// A hot chunk record: `ver` as a varint, then `frame`.
    pub fn encode(ver: u64, frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(frame.len() + 10);
        varint::put(&mut v, ver);
        v.extend_from_slice(frame);
        v
    }

    /// The version alone, without copying the frame.
    pub fn decode_ver(b: &[u8]) -> Result<u64, StoreError> {
        let mut pos = 0;
        varint::get(b, &mut pos).ok_or_else(|| StoreError::Corrupt("chunk record truncated".into()))
    }

    /// Parses a hot chunk record, copying the frame; [`StoreError::Corrupt`] if the
    /// version is truncated.
    pub fn decode(b: &[u8]) -> Result<HotChunk, StoreError> {
        let mut pos = 0;
        let ver = varint::get(b, &mut pos)
            .ok_or_else(|| StoreError::Corrupt("chunk record truncated".into()))?;
        Ok(HotChunk {
            ver,
            frame: b[pos..].to_vec(),
        })
    }
}

/// A chunk waiting for the compactor: the version written and when (seconds since the
/// epoch), so a restart knows what is cold without reading the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The content version of the chunk as written ([`Inode::data_ver`] then).
    pub ver: u64,
    /// When it was written, in seconds since the Unix epoch (stored as a varint; negative
    /// times as 0).
    pub written: i64,
}

impl Pending {
    /// The record's bytes: `ver` and `written` as varints.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20);
        varint::put(&mut v, self.ver);
        varint::put(&mut v, self.written.max(0) as u64);
        v
    }

    /// Parses a pending record; [`StoreError::Corrupt`] if either varint is truncated.
    pub fn decode(b: &[u8]) -> Result<Pending, StoreError> {
        let bad = || StoreError::Corrupt("pending record truncated".into());
        let mut pos = 0;
        let ver = varint::get(b, &mut pos).ok_or_else(bad)?;
        let written = varint::get(b, &mut pos).ok_or_else(bad)? as i64;
        Ok(Pending { ver, written })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trip() {
        let mut i = Inode::new(
            libc::S_IFLNK | 0o777,
            1000,
            100,
            Time { secs: -5, nsecs: 7 },
        );
        i.size = 5 << 32;
        i.data_ver = 77;
        i.target = b"/some/where".to_vec();
        assert_eq!(Inode::decode(&i.encode()).unwrap(), i);
        assert!(Inode::decode(&i.encode()[..20]).is_err());
    }

    #[test]
    fn superblock_round_trip_and_version_refusal() {
        let s = Superblock {
            format_version: FORMAT_VERSION,
            chunk_size: 4096,
            created_by: "llmfs 9.9".into(),
        };
        assert_eq!(Superblock::decode(&s.encode()).unwrap(), s);
        let newer = Superblock {
            format_version: 99,
            ..s
        };
        assert!(matches!(
            Superblock::decode(&newer.encode()),
            Err(StoreError::UnsupportedVersion(99))
        ));
    }

    #[test]
    fn negative_times_round_trip() {
        let t = Time {
            secs: -3,
            nsecs: 500,
        };
        assert_eq!(Time::from_system(t.to_system()), t);
    }
}
