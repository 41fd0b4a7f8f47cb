//! A FUSE filesystem for tests that forgets what was not synced, as a power cut does.
//!
//! Killing a process leaves the operating system's page cache behind, which flushes whatever
//! was written, synced or not; so a kill -9 test never shows that an acknowledged write had
//! really reached stable storage. This filesystem (LazyFS's idea: Jepsen's "When Amnesia
//! Strikes", VLDB 2024) passes every operation through to a backing directory, and keeps, for
//! every file, its content as of its last `fsync`/`fdatasync`, and for every directory, its
//! entries as of its last `fsync`. [`Mounted::power_cut`] puts everything back to that: every
//! file to its synced content, every directory to its synced entries (so a file never synced
//! into its directory disappears, and one removed since comes back), optionally with part of
//! each file's last unsynced write persisted (a torn write).
//!
//! The model of directory entries is stricter than ext4 with `data=ordered`: an entry (a
//! create, a rename, an unlink, a mkdir) is durable only once its directory was fsynced. ext4
//! happens to commit a new file's entry with the file's own fsync (one journal), XFS and btrfs
//! do not promise it, and POSIX promises nothing without the directory's fsync; code that is
//! correct here is correct on all of them. File metadata other than the size (mode, times) is
//! kept at once.
//!
//! Layout of the backing directory: each file's content twice, `<inode>` (what the file holds
//! now) and `<inode>.synced` (what a power cut leaves); directories live in memory. Opens are
//! `direct_io`, and attributes and entries are never cached by the kernel, so every read and
//! write reaches this code.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Nothing is cached by the kernel: a power cut changes what the files hold behind its back.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;
const BLOCK_BYTES: u32 = 4096;

/// One change to a file's content since its last sync, in order.
#[derive(Debug, Clone, Copy)]
enum Change {
    Write {
        offset: u64,
        len: u64,
    },
    /// The file's length was set: the `len` bytes from `from` are gone, or zeros.
    Truncate {
        from: u64,
        len: u64,
    },
}

#[derive(Debug)]
struct FileNode {
    /// What the file holds now.
    live: File,
    /// What a power cut leaves.
    synced: File,
    len: u64,
    changes: Vec<Change>,
}

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<OsString, u64>,
    /// The entries as of the directory's last fsync.
    synced: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Entries naming it now, and open handles: while either is above zero it stays.
    links: u32,
    open: u32,
}

/// What a power cut did, for a test to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose unsynced changes were lost.
    pub files_reverted: usize,
    /// Files and directories that disappeared (never synced into their directory).
    pub nodes_removed: usize,
    /// Bytes of a last unsynced write that were kept anyway.
    pub torn_bytes: u64,
}

/// How a power cut treats the last unsynced write of each file.
#[derive(Debug, Clone, Copy)]
pub enum Tear {
    /// Lost whole.
    None,
    /// This many thousandths of it, from its start, reach the disk (0 to 1000).
    Part(u32),
}

#[derive(Debug)]
struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, u64>,
    next_fh: u64,
    /// Every fsync and fsyncdir, for tests that count them.
    syncs: u64,
}

fn os_error(error: &io::Error) -> Errno {
    error.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

impl State {
    fn new(backing: &Path) -> io::Result<State> {
        std::fs::create_dir_all(backing)?;
        let now = SystemTime::now();
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                body: Body::Dir(DirNode::default()),
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: now,
                ctime: now,
                links: 1,
                open: 0,
            },
        );
        Ok(State {
            backing: backing.to_path_buf(),
            nodes,
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            syncs: 0,
        })
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirNode, Errno> {
        match &self.node(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File(file) => (FileType::RegularFile, file.len, node.links.max(1)),
            Body::Dir(dir) => (
                FileType::Directory,
                0,
                2 + u32::try_from(dir.entries.len()).unwrap_or(u32::MAX),
            ),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: BLOCK_BYTES,
            flags: 0,
        })
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn path_of(&self, ino: u64, synced: bool) -> PathBuf {
        let name = if synced {
            format!("{ino}.synced")
        } else {
            ino.to_string()
        };
        self.backing.join(name)
    }

    /// A new node named `name` in `parent`.
    fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        directory: bool,
        mode: u32,
        req: &Request,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        let body = if directory {
            Body::Dir(DirNode::default())
        } else {
            let open = |path: PathBuf| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| os_error(&e))
            };
            Body::File(FileNode {
                live: open(self.path_of(ino, false))?,
                synced: open(self.path_of(ino, true))?,
                len: 0,
                changes: Vec::new(),
            })
        };
        self.next_ino += 1;
        let now = SystemTime::now();
        self.nodes.insert(
            ino,
            Node {
                body,
                perm: u16::try_from(mode & 0o7777).unwrap_or(0o600),
                uid: req.uid(),
                gid: req.gid(),
                mtime: now,
                ctime: now,
                links: 1,
                open: 0,
            },
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    /// Drops one link or handle of `ino`; a node nobody names or holds, and no synced
    /// directory names either, is gone for good.
    fn release_link(&mut self, ino: u64, handle: bool) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if handle {
                node.open = node.open.saturating_sub(1);
            } else {
                node.links = node.links.saturating_sub(1);
            }
        }
        self.collect(ino);
    }

    fn synced_somewhere(&self, ino: u64) -> bool {
        self.nodes.values().any(|n| match &n.body {
            Body::Dir(dir) => dir.synced.values().any(|i| *i == ino),
            Body::File(_) => false,
        })
    }

    fn collect(&mut self, ino: u64) {
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.links == 0 && n.open == 0);
        if unused && !self.synced_somewhere(ino) {
            self.forget(ino);
        }
    }

    fn forget(&mut self, ino: u64) {
        if let Some(node) = self.nodes.remove(&ino) {
            if let Body::File(_) = node.body {
                let _ = std::fs::remove_file(self.path_of(ino, false));
                let _ = std::fs::remove_file(self.path_of(ino, true));
            }
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let Body::File(file) = &self.node(ino)?.body else {
            return Err(Errno::EISDIR);
        };
        let end = offset.saturating_add(u64::from(size)).min(file.len);
        let len = usize::try_from(end.saturating_sub(offset)).map_err(|_| Errno::EINVAL)?;
        let mut buffer = vec![0u8; len];
        file.live
            .read_exact_at(&mut buffer, offset)
            .map_err(|e| os_error(&e))?;
        Ok(buffer)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let file = self.file_mut(ino)?;
        file.live
            .write_all_at(data, offset)
            .map_err(|e| os_error(&e))?;
        let len = u64::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        file.len = file.len.max(offset + len);
        file.changes.push(Change::Write { offset, len });
        self.touch(ino);
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    fn truncate(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let file = self.file_mut(ino)?;
        file.live.set_len(len).map_err(|e| os_error(&e))?;
        // Cut or grown, the bytes between the two lengths change (to nothing, or to zeros).
        file.changes.push(Change::Truncate {
            from: len.min(file.len),
            len: len.abs_diff(file.len),
        });
        file.len = len;
        self.touch(ino);
        Ok(())
    }

    /// What a sync makes durable: the file's length and every byte changed since.
    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        self.syncs += 1;
        let file = self.file_mut(ino)?;
        let error = |e: io::Error| os_error(&e);
        file.synced.set_len(file.len).map_err(error)?;
        let mut buffer = Vec::new();
        for change in std::mem::take(&mut file.changes) {
            let (offset, len) = match change {
                Change::Write { offset, len } | Change::Truncate { from: offset, len } => {
                    (offset, len)
                }
            };
            let end = (offset + len).min(file.len);
            if end <= offset {
                continue;
            }
            buffer.resize(usize::try_from(end - offset).map_err(|_| Errno::EINVAL)?, 0);
            file.live
                .read_exact_at(&mut buffer, offset)
                .map_err(error)?;
            file.synced.write_all_at(&buffer, offset).map_err(error)?;
        }
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        self.syncs += 1;
        let dir = self.dir_mut(ino)?;
        let dropped: Vec<u64> = dir
            .synced
            .values()
            .filter(|i| !dir.entries.values().any(|e| e == *i))
            .copied()
            .collect();
        dir.synced = dir.entries.clone();
        for ino in dropped {
            self.collect(ino);
        }
        Ok(())
    }

    fn unlink(&mut self, parent: u64, name: &OsStr, directory: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.node(ino)?.body, directory) {
            (Body::Dir(dir), true) if !dir.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch(parent);
        self.release_link(ino, false);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let ino = self.lookup(parent, name)?;
        let replaced = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(old) = replaced {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if old == ino {
                return Ok(());
            }
            match (&self.node(old)?.body, &self.node(ino)?.body) {
                (Body::Dir(dir), Body::Dir(_)) if !dir.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                (Body::Dir(_), Body::File(_)) => return Err(Errno::EISDIR),
                (Body::File(_), Body::Dir(_)) => return Err(Errno::ENOTDIR),
                _ => {}
            }
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        self.touch(parent);
        self.touch(new_parent);
        if let Some(old) = replaced {
            self.release_link(old, false);
        }
        Ok(())
    }

    /// The power cut: see the module's documentation.
    fn power_cut(&mut self, tear: Tear) -> io::Result<CutReport> {
        let mut report = CutReport::default();
        self.handles.clear();
        for node in self.nodes.values_mut() {
            node.open = 0;
            if let Body::Dir(dir) = &mut node.body {
                dir.entries = dir.synced.clone();
            }
        }
        // What the synced entries still reach from the root; the rest is gone.
        let mut reached = vec![ROOT];
        let mut links: HashMap<u64, u32> = HashMap::from([(ROOT, 1)]);
        while let Some(ino) = reached.pop() {
            if let Some(Body::Dir(dir)) = self.nodes.get(&ino).map(|n| &n.body) {
                for child in dir.entries.values() {
                    let count = links.entry(*child).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        reached.push(*child);
                    }
                }
            }
        }
        let gone: Vec<u64> = self
            .nodes
            .keys()
            .filter(|ino| !links.contains_key(ino))
            .copied()
            .collect();
        report.nodes_removed = gone.len();
        for ino in gone {
            self.forget(ino);
        }
        for (ino, node) in &mut self.nodes {
            node.links = links.get(ino).copied().unwrap_or(0);
            let Body::File(file) = &mut node.body else {
                continue;
            };
            if file.changes.is_empty() {
                continue;
            }
            report.files_reverted += 1;
            if let (Tear::Part(thousandths), Some(Change::Write { offset, len })) =
                (tear, file.changes.last().copied())
            {
                let kept = len * u64::from(thousandths.min(1000)) / 1000;
                if kept > 0 {
                    let mut buffer = vec![0u8; usize::try_from(kept).unwrap_or(0)];
                    file.live.read_exact_at(&mut buffer, offset)?;
                    file.synced.write_all_at(&buffer, offset)?;
                    report.torn_bytes += kept;
                }
            }
            file.changes.clear();
            let synced_len = file.synced.metadata()?.len();
            let mut content = vec![0u8; usize::try_from(synced_len).unwrap_or(0)];
            file.synced.read_exact_at(&mut content, 0)?;
            file.live.set_len(0)?;
            file.live.write_all_at(&content, 0)?;
            file.len = synced_len;
        }
        Ok(report)
    }
}

/// The filesystem, as the FUSE session runs it.
#[derive(Debug, Clone)]
struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn time_of(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(at) => at,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        match state.lookup(parent.0, name).and_then(|ino| state.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let outcome = (|| {
            if let Some(len) = size {
                state.truncate(ino.0, len)?;
            }
            let node = state.node_mut(ino.0)?;
            if let Some(mode) = mode {
                node.perm = u16::try_from(mode & 0o7777).map_err(|_| Errno::EINVAL)?;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(at) = mtime {
                node.mtime = time_of(at);
            }
            node.ctime = SystemTime::now();
            state.attr(ino.0)
        })();
        match outcome {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc_s_ifmt() != libc_s_ifreg() {
            reply.error(Errno::EPERM);
            return;
        }
        let mut state = self.state();
        match state
            .make(parent.0, name, false, mode & !umask, req)
            .and_then(|ino| state.attr(ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        match state
            .make(parent.0, name, true, mode & !umask, req)
            .and_then(|ino| state.attr(ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().unlink(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().unlink(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .state()
            .rename(parent.0, name, newparent.0, newname, flags)
        {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let truncate = flags.0 & open_truncate() != 0;
        let outcome = (|| {
            if truncate {
                state.truncate(ino.0, 0)?;
            }
            state.node_mut(ino.0)?.open += 1;
            let fh = state.next_fh;
            state.next_fh += 1;
            state.handles.insert(fh, ino.0);
            Ok(fh)
        })();
        match outcome {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(error) => reply.error(error),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let outcome = (|| {
            let ino = match state.lookup(parent.0, name) {
                Ok(_) if flags & open_exclusive() != 0 => return Err(Errno::EEXIST),
                Ok(ino) => {
                    if flags & open_truncate() != 0 {
                        state.truncate(ino, 0)?;
                    }
                    ino
                }
                Err(_) => state.make(parent.0, name, false, mode & !umask, req)?,
            };
            state.node_mut(ino)?.open += 1;
            let fh = state.next_fh;
            state.next_fh += 1;
            state.handles.insert(fh, ino);
            Ok((state.attr(ino)?, fh))
        })();
        match outcome {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing makes nothing durable: only fsync does.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if state.handles.remove(&fh.0).is_some() {
            state.release_link(ino.0, true);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().sync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().dir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let listing: Vec<(u64, FileType, OsString)> = match state.dir(ino.0) {
            Ok(dir) => {
                let mut listing = vec![
                    (ino.0, FileType::Directory, OsString::from(".")),
                    (ino.0, FileType::Directory, OsString::from("..")),
                ];
                for (name, child) in &dir.entries {
                    let kind = match state.nodes.get(child).map(|n| &n.body) {
                        Some(Body::Dir(_)) => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    listing.push((*child, kind, name.clone()));
                }
                listing
            }
            Err(error) => {
                reply.error(error);
                return;
            }
        };
        for (index, (child, kind, name)) in listing
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            let next = u64::try_from(index + 1).unwrap_or(u64::MAX);
            if reply.add(INodeNo(child), next, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().sync_dir(ino.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room, as the backing directory's disk has.
        reply.statfs(
            1 << 24,
            1 << 23,
            1 << 23,
            1 << 20,
            1 << 19,
            BLOCK_BYTES,
            255,
            BLOCK_BYTES,
        );
    }
}

fn libc_s_ifmt() -> u32 {
    0o170_000
}

fn libc_s_ifreg() -> u32 {
    0o100_000
}

fn open_truncate() -> i32 {
    0o1000
}

fn open_exclusive() -> i32 {
    0o200
}

/// The filesystem mounted at a directory, until dropped or [`Mounted::unmount`]ed.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl Mounted {
    /// Mounts an empty filesystem at `mountpoint` (an empty directory), keeping its files in
    /// `backing`. Needs root (or `fusermount3`) and `/dev/fuse`.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        std::fs::create_dir_all(mountpoint)?;
        let state = Arc::new(Mutex::new(State::new(backing)?));
        let fs = LazyFs {
            state: Arc::clone(&state),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("roster-lazyfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mounted {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts every file and directory back to what it held at its last sync. Whatever uses the
    /// filesystem must have been killed first, as a power cut would have stopped it.
    pub fn power_cut(&self, tear: Tear) -> io::Result<CutReport> {
        self.state().power_cut(tear)
    }

    /// How many `fsync`, `fdatasync` and directory syncs reached the filesystem so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
