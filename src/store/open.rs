//! Opening a store: what a directory holds, creating a new store, checking the
//! superblock, and upgrading an older format.

use super::engine::{self, Engine, EngineError, Table};
use super::records::{Inode, Superblock, Time, FORMAT_VERSION};
use super::seal::{self, Sealed};
use super::{keys, CreateOptions, OpenOptions, Store, StoreError, Txn, WriteProgress, ROOT_INO};
use crate::store::{During, StoreOp};
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a store directory holds, judged before anything is opened or created.
enum DirState {
    /// Missing, or empty but for what a fresh file system or a lock leaves.
    Empty,
    Ours,
    Sled,
    Other(String),
}

fn inspect(dir: &Path) -> Result<DirState, StoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Empty),
        Err(e) => {
            return Err(StoreError::engine(
                StoreOp::Open,
                EngineError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                },
            ))
        }
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| {
            StoreError::engine(
                StoreOp::Open,
                EngineError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                },
            )
        })?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    if names.iter().any(|n| n == engine::product::DB_FILE) {
        return Ok(DirState::Ours);
    }
    if names.iter().any(|n| n == "conf") && names.iter().any(|n| n == "db") {
        return Ok(DirState::Sled);
    }
    // What creation leaves if it is interrupted (see `engine::product::create`): the
    // lock and the database under its temporary name. A lock (or the database's
    // journal) without the database means the database was deleted: not an empty store.
    let creating = names
        .iter()
        .any(|n| n.starts_with(engine::product::CREATING));
    let leftovers = names
        .iter()
        .filter(|n| n.starts_with(engine::product::DB_FILE) || *n == engine::product::LOCK_FILE)
        .count();
    if leftovers > 0 && !creating {
        return Err(StoreError::Corrupt(format!(
            "{} has no database file {} but holds what a store leaves ({}): the database \
             was deleted or moved; restore it, or use an empty directory for a new store",
            dir.display(),
            engine::product::DB_FILE,
            names.join(", ")
        )));
    }
    names.retain(|n| {
        n != "lost+found"
            && n != engine::product::LOCK_FILE
            && !n.starts_with(engine::product::CREATING)
    });
    if names.is_empty() {
        return Ok(DirState::Empty);
    }
    names.sort();
    let mut found = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        found.push_str(&format!(" and {} more", names.len() - 3));
    }
    Ok(DirState::Other(found))
}

impl Store {
    /// Opens the store in directory `dir`, creating it (with `opts.create`) only when the
    /// directory is missing or empty. A directory holding anything else, or a database
    /// without a superblock, is an error: a damaged store is never taken for a new one.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Store, StoreError> {
        match inspect(dir)? {
            DirState::Ours => {
                // A damaged file must be reported as such, even if the database panics.
                let read_only = opts.read_only;
                let opened = std::panic::catch_unwind(|| engine::product::open(dir, read_only))
                    .map_err(|_| {
                        StoreError::Corrupt(format!(
                            "the database in {} made its engine panic on open; `llmfs fsck` \
                             can tell what is left",
                            dir.display()
                        ))
                    })?;
                let opts = OpenOptions {
                    create: None,
                    read_only,
                };
                Store::open_engine(opened.during(StoreOp::Open)?, &opts)
            }
            DirState::Empty if opts.read_only => Err(StoreError::Missing(dir.to_path_buf())),
            DirState::Empty => {
                let Some(create) = &opts.create else {
                    return Err(StoreError::Missing(dir.to_path_buf()));
                };
                let engine = engine::product::create(dir, |e| {
                    Store::init(e, create).map_err(|err| EngineError::Other(err.to_string()))
                })
                .during(StoreOp::Open)?;
                log::info!(
                    "created store at {} (chunk size {} bytes)",
                    dir.display(),
                    create.chunk_size
                );
                Store::open_engine(engine, &OpenOptions::default())
            }
            DirState::Sled => Err(StoreError::SledStore(dir.to_path_buf())),
            DirState::Other(found) => Err(StoreError::NotAStore {
                path: dir.to_path_buf(),
                found,
            }),
        }
    }

    /// Writes the superblock and root directory of a new store, durably.
    pub(super) fn init(engine: &dyn Engine, create: &CreateOptions) -> Result<(), StoreError> {
        if !(512..=(1 << 24)).contains(&create.chunk_size) {
            return Err(StoreError::Corrupt(format!(
                "chunk size {} out of range",
                create.chunk_size
            )));
        }
        let sb = Superblock {
            format_version: FORMAT_VERSION,
            chunk_size: create.chunk_size,
            created_by: format!("llmfs {}", env!("CARGO_PKG_VERSION")),
        };
        let mut root = Inode::new(libc::S_IFDIR | 0o755, 0, 0, Time::now());
        root.nlink = 2;
        root.parent = ROOT_INO;
        let mut t = Txn::new();
        t.put_superblock(&sb);
        t.put(
            Table::Meta,
            keys::NEXT_INO.to_vec(),
            keys::next_ino_value(ROOT_INO + 1),
        );
        t.put_inode(ROOT_INO, &root);
        engine
            .commit(&seal::seal_ops(&t.into_ops()), true)
            .during(StoreOp::Open)?;
        Ok(())
    }

    /// Opens a store on an engine; an empty engine is initialised when `opts.create`
    /// says so (tests), otherwise it is refused as damaged. A store of format 2 is
    /// upgraded to sealed records here, unless `opts.read_only`.
    pub fn open_engine(engine: Arc<dyn Engine>, opts: &OpenOptions) -> Result<Store, StoreError> {
        let Some(raw) = engine
            .get(Table::Meta, keys::SUPERBLOCK)
            .during(StoreOp::Open)?
        else {
            let mut empty = true;
            for t in Table::ALL {
                engine
                    .scan(t, &[], None, &mut |_, _| {
                        empty = false;
                        false
                    })
                    .during(StoreOp::Open)?;
            }
            return match &opts.create {
                Some(c) if empty && !opts.read_only => {
                    Store::init(engine.as_ref(), c)?;
                    Store::open_engine(engine, &OpenOptions::default())
                }
                _ => Err(StoreError::Corrupt(
                    "the database has no superblock (its first record): it is damaged, not \
                     empty; `llmfs fsck` can tell what is left"
                        .into(),
                )),
            };
        };
        let (sb, mode) = match seal::unseal(Table::Meta, keys::SUPERBLOCK, &raw) {
            Ok(v) => (Superblock::decode(v)?, seal::Mode::Strict),
            Err(why) => match Superblock::decode(&raw) {
                // Written before records had checksums.
                Ok(sb) if sb.format_version == 2 => {
                    let sealed_through =
                        seal::upgrade_cursor(engine.as_ref()).during(StoreOp::Open)?;
                    (sb, seal::Mode::Legacy { sealed_through })
                }
                Ok(sb) => {
                    return Err(StoreError::Corrupt(format!(
                        "the superblock of a format {} store {why}",
                        sb.format_version
                    )))
                }
                Err(_) => return Err(StoreError::Corrupt(format!("superblock: {why}"))),
            },
        };
        if (sb.format_version == FORMAT_VERSION) != (mode == seal::Mode::Strict) {
            return Err(StoreError::Corrupt(format!(
                "the superblock says format {} but its record is {}sealed",
                sb.format_version,
                if mode == seal::Mode::Strict {
                    ""
                } else {
                    "not "
                }
            )));
        }
        if !(512..=(1 << 24)).contains(&sb.chunk_size) {
            return Err(StoreError::Corrupt(format!(
                "chunk size {} out of range",
                sb.chunk_size
            )));
        }
        let (sb, mode) = if mode != seal::Mode::Strict && !opts.read_only {
            (Store::upgrade(engine.as_ref(), sb)?, seal::Mode::Strict)
        } else {
            (sb, mode)
        };
        let engine = Sealed::new(engine, mode);
        let next = match engine
            .get(Table::Meta, keys::NEXT_INO)
            .during(StoreOp::Open)?
        {
            Some(b) => keys::u64_at(&b, 0)
                .ok_or_else(|| StoreError::Corrupt("next_ino record malformed".into()))?,
            None => return Err(StoreError::Corrupt("next_ino record missing".into())),
        };
        let store = Store {
            engine,
            superblock: sb,
            inos: Mutex::new((next, next)),
            writes: WriteProgress::default(),
            pending: std::sync::atomic::AtomicI64::new(0),
        };
        store.recount_pending()?;
        Ok(store)
    }

    /// Seals every record of a format 2 store (resuming an interrupted upgrade), then
    /// writes the format 3 superblock, durably.
    pub(super) fn upgrade(engine: &dyn Engine, sb: Superblock) -> Result<Superblock, StoreError> {
        log::info!("upgrading the store from format 2 to 3: a checksum on every record");
        let started = std::time::Instant::now();
        let mut last_log = started;
        let sealed = seal::migrate(engine, &[keys::SUPERBLOCK], &mut |n| {
            if last_log.elapsed() > Duration::from_secs(10) {
                log::info!("upgrade: {n} records sealed");
                last_log = std::time::Instant::now();
            }
        })
        .during(StoreOp::Open)?;
        let sb = Superblock {
            format_version: FORMAT_VERSION,
            ..sb
        };
        let mut ops = seal::finish_migration_ops();
        ops.push(engine::RawOp::Put(
            Table::Meta,
            keys::SUPERBLOCK.to_vec(),
            seal::seal(Table::Meta, keys::SUPERBLOCK, &sb.encode()),
        ));
        engine.commit(&ops, true).during(StoreOp::Open)?;
        log::info!(
            "upgraded the store to format 3: {sealed} records sealed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(sb)
    }
}
