//! What bounds partial uploads (`partial_ttl_hours`,
//! `max_partial_bytes_per_host`, and the ids they can never complete):
//! which partials go and why, decided by pure functions ([`doomed`],
//! [`oldest_over`]), and the store's listing and deleting of them.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{parse_partial, PartialName, Store};
use crate::{ids, info};

/// How much of unfinished uploads the store keeps (`partial_ttl_hours`,
/// `max_partial_bytes_per_host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// A partial untouched for longer is deleted.
    pub ttl: Duration,
    /// A host's partials together stay under this, oldest deleted first.
    pub per_host: u64,
}

impl Default for Bounds {
    /// 72 hours, and no cap (the configuration always sets one).
    fn default() -> Bounds {
        Bounds {
            ttl: Duration::from_secs(72 * 3600),
            per_host: u64::MAX,
        }
    }
}

/// Why a partial is deleted; the log line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Untouched for longer than `partial_ttl_hours`.
    Expired(Duration),
    /// The host's partials are over `max_partial_bytes_per_host`.
    OverCap(u64),
    /// The id is stored (these bytes or others): it can never be published.
    Stored,
    /// A request named another digest or key for the id: the episode was
    /// packed again (or a pack was cut and begun anew).
    Repacked,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Expired(ttl) => write!(
                f,
                "untouched for more than partial_ttl_hours ({})",
                ttl.as_secs() / 3600
            ),
            Why::OverCap(cap) => write!(
                f,
                "the host's partial uploads exceed max_partial_bytes_per_host ({cap}); oldest first"
            ),
            Why::Stored => write!(f, "the episode is already stored"),
            Why::Repacked => write!(
                f,
                "episode repacked: another digest or upload key was announced for it"
            ),
        }
    }
}

/// One partial as the sweep sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub size: u64,
    /// Since it was last written.
    pub age: Duration,
    /// Claimed by a connection: never deleted.
    pub busy: bool,
    /// Its id has a final (`<id>.tar.zst`).
    pub stored: bool,
}

/// Which partials the sweep deletes, and why (pure; table-tested): those of
/// a stored id, those untouched for longer than the TTL, then per host the
/// oldest while the host's total is over the cap. Claimed ones count
/// toward their host's total but are never chosen.
pub fn doomed(cands: &[Candidate], bounds: Bounds) -> Vec<(usize, Why)> {
    let mut out = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if c.busy {
            continue;
        }
        if c.stored {
            out.push((i, Why::Stored));
        } else if c.age > bounds.ttl {
            out.push((i, Why::Expired(bounds.ttl)));
        }
    }
    let mut hosts: Vec<&str> = cands.iter().map(|c| c.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let left: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].host == host && !out.iter().any(|(j, _)| *j == i))
            .collect();
        let parts: Vec<(u64, Duration, bool)> = left
            .iter()
            .map(|&i| (cands[i].size, cands[i].age, !cands[i].busy))
            .collect();
        for k in oldest_over(&parts, 0, bounds.per_host) {
            out.push((left[k], Why::OverCap(bounds.per_host)));
        }
    }
    out
}

/// Which of `parts` (size, age, deletable) to delete, oldest first, so that
/// their total plus `extra` bytes about to be written fits `cap` (pure).
/// Undeletable ones count but are skipped; if they alone exceed the cap,
/// every deletable one goes and the total stays over it.
pub fn oldest_over(parts: &[(u64, Duration, bool)], extra: u64, cap: u64) -> Vec<usize> {
    let mut total = parts
        .iter()
        .fold(extra, |t, (size, _, _)| t.saturating_add(*size));
    let mut order: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].2).collect();
    // Oldest first: the largest age.
    order.sort_by(|&a, &b| parts[b].1.cmp(&parts[a].1));
    let mut out = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        total -= parts[i].0;
        out.push(i);
    }
    out
}

/// A partial on disk.
struct PartialFile {
    path: PathBuf,
    episode: String,
    /// What names it: a digest's hex, or `k` and a key's.
    suffix: String,
    size: u64,
    modified: SystemTime,
}

impl PartialFile {
    /// "sha256 <hex>" or "key <hex>", for the log.
    fn named(&self) -> String {
        match self.suffix.strip_prefix('k') {
            Some(key) => format!("key {key}"),
            None => format!("sha256 {}", self.suffix),
        }
    }
}

impl Store {
    /// The partials in a host's directory.
    fn list_partials(&self, host: &str) -> Vec<PartialFile> {
        let mut out = Vec::new();
        for f in fs::read_dir(self.root.join(host))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name();
            let Some((episode, suffix)) = name.to_str().and_then(parse_partial) else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(PartialFile {
                path: f.path(),
                episode: episode.to_owned(),
                suffix: suffix.to_owned(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out
    }

    /// Deletes a partial unless it is claimed, and logs it; `still` is
    /// asked again under the claims' lock (the file may have been written
    /// since it was listed). Whether it went.
    fn delete(&self, host: &str, p: &PartialFile, why: &Why, now: SystemTime) -> bool {
        let mut partials = self.partials();
        if partials.busy.contains(&p.path) {
            return false;
        }
        if let Why::Expired(ttl) = why {
            let fresh = fs::metadata(&p.path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() <= *ttl);
            if fresh {
                return false;
            }
        }
        match fs::remove_file(&p.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                crate::warn!("cannot delete partial upload {}: {e}", p.path.display());
                return false;
            }
        }
        partials.known.remove(&p.path);
        drop(partials);
        info!(
            "deleted partial upload {host}/{} ({} bytes, {}): {why}",
            p.episode,
            p.size,
            p.named()
        );
        true
    }

    /// A request named the upload `name` of the id: the episode was packed
    /// again (another digest), or a stream begun anew (another key), so
    /// the id's other partials can never complete. Claimed ones stay.
    pub(super) fn drop_others(&self, host: &str, episode: &str, name: &PartialName) {
        let ours = name.suffix();
        let now = SystemTime::now();
        for p in self.list_partials(host) {
            if p.episode == episode && p.suffix != ours {
                self.delete(host, &p, &Why::Repacked, now);
            }
        }
    }

    /// The id is stored: its partials can never be published.
    pub fn drop_partials_of(&self, host: &str, episode: &str) {
        let now = SystemTime::now();
        for p in self.list_partials(host) {
            if p.episode == episode {
                self.delete(host, &p, &Why::Stored, now);
            }
        }
    }

    /// Before `incoming` bytes go into `path`: the host's oldest other
    /// partials are deleted while the host is over its cap.
    pub(super) fn make_room(&self, host: &str, path: &Path, incoming: u64) {
        let now = SystemTime::now();
        let others: Vec<PartialFile> = self
            .list_partials(host)
            .into_iter()
            .filter(|p| p.path != path)
            .collect();
        let busy = self.partials().busy.clone();
        let parts: Vec<(u64, Duration, bool)> = others
            .iter()
            .map(|p| (p.size, age(now, p.modified), !busy.contains(&p.path)))
            .collect();
        for i in oldest_over(&parts, incoming, self.bounds.per_host) {
            self.delete(host, &others[i], &Why::OverCap(self.bounds.per_host), now);
        }
    }

    /// Enforces `partial_ttl_hours` and `max_partial_bytes_per_host` over
    /// the whole store, and deletes partials of stored ids (a crash between
    /// a publish and the partial's unlink). Returns how many went.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut files: Vec<(String, PartialFile)> = Vec::new();
        let mut cands = Vec::new();
        for host in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let Some(name) = host.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !ids::is_valid(&name) || !host.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for p in self.list_partials(&name) {
                let busy = self.partials().busy.contains(&p.path);
                cands.push(Candidate {
                    host: name.clone(),
                    size: p.size,
                    age: age(now, p.modified),
                    busy,
                    stored: self.final_path(&name, &p.episode).exists(),
                });
                files.push((name.clone(), p));
            }
        }
        let mut deleted = 0;
        for (i, why) in doomed(&cands, self.bounds) {
            let (host, p) = &files[i];
            deleted += usize::from(self.delete(host, p, &why, now));
        }
        // What is remembered of partials that are gone (deleted by hand).
        self.partials().known.retain(|path, _| path.exists());
        deleted
    }
}

fn age(now: SystemTime, modified: SystemTime) -> Duration {
    now.duration_since(modified).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::store::tests::{listing, put, tempdir};
    use crate::receiver::store::{partial_name, Outcome, PartialName as P};
    use std::io::Write;

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    /// The sweep's choice, as a table: (host, size, age h, busy, stored).
    #[test]
    fn what_the_sweep_deletes() {
        let c = |host: &str, size, age, busy, stored| Candidate {
            host: host.into(),
            size,
            age: hours(age),
            busy,
            stored,
        };
        let bounds = Bounds {
            ttl: hours(72),
            per_host: 100,
        };
        let cands = vec![
            c("a", 10, 80, false, false), // 0: expired
            c("a", 10, 80, true, false),  // 1: expired, but claimed
            c("a", 10, 1, false, true),   // 2: stored
            c("b", 60, 5, false, false),  // 3: b's oldest: over the cap
            c("b", 60, 2, false, false),  // 4: b's newest: kept
            c("c", 90, 9, true, false),   // 5: claimed, over alone with 6
            c("c", 20, 1, false, false),  // 6: the only deletable of c
        ];
        let mut got = doomed(&cands, bounds);
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(
            got,
            vec![
                (0, Why::Expired(hours(72))),
                (2, Why::Stored),
                (3, Why::OverCap(100)),
                (6, Why::OverCap(100)),
            ]
        );
        assert!(doomed(&cands, Bounds::default())
            .iter()
            .all(|(_, w)| !matches!(w, Why::OverCap(_))));
    }

    #[test]
    fn room_for_an_upload_oldest_first() {
        // (size, age, deletable)
        let parts = [
            (40, hours(3), true),
            (40, hours(9), true),
            (40, hours(1), false),
        ];
        assert_eq!(oldest_over(&parts, 0, 200), Vec::<usize>::new());
        assert_eq!(
            oldest_over(&parts, 80, 200),
            Vec::<usize>::new(),
            "fits exactly"
        );
        assert_eq!(oldest_over(&parts, 81, 200), vec![1]);
        assert_eq!(oldest_over(&parts, 120, 200), vec![1]);
        assert_eq!(oldest_over(&parts, 121, 200), vec![1, 0]);
        assert_eq!(
            oldest_over(&parts, 500, 200),
            vec![1, 0],
            "never the claimed one"
        );
        assert_eq!(oldest_over(&parts, 0, u64::MAX), Vec::<usize>::new());
    }

    /// A new key or digest for an id deletes its other partials, keyed or
    /// not, unless claimed; the sweep treats keyed partials like the rest.
    #[test]
    fn keys_and_digests_replace_each_other() {
        let root = tempdir("rekey");
        let (store, _) = Store::open(&root).unwrap();
        let cut = |name: &PartialName, ep: &str| {
            let mut up = store.begin_upload("h", ep, name, None).unwrap();
            up.write_all(b"some bytes").unwrap();
        };
        let (k1, k2, d) = (P::Key([1; 16]), P::Key([2; 16]), P::Digest([3; 32]));
        let name = |n: &PartialName| partial_name("e", n);
        cut(&k1, "e");
        assert_eq!(listing(&root.join("h")), [name(&k1)]);
        cut(&k2, "e");
        assert_eq!(listing(&root.join("h")), [name(&k2)], "a new key");
        cut(&d, "e");
        assert_eq!(listing(&root.join("h")), [name(&d)], "a digest");
        assert_eq!(store.offset("h", "e", &k1).unwrap().offset, 0);
        assert!(listing(&root.join("h")).is_empty(), "a HEAD with a key");
        // Claimed (being written): never deleted by another name.
        let mut claimed = store.begin_upload("h", "e", &k1, None).unwrap();
        claimed.write_all(b"in flight").unwrap();
        cut(&k2, "e");
        assert_eq!(listing(&root.join("h")), [name(&k1), name(&k2)]);
        drop(claimed);
        // Stored ids, TTL and cap: as any partial.
        cut(&k1, "x");
        assert_eq!(put(&store, "h", "x", b"final"), Outcome::Stored);
        let later = SystemTime::now() + Duration::from_secs(73 * 3600);
        assert_eq!(store.sweep(SystemTime::now()), 1, "x is stored");
        assert_eq!(store.sweep(later), 2, "e's two partials expired");
        assert_eq!(listing(&root.join("h")), ["x.tar.zst", "x.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }
}
