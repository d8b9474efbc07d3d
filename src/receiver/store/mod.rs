//! The receiver's store: `<store_dir>/<host_id>/<episode_id>.tar.zst`, each
//! published atomically, never replaced, and fsynced before it is reported;
//! and the *partials* of uploads not finished yet, which a cut connection
//! or a killed receiver leaves for the client to resume.
//!
//! ```text
//! begin:   mkdir host dir (fsync store_dir if new)
//!          PUT:   claim .partial-<id>.<sha256 hex>, truncate   (ids cannot start with '.')
//!                 (claimed by another connection: a private .upload-<id>.<pid>.<n> instead)
//!          PATCH: claim it (claimed: 409 upload_in_progress);
//!                 offset = its length, then fsync              (what survives a power cut)
//!          other digests' partials of the id: deleted          ("episode repacked")
//!          the host's oldest other partials: deleted while over max_partial_bytes_per_host
//! write:   body appended, hashed as it goes                    (a resumed upload: the
//!                                                              durable prefix re-read once,
//!                                                              unless this process hashed it)
//! pause:   PATCH with Upload-Complete: ?0: fsync -> 204 Upload-Offset
//! cut:     the partial stays (an empty one is deleted); the claim is released
//! commit:  digest == announced?  no -> delete the partial, 400
//!          fsync(partial)                                      (EIO -> delete it, 500, never retried)
//!          unlink stale <id>.tar.zst.sha256
//!          link(partial, <id>.tar.zst)                         (EEXIST -> compare: 200 or 409)
//!          unlink(partial); write <id>.tar.zst.sha256 via rename (not fsynced: a cache)
//!          fsync(host dir)                                     -> only now 201
//! sweep:   at start and every 10 s: partials untouched for partial_ttl_hours, over a
//!          host's max_partial_bytes_per_host (oldest first), or of an id already
//!          stored: deleted, each logged; a claimed partial never
//! ```
//! The `.sha256` sidecar (sha256sum format, so `sha256sum -c` works) is a
//! cache: the tarball is the truth. A tarball without a sidecar is hashed
//! once and the sidecar rewritten; a sidecar without its tarball is
//! ignored. A final name only ever appears through `link`, after the file
//! was fsynced and its whole sha256 checked, so it is never partial. At
//! start, `.upload-*` temps left by a crash are removed; partials are not
//! (the sweep bounds them).
//!
//! Claims (one appender per partial) live in this process's memory: a
//! partial's only writers are this receiver's connections, and a killed
//! receiver's claims die with it. Beside them the store remembers, per
//! partial, the `Upload-Length` a `PUT` announced and the sha256 state of
//! the bytes written so far, so a resume within one run re-reads nothing.
//!
//! With an object store configured (`s3_*`), `store_dir` is the spool:
//! everything above happens as written up to `commit`'s fsync, and then
//! the verified file is published to the bucket (`s3::store`) instead of
//! linked, and deleted; `lookup` asks the bucket. A failed publish keeps a
//! partial, complete and verified, for the next attempt to publish without
//! receiving its bytes again. Every framing ends in the same
//! `Pending::commit_with`: a `PUT`'s body of known length, a `PATCH`
//! that completes a partial, and a streamed (chunked) `PUT`'s partial once
//! its trailer's digest is verified.
//!
//! This module owns the files and their order of operations; it does not
//! know HTTP (which answer a [`StoreError`] or [`Outcome`] earns is
//! `answer`'s business, apart from [`StoreError::status`]).
//!
//! Its parts: this file opens the store, looks ids up, and begins, claims
//! and measures uploads (`begin`, `begin_upload`, `offset`, `resume`);
//! `pending` is one upload being written and every way it ends (`pause`,
//! `keep`, a cut, `commit` and its publish); `sweep` is what bounds the
//! partials left behind (the TTL, the per-host cap, ids already stored).

mod pending;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::fsutil::{self, sync_dir};
use crate::hashing::{self, to_hex};
use crate::protocol::Status;
use crate::receiver::admit::Held;
use crate::s3::api::S3Error;
use crate::s3::store::{Found, S3Store};
use crate::{ids, info};

use pending::Appender;
pub use pending::{Pending, Resume};
pub use sweep::{doomed, oldest_over, Bounds, Candidate, Why};

const TEMP_PREFIX: &str = ".upload-";
pub const PARTIAL_PREFIX: &str = ".partial-";

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
    /// 503 (500 when this machine's spool is at fault): the object store.
    ObjectStore(S3Error),
}

impl StoreError {
    /// What the client is told: 507 for a full store (the shipper stops
    /// its pass and retries later), 500 for the rest.
    pub fn status(&self) -> Status {
        match self {
            StoreError::NoSpace(..) => Status::NoSpace,
            StoreError::ObjectStore(e) => e.answer_status(),
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
            StoreError::ObjectStore(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::NoSpace(_, _, e) | StoreError::Io(_, _, e) => Some(e),
            StoreError::HostDirIsLink(_) => None,
            StoreError::ObjectStore(e) => Some(e),
        }
    }
}

/// Why an append could not start.
#[derive(Debug)]
pub enum ResumeError {
    /// Another connection is appending to this partial right now.
    Busy,
    Store(StoreError),
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
    /// The body is not the one announced: its actual digest.
    DigestMismatch([u8; 32]),
}

/// Which upload of an id a partial holds: the one whose whole tarball has
/// this sha256 (`Repr-Digest`, or a `PUT`'s `Content-Digest`), or the one a
/// client named with an `Upload-Key` because it did not know the digest yet
/// when it began (a streamed `PUT`, and the `HEAD` and `PATCH` resuming it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialName {
    Digest([u8; 32]),
    Key([u8; 16]),
}

impl PartialName {
    /// The last part of the file name: 64 hex digits for a digest, `k` and
    /// 32 for a key. The two can never be equal (lengths differ, and `k` is
    /// not a hex digit), so a key never names a digest's partial.
    fn suffix(&self) -> String {
        match self {
            PartialName::Digest(d) => to_hex(d),
            PartialName::Key(k) => format!("k{}", to_hex(k)),
        }
    }
}

/// `.partial-<id>.<sha256 hex>` or `.partial-<id>.k<key hex>`.
fn partial_name(episode: &str, name: &PartialName) -> String {
    format!("{PARTIAL_PREFIX}{episode}.{}", name.suffix())
}

/// The id and the suffix (a digest's hex, or `k` and a key's) of a
/// partial's name, if it is one of ours.
fn parse_partial(name: &str) -> Option<(&str, &str)> {
    let (episode, suffix) = name.strip_prefix(PARTIAL_PREFIX)?.rsplit_once('.')?;
    let hex =
        |h: &str, len| h.len() == len && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ours = match suffix.strip_prefix('k') {
        Some(key) => hex(key, 32),
        None => hex(suffix, 64),
    };
    (ours && ids::is_valid(episode)).then_some((episode, suffix))
}

/// What the store remembers of a partial between the requests that write it.
#[derive(Clone, Default)]
struct Known {
    /// `Upload-Length`: the `Content-Length` of the `PUT` that began it.
    length: Option<u64>,
    /// The sha256 state over the file's first bytes as this process wrote
    /// them; valid while the file is the same inode of the same length.
    hashed: Option<Hashed>,
}

#[derive(Clone)]
struct Hashed {
    ino: u64,
    len: u64,
    state: Sha256,
}

#[derive(Default)]
struct Partials {
    /// Claimed by a connection (appended to right now).
    busy: HashSet<PathBuf>,
    known: HashMap<PathBuf, Known>,
}

pub struct Store {
    root: PathBuf,
    bounds: Bounds,
    partials: Mutex<Partials>,
    /// Where uploads are published (`s3_*`); `None`: `root` itself.
    s3: Option<S3Store>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The right to write one partial, held by one connection at a time;
/// released when dropped.
struct Claim<'a> {
    store: &'a Store,
    path: PathBuf,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.partials().busy.remove(&self.path);
    }
}

impl Store {
    /// Opens (creating if needed) the store and removes temps left by a crash.
    pub fn open(root: &Path) -> Result<(Store, usize), StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("creating store", root, e))?;
        let store = Store {
            root: root.to_owned(),
            bounds: Bounds::default(),
            partials: Mutex::new(Partials::default()),
            s3: None,
        };
        let removed = store.remove_stale_temps()?;
        Ok((store, removed))
    }

    /// Sets what the sweep and a beginning upload keep of partials.
    pub fn bound(mut self, bounds: Bounds) -> Store {
        self.bounds = bounds;
        self
    }

    /// Publishes to an object store from now on; `root` is the spool.
    pub fn publish_to(mut self, s3: S3Store) -> Store {
        self.s3 = Some(s3);
        self
    }

    /// The object store uploads are published to, if any.
    pub fn s3(&self) -> Option<&S3Store> {
        self.s3.as_ref()
    }

    /// The claims and memory of partials. A panic elsewhere while it was
    /// held leaves plain sets behind, still consistent: go on with them.
    fn partials(&self) -> MutexGuard<'_, Partials> {
        self.partials.lock().unwrap_or_else(|p| p.into_inner())
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

    fn partial_path(&self, host: &str, episode: &str, name: &PartialName) -> PathBuf {
        self.root.join(host).join(partial_name(episode, name))
    }

    fn sidecar_path(final_path: &Path) -> PathBuf {
        let mut s = final_path.as_os_str().to_owned();
        s.push(".sha256");
        PathBuf::from(s)
    }

    /// What is stored under an id, from the sidecar or, failing that, by
    /// hashing the tarball once (and rewriting the sidecar).
    pub fn lookup(&self, host: &str, episode: &str) -> Result<Existing, StoreError> {
        if let Some(s3) = &self.s3 {
            return match s3.lookup(host, episode).map_err(StoreError::ObjectStore)? {
                Found::Absent => Ok(Existing::Absent),
                Found::Present { digest, .. } => Ok(Existing::Present(digest)),
            };
        }
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

    /// The length of a stored tarball (a `HEAD` of a finished upload).
    pub fn stored_len(&self, host: &str, episode: &str) -> Result<u64, StoreError> {
        if let Some(s3) = &self.s3 {
            return match s3.lookup(host, episode).map_err(StoreError::ObjectStore)? {
                Found::Present { length, .. } => Ok(length),
                Found::Absent => Err(StoreError::io(
                    "looking up",
                    Path::new(&s3.name_key(host, episode)),
                    io::ErrorKind::NotFound.into(),
                )),
            };
        }
        let final_path = self.final_path(host, episode);
        fs::metadata(&final_path)
            .map(|m| m.len())
            .map_err(|e| StoreError::io("checking", &final_path, e))
    }

    /// Makes what `lookup` found durable before it is acknowledged: after a
    /// crash between a link and its directory fsync, the name exists in the
    /// page cache only, and a 200 for it would be a promise a power cut can
    /// break. Also the retry point after a failed directory fsync.
    pub fn confirm(&self, host: &str) -> Result<(), StoreError> {
        if self.s3.is_some() {
            // What the object store reported, it had acknowledged.
            return Ok(());
        }
        let dir = self.root.join(host);
        sync_dir(&dir).map_err(|e| StoreError::io("syncing", &dir, e))
    }

    /// The host's directory, made if missing; never through a symlink.
    fn host_dir(&self, host: &str) -> Result<PathBuf, StoreError> {
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
        Ok(dir)
    }

    /// Starts an upload in a private temp file in the host's directory
    /// (same file system as the final name, so `link` can publish it),
    /// removed however the upload ends. What a `PUT` writes to when
    /// another connection is writing the partial of the same bytes.
    pub fn begin(&self, host: &str, episode: &str) -> Result<Pending<'_>, StoreError> {
        let dir = self.host_dir(host)?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{episode}.{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StoreError::io("creating", &temp, e))?;
        Ok(Pending {
            writer: Some(Appender::new(file, 0, Some(Sha256::new()))),
            final_path: self.final_path(host, episode),
            dir,
            path: temp,
            store: self,
            host: host.to_owned(),
            episode: episode.to_owned(),
            partial: false,
            ino: 0,
            _claim: None,
        })
    }

    /// Starts a `PUT` into the partial `name` (its digest, or the key of a
    /// streamed upload), from byte 0 (what an earlier attempt left is
    /// overwritten). `length`: the body's, when the request says it (a
    /// chunked body's is known only at its end). If another connection is
    /// writing that partial, into a private temp instead: a `PUT` carries
    /// the whole upload, and waiting or refusing would turn two identical
    /// uploads into a failure (S2).
    pub fn begin_upload(
        &self,
        host: &str,
        episode: &str,
        name: &PartialName,
        length: Option<u64>,
    ) -> Result<Pending<'_>, StoreError> {
        let dir = self.host_dir(host)?;
        self.drop_others(host, episode, name);
        let path = self.partial_path(host, episode, name);
        let Some(claim) = self.claim(&path) else {
            info!("{host}/{episode}: another connection is uploading these bytes; this PUT goes to a temp file");
            return self.begin(host, episode);
        };
        // A length not known yet makes room only for what is there: the
        // sweep (every 10 s) keeps the host under its cap as this grows.
        self.make_room(host, &path, length.unwrap_or(0));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating", &path, e))?;
        let ino = file
            .metadata()
            .map_err(|e| StoreError::io("checking", &path, e))?
            .ino();
        self.partials().known.insert(
            path.clone(),
            Known {
                length,
                hashed: None,
            },
        );
        Ok(Pending {
            writer: Some(Appender::new(file, 0, Some(Sha256::new()))),
            final_path: self.final_path(host, episode),
            dir,
            path,
            store: self,
            host: host.to_owned(),
            episode: episode.to_owned(),
            partial: true,
            ino,
            _claim: Some(claim),
        })
    }

    /// Claims a partial for this connection, or `None` if another holds it.
    fn claim(&self, path: &Path) -> Option<Claim<'_>> {
        self.partials().busy.insert(path.to_owned()).then(|| Claim {
            store: self,
            path: path.to_owned(),
        })
    }

    /// The durable length of an open partial: its length, then an fsync,
    /// so the number reported never exceeds what survives a power cut. A
    /// failed fsync is never retried (`fsutil`): the partial is deleted.
    /// `owned`: the caller holds its claim; else it is deleted only if no
    /// one does.
    fn durable_len(&self, file: &File, path: &Path, owned: bool) -> Result<(u64, u64), StoreError> {
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("checking", path, e))?;
        if let Err(e) = fsutil::sync_file(file) {
            let mut partials = self.partials();
            if owned || !partials.busy.contains(path) {
                let _ = fs::remove_file(path);
                partials.known.remove(path);
            }
            return Err(StoreError::io("syncing", path, e));
        }
        Ok((meta.len(), meta.ino()))
    }

    /// `HEAD`: how much of the upload `name` the store holds durably, and
    /// its whole length if known. The id's other partials go.
    pub fn offset(
        &self,
        host: &str,
        episode: &str,
        name: &PartialName,
    ) -> Result<Held, StoreError> {
        let dir = self.root.join(host);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Err(StoreError::HostDirIsLink(dir)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Held {
                    offset: 0,
                    length: None,
                })
            }
            Err(e) => return Err(StoreError::io("checking", &dir, e)),
        }
        self.drop_others(host, episode, name);
        let path = self.partial_path(host, episode, name);
        // fsync needs a descriptor, not write access.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Held {
                    offset: 0,
                    length: None,
                })
            }
            Err(e) => return Err(StoreError::io("opening", &path, e)),
        };
        let (offset, _) = self.durable_len(&file, &path, false)?;
        let length = self.partials().known.get(&path).and_then(|k| k.length);
        Ok(Held { offset, length })
    }

    /// `PATCH`: claims the partial `name` and reads its durable length, for
    /// `admit::against_partial` to check the request against; then
    /// [`Resume::start`] appends.
    pub fn resume(
        &self,
        host: &str,
        episode: &str,
        name: &PartialName,
    ) -> Result<Resume<'_>, ResumeError> {
        let dir = self.host_dir(host).map_err(ResumeError::Store)?;
        self.drop_others(host, episode, name);
        let path = self.partial_path(host, episode, name);
        let claim = self.claim(&path).ok_or(ResumeError::Busy)?;
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ResumeError::Store(StoreError::io("opening", &path, e))),
        };
        let (offset, ino) = match &file {
            Some(f) => self
                .durable_len(f, &path, true)
                .map_err(ResumeError::Store)?,
            None => (0, 0),
        };
        let known = self
            .partials()
            .known
            .get(&path)
            .cloned()
            .unwrap_or_default();
        Ok(Resume {
            store: self,
            claim,
            file,
            dir,
            host: host.to_owned(),
            episode: episode.to_owned(),
            held: Held {
                offset,
                length: known.length,
            },
            ino,
            hashed: known.hashed.filter(|h| h.ino == ino && h.len == offset),
        })
    }

    /// Deletes a partial now (not claimed: the caller holds its claim, or
    /// it failed), and forgets it.
    fn remove_partial(&self, path: &Path) {
        let _ = fs::remove_file(path);
        self.partials().known.remove(path);
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
    // Not fsynced (one fsync less per upload): the sidecar is a cache, and
    // what a power cut can leave of it (nothing, or zeros) is no digest, so
    // `read_sidecar` rejects it and `lookup` hashes the tarball. In
    // `commit` the host directory's fsync that follows makes its name as
    // durable as the tarball's.
    fsutil::write_cache(&tmp, path, hashing::sidecar_line(digest, &name).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    pub(super) fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cis490-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub(super) fn put(store: &Store, host: &str, ep: &str, body: &[u8]) -> Outcome {
        let mut up = store.begin(host, ep).unwrap();
        up.write_all(body).unwrap();
        up.commit(&Sha256::digest(body).into()).unwrap()
    }

    pub(super) fn listing(dir: &Path) -> Vec<String> {
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
    fn partial_names() {
        let d = [0xab; 32];
        let name = partial_name("ep.1", &PartialName::Digest(d));
        assert_eq!(name, format!(".partial-ep.1.{}", "ab".repeat(32)));
        assert_eq!(
            parse_partial(&name),
            Some(("ep.1", "ab".repeat(32).as_str()))
        );
        for not_ours in [
            ".upload-e.1.0",
            ".partial-e",
            ".partial-e.abc",
            &format!(".partial-.{}", "ab".repeat(32)),
            &format!(".partial-e.{}", "AB".repeat(32)),
            &format!("e.{}", "ab".repeat(32)),
            &format!(".partial-e.k{}", "ab".repeat(15)),
            &format!(".partial-e.k{}", "ab".repeat(17)),
            &format!(".partial-e.K{}", "ab".repeat(16)),
            &format!(".partial-e.k{}", "AB".repeat(16)),
            &format!(".partial-e.k{}", "ab".repeat(32)),
        ] {
            assert_eq!(parse_partial(not_ours), None, "{not_ours}");
        }
        // A keyed partial: `k` and 32 hex digits, never a digest's name,
        // even for an id that ends like one.
        let k = [0xcd; 16];
        let keyed = partial_name("ep.1", &PartialName::Key(k));
        assert_eq!(keyed, format!(".partial-ep.1.k{}", "cd".repeat(16)));
        let suffix = format!("k{}", "cd".repeat(16));
        assert_eq!(parse_partial(&keyed), Some(("ep.1", suffix.as_str())));
        let tricky = format!("ep.k{}", "ab".repeat(16));
        assert_ne!(
            partial_name(&tricky, &PartialName::Digest(d)),
            partial_name("ep", &PartialName::Key([0xab; 16]))
        );
        assert_eq!(
            parse_partial(&partial_name(&tricky, &PartialName::Key(k))),
            Some((tricky.as_str(), suffix.as_str()))
        );
    }
}
