//! File-system access relative to an open directory: `openat`, `fstatat`,
//! `readlinkat` and listing by descriptor, so a walk over a tree another
//! user can change never resolves a path it did not check.
//!
//! Why: the recorder is another user, possibly buggy or hostile. A walk that
//! `lstat`s `a/b` and then opens `a/b/c` by path re-resolves `a` and `b` at
//! the open: swap `b` for a symlink in between (`renameat2(RENAME_EXCHANGE)`
//! in a loop) and the open follows it into a directory only the shipper may
//! read. `O_NOFOLLOW` guards only the last component. Opening every
//! component relative to its parent's descriptor, with `O_NOFOLLOW`, means
//! no symlink is followed at any depth, and no path is ever longer than one
//! name (so trees deeper than `PATH_MAX` work too).
//!
//! Also `space`: `statvfs(2)` (retention and the receiver's metrics need the
//! free space of a file system), and `advise`: `posix_fadvise(2)` (packing
//! hints the page cache how it reads and what it no longer needs).
//!
//! std has no `openat` yet, so this is the crate's third audited `unsafe`
//! module (with `signal` and the test-only `fault`): a handful of libc calls,
//! each on a descriptor this module owns and a NUL-terminated name it built.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// What `fstat`/`fstatat` said about one inode: the fields the archive and
/// the tree fingerprint use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
}

/// The file type bits of a `Stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    Unknown,
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ctime: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
            ino: st.st_ino,
            dev: st.st_dev,
        }
    }

    /// `fstat` of an open file.
    pub fn of(f: &File) -> io::Result<Stat> {
        fstat(f.as_raw_fd())
    }

    pub fn kind(&self) -> Kind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFCHR => Kind::CharDevice,
            _ => Kind::Unknown,
        }
    }

    /// Same inode on the same device.
    pub fn same_inode(&self, other: &Stat) -> bool {
        self.ino == other.ino && self.dev == other.dev
    }

    /// Same inode, and nothing about its contents changed: size, mtime and
    /// ctime are equal. A write in place changes mtime and ctime even when
    /// it keeps the size (and ctime cannot be set back by the writer).
    pub fn same_version(&self, other: &Stat) -> bool {
        self.same_inode(other)
            && self.size == other.size
            && (self.mtime, self.mtime_nsec) == (other.mtime, other.mtime_nsec)
            && (self.ctime, self.ctime_nsec) == (other.ctime, other.ctime_nsec)
    }
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name with a NUL byte"))
}

fn fstat(fd: libc::c_int) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `fd` is a descriptor the caller holds open; `st` is a
    // writable, properly sized stat buffer that fstat fills on success.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    Ok(Stat::from_raw(unsafe { &st.assume_init() }))
}

/// An open directory. Everything below it is reached through its
/// descriptor, never by path.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// `O_NOFOLLOW`: a symlink in the last component fails (ELOOP) instead of
/// being followed. `O_NONBLOCK`: a fifo swapped in does not hang the open
/// (no effect on regular files and directories). `O_NOCTTY`: a terminal
/// swapped in does not become ours.
const SAFE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

impl Dir {
    /// Opens the directory at `path`. Its last component must not be a
    /// symlink (ELOOP, or ENOTDIR if it is not a directory); the components
    /// above it are the operator's configuration and are resolved normally.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: `c` is NUL-terminated and outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), SAFE_FLAGS | libc::O_DIRECTORY) };
        Self::wrap(fd)
    }

    fn wrap(fd: libc::c_int) -> io::Result<Dir> {
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by a successful open and nothing
        // else owns it.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int) -> io::Result<libc::c_int> {
        let c = cstring(name)?;
        // SAFETY: our own open descriptor and a NUL-terminated name.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    /// Opens the subdirectory `name`, never through a symlink.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        Self::wrap(self.openat(name, SAFE_FLAGS | libc::O_DIRECTORY)?)
    }

    /// Opens the file `name` for reading, never through a symlink. The
    /// caller checks with `Stat::of` that it is the regular file it expects.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let fd = self.openat(name, SAFE_FLAGS)?;
        // SAFETY: a fresh descriptor from openat, owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// `fstatat(name, AT_SYMLINK_NOFOLLOW)`: like `lstat`, relative to us.
    pub fn stat_at(&self, name: &OsStr) -> io::Result<Stat> {
        let c = cstring(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: our descriptor, a NUL-terminated name, a stat buffer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat returned 0, so the struct is initialised.
        Ok(Stat::from_raw(unsafe { &st.assume_init() }))
    }

    /// `fstat` of this directory.
    pub fn stat(&self) -> io::Result<Stat> {
        fstat(self.fd.as_raw_fd())
    }

    /// The target of the symlink `name`, byte for byte.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        let c = cstring(name)?;
        // Link targets are at most PATH_MAX bytes on Linux; one more byte
        // tells a target of exactly the buffer size from a truncated one.
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: our descriptor, a NUL-terminated name, and a buffer of
        // the length we pass.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n >= buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "symlink target longer than PATH_MAX",
            ));
        }
        buf.truncate(n);
        Ok(OsString::from_vec(buf))
    }

    /// The names in this directory, without `.` and `..`, in readdir order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // A fresh open file description of the same directory: `fdopendir`
        // takes ownership of its descriptor and moves its offset, and a
        // `dup` would share that offset with ours.
        let fd = self.openat(OsStr::new("."), SAFE_FLAGS | libc::O_DIRECTORY)?;
        // SAFETY: `fd` is ours; on success the DIR stream owns it and
        // closedir below closes it.
        let dirp = unsafe { libc::fdopendir(fd) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `fd` is still ours to close.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let mut names = Vec::new();
        let result = loop {
            // readdir signals an error only through errno, so clear it first.
            // SAFETY: __errno_location returns this thread's errno slot.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `dirp` is a valid stream until closedir.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break match e.raw_os_error() {
                    Some(0) | None => Ok(()),
                    Some(_) => Err(e),
                };
            }
            // SAFETY: d_name is a NUL-terminated array inside the entry,
            // valid until the next readdir on this stream; we copy it now.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: closes the stream (and its descriptor) exactly once.
        unsafe { libc::closedir(dirp) };
        result.map(|()| names)
    }
}

/// Size and free space of the file system holding a path, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// Free to an unprivileged user (`f_bavail`): what a recorder running
    /// as its own user can still write.
    pub available: u64,
}

impl Space {
    /// Percentage available, 0-100.
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.available as f64 * 100.0 / self.total as f64
    }
}

/// Whether the running user may create and remove entries in the
/// directory `path` (`access(2)` with `W_OK | X_OK`: permissions, ACLs and a
/// read-only mount all count, as they will when the real work runs).
pub fn writable_dir(path: &Path) -> io::Result<bool> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: a NUL-terminated path; access only reads it.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EROFS | libc::EPERM) => Ok(false),
        _ => Err(e),
    }
}

/// `statvfs(2)` of `path` (std has none).
pub fn space(path: &Path) -> io::Result<Space> {
    let c = cstring(path.as_os_str())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and a statvfs buffer of the right size.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on 32-bit ARM): a cast
    // that is a no-op here is needed there.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, bavail) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok(Space {
        total: blocks * frsize,
        available: bavail * frsize,
    })
}

/// How a file's pages will be used, for the kernel's page cache.
#[derive(Clone, Copy, Debug)]
pub enum Advice {
    /// Read once, front to back: read ahead further.
    Sequential,
    /// Not needed again soon: drop its clean pages now.
    DontNeed,
}

/// `posix_fadvise` over the whole file. Only a hint: its failure changes
/// nothing but speed, so it is ignored.
pub fn advise(file: &File, advice: Advice) {
    let advice = match advice {
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
    };
    // SAFETY: a descriptor we own for the duration of the call.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cis490-dirfd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_are_never_followed() {
        let t = temp("nofollow");
        std::fs::create_dir(t.join("real")).unwrap();
        std::fs::write(t.join("real/f"), b"x").unwrap();
        symlink("real", t.join("link")).unwrap();
        symlink("real/f", t.join("flink")).unwrap();
        let d = Dir::open(&t).unwrap();
        assert!(d.open_dir(OsStr::new("real")).is_ok());
        // O_DIRECTORY is checked first on Linux: ENOTDIR, never a follow.
        let e = d.open_dir(OsStr::new("link")).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
            "{e}"
        );
        let e = d.open_file(OsStr::new("flink")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert_eq!(d.stat_at(OsStr::new("link")).unwrap().kind(), Kind::Symlink);
        assert_eq!(d.read_link(OsStr::new("link")).unwrap(), "real");
        assert!(Dir::open(&t.join("link")).is_err());
        let mut names = d.names().unwrap();
        names.sort();
        assert_eq!(names, ["flink", "link", "real"]);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn space_of_a_real_file_system() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!((0.0..=100.0).contains(&s.free_percent()));
        assert!(space(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn stat_of_an_open_file_matches_stat_at() {
        let t = temp("stat");
        std::fs::write(t.join("f"), b"hello").unwrap();
        let d = Dir::open(&t).unwrap();
        let at = d.stat_at(OsStr::new("f")).unwrap();
        let f = d.open_file(OsStr::new("f")).unwrap();
        let of = Stat::of(&f).unwrap();
        assert!(at.same_version(&of));
        assert_eq!((at.kind(), at.size), (Kind::File, 5));
        // Listing twice gives the same names (no shared offset).
        assert_eq!(d.names().unwrap(), d.names().unwrap());
        std::fs::remove_dir_all(&t).unwrap();
    }
}
