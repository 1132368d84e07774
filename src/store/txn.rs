//! [`Txn`]: a typed batch of changes, committed atomically by [`super::Store::commit`].
//!
//! The filesystem core builds a `Txn` from typed operations (put an inode, link a name,
//! write a chunk, ...) and never sees a key. A `Txn` keeps the last change of each key,
//! and the store's read helpers look through it first, so that several edits of one
//! extent in one batch compose instead of overwriting each other.

use super::engine::{RawOp, Table};
use super::keys;
use super::records::{encode_dirent, Inode, Kind, Superblock};
use std::collections::BTreeMap;
use std::ops::Bound;

/// A batch of typed store changes, keeping the last change of each key; nothing is
/// written until [`super::Store::commit`] applies it atomically.
#[derive(Default, Debug)]
pub struct Txn {
    /// The final state of every key changed: `Some(value)` or deleted.
    changes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// Pending records this transaction adds (positive) or removes, as the store's
    /// methods that build it know: the store's count moves by it once it commits.
    pub(super) pending_delta: i64,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Whether the transaction changes no key (the pending-count delta aside).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub(super) fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert((table, key), Some(value));
    }

    pub(super) fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.changes.insert((table, key), None);
    }

    /// This transaction's change of `key`: `Some(None)` when it deletes it.
    pub(super) fn change(&self, table: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.changes
            .get(&(table, key.to_vec()))
            .map(|v| v.as_deref())
    }

    /// Changes of keys in `[low, high]` of `table`, in key order.
    pub(super) fn changes_in(
        &self,
        table: Table,
        low: &[u8],
        high: Bound<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (&[u8], Option<&[u8]>)> {
        let upper = match high {
            Bound::Included(h) => Bound::Included((table, h.to_vec())),
            Bound::Excluded(h) => Bound::Excluded((table, h.to_vec())),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.changes
            .range((Bound::Included((table, low.to_vec())), upper))
            .filter(move |((t, _), _)| *t == table)
            .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
    }

    pub(super) fn into_ops(self) -> Vec<RawOp> {
        self.into_parts().0
    }

    /// The operations, and the change of the pending count.
    pub(super) fn into_parts(self) -> (Vec<RawOp>, i64) {
        let delta = self.pending_delta;
        let ops = self
            .changes
            .into_iter()
            .map(|((t, k), v)| match v {
                Some(v) => RawOp::Put(t, k, v),
                None => RawOp::Delete(t, k),
            })
            .collect();
        (ops, delta)
    }

    /// Writes the superblock record.
    pub fn put_superblock(&mut self, sb: &Superblock) {
        self.put(Table::Meta, keys::SUPERBLOCK.to_vec(), sb.encode());
    }

    /// Writes the inode record of `ino`, replacing any.
    pub fn put_inode(&mut self, ino: u64, inode: &Inode) {
        self.put(Table::Inode, keys::ino(ino), inode.encode());
    }

    /// Removes the inode record only (its data goes with [`super::Store::delete_file_data`]).
    pub fn delete_inode_record(&mut self, ino: u64) {
        self.delete(Table::Inode, keys::ino(ino));
    }

    /// Names `child` as `name` in directory `parent` (replacing what the name held).
    pub fn link(&mut self, parent: u64, name: &[u8], child: u64, kind: Kind) {
        self.put(
            Table::Dirent,
            keys::named(parent, name),
            encode_dirent(child, kind),
        );
    }

    /// Removes the directory entry `name` of `parent` (only the name: link counts are the
    /// caller's).
    pub fn unlink(&mut self, parent: u64, name: &[u8]) {
        self.delete(Table::Dirent, keys::named(parent, name));
    }

    /// Sets extended attribute `name` (with its namespace, e.g. `user.foo`) of `ino` to
    /// `value`.
    pub fn put_xattr(&mut self, ino: u64, name: &[u8], value: &[u8]) {
        self.put(Table::Xattr, keys::named(ino, name), value.to_vec());
    }

    /// Removes extended attribute `name` of `ino`.
    pub fn delete_xattr(&mut self, ino: u64, name: &[u8]) {
        self.delete(Table::Xattr, keys::named(ino, name));
    }

    /// Records that `ino` has no name but still holds data (open, or being deleted).
    pub fn mark_orphan(&mut self, ino: u64) {
        self.put(Table::Orphan, keys::ino(ino), Vec::new());
    }

    /// Removes the orphan mark of `ino`: its data is deleted (in this transaction or
    /// before), or fsck found it named.
    pub fn clear_orphan(&mut self, ino: u64) {
        self.delete(Table::Orphan, keys::ino(ino));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_change_of_a_key_wins_and_ranges_see_changes() {
        let mut t = Txn::new();
        t.put(Table::Chunk, keys::chunk(1, 1), b"a".to_vec());
        t.put(Table::Chunk, keys::chunk(1, 2), b"b".to_vec());
        t.delete(Table::Chunk, keys::chunk(1, 1));
        t.put(Table::Extent, keys::chunk(1, 0), b"e".to_vec());
        assert_eq!(t.change(Table::Chunk, &keys::chunk(1, 1)), Some(None));
        let seen: Vec<_> = t
            .changes_in(Table::Chunk, &keys::chunk(1, 0), Bound::Unbounded)
            .map(|(k, v)| (keys::chunk_of(k).unwrap().1, v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(seen, [(1, None), (2, Some(b"b".to_vec()))]);
        assert_eq!(t.into_ops().len(), 3);
    }
}
