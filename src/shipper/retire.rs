//! After the receiver confirmed an upload: record that (`confirm`), then
//! move the episode to `shipped/` (`retire`).
//!
//! ```text
//! confirm: rename outbox/<id>.tar.zst.sha256 -> outbox/<id>.receipt
//!          (streamed, no sidecar: write the receipt from the record)
//!          unlink outbox/<id>.tar.zst; fsync(outbox/)
//! retire:  episodes/<id> still the tree in the receipt?  no -> Changed
//!          shipped/<id> exists?                           yes -> Duplicate
//!          rename episodes/<id> -> shipped/<id>
//!          a receipt?  fsync(episodes/), fsync(shipped/); unlink receipt
//!          none        (sent while packed): the pass syncs both once, at its end
//! ```
//! Why an episode without a receipt needs no fsync of its own: the receipt
//! is the only thing whose deletion relies on the move being durable. An
//! episode streamed to the receiver has none (its tarball never reached
//! the disk), so a power cut that undoes its move only puts it back in
//! `episodes/`: the next pass packs the same tree to the same bytes, and
//! the receiver, which holds them, answers 428 to the stream and 200 to the
//! digest. Nothing is lost or stored twice; one fsync of each directory per
//! pass (`sync_moves`) makes the pass's moves durable before it reports.
//! The receipt makes a retire that has to wait (for a human, for the next
//! pass) cost no disk and no second upload. Nothing here ever deletes an
//! episode directory: a second copy under one id is a human's call.

use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::fault;
use crate::fsutil::{remove_if_exists, sync_dir};
use crate::shipper::outbox::{Dirs, Record};
use crate::shipper::prepare::{still_packed_tree, write_durably};

/// Why an episode the receiver confirmed was not moved to `shipped/`.
#[derive(Debug)]
pub enum RetireError {
    /// `episodes/<id>` is no longer the tree that was packed and confirmed:
    /// the recorder changed it, or wrote a new recording under the id.
    Changed,
    /// `shipped/<id>` already exists: a second copy under one id.
    Duplicate,
    /// The move or a sync failed. `needs_human` when no later pass can heal
    /// it (permissions, another file system, read-only).
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl RetireError {
    fn io(what: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> RetireError {
        move |source| RetireError::Io { what, path, source }
    }

    /// Whether a later pass can succeed where this one failed. Permissions,
    /// another file system and a read-only mount stay as they are until
    /// someone acts; a full disk or an I/O hiccup may pass.
    pub fn needs_human(&self) -> bool {
        match self {
            RetireError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EXDEV | libc::EROFS)
            ),
            RetireError::Duplicate => true,
            RetireError::Changed => false,
        }
    }

    /// What an operator does about it, one sentence.
    pub fn fix(&self) -> &'static str {
        let RetireError::Io { source, .. } = self else {
            return "see docs/transport.md, \"Conflicts\".";
        };
        match source.raw_os_error() {
            Some(libc::EXDEV) => {
                "episodes/ and shipped/ must be on one file system (a rename cannot cross mounts): \
                 do not mount shipped/ separately."
            }
            Some(libc::EROFS) => "data_dir is on a read-only file system: remount it read-write.",
            Some(libc::EACCES | libc::EPERM) => {
                "moving a directory needs write permission on it (its `..` changes) as well as on \
                 episodes/ and shipped/: run the recorder with umask 0007 and group cis490 \
                 (docs/deploy.md, ownership), then `chmod -R g+rwX` the stuck episode."
            }
            _ => "the next pass tries again.",
        }
    }
}

impl fmt::Display for RetireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetireError::Changed => f.write_str("the episode changed after it was packed"),
            RetireError::Duplicate => f.write_str("shipped/ already holds this id"),
            RetireError::Io { what, path, source } => {
                write!(f, "{what} {} failed: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for RetireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RetireError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Records that the receiver holds the tarball's bytes (`record`): the
/// sidecar becomes `outbox/<id>.receipt` and the tarball goes. A tarball
/// sent while it was packed and taken at once never had a sidecar: its
/// receipt is written from `record`, so that a retire that has to wait
/// (permissions, a second copy in shipped/) waits without another upload,
/// as for any tarball. Idempotent: a crash anywhere here is finished by the
/// receipt path of the next pass (before the receipt exists: a repack,
/// answered 200 digest-first).
pub fn confirm(dirs: &Dirs, id: &str, record: &Record) -> io::Result<()> {
    let sidecar = dirs.sidecar(id);
    if sidecar.exists() {
        fs::rename(&sidecar, dirs.receipt(id))?;
    } else {
        write_durably(&dirs.receipt(id), record.to_text(id).as_bytes())?;
    }
    fault::point("ship.after_receipt");
    remove_if_exists(&dirs.tarball(id))?;
    // The receipt must survive a power cut before the retire relies on it;
    // a lost tarball delete is tidied by the next pass.
    sync_dir(&dirs.outbox)?;
    fault::point("ship.after_confirm");
    Ok(())
}

/// Moves the episode to `shipped/`: the receiver confirmed it holds the
/// bytes packed from it. Only if the episode is still the tree that was
/// packed (else those bytes are not this episode), and never over an
/// existing `shipped/<id>` (a second copy is a human's call, never a
/// silent delete).
///
/// `Ok(true)`: the move is durable; `Ok(false)`: it still needs
/// [`sync_moves`] (there was no receipt to wait for it).
pub fn retire(dirs: &Dirs, id: &str, record: &Record) -> Result<bool, RetireError> {
    let from = dirs.episode(id);
    let to = dirs.shipped(id);
    let receipt = dirs.receipt(id);
    let has_receipt = fs::symlink_metadata(&receipt).is_ok();
    if let Some(t) = &record.tree {
        if !still_packed_tree(dirs, id, t) {
            return Err(RetireError::Changed);
        }
    }
    if fs::symlink_metadata(&to).is_ok() {
        return Err(RetireError::Duplicate);
    }
    fs::rename(&from, &to).map_err(RetireError::io("moving it to shipped/:", from.clone()))?;
    fault::point("ship.after_rename");
    if has_receipt {
        sync_moves(dirs)?;
    }
    fault::point("ship.after_dirfsync");
    note_shipped(dirs, id, record);
    if has_receipt {
        // The receipt has done its job. Not synced: if a power cut brings
        // it back, its episode is gone from episodes/ and tidy removes it.
        remove_if_exists(&receipt).map_err(RetireError::io("removing", receipt.clone()))?;
    }
    fault::point("clean.after_unlink");
    Ok(has_receipt)
}

/// Makes every move from `episodes/` to `shipped/` so far durable.
pub fn sync_moves(dirs: &Dirs) -> Result<(), RetireError> {
    sync_dir(&dirs.episodes).map_err(RetireError::io("syncing", dirs.episodes.clone()))?;
    sync_dir(&dirs.shipped).map_err(RetireError::io("syncing", dirs.shipped.clone()))
}

/// Keeps `receipts/<id>`: the record with the time of the retire,
/// which retention goes by (never by mtimes the recorder set). Best effort
/// and not synced: it is a report, and if it is lost (a crash, a power
/// cut) retention falls back to the ctime of `shipped/<id>`, which our
/// rename set at about the same moment and no user can set back.
fn note_shipped(dirs: &Dirs, id: &str, record: &Record) {
    let note = Record {
        shipped: Some(crate::timefmt::unix(std::time::SystemTime::now())),
        ..record.clone()
    };
    // `.tmp-<id>`: a leading dot, so never the name of an id.
    let tmp = dirs.receipts.join(format!(".tmp-{id}"));
    let _ = fs::create_dir_all(&dirs.receipts).and_then(|()| {
        fs::write(&tmp, note.to_text(id))?;
        fs::rename(&tmp, dirs.shipped_record(id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_heals_and_what_needs_a_human() {
        let io = |errno| RetireError::Io {
            what: "moving it to shipped/:",
            path: PathBuf::from("/d/episodes/e"),
            source: io::Error::from_raw_os_error(errno),
        };
        for errno in [libc::EACCES, libc::EPERM, libc::EXDEV, libc::EROFS] {
            assert!(io(errno).needs_human(), "{errno}");
        }
        for errno in [libc::ENOSPC, libc::EIO, libc::EBUSY] {
            assert!(!io(errno).needs_human(), "{errno}");
            assert_eq!(io(errno).fix(), "the next pass tries again.");
        }
        assert!(io(libc::EXDEV).fix().contains("one file system"));
        assert!(io(libc::EACCES).fix().contains("umask 0007"));
        assert_eq!(
            io(libc::EACCES).to_string(),
            "moving it to shipped/: /d/episodes/e failed: Permission denied (os error 13)"
        );
    }
}
