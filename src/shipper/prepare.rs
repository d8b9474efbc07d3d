//! The tarball to upload for an episode: the one already in `outbox/` when
//! the episode is still the tree it was packed from, else a fresh pack.
//!
//! ```text
//! outbox/<id>.tar.zst exists?  empty -> delete, pack
//!                              record with a tree: episode still that tree? yes -> reuse
//!                                                                      no  -> delete, pack
//!                              record without a tree (older version)       -> reuse
//!                              no readable record -> hash once, write one  -> reuse
//! pack: .partial (create_new) -> pack_episode (-> also the upload's body, streaming)
//!   keep:    fsync -> record (tmp, fsync, rename) -> rename to .tar.zst -> fsync(outbox/)
//!   discard: unlink .partial, never synced          (streamed, and the receiver has it)
//! ```
//! This module owns those steps and their crash points (`pack.*`) and
//! classifies a failed pack (retry or a human). It does not upload, retire
//! or log outcomes: `upload`, `stream` and `queue` do.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fault;
use crate::fsutil::{self, remove_if_exists, sync_dir};
use crate::hashing;
use crate::shipper::outbox::{Dirs, Record};
use crate::shipper::pack::{self, PackError, PackOptions};
use crate::shipper::progress::Progress;
use crate::shipper::tree;
use crate::{info, warn};

/// Passes in a row an episode may change while it is packed before the
/// shipper stops retrying quietly and asks for a human (65): a recorder
/// that still writes after `done.marker` is a bug to fix, not a race to win.
pub const UNSTABLE_PASSES: u32 = 3;

/// A finished tarball ready to upload.
pub struct Tarball {
    pub path: PathBuf,
    pub record: Record,
    pub size: u64,
    /// Set when packed in this pass: raw bytes and seconds.
    pub packed: Option<(u64, f64)>,
    /// Whether it is in `outbox/` with its sidecar. Not when it was sent
    /// while packed and the receiver held it: then there is no sidecar to
    /// turn into a receipt, and the local copy is already gone.
    pub kept: bool,
}

/// Why an episode has no tarball to upload this pass.
#[derive(Debug)]
pub enum PrepError {
    /// Packing failed; the `.partial` is gone. `outbox` names where space
    /// is missing when that is the cause.
    Pack { source: PackError, outbox: PathBuf },
    /// The recorder still writes after `done.marker`, pass after pass.
    StillWriting {
        source: PackError,
        passes: u32,
        count_file: PathBuf,
    },
    /// A step around the pack failed: what, on which path.
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl PrepError {
    /// Retrying will not help: counted as rejected, so the pass exits 65
    /// and an alert fires. Permissions do not fix themselves between
    /// passes, nor does a recorder that writes after its marker.
    pub fn needs_human(&self) -> bool {
        match self {
            PrepError::Pack {
                source: PackError::Read { source, .. },
                ..
            } => source.kind() == io::ErrorKind::PermissionDenied,
            PrepError::StillWriting { .. } => true,
            _ => false,
        }
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PrepError {
        let path = path.to_owned();
        move |source| PrepError::Io { what, path, source }
    }
}

impl fmt::Display for PrepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepError::Pack { source, outbox } if source.is_no_space() => {
                write!(f, "packing: {source} (free space in {})", outbox.display())
            }
            PrepError::Pack { source, .. } if self.needs_human() => write!(
                f,
                "packing: {source} (the shipper's user must be able to read every file: see docs/deploy.md, ownership)"
            ),
            PrepError::Pack { source, .. } => write!(f, "packing: {source}"),
            PrepError::StillWriting {
                source,
                passes,
                count_file,
            } => {
                let file = match source {
                    PackError::Changed { path, .. } => path.display().to_string(),
                    _ => "a file".into(),
                };
                write!(
                    f,
                    "the recorder is still writing {file} after done.marker ({passes} passes in a row): {source}. \
                     Fix the recorder to write done.marker last; delete {} to start counting again",
                    count_file.display()
                )
            }
            PrepError::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PrepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrepError::Pack { source, .. } | PrepError::StillWriting { source, .. } => Some(source),
            PrepError::Io { source, .. } => Some(source),
        }
    }
}

/// The tarball in outbox/ for `id`, if a pass already made it and the
/// episode is still the tree it was made from; else `None` (and a stale
/// one is deleted): pack it.
pub fn existing(dirs: &Dirs, id: &str) -> Result<Option<Tarball>, PrepError> {
    let path = dirs.tarball(id);
    let sidecar = dirs.sidecar(id);
    if let Ok(meta) = fs::metadata(&path) {
        if meta.len() == 0 {
            warn!("{}: empty tarball; repacking", path.display());
            remove_if_exists(&path).map_err(PrepError::io("removing", &path))?;
        } else if let Some(record) = Record::read(&sidecar) {
            let current = match &record.tree {
                None => true, // older than the check: see `outbox::Record`
                Some(t) => still_packed_tree(dirs, id, t),
            };
            if current {
                return Ok(Some(Tarball {
                    path,
                    record,
                    size: meta.len(),
                    packed: None,
                    kept: true,
                }));
            }
            warn!(
                "{id}: changed since {} was packed; repacking",
                path.display()
            );
            remove_if_exists(&path).map_err(PrepError::io("removing", &path))?;
            remove_if_exists(&sidecar).map_err(PrepError::io("removing", &sidecar))?;
        } else {
            // A tarball without a trustworthy digest: hash it once.
            info!("{}: no recorded digest; hashing it", path.display());
            let (sha256, size) =
                hashing::sha256_file(&path).map_err(PrepError::io("hashing", &path))?;
            let record = Record {
                sha256,
                tree: None,
                shipped: None,
                key: None,
            };
            write_durably(&sidecar, record.to_text(id).as_bytes())
                .map_err(PrepError::io("writing", &sidecar))?;
            return Ok(Some(Tarball {
                path,
                record,
                size,
                packed: None,
                kept: true,
            }));
        }
    }
    Ok(None)
}

/// Whether `episodes/<id>` is still the tree `t` (an unreadable tree is
/// not: packing it again says why).
pub fn still_packed_tree(dirs: &Dirs, id: &str, t: &tree::Fingerprint) -> bool {
    tree::fingerprint(&dirs.episode(id), id).is_ok_and(|now| now == *t)
}

/// Packs `id` into a durable outbox tarball.
pub fn pack(dirs: &Dirs, opts: &PackOptions, id: &str) -> Result<Tarball, PrepError> {
    pack_into(dirs, opts, id, None, None)?.keep(dirs, id)
}

/// A tarball just packed into `outbox/<id>.tar.zst.partial`, not durable
/// yet: [`Fresh::keep`] makes it the outbox tarball, [`Fresh::discard`]
/// deletes it (the receiver already holds it).
pub struct Fresh {
    file: File,
    partial: PathBuf,
    record: Record,
    size: u64,
    raw: u64,
    secs: f64,
}

/// Packs `episodes/<id>` into `outbox/<id>.tar.zst.partial`; with `also`,
/// every compressed byte is written there too, as it is made (the body of
/// a streamed upload), and `key` (its `Upload-Key`) goes into the record.
/// A failure leaves no `.partial` behind.
pub fn pack_into(
    dirs: &Dirs,
    opts: &PackOptions,
    id: &str,
    also: Option<&mut dyn Write>,
    key: Option<String>,
) -> Result<Fresh, PrepError> {
    fault::point("pack.start");
    let dir = dirs.episode(id);
    let partial = dirs.partial(id);
    remove_if_exists(&partial).map_err(PrepError::io("removing", &partial))?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(PrepError::io("creating", &partial))?;
    let started = Instant::now();
    let label = if also.is_some() {
        format!("{id}: packing and uploading")
    } else {
        format!("{id}: packing")
    };
    let mut progress = Progress::new(&label, None);
    if progress.enabled() {
        // Only for the ETA on a terminal: a metadata-only walk, no data read.
        if let Ok(t) = tree::fingerprint(&dir, id) {
            progress.set_total(t.bytes);
        }
    }
    let mut mid_hit = false;
    let out = Tee { file, also };
    let result = pack::pack_episode(&dir, id, out, opts, &mut |raw| {
        progress.update(raw);
        if !mid_hit && raw > 0 {
            mid_hit = true;
            fault::point("pack.mid_write");
        }
    });
    progress.finish();
    let (out, packed) = result.map_err(|source| {
        let _ = remove_if_exists(&partial);
        failed(dirs, id, source)
    })?;
    for w in &packed.warnings {
        warn!("{id}: {w}");
    }
    // The count of unstable passes ends with a pack that held still.
    let _ = remove_if_exists(&dirs.unstable(id));
    Ok(Fresh {
        file: out.file,
        partial,
        record: Record {
            sha256: packed.sha256,
            tree: Some(packed.tree),
            shipped: None,
            key,
        },
        size: packed.compressed_bytes,
        raw: packed.raw_bytes,
        secs: started.elapsed().as_secs_f64(),
    })
}

impl Fresh {
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// fsync, record, rename, fsync(outbox/): the tarball survives a crash
    /// and the next pass reuses it. A failure leaves no `.partial` behind.
    pub fn keep(self, dirs: &Dirs, id: &str) -> Result<Tarball, PrepError> {
        self.keep_as(dirs, id, false)
    }

    /// `keep` for a tarball whose upload is over for this pass (a stream
    /// that failed): once synced its pages are dropped from the page
    /// cache, where they would only push out the robot's until a later
    /// pass (the pack-first path keeps them: the upload reads them next).
    pub fn keep_cold(self, dirs: &Dirs, id: &str) -> Result<Tarball, PrepError> {
        self.keep_as(dirs, id, true)
    }

    fn keep_as(self, dirs: &Dirs, id: &str, cold: bool) -> Result<Tarball, PrepError> {
        let final_path = dirs.tarball(id);
        let sidecar = dirs.sidecar(id);
        let partial = &self.partial;
        let cleanup = |e: PrepError| {
            let _ = remove_if_exists(partial);
            e
        };
        fsutil::sync_file(&self.file).map_err(|e| cleanup(PrepError::io("syncing", partial)(e)))?;
        if cold {
            crate::dirfd::advise(&self.file, crate::dirfd::Advice::DontNeed);
        }
        fault::point("pack.after_fsync");
        write_durably(&sidecar, self.record.to_text(id).as_bytes())
            .map_err(|e| cleanup(PrepError::io("writing", &sidecar)(e)))?;
        fault::point("pack.after_sidecar");
        fs::rename(partial, &final_path)
            .map_err(|e| cleanup(PrepError::io("renaming", partial)(e)))?;
        fault::point("pack.after_rename");
        sync_dir(&dirs.outbox).map_err(PrepError::io("syncing", &dirs.outbox))?;
        fault::point("pack.after_dirfsync");
        Ok(Tarball {
            path: final_path,
            record: self.record,
            size: self.size,
            packed: Some((self.raw, self.secs)),
            kept: true,
        })
    }

    /// The receiver holds these bytes durably: the local copy goes without
    /// ever being synced (a crash before the receipt packs again, and the
    /// receiver answers that digest with 200).
    pub fn discard(self, dirs: &Dirs, id: &str) -> Tarball {
        drop(self.file);
        let _ = remove_if_exists(&self.partial);
        Tarball {
            path: dirs.tarball(id),
            record: self.record,
            size: self.size,
            packed: Some((self.raw, self.secs)),
            kept: false,
        }
    }
}

/// Packing's output: the `.partial` file and, when streaming, the body of
/// the upload. The file comes first: it is what a retry resumes from, and
/// its errors (disk full) fail the pack; the body swallows its own
/// (`ChunkedBody`).
struct Tee<'a> {
    file: File,
    also: Option<&'a mut dyn Write>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(w) = &mut self.also {
            w.write_all(&buf[..n])?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A failed pack as a `PrepError`: an episode that changed while packed
/// is retried quietly a few times (a recorder finishing late), then needs
/// a human.
fn failed(dirs: &Dirs, id: &str, source: PackError) -> PrepError {
    if matches!(source, PackError::Changed { .. }) {
        let passes = count_unstable_pass(dirs, id);
        if passes >= UNSTABLE_PASSES {
            return PrepError::StillWriting {
                source,
                passes,
                count_file: dirs.unstable(id),
            };
        }
    }
    PrepError::Pack {
        source,
        outbox: dirs.outbox.clone(),
    }
}

/// Adds one to `outbox/<id>.unstable` and returns the new count.
fn count_unstable_pass(dirs: &Dirs, id: &str) -> u32 {
    let path = dirs.unstable(id);
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

/// Writes a small outbox file (record, conflict note, count) via
/// `<name>.tmp`; only one pass runs at a time (the lock), and the next
/// pass's tidy removes a stale `.tmp`.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fsutil::write_atomically(Path::new(&tmp), path, bytes)
}
