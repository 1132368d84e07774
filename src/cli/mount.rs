//! `llmfs mount`: parses mount options once into a validated [`MountConfig`] and runs
//! the daemon in the foreground until unmounted (fusermount3 -u, SIGINT, SIGTERM).

use super::model::ModelArgs;
use anyhow::Context;
use clap::Args;
use fuser::{MountOption, SessionACL};
use llmfs::codec::primer::Coding;
use llmfs::codec::CodecProfile;
use llmfs::fs::fuse::FuseFs;
use llmfs::fs::{Core, CoreConfig};
use llmfs::store::CreateOptions;
use llmfs::store::MetaKey;
use llmfs::tier::{self, Pool};
use nix::sys::signal::{SigSet, Signal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct MountArgs {
    /// Directory holding the store (created when missing or empty).
    pub store: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Comma-separated mount options: the usual FUSE ones (ro, rw, allow_other,
    /// allow_root, default_permissions, auto_unmount, dev, nodev, suid, nosuid, exec,
    /// noexec, atime, noatime, sync, async, dirsync, fsname=, subtype=) and llmfs's:
    /// cache_size=SIZE (decoded chunk cache, default 64M), chunk_size=SIZE (only when
    /// the store is created, default 4K), threads=N (request threads, default 4),
    /// dirty_limit=SIZE (unsaved data held in memory, default 64M), model=PATH (GGUF
    /// model, default as for `compress`), llm_threads=N (llama.cpp threads the model's
    /// lanes share, default all cores), llm_lanes=N (contexts coding at once, default
    /// one per thread as memory allows), primer=builtin|none (what a new store's
    /// LLM-coded chunks follow, default builtin), gpu_layers=N (with a GPU build), cold_after=DURATION (compact chunks not
    /// written for this long, default 5m; e.g. 0, 30s, 5m, 1h), commit=DURATION (commits
    /// that are not fsync'd share a database transaction this long, default 50ms; 0: each
    /// is its own, which a crash of the daemon never loses), compact=on|off (default
    /// on), sync_llm (flush and fsync wait for LLM coding), nomodel (no model: LLM chunks
    /// read as EIO, everything else works), no_default_permissions.
    #[arg(short = 'o')]
    pub options: Vec<String>,
}

/// A mount option llmfs does not know: a usage error (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

pub struct MountConfig {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub fuse_options: Vec<MountOption>,
    pub acl: SessionACL,
    pub threads: usize,
    pub core: CoreConfig,
    /// `chunk_size=` was given: a store of another chunk size is refused, not silently
    /// mounted with its own.
    pub chunk_size_given: bool,
    pub model: ModelChoice,
    /// What the daemon logs at start about risky option combinations.
    pub warnings: Vec<String>,
}

/// Which language model the daemon runs, from the mount options.
#[derive(Clone, Debug, Default)]
pub struct ModelChoice {
    /// `model=`; else `$LLMFS_MODEL`, else the default location.
    pub path: Option<PathBuf>,
    pub threads: Option<u32>,
    pub lanes: Option<u16>,
    pub gpu_layers: u32,
    /// `nomodel`: never load one.
    pub none: bool,
    /// `test_model`: the built-in synthetic model, for tests of the filesystem only.
    pub test: bool,
    /// `primer=`: the coding of a new store's LLM frames (a store's first LLM frame
    /// pins it; a pinned store codes as it was pinned).
    pub primer: Option<Coding>,
}

/// `0`, `90` (seconds), `500ms`, `30s`, `5m`, `2h`, `1d`.
fn parse_duration(key: &str, v: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "{key}={v}: expected a duration such as 0, 30s, 5m or 2h"
        ))
    };
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(bad)
}

/// The longest `commit=` window: beyond the flusher's 5 s, which makes everything
/// durable anyway, it would buy nothing.
const MAX_COMMIT_WINDOW: Duration = Duration::from_secs(5);

fn parse_count(key: &str, v: &str, max: u32) -> Result<u32, UsageError> {
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(UsageError(format!(
            "{key}={v}: expected a number from 1 to {max}"
        ))),
    }
}

/// Options mount(8), mount.fuse3 and systemd pass along that mean nothing to a FUSE
/// daemon.
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "" | "_netdev"
            | "nofail"
            | "noauto"
            | "auto"
            | "user"
            | "nouser"
            | "users"
            | "defaults"
            | "owner"
            | "group"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "lazytime"
            | "nolazytime"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

pub fn parse(args: MountArgs) -> Result<MountConfig, UsageError> {
    let mut cfg = MountConfig {
        store: args.store,
        mountpoint: args.mountpoint,
        fuse_options: vec![
            MountOption::FSName("llmfs".into()),
            MountOption::Subtype("llmfs".into()),
        ],
        acl: SessionACL::Owner,
        threads: 4,
        core: CoreConfig::default(),
        chunk_size_given: false,
        model: ModelChoice::default(),
        warnings: Vec::new(),
    };
    let options = args.options;
    let mut default_permissions: Option<bool> = None;
    for opt in options.iter().flat_map(|o| o.split(',')) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let fuse = match (key, value) {
            ("ro", None) => MountOption::RO,
            ("rw", None) => MountOption::RW,
            ("dev", None) => MountOption::Dev,
            ("nodev", None) => MountOption::NoDev,
            ("suid", None) => MountOption::Suid,
            ("nosuid", None) => MountOption::NoSuid,
            ("exec", None) => MountOption::Exec,
            ("noexec", None) => MountOption::NoExec,
            ("atime", None) => MountOption::Atime,
            ("noatime", None) => MountOption::NoAtime,
            ("sync", None) => MountOption::Sync,
            ("async", None) => MountOption::Async,
            ("dirsync", None) => MountOption::DirSync,
            ("default_permissions", None) => {
                default_permissions = Some(true);
                continue;
            }
            ("no_default_permissions", None) => {
                default_permissions = Some(false);
                continue;
            }
            ("auto_unmount", None) => MountOption::AutoUnmount,
            ("fsname", v) => MountOption::FSName(name_value(key, v)?.into()),
            ("subtype", v) => MountOption::Subtype(name_value(key, v)?.into()),
            ("allow_other", None) => {
                cfg.acl = SessionACL::All;
                continue;
            }
            ("allow_root", None) => {
                cfg.acl = SessionACL::RootAndOwner;
                continue;
            }
            ("cache_size", v) => {
                cfg.core.cache_bytes = parse_size(key, need(key, v)?)? as usize;
                continue;
            }
            ("dirty_limit", v) => {
                let n = parse_size(key, need(key, v)?)? as usize;
                cfg.core.dirty_total_limit = n;
                cfg.core.dirty_file_limit = cfg.core.dirty_file_limit.min(n);
                continue;
            }
            ("chunk_size", v) => {
                let n = parse_size(key, need(key, v)?)?;
                if !n.is_power_of_two() || !(1024..=(1 << 20)).contains(&n) {
                    return Err(UsageError(format!(
                        "chunk_size={n}: must be a power of two from 1K to 1M"
                    )));
                }
                cfg.core.create = CreateOptions {
                    chunk_size: n as u32,
                };
                cfg.chunk_size_given = true;
                continue;
            }
            ("model", v) => {
                let path = need(key, v)?;
                if path.is_empty() {
                    return Err(UsageError(
                        "model=: expected the path of a GGUF file (or leave the option out for \
                         the default model)"
                            .into(),
                    ));
                }
                cfg.model.path = Some(PathBuf::from(path));
                continue;
            }
            ("llm_threads", v) => {
                cfg.model.threads = Some(parse_count(key, need(key, v)?, 1024)?);
                continue;
            }
            ("llm_lanes", v) => {
                cfg.model.lanes = Some(parse_count(key, need(key, v)?, 256)? as u16);
                continue;
            }
            ("primer", v) => {
                let v = need(key, v)?;
                cfg.model.primer =
                    Some(Coding::named(v).map_err(|e| UsageError(format!("primer={v}: {e}")))?);
                continue;
            }
            ("gpu_layers", v) => {
                let v = need(key, v)?;
                cfg.model.gpu_layers = v
                    .parse()
                    .map_err(|_| UsageError(format!("gpu_layers={v}: expected a number")))?;
                if cfg.model.gpu_layers > 0
                    && !cfg!(any(feature = "cuda", feature = "metal", feature = "vulkan"))
                {
                    return Err(UsageError(format!(
                        "gpu_layers={v} needs a build with GPU support (cargo build --features cuda, metal or vulkan)"
                    )));
                }
                continue;
            }
            ("cold_after", v) => {
                cfg.core.cold_after = parse_duration(key, need(key, v)?)?;
                continue;
            }
            ("commit", v) => {
                let v = need(key, v)?;
                let d = parse_duration(key, v)?;
                if d > MAX_COMMIT_WINDOW {
                    return Err(UsageError(format!(
                        "commit={v}: at most 5s (the daemon makes everything durable every 5 s)"
                    )));
                }
                cfg.core.commit_window = d;
                continue;
            }
            ("compact", v) => {
                cfg.core.compact = match need(key, v)? {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(UsageError(format!("compact={other}: expected on or off")))
                    }
                };
                continue;
            }
            ("sync_llm", None) => {
                cfg.core.sync_llm = true;
                continue;
            }
            ("nomodel", None) => {
                cfg.model.none = true;
                continue;
            }
            ("test_model", None) => {
                cfg.model.test = true;
                continue;
            }
            ("threads", v) => {
                cfg.threads = match need(key, v)?.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => return Err(UsageError("threads=N: N must be 1 to 256".into())),
                };
                continue;
            }
            _ if ignored(opt) => continue,
            _ => return Err(UsageError(format!("unknown mount option '{opt}'"))),
        };
        // A later option of a pair wins (ro after rw, ...), as with mount(8).
        cfg.fuse_options.retain(|o| {
            std::mem::discriminant(o) != std::mem::discriminant(&fuse) && !conflicts(o, &fuse)
        });
        cfg.fuse_options.push(fuse);
    }
    // With allow_other, the kernel's own permission checks are the only sound ones: it
    // caches dentries, and a cached lookup skips the daemon's check of the directories
    // on the way (measured: user nobody read a root file inside a 0700 directory 177 of
    // 400 times while root was using it). So allow_other implies default_permissions
    // unless no_default_permissions says otherwise.
    let others = cfg.acl != SessionACL::Owner;
    if default_permissions.unwrap_or(others) {
        cfg.fuse_options.push(MountOption::DefaultPermissions);
    } else if others {
        cfg.warnings.push(
            "allow_other (or allow_root) with no_default_permissions: other users' access is \
             checked by llmfs alone, and the kernel's cached directory entries let a lookup \
             skip the checks of the directories on the way (measured: another user read a \
             file inside a 0700 directory 284 times of 300); use default_permissions unless \
             every user may read everything"
                .into(),
        );
    }
    cfg.core.read_only = cfg.fuse_options.contains(&MountOption::RO);
    cfg.core.update_atime =
        !cfg.core.read_only && !cfg.fuse_options.contains(&MountOption::NoAtime);
    Ok(cfg)
}

fn conflicts(a: &MountOption, b: &MountOption) -> bool {
    use MountOption::*;
    let pairs = [
        (RO, RW),
        (Dev, NoDev),
        (Suid, NoSuid),
        (Exec, NoExec),
        (Atime, NoAtime),
        (Sync, Async),
    ];
    pairs
        .iter()
        .any(|(x, y)| (a == x && b == y) || (a == y && b == x))
}

fn need<'v>(key: &str, v: Option<&'v str>) -> Result<&'v str, UsageError> {
    v.ok_or_else(|| UsageError(format!("mount option '{key}' needs a value")))
}

/// A value mount(2) takes as a name (`fsname=`, `subtype=`): not empty, no blanks.
fn name_value<'v>(key: &str, v: Option<&'v str>) -> Result<&'v str, UsageError> {
    let v = need(key, v)?;
    if v.is_empty() || v.contains(char::is_whitespace) {
        return Err(UsageError(format!(
            "{key}={v:?}: expected a name without blanks, such as {key}=llmfs"
        )));
    }
    Ok(v)
}

/// Starts the daemon again, the same way, with `OMP_WAIT_POLICY=passive` unless the
/// environment already says how OpenMP threads wait (`OMP_WAIT_POLICY` or
/// `GOMP_SPINCOUNT`). libgomp reads it once, when it is
/// loaded, before `main`, so setting it here needs a new image.
///
/// Why: llama.cpp's CPU threads meet at an OpenMP barrier after every graph node, and by
/// default they spin there. A daemon shares its machine (with the service whose logs it
/// stores), and spinning threads next to a busy process stall each other. Measured on
/// 2 cores, `compress --threads 2` of 4 KiB: 17.4 s alone, 54.1 s next to one busy
/// process; passive, 19.3 s alone and 34.1 s next to it (1 thread: 24.8 s and 21.1 s).
pub fn reexec_with_passive_openmp() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "OMP_WAIT_POLICY";
    if std::env::var_os(VAR).is_some() || std::env::var_os("GOMP_SPINCOUNT").is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let (Some(arg0), Ok(exe)) = (args.next(), std::env::current_exe()) else {
        return;
    };
    let err = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, "passive")
        .exec();
    log::warn!("could not restart with {VAR}=passive ({err}): model threads will spin");
}

/// One glibc malloc arena instead of one per request thread. Measured: after 512 MiB
/// written to a never-closed file (dirty_limit=32M, cache_size=32M, 4 threads) the
/// daemon's peak RSS was 800 MiB with the default arenas, 500 MiB with 2, 270 MiB with
/// one: the chunk buffers move between threads and fragment per-thread arenas. The
/// daemon waits on FUSE and the database, not on malloc's lock (measured with the
/// sled store of 0.1.0; the chunk buffers' life has not changed since).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it runs before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A size option, in the one size syntax of every flag ([`super::model::parse_size`]).
fn parse_size(key: &str, v: &str) -> Result<u64, UsageError> {
    super::model::parse_size(v)
        .map(|n| n as u64)
        .map_err(|e| UsageError(format!("{key}={v}: {e}")))
}

/// The canonical form of `p`, also when its last parts do not exist yet.
fn canonical(p: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return missing
                .into_iter()
                .rev()
                .fold(c, |acc, part| acc.join(part));
        }
        match (cur.file_name(), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name.to_os_string());
                cur = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// What FUSE needs, checked before the store is opened or created, with what to do:
/// `/dev/fuse`, and for `allow_other`/`allow_root` by a user other than root,
/// `user_allow_other` in /etc/fuse.conf (fusermount3 refuses the mount otherwise).
fn check_fuse(acl: &SessionACL) -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        anyhow::bail!(
            "/dev/fuse is missing: load the kernel module (modprobe fuse), or in a container \
             pass the device in (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
        );
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !matches!(acl, SessionACL::Owner) {
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        let allowed = conf
            .lines()
            .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other");
        if !allowed {
            anyhow::bail!(
                "allow_other and allow_root need user_allow_other in /etc/fuse.conf when \
                 the daemon does not run as root: add that line (as root), or drop the option"
            );
        }
    }
    Ok(())
}

/// Refuses a missing mount point, and a store and mount point inside one another: a
/// store inside its own mount would be written through itself (the first `df` hung the
/// daemon and its caller for good).
fn check_paths(store: &Path, mountpoint: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("mount point {} does not exist", mountpoint.display())
        }
        Err(e) => anyhow::bail!("mount point {}: {e}", mountpoint.display()),
        Ok(m) if !m.is_dir() => {
            anyhow::bail!("mount point {} is not a directory", mountpoint.display())
        }
        Ok(_) => {}
    }
    let (s, m) = (canonical(store), canonical(mountpoint));
    if s.starts_with(&m) {
        return Err(UsageError(format!(
            "the store {} is inside the mount point {}: it would be stored in itself",
            store.display(),
            mountpoint.display()
        ))
        .into());
    }
    if m.starts_with(&s) {
        return Err(UsageError(format!(
            "the mount point {} is inside the store {}: pick a mount point elsewhere",
            mountpoint.display(),
            store.display()
        ))
        .into());
    }
    Ok(())
}

/// Starts the language model when the mount needs one (compaction, or a store with LLM
/// frames) and checks it against the store's pinned profile and canary: a model, build
/// or machine that would compute other probabilities is refused here, at mount, with
/// what differs and what to do, never at the first cold read.
fn attach_model(core: &Core, cfg: &MountConfig) -> anyhow::Result<()> {
    let pinned_profile = core
        .store()
        .meta(MetaKey::Profile)
        .map_err(|e| anyhow::anyhow!("reading the store's codec profile: {e}"))?;
    let pinned = pinned_profile.is_some();
    if cfg.model.none {
        if pinned {
            log::warn!(
                "nomodel: the store holds LLM-coded chunks, which read as EIO on this mount; \
                 everything else works"
            );
        }
        return Ok(());
    }
    if !pinned && (!cfg.core.compact || cfg.core.read_only) {
        return Ok(()); // nothing here needs a model
    }
    let coding = match &pinned_profile {
        // A pinned store codes as it was pinned: its frames decode only that way, and
        // its new frames join them.
        Some(bytes) => {
            let recorded = CodecProfile::decode(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "refusing to mount {}: its pinned codec profile is unreadable ({e}); \
                     `llmfs fsck` says more",
                    cfg.store.display()
                )
            })?;
            let coding = Coding::of_profile(&recorded).map_err(|e| {
                anyhow::anyhow!(
                    "refusing to mount {}: its LLM frames were coded with {e}; or mount with \
                     -o nomodel to read everything but its LLM-coded chunks",
                    cfg.store.display()
                )
            })?;
            if cfg.model.primer.as_ref().is_some_and(|c| *c != coding) {
                log::warn!(
                    "primer= ignored: the store is pinned to {coding}, which its LLM frames need"
                );
            }
            coding
        }
        None => cfg.model.primer.clone().unwrap_or_default(),
    };
    let chunk = core.chunk_size() as usize;
    let args = ModelArgs {
        model: cfg.model.path.clone(),
        gpu_layers: cfg.model.gpu_layers,
        threads: cfg.model.threads,
        lanes: cfg.model.lanes,
    };
    let hint = if pinned {
        "; or mount with -o nomodel to read everything but the LLM-coded chunks"
    } else {
        "; or mount with -o compact=off to store with the fast codec only"
    };
    let pool = if cfg.model.test {
        let config = args.pool_config();
        Pool::start(config, tier::lanes::synthetic(coding, true))
            .map_err(|e| anyhow::anyhow!("starting the synthetic test model: {e}{hint}"))?
    } else {
        let what = args.config().path.display().to_string();
        // A chunk never has more tokens than bytes.
        let (pool, model) = args
            .pool(&coding, chunk, true)
            .map_err(|e| anyhow::anyhow!("starting the model ({what}): {e:#}{hint}"))?;
        let c = pool.config();
        if c.threads_per_lane > 1 && super::model::openmp_waits_passively() {
            log::warn!(
                "llm_threads={} with llm_lanes={}: lanes of {} threads, whose OpenMP threads \
                 wait passively (OMP_WAIT_POLICY=passive), code slower than lanes of one \
                 thread; use as many lanes as threads, or set OMP_WAIT_POLICY=active in the \
                 daemon's environment on a machine it has to itself",
                c.threads_per_lane * pool.lanes() as u32,
                pool.lanes(),
                c.threads_per_lane
            );
        }
        log::info!(
            "model {what} ({}) loaded, {coding}: {} lanes of {} llama.cpp thread(s){}",
            model.name(),
            pool.lanes(),
            c.threads_per_lane,
            c.wide_threads
                .map_or(String::new(), |w| format!(", and {w} for a lone read"))
        );
        pool
    };
    core.attach_model(pool).map_err(anyhow::Error::msg)?;
    if let Err(why) = core.check_pinned_profile(tier::lanes::profile_differences) {
        anyhow::bail!(
            "refusing to mount {}: {why}. Mount it with the model, llmfs build and backend \
             that wrote it (model=PATH), or with -o nomodel to read everything but its \
             LLM-coded chunks",
            cfg.store.display()
        );
    }
    if pinned {
        log::info!("the model matches the store's pinned codec profile and canary");
    }
    Ok(())
}

/// Store writes stuck this long mean a deadlock, not a slow disk (a flush of the whole
/// dirty limit takes seconds).
const WRITE_STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn run(cfg: MountConfig) -> anyhow::Result<()> {
    limit_malloc_arenas();
    // Signals are taken by one named thread (sigwait), so they are blocked in this
    // thread before any other starts and inherit the mask.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;

    check_paths(&cfg.store, &cfg.mountpoint)?;
    check_fuse(&cfg.acl)?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    let core = Arc::new(
        Core::load(&cfg.store, cfg.core.clone())
            .map_err(|e| anyhow::anyhow!("opening store {}: {e}", cfg.store.display()))?,
    );
    if cfg.chunk_size_given && core.chunk_size() != u64::from(cfg.core.create.chunk_size) {
        return Err(UsageError(format!(
            "chunk_size={}: the store {} has chunks of {} bytes, fixed when it was created; \
             drop the option or use a new store",
            cfg.core.create.chunk_size,
            cfg.store.display(),
            core.chunk_size()
        ))
        .into());
    }
    attach_model(&core, &cfg)?;
    let compactor = match core.model() {
        Some(_) if cfg.core.compact && !cfg.core.read_only => Some(
            core.spawn_compactor()
                .context("starting the compactor thread")?,
        ),
        _ => None,
    };
    let flusher = core
        .spawn_flusher()
        .context("starting the flusher thread")?;
    let _watchdog = core
        .spawn_watchdog(WRITE_STALL_LIMIT)
        .context("starting the watchdog thread")?;

    let fuse_config = {
        let mut c = fuser::Config::default();
        c.mount_options = cfg.fuse_options.clone();
        c.acl = cfg.acl;
        c.n_threads = Some(cfg.threads);
        c.clone_fd = true;
        c
    };
    let mut session = fuser::Session::new(
        FuseFs::new(core.clone(), &cfg.store),
        &cfg.mountpoint,
        &fuse_config,
    )
    .with_context(|| format!("mounting at {}", cfg.mountpoint.display()))?;
    let notifier = super::service::start(core.clone(), cfg.mountpoint.clone())
        .context("starting the service-manager notifier thread")?;
    let mut unmounter = session.unmount_callable();
    let (signal_core, mountpoint) = (core.clone(), cfg.mountpoint.clone());
    std::thread::Builder::new()
        .name("llmfs-signals".into())
        .spawn(move || {
            let Ok(sig) = signals.wait() else { return };
            log::info!("{sig}: unmounting");
            super::service::stopping();
            if let Err(e) = unmounter.unmount() {
                // Busy (files still open): a supervisor's stop must still stop. Detach
                // the mount, make every acknowledged write durable, and exit; files
                // still open see ENOTCONN from now on.
                log::warn!(
                    "{} is busy ({e}): detaching it lazily and stopping",
                    mountpoint.display()
                );
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&mountpoint)
                    .status();
                let code = match signal_core.shutdown() {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("flushing the store: {e}");
                        1
                    }
                };
                std::process::exit(code);
            }
        })
        .context("starting the signal thread")?;
    log::info!(
        "llmfs mounted {} at {}",
        cfg.store.display(),
        cfg.mountpoint.display()
    );
    let served = session.run();
    super::service::stopping();
    drop(notifier);
    // Whatever ended the session, every acknowledged write is made durable.
    core.shutdown()
        .map_err(|e| anyhow::anyhow!("flushing the store: {e}"))?;
    if flusher.join().is_err() {
        log::error!("the flusher thread panicked");
    }
    if compactor.is_some_and(|c| c.join().is_err()) {
        log::error!("the compactor thread panicked");
    }
    match served {
        // An unmount from outside ends the request loops with ENODEV (fuser's Ok) or,
        // when a loop was inside a request, ECONNABORTED: both are a normal end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
        r => r.context("serving FUSE requests")?,
    }
    log::info!("unmounted {}", cfg.mountpoint.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &str) -> Result<MountConfig, UsageError> {
        parse(MountArgs {
            store: "s".into(),
            mountpoint: "m".into(),
            options: vec![o.into()],
        })
    }

    #[test]
    fn options_parse_and_validate() {
        let c = opts("ro,allow_other,default_permissions,cache_size=16M,threads=8,_netdev,x-systemd.automount").unwrap();
        assert!(c.fuse_options.contains(&MountOption::RO));
        assert_eq!(c.acl, SessionACL::All);
        assert_eq!(c.core.cache_bytes, 16 << 20);
        assert_eq!(c.threads, 8);
        assert!(c.core.read_only && !c.core.update_atime);
        assert!(opts("rw,ro")
            .unwrap()
            .fuse_options
            .contains(&MountOption::RO));
        assert!(!opts("rw,ro")
            .unwrap()
            .fuse_options
            .contains(&MountOption::RW));
        let e = opts("rw,bogus").err().unwrap();
        assert!(e.to_string().contains("bogus"));
        assert!(opts("chunk_size=3000").is_err());
        for bad in ["fsname=", "subtype=", "fsname=a b", "model="] {
            let e = opts(bad).err().unwrap().to_string();
            assert!(e.starts_with(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert!(opts("allow_other,no_default_permissions").unwrap().warnings[0].contains("0700"));
        assert!(opts("allow_other").unwrap().warnings.is_empty());
        assert_eq!(
            opts("chunk_size=16K").unwrap().core.create.chunk_size,
            16384
        );
    }

    #[test]
    fn sizes_take_the_syntax_of_every_size_flag() {
        let c = opts("cache_size=16KiB,dirty_limit=1mib,chunk_size=4kb").unwrap();
        assert_eq!(c.core.cache_bytes, 16 << 10);
        assert_eq!(c.core.dirty_total_limit, 1 << 20);
        assert_eq!(c.core.create.chunk_size, 4096);
        let e = opts("cache_size=16Q").err().unwrap().to_string();
        assert!(e.starts_with("cache_size=16Q: "), "{e}");
    }

    #[test]
    fn the_commit_window_is_a_duration_of_at_most_five_seconds() {
        assert_eq!(
            opts("rw").unwrap().core.commit_window,
            llmfs::fs::DEFAULT_COMMIT_WINDOW
        );
        assert_eq!(
            opts("commit=200ms").unwrap().core.commit_window,
            Duration::from_millis(200)
        );
        assert_eq!(opts("commit=0").unwrap().core.commit_window, Duration::ZERO);
        for bad in ["commit=6s", "commit=1m", "commit=x", "commit"] {
            let e = opts(bad).err().unwrap().to_string();
            assert!(e.contains("commit"), "{bad}: {e}");
        }
    }
}
