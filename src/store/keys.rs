//! Every table and key layout of the store, in one place.
//!
//! Integers in keys are big endian, so that a range scan walks them in numeric order.
//! Values are encoded in [`super::records`] and [`super::extent`]; each starts with its
//! own version byte where it can evolve.
//!
//! | table | key | value | notes |
//! | --- | --- | --- | --- |
//! | `meta` | `super` | [`Superblock`](super::records::Superblock) | format version, chunk size, the llmfs release that created the store |
//! | `meta` | `next_ino` | u64 | inode numbers below it may have been handed out (reserved in blocks) |
//! | `meta` | `profile` | codec profile bytes | what LLM frames were coded under; pinned with the first LLM frame |
//! | `meta` | `canary` | frame bytes | a small LLM frame coded at pin time, decoded by every mount |
//! | `inode` | ino:u64 | [`Inode`](super::records::Inode) | one per live inode (and per orphan still open) |
//! | `dirent` | parent:u64 name | child:u64 kind:u8 | name-ordered, so readdir resumes after a name |
//! | `xattr` | ino:u64 name | value bytes | extended attributes, name with its namespace (`user.foo`) |
//! | `chunk` | ino:u64 index:u64 | [`HotChunk`](super::records::HotChunk): version, frame | a chunk written since it was last settled |
//! | `extent` | ino:u64 first:u64 | [`Extent`](super::extent::Extent) | settled frames of chunks `first..` of one file, packed |
//! | `pending` | ino:u64 index:u64 | [`Pending`](super::records::Pending): version, time written | chunks waiting for the compactor: exactly the `chunk` keys |
//! | `orphan` | ino:u64 | empty | unlinked while open, or a big file whose chunks are being deleted |
//!
//! A chunk `index` covers bytes `[index*cs, (index+1)*cs)` of its file. It lives in exactly
//! one place: the `chunk` table (hot: just written, in the fast codec) or one extent
//! (settled: coded by the compactor, or tried and kept as it was); absent means zeros.
//!
//! Inode numbers are never reused within a store (see `next_ino`), so a stale cache
//! entry keyed by inode can never alias a new file.

// Defines an on-disk layout (the store's key layouts); see clippy.toml.
#![allow(clippy::disallowed_methods)]

/// `meta` key of the [`Superblock`](super::records::Superblock).
pub const SUPERBLOCK: &[u8] = b"super";
/// `meta` key of the next inode number to hand out (a big-endian u64; numbers below it
/// may have been used).
pub const NEXT_INO: &[u8] = b"next_ino";
/// `meta` key of the codec profile LLM frames were coded under, pinned with the first LLM
/// frame.
pub const PROFILE: &[u8] = b"profile";
/// `meta` key of the canary: a small LLM frame coded at pin time and decoded by every
/// mount to check that the model still reproduces the code.
pub const CANARY: &[u8] = b"canary";

/// The value of the [`NEXT_INO`] meta record: the first inode number not handed out nor
/// reserved, big endian (read back with [`u64_at`]).
pub(crate) fn next_ino_value(next: u64) -> Vec<u8> {
    next.to_be_bytes().to_vec()
}

/// Reads the big-endian u64 at `pos` of a key, if the key is long enough.
pub fn u64_at(key: &[u8], pos: usize) -> Option<u64> {
    key.get(pos..pos + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// An inode key, and the prefix of every per-inode key (dirents of a directory, xattrs,
/// chunks, extents, pending records of a file).
pub fn ino(ino: u64) -> Vec<u8> {
    ino.to_be_bytes().to_vec()
}

/// Key of a per-inode record with a name (dirent, xattr).
pub fn named(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&ino.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// The name part of a dirent or xattr key.
pub fn name_of(key: &[u8]) -> &[u8] {
    key.get(8..).unwrap_or(&[])
}

/// Key of chunk `index` of `ino`, in the `chunk`, `extent` (as the first index) and
/// `pending` tables.
pub fn chunk(ino: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&ino.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// (ino, index) of a chunk-shaped key.
pub fn chunk_of(key: &[u8]) -> Option<(u64, u64)> {
    Some((u64_at(key, 0)?, u64_at(key, 8)?))
}

/// A record of `table` named for a person: "inode 42", "the name "notes" in directory 1",
/// "chunk 3 of inode 42", for messages about damage.
pub fn describe(table: super::engine::Table, key: &[u8]) -> String {
    use super::engine::Table;
    let name = |k: &[u8]| String::from_utf8_lossy(name_of(k)).into_owned();
    let ino = u64_at(key, 0);
    match (table, ino, chunk_of(key)) {
        (Table::Meta, _, _) => format!("the store's {:?} record", String::from_utf8_lossy(key)),
        (Table::Inode, Some(i), _) => format!("inode {i}'s record"),
        (Table::Dirent, Some(i), _) => {
            format!("the directory entry {:?} in directory {i}", name(key))
        }
        (Table::Xattr, Some(i), _) => {
            format!("the extended attribute {:?} of inode {i}", name(key))
        }
        (Table::Chunk, _, Some((i, c))) => format!("chunk {c} of inode {i}"),
        (Table::Extent, _, Some((i, c))) => format!("the extent from chunk {c} of inode {i}"),
        (Table::Pending, _, Some((i, c))) => {
            format!("the compaction record of chunk {c} of inode {i}")
        }
        (Table::Orphan, Some(i), _) => format!("the deletion record of inode {i}"),
        (t, _, _) => format!("a {} record with a malformed key", t.name()),
    }
}

/// The smallest key after every key that starts with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_sort_numerically_and_stay_inside_their_file() {
        let a = chunk(7, 1);
        let b = chunk(7, 256);
        let c = chunk(8, 0);
        assert!(a < b && b < c);
        assert!(b.starts_with(&ino(7)));
        assert_eq!(chunk_of(&b), Some((7, 256)));
        assert!(prefix_end(&ino(7)).unwrap() <= c);
    }

    #[test]
    fn names_sort_within_their_inode() {
        let a = named(2, b"a");
        let b = named(2, b"b");
        assert!(a < b);
        assert!(b < named(3, b""));
        assert_eq!(name_of(&b), b"b");
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
    }
}
