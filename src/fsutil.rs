//! The few file-system steps both state machines lean on for durability.
//!
//! `fsync(2)` of a file does not persist its directory entry, so every
//! rename or link that publishes something is followed by `sync_dir` of the
//! directory that changed (and a new directory's parent). A failed fsync is
//! never retried: Linux may have dropped the dirty pages and cleared the
//! error, so a second fsync "succeeds" over lost data (PostgreSQL's
//! fsyncgate). Callers treat it as the end of that attempt.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::fault;

/// fsync a directory, so renames, links and unlinks in it survive power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fault::io("sync_dir")?;
    File::open(dir)?.sync_all()
}

/// fsync a file's data and metadata.
pub fn sync_file(f: &File) -> io::Result<()> {
    fault::io("sync_file")?;
    f.sync_all()
}

/// ENOSPC, EDQUOT or EFBIG: the disk (or quota, or file size limit) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    ) || e.kind() == io::ErrorKind::StorageFull
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a small file so that `dest` is either absent (or its old
/// version) or complete: write `tmp`, fsync it, rename it over `dest`. The
/// caller fsyncs the directory when the rename must be durable, and picks a
/// `tmp` name no one else uses at the same time. On error `tmp` is removed.
pub fn write_atomically(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via(tmp, dest, bytes, true)
}

/// `write_atomically` without the file fsync, for caches whose reader
/// rejects what a power cut can leave of an unsynced file (nothing, or
/// zeros) and falls back to the truth.
pub fn write_cache(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via(tmp, dest, bytes, false)
}

fn write_via(tmp: &Path, dest: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(bytes)?;
        if sync {
            sync_file(&f)?;
        }
        fs::rename(tmp, dest)
    })();
    if res.is_err() {
        let _ = fs::remove_file(tmp);
    }
    res
}
