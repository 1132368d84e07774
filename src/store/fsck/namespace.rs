//! The namespace pass: meta records, inodes, directory entries, orphans, link counts,
//! parents and reachability from the root.

use super::{
    CheckPhase, CheckProgress, Checker, Node, Problem, ProblemKind as K, Record, Repair, RESTORE,
};
use crate::frame::{self, Codec};
use crate::store::engine::Table;
use crate::store::keys;
use crate::store::records::{decode_dirent, Inode, Kind, Superblock};
use crate::store::{During, StoreOp};
use crate::store::{StoreError, ROOT_INO};
use std::collections::HashMap;

/// Records between two progress reports.
const PROGRESS_EVERY: u64 = 4096;

impl Checker<'_> {
    pub(super) fn check_namespace(
        &mut self,
        progress: &mut dyn FnMut(CheckProgress),
    ) -> Result<(), StoreError> {
        let mut seen = 0u64;
        let mut tick = |n: &mut u64| {
            *n += 1;
            if *n % PROGRESS_EVERY == 0 {
                progress(CheckProgress {
                    phase: CheckPhase::Namespace,
                    done: *n,
                    total: 0,
                });
            }
        };
        self.check_meta()?;
        self.load_inodes(&mut || tick(&mut seen))?;
        self.load_orphans()?;
        self.load_dirents(&mut || tick(&mut seen))?;
        self.check_links();
        self.check_reachable();
        Ok(())
    }

    fn check_meta(&mut self) -> Result<(), StoreError> {
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        self.store
            .engine
            .scan_checked(Table::Meta, &[], None, &mut |k, v| {
                match v {
                    Ok(v) => found.push((k.to_vec(), v.to_vec())),
                    Err(why) => damaged.push(why),
                }
                true
            })
            .during(StoreOp::Read)?;
        for why in damaged {
            self.add(Problem::error(
                K::Checksum,
                None,
                format!("{why}; {RESTORE}"),
            ));
        }
        for (k, v) in found {
            match k.as_slice() {
                keys::SUPERBLOCK => {
                    // The store opened, so it decodes; what is left is that it says
                    // what the open one says.
                    match Superblock::decode(&v) {
                        Ok(sb) if &sb == self.store.superblock() => {}
                        Ok(_) => self.add(Problem::error(
                            K::Meta,
                            None,
                            "the superblock changed while the store was being checked",
                        )),
                        Err(e) => self.add(Problem::error(K::Meta, None, e.to_string())),
                    }
                }
                keys::NEXT_INO => match (v.len(), keys::u64_at(&v, 0)) {
                    (8, Some(n)) => self.next_ino = Some(n),
                    _ => self.add(Problem::error(
                        K::NextIno,
                        None,
                        format!("the next_ino record is {} bytes, not 8", v.len()),
                    )),
                },
                keys::PROFILE => {
                    self.profile = true;
                    if v.is_empty() {
                        self.add(Problem::error(
                            K::Profile,
                            None,
                            "the pinned codec profile is empty: a mount with a model cannot \
                             tell whether the model is the one the LLM frames were coded \
                             with; report it",
                        ));
                    }
                }
                keys::CANARY => {
                    match frame::parse_header(&v) {
                        Ok(h) if h.codec == Codec::Llm => {}
                        Ok(h) => self.add(Problem::error(
                            K::Profile,
                            None,
                            format!(
                                "the canary frame is {}-coded, not LLM-coded: a mount with a \
                                 model will refuse the store; report it",
                                h.codec.name()
                            ),
                        )),
                        Err(e) => self.add(Problem::error(
                            K::Profile,
                            None,
                            format!(
                                "the canary frame is damaged ({e}): a mount with a model will \
                                 refuse the store; report it"
                            ),
                        )),
                    }
                    self.canary = Some(v);
                }
                other => self.add(Problem::info(
                    K::Meta,
                    None,
                    format!(
                        "the meta table holds a record this release does not know: {:?}",
                        String::from_utf8_lossy(other)
                    ),
                )),
            }
        }
        if self.profile && self.canary.is_none() {
            self.add(Problem::error(
                K::Profile,
                None,
                "the codec profile is pinned but the canary frame is missing: a mount with a \
                 model refuses the store (without a model, non-LLM chunks still read); report \
                 it",
            ));
        }
        Ok(())
    }

    fn load_inodes(&mut self, tick: &mut dyn FnMut()) -> Result<(), StoreError> {
        let mut found = Vec::new();
        let mut malformed = Vec::new();
        self.store
            .engine
            .scan_checked(Table::Inode, &[], None, &mut |k, v| {
                tick();
                match (k.len(), keys::u64_at(k, 0)) {
                    (8, Some(ino)) => {
                        found.push((ino, v.map_err(StoreError::Corrupt).and_then(Inode::decode)))
                    }
                    _ => malformed.push(k.len()),
                }
                true
            })
            .during(StoreOp::Read)?;
        for len in malformed {
            self.malformed_key(Table::Inode, len, "8");
        }
        for (ino, decoded) in found {
            self.max_ino = self.max_ino.max(ino);
            self.counts.inodes += 1;
            let rec = match decoded {
                Ok(i) => {
                    if Kind::from_mode(i.mode).is_none() {
                        self.add(Problem::error(
                            K::Inode,
                            Some(ino),
                            format!(
                                "mode {:o} names no known file type: it is served as a regular \
                                 file; {RESTORE}",
                                i.mode
                            ),
                        ));
                    }
                    match i.kind() {
                        Kind::Dir => self.counts.dirs += 1,
                        Kind::File => self.counts.files += 1,
                        _ => {}
                    }
                    Some(Record {
                        kind: i.kind(),
                        nlink: i.nlink,
                        parent: i.parent,
                        size: i.size,
                        stored: i.stored,
                        data_ver: i.data_ver,
                    })
                }
                Err(e) => {
                    self.add(Problem::error(
                        K::Inode,
                        Some(ino),
                        format!(
                            "the inode record does not decode ({e}): every access to it fails \
                             with an I/O error and llmfs cannot remove it; {RESTORE}"
                        ),
                    ));
                    None
                }
            };
            self.nodes.insert(
                ino,
                Node {
                    rec,
                    ..Node::default()
                },
            );
        }
        match self.rec(ROOT_INO) {
            None if !self.nodes.contains_key(&ROOT_INO) => self.add(Problem::error(
                K::Root,
                Some(ROOT_INO),
                format!("the root directory is missing: nothing is reachable; {RESTORE}"),
            )),
            Some(r) if r.kind != Kind::Dir => self.add(Problem::error(
                K::Root,
                Some(ROOT_INO),
                format!("the root is not a directory: nothing is reachable; {RESTORE}"),
            )),
            _ => {}
        }
        Ok(())
    }

    fn load_orphans(&mut self) -> Result<(), StoreError> {
        let mut malformed = Vec::new();
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        self.store
            .engine
            .scan_checked(Table::Orphan, &[], None, &mut |k, v| {
                match (k.len(), keys::u64_at(k, 0)) {
                    // A damaged mark still says the inode is being deleted: the safe reading.
                    (8, Some(ino)) => {
                        if let Err(why) = v {
                            damaged.push(why);
                        }
                        found.push(ino)
                    }
                    _ => malformed.push(k.len()),
                }
                true
            })
            .during(StoreOp::Read)?;
        for len in malformed {
            self.malformed_key(Table::Orphan, len, "8");
        }
        for why in damaged {
            self.add(Problem::error(
                K::Checksum,
                None,
                format!("{why}; {RESTORE}"),
            ));
        }
        for ino in found {
            self.max_ino = self.max_ino.max(ino);
            self.counts.orphans += 1;
            self.orphans.insert(ino);
        }
        Ok(())
    }

    pub(super) fn malformed_key(&mut self, table: Table, len: usize, want: &str) {
        self.add(Problem::error(
            K::MalformedKey,
            None,
            format!(
                "the {} table holds a key of {len} bytes (its keys have {want}): no release \
                 of llmfs writes such a key; report it",
                table.name()
            ),
        ));
    }

    fn load_dirents(&mut self, tick: &mut dyn FnMut()) -> Result<(), StoreError> {
        let mut found = Vec::new();
        let mut malformed = Vec::new();
        self.store
            .engine
            .scan_checked(Table::Dirent, &[], None, &mut |k, v| {
                tick();
                match keys::u64_at(k, 0) {
                    Some(parent) if k.len() > 8 => found.push((
                        parent,
                        keys::name_of(k).to_vec(),
                        v.map_err(StoreError::Corrupt).and_then(decode_dirent),
                    )),
                    _ => malformed.push(k.len()),
                }
                true
            })
            .during(StoreOp::Read)?;
        for len in malformed {
            self.malformed_key(Table::Dirent, len, "more than 8");
        }
        for (parent, name, decoded) in found {
            self.counts.dirents += 1;
            match decoded {
                Ok((child, kind)) => self.check_dirent(parent, name, child, kind),
                Err(e) => {
                    self.damaged_dirents += 1;
                    self.add(Problem::error(
                        K::Dirent,
                        Some(parent),
                        format!(
                            "the entry {:?} does not decode ({e}): listing the directory fails; \
                         {RESTORE}",
                            String::from_utf8_lossy(&name)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_dirent(&mut self, parent: u64, name: Vec<u8>, child: u64, kind: Kind) {
        let shown = String::from_utf8_lossy(&name).into_owned();
        if name.len() > 255 || name.contains(&b'/') || name == b"." || name == b".." {
            self.add(Problem::error(
                K::Dirent,
                Some(parent),
                format!(
                    "the entry {shown:?} has a name no file can have: it cannot be looked up \
                     or removed; report it"
                ),
            ));
        }
        let parent_ok = match self.nodes.get_mut(&parent) {
            Some(p) => {
                p.entries += 1;
                match p.rec {
                    Some(r) if r.kind == Kind::Dir => true,
                    Some(_) => {
                        self.add(Problem::error(
                            K::Dirent,
                            Some(parent),
                            format!(
                                "is not a directory but holds the entry {shown:?} (inode \
                                 {child}): nothing can reach it through this name; {RESTORE}"
                            ),
                        ));
                        false
                    }
                    None => false,
                }
            }
            None => {
                self.add(Problem::error(
                    K::Dirent,
                    Some(parent),
                    format!(
                        "does not exist but holds the entry {shown:?} (inode {child}): nothing \
                         can reach it through this name; {RESTORE}"
                    ),
                ));
                false
            }
        };
        if child == ROOT_INO || child == parent {
            let what = if child == ROOT_INO {
                "the root directory"
            } else {
                "the directory itself"
            };
            self.add(Problem::error(
                K::Dirent,
                Some(parent),
                format!(
                    "the entry {shown:?} names {what}: a cycle in the tree; tools that walk \
                     it may not end; report it"
                ),
            ));
            return;
        }
        let child_kind = match self.nodes.get_mut(&child) {
            None => {
                self.add(
                    Problem::error(
                        K::Dirent,
                        Some(parent),
                        format!(
                            "the entry {shown:?} names inode {child}, which does not exist: \
                             the name cannot be opened or removed"
                        ),
                    )
                    .repair(Repair::DeleteDirent { parent, name }),
                );
                return;
            }
            Some(c) => {
                c.names += 1;
                if c.holder.is_none() {
                    c.holder = Some((parent, name.clone().into_boxed_slice()));
                }
                c.named_in_bad_dir |= !parent_ok;
                c.rec.map(|r| r.kind)
            }
        };
        let Some(child_kind) = child_kind else {
            return;
        };
        if child_kind == Kind::Dir {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.subdirs += 1;
            }
        }
        if child_kind != kind {
            self.add(
                Problem::error(
                    K::Dirent,
                    Some(parent),
                    format!(
                        "the entry {shown:?} says inode {child} is a {kind:?}, but it is a \
                         {child_kind:?}: listings show the wrong type"
                    ),
                )
                .repair(Repair::FixDirentKind {
                    parent,
                    name,
                    child,
                    kind: child_kind,
                }),
            );
        }
    }

    /// Link counts, parents and orphan marks against the directory entries.
    fn check_links(&mut self) {
        let mut found = Vec::new();
        for (&ino, n) in &self.nodes {
            if let Some(r) = n.rec {
                links_of(ino, n, r, self.orphans.contains(&ino), &mut found);
            }
        }
        for mut p in found {
            // A damaged entry may be one of the names that are not counted: no link count
            // or orphan mark is changed on a count that may be short.
            if self.damaged_dirents > 0 && p.repair.is_some() {
                p.repair = None;
                p.message.push_str(
                    " (not repaired: damaged directory entries may name it; run --salvage)",
                );
            }
            self.add(p);
        }
    }

    /// Directories whose chain of holders never reaches the root: cycles of directories
    /// that hold each other. (A chain that ends at a directory without a name, or at a
    /// damaged entry, is reported there.)
    fn check_reachable(&mut self) {
        let mut reach: HashMap<u64, bool> = HashMap::new();
        let mut cycles = Vec::new();
        for (&ino, n) in &self.nodes {
            if ino == ROOT_INO || n.rec.map(|r| r.kind) != Some(Kind::Dir) || n.names == 0 {
                continue;
            }
            let mut stack: Vec<u64> = Vec::new();
            let mut on_stack: HashMap<u64, usize> = HashMap::new();
            let mut cur = ino;
            let result = loop {
                if cur == ROOT_INO {
                    break true;
                }
                if let Some(&r) = reach.get(&cur) {
                    break r;
                }
                if let Some(&at) = on_stack.get(&cur) {
                    cycles.push(stack[at..].to_vec());
                    break false;
                }
                on_stack.insert(cur, stack.len());
                stack.push(cur);
                let up = self.nodes.get(&cur).and_then(|n| n.holder.as_ref());
                match up {
                    Some((p, _)) if self.rec(*p).is_some_and(|r| r.kind == Kind::Dir) => cur = *p,
                    _ => break false,
                }
            };
            for s in stack {
                reach.insert(s, result);
            }
        }
        for cycle in cycles {
            let first = cycle.iter().copied().min().unwrap_or(0);
            let names = cycle
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" -> ");
            self.add(Problem::error(
                K::Disconnected,
                Some(first),
                format!(
                    "directories {names} hold each other in a cycle the root does not reach: \
                     everything under them is unreachable; report it"
                ),
            ));
        }
    }

    /// LLM frames need a pinned profile: without one, a mount cannot tell that its model
    /// is the one they were coded with.
    pub(super) fn check_profile_pinned(&mut self) {
        if self.counts.llm_frames > 0 && !self.profile {
            self.add(Problem::error(
                K::Profile,
                None,
                format!(
                    "{} chunks are LLM-coded but no codec profile is pinned: a mount cannot \
                     check that its model is the one they were coded with, and a different \
                     one fails their CRC (I/O errors); mount only with the model that wrote \
                     them, and report it",
                    self.counts.llm_frames
                ),
            ));
        }
    }
}

/// The link-count, parent and orphan problems of one inode.
fn links_of(ino: u64, n: &Node, r: Record, orphan: bool, found: &mut Vec<Problem>) {
    if orphan && (n.names > 0 || ino == ROOT_INO) {
        found.push(
            Problem::error(
                K::Orphan,
                Some(ino),
                "is marked as an orphan (unlinked, to be deleted) but has a name: the next \
                 mount would delete it",
            )
            .repair(Repair::ClearOrphan { ino }),
        );
    }
    if ino == ROOT_INO {
        if r.kind == Kind::Dir && r.parent != ROOT_INO {
            found.push(
                Problem::error(
                    K::Root,
                    Some(ino),
                    format!("the root's parent is {}, not itself", r.parent),
                )
                .repair(Repair::SetParent {
                    ino,
                    parent: ROOT_INO,
                }),
            );
        }
        if r.kind == Kind::Dir {
            found.extend(wrong_nlink(ino, n, r));
        }
    } else if n.names > 0 {
        named_links(ino, n, r, found);
    } else {
        unnamed_links(ino, n, r, orphan, found);
    }
}

/// What the link count should be: 2 + subdirectories for a directory, the number of
/// names for anything else.
fn wrong_nlink(ino: u64, n: &Node, r: Record) -> Option<Problem> {
    let (want, why) = if r.kind == Kind::Dir {
        (2u32.saturating_add(n.subdirs), "its subdirectories")
    } else {
        (n.names, "its names")
    };
    (r.nlink != want).then(|| {
        Problem::error(
            K::LinkCount,
            Some(ino),
            format!("the link count is {}, but {why} make it {want}", r.nlink),
        )
        .repair(Repair::SetNlink { ino, nlink: want })
    })
}

fn named_links(ino: u64, n: &Node, r: Record, found: &mut Vec<Problem>) {
    if r.kind != Kind::Dir {
        match wrong_nlink(ino, n, r) {
            Some(_) if n.named_in_bad_dir => found.push(Problem::error(
                K::LinkCount,
                Some(ino),
                format!(
                    "the link count is {} and {} entries name it, some in directories that \
                     are damaged: the right count is unknown; report it",
                    r.nlink, n.names
                ),
            )),
            p => found.extend(p),
        }
        return;
    }
    if n.names > 1 {
        found.push(Problem::error(
            K::LinkCount,
            Some(ino),
            format!(
                "this directory has {} names; a directory has one (rmdir of one name leaves \
                 the others dangling); report it",
                n.names
            ),
        ));
    }
    found.extend(wrong_nlink(ino, n, r));
    match &n.holder {
        Some((h, _)) if n.names == 1 && !n.named_in_bad_dir && r.parent != *h => found.push(
            Problem::error(
                K::Parent,
                Some(ino),
                format!(
                    "the directory's parent is {}, but directory {h} holds it: `..` leads to \
                     the wrong place",
                    r.parent
                ),
            )
            .repair(Repair::SetParent { ino, parent: *h }),
        ),
        _ => {}
    }
}

/// An inode without a name: an orphan (unlinked while open, deleted by the next mount),
/// or lost.
fn unnamed_links(ino: u64, n: &Node, r: Record, orphan: bool, found: &mut Vec<Problem>) {
    if r.kind == Kind::Dir && n.entries > 0 {
        // rmdir needs an empty directory: deleting this one would lose its entries.
        found.push(Problem::error(
            K::Disconnected,
            Some(ino),
            format!(
                "this directory has no name but holds {} entries: they are unreachable (no \
                 lost+found yet); report it",
                n.entries
            ),
        ));
        return;
    }
    found.push(match (r.nlink, orphan) {
        (0, true) => Problem::info(
            K::Orphan,
            Some(ino),
            "was unlinked while open: the next mount deletes it",
        ),
        (0, false) => Problem::error(
            K::Orphan,
            Some(ino),
            "has no name and no links but is not marked as an orphan: it is deleted but \
             never goes away",
        )
        .repair(Repair::MarkOrphan { ino }),
        (_, true) => Problem::error(
            K::LinkCount,
            Some(ino),
            format!(
                "is marked as an orphan and has no name, but its link count is {}",
                r.nlink
            ),
        )
        .repair(Repair::SetNlink { ino, nlink: 0 }),
        (_, false) => Problem::error(
            K::Disconnected,
            Some(ino),
            format!(
                "has {} links but no name: its data is kept but unreachable (no lost+found \
                 yet); report it",
                r.nlink
            ),
        ),
    });
}
