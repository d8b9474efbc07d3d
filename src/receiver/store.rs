//! The receiver's store: `<store_dir>/<host_id>/<episode_id>.tar.zst`, each
//! published atomically, never replaced, and fsynced before it is reported.
//!
//! ```text
//! begin:   mkdir host dir (fsync store_dir if new)
//!          create .upload-<id>.<pid>.<n> with O_EXCL      (ids cannot start with '.')
//! write:   body -> HashingWriter<File>                     (digest known without re-reading)
//! commit:  digest == Content-Digest?  no -> delete temp, 400
//!          fsync(temp)                                     (EIO -> 500, never retried)
//!          unlink stale <id>.tar.zst.sha256
//!          link(temp, <id>.tar.zst)                        (EEXIST -> compare: 200 or 409)
//!          unlink(temp); write <id>.tar.zst.sha256 via rename
//!          fsync(host dir)                                 -> only now 201
//! ```
//! The `.sha256` sidecar (sha256sum format, so `sha256sum -c` works) is a
//! cache: the tarball is the truth. A tarball without a sidecar is hashed
//! once and the sidecar rewritten; a sidecar without its tarball is
//! ignored. A final name only ever appears through `link`, after the temp
//! was fsynced, so it is never partial. At start, `.upload-*` temps left by
//! a crash are removed; nothing else is.
//!
//! This module owns the files and their order of operations; it does not
//! know HTTP (which answer a [`StoreError`] or [`Outcome`] earns is
//! `answer`'s business, apart from [`StoreError::status`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fault;
use crate::fsutil::{self, sync_dir};
use crate::hashing::{self, HashingWriter};
use crate::protocol::Status;

const TEMP_PREFIX: &str = ".upload-";

/// A store operation that failed: what we were doing, on which path, and
/// the system's error.
#[derive(Debug)]
pub enum StoreError {
    /// 507: the disk or a quota is full (ENOSPC, EDQUOT, EFBIG).
    NoSpace(&'static str, PathBuf, io::Error),
    /// 500: anything else.
    Io(&'static str, PathBuf, io::Error),
    /// 500: the host directory is a symlink (someone else's doing).
    HostDirIsLink(PathBuf),
}

impl StoreError {
    /// What the client is told: 507 for a full store (the shipper stops
    /// its pass and retries later), 500 for the rest.
    pub fn status(&self) -> Status {
        match self {
            StoreError::NoSpace(..) => Status::NoSpace,
            _ => Status::Error,
        }
    }

    fn io(what: &'static str, path: &Path, e: io::Error) -> StoreError {
        if fsutil::is_no_space(&e) {
            StoreError::NoSpace(what, path.to_owned(), e)
        } else {
            StoreError::Io(what, path.to_owned(), e)
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoSpace(what, p, e) => write!(
                f,
                "store is out of space: {what} {}: {e}; free space in store_dir",
                p.display()
            ),
            StoreError::Io(what, p, e) => write!(f, "{what} {}: {e}", p.display()),
            StoreError::HostDirIsLink(p) => {
                write!(
                    f,
                    "{} is a symlink; refusing to store through it (remove the link)",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::NoSpace(_, _, e) | StoreError::Io(_, _, e) => Some(e),
            StoreError::HostDirIsLink(_) => None,
        }
    }
}

/// What the store holds under an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Absent,
    Present([u8; 32]),
}

/// The result of a completed upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Another upload of the same bytes won the race.
    AlreadyPresent,
    /// Other bytes are stored under this id: their digest.
    Conflict([u8; 32]),
    /// The body's digest is not the one announced: its actual digest.
    DigestMismatch([u8; 32]),
}

pub struct Store {
    root: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store and removes temps left by a crash.
    pub fn open(root: &Path) -> Result<(Store, usize), StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("creating store", root, e))?;
        let store = Store {
            root: root.to_owned(),
        };
        let removed = store.remove_stale_temps()?;
        Ok((store, removed))
    }

    fn remove_stale_temps(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries =
            fs::read_dir(&self.root).map_err(|e| StoreError::io("listing", &self.root, e))?;
        for host in entries.flatten() {
            if !host.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(files) = fs::read_dir(host.path()) else {
                continue;
            };
            for f in files.flatten() {
                if f.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    fs::remove_file(f.path())
                        .map_err(|e| StoreError::io("removing stale temp", &f.path(), e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn final_path(&self, host: &str, episode: &str) -> PathBuf {
        self.root.join(host).join(format!("{episode}.tar.zst"))
    }

    fn sidecar_path(final_path: &Path) -> PathBuf {
        let mut s = final_path.as_os_str().to_owned();
        s.push(".sha256");
        PathBuf::from(s)
    }

    /// What is stored under an id, from the sidecar or, failing that, by
    /// hashing the tarball once (and rewriting the sidecar).
    pub fn lookup(&self, host: &str, episode: &str) -> Result<Existing, StoreError> {
        let final_path = self.final_path(host, episode);
        match fs::symlink_metadata(&final_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
            Err(e) => return Err(StoreError::io("checking", &final_path, e)),
            Ok(_) => {}
        }
        let sidecar = Self::sidecar_path(&final_path);
        if let Some(d) = hashing::read_sidecar(&sidecar) {
            return Ok(Existing::Present(d));
        }
        let (digest, _) = hashing::sha256_file(&final_path)
            .map_err(|e| StoreError::io("hashing", &final_path, e))?;
        // Best effort: a missing sidecar only costs a re-hash next time.
        let _ = write_sidecar(&sidecar, &digest, &final_path);
        Ok(Existing::Present(digest))
    }

    /// Makes what `lookup` found durable before it is acknowledged: after a
    /// crash between a link and its directory fsync, the name exists in the
    /// page cache only, and a 200 for it would be a promise a power cut can
    /// break. Also the retry point after a failed directory fsync.
    pub fn confirm(&self, host: &str) -> Result<(), StoreError> {
        let dir = self.root.join(host);
        sync_dir(&dir).map_err(|e| StoreError::io("syncing", &dir, e))
    }

    /// Starts an upload: a fresh temp file in the host's directory (same
    /// file system as the final name, so `link` can publish it).
    pub fn begin(&self, host: &str, episode: &str) -> Result<Pending<'_>, StoreError> {
        let dir = self.root.join(host);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Err(StoreError::HostDirIsLink(dir)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {} // a concurrent upload made it
                    Err(e) => return Err(StoreError::io("creating", &dir, e)),
                }
                sync_dir(&self.root).map_err(|e| StoreError::io("syncing", &self.root, e))?;
            }
            Err(e) => return Err(StoreError::io("checking", &dir, e)),
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{episode}.{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StoreError::io("creating", &temp, e))?;
        Ok(Pending {
            writer: Some(HashingWriter::new(file)),
            final_path: self.final_path(host, episode),
            dir,
            temp,
            store: self,
            host: host.to_owned(),
            episode: episode.to_owned(),
        })
    }
}

fn write_sidecar(path: &Path, digest: &[u8; 32], final_path: &Path) -> io::Result<()> {
    let name = final_path.file_name().unwrap_or_default().to_string_lossy();
    // Unique per upload: concurrent uploads may write sidecars at once.
    let tmp = path.with_file_name(format!(
        "{TEMP_PREFIX}sidecar.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fsutil::write_atomically(&tmp, path, hashing::sidecar_line(digest, &name).as_bytes())
}

/// An upload in progress: its temp file, hashed as it is written. Dropping
/// it without `commit` removes the temp, so a failed or abandoned upload
/// leaves nothing behind (a kill -9 leaves the temp for the next start to
/// remove).
pub struct Pending<'a> {
    writer: Option<HashingWriter<File>>,
    temp: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    store: &'a Store,
    host: String,
    episode: String,
}

impl Write for Pending<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fault::io("store.write")?;
        match &mut self.writer {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("upload already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pending<'_> {
    /// A failed write of body bytes into the temp file, as a store error
    /// that names the temp (`Write` can only return an `io::Error`).
    pub fn write_failed(&self, e: io::Error) -> StoreError {
        StoreError::io("writing", &self.temp, e)
    }

    /// Publishes the body if its digest is `expected` (see the module doc for
    /// the order of steps). Whatever happens, the temp is gone afterwards.
    pub fn commit(mut self, expected: &[u8; 32]) -> Result<Outcome, StoreError> {
        let Some(writer) = self.writer.take() else {
            return Err(StoreError::io(
                "committing",
                &self.temp,
                io::Error::other("already committed"),
            ));
        };
        let (file, digest, _) = writer.finish();
        if digest != *expected {
            return Ok(Outcome::DigestMismatch(digest));
        }
        fsutil::sync_file(&file).map_err(|e| StoreError::io("syncing", &self.temp, e))?;
        drop(file);
        fault::point("recv.after_tmp_fsync");
        let sidecar = Store::sidecar_path(&self.final_path);
        // A sidecar whose tarball is gone (an operator deleted it) must not
        // describe the new tarball, even for an instant.
        fsutil::remove_if_exists(&sidecar).map_err(|e| StoreError::io("removing", &sidecar, e))?;
        match fs::hard_link(&self.temp, &self.final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Lost a race with a concurrent upload of the same id.
                return match self.store.lookup(&self.host, &self.episode)? {
                    Existing::Present(d) if d == digest => {
                        self.store.confirm(&self.host)?;
                        Ok(Outcome::AlreadyPresent)
                    }
                    Existing::Present(d) => Ok(Outcome::Conflict(d)),
                    Existing::Absent => Err(StoreError::io("publishing", &self.final_path, e)),
                };
            }
            Err(e) => return Err(StoreError::io("publishing", &self.final_path, e)),
        }
        fault::point("recv.after_publish");
        fs::remove_file(&self.temp).map_err(|e| StoreError::io("removing", &self.temp, e))?;
        // Best effort: without a sidecar the next lookup hashes the file.
        let _ = write_sidecar(&sidecar, &digest, &self.final_path);
        sync_dir(&self.dir).map_err(|e| StoreError::io("syncing", &self.dir, e))?;
        fault::point("recv.after_dir_fsync");
        Ok(Outcome::Stored)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // After a successful link the temp is already gone; otherwise it is
        // an abandoned or rejected upload.
        let _ = fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cis490-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(store: &Store, host: &str, ep: &str, body: &[u8]) -> Outcome {
        let mut up = store.begin(host, ep).unwrap();
        up.write_all(body).unwrap();
        up.commit(&Sha256::digest(body).into()).unwrap()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn s1_store_present_conflict() {
        let root = tempdir("s1");
        let (store, _) = Store::open(&root).unwrap();
        assert_eq!(store.lookup("h", "e").unwrap(), Existing::Absent);
        assert_eq!(put(&store, "h", "e", b"one"), Outcome::Stored);
        let final_path = root.join("h/e.tar.zst");
        assert_eq!(fs::read(&final_path).unwrap(), b"one");
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        let d: [u8; 32] = Sha256::digest(b"one").into();
        assert_eq!(store.lookup("h", "e").unwrap(), Existing::Present(d));
        assert_eq!(put(&store, "h", "e", b"one"), Outcome::AlreadyPresent);
        assert_eq!(put(&store, "h", "e", b"two"), Outcome::Conflict(d));
        assert_eq!(fs::read(&final_path).unwrap(), b"one");
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn s7_sidecar_is_only_a_cache() {
        let root = tempdir("s7");
        let (store, _) = Store::open(&root).unwrap();
        put(&store, "h", "e", b"one");
        let sidecar = root.join("h/e.tar.zst.sha256");
        fs::remove_file(&sidecar).unwrap();
        let d: [u8; 32] = Sha256::digest(b"one").into();
        assert_eq!(store.lookup("h", "e").unwrap(), Existing::Present(d));
        assert!(sidecar.exists(), "rewritten after hashing");
        // A sidecar without its tarball describes nothing.
        fs::remove_file(root.join("h/e.tar.zst")).unwrap();
        assert_eq!(store.lookup("h", "e").unwrap(), Existing::Absent);
        assert_eq!(put(&store, "h", "e", b"two"), Outcome::Stored);
        let d2: [u8; 32] = Sha256::digest(b"two").into();
        assert_eq!(store.lookup("h", "e").unwrap(), Existing::Present(d2));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mismatch_and_abandon_leave_nothing() {
        let root = tempdir("mm");
        let (store, _) = Store::open(&root).unwrap();
        let mut up = store.begin("h", "e").unwrap();
        up.write_all(b"body").unwrap();
        assert!(matches!(
            up.commit(&[0; 32]).unwrap(),
            Outcome::DigestMismatch(_)
        ));
        let mut up = store.begin("h", "e").unwrap();
        up.write_all(b"half").unwrap();
        drop(up);
        assert!(listing(&root.join("h")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn write_errors_name_the_temp_and_keep_their_cause() {
        let root = tempdir("werr");
        let (store, _) = Store::open(&root).unwrap();
        let up = store.begin("h", "e").unwrap();
        let full = up.write_failed(io::Error::from_raw_os_error(28)); // ENOSPC
        assert_eq!(full.status(), Status::NoSpace);
        let eio = up.write_failed(io::Error::from_raw_os_error(5));
        assert_eq!(eio.status(), Status::Error);
        for e in [&full, &eio] {
            let text = e.to_string();
            assert!(text.contains("/h/.upload-e."), "{text}");
            assert!(std::error::Error::source(e).is_some(), "{text}");
        }
        drop(up);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn s3_stale_temps_removed_at_open_and_finals_kept() {
        let root = tempdir("s3");
        fs::create_dir_all(root.join("h")).unwrap();
        fs::write(root.join("h/.upload-e.1.0"), b"partial").unwrap();
        fs::write(root.join("h/x.tar.zst"), b"final").unwrap();
        let (_, removed) = Store::open(&root).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(listing(&root.join("h")), ["x.tar.zst"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn s8_host_dir_symlink_refused() {
        let root = tempdir("s8");
        let elsewhere = tempdir("s8-elsewhere");
        std::os::unix::fs::symlink(&elsewhere, root.join("h")).unwrap();
        let (store, _) = Store::open(&root).unwrap();
        assert!(matches!(
            store.begin("h", "e"),
            Err(StoreError::HostDirIsLink(_))
        ));
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn s2_concurrent_puts_one_winner() {
        let root = tempdir("s2");
        let (store, _) = Store::open(&root).unwrap();
        for round in 0..50 {
            let ep = format!("e{round}");
            let (a, b) = std::thread::scope(|s| {
                let ta = s.spawn(|| put(&store, "h", &ep, b"same"));
                let tb = s.spawn(|| {
                    put(
                        &store,
                        "h",
                        &ep,
                        if round % 2 == 0 { b"same" } else { b"diff" },
                    )
                });
                (ta.join().unwrap(), tb.join().unwrap())
            });
            let stored = [a, b].iter().filter(|o| **o == Outcome::Stored).count();
            assert_eq!(stored, 1, "round {round}: {a:?} {b:?}");
            let bytes = fs::read(root.join(format!("h/{ep}.tar.zst"))).unwrap();
            let winner_is_a = a == Outcome::Stored;
            let expect: &[u8] = if winner_is_a || round % 2 == 0 {
                b"same"
            } else {
                b"diff"
            };
            assert_eq!(bytes, expect);
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
