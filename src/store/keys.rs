//! Every key layout of the store, in one place.
//!
//! The store is ONE sled tree, `fs`, so that every multi-key update (a chunk together
//! with the file size and mtime that go with it, a rename, an unlink) is one atomic
//! `apply_batch`. Keys start with a one-byte prefix naming the record kind; integers
//! in keys are big endian so that a range scan walks them in numeric order.
//!
//! | prefix | key | value | notes |
//! | --- | --- | --- | --- |
//! | `S` | `S` `super` | [`Superblock`](super::records::Superblock) | format version, chunk size, model fingerprint |
//! | `I` | `I` ino:u64 | [`Inode`](super::records::Inode) | one per live inode (and per orphan) |
//! | `D` | `D` parent:u64 name | child:u64 kind:u8 | name-ordered, so readdir resumes after a name |
//! | `X` | `X` ino:u64 name | value bytes | extended attributes, name with its namespace (`user.foo`) |
//! | `C` | `C` ino:u64 index:u64 | [`frame`](crate::frame) | chunk `index` covers bytes `[index*cs, (index+1)*cs)`; absent = zeros |
//! | `O` | `O` ino:u64 | empty | orphan: unlinked while open; deleted at last close or next mount |
//!
//! Inode numbers come from sled's persistent `generate_id` (+2, the root is 1) and are
//! never reused, so a stale cache entry keyed by inode can never alias a new file.

pub const SUPERBLOCK: &[u8] = b"Ssuper";

const INODE: u8 = b'I';
const DIRENT: u8 = b'D';
const XATTR: u8 = b'X';
const CHUNK: u8 = b'C';
const ORPHAN: u8 = b'O';

fn with_ino(prefix: u8, ino: u64, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + extra);
    k.push(prefix);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `pos` of a key, if the key is long enough.
pub fn u64_at(key: &[u8], pos: usize) -> Option<u64> {
    key.get(pos..pos + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

pub fn inode(ino: u64) -> Vec<u8> {
    with_ino(INODE, ino, 0)
}

/// Prefix of every inode key.
pub fn inode_prefix() -> Vec<u8> {
    vec![INODE]
}

pub fn dirent(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut k = with_ino(DIRENT, parent, name.len());
    k.extend_from_slice(name);
    k
}

/// Prefix of every entry of directory `parent`.
pub fn dirent_prefix(parent: u64) -> Vec<u8> {
    with_ino(DIRENT, parent, 0)
}

/// The name part of a dirent key.
pub fn dirent_name(key: &[u8]) -> &[u8] {
    key.get(9..).unwrap_or(&[])
}

pub fn xattr(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = with_ino(XATTR, ino, name.len());
    k.extend_from_slice(name);
    k
}

pub fn xattr_prefix(ino: u64) -> Vec<u8> {
    with_ino(XATTR, ino, 0)
}

/// The name part of an xattr key.
pub fn xattr_name(key: &[u8]) -> &[u8] {
    key.get(9..).unwrap_or(&[])
}

pub fn chunk(ino: u64, index: u64) -> Vec<u8> {
    let mut k = with_ino(CHUNK, ino, 8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Prefix of every chunk of `ino`.
pub fn chunk_prefix(ino: u64) -> Vec<u8> {
    with_ino(CHUNK, ino, 0)
}

/// Prefix of every chunk of every file (for statistics).
pub fn all_chunks_prefix() -> Vec<u8> {
    vec![CHUNK]
}

/// The chunk index of a chunk key.
pub fn chunk_index(key: &[u8]) -> Option<u64> {
    u64_at(key, 9)
}

pub fn orphan(ino: u64) -> Vec<u8> {
    with_ino(ORPHAN, ino, 0)
}

pub fn orphan_prefix() -> Vec<u8> {
    vec![ORPHAN]
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
        assert!(b.starts_with(&chunk_prefix(7)));
        assert_eq!(chunk_index(&b), Some(256));
    }

    #[test]
    fn dirents_sort_by_name_within_a_directory() {
        let a = dirent(2, b"a");
        let b = dirent(2, b"b");
        assert!(a < b);
        assert!(b < dirent(3, b""));
        assert_eq!(dirent_name(&b), b"b");
    }
}
