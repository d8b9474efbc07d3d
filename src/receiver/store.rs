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
//! This module owns the files and their order of operations; it does not
//! know HTTP (which answer a [`StoreError`] or [`Outcome`] earns is
//! `answer`'s business, apart from [`StoreError::status`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fsutil::{self, sync_dir};
use crate::hashing::{self, to_hex};
use crate::protocol::Status;
use crate::receiver::admit::Held;
use crate::{fault, ids, info};

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

/// How much of unfinished uploads the store keeps (`partial_ttl_hours`,
/// `max_partial_bytes_per_host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// A partial untouched for longer is deleted.
    pub ttl: Duration,
    /// A host's partials together stay under this, oldest deleted first.
    pub per_host: u64,
}

impl Default for Bounds {
    /// 72 hours, and no cap (the configuration always sets one).
    fn default() -> Bounds {
        Bounds {
            ttl: Duration::from_secs(72 * 3600),
            per_host: u64::MAX,
        }
    }
}

/// Why a partial is deleted; the log line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Untouched for longer than `partial_ttl_hours`.
    Expired(Duration),
    /// The host's partials are over `max_partial_bytes_per_host`.
    OverCap(u64),
    /// The id is stored (these bytes or others): it can never be published.
    Stored,
    /// A request named another digest or key for the id: the episode was
    /// packed again (or a pack was cut and begun anew).
    Repacked,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Expired(ttl) => write!(
                f,
                "untouched for more than partial_ttl_hours ({})",
                ttl.as_secs() / 3600
            ),
            Why::OverCap(cap) => write!(
                f,
                "the host's partial uploads exceed max_partial_bytes_per_host ({cap}); oldest first"
            ),
            Why::Stored => write!(f, "the episode is already stored"),
            Why::Repacked => write!(
                f,
                "episode repacked: another digest or upload key was announced for it"
            ),
        }
    }
}

/// One partial as the sweep sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub size: u64,
    /// Since it was last written.
    pub age: Duration,
    /// Claimed by a connection: never deleted.
    pub busy: bool,
    /// Its id has a final (`<id>.tar.zst`).
    pub stored: bool,
}

/// Which partials the sweep deletes, and why (pure; table-tested): those of
/// a stored id, those untouched for longer than the TTL, then per host the
/// oldest while the host's total is over the cap. Claimed ones count
/// toward their host's total but are never chosen.
pub fn doomed(cands: &[Candidate], bounds: Bounds) -> Vec<(usize, Why)> {
    let mut out = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if c.busy {
            continue;
        }
        if c.stored {
            out.push((i, Why::Stored));
        } else if c.age > bounds.ttl {
            out.push((i, Why::Expired(bounds.ttl)));
        }
    }
    let mut hosts: Vec<&str> = cands.iter().map(|c| c.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let left: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].host == host && !out.iter().any(|(j, _)| *j == i))
            .collect();
        let parts: Vec<(u64, Duration, bool)> = left
            .iter()
            .map(|&i| (cands[i].size, cands[i].age, !cands[i].busy))
            .collect();
        for k in oldest_over(&parts, 0, bounds.per_host) {
            out.push((left[k], Why::OverCap(bounds.per_host)));
        }
    }
    out
}

/// Which of `parts` (size, age, deletable) to delete, oldest first, so that
/// their total plus `extra` bytes about to be written fits `cap` (pure).
/// Undeletable ones count but are skipped; if they alone exceed the cap,
/// every deletable one goes and the total stays over it.
pub fn oldest_over(parts: &[(u64, Duration, bool)], extra: u64, cap: u64) -> Vec<usize> {
    let mut total = parts
        .iter()
        .fold(extra, |t, (size, _, _)| t.saturating_add(*size));
    let mut order: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].2).collect();
    // Oldest first: the largest age.
    order.sort_by(|&a, &b| parts[b].1.cmp(&parts[a].1));
    let mut out = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        total -= parts[i].0;
        out.push(i);
    }
    out
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

/// A partial on disk.
struct PartialFile {
    path: PathBuf,
    episode: String,
    /// What names it: a digest's hex, or `k` and a key's.
    suffix: String,
    size: u64,
    modified: SystemTime,
}

impl PartialFile {
    /// "sha256 <hex>" or "key <hex>", for the log.
    fn named(&self) -> String {
        match self.suffix.strip_prefix('k') {
            Some(key) => format!("key {key}"),
            None => format!("sha256 {}", self.suffix),
        }
    }
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
        };
        let removed = store.remove_stale_temps()?;
        Ok((store, removed))
    }

    /// Sets what the sweep and a beginning upload keep of partials.
    pub fn bound(mut self, bounds: Bounds) -> Store {
        self.bounds = bounds;
        self
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

    /// The partials in a host's directory.
    fn list_partials(&self, host: &str) -> Vec<PartialFile> {
        let mut out = Vec::new();
        for f in fs::read_dir(self.root.join(host))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name();
            let Some((episode, suffix)) = name.to_str().and_then(parse_partial) else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(PartialFile {
                path: f.path(),
                episode: episode.to_owned(),
                suffix: suffix.to_owned(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out
    }

    /// Deletes a partial unless it is claimed, and logs it; `still` is
    /// asked again under the claims' lock (the file may have been written
    /// since it was listed). Whether it went.
    fn delete(&self, host: &str, p: &PartialFile, why: &Why, now: SystemTime) -> bool {
        let mut partials = self.partials();
        if partials.busy.contains(&p.path) {
            return false;
        }
        if let Why::Expired(ttl) = why {
            let fresh = fs::metadata(&p.path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() <= *ttl);
            if fresh {
                return false;
            }
        }
        match fs::remove_file(&p.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                crate::warn!("cannot delete partial upload {}: {e}", p.path.display());
                return false;
            }
        }
        partials.known.remove(&p.path);
        drop(partials);
        info!(
            "deleted partial upload {host}/{} ({} bytes, {}): {why}",
            p.episode,
            p.size,
            p.named()
        );
        true
    }

    /// A request named the upload `name` of the id: the episode was packed
    /// again (another digest), or a stream begun anew (another key), so
    /// the id's other partials can never complete. Claimed ones stay.
    fn drop_others(&self, host: &str, episode: &str, name: &PartialName) {
        let ours = name.suffix();
        let now = SystemTime::now();
        for p in self.list_partials(host) {
            if p.episode == episode && p.suffix != ours {
                self.delete(host, &p, &Why::Repacked, now);
            }
        }
    }

    /// The id is stored: its partials can never be published.
    pub fn drop_partials_of(&self, host: &str, episode: &str) {
        let now = SystemTime::now();
        for p in self.list_partials(host) {
            if p.episode == episode {
                self.delete(host, &p, &Why::Stored, now);
            }
        }
    }

    /// Before `incoming` bytes go into `path`: the host's oldest other
    /// partials are deleted while the host is over its cap.
    fn make_room(&self, host: &str, path: &Path, incoming: u64) {
        let now = SystemTime::now();
        let others: Vec<PartialFile> = self
            .list_partials(host)
            .into_iter()
            .filter(|p| p.path != path)
            .collect();
        let busy = self.partials().busy.clone();
        let parts: Vec<(u64, Duration, bool)> = others
            .iter()
            .map(|p| (p.size, age(now, p.modified), !busy.contains(&p.path)))
            .collect();
        for i in oldest_over(&parts, incoming, self.bounds.per_host) {
            self.delete(host, &others[i], &Why::OverCap(self.bounds.per_host), now);
        }
    }

    /// Enforces `partial_ttl_hours` and `max_partial_bytes_per_host` over
    /// the whole store, and deletes partials of stored ids (a crash between
    /// a publish and the partial's unlink). Returns how many went.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut files: Vec<(String, PartialFile)> = Vec::new();
        let mut cands = Vec::new();
        for host in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let Some(name) = host.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !ids::is_valid(&name) || !host.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for p in self.list_partials(&name) {
                let busy = self.partials().busy.contains(&p.path);
                cands.push(Candidate {
                    host: name.clone(),
                    size: p.size,
                    age: age(now, p.modified),
                    busy,
                    stored: self.final_path(&name, &p.episode).exists(),
                });
                files.push((name.clone(), p));
            }
        }
        let mut deleted = 0;
        for (i, why) in doomed(&cands, self.bounds) {
            let (host, p) = &files[i];
            deleted += usize::from(self.delete(host, p, &why, now));
        }
        // What is remembered of partials that are gone (deleted by hand).
        self.partials().known.retain(|path, _| path.exists());
        deleted
    }
}

fn age(now: SystemTime, modified: SystemTime) -> Duration {
    now.duration_since(modified).unwrap_or_default()
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

/// sha256 of a file's first `len` bytes (a resumed upload's durable prefix).
fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; crate::IO_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = chunk
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut chunk[..n], at)?;
        hasher.update(&chunk[..n]);
        at += n as u64;
    }
    Ok(hasher)
}

/// An append that passed `admit::request`, with its partial claimed and
/// its durable length read; [`Resume::start`] once the request has been
/// checked against it. Dropped without starting: the claim is released and
/// nothing changes.
pub struct Resume<'a> {
    store: &'a Store,
    claim: Claim<'a>,
    file: Option<File>,
    dir: PathBuf,
    host: String,
    episode: String,
    held: Held,
    ino: u64,
    hashed: Option<Hashed>,
}

impl<'a> Resume<'a> {
    /// What the store holds of this upload.
    pub fn held(&self) -> Held {
        self.held
    }

    /// Starts appending bytes that will bring the upload to `end` bytes.
    /// The sha256 of what is there is carried on from this process's last
    /// write if it has it; else, if these bytes `complete` the upload, the
    /// durable prefix is read back once now; else hashing waits for the
    /// append that completes it.
    pub fn start(self, end: u64, complete: bool) -> Result<Pending<'a>, StoreError> {
        let path = self.claim.path.clone();
        self.store.make_room(&self.host, &path, end);
        let file = match self.file {
            Some(f) => f,
            None => OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| StoreError::io("creating", &path, e))?,
        };
        let ino = file
            .metadata()
            .map_err(|e| StoreError::io("checking", &path, e))?
            .ino();
        let offset = self.held.offset;
        let state = match self.hashed {
            Some(h) if h.ino == ino => Some(h.state),
            _ if offset == 0 => Some(Sha256::new()),
            _ if complete => {
                Some(hash_prefix(&file, offset).map_err(|e| StoreError::io("reading", &path, e))?)
            }
            _ => None,
        };
        debug_assert!(self.ino == 0 || self.ino == ino);
        Ok(Pending {
            writer: Some(Appender::new(file, offset, state)),
            final_path: self.store.final_path(&self.host, &self.episode),
            dir: self.dir,
            path,
            store: self.store,
            host: self.host,
            episode: self.episode,
            partial: true,
            ino,
            _claim: Some(self.claim),
        })
    }
}

/// Appends to a file, hashing what it accepted (when the hash of what was
/// there before is known) and counting the file's length.
struct Appender {
    file: File,
    hasher: Option<Sha256>,
    len: u64,
}

impl Appender {
    fn new(file: File, len: u64, hasher: Option<Sha256>) -> Appender {
        Appender { file, hasher, len }
    }
}

impl Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        // Only what the file accepted (`n <= buf.len()`, the `Write`
        // contract), so the hash describes exactly the bytes on disk.
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An upload in progress: its partial (or temp), hashed as it is written.
/// Dropped without `commit` or `pause`: a temp is removed; a partial stays
/// for the client to resume (unless it is empty: nothing to resume), and
/// the hash of its bytes is remembered. A kill -9 leaves either as it is.
pub struct Pending<'a> {
    writer: Option<Appender>,
    path: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    store: &'a Store,
    host: String,
    episode: String,
    /// A partial (else a private temp).
    partial: bool,
    ino: u64,
    /// A partial's claim; released when this is dropped, after `drop`.
    _claim: Option<Claim<'a>>,
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
    /// A failed write of body bytes into the file, as a store error that
    /// names it (`Write` can only return an `io::Error`).
    pub fn write_failed(&self, e: io::Error) -> StoreError {
        StoreError::io("writing", &self.path, e)
    }

    /// The file's length so far.
    pub fn len(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.len)
    }

    /// Whether nothing has been written to the file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether, dropped now, it would leave bytes for a resume.
    pub fn is_resumable(&self) -> bool {
        self.partial && self.writer.is_some() && !self.is_empty()
    }

    /// This upload's bytes can never be published: a partial goes now.
    fn discard(&mut self) {
        if self.partial {
            self.store.remove_partial(&self.path);
        }
    }

    /// The request was refused after its bytes were written (a chunked
    /// body's framing, its size, or the digest fields at its end): what it
    /// sent is not an upload to resume, so a partial goes now, as a temp
    /// does. Only a body cut short (`drop`) keeps its partial.
    pub fn abandon(mut self) {
        self.writer = None;
        self.discard();
    }

    /// An append that does not complete the upload has ended: fsync, then
    /// the durable length (the 204's `Upload-Offset`). A failed fsync
    /// deletes the partial (never retried).
    pub fn pause(mut self) -> Result<u64, StoreError> {
        let Some(w) = &self.writer else {
            return Err(StoreError::io(
                "pausing",
                &self.path,
                io::Error::other("already finished"),
            ));
        };
        if let Err(e) = fsutil::sync_file(&w.file) {
            self.writer = None;
            self.discard();
            return Err(StoreError::io("syncing", &self.path, e));
        }
        Ok(self.len())
    }

    /// A streamed upload whose body ended with no digest anywhere
    /// (`digest_missing`): a partial is made durable (fsync) and kept, its
    /// length recorded as the upload's whole length (`Upload-Length`), for
    /// an empty completing `PATCH`; the sha256 of its bytes is remembered
    /// as for a cut, so that `PATCH` re-reads nothing in this run. Returns
    /// the length kept, or `None` for a temp or an empty file (not kept:
    /// removed when dropped). A failed fsync deletes the partial (never
    /// retried).
    pub fn keep(self) -> Result<Option<u64>, StoreError> {
        if !self.partial || self.writer.is_none() || self.is_empty() {
            return Ok(None);
        }
        let len = self.len();
        self.store
            .partials()
            .known
            .entry(self.path.clone())
            .or_default()
            .length = Some(len);
        self.pause().map(Some)
    }

    /// Publishes the upload if its whole sha256 is `expected` (see the
    /// module doc for the order of steps). Afterwards the temp or partial
    /// is gone, except after a storage error that may pass (ENOSPC on the
    /// sidecar or directory: then the partial stays, resumable).
    pub fn commit(mut self, expected: &[u8; 32]) -> Result<Outcome, StoreError> {
        let Some(writer) = self.writer.take() else {
            return Err(StoreError::io(
                "committing",
                &self.path,
                io::Error::other("already committed"),
            ));
        };
        let Appender { file, hasher, len } = writer;
        // A partial appended to without its prefix's hash (after an append
        // with Upload-Complete: ?0 in another run): read it all back once.
        let hasher = match hasher {
            Some(h) => h,
            None => {
                hash_prefix(&file, len).map_err(|e| StoreError::io("reading", &self.path, e))?
            }
        };
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != *expected {
            self.discard();
            return Ok(Outcome::DigestMismatch(digest));
        }
        if let Err(e) = fsutil::sync_file(&file) {
            self.discard();
            return Err(StoreError::io("syncing", &self.path, e));
        }
        drop(file);
        fault::point("recv.after_tmp_fsync");
        let sidecar = Store::sidecar_path(&self.final_path);
        // A sidecar whose tarball is gone (an operator deleted it) must not
        // describe the new tarball, even for an instant.
        fsutil::remove_if_exists(&sidecar).map_err(|e| StoreError::io("removing", &sidecar, e))?;
        match fs::hard_link(&self.path, &self.final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Lost a race with a concurrent upload of the same id.
                let found = self.store.lookup(&self.host, &self.episode);
                self.discard();
                return match found? {
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
        fs::remove_file(&self.path).map_err(|e| StoreError::io("removing", &self.path, e))?;
        // Published: nothing of it is left to resume or remember.
        self.store.partials().known.remove(&self.path);
        // Best effort: without a sidecar the next lookup hashes the file.
        let _ = write_sidecar(&sidecar, &digest, &self.final_path);
        sync_dir(&self.dir).map_err(|e| StoreError::io("syncing", &self.dir, e))?;
        fault::point("recv.after_dir_fsync");
        Ok(Outcome::Stored)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.partial {
            // A temp: an abandoned or rejected upload (after a successful
            // link it is already gone).
            let _ = fs::remove_file(&self.path);
            return;
        }
        // Still writing: a partial cut off (or refused by the disk). It
        // stays for the client to resume, with the hash of its bytes
        // remembered; an empty one holds nothing to resume. (Committed,
        // paused or discarded ones have no writer left, or need nothing.)
        // The claim is released after this, as the last field dropped.
        let Some(w) = self.writer.take() else {
            return;
        };
        if w.len == 0 {
            self.store.remove_partial(&self.path);
            return;
        }
        let mut partials = self.store.partials();
        let known = partials.known.entry(self.path.clone()).or_default();
        known.hashed = w.hasher.map(|state| Hashed {
            ino: self.ino,
            len: w.len,
            state,
        });
    }
}
#[cfg(test)]
mod tests {
    use super::PartialName as P;
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

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
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

    /// The sweep's choice, as a table: (host, size, age h, busy, stored).
    #[test]
    fn what_the_sweep_deletes() {
        let c = |host: &str, size, age, busy, stored| Candidate {
            host: host.into(),
            size,
            age: hours(age),
            busy,
            stored,
        };
        let bounds = Bounds {
            ttl: hours(72),
            per_host: 100,
        };
        let cands = vec![
            c("a", 10, 80, false, false), // 0: expired
            c("a", 10, 80, true, false),  // 1: expired, but claimed
            c("a", 10, 1, false, true),   // 2: stored
            c("b", 60, 5, false, false),  // 3: b's oldest: over the cap
            c("b", 60, 2, false, false),  // 4: b's newest: kept
            c("c", 90, 9, true, false),   // 5: claimed, over alone with 6
            c("c", 20, 1, false, false),  // 6: the only deletable of c
        ];
        let mut got = doomed(&cands, bounds);
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(
            got,
            vec![
                (0, Why::Expired(hours(72))),
                (2, Why::Stored),
                (3, Why::OverCap(100)),
                (6, Why::OverCap(100)),
            ]
        );
        assert!(doomed(&cands, Bounds::default())
            .iter()
            .all(|(_, w)| !matches!(w, Why::OverCap(_))));
    }

    #[test]
    fn room_for_an_upload_oldest_first() {
        // (size, age, deletable)
        let parts = [
            (40, hours(3), true),
            (40, hours(9), true),
            (40, hours(1), false),
        ];
        assert_eq!(oldest_over(&parts, 0, 200), Vec::<usize>::new());
        assert_eq!(
            oldest_over(&parts, 80, 200),
            Vec::<usize>::new(),
            "fits exactly"
        );
        assert_eq!(oldest_over(&parts, 81, 200), vec![1]);
        assert_eq!(oldest_over(&parts, 120, 200), vec![1]);
        assert_eq!(oldest_over(&parts, 121, 200), vec![1, 0]);
        assert_eq!(
            oldest_over(&parts, 500, 200),
            vec![1, 0],
            "never the claimed one"
        );
        assert_eq!(oldest_over(&parts, 0, u64::MAX), Vec::<usize>::new());
    }

    /// A partial's life in one process: cut (kept, with its hash), offset,
    /// resumed without re-reading, refused while claimed, completed.
    #[test]
    fn a_partial_is_kept_resumed_and_published() {
        let root = tempdir("partial");
        let (store, _) = Store::open(&root).unwrap();
        let body = b"0123456789abcdef";
        let d: [u8; 32] = Sha256::digest(body).into();
        let mut up = store
            .begin_upload("h", "e", &P::Digest(d), Some(16))
            .unwrap();
        up.write_all(&body[..6]).unwrap();
        assert!(up.is_resumable());
        drop(up); // cut
        let partial = root.join(format!("h/.partial-e.{}", to_hex(&d)));
        assert_eq!(fs::read(&partial).unwrap(), &body[..6]);
        assert_eq!(
            store.offset("h", "e", &P::Digest(d)).unwrap(),
            Held {
                offset: 6,
                length: Some(16)
            }
        );
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert!(r.hashed.is_some(), "this process hashed the prefix");
        assert!(matches!(
            store.resume("h", "e", &P::Digest(d)),
            Err(ResumeError::Busy)
        ));
        let mut up = r.start(10, false).unwrap();
        up.write_all(&body[6..10]).unwrap();
        assert_eq!(up.pause().unwrap(), 10);
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert_eq!(r.held().offset, 10);
        let mut up = r.start(16, true).unwrap();
        up.write_all(&body[10..]).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        assert_eq!(fs::read(root.join("h/e.tar.zst")).unwrap(), body);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A new store (a restart) has no hash state: the prefix is read back.
    #[test]
    fn a_resume_in_a_new_process_reads_the_prefix() {
        let root = tempdir("prefix");
        let body = b"resumed after a restart";
        let d: [u8; 32] = Sha256::digest(body).into();
        {
            let (store, _) = Store::open(&root).unwrap();
            let mut up = store
                .begin_upload("h", "e", &P::Digest(d), Some(body.len() as u64))
                .unwrap();
            up.write_all(&body[..9]).unwrap();
        }
        let (store, _) = Store::open(&root).unwrap();
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert!(r.hashed.is_none());
        assert_eq!(
            r.held(),
            Held {
                offset: 9,
                length: None
            }
        );
        let mut up = r.start(body.len() as u64, true).unwrap();
        up.write_all(&body[9..]).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        // An empty cut leaves nothing; another digest sweeps the old one.
        let mut up = store
            .begin_upload("h", "f", &P::Digest([1; 32]), Some(5))
            .unwrap();
        up.write_all(b"abc").unwrap();
        drop(up);
        drop(
            store
                .begin_upload("h", "f", &P::Digest([2; 32]), Some(5))
                .unwrap(),
        );
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A streamed upload under a key: no digest at its end, so it is kept
    /// (fsynced, its length known) and completed by an empty append that
    /// re-reads nothing in this run; a wrong whole digest deletes it.
    #[test]
    fn a_keyed_partial_is_kept_and_completed_without_rereading() {
        let root = tempdir("keyed");
        let (store, _) = Store::open(&root).unwrap();
        let body = b"streamed while packing";
        let d: [u8; 32] = Sha256::digest(body).into();
        let key = P::Key([0x5a; 16]);
        let mut up = store.begin_upload("h", "e", &key, None).unwrap();
        up.write_all(body).unwrap();
        assert_eq!(up.keep().unwrap(), Some(body.len() as u64));
        let partial = root.join(format!("h/.partial-e.k{}", "5a".repeat(16)));
        assert_eq!(fs::read(&partial).unwrap(), body);
        let held = Held {
            offset: body.len() as u64,
            length: Some(body.len() as u64),
        };
        assert_eq!(store.offset("h", "e", &key).unwrap(), held);
        // The digest's partial is another upload: nothing held there (and
        // asking for it would delete the keyed one: "repacked").
        let r = store.resume("h", "e", &key).unwrap();
        assert_eq!(r.held(), held);
        assert!(r.hashed.is_some(), "this process hashed the bytes");
        let up = r.start(body.len() as u64, true).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        assert_eq!(fs::read(root.join("h/e.tar.zst")).unwrap(), body);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);

        // Kept, then completed against the wrong digest: deleted.
        let mut up = store.begin_upload("h", "f", &key, None).unwrap();
        up.write_all(body).unwrap();
        up.keep().unwrap();
        let up = store
            .resume("h", "f", &key)
            .unwrap()
            .start(body.len() as u64, true)
            .unwrap();
        assert!(matches!(
            up.commit(&[0; 32]).unwrap(),
            Outcome::DigestMismatch(_)
        ));
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);

        // A temp (no key, no digest) is never kept.
        let mut up = store.begin("h", "g").unwrap();
        up.write_all(body).unwrap();
        assert_eq!(up.keep().unwrap(), None);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A new key or digest for an id deletes its other partials, keyed or
    /// not, unless claimed; the sweep treats keyed partials like the rest.
    #[test]
    fn keys_and_digests_replace_each_other() {
        let root = tempdir("rekey");
        let (store, _) = Store::open(&root).unwrap();
        let cut = |name: &PartialName, ep: &str| {
            let mut up = store.begin_upload("h", ep, name, None).unwrap();
            up.write_all(b"some bytes").unwrap();
        };
        let (k1, k2, d) = (P::Key([1; 16]), P::Key([2; 16]), P::Digest([3; 32]));
        let name = |n: &PartialName| partial_name("e", n);
        cut(&k1, "e");
        assert_eq!(listing(&root.join("h")), [name(&k1)]);
        cut(&k2, "e");
        assert_eq!(listing(&root.join("h")), [name(&k2)], "a new key");
        cut(&d, "e");
        assert_eq!(listing(&root.join("h")), [name(&d)], "a digest");
        assert_eq!(store.offset("h", "e", &k1).unwrap().offset, 0);
        assert!(listing(&root.join("h")).is_empty(), "a HEAD with a key");
        // Claimed (being written): never deleted by another name.
        let mut claimed = store.begin_upload("h", "e", &k1, None).unwrap();
        claimed.write_all(b"in flight").unwrap();
        cut(&k2, "e");
        assert_eq!(listing(&root.join("h")), [name(&k1), name(&k2)]);
        drop(claimed);
        // Stored ids, TTL and cap: as any partial.
        cut(&k1, "x");
        assert_eq!(put(&store, "h", "x", b"final"), Outcome::Stored);
        let later = SystemTime::now() + Duration::from_secs(73 * 3600);
        assert_eq!(store.sweep(SystemTime::now()), 1, "x is stored");
        assert_eq!(store.sweep(later), 2, "e's two partials expired");
        assert_eq!(listing(&root.join("h")), ["x.tar.zst", "x.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }
}
