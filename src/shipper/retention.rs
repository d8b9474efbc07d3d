//! Retention of `shipped/`: which retired episodes to delete
//! (`keep_shipped_days`, `min_free_percent`), and deleting them so that a
//! crash never leaves a half-deleted episode that looks whole.
//!
//! Only `shipped/` is ever touched: what is there the receiver confirmed
//! (byte for byte, by digest) before the retire moved it. Never `episodes/`,
//! never `outbox/`.
//!
//! ```text
//! plan:   each shipped/<id>: when it was shipped (receipts/<id>, else the
//!         ctime our retire rename set), its size
//!         keep_shipped_days: older than that -> delete
//!         min_free_percent:  while the file system is below it, the oldest
//!                            left -> delete (counting what is freed)
//! apply:  rename shipped/<id> -> trash/<id>; fsync(shipped/); unlink
//!         receipts/<id>; delete trash/<id>
//! start of every pass: empty trash/ (a crash mid-delete)
//! ```
//! A rename is atomic: `shipped/<id>` is either whole or gone, and a
//! half-deleted tree only ever exists under `trash/`, which nothing reads.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::config::Retention;
use crate::dirfd;
use crate::fault;
use crate::fsutil::{remove_if_exists, sync_dir};
use crate::ids;
use crate::shipper::outbox::{Dirs, Record};
use crate::shipper::state;
use crate::shipper::tree;
use crate::{info, warn};

/// One shipped episode to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    /// Which rule chose it, for the log line.
    pub why: String,
    pub bytes: u64,
}

/// A shipped episode as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub id: String,
    /// Seconds since the epoch.
    pub shipped_at: u64,
    pub bytes: u64,
}

/// What to delete, oldest first: a pure decision over the shipped episodes,
/// the rules, the time and the file system's space.
pub fn decide(
    mut shipped: Vec<Shipped>,
    rules: &Retention,
    now: u64,
    space: Option<dirfd::Space>,
) -> Vec<Deletion> {
    shipped.sort_by(|a, b| (a.shipped_at, &a.id).cmp(&(b.shipped_at, &b.id)));
    let mut out = Vec::new();
    let mut freed = 0u64;
    for s in shipped {
        let age_days = now.saturating_sub(s.shipped_at) / 86_400;
        let why = if rules
            .keep_days
            .is_some_and(|d| now.saturating_sub(s.shipped_at) >= d * 86_400)
        {
            format!(
                "shipped {age_days} day(s) ago, keep_shipped_days = {}",
                rules.keep_days.unwrap_or(0)
            )
        } else if let (Some(min), Some(sp)) = (rules.min_free_percent, space) {
            let free = (sp.available + freed) as f64 * 100.0 / sp.total.max(1) as f64;
            if free >= min as f64 {
                continue;
            }
            format!("{free:.1}% free < min_free_percent = {min}; oldest shipped ({age_days} day(s) ago)")
        } else {
            continue;
        };
        freed += s.bytes;
        out.push(Deletion {
            id: s.id,
            why,
            bytes: s.bytes,
        });
    }
    out
}

/// The shipped episodes on disk.
fn shipped(dirs: &Dirs) -> io::Result<Vec<Shipped>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(&dirs.shipped) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        r => r?,
    };
    for e in rd {
        let e = e?;
        let id = e.file_name().to_string_lossy().into_owned();
        if !ids::is_valid(&id) || !e.file_type()?.is_dir() {
            continue;
        }
        let record = Record::read(&dirs.shipped_record(&id));
        let shipped_at = match record.as_ref().and_then(|r| r.shipped) {
            Some(t) => t,
            // Our retire rename set it; no user can set it back.
            None => {
                use std::os::unix::fs::MetadataExt;
                e.metadata()?.ctime().max(0) as u64
            }
        };
        let bytes = match record.and_then(|r| r.tree) {
            Some(t) => t.bytes,
            None => tree::fingerprint(&e.path(), &id).map_or(0, |t| t.bytes),
        };
        out.push(Shipped {
            id,
            shipped_at,
            bytes,
        });
    }
    Ok(out)
}

/// What retention would delete now (read-only; `--dry-run` prints it).
pub fn plan(dirs: &Dirs, rules: &Retention, now: SystemTime) -> io::Result<Vec<Deletion>> {
    if rules.keep_days.is_none() && rules.min_free_percent.is_none() {
        return Ok(Vec::new());
    }
    let space = match rules.min_free_percent {
        Some(_) => Some(dirfd::space(
            dirs.shipped.parent().unwrap_or(&dirs.shipped),
        )?),
        None => None,
    };
    Ok(decide(shipped(dirs)?, rules, state::unix(now), space))
}

/// Deletes what `plan` chose, each crash-safely, logging each with its size.
/// Returns the number of episodes and bytes deleted.
pub fn apply(dirs: &Dirs, plan: &[Deletion]) -> io::Result<(u64, u64)> {
    let mut done = (0, 0);
    if plan.is_empty() {
        return Ok(done);
    }
    fs::create_dir_all(&dirs.trash)?;
    for d in plan {
        let from = dirs.shipped(&d.id);
        let to = dirs.trash.join(&d.id);
        // A leftover of the same name (a crash after the rename) goes first.
        remove_tree(&to)?;
        fs::rename(&from, &to)?;
        sync_dir(&dirs.shipped)?;
        fault::point("retain.after_trash");
        remove_if_exists(&dirs.shipped_record(&d.id))?;
        remove_tree(&to)?;
        info!(
            "deleted shipped/{} ({:.1} MB): {}",
            d.id,
            d.bytes as f64 / 1e6,
            d.why
        );
        done.0 += 1;
        done.1 += d.bytes;
    }
    Ok(done)
}

/// Empties `trash/`: what a crash left mid-delete.
pub fn empty_trash(dirs: &Dirs) {
    let Ok(rd) = fs::read_dir(&dirs.trash) else {
        return;
    };
    for e in rd.flatten() {
        // Its record first: a record without its episode describes nothing.
        let id = e.file_name().to_string_lossy().into_owned();
        let record = remove_if_exists(&dirs.shipped_record(&id)).map(|_| ());
        if let Err(err) = record.and_then(|()| remove_tree(&e.path())) {
            warn!("cannot empty {}: {err}", e.path().display());
        }
    }
}

fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn s(id: &str, days_ago: u64, bytes: u64) -> Shipped {
        Shipped {
            id: id.into(),
            shipped_at: 100 * DAY - days_ago * DAY,
            bytes,
        }
    }

    fn ids(d: &[Deletion]) -> Vec<&str> {
        d.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn the_rules() {
        let now = 100 * DAY;
        let eps = || vec![s("c", 1, 10), s("a", 10, 10), s("b", 5, 10), s("d", 0, 10)];
        // No rule: keep everything.
        assert!(decide(eps(), &Retention::default(), now, None).is_empty());
        // By age, oldest first.
        let r = Retention {
            keep_days: Some(5),
            min_free_percent: None,
        };
        assert_eq!(ids(&decide(eps(), &r, now, None)), ["a", "b"]);
        // 0: everything confirmed goes.
        let r = Retention {
            keep_days: Some(0),
            min_free_percent: None,
        };
        assert_eq!(ids(&decide(eps(), &r, now, None)), ["a", "b", "c", "d"]);
        // By space: oldest first until enough is free, counting what goes.
        let r = Retention {
            keep_days: None,
            min_free_percent: Some(20),
        };
        let space = dirfd::Space {
            total: 100,
            available: 5,
        };
        assert_eq!(ids(&decide(eps(), &r, now, Some(space))), ["a", "b"]);
        let roomy = dirfd::Space {
            total: 100,
            available: 50,
        };
        assert!(decide(eps(), &r, now, Some(roomy)).is_empty());
        // Both: the union, oldest first.
        let r = Retention {
            keep_days: Some(2),
            min_free_percent: Some(30),
        };
        let d = decide(eps(), &r, now, Some(space));
        assert_eq!(ids(&d), ["a", "b", "c"]);
        assert!(d[0].why.contains("keep_shipped_days = 2"), "{}", d[0].why);
        assert!(d[2].why.contains("min_free_percent = 30"), "{}", d[2].why);
    }
}
