//! `--once --dry-run`: what a pass would do, and nothing of it.
//!
//! It writes nothing (no lock file, no directory, no state, no metrics) and
//! opens no connection: what the receiver would answer is not known without
//! asking it, and asking is `--ping`'s job. So every upload is listed as
//! one that would be tried, and every retire as one that follows if the
//! receiver accepts. The decisions themselves are the pass's own: tidy's
//! plan, the tree fingerprint checks of `prepare`/`retire`, retention's
//! plan.

use std::fs;
use std::io::{self, Write};
use std::time::SystemTime;

use crate::config::ShipperConfig;
use crate::exit;
use crate::ids;
use crate::shipper::outbox::{Dirs, Record};
use crate::shipper::prepare::still_packed_tree;
use crate::shipper::retention;
use crate::shipper::tidy;
use crate::shipper::tree;

const MARKER: &str = "done.marker";

/// Prints the plan to `out`; returns the exit code (0, or 78 when
/// `data_dir` is unusable).
pub fn run(cfg: &ShipperConfig, out: &mut dyn Write) -> u8 {
    match plan(cfg, out) {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(out, "cannot read {}: {e}", cfg.data_dir.display());
            exit::CONFIG
        }
    }
}

fn plan(cfg: &ShipperConfig, out: &mut dyn Write) -> io::Result<()> {
    let dirs = Dirs::new(&cfg.data_dir);
    writeln!(
        out,
        "dry run: nothing is written and no connection is made (--ping checks the receiver)"
    )?;
    if dirs.outbox.is_dir() {
        let (removals, warnings) = tidy::plan(&dirs)?;
        for r in removals {
            writeln!(out, "would remove  {} ({})", r.path.display(), r.why)?;
        }
        for w in warnings {
            writeln!(out, "note          {w}")?;
        }
    }
    let mut ready = Vec::new();
    for e in fs::read_dir(&dirs.episodes).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(marker) = fs::symlink_metadata(e.path().join(MARKER)) else {
            continue;
        };
        if !ids::is_valid(&name) || !e.file_type()?.is_dir() {
            writeln!(
                out,
                "skip          episodes/{name}: not a valid episode directory"
            )?;
            continue;
        }
        ready.push((marker.modified().unwrap_or(SystemTime::UNIX_EPOCH), name));
    }
    ready.sort();
    for (_, id) in &ready {
        episode(&dirs, cfg, id, out)?;
    }
    for d in retention::plan(&dirs, &cfg.retention, SystemTime::now())? {
        writeln!(
            out,
            "would delete  shipped/{} ({}; {:.1} MB)",
            d.id,
            d.why,
            d.bytes as f64 / 1e6
        )?;
    }
    Ok(())
}

fn episode(dirs: &Dirs, cfg: &ShipperConfig, id: &str, out: &mut dyn Write) -> io::Result<()> {
    let conflict = dirs.conflict(id);
    if conflict.exists() {
        return writeln!(
            out,
            "skip          {id}: in conflict until {} is removed",
            conflict.display()
        );
    }
    if let Some(r) = Record::read(&dirs.receipt(id)) {
        if r.tree.is_none_or(|t| still_packed_tree(dirs, id, &t)) {
            return writeln!(
                out,
                "would retire  {id} -> shipped/ (the receiver confirmed it earlier)"
            );
        }
        writeln!(
            out,
            "note          {id}: changed since the receiver confirmed it"
        )?;
    }
    let tarball = dirs.tarball(id);
    let reuse = fs::metadata(&tarball).is_ok_and(|m| m.len() > 0)
        && Record::read(&dirs.sidecar(id))
            .is_none_or(|r| r.tree.is_none_or(|t| still_packed_tree(dirs, id, &t)));
    if reuse {
        let size = fs::metadata(&tarball).map_or(0, |m| m.len());
        writeln!(
            out,
            "would upload  {id}: {} ({:.1} MB, packed earlier)",
            tarball.display(),
            size as f64 / 1e6
        )?;
    } else {
        let t = tree::fingerprint(&dirs.episode(id), id);
        match t {
            Ok(t) => writeln!(
                out,
                "would pack    {id}: {} entries, {:.1} MB, zstd level {}",
                t.entries,
                t.bytes as f64 / 1e6,
                cfg.compression_level
            )?,
            Err(e) => writeln!(out, "would pack    {id}: (cannot read it now: {e})")?,
        }
        writeln!(out, "would upload  {id}")?;
    }
    writeln!(
        out,
        "would retire  {id} -> shipped/ (if the receiver accepts it)"
    )
}
