//! The start of a pass: remove what a crash left in `outbox/` (see
//! docs/transport.md, "A pass", step 2), and nothing that might be the only
//! copy of something.

use std::fs;
use std::io;

use crate::fsutil::{remove_if_exists, sync_dir};
use crate::shipper::outbox::{self, Dirs, Name, Record};
use crate::shipper::tree;
use crate::{info, warn};

/// Tidies `outbox/`. Only one pass runs at a time (the caller holds the
/// lock), so a `.partial` or `.tmp` here is a crash's, never in use.
pub fn tidy(dirs: &Dirs) -> io::Result<()> {
    let mut changed = false;
    for entry in fs::read_dir(&dirs.outbox)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let in_episodes = |id: &str| dirs.episode(id).exists();
        match outbox::parse(&name) {
            Name::Partial(_) | Name::Temp => {
                // Never uploaded, never renamed: a crash mid-pack. Repacked.
                info!("removing unfinished {}", path.display());
                changed |= remove_if_exists(&path)?;
            }
            Name::Sidecar(id) => {
                if !dirs.tarball(id).exists() {
                    changed |= remove_if_exists(&path)?;
                }
            }
            Name::Tarball(id) if !in_episodes(id) => {
                if shipped_copy_of(dirs, id) {
                    // Crash after the retire, before the outbox delete.
                    changed |= remove_if_exists(&path)?;
                    remove_if_exists(&dirs.sidecar(id))?;
                } else {
                    warn!(
                        "{} has no episode in episodes/ (nor the one it was packed from in shipped/); leaving it for an operator",
                        path.display()
                    );
                }
            }
            // A receipt retires its episode, a count concerns its episode:
            // with the episode gone (a crash after the retire, or an
            // operator) they have no use.
            Name::Receipt(id) | Name::Unstable(id) if !in_episodes(id) => {
                changed |= remove_if_exists(&path)?;
            }
            Name::Tarball(_) | Name::Receipt(_) | Name::Unstable(_) | Name::Conflict(_) => {}
            Name::Unknown => warn!(
                "unexpected file {} in outbox/; leaving it alone",
                path.display()
            ),
        }
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
