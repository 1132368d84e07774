//! Reads through a transaction: point reads, scans and floors that see the engine's
//! records with a [`Txn`]'s uncommitted changes applied over them, so that an operation
//! building a transaction reads what it has already changed.

use super::engine::{self, Engine, Table};
use super::{Store, StoreError, Txn};
use crate::store::{During, StoreOp};
use std::ops::Bound;

impl Store {
    pub(super) fn get(
        &self,
        txn: Option<&Txn>,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(c) = txn.and_then(|t| t.change(table, key)) {
            return Ok(c.map(<[u8]>::to_vec));
        }
        self.engine.get(table, key).during(StoreOp::Read)
    }

    /// Keys and values in `[from, to)`, merged with the transaction's changes; `visit`
    /// gets each and returns false to stop.
    pub(super) fn scan(
        &self,
        txn: Option<&Txn>,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let Some(txn) = txn else {
            return self
                .engine
                .scan(table, from, to, visit)
                .during(StoreOp::Read);
        };
        let high = to.map_or(Bound::Unbounded, Bound::Excluded);
        let mut changes = txn.changes_in(table, from, high).peekable();
        let mut stopped = false;
        self.engine
            .scan(table, from, to, &mut |k, v| {
                while let Some((ck, cv)) = changes.peek() {
                    if *ck > k {
                        break;
                    }
                    if *ck < k {
                        if let Some(cv) = cv {
                            if !visit(ck, cv) {
                                stopped = true;
                                return false;
                            }
                        }
                        changes.next();
                        continue;
                    }
                    // Same key: the transaction's version replaces the engine's.
                    let (ck, cv) = changes.next().expect("peeked");
                    return match cv {
                        Some(cv) => {
                            stopped = !visit(ck, cv);
                            !stopped
                        }
                        None => true,
                    };
                }
                stopped = !visit(k, v);
                !stopped
            })
            .during(StoreOp::Read)?;
        if !stopped {
            for (ck, cv) in changes {
                if let Some(cv) = cv {
                    if !visit(ck, cv) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The entry with the greatest key in `[low, high]`, through the transaction. Keys
    /// of `table` must all have one length (the extent table's do).
    pub(super) fn floor(
        &self,
        txn: Option<&Txn>,
        table: Table,
        low: &[u8],
        high: &[u8],
    ) -> Result<Option<engine::Entry>, StoreError> {
        let mut high = high.to_vec();
        loop {
            let stored = self.engine.floor(table, low, &high).during(StoreOp::Read)?;
            let changed = txn.and_then(|t| {
                t.changes_in(table, low, Bound::Included(&high))
                    .next_back()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            });
            // The greater key wins; on a tie the transaction's change does. A stored key
            // above every changed key cannot have been changed.
            let (key, value) = match (stored, changed) {
                (None, None) => return Ok(None),
                (Some((k, v)), None) => (k, Some(v)),
                (None, Some(c)) => c,
                (Some((k, v)), Some(c)) => {
                    if k > c.0 {
                        (k, Some(v))
                    } else {
                        c
                    }
                }
            };
            match value {
                Some(v) => return Ok(Some((key, v))),
                // Deleted by the transaction: look below it.
                None => match predecessor(&key) {
                    Some(p) if p.as_slice() >= low => high = p,
                    _ => return Ok(None),
                },
            }
        }
    }
}

/// The greatest key below `k` among keys of the same length (big-endian decrement).
pub(super) fn predecessor(k: &[u8]) -> Option<Vec<u8>> {
    let mut p = k.to_vec();
    for i in (0..p.len()).rev() {
        if p[i] > 0 {
            p[i] -= 1;
            for b in &mut p[i + 1..] {
                *b = 0xff;
            }
            return Some(p);
        }
    }
    None
}
