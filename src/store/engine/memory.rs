//! An in-memory [`Engine`] that injects faults, for fast tests of the store and the
//! filesystem core: fail the Nth commit, tear a commit (apply a prefix of its operations,
//! then fail), stall commits, report a full device, and crash (lose every commit made
//! since the last durable one, as a power loss would).
//!
//! Never used for data anyone keeps: nothing here touches a disk.

use super::{Engine, EngineError, EngineSpace, Entry, RawOp, Table};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

#[derive(Default)]
struct State {
    live: Tables,
    /// What survives a crash: the state as of the last durable commit or sync.
    durable: Tables,
    commits: u64,
}

#[derive(Default)]
struct Faults {
    /// Commit number (1-based, counted from engine creation) that fails whole.
    fail_at: Option<u64>,
    /// Commit number that applies only its first `n` operations and then fails.
    tear_at: Option<(u64, usize)>,
    stall: Option<Duration>,
    no_space: bool,
}

/// The in-memory engine: every table in one ordered map behind a lock, with the faults
/// set on it injected into commits.
#[derive(Default)]
pub struct MemoryEngine {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    /// Values read from the chunk and extent tables (the rows that hold frames).
    frame_reads: std::sync::atomic::AtomicU64,
    /// Calls of [`Engine::sync`].
    syncs: std::sync::atomic::AtomicU64,
}

impl MemoryEngine {
    /// An empty engine with no faults set.
    pub fn new() -> Arc<MemoryEngine> {
        Arc::new(MemoryEngine::default())
    }

    /// Values read so far from the tables that hold frames (chunk and extent) by point
    /// reads, floors and scans (each row a scan visits): what a test counts to see how
    /// often a path fetches frames.
    pub fn frame_reads(&self) -> u64 {
        self.frame_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_frame_read(&self, table: Table, found: bool) {
        if found && matches!(table, Table::Chunk | Table::Extent) {
            self.frame_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Calls of [`Engine::sync`] so far (a durable commit is not one).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits made so far (successful or not).
    pub fn commits(&self) -> u64 {
        self.state.lock().commits
    }

    /// The `n`th commit from now (1 = the next) fails and applies nothing.
    pub fn fail_commit(&self, n: u64) {
        let at = self.commits() + n;
        self.faults.lock().fail_at = Some(at);
    }

    /// The `n`th commit from now applies its first `applied` operations, then fails: a
    /// database that broke its atomicity, for testing what notices.
    pub fn tear_commit(&self, n: u64, applied: usize) {
        let at = self.commits() + n;
        self.faults.lock().tear_at = Some((at, applied));
    }

    /// Every commit from now sleeps this long first (`None` to stop).
    pub fn stall_commits(&self, d: Option<Duration>) {
        self.faults.lock().stall = d;
    }

    /// While set, every commit fails with [`EngineError::NoSpace`] and applies nothing.
    pub fn set_no_space(&self, full: bool) {
        self.faults.lock().no_space = full;
    }

    /// A power loss: every commit since the last durable one is gone.
    pub fn crash(&self) {
        let mut s = self.state.lock();
        s.live = s.durable.clone();
    }

    /// Raw access for tests that plant damage.
    pub fn raw_put(&self, table: Table, key: &[u8], value: &[u8]) {
        let mut s = self.state.lock();
        s.live.insert((table, key.to_vec()), value.to_vec());
    }

    /// The live value of `key` in `table`, bypassing the engine interface (and any seal
    /// the store puts around it).
    pub fn raw_get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.state.lock().live.get(&(table, key.to_vec())).cloned()
    }

    /// Every key of `table`, in order.
    pub fn raw_keys(&self, table: Table) -> Vec<Vec<u8>> {
        self.state
            .lock()
            .live
            .range((table, Vec::new())..)
            .take_while(|((t, _), _)| *t == table)
            .map(|((_, k), _)| k.clone())
            .collect()
    }
}

fn apply(tables: &mut Tables, op: &RawOp) {
    match op {
        RawOp::Put(t, k, v) => {
            tables.insert((*t, k.clone()), v.clone());
        }
        RawOp::Delete(t, k) => {
            tables.remove(&(*t, k.clone()));
        }
    }
}

impl Engine for MemoryEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self.state.lock().live.get(&(table, key.to_vec())).cloned();
        self.count_frame_read(table, v.is_some());
        Ok(v)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        // In batches of the product engine's size, each copied out under the lock
        // (`visit` may call back into the engine) and read as of the latest commit: the
        // same view of concurrent commits as SQLite's (see [`super::SCAN_BATCH`]).
        let upper = match to {
            Some(t) => Bound::Excluded((table, t.to_vec())),
            None => Bound::Unbounded,
        };
        let mut lower = Bound::Included((table, from.to_vec()));
        loop {
            let items: Vec<(Vec<u8>, Vec<u8>)> = {
                let s = self.state.lock();
                s.live
                    .range((lower.clone(), upper.clone()))
                    .filter(|((t, _), _)| *t == table)
                    .take(super::SCAN_BATCH)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect()
            };
            let full = items.len() == super::SCAN_BATCH;
            for (k, v) in &items {
                self.count_frame_read(table, true);
                if !visit(k, v) {
                    return Ok(());
                }
            }
            match items.last() {
                Some((k, _)) if full => lower = Bound::Excluded((table, k.clone())),
                _ => return Ok(()),
            }
        }
    }

    fn floor(&self, table: Table, low: &[u8], high: &[u8]) -> Result<Option<Entry>, EngineError> {
        if low > high {
            return Ok(None);
        }
        let found = self
            .state
            .lock()
            .live
            .range((table, low.to_vec())..=(table, high.to_vec()))
            .next_back()
            .map(|((_, k), v)| (k.clone(), v.clone()));
        self.count_frame_read(table, found.is_some());
        Ok(found)
    }

    fn commit(&self, ops: &[RawOp], durable: bool) -> Result<(), EngineError> {
        let (stall, no_space, fail_at, tear_at) = {
            let f = self.faults.lock();
            (f.stall, f.no_space, f.fail_at, f.tear_at)
        };
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        let mut s = self.state.lock();
        s.commits += 1;
        let n = s.commits;
        if no_space {
            return Err(EngineError::NoSpace);
        }
        if fail_at == Some(n) {
            return Err(EngineError::Other(format!(
                "injected failure of commit {n}"
            )));
        }
        if let Some((at, applied)) = tear_at {
            if at == n {
                for op in ops.iter().take(applied) {
                    apply(&mut s.live, op);
                }
                return Err(EngineError::Other(format!("injected tear of commit {n}")));
            }
        }
        for op in ops {
            apply(&mut s.live, op);
        }
        if durable {
            s.durable = s.live.clone();
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.state.lock();
        s.durable = s.live.clone();
        Ok(())
    }

    fn space(&self) -> Result<EngineSpace, EngineError> {
        let s = self.state.lock();
        let bytes = s
            .live
            .iter()
            .map(|((_, k), v)| k.len() + v.len())
            .sum::<usize>();
        Ok(EngineSpace {
            file_bytes: bytes as u64,
            free_bytes: 0,
            used_bytes: bytes as u64,
        })
    }

    fn extent_target(&self) -> usize {
        // Small, so that tests cross extent boundaries with few chunks.
        2048
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(t: Table, k: &[u8], v: &[u8]) -> RawOp {
        RawOp::Put(t, k.to_vec(), v.to_vec())
    }

    #[test]
    fn crash_keeps_exactly_the_durable_prefix() {
        let e = MemoryEngine::new();
        e.commit(&[put(Table::Inode, b"a", b"1")], true).unwrap();
        e.commit(&[put(Table::Inode, b"b", b"2")], false).unwrap();
        assert!(e.get(Table::Inode, b"b").unwrap().is_some());
        e.crash();
        assert!(e.get(Table::Inode, b"a").unwrap().is_some());
        assert!(e.get(Table::Inode, b"b").unwrap().is_none());
    }

    #[test]
    fn injected_faults() {
        let e = MemoryEngine::new();
        e.fail_commit(1);
        assert!(e.commit(&[put(Table::Meta, b"x", b"1")], false).is_err());
        assert!(
            e.get(Table::Meta, b"x").unwrap().is_none(),
            "a failed commit applies nothing"
        );
        e.tear_commit(1, 1);
        let ops = [put(Table::Meta, b"x", b"1"), put(Table::Meta, b"y", b"2")];
        assert!(e.commit(&ops, false).is_err());
        assert!(e.get(Table::Meta, b"x").unwrap().is_some());
        assert!(e.get(Table::Meta, b"y").unwrap().is_none());
        e.set_no_space(true);
        assert!(matches!(e.commit(&ops, false), Err(EngineError::NoSpace)));
        e.set_no_space(false);
        e.commit(&ops, false).unwrap();
    }

    #[test]
    fn scans_and_floors_stay_inside_their_table() {
        let e = MemoryEngine::new();
        let ops = [
            put(Table::Chunk, b"a1", b""),
            put(Table::Chunk, b"a3", b""),
            put(Table::Chunk, b"b1", b""),
            put(Table::Extent, b"a0", b""),
        ];
        e.commit(&ops, false).unwrap();
        let mut seen = Vec::new();
        e.scan(Table::Chunk, b"a", Some(b"b"), &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, [b"a1".to_vec(), b"a3".to_vec()]);
        let mut all = 0;
        e.scan(Table::Chunk, b"", None, &mut |_, _| {
            all += 1;
            true
        })
        .unwrap();
        assert_eq!(all, 3);
        let mut last = 0;
        e.commit(&[put(Table::Orphan, b"o", b"")], false).unwrap();
        e.scan(Table::Orphan, b"", None, &mut |_, _| {
            last += 1;
            true
        })
        .unwrap();
        assert_eq!(last, 1, "the last table scans too");
        assert_eq!(
            e.floor(Table::Chunk, b"a", b"a2").unwrap().unwrap().0,
            b"a1"
        );
        assert!(e.floor(Table::Chunk, b"a4", b"a9").unwrap().is_none());
        assert!(e.floor(Table::Extent, b"b", b"b9").unwrap().is_none());
    }
}
