//! [`Store::repair`]: applies the repairs of a [`CheckReport`], and nothing else, in
//! bounded transactions, then makes them durable.

use super::{CheckReport, Repair};
use crate::store::engine::{Engine, Table};
use crate::store::keys;
use crate::store::records::{HotChunk, Inode, Pending, Time};
use crate::store::{During, StoreOp};
use crate::store::{Store, StoreError, Txn};
use std::collections::{BTreeMap, BTreeSet};

/// Inodes whose record-only fixes share one commit.
const INODES_PER_COMMIT: usize = 256;
/// Directory entries fixed per commit.
const NAMES_PER_COMMIT: usize = 512;
/// Records of a nonexistent inode's data deleted per commit (as the reaper does).
const RECORDS_PER_COMMIT: usize = 4096;

/// What [`Store::repair`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairSummary {
    /// Problems whose repair was applied.
    pub repaired: usize,
    /// Store transactions committed to apply them.
    pub commits: u64,
}

/// The repairs of one inode, applied together.
#[derive(Default)]
struct InodeFix {
    drop_settled: BTreeSet<u64>,
    delete_from: Option<u64>,
    sync_pending: bool,
    recompute_stored: bool,
    nlink: Option<u32>,
    parent: Option<u64>,
    data_ver: Option<u64>,
    /// Some(true): mark as orphan; Some(false): clear the mark.
    orphan: Option<bool>,
}

impl InodeFix {
    /// Whether it deletes chunks (and so commits on its own: a file's chunks can be many).
    fn deletes_chunks(&self) -> bool {
        !self.drop_settled.is_empty() || self.delete_from.is_some()
    }
}

/// A report's repairs, grouped by what applies them.
#[derive(Default)]
struct Plan<'r> {
    inodes: BTreeMap<u64, InodeFix>,
    /// Directory entry repairs.
    names: Vec<&'r Repair>,
    /// Inodes whose data goes (they do not exist).
    leftovers: BTreeSet<u64>,
    next_ino: Option<u64>,
    repaired: usize,
}

impl<'r> Plan<'r> {
    fn of(report: &'r CheckReport) -> Plan<'r> {
        fn fix(inodes: &mut BTreeMap<u64, InodeFix>, ino: u64) -> &mut InodeFix {
            inodes.entry(ino).or_default()
        }
        let mut plan = Plan::default();
        for r in report.problems.iter().filter_map(|p| p.repair.as_ref()) {
            plan.repaired += 1;
            match r {
                Repair::DropSettledCopy { ino, index } => {
                    fix(&mut plan.inodes, *ino).drop_settled.insert(*index);
                }
                Repair::DeleteChunksFrom { ino, from } => {
                    let f = fix(&mut plan.inodes, *ino);
                    f.delete_from = Some(f.delete_from.map_or(*from, |d| d.min(*from)));
                }
                Repair::SyncPending { ino } => fix(&mut plan.inodes, *ino).sync_pending = true,
                Repair::RecomputeStored { ino } => {
                    fix(&mut plan.inodes, *ino).recompute_stored = true
                }
                Repair::SetNlink { ino, nlink } => fix(&mut plan.inodes, *ino).nlink = Some(*nlink),
                Repair::SetParent { ino, parent } => {
                    fix(&mut plan.inodes, *ino).parent = Some(*parent)
                }
                Repair::RaiseDataVer { ino, data_ver } => {
                    let f = fix(&mut plan.inodes, *ino);
                    f.data_ver = f.data_ver.max(Some(*data_ver));
                }
                Repair::ClearOrphan { ino } => fix(&mut plan.inodes, *ino).orphan = Some(false),
                Repair::MarkOrphan { ino } => fix(&mut plan.inodes, *ino).orphan = Some(true),
                Repair::DeleteDirent { .. } | Repair::FixDirentKind { .. } => plan.names.push(r),
                Repair::DeleteData { ino } => {
                    plan.leftovers.insert(*ino);
                }
                Repair::RaiseNextIno(n) => plan.next_ino = plan.next_ino.max(Some(*n)),
            }
        }
        plan
    }
}

/// A transaction that commits itself every so often.
struct Batch<'s> {
    store: &'s Store,
    txn: Txn,
    items: usize,
    commits: u64,
}

impl Batch<'_> {
    fn commit(&mut self) -> Result<(), StoreError> {
        if !self.txn.is_empty() {
            self.store.commit(std::mem::take(&mut self.txn))?;
            self.commits += 1;
        }
        self.items = 0;
        Ok(())
    }

    fn done_one(&mut self, limit: usize) -> Result<(), StoreError> {
        self.items += 1;
        if self.items >= limit {
            self.commit()?;
        }
        Ok(())
    }
}

impl Store {
    /// Applies every repair `report` proposes (see [`super`] for why each is safe), then
    /// syncs. `report` must come from [`Store::check`] on this store, with nothing
    /// written since.
    pub fn repair(&self, report: &CheckReport) -> Result<RepairSummary, StoreError> {
        let plan = Plan::of(report);
        let mut b = Batch {
            store: self,
            txn: Txn::new(),
            items: 0,
            commits: 0,
        };
        for r in &plan.names {
            match r {
                Repair::DeleteDirent { parent, name } => b.txn.unlink(*parent, name),
                Repair::FixDirentKind {
                    parent,
                    name,
                    child,
                    kind,
                } => b.txn.link(*parent, name, *child, *kind),
                _ => unreachable!("only names were collected"),
            }
            b.done_one(NAMES_PER_COMMIT)?;
        }
        b.commit()?;
        for (ino, fix) in &plan.inodes {
            self.fix_inode(&mut b.txn, *ino, fix)?;
            let limit = if fix.deletes_chunks() {
                1
            } else {
                INODES_PER_COMMIT
            };
            b.done_one(limit)?;
        }
        b.commit()?;
        for &ino in &plan.leftovers {
            while self.delete_file_data(&mut b.txn, ino, RECORDS_PER_COMMIT)? > 0 {
                b.done_one(1)?;
            }
        }
        if let Some(n) = plan.next_ino {
            self.raise_next_ino(&mut b.txn, n)?;
            b.done_one(1)?;
        }
        b.commit()?;
        self.sync()?;
        Ok(RepairSummary {
            repaired: plan.repaired,
            commits: b.commits,
        })
    }

    /// Adds to `t` the fixes of one inode: its chunks first, then its record, whose
    /// `stored` is recomputed from what remains when chunks went.
    fn fix_inode(&self, t: &mut Txn, ino: u64, fix: &InodeFix) -> Result<(), StoreError> {
        for &index in &fix.drop_settled {
            for (first, mut e) in self.extents_overlapping(Some(t), ino, index, index + 1)? {
                if e.get(index).is_some() {
                    e.remove_range(index, index + 1);
                    self.put_extent(t, ino, first, &e);
                }
            }
        }
        if let Some(from) = fix.delete_from {
            self.remove_chunks(t, ino, from, u64::MAX)?;
        }
        if fix.sync_pending {
            self.sync_pending(t, ino)?;
        }
        match fix.orphan {
            Some(true) => t.mark_orphan(ino),
            Some(false) => t.clear_orphan(ino),
            None => {}
        }
        let touches_record = fix.recompute_stored
            || fix.deletes_chunks()
            || fix.nlink.is_some()
            || fix.parent.is_some()
            || fix.data_ver.is_some();
        if !touches_record {
            return Ok(());
        }
        let Some(mut inode): Option<Inode> = self.inode(ino)? else {
            return Ok(());
        };
        if let Some(n) = fix.nlink {
            inode.nlink = n;
        }
        if let Some(p) = fix.parent {
            inode.parent = p;
        }
        if let Some(v) = fix.data_ver {
            inode.data_ver = inode.data_ver.max(v);
        }
        if fix.recompute_stored || fix.deletes_chunks() {
            inode.stored = self
                .chunks_in_txn(Some(t), ino, 0, u64::MAX)?
                .iter()
                .map(|c| c.frame_len as u64)
                .sum();
        }
        t.put_inode(ino, &inode);
        Ok(())
    }

    /// Makes the pending records of `ino` exactly its hot chunks, at their versions
    /// (keeping the time written where a record has one).
    fn sync_pending(&self, t: &mut Txn, ino: u64) -> Result<(), StoreError> {
        let from = keys::ino(ino);
        let to = keys::prefix_end(&from);
        let mut hot: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        self.scan(Some(t), Table::Chunk, &from, to.as_deref(), &mut |k, v| {
            if let Some((_, index)) = keys::chunk_of(k) {
                hot.insert(index, HotChunk::decode_ver(v).ok());
            }
            true
        })?;
        let mut pending: BTreeMap<u64, Option<Pending>> = BTreeMap::new();
        self.scan(
            Some(t),
            Table::Pending,
            &from,
            to.as_deref(),
            &mut |k, v| {
                if let Some((_, index)) = keys::chunk_of(k) {
                    pending.insert(index, Pending::decode(v).ok());
                }
                true
            },
        )?;
        let now = Time::now().secs;
        for (&index, ver) in &hot {
            let Some(ver) = *ver else {
                continue; // a damaged record: what it should say is unknown
            };
            let written = match pending.get(&index) {
                Some(Some(p)) if p.ver == ver => continue,
                Some(Some(p)) => p.written,
                _ => now,
            };
            let p = Pending { ver, written };
            t.put(Table::Pending, keys::chunk(ino, index), p.encode());
        }
        for &index in pending.keys() {
            if !hot.contains_key(&index) {
                t.delete(Table::Pending, keys::chunk(ino, index));
            }
        }
        Ok(())
    }

    fn raise_next_ino(&self, t: &mut Txn, to: u64) -> Result<(), StoreError> {
        let now = self
            .engine
            .get(Table::Meta, keys::NEXT_INO)
            .during(StoreOp::Read)?
            .and_then(|b| keys::u64_at(&b, 0))
            .unwrap_or(0);
        // What this handle reserved counts too: it hands those numbers out.
        let mut g = self.inos.lock();
        let target = to.max(g.1);
        if now < target {
            t.put(
                Table::Meta,
                keys::NEXT_INO.to_vec(),
                keys::next_ino_value(target),
            );
        }
        g.0 = g.0.max(to);
        g.1 = target;
        Ok(())
    }
}
