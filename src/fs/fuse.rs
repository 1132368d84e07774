//! The FUSE adapter: each `fuser::Filesystem` method turns its arguments into a core
//! call and the result into a reply. No filesystem logic lives here.

use super::attr::{SetAttr, SetTime};
use super::chunk::Wait;
use super::dir::NewNode;
use super::file::{want_from_flags, Fallocate};
use super::perm::R;
use super::rename::RenameMode;
use super::xattr::SetXattr;
use super::{Caller, Core, Entry, FsError, FsResult};
use crate::store::records::{Kind, Time};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache attributes and entries. The kernel invalidates them
/// itself on changes it makes; other changes go through this mount too.
const TTL: Duration = Duration::from_secs(1);

/// Every change goes through this mount, so the kernel's page cache stays coherent and
/// is kept across opens. Without it each open() drops the file's pages, and a page the
/// kernel dropped while a WRITE of it was in flight can be read back stale by a
/// concurrent readahead (the kernel unlocks full pages before the WRITE is answered).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

/// The `fuser::Filesystem` of a mounted store: each request becomes a call on the shared
/// [`Core`]; requests that may wait for the model run on a small pool of worker threads.
pub struct FuseFs {
    core: Arc<Core>,
    store_path: PathBuf,
    slow: SlowPool,
}

/// Threads that run the requests which must wait for the language model (a cold read of
/// an LLM chunk takes seconds), so that the FUSE request threads stay free for `stat`,
/// `lookup` and everything else meanwhile. fuser's replies may be sent from any thread.
struct SlowPool {
    jobs: Mutex<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

/// Requests waiting for the model at once; more queue. They mostly wait on the model
/// thread, which codes one chunk at a time, so a few suffice.
const SLOW_THREADS: usize = 4;

impl SlowPool {
    fn new() -> SlowPool {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..SLOW_THREADS {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("llmfs-slow-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                log::error!("starting a worker thread for slow requests: {e}");
            }
        }
        SlowPool {
            jobs: Mutex::new(tx),
        }
    }

    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        if let Err(mpsc::SendError(job)) = self.jobs.lock().send(job) {
            // No worker is left (they failed to start): run it here rather than drop it.
            job();
        }
    }
}

impl FuseFs {
    /// The adapter over `core`; `store_path` is where the store lives, whose device
    /// `statfs` reports. Starts the worker threads for slow requests.
    pub fn new(core: Arc<Core>, store_path: &Path) -> FuseFs {
        FuseFs {
            core,
            store_path: store_path.to_path_buf(),
            slow: SlowPool::new(),
        }
    }

    /// Runs `op` without waiting for the model; if it needs the model, runs it again on
    /// a slow-request thread, where it may. `done` gets the result either way.
    fn dispatch<T: 'static>(
        &self,
        uid: u32,
        op: impl Fn(&Core, Wait) -> FsResult<T> + Send + 'static,
        done: impl FnOnce(FsResult<T>) + Send + 'static,
    ) {
        self.core.touch();
        self.run_or_slow(uid, op, done);
    }

    /// [`FuseFs::dispatch`] for a request that is not activity (reading statistics):
    /// a poller must not keep the filesystem from counting as idle.
    fn run_or_slow<T: 'static>(
        &self,
        uid: u32,
        op: impl Fn(&Core, Wait) -> FsResult<T> + Send + 'static,
        done: impl FnOnce(FsResult<T>) + Send + 'static,
    ) {
        match op(&self.core, Wait::NoModel) {
            Err(FsError::WouldBlock) => {
                let core = Arc::clone(&self.core);
                self.slow
                    .run(Box::new(move || done(op(&core, Wait::ModelFor(uid)))));
            }
            r => done(r),
        }
    }

    fn attr(&self, e: &Entry) -> FileAttr {
        file_attr(e, self.core.chunk_size() as u32)
    }
}

fn file_attr(e: &Entry, blksize: u32) -> FileAttr {
    let i = &e.inode;
    FileAttr {
        ino: INodeNo(e.ino),
        size: i.size,
        blocks: i.stored.div_ceil(512),
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.ctime.to_system(),
        kind: file_type(i.kind()),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller::new(req.uid(), req.gid(), req.pid())
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.to_errno())
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Time::from_system(t)),
    }
}

impl FuseFs {
    fn reply_entry(&self, r: Result<Entry, FsError>, reply: ReplyEntry) {
        match r {
            Ok(e) => reply.entry(&TTL, &self.attr(&e), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn reply_empty(r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_xattr(r: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel's readahead would turn a 100-byte read into 32 chunk decodes of the
        // model (minutes). One chunk: a large read(2) still gets large requests, and the
        // core reads the next chunk ahead itself when the model is idle.
        let chunk = self.core.chunk_size().min(u64::from(u32::MAX)) as u32;
        if let Err(max) = config.set_max_readahead(chunk) {
            let _ = config.set_max_readahead(max.min(chunk));
        }
        // Without this the kernel asks for `security.capability` (a getxattr round trip)
        // before every write(2), to learn whether the write must drop it: one request in
        // two of an append workload. With it the kernel marks a file it found without
        // set-id bits or capabilities (S_NOSEC) and skips that check until a chmod or a
        // `security.*` xattr changes it; the core drops set-id bits itself on write,
        // truncate and chown (an empty setattr is the kernel's chown that names no new
        // owner: see `setattr`), and the kernel still removes a capability that a
        // write, truncate or chown finds. An older kernel keeps the getxattr.
        if config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_err()
        {
            log::debug!("the kernel does not offer FUSE_HANDLE_KILLPRIV_V2: a getxattr per write");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.core.shutdown() {
            log::error!("flushing the store at unmount failed: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(
            self.core.lookup(&caller(req), parent.0, name.as_bytes()),
            reply,
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino.0) {
            Ok(e) => reply.attr(&TTL, &self.attr(&e)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A request that changes nothing: the kernel asks for the set-id bits to go (a
        // chown naming no new owner or group, or a write that found them set), which
        // under FUSE_HANDLE_KILLPRIV_V2 it leaves to the filesystem.
        let drop_setid = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            via_handle: fh.is_some(),
            drop_setid,
        };
        let (caller, ino, blksize) = (caller(req), ino.0, self.core.chunk_size() as u32);
        self.dispatch(
            req.uid(),
            move |core, wait| core.setattr(&caller, ino, &set, wait),
            move |r| match r {
                Ok(e) => reply.attr(&TTL, &file_attr(&e, blksize)),
                Err(e) => reply.error(errno(&e)),
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = NewNode::File { mode, rdev };
        self.reply_entry(
            self.core
                .create_node(&caller(req), parent.0, name.as_bytes(), what, false),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let what = NewNode::Dir { mode };
        self.reply_entry(
            self.core
                .create_node(&caller(req), parent.0, name.as_bytes(), what, false),
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            self.core.unlink(&caller(req), parent.0, name.as_bytes()),
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            self.core.rmdir(&caller(req), parent.0, name.as_bytes()),
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let what = NewNode::Symlink {
            target: target.as_os_str().as_bytes(),
        };
        self.reply_entry(
            self.core
                .create_node(&caller(req), parent.0, link_name.as_bytes(), what, false),
            reply,
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(Errno::EINVAL);
        };
        let r = self.core.rename(
            &caller(req),
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            mode,
        );
        reply_empty(r, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.core
                .link(&caller(req), ino.0, newparent.0, newname.as_bytes()),
            reply,
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .core
            .open(&caller(req), ino.0, want_from_flags(flags.0))
        {
            Ok(fh) => reply.opened(FileHandle(fh), OPEN_FLAGS),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = ino.0;
        let core = Arc::clone(&self.core);
        self.dispatch(
            req.uid(),
            move |c, wait| c.read(ino, offset, size, wait),
            move |r| {
                match r {
                    Ok(d) => {
                        reply.data(&d);
                        // Next chunk ahead, when the model has nothing else to do.
                        core.prefetch(ino, (offset + d.len() as u64).div_ceil(core.chunk_size()));
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = req.uid() != 0 || write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let ino = ino.0;
        match self.core.write(ino, offset, data, kill, Wait::NoModel) {
            Err(FsError::WouldBlock) => {
                // The chunk it edits needs the model: copy the data for a slow thread.
                let data = data.to_vec();
                self.dispatch(
                    req.uid(),
                    move |c, wait| c.write(ino, offset, &data, kill, wait),
                    move |r| match r {
                        Ok(n) => reply.written(n),
                        Err(e) => reply.error(errno(&e)),
                    },
                );
            }
            Ok(n) => {
                self.core.touch();
                reply.written(n)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        self.dispatch(
            req.uid(),
            move |c, wait| c.flush(ino, wait),
            move |r| reply_empty(r, reply),
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.core.release(ino.0), reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        self.dispatch(
            req.uid(),
            move |c, wait| c.fsync(ino, wait),
            move |r| reply_empty(r, reply),
        );
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(&caller(req), ino.0, R) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.core.readdir(fh.0, offset, |ino, cookie, kind, name| {
            reply.add(
                INodeNo(ino),
                cookie,
                file_type(kind),
                OsStr::from_bytes(name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.core.store().sync().map_err(FsError::from), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Space is the store's filesystem's; inodes are only limited by space.
        match nix::sys::statvfs::statvfs(&self.store_path) {
            Ok(s) => {
                let free_inodes = 1u64 << 32;
                reply.statfs(
                    s.blocks(),
                    s.blocks_free(),
                    s.blocks_available(),
                    self.core.inodes_used() + free_inodes,
                    free_inodes,
                    s.block_size() as u32,
                    255,
                    s.fragment_size() as u32,
                )
            }
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            return reply.error(Errno::EINVAL);
        }
        let how = match flags {
            0 => SetXattr::Any,
            libc::XATTR_CREATE => SetXattr::Create,
            libc::XATTR_REPLACE => SetXattr::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        reply_empty(
            self.core
                .setxattr(&caller(req), ino.0, name.as_bytes(), value, how),
            reply,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (caller, ino, name) = (caller(req), ino.0, name.as_bytes().to_vec());
        self.run_or_slow(
            req.uid(),
            move |c, wait| c.getxattr(&caller, ino, &name, wait),
            move |r| reply_xattr(r, size, reply),
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(self.core.listxattr(&caller(req), ino.0), size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            self.core.removexattr(&caller(req), ino.0, name.as_bytes()),
            reply,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(
            self.core
                .access(&caller(req), ino.0, mask.bits() as u32 & 7),
            reply,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let what = NewNode::File { mode, rdev: 0 };
        match self
            .core
            .create_node(&caller(req), parent.0, name.as_bytes(), what, true)
        {
            Ok(e) => reply.created(
                &TTL,
                &self.attr(&e),
                Generation(0),
                FileHandle(0),
                OPEN_FLAGS,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (from, to, kill) = (
            (ino_in.0, offset_in),
            (ino_out.0, offset_out),
            req.uid() != 0,
        );
        self.dispatch(
            req.uid(),
            move |c, wait| c.copy_range(from, to, len, kill, wait),
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            },
        );
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (isatty() asks TCGETS of every file Python opens): ENOTTY, quietly.
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // SEEK_DATA/SEEK_HOLE: the kernel's generic answer (all data) is correct.
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let how = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => Fallocate::Allocate { keep_size },
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => Fallocate::PunchHole,
            libc::FALLOC_FL_ZERO_RANGE => Fallocate::ZeroRange { keep_size },
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let ino = ino.0;
        self.dispatch(
            req.uid(),
            move |c, wait| c.fallocate(ino, offset, length, how, wait),
            move |r| reply_empty(r, reply),
        );
    }
}
