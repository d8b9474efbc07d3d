//! The start of a pass: remove what a crash left in `outbox/` (see
//! docs/transport.md, "A pass", step 2), and nothing that might be the only
//! copy of something.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::fsutil::{remove_if_exists, sync_dir};
use crate::shipper::outbox::{self, Dirs, Name, Record};
use crate::shipper::tree;
use crate::{info, warn};

/// One thing tidy removes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub path: PathBuf,
    pub why: &'static str,
}

/// What a tidy would remove, and the warnings it would give: read-only,
/// so `--dry-run` can show it.
pub fn plan(dirs: &Dirs) -> io::Result<(Vec<Removal>, Vec<String>)> {
    let mut remove = Vec::new();
    let mut warnings = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dirs.outbox)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let in_episodes = |id: &str| dirs.episode(id).exists();
        let why = match outbox::parse(&name) {
            // Never uploaded, never renamed: a crash mid-pack. Repacked.
            Name::Partial(_) | Name::Temp => "unfinished",
            Name::Sidecar(id) if !dirs.tarball(id).exists() => "a record without its tarball",
            Name::Tarball(id) if !in_episodes(id) => {
                if shipped_copy_of(dirs, id) {
                    // Crash after the retire, before the outbox delete.
                    "its episode is in shipped/"
                } else {
                    warnings.push(format!(
                        "{} has no episode in episodes/ (nor the one it was packed from in shipped/); leaving it for an operator",
                        path.display()
                    ));
                    continue;
                }
            }
            // A receipt retires its episode, a count concerns its episode:
            // with the episode gone (a crash after the retire, or an
            // operator) they have no use.
            Name::Receipt(id) | Name::Unstable(id) if !in_episodes(id) => "its episode is gone",
            Name::Unknown => {
                warnings.push(format!(
                    "unexpected file {} in outbox/; leaving it alone",
                    path.display()
                ));
                continue;
            }
            _ => continue,
        };
        if let Name::Tarball(id) = outbox::parse(&name) {
            let sidecar = dirs.sidecar(id);
            if sidecar.exists() {
                remove.push(Removal {
                    path: sidecar,
                    why: "its episode is in shipped/",
                });
            }
        }
        remove.push(Removal { path, why });
    }
    Ok((remove, warnings))
}

/// Tidies `outbox/` as `plan` says. Only one pass runs at a time (the
/// caller holds the lock), so a `.partial` or `.tmp` here is a crash's,
/// never in use.
pub fn tidy(dirs: &Dirs) -> io::Result<()> {
    let (remove, warnings) = plan(dirs)?;
    for w in warnings {
        warn!("{w}");
    }
    let mut changed = false;
    for r in remove {
        if r.why == "unfinished" {
            info!("removing unfinished {}", r.path.display());
        }
        changed |= remove_if_exists(&r.path)?;
    }
    if changed {
        sync_dir(&dirs.outbox)?;
    }
    Ok(())
}

/// Whether `shipped/<id>` is the tree the outbox tarball of `id` was packed
/// from (for a record without a tree, as before this check existed:
/// whether `shipped/<id>` exists at all).
fn shipped_copy_of(dirs: &Dirs, id: &str) -> bool {
    let shipped = dirs.shipped(id);
    match Record::read(&dirs.sidecar(id)) {
        Some(Record { tree: Some(t), .. }) => {
            tree::fingerprint(&shipped, id).is_ok_and(|now| now == t)
        }
        _ => shipped.exists(),
    }
}
