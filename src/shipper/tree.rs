//! An episode directory as the shipper sees it: a depth-first walk in byte
//! order of names, entirely by descriptor (`dirfd`), and the fingerprint of
//! what the walk saw.
//!
//! The walk is the one `pack` archives and the one `queue` re-runs (metadata
//! only) before it reuses a tarball or retires an episode: both visit the
//! same entries in the same order and feed the same records to the
//! fingerprint, so "the episode on disk is still the tree this tarball was
//! made from" is one comparison of two digests.
//!
//! The fingerprint covers, for every entry (the top directory included), its
//! name in the archive, type, size, mtime, ctime and inode. Inode and ctime
//! are what make it tamper-evident: a recorder can copy mtimes and sizes,
//! but a new recording under a reused id has new inodes, and any write or
//! chmod moves ctime, which no user can set back. One exception: the top
//! directory's ctime is left out, because our own retire (the rename of
//! `episodes/<id>` to `shipped/<id>`) changes it, and the fingerprint must
//! still recognise the retired tree.
//!
//! This module owns the order and the fingerprint. It does not read file
//! contents (the visitor opens files through the parent `Dir` it is given),
//! and it decides nothing about fifos or devices beyond reporting their kind.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dirfd::{Dir, Kind, Stat};
use crate::hashing::{from_hex32, to_hex};

/// One entry as the walk reached it.
pub struct Entry<'a> {
    /// The name inside the archive: `<id>` for the top, `<id>/a/b` below.
    pub name: &'a Path,
    /// Where it is on disk, for messages only: never opened by this path.
    pub path: &'a Path,
    /// `fstatat(AT_SYMLINK_NOFOLLOW)` from its parent (`fstat` for the top).
    pub stat: Stat,
    /// The directory that holds it and its name there; `None` for the top.
    pub parent: Option<(&'a Dir, &'a OsStr)>,
}

/// Why the walk stopped.
#[derive(Debug)]
pub enum WalkError {
    /// The top is not a directory (a symlink counts as not a directory).
    NotADirectory(PathBuf),
    /// Listing, stat-ing or opening an entry failed.
    Read { path: PathBuf, source: io::Error },
    /// A directory was swapped for another inode (or a non-directory)
    /// between its stat and its open: someone is changing the tree.
    Replaced(PathBuf),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NotADirectory(p) => write!(
                f,
                "{} is not a directory (symlinks are not followed)",
                p.display()
            ),
            WalkError::Read { path, source } => write!(f, "reading {}: {source}", path.display()),
            WalkError::Replaced(p) => write!(f, "{} was replaced during the walk", p.display()),
        }
    }
}

impl std::error::Error for WalkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalkError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The digest of a walk, with its entry count and the bytes of its regular
/// files (the latter two for messages and progress; equality is the digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub digest: [u8; 32],
    pub entries: u64,
    pub bytes: u64,
}

impl Fingerprint {
    /// `tree <entries> <bytes> <hex digest>`, one line: the form kept in
    /// the outbox sidecar.
    pub fn to_line(&self) -> String {
        format!(
            "tree {} {} {}",
            self.entries,
            self.bytes,
            to_hex(&self.digest)
        )
    }

    pub fn from_line(line: &str) -> Option<Fingerprint> {
        let mut w = line.split_ascii_whitespace();
        if w.next()? != "tree" {
            return None;
        }
        let entries = w.next()?.parse().ok()?;
        let bytes = w.next()?.parse().ok()?;
        let digest = from_hex32(w.next()?)?;
        w.next().is_none().then_some(Fingerprint {
            digest,
            entries,
            bytes,
        })
    }
}

struct Recorder {
    hasher: Sha256,
    entries: u64,
    bytes: u64,
}

impl Recorder {
    fn record(&mut self, name: &Path, st: &Stat, top: bool) {
        let kind = match st.kind() {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Symlink => b'l',
            Kind::Fifo => b'p',
            Kind::Socket => b's',
            Kind::BlockDevice => b'b',
            Kind::CharDevice => b'c',
            Kind::Unknown => b'?',
        };
        // Names cannot hold NUL, so `name NUL` is unambiguous; the fixed
        // width fields follow.
        self.hasher.update(name.as_os_str().as_bytes());
        self.hasher.update([0, kind]);
        let ctime = if top {
            (0, 0)
        } else {
            (st.ctime, st.ctime_nsec)
        };
        for v in [
            st.size as i64,
            st.mtime,
            st.mtime_nsec,
            ctime.0,
            ctime.1,
            st.ino as i64,
        ] {
            self.hasher.update(v.to_le_bytes());
        }
        self.entries += 1;
        if st.kind() == Kind::File {
            self.bytes += st.size;
        }
    }
}

/// One directory being listed: its entries, sorted, consumed from the end.
struct Frame {
    dir: Dir,
    path: PathBuf,
    name: PathBuf,
    /// Sorted in *descending* byte order so `pop` yields ascending order.
    children: Vec<std::ffi::OsString>,
}

impl Frame {
    fn new(dir: Dir, path: PathBuf, name: PathBuf) -> Result<Frame, WalkError> {
        let mut children = dir.names().map_err(|source| WalkError::Read {
            path: path.clone(),
            source,
        })?;
        // Byte order, not locale or readdir order: the archive must not
        // depend on how the file system happens to hash or store names.
        children.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        Ok(Frame {
            dir,
            path,
            name,
            children,
        })
    }
}

/// Walks `top` (archive name `id`), calling `visit` for every entry in
/// archive order, and returns the fingerprint of what it saw. Directories
/// are opened by the walk itself (relative to their parent, never through
/// a symlink); `visit` opens files through `Entry::parent`.
///
/// An explicit stack rather than recursion, so a deep tree costs heap, not
/// call stack.
pub fn walk<E: From<WalkError>>(
    top: &Path,
    id: &str,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), E>,
) -> Result<Fingerprint, E> {
    let read = |path: &Path, source| WalkError::Read {
        path: path.to_owned(),
        source,
    };
    let dir = Dir::open(top).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => WalkError::NotADirectory(top.to_owned()),
        _ => read(top, e),
    })?;
    let st = dir.stat().map_err(|e| read(top, e))?;
    let mut rec = Recorder {
        hasher: Sha256::new(),
        entries: 0,
        bytes: 0,
    };
    let name = PathBuf::from(id);
    rec.record(&name, &st, true);
    visit(&Entry {
        name: &name,
        path: top,
        stat: st,
        parent: None,
    })?;
    let mut stack = vec![Frame::new(dir, top.to_owned(), name)?];
    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.children.pop() else {
            stack.pop();
            continue;
        };
        let path = frame.path.join(&child);
        let name = frame.name.join(&child);
        let st = frame.dir.stat_at(&child).map_err(|e| read(&path, e))?;
        rec.record(&name, &st, false);
        visit(&Entry {
            name: &name,
            path: &path,
            stat: st,
            parent: Some((&frame.dir, &child)),
        })?;
        if st.kind() == Kind::Dir {
            let sub = frame
                .dir
                .open_dir(&child)
                .map_err(|e| match e.raw_os_error() {
                    // A symlink or a file where the directory was a moment ago.
                    Some(libc::ELOOP | libc::ENOTDIR) => WalkError::Replaced(path.clone()),
                    _ => read(&path, e),
                })?;
            let now = sub.stat().map_err(|e| read(&path, e))?;
            if !now.same_inode(&st) {
                return Err(WalkError::Replaced(path).into());
            }
            stack.push(Frame::new(sub, path, name)?);
        }
    }
    Ok(Fingerprint {
        digest: rec.hasher.finalize().into(),
        entries: rec.entries,
        bytes: rec.bytes,
    })
}

/// The fingerprint of `top` as it is now: a metadata-only walk.
pub fn fingerprint(top: &Path, id: &str) -> Result<Fingerprint, WalkError> {
    walk::<WalkError>(top, id, &mut |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cis490-tree-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fingerprint_line_round_trip() {
        let f = Fingerprint {
            digest: [9; 32],
            entries: 12,
            bytes: 3456,
        };
        assert_eq!(Fingerprint::from_line(&f.to_line()), Some(f));
        for bad in [
            "",
            "tree",
            "tree 1 2",
            "tree 1 2 zz",
            "tre 1 2 00",
            "tree x 2 0",
        ] {
            assert_eq!(Fingerprint::from_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn fingerprint_sees_every_kind_of_change_and_survives_a_rename() {
        let t = temp("changes");
        let ep = t.join("ep");
        fs::create_dir_all(ep.join("sub")).unwrap();
        fs::write(ep.join("sub/a"), b"aaaa").unwrap();
        fs::write(ep.join("b"), b"bbbb").unwrap();
        let f0 = fingerprint(&ep, "ep").unwrap();
        assert_eq!((f0.entries, f0.bytes), (4, 8));
        assert_eq!(fingerprint(&ep, "ep").unwrap(), f0, "stable");

        // Our own retire: a rename to another parent keeps the fingerprint.
        fs::create_dir(t.join("shipped")).unwrap();
        fs::rename(&ep, t.join("shipped/ep")).unwrap();
        assert_eq!(fingerprint(&t.join("shipped/ep"), "ep").unwrap(), f0);
        fs::rename(t.join("shipped/ep"), &ep).unwrap();

        // A chmod (ctime), an in-place rewrite of the same size, a new file,
        // and a copy with identical names, sizes and contents all differ.
        std::process::Command::new("chmod")
            .arg("600")
            .arg(ep.join("b"))
            .status()
            .unwrap();
        let f1 = fingerprint(&ep, "ep").unwrap();
        assert_ne!(f1, f0);
        fs::write(ep.join("sub/a"), b"AAAA").unwrap();
        let f2 = fingerprint(&ep, "ep").unwrap();
        assert_ne!(f2, f1);
        fs::write(ep.join("late"), b"").unwrap();
        assert_ne!(fingerprint(&ep, "ep").unwrap(), f2);
        let copy = t.join("copy");
        assert!(std::process::Command::new("cp")
            .args(["-a"])
            .arg(&ep)
            .arg(&copy)
            .status()
            .unwrap()
            .success());
        assert_ne!(
            fingerprint(&copy, "ep").unwrap(),
            fingerprint(&ep, "ep").unwrap(),
            "new inodes"
        );
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_symlinked_top_is_not_a_directory() {
        let t = temp("toplink");
        fs::create_dir(t.join("real")).unwrap();
        std::os::unix::fs::symlink("real", t.join("link")).unwrap();
        assert!(matches!(
            fingerprint(&t.join("link"), "ep"),
            Err(WalkError::NotADirectory(_))
        ));
        fs::remove_dir_all(&t).unwrap();
    }
}
