//! One `--once` pass over `data_dir`: lock, tidy, list the finished
//! episodes, and for each one prepare a tarball, upload it, and apply the
//! verdict. The state machine this walks is drawn once, in
//! docs/transport.md §2; its steps live in `prepare` (pack or reuse),
//! `verdict` (what an answer means), `retire` (confirm and move) and
//! `tidy` (crash leftovers). This module orders them, logs each outcome
//! once at the severity of its exit class (75: warning; 65, 69, 77:
//! error), counts, and decides the exit code (`Summary::exit_code`).
//!
//! Every step is idempotent, so a crash anywhere is finished by the next
//! pass.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::config::ShipperConfig;
use crate::fsutil::{remove_if_exists, sync_dir};
use crate::hashing::to_hex;
use crate::shipper::client::{ClientError, Endpoint, Session};
use crate::shipper::outbox::{Dirs, Record};
use crate::shipper::pack::PackOptions;
use crate::shipper::prepare::{self, write_durably, Tarball};
use crate::shipper::retention;
use crate::shipper::retire::{self, RetireError};
use crate::shipper::state::{self, LastPass, State};
use crate::shipper::status;
use crate::shipper::stream;
use crate::shipper::tidy::tidy;
use crate::shipper::upload::{self, Attempt, Sent};
use crate::shipper::verdict::{self, Stop, Verdict};
use crate::{error, exit, ids, info, timefmt, warn};

const MARKER: &str = "done.marker";

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
    /// Body bytes actually sent (less than the tarballs' when uploads
    /// resumed, or the receiver had them already).
    pub bytes_sent: u64,
    /// Shipped episodes (and their bytes) retention deleted.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Set when the pass stopped early; the exit code it calls for.
    pub stopped: Option<u8>,
    /// Finished work has waited longer than `alert_after_hours` without a
    /// verdict from the receiver: 75 would hide it (success to systemd).
    pub escalated: bool,
}

impl Summary {
    /// 77/69 from a stopped pass first; then 65 (a human is needed) over
    /// 75 (the next pass may fix it), as the units' OnFailure= expects.
    pub fn exit_code(&self) -> u8 {
        match self.stopped {
            Some(c) if c != exit::TEMPFAIL => c,
            _ if self.escalated => exit::UNAVAILABLE,
            _ if self.conflicts + self.rejected + self.invalid_names > 0 => exit::DATAERR,
            _ if self.retry > 0 || self.stopped.is_some() => exit::TEMPFAIL,
            _ => exit::OK,
        }
    }
}

/// Why a pass could not start: `data_dir` is unusable (exit 78).
#[derive(Debug)]
pub enum PassError {
    /// `data_dir` is missing or cannot be read.
    DataDir {
        config: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    /// `data_dir` is not a directory.
    NotADirectory { config: PathBuf, path: PathBuf },
    /// A step on `data_dir` itself failed: what, on which path.
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassError::DataDir {
                config,
                path,
                source,
            } => write!(
                f,
                "{}: data_dir {}: {source} (create it, or fix data_dir)",
                config.display(),
                path.display()
            ),
            PassError::NotADirectory { config, path } => write!(
                f,
                "{}: data_dir {} is not a directory",
                config.display(),
                path.display()
            ),
            PassError::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PassError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PassError::DataDir { source, .. } | PassError::Io { source, .. } => Some(source),
            PassError::NotADirectory { .. } => None,
        }
    }
}

fn io_err(what: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> PassError {
    let path = path.to_owned();
    move |source| PassError::Io { what, path, source }
}

/// Runs one pass. `Ok(None)`: another pass holds the lock, nothing done.
pub fn run_once(cfg: &ShipperConfig, ep: &Endpoint) -> Result<Option<Summary>, PassError> {
    let data = &cfg.data_dir;
    let meta = fs::metadata(data).map_err(|source| PassError::DataDir {
        config: cfg.path.clone(),
        path: data.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PassError::NotADirectory {
            config: cfg.path.clone(),
            path: data.clone(),
        });
    }
    let lock_path = data.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            info!("another pass holds {}; nothing to do", lock_path.display());
            return Ok(None);
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
    }
    let dirs = Dirs::new(data);
    for d in [&dirs.episodes, &dirs.outbox, &dirs.shipped] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut pass = Pass {
        contact: None,
        cfg,
        opts: PackOptions {
            level: cfg.compression_level,
            threads: cfg.compression_threads,
        },
        session: Session::new(ep),
        dirs,
        summary: Summary::default(),
        unsynced_moves: false,
    };
    if let Err(e) = tidy(&pass.dirs) {
        warn!("tidying {}: {e}", pass.dirs.outbox.display());
    }
    retention::empty_trash(&pass.dirs);
    let ready = pass
        .scan()
        .map_err(io_err("list", &pass.dirs.episodes.clone()))?;
    pass.summary.ready = ready.len();
    for (done, id) in ready.iter().enumerate() {
        pass.episode(id);
        if pass.summary.stopped.is_some() {
            // What the stop left untried is retried by the next pass.
            pass.summary.retry += ready.len() - done - 1;
            break;
        }
    }
    pass.sync_moves();
    pass.retain();
    let before = State::read(&cfg.data_dir);
    pass.escalate(&ready, &before);
    let Pass {
        session,
        summary,
        contact,
        ..
    } = pass;
    session.close();
    let s = &summary;
    info!(
        "pass done{}: {} ready, {} stored, {} already present, {} conflict(s), {} rejected, {} invalid name(s), {} to retry; {:.1} MB of tarballs shipped, {:.1} MB sent, in {:.1}s{}",
        if s.stopped.is_some() { " (stopped early)" } else { "" },
        s.ready,
        s.stored,
        s.already_present,
        s.conflicts,
        s.rejected,
        s.invalid_names,
        s.retry,
        s.compressed_bytes as f64 / 1e6,
        s.bytes_sent as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        if s.deleted > 0 {
            format!(
                "; retention deleted {} shipped episode(s), {:.1} MB",
                s.deleted,
                s.deleted_bytes as f64 / 1e6
            )
        } else {
            String::new()
        }
    );
    record(
        cfg,
        before,
        &summary,
        started_at,
        started.elapsed().as_secs_f64(),
        contact,
    );
    if let Some(path) = &cfg.metrics_file {
        let report = status::gather(&cfg.host_id, &cfg.data_dir, SystemTime::now());
        let expiry = cfg
            .client_auth
            .as_ref()
            .and_then(|(c, _)| crate::check::expiry(c));
        if let Err(e) = report.metrics(expiry).write(path) {
            warn!("cannot write metrics_file {}: {e}", path.display());
        }
    }
    drop(lock); // the flock goes with the descriptor (and with the process on kill -9)
    Ok(Some(summary))
}

/// Writes `state.json` for `--status` (a report: failing to write it is
/// logged, never a failed pass).
fn record(
    cfg: &ShipperConfig,
    before: State,
    s: &Summary,
    started: SystemTime,
    secs: f64,
    contact: Option<u64>,
) {
    let state = State {
        first_pass_unix: before.first_pass_unix.or(Some(state::unix(started))),
        last_pass: Some(LastPass {
            started: timefmt::rfc3339(started),
            started_unix: state::unix(started),
            duration_s: (secs * 1000.0).round() / 1000.0,
            exit_code: s.exit_code(),
            ready: s.ready as u64,
            stored: s.stored as u64,
            already_present: s.already_present as u64,
            conflicts: s.conflicts as u64,
            rejected: s.rejected as u64,
            invalid_names: s.invalid_names as u64,
            retry: s.retry as u64,
            bytes_shipped: s.compressed_bytes,
        }),
        last_contact_unix: contact.or(before.last_contact_unix),
    };
    // Escalation counts from the first pass and the last contact: those
    // must survive a power cut. The rest is a report of the last pass, so
    // a pass that changed neither (an empty one, every timer tick) costs
    // no fsync; a lost report reads as none.
    let durable = state.first_pass_unix != before.first_pass_unix
        || state.last_contact_unix != before.last_contact_unix;
    if let Err(e) = state.write(&cfg.data_dir, durable) {
        warn!("cannot write {}: {e}", state::path(&cfg.data_dir).display());
    }
}

struct Pass<'a> {
    /// When the receiver last gave a verdict on an upload in this pass.
    contact: Option<u64>,
    cfg: &'a ShipperConfig,
    opts: PackOptions,
    session: Session<'a>,
    dirs: Dirs,
    summary: Summary,
    /// Episodes moved to `shipped/` without a directory fsync yet (see
    /// `retire`): synced once, at the end of the pass.
    unsynced_moves: bool,
}

/// What `finish` did with a confirmed episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finished {
    Retired,
    /// Not retired: the episode is not the tree that was confirmed.
    Changed,
    /// Not retired, and already logged and counted.
    Counted,
}

impl Pass<'_> {
    /// Makes this pass's moves to `shipped/` durable before it reports
    /// them. A failure loses nothing: a move a power cut undoes is packed
    /// again and answered 200.
    fn sync_moves(&mut self) {
        if std::mem::take(&mut self.unsynced_moves) {
            if let Err(e) = retire::sync_moves(&self.dirs) {
                warn!("{e}; a power cut may bring shipped episodes back to episodes/, and the next pass ships them again (answered 200)");
            }
        }
    }

    /// Retention, at the end of every pass (also a stopped one: a lab disk
    /// filling up does not wait for the receiver). Its failures are logged;
    /// they never fail the pass.
    fn retain(&mut self) {
        let r = retention::plan(&self.dirs, &self.cfg.retention, SystemTime::now())
            .and_then(|plan| retention::apply(&self.dirs, &plan));
        match r {
            Ok((n, bytes)) => {
                self.summary.deleted = n;
                self.summary.deleted_bytes = bytes;
            }
            Err(e) => warn!("retention of {}: {e}", self.dirs.shipped.display()),
        }
    }

    /// Exit 75 is success to systemd: a receiver unreachable for days (a
    /// wrong firewall drop-in, a revoked route) would never alert. When
    /// finished work still waiting has waited longer than
    /// `alert_after_hours`, and the receiver has given no verdict for that
    /// long (counted from the first pass if it never has), the pass fails
    /// with 69 and says why.
    fn escalate(&mut self, ready: &[String], before: &State) {
        if self.contact.is_some() || self.summary.exit_code() != exit::TEMPFAIL {
            return;
        }
        let now = SystemTime::now();
        let oldest = ready
            .iter()
            .filter(|id| !self.dirs.conflict(id).exists())
            .filter_map(|id| fs::symlink_metadata(self.dirs.episode(id).join(MARKER)).ok())
            .filter_map(|m| m.modified().ok())
            .min();
        let Some(oldest) = oldest else { return };
        let limit = self.cfg.alert_after;
        let waited = now.duration_since(oldest).unwrap_or_default();
        let since = before
            .last_contact_unix
            .or(before.first_pass_unix)
            .map_or(now, state::from_unix);
        let silent = now.duration_since(since).unwrap_or_default();
        if waited > limit && silent > limit {
            error!(
                "finished work has waited {:.0} h and the receiver has given no verdict for {:.0} h (last: {}):                  more than alert_after_hours = {}; check --ping and the network path (firewall, VPN, IPAddressAllow=)",
                waited.as_secs_f64() / 3600.0,
                silent.as_secs_f64() / 3600.0,
                before
                    .last_contact_unix
                    .map_or("never".to_owned(), |t| timefmt::rfc3339(state::from_unix(t))),
                limit.as_secs() / 3600
            );
            self.summary.escalated = true;
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
        if !self.retire_from_receipt(id) {
            return;
        }
        let shipped = match prepare::existing(&self.dirs, id) {
            Ok(Some(t)) => {
                let sent = upload::upload(&mut self.session, self.cfg, id, &t, Attempt::Again);
                Ok((t, sent))
            }
            Ok(None) if self.cfg.upload_while_packing => {
                stream::stream(&mut self.session, self.cfg, &self.dirs, &self.opts, id)
            }
            Ok(None) => prepare::pack(&self.dirs, &self.opts, id).map(|t| {
                let sent = upload::upload(&mut self.session, self.cfg, id, &t, Attempt::First);
                (t, sent)
            }),
            Err(e) => Err(e),
        };
        let (tarball, sent) = match shipped {
            Ok(x) => x,
            Err(e) if e.needs_human() => {
                error!("{id}: {e}; keeping it, will try again next pass");
                self.summary.rejected += 1;
                return;
            }
            Err(e) => {
                warn!("{id}: {e}; will retry next pass");
                self.summary.retry += 1;
                return;
            }
        };
        match sent {
            Ok(sent) => {
                self.summary.bytes_sent += sent.bytes;
                let v = verdict::verdict(sent.resp.status, sent.resp.reply.as_ref());
                if v.is_contact() {
                    self.contact = Some(state::unix(SystemTime::now()));
                }
                self.apply(id, v, &tarball, &sent);
            }
            Err(e) => self.failed(id, &e),
        }
    }

    /// An episode the receiver confirmed in an earlier pass retires from
    /// its receipt, without another upload. False when the episode is done
    /// with for this pass; true to go on and upload it (no receipt, or the
    /// episode is no longer what was confirmed).
    fn retire_from_receipt(&mut self, id: &str) -> bool {
        let receipt = self.dirs.receipt(id);
        let Some(record) = Record::read(&receipt) else {
            if receipt.exists() {
                warn!(
                    "{}: unreadable; uploading again (the receiver answers 200 for bytes it holds)",
                    receipt.display()
                );
                let _ = remove_if_exists(&receipt);
            }
            return true;
        };
        // A crash between the receipt and the tarball's delete leaves both.
        let _ = remove_if_exists(&self.dirs.tarball(id));
        let sha = to_hex(&record.sha256);
        match self.finish(id, &record, || {
            format!("already present (the receiver confirmed sha256 {sha} in an earlier pass)")
        }) {
            Finished::Retired => self.summary.already_present += 1,
            Finished::Counted => {}
            // A new recording under the id (or more files): it is not what
            // the receiver confirmed, so it ships like any other episode
            // now, and meets the receiver's 409 if the id is taken.
            Finished::Changed => {
                self.forget_confirmed(id, &record, "packing it now");
                return true;
            }
        }
        false
    }

    /// No answer: `verdict::on_error` says whether the pass goes on.
    fn failed(&mut self, id: &str, e: &ClientError) {
        match verdict::on_error(e) {
            Verdict::Stop(stop) => self.stop(id, stop, &format!("{e}; {}", e.hint())),
            _ => {
                warn!("{id}: upload failed: {e}; will retry next pass");
                self.summary.retry += 1;
            }
        }
    }

    /// Stops the pass: the rest of the queue would meet the same fate.
    fn stop(&mut self, id: &str, stop: Stop, why: &str) {
        let code = stop.exit_code();
        if code == exit::TEMPFAIL {
            warn!(
                "{id}: {}: {why}; stopping this pass, the next one retries",
                stop.what()
            );
            self.summary.retry += 1;
        } else {
            error!("{id}: {}: {why}; stopping this pass", stop.what());
        }
        self.summary.stopped = Some(code);
    }

    fn apply(&mut self, id: &str, v: Verdict, t: &Tarball, sent: &Sent) {
        let (resp, secs) = (&sent.resp, sent.secs);
        match v {
            Verdict::Retire { stored } => {
                // Nothing to record when the tarball never reached the
                // disk: the episode itself is what a crash would find (and
                // a retire that must wait records it, in `finish`).
                if t.kept {
                    if let Err(e) = retire::confirm(&self.dirs, id, &t.record) {
                        warn!("{id}: the receiver has it, but recording that locally failed: {e}; the next pass asks again");
                        self.summary.retry += 1;
                        return;
                    }
                }
                let sizes = match t.packed {
                    // Packed and sent at once: one time for both.
                    Some((raw, _)) if sent.streamed => format!(
                        "{:.1} MB raw -> {:.1} MB ({:.0}%), packed and",
                        raw as f64 / 1e6,
                        t.size as f64 / 1e6,
                        t.size as f64 * 100.0 / raw.max(1) as f64
                    ),
                    Some((raw, pack_secs)) => format!(
                        "{:.1} MB raw -> {:.1} MB ({:.0}%), packed in {pack_secs:.1}s,",
                        raw as f64 / 1e6,
                        t.size as f64 / 1e6,
                        t.size as f64 * 100.0 / raw.max(1) as f64
                    ),
                    None => format!("{:.1} MB (packed earlier),", t.size as f64 / 1e6),
                };
                let sizes = match sent.resumed_from {
                    Some(from) => format!(
                        "{sizes} resumed at {:.1} MB ({:.1} MB sent),",
                        from as f64 / 1e6,
                        sent.bytes as f64 / 1e6
                    ),
                    None => sizes,
                };
                let rate = sent.bytes as f64 / secs.max(1e-6) / 1e6;
                let limit = self.cfg.max_upload_rate.map_or(String::new(), |r| {
                    format!(" (at most {})", crate::shipper::client::pace::show_rate(r))
                });
                let outcome = if stored { "stored" } else { "already present" };
                let sha = to_hex(&t.record.sha256);
                match self.finish(id, &t.record, || {
                    format!(
                        "{outcome}: {sizes} uploaded in {secs:.1}s at {rate:.1} MB/s{limit}, sha256 {sha}"
                    )
                }) {
                    Finished::Retired => {
                        self.summary.compressed_bytes += t.size;
                        if stored {
                            self.summary.stored += 1;
                        } else {
                            self.summary.already_present += 1;
                        }
                    }
                    Finished::Changed => {
                        self.forget_confirmed(id, &t.record, "repacking it next pass");
                        self.summary.retry += 1;
                    }
                    Finished::Counted => {}
                }
            }
            Verdict::Quarantine { theirs } => {
                let theirs = theirs.unwrap_or_else(|| "unknown".into());
                let ours = to_hex(&t.record.sha256);
                let note = format!(
                    "episode: {id}\nlocal_sha256: {ours}\nreceiver_sha256: {theirs}\ntime: {}\n\
                     The receiver holds other bytes under this id. Compare the two, keep the right one\n\
                     (see docs/transport.md, \"Conflicts\"), then delete this file to ship again.\n",
                    timefmt::now()
                );
                let file = self.quarantine(id, &note);
                error!(
                    "{id}: conflict: the receiver holds sha256 {theirs}, ours is {ours}; quarantined, remove {} after resolving",
                    file.display()
                );
            }
            Verdict::Repack => {
                // Our recorded digest or the tarball is wrong: trust neither.
                warn!(
                    "{id}: receiver says the body does not match its digest ({}); repacking next pass",
                    resp.explain()
                );
                let _ = remove_if_exists(&t.path);
                let _ = remove_if_exists(&self.dirs.sidecar(id));
                let _ = sync_dir(&self.dirs.outbox);
                self.summary.retry += 1;
            }
            Verdict::Stop(Stop::Credentials) => {
                let why = format!(
                    "{} {}: check token_file and cert_file for host {}",
                    resp.status,
                    resp.explain(),
                    self.cfg.host_id
                );
                self.stop(id, Stop::Credentials, &why);
            }
            Verdict::Stop(stop) => {
                let why = format!("receiver answered {} ({})", resp.status, resp.explain());
                self.stop(id, stop, &why);
            }
            Verdict::Retry => {
                warn!(
                    "{id}: receiver answered {} ({}); will retry next pass",
                    resp.status,
                    resp.explain()
                );
                self.summary.retry += 1;
            }
            Verdict::Rejected => {
                error!(
                    "{id}: receiver rejected the upload with {}: {}; keeping everything",
                    resp.status,
                    resp.explain()
                );
                self.summary.rejected += 1;
            }
        }
    }

    /// Writes `outbox/<id>.conflict` (the episode is skipped until an
    /// operator deletes it) and counts the conflict.
    fn quarantine(&mut self, id: &str, note: &str) -> PathBuf {
        let file = self.dirs.conflict(id);
        if let Err(e) = write_durably(&file, note.as_bytes()) {
            error!("{id}: cannot write {}: {e}", file.display());
        }
        self.summary.conflicts += 1;
        file
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
        let e = match retire::retire(&self.dirs, id, record) {
            Ok(durable) => {
                self.unsynced_moves |= !durable;
                info!("{id}: {}", done());
                return Finished::Retired;
            }
            Err(RetireError::Changed) => return Finished::Changed,
            Err(e) => e,
        };
        // Sent while packed, there is no receipt yet: a retire that has to
        // wait needs one, or every pass would pack and ask again.
        if fs::symlink_metadata(self.dirs.receipt(id)).is_err() {
            if let Err(e) = retire::confirm(&self.dirs, id, record) {
                warn!("{id}: recording the receiver's confirmation failed: {e}; the next pass asks again");
            }
        }
        if let RetireError::Duplicate = e {
            let note = format!(
                "episode: {id}\nlocal_sha256: {}\ntime: {}\n\
                 The receiver confirmed episodes/{id} (this sha256), but shipped/{id} already exists:\n\
                 two directories under one id. Nothing was deleted. Compare them; if they are the same\n\
                 recording delete episodes/{id}, else move one of them away (a new id ships as new);\n\
                 then delete this file.\n",
                to_hex(&record.sha256),
                timefmt::now()
            );
            let file = self.quarantine(id, &note);
            error!(
                "{id}: the receiver has it, but shipped/{id} already exists: a second copy under one id, kept in episodes/ for a human; see {}",
                file.display()
            );
        } else if e.needs_human() {
            error!(
                "{id}: the receiver has it, but {e}; {} The receipt in outbox/ keeps it from being uploaded again.",
                e.fix()
            );
            self.summary.rejected += 1;
        } else {
            warn!("{id}: the receiver has it, but {e}; the next pass finishes (nothing is uploaded again)");
            self.summary.retry += 1;
        }
        Finished::Counted
    }
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
