//! Looking at trees and tarballs from a test: names, snapshots, digests,
//! and the zstd CLI and GNU tar as the third-party readers a tarball must
//! satisfy.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use cis490::hashing;

/// File names in a directory, sorted; empty if it does not exist.
#[allow(dead_code)]
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Lowercase hex sha256 of a file, with the crate's own hashing.
#[allow(dead_code)]
pub fn sha256_hex(path: &Path) -> String {
    let (d, _) =
        hashing::sha256_file(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hashing::to_hex(&d)
}

/// Which modification times a snapshot records.
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Mtimes {
    /// None: for trees whose times legitimately differ.
    #[allow(dead_code)]
    Ignore,
    /// Whole seconds, what a tar header keeps: for round trips.
    #[allow(dead_code)]
    Seconds,
    /// Nanoseconds: for "nothing was touched".
    #[allow(dead_code)]
    Exact,
}

/// Every path below `root` (relative, sorted) with its kind, permission
/// bits, and for files their length and sha256, for symlinks their target;
/// plus mtimes as asked. Entries that vanish while it looks (a receiver's
/// temp being removed) are skipped.
#[allow(dead_code)]
pub fn snapshot(root: &Path, mtimes: Mtimes) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, mtimes: Mtimes, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let when = match mtimes {
                Mtimes::Ignore => String::new(),
                Mtimes::Seconds => format!(" mtime={}", m.mtime()),
                Mtimes::Exact => format!(" mtime={}.{:09}", m.mtime(), m.mtime_nsec()),
            };
            let mode = m.mode() & 0o7777;
            if m.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("symlink -> {}", target.display()));
            } else if m.is_dir() {
                out.insert(rel, format!("dir {mode:o}{when}"));
                walk(root, &p, mtimes, out);
            } else if let Ok((d, len)) = hashing::sha256_file(&p) {
                let sha = hashing::to_hex(&d);
                out.insert(rel, format!("file {mode:o} len={len} sha256={sha}{when}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, mtimes, &mut out);
    out
}

/// `zstd -t`: the file is one or more complete zstd frames.
#[allow(dead_code)]
pub fn zstd_ok(path: &Path) -> bool {
    Command::new("zstd")
        .args(["-q", "-t"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run zstd (apt-get install zstd)")
        .status
        .success()
}

/// `zstd -dc TARBALL | tar -xpf - -C INTO`, with the CLIs a third party
/// would use; panics with both tools' verdicts if either fails.
#[allow(dead_code)]
pub fn extract(tarball: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    assert!(zstd_ok(tarball), "zstd -t {}", tarball.display());
    let mut z = Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(tarball)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run zstd");
    let t = Command::new("tar")
        .args(["-x", "-p", "-f", "-", "-C"])
        .arg(into)
        .stdin(z.stdout.take().unwrap())
        .output()
        .expect("run tar");
    let zs = z.wait().unwrap();
    assert!(
        zs.success() && t.status.success(),
        "extracting {}: zstd {zs:?}, tar {:?}: {}",
        tarball.display(),
        t.status,
        String::from_utf8_lossy(&t.stderr)
    );
}
