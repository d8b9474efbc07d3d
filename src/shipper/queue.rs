//! One `--once` pass: the on-disk state machine, mirroring docs/transport.md.
//!
//! ```text
//! episodes/<id>/done.marker
//!     | pack: tar -> zstd -> HashingWriter -> outbox/<id>.tar.zst.partial
//!     |       fsync; write outbox/<id>.tar.zst.sha256 (digest + tree; tmp, fsync, rename)
//!     |       rename .partial -> outbox/<id>.tar.zst; fsync outbox/
//!     v
//! PUT /v1/episodes/<host>/<id>  (Content-Digest from the sidecar; no re-read)
//!     +-- 201/200 -> rename sidecar -> outbox/<id>.receipt; delete tarball; fsync outbox/
//!     |              episode still the packed tree? no -> drop receipt, repack (409 next)
//!     |              shipped/<id> exists? -> quarantine (outbox/<id>.conflict)
//!     |              rename episodes/<id> -> shipped/<id>; fsync both dirs
//!     |              delete receipt
//!     +-- 409     -> outbox/<id>.conflict; skipped until an operator removes it
//!     +-- 400 digest_mismatch -> delete tarball + sidecar: repack next pass
//!     +-- 401/403 -> stop the pass (exit 77)
//!     +-- 503/507 -> stop the pass, keep everything (75)
//!     +-- 5xx, network, timeout -> keep everything; next pass retries (75)
//!     +-- other 4xx -> keep everything; counted as rejected (65)
//! ```
//! Every step is idempotent, so a crash anywhere is finished by the next
//! pass: a `.partial` is never uploaded and is removed at the start of a
//! pass, a tarball is reused only while its episode is still the tree it was
//! packed from (`tree::Fingerprint` in the sidecar), a receipt retires
//! without another upload, and a repeated PUT of bytes the receiver already
//! holds gets 200.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::config::ShipperConfig;
use crate::fsutil::{self, remove_if_exists, sync_dir};
use crate::hashing::{self, to_hex};
use crate::protocol::{self, status};
use crate::shipper::client::{Body, ClientError, Connection, Endpoint, Response};
use crate::shipper::outbox::{self, Dirs, Record};
use crate::shipper::pack::{self, PackOptions};
use crate::shipper::progress::Progress;
use crate::shipper::tree::{self, Fingerprint};
use crate::{error, exit, fault, ids, info, timefmt, warn};

const MARKER: &str = "done.marker";

/// Passes in a row an episode may change while it is packed before the
/// shipper stops retrying quietly and asks for a human (65): a recorder
/// that still writes after `done.marker` is a bug to fix, not a race to win.
const UNSTABLE_PASSES: u32 = 3;

/// Counts for the summary line and the exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ready: usize,
    pub stored: usize,
    pub already_present: usize,
    pub conflicts: usize,
    pub rejected: usize,
    pub invalid_names: usize,
    pub retry: usize,
    pub compressed_bytes: u64,
    /// Set when the pass stopped early; the exit code it calls for.
    pub stopped: Option<u8>,
}

impl Summary {
    /// 77/69 from a stopped pass first; then 65 (a human is needed) over
    /// 75 (the next pass may fix it), as the units' OnFailure= expects.
    pub fn exit_code(&self) -> u8 {
        match self.stopped {
            Some(c) if c != exit::TEMPFAIL => c,
            _ if self.conflicts + self.rejected + self.invalid_names > 0 => exit::DATAERR,
            _ if self.retry > 0 || self.stopped.is_some() => exit::TEMPFAIL,
            _ => exit::OK,
        }
    }
}

/// Why a pass could not start.
#[derive(Debug)]
pub enum PassError {
    /// data_dir missing or unusable: a configuration problem (78).
    DataDir(String),
}

impl std::fmt::Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassError::DataDir(m) => f.write_str(m),
        }
    }
}

/// Runs one pass. `Ok(None)`: another pass holds the lock, nothing done.
pub fn run_once(cfg: &ShipperConfig, ep: &Endpoint) -> Result<Option<Summary>, PassError> {
    let data = &cfg.data_dir;
    let meta = fs::metadata(data).map_err(|e| {
        PassError::DataDir(format!(
            "{}: data_dir {}: {e} (create it, or fix data_dir)",
            cfg.path.display(),
            data.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(PassError::DataDir(format!(
            "{}: data_dir {} is not a directory",
            cfg.path.display(),
            data.display()
        )));
    }
    let lock_path = data.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| PassError::DataDir(format!("cannot open {}: {e}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            info!("another pass holds {}; nothing to do", lock_path.display());
            return Ok(None);
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(PassError::DataDir(format!(
                "cannot lock {}: {e}",
                lock_path.display()
            )));
        }
    }
    let dirs = Dirs::new(data);
    for d in [&dirs.episodes, &dirs.outbox, &dirs.shipped] {
        fs::create_dir_all(d)
            .map_err(|e| PassError::DataDir(format!("cannot create {}: {e}", d.display())))?;
    }
    let started = Instant::now();
    let mut pass = Pass {
        cfg,
        ep,
        dirs,
        conn: None,
        summary: Summary::default(),
    };
    if let Err(e) = pass.tidy_outbox() {
        warn!("tidying {}: {e}", pass.dirs.outbox.display());
    }
    let ready = pass.scan().map_err(|e| {
        PassError::DataDir(format!("cannot list {}: {e}", pass.dirs.episodes.display()))
    })?;
    pass.summary.ready = ready.len();
    for id in &ready {
        pass.episode(id);
        if pass.summary.stopped.is_some() {
            break;
        }
    }
    if let Some(c) = pass.conn.take() {
        c.close();
    }
    let s = &pass.summary;
    info!(
        "pass done{}: {} ready, {} stored, {} already present, {} conflict(s), {} rejected, {} invalid name(s), {} to retry; {:.1} MB uploaded in {:.1}s",
        if s.stopped.is_some() { " (stopped early)" } else { "" },
        s.ready,
        s.stored,
        s.already_present,
        s.conflicts,
        s.rejected,
        s.invalid_names,
        s.retry,
        s.compressed_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    drop(lock); // the flock goes with the descriptor (and with the process on kill -9)
    Ok(Some(pass.summary))
}

struct Pass<'a> {
    cfg: &'a ShipperConfig,
    ep: &'a Endpoint,
    dirs: Dirs,
    conn: Option<Connection>,
    summary: Summary,
}

/// A finished tarball ready to upload.
struct Tarball {
    path: PathBuf,
    record: Record,
    size: u64,
    /// Set when packed in this pass: raw bytes and seconds.
    packed: Option<(u64, f64)>,
}

/// Why an episode could not be packed (or its tarball prepared).
struct PrepError {
    message: String,
    /// Retrying will not help (e.g. unreadable files): counted as rejected,
    /// so the pass exits 65 and an alert fires.
    needs_human: bool,
}

impl From<String> for PrepError {
    fn from(message: String) -> PrepError {
        PrepError {
            message,
            needs_human: false,
        }
    }
}

/// What became of one upload attempt.
enum Upload {
    Answer(Response, f64),
    /// The pass cannot go on (receiver unreachable, TLS): exit code.
    Stop(u8, ClientError),
    /// This episode failed in transit; others may still go.
    Failed(ClientError),
}

/// What `finish` did with a confirmed episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finished {
    Retired,
    /// Not retired: the episode is not the tree that was confirmed.
    Changed,
    /// Not retired, and already logged and counted (conflict, rejected, retry).
    Counted,
}

/// Why an episode the receiver confirmed was not moved to `shipped/`.
enum RetireError {
    /// `episodes/<id>` is no longer the tree that was packed and confirmed:
    /// the recorder changed it (or wrote a new recording under the id).
    Changed,
    /// `shipped/<id>` already exists: a second copy under one id.
    Duplicate,
    /// The move or a sync failed; `needs_human` when no later pass can heal
    /// it (permissions, another file system, read-only).
    Io {
        what: String,
        source: io::Error,
        needs_human: bool,
    },
}

impl Pass<'_> {
    /// Removes what a crash left behind; see docs/transport.md. Never deletes
    /// what might be the only copy of something.
    fn tidy_outbox(&mut self) -> io::Result<()> {
        let mut changed = false;
        for entry in fs::read_dir(&self.dirs.outbox)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let in_episodes = |id: &str| self.dirs.episode(id).exists();
            match outbox::parse(&name) {
                outbox::Name::Partial(_) | outbox::Name::Temp => {
                    // Never uploaded, never renamed: a crash mid-pack. Repacked below.
                    info!("removing unfinished {}", path.display());
                    changed |= remove_if_exists(&path)?;
                }
                outbox::Name::Sidecar(id) => {
                    if !self.dirs.tarball(id).exists() {
                        changed |= remove_if_exists(&path)?;
                    }
                }
                outbox::Name::Tarball(id) if !in_episodes(id) => {
                    if self.shipped_copy_of(id) {
                        // Crash after the retire, before the outbox delete.
                        changed |= remove_if_exists(&path)?;
                        remove_if_exists(&self.dirs.sidecar(id))?;
                    } else {
                        warn!(
                            "{} has no episode in episodes/ (nor the one it was packed from in shipped/); leaving it for an operator",
                            path.display()
                        );
                    }
                }
                // A receipt retires its episode; with the episode gone (a
                // crash after the retire, or an operator) it has no use.
                outbox::Name::Receipt(id) | outbox::Name::Unstable(id) if !in_episodes(id) => {
                    changed |= remove_if_exists(&path)?;
                }
                outbox::Name::Tarball(_)
                | outbox::Name::Receipt(_)
                | outbox::Name::Unstable(_)
                | outbox::Name::Conflict(_) => {}
                outbox::Name::Unknown => warn!(
                    "unexpected file {} in outbox/; leaving it alone",
                    path.display()
                ),
            }
        }
        if changed {
            sync_dir(&self.dirs.outbox)?;
        }
        Ok(())
    }

    /// Whether `shipped/<id>` is the tree the outbox tarball of `id` was
    /// packed from (for a record without a tree, as before this check
    /// existed: whether `shipped/<id>` exists at all).
    fn shipped_copy_of(&self, id: &str) -> bool {
        let shipped = self.dirs.shipped(id);
        match Record::read(&self.dirs.sidecar(id)) {
            Some(Record { tree: Some(t), .. }) => {
                tree::fingerprint(&shipped, id).is_ok_and(|now| now == t)
            }
            _ => shipped.exists(),
        }
    }

    /// Finished episodes, oldest marker first (then by name, for ties).
    fn scan(&mut self) -> io::Result<Vec<String>> {
        let mut ready = Vec::new();
        for entry in fs::read_dir(&self.dirs.episodes)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_symlink() && entry.path().join(MARKER).exists() {
                // Following it would ship files from wherever it points, and
                // retiring it would move only the link: refuse, loudly.
                warn!(
                    "skipping episodes/{name}: a symlink to a finished episode; move the directory itself into episodes/"
                );
                self.summary.invalid_names += 1;
                continue;
            }
            if !kind.is_dir() {
                continue;
            }
            let marker = entry.path().join(MARKER);
            let Ok(m) = fs::symlink_metadata(&marker) else {
                continue;
            };
            if !ids::is_valid(&name) {
                warn!(
                    "skipping episodes/{name}: not a valid episode id ({}); rename the directory to ship it",
                    ids::RULE
                );
                self.summary.invalid_names += 1;
                continue;
            }
            ready.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), name));
        }
        ready.sort();
        Ok(ready.into_iter().map(|(_, n)| n).collect())
    }

    fn episode(&mut self, id: &str) {
        let conflict = self.dirs.conflict(id);
        if conflict.exists() {
            error!(
                "{id}: in conflict with the receiver; not shipping until an operator resolves it and removes {}",
                conflict.display()
            );
            self.summary.conflicts += 1;
            return;
        }
        // Confirmed by the receiver in an earlier pass, not yet retired.
        let receipt = self.dirs.receipt(id);
        if let Some(record) = Record::read(&receipt) {
            // A crash between the receipt and the tarball's delete leaves both.
            let _ = remove_if_exists(&self.dirs.tarball(id));
            let sha = to_hex(&record.sha256);
            match self.finish(id, &record, || {
                format!("already present (the receiver confirmed sha256 {sha} in an earlier pass)")
            }) {
                Finished::Retired => self.summary.already_present += 1,
                Finished::Counted => {}
                // A new recording under the id (or more files): it is not
                // what the receiver confirmed, so it ships like any other
                // episode now, and meets the receiver's 409 if the id is taken.
                Finished::Changed => self.forget_confirmed(id, &record, "packing it now"),
            }
            if self.dirs.receipt(id).exists() || !self.dirs.episode(id).exists() {
                return;
            }
        } else if receipt.exists() {
            warn!(
                "{}: unreadable; uploading again (the receiver answers 200 for bytes it holds)",
                receipt.display()
            );
            let _ = remove_if_exists(&receipt);
        }
        let tarball = match self.prepare(id) {
            Ok(t) => t,
            Err(e) if e.needs_human => {
                error!("{id}: {}; keeping it, will try again next pass", e.message);
                self.summary.rejected += 1;
                return;
            }
            Err(e) => {
                error!("{id}: {}; will retry next pass", e.message);
                self.summary.retry += 1;
                return;
            }
        };
        let (resp, secs) = match self.upload(id, &tarball) {
            Upload::Answer(r, secs) => (r, secs),
            Upload::Stop(code, e) => {
                error!("{id}: {e}; stopping this pass ({})", e.hint());
                self.summary.stopped = Some(code);
                return;
            }
            Upload::Failed(e) => {
                error!("{id}: upload failed: {e}; will retry next pass");
                self.summary.retry += 1;
                return;
            }
        };
        let sizes = match tarball.packed {
            Some((raw, pack_secs)) => format!(
                "{:.1} MB raw -> {:.1} MB ({:.0}%), packed in {pack_secs:.1}s,",
                raw as f64 / 1e6,
                tarball.size as f64 / 1e6,
                tarball.size as f64 * 100.0 / raw.max(1) as f64
            ),
            None => format!("{:.1} MB (packed earlier),", tarball.size as f64 / 1e6),
        };
        let rate = tarball.size as f64 / secs.max(1e-6) / 1e6;
        match resp.status {
            200 | 201 => {
                if let Err(e) = self.confirm(id) {
                    error!("{id}: the receiver has it, but recording that locally failed: {e}; the next pass asks again");
                    self.summary.retry += 1;
                    return;
                }
                let outcome = if resp.status == 201 {
                    "stored"
                } else {
                    "already present"
                };
                let sha = to_hex(&tarball.record.sha256);
                let finished = self.finish(id, &tarball.record, || {
                    format!(
                        "{outcome}: {sizes} uploaded in {secs:.1}s at {rate:.1} MB/s, sha256 {sha}"
                    )
                });
                if finished == Finished::Changed {
                    self.forget_confirmed(id, &tarball.record, "repacking it next pass");
                    self.summary.retry += 1;
                } else if finished == Finished::Retired {
                    self.summary.compressed_bytes += tarball.size;
                    if resp.status == 201 {
                        self.summary.stored += 1;
                    } else {
                        self.summary.already_present += 1;
                    }
                }
            }
            409 => {
                let theirs = resp
                    .reply
                    .as_ref()
                    .and_then(|r| r.sha256.clone())
                    .unwrap_or_else(|| "unknown".into());
                let ours = to_hex(&tarball.record.sha256);
                let text = format!(
                    "episode: {id}\nlocal_sha256: {ours}\nreceiver_sha256: {theirs}\ntime: {}\n\
                     The receiver holds other bytes under this id. Compare the two, keep the right one\n\
                     (see docs/transport.md, \"Conflicts\"), then delete this file to ship again.\n",
                    timefmt::now()
                );
                if let Err(e) = write_durably(&conflict, text.as_bytes()) {
                    error!("{id}: cannot write {}: {e}", conflict.display());
                }
                error!(
                    "{id}: conflict: the receiver holds sha256 {theirs}, ours is {ours}; quarantined, remove {} after resolving",
                    conflict.display()
                );
                self.summary.conflicts += 1;
            }
            400 if resp
                .reply
                .as_ref()
                .is_some_and(|r| r.status == status::DIGEST_MISMATCH) =>
            {
                // Our recorded digest or the tarball is wrong: trust neither.
                warn!("{id}: receiver says the body does not match its digest ({}); repacking next pass", resp.explain());
                let _ = remove_if_exists(&tarball.path);
                let _ = remove_if_exists(&self.dirs.sidecar(id));
                let _ = sync_dir(&self.dirs.outbox);
                self.summary.retry += 1;
            }
            401 | 403 => {
                error!(
                    "{id}: receiver refused our credentials ({} {}): check token_file and cert_file for host {}; stopping this pass",
                    resp.status,
                    resp.explain(),
                    self.cfg.host_id
                );
                self.summary.stopped = Some(exit::NOPERM);
            }
            503 | 507 => {
                let what = if resp.status == 507 {
                    "receiver out of space"
                } else {
                    "receiver busy"
                };
                warn!(
                    "{id}: receiver answered {} ({}): {what}; stopping this pass, the next one retries",
                    resp.status,
                    resp.explain()
                );
                self.summary.retry += 1;
                self.summary.stopped = Some(exit::TEMPFAIL);
            }
            s if s >= 500 || s == 408 => {
                warn!(
                    "{id}: receiver answered {s} ({}); will retry next pass",
                    resp.explain()
                );
                self.summary.retry += 1;
            }
            s => {
                error!(
                    "{id}: receiver rejected the upload with {s}: {}; keeping everything",
                    resp.explain()
                );
                self.summary.rejected += 1;
            }
        }
    }

    /// The receiver holds what was packed, but the episode on disk is
    /// something else now: never retire it under the old digest. Drop the
    /// receipt; the episode is packed again, and the receiver's 409 (if it
    /// holds the old bytes under this id) quarantines it for a human.
    fn forget_confirmed(&mut self, id: &str, record: &Record, next: &str) {
        warn!(
            "{id}: episodes/{id} changed after it was packed (the receiver holds the packed version, sha256 {}); {next}",
            to_hex(&record.sha256)
        );
        let _ = remove_if_exists(&self.dirs.receipt(id));
        let _ = sync_dir(&self.dirs.outbox);
    }

    /// Retires a confirmed episode and logs the outcome (`done` says how it
    /// was confirmed); else logs and counts why it could not be retired,
    /// except `Changed`, which the caller handles.
    fn finish(&mut self, id: &str, record: &Record, done: impl FnOnce() -> String) -> Finished {
        match self.retire(id, record) {
            Ok(()) => {
                info!("{id}: {}", done());
                return Finished::Retired;
            }
            Err(RetireError::Changed) => return Finished::Changed,
            Err(RetireError::Duplicate) => {
                let conflict = self.dirs.conflict(id);
                let text = format!(
                    "episode: {id}\nlocal_sha256: {}\ntime: {}\n\
                     The receiver confirmed episodes/{id} (this sha256), but shipped/{id} already exists:\n\
                     two directories under one id. Nothing was deleted. Compare them; if they are the same\n\
                     recording delete episodes/{id}, else move one of them away (a new id ships as new);\n\
                     then delete this file.\n",
                    to_hex(&record.sha256),
                    timefmt::now()
                );
                if let Err(e) = write_durably(&conflict, text.as_bytes()) {
                    error!("{id}: cannot write {}: {e}", conflict.display());
                }
                error!(
                    "{id}: the receiver has it, but shipped/{id} already exists: a second copy under one id, kept in episodes/ for a human; see {}",
                    conflict.display()
                );
                self.summary.conflicts += 1;
            }
            Err(RetireError::Io {
                what,
                source,
                needs_human: true,
            }) => {
                error!(
                    "{id}: the receiver has it, but {what} failed: {source}; {} The receipt in outbox/ keeps it from being uploaded again.",
                    retire_fix(&source)
                );
                self.summary.rejected += 1;
            }
            Err(RetireError::Io { what, source, .. }) => {
                error!("{id}: the receiver has it, but {what} failed: {source}; the next pass finishes (nothing is uploaded again)");
                self.summary.retry += 1;
            }
        }
        Finished::Counted
    }

    /// The tarball for `id`: the one in outbox/ if a pass already made it
    /// and the episode is still the tree it was made from, else packed now.
    fn prepare(&mut self, id: &str) -> Result<Tarball, PrepError> {
        let path = self.dirs.tarball(id);
        let sidecar = self.dirs.sidecar(id);
        if let Ok(meta) = fs::metadata(&path) {
            if meta.len() == 0 {
                warn!("{}: empty tarball; repacking", path.display());
                remove_if_exists(&path).map_err(|e| e.to_string())?;
            } else if let Some(record) = Record::read(&sidecar) {
                let current = match &record.tree {
                    None => true, // older than the check: see `outbox::Record`
                    Some(t) => self.still_packed_tree(id, t),
                };
                if current {
                    return Ok(Tarball {
                        path,
                        record,
                        size: meta.len(),
                        packed: None,
                    });
                }
                warn!(
                    "{id}: changed since {} was packed; repacking",
                    path.display()
                );
                remove_if_exists(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
                remove_if_exists(&sidecar)
                    .map_err(|e| format!("removing {}: {e}", sidecar.display()))?;
            } else {
                // A tarball without a trustworthy digest: hash it once.
                info!("{}: no recorded digest; hashing it", path.display());
                let (sha256, size) = hashing::sha256_file(&path)
                    .map_err(|e| format!("hashing {}: {e}", path.display()))?;
                let record = Record { sha256, tree: None };
                write_durably(&sidecar, record.to_text(id).as_bytes())
                    .map_err(|e| format!("writing {}: {e}", sidecar.display()))?;
                return Ok(Tarball {
                    path,
                    record,
                    size,
                    packed: None,
                });
            }
        }
        self.pack(id)
    }

    /// Whether `episodes/<id>` is still the tree `t` (an unreadable tree is
    /// not: packing it again says why).
    fn still_packed_tree(&self, id: &str, t: &Fingerprint) -> bool {
        tree::fingerprint(&self.dirs.episode(id), id).is_ok_and(|now| now == *t)
    }

    fn pack(&mut self, id: &str) -> Result<Tarball, PrepError> {
        fault::point("pack.start");
        let dir = self.dirs.episode(id);
        let partial = self.dirs.partial(id);
        let final_path = self.dirs.tarball(id);
        let sidecar = self.dirs.sidecar(id);
        remove_if_exists(&partial).map_err(|e| format!("removing {}: {e}", partial.display()))?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| format!("creating {}: {e}", partial.display()))?;
        let started = Instant::now();
        let opts = PackOptions {
            level: self.cfg.compression_level,
            threads: self.cfg.compression_threads,
        };
        let mut progress = Progress::new(&format!("{id}: packing"), None);
        if progress.enabled() {
            // Only for the ETA on a terminal: a metadata-only walk, no data read.
            if let Ok(t) = tree::fingerprint(&dir, id) {
                progress.set_total(t.bytes);
            }
        }
        let mut mid_hit = false;
        let result = pack::pack_episode(&dir, id, file, &opts, &mut |raw| {
            progress.update(raw);
            if !mid_hit && raw > 0 {
                mid_hit = true;
                fault::point("pack.mid_write");
            }
        });
        progress.finish();
        let cleanup = |msg: String| {
            let _ = remove_if_exists(&partial);
            msg
        };
        let (file, packed) = match result {
            Ok(r) => r,
            Err(e) => {
                let message = cleanup(format!("packing: {e}"));
                return Err(self.pack_failed(id, &e, message));
            }
        };
        for w in &packed.warnings {
            warn!("{id}: {w}");
        }
        fsutil::sync_file(&file)
            .map_err(|e| cleanup(format!("syncing {}: {e}", partial.display())))?;
        drop(file);
        fault::point("pack.after_fsync");
        let record = Record {
            sha256: packed.sha256,
            tree: Some(packed.tree),
        };
        write_durably(&sidecar, record.to_text(id).as_bytes())
            .map_err(|e| cleanup(format!("writing {}: {e}", sidecar.display())))?;
        fault::point("pack.after_sidecar");
        fs::rename(&partial, &final_path)
            .map_err(|e| cleanup(format!("renaming {}: {e}", partial.display())))?;
        fault::point("pack.after_rename");
        // The count of unstable passes ends with a pack that held still.
        let _ = remove_if_exists(&self.dirs.unstable(id));
        sync_dir(&self.dirs.outbox)
            .map_err(|e| format!("syncing {}: {e}", self.dirs.outbox.display()))?;
        fault::point("pack.after_dirfsync");
        Ok(Tarball {
            path: final_path,
            record,
            size: packed.compressed_bytes,
            packed: Some((packed.raw_bytes, started.elapsed().as_secs_f64())),
        })
    }

    /// Classifies a failed pack: what a retry can fix (75) and what needs a
    /// human (65).
    fn pack_failed(&self, id: &str, e: &pack::PackError, message: String) -> PrepError {
        match e {
            _ if e.is_no_space() => PrepError::from(format!(
                "{message} (free space in {})",
                self.dirs.outbox.display()
            )),
            pack::PackError::Read { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                // Permissions do not fix themselves between passes.
                PrepError {
                    message: format!(
                        "{message} (the shipper's user must be able to read every file: see docs/deploy.md, ownership)"
                    ),
                    needs_human: true,
                }
            }
            pack::PackError::Changed { path, .. } => {
                // Still being written after done.marker: retry quietly a few
                // times (a recorder finishing late), then ask for a human.
                let passes = self.count_unstable_pass(id);
                if passes >= UNSTABLE_PASSES {
                    PrepError {
                        message: format!(
                            "the recorder is still writing {} after done.marker ({passes} passes in a row): {message}. \
                             Fix the recorder to write done.marker last; delete {} to start counting again",
                            path.display(),
                            self.dirs.unstable(id).display()
                        ),
                        needs_human: true,
                    }
                } else {
                    PrepError::from(message)
                }
            }
            _ => PrepError::from(message),
        }
    }

    /// Adds one to `outbox/<id>.unstable` and returns the new count.
    fn count_unstable_pass(&self, id: &str) -> u32 {
        let path = self.dirs.unstable(id);
        let before: u32 = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let now = before.saturating_add(1);
        if let Err(e) = write_durably(&path, format!("passes {now}\n").as_bytes()) {
            warn!("{id}: cannot write {}: {e}", path.display());
        }
        now
    }

    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.conn.as_ref().is_some_and(|c| !c.is_reusable()) {
            if let Some(c) = self.conn.take() {
                c.close();
            }
        }
        if self.conn.is_none() {
            let c = self.ep.open()?;
            fault::point("up.after_connect");
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("set just above"))
    }

    fn upload(&mut self, id: &str, t: &Tarball) -> Upload {
        let (cfg, ep) = (self.cfg, self.ep);
        let mut retried = false;
        loop {
            let started = Instant::now();
            let reused = self
                .conn
                .as_ref()
                .is_some_and(|c| c.is_reusable() && c.requests() > 0);
            let conn = match self.connection() {
                Ok(c) => c,
                // Cannot even connect: every later episode would fail too.
                Err(e) => {
                    return Upload::Stop(
                        if e.is_tls() {
                            exit::UNAVAILABLE
                        } else {
                            exit::TEMPFAIL
                        },
                        e,
                    )
                }
            };
            let mut file = match File::open(&t.path) {
                Ok(f) => f,
                Err(e) => {
                    return Upload::Failed(ClientError::Body(io::Error::new(
                        e.kind(),
                        format!("opening {}: {e}", t.path.display()),
                    )))
                }
            };
            let auth = format!("Bearer {}", cfg.token.expose());
            let digest = protocol::content_digest(&t.record.sha256);
            let target = protocol::episode_path(&cfg.host_id, id);
            let mut progress = Progress::new(&format!("{id}: uploading"), Some(t.size));
            let result = conn.request(
                "PUT",
                &target,
                &ep.url.authority(),
                &[
                    ("Authorization", &auth),
                    ("Content-Type", protocol::CONTENT_TYPE),
                    ("Content-Digest", &digest),
                ],
                Some(Body {
                    reader: &mut file,
                    len: t.size,
                }),
                &mut |n| progress.update(n),
            );
            progress.finish();
            match result {
                Ok(r) => return Upload::Answer(r, started.elapsed().as_secs_f64()),
                Err(e) if reused && !retried && e.is_stale_connection() => {
                    // The receiver closed the kept-alive connection as we
                    // reused it. A repeated PUT is safe: same bytes get 200.
                    info!("{id}: kept-alive connection was closed by the receiver; retrying on a new one");
                    self.conn = None;
                    retried = true;
                }
                Err(e) => {
                    self.conn = None;
                    if e.is_tls() {
                        return Upload::Stop(exit::UNAVAILABLE, e);
                    }
                    return Upload::Failed(e);
                }
            }
        }
    }

    /// Records that the receiver holds the tarball's bytes: the sidecar
    /// becomes `outbox/<id>.receipt` and the tarball goes, so a retire that
    /// waits (for a human, or for the next pass) costs no disk and no
    /// second upload. Idempotent: a crash anywhere here is finished by the
    /// receipt path of the next pass.
    fn confirm(&mut self, id: &str) -> io::Result<()> {
        let sidecar = self.dirs.sidecar(id);
        if sidecar.exists() {
            fs::rename(&sidecar, self.dirs.receipt(id))?;
        }
        fault::point("ship.after_receipt");
        remove_if_exists(&self.dirs.tarball(id))?;
        // The receipt must survive a power cut before the retire below
        // relies on it; a lost tarball delete is tidied by the next pass.
        sync_dir(&self.dirs.outbox)?;
        fault::point("ship.after_confirm");
        Ok(())
    }

    /// Moves the episode to `shipped/`: the receiver confirmed it holds the
    /// bytes packed from it. Only if the episode is still the tree that was
    /// packed (else those bytes are not this episode), and never over an
    /// existing `shipped/<id>` (a second copy is a human's call, never a
    /// silent delete).
    fn retire(&mut self, id: &str, record: &Record) -> Result<(), RetireError> {
        let from = self.dirs.episode(id);
        let to = self.dirs.shipped(id);
        if let Some(t) = &record.tree {
            if !self.still_packed_tree(id, t) {
                return Err(RetireError::Changed);
            }
        }
        if fs::symlink_metadata(&to).is_ok() {
            return Err(RetireError::Duplicate);
        }
        let io = |what: String| {
            move |source: io::Error| RetireError::Io {
                needs_human: !heals_by_itself(&source),
                what,
                source,
            }
        };
        fs::rename(&from, &to).map_err(io(format!(
            "moving {} to {}",
            from.display(),
            to.display()
        )))?;
        fault::point("ship.after_rename");
        sync_dir(&self.dirs.episodes)
            .map_err(io(format!("syncing {}", self.dirs.episodes.display())))?;
        sync_dir(&self.dirs.shipped)
            .map_err(io(format!("syncing {}", self.dirs.shipped.display())))?;
        fault::point("ship.after_dirfsync");
        // The receipt has done its job. Not synced: if a power cut brings it
        // back, its episode is gone from episodes/ and tidy removes it.
        let receipt = self.dirs.receipt(id);
        remove_if_exists(&receipt).map_err(io(format!("removing {}", receipt.display())))?;
        fault::point("clean.after_unlink");
        Ok(())
    }
}

/// Whether a later pass can succeed where this retire failed. Permissions,
/// another file system and a read-only mount stay as they are until someone
/// acts; a full disk or an I/O hiccup may pass.
fn heals_by_itself(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EXDEV | libc::EROFS)
    )
}

/// What an operator does about a retire error that will not heal.
fn retire_fix(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EXDEV) => {
            "episodes/ and shipped/ must be on one file system (a rename cannot cross mounts): \
             do not mount shipped/ separately."
        }
        Some(libc::EROFS) => "data_dir is on a read-only file system: remount it read-write.",
        _ => {
            "moving a directory needs write permission on it (its `..` changes) as well as on \
             episodes/ and shipped/: run the recorder with umask 0007 and group cis490 \
             (docs/deploy.md, ownership), then `chmod -R g+rwX` the stuck episode."
        }
    }
}

/// Writes a small outbox file (sidecar, conflict note) via `<name>.tmp`;
/// only one pass runs at a time (the lock), and tidy removes stale `.tmp`s.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fsutil::write_atomically(Path::new(&tmp), path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_precedence() {
        let mut s = Summary::default();
        assert_eq!(s.exit_code(), exit::OK);
        s.retry = 1;
        assert_eq!(s.exit_code(), exit::TEMPFAIL);
        s.conflicts = 1;
        assert_eq!(s.exit_code(), exit::DATAERR, "65 wins over 75");
        s.stopped = Some(exit::NOPERM);
        assert_eq!(s.exit_code(), exit::NOPERM);
        let s = Summary {
            stopped: Some(exit::TEMPFAIL),
            ..Summary::default()
        };
        assert_eq!(s.exit_code(), exit::TEMPFAIL);
        let s = Summary {
            invalid_names: 1,
            ..Summary::default()
        };
        assert_eq!(s.exit_code(), exit::DATAERR);
    }
}
