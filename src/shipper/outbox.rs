//! The shipper's `data_dir` by name: where each file of the state machine
//! lives (`Dirs`), what a name in `outbox/` is (`parse`, the inverse of
//! `Dirs`), and the one record format kept there (`Record`).
//!
//! ```text
//! outbox/<id>.tar.zst.partial   packing in progress (never uploaded)
//! outbox/<id>.tar.zst           a finished tarball
//! outbox/<id>.tar.zst.sha256    its Record: digest + the tree it was made from
//! outbox/<id>.receipt           the same Record, renamed once the receiver
//!                               confirmed it: the episode may be retired
//! outbox/<id>.conflict          quarantine note for a human (409, duplicate)
//! outbox/<id>.unstable          passes in a row the episode changed while packed
//! outbox/*.tmp                  a small file being written
//! receipts/<id>                 the Record of a retired episode, with its time
//! ```
//! This module knows names and formats only; `queue` decides what to do
//! with them.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::hashing::{self, from_hex32};
use crate::protocol;
use crate::shipper::tree::Fingerprint;

/// The three directories of one `data_dir`.
pub struct Dirs {
    pub episodes: PathBuf,
    pub outbox: PathBuf,
    pub shipped: PathBuf,
    /// A record per retired episode (what was confirmed, and when), for
    /// retention and `--status`; beside `shipped/`, so that `shipped/`
    /// holds episodes only.
    pub receipts: PathBuf,
    /// Where retention moves a shipped episode before deleting it.
    pub trash: PathBuf,
}

impl Dirs {
    pub fn new(data_dir: &Path) -> Dirs {
        Dirs {
            episodes: data_dir.join("episodes"),
            outbox: data_dir.join("outbox"),
            shipped: data_dir.join("shipped"),
            receipts: data_dir.join("receipts"),
            trash: data_dir.join("trash"),
        }
    }

    pub fn episode(&self, id: &str) -> PathBuf {
        self.episodes.join(id)
    }
    pub fn shipped(&self, id: &str) -> PathBuf {
        self.shipped.join(id)
    }
    pub fn tarball(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{TARBALL}"))
    }
    pub fn partial(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{PARTIAL}"))
    }
    pub fn sidecar(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{SIDECAR}"))
    }
    pub fn receipt(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{RECEIPT}"))
    }
    pub fn conflict(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{CONFLICT}"))
    }
    pub fn unstable(&self, id: &str) -> PathBuf {
        self.outbox.join(format!("{id}{UNSTABLE}"))
    }
    pub fn shipped_record(&self, id: &str) -> PathBuf {
        self.receipts.join(id)
    }
}

const TARBALL: &str = ".tar.zst";
const PARTIAL: &str = ".tar.zst.partial";
const SIDECAR: &str = ".tar.zst.sha256";
const RECEIPT: &str = ".receipt";
const CONFLICT: &str = ".conflict";
const UNSTABLE: &str = ".unstable";
const TMP: &str = ".tmp";

/// What a file name in `outbox/` is.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    Tarball(&'a str),
    Partial(&'a str),
    Sidecar(&'a str),
    Receipt(&'a str),
    Conflict(&'a str),
    Unstable(&'a str),
    /// `*.tmp`: a small file caught mid-write.
    Temp,
    Unknown,
}

/// The inverse of `Dirs`' outbox names. Longer suffixes are tried first
/// (`x.tar.zst.sha256` is a sidecar, not a tarball named `x.tar.zst.sha256`).
pub fn parse(name: &str) -> Name<'_> {
    if name.ends_with(TMP) {
        return Name::Temp;
    }
    let id = |suffix: &str| name.strip_suffix(suffix).filter(|id| !id.is_empty());
    if let Some(id) = id(PARTIAL) {
        Name::Partial(id)
    } else if let Some(id) = id(SIDECAR) {
        Name::Sidecar(id)
    } else if let Some(id) = id(TARBALL) {
        Name::Tarball(id)
    } else if let Some(id) = id(RECEIPT) {
        Name::Receipt(id)
    } else if let Some(id) = id(CONFLICT) {
        Name::Conflict(id)
    } else if let Some(id) = id(UNSTABLE) {
        Name::Unstable(id)
    } else {
        Name::Unknown
    }
}

/// What the outbox knows about a tarball: its digest and, for tarballs this
/// version packed, the tree it was packed from.
///
/// On disk, `sha256sum` format on the first line (so `sha256sum -c` still
/// checks the tarball), then `tree …` (see `Fingerprint::to_line`). A
/// record without a tree line comes from an older version (or was rebuilt
/// by hashing a tarball whose sidecar was lost): its tarball cannot be
/// checked against the episode, see `queue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sha256: [u8; 32],
    pub tree: Option<Fingerprint>,
    /// In `receipts/` only: when the episode was retired, seconds
    /// since the epoch.
    pub shipped: Option<u64>,
    /// The `Upload-Key` a streamed upload of this tarball named its
    /// partial with on the receiver (32 hex digits): a retry resumes that
    /// partial (docs/transport.md, "Upload while packing").
    pub key: Option<String>,
}

impl Record {
    pub fn to_text(&self, id: &str) -> String {
        let mut s = hashing::sidecar_line(&self.sha256, &format!("{id}{TARBALL}"));
        if let Some(t) = &self.tree {
            s.push_str(&t.to_line());
            s.push('\n');
        }
        if let Some(when) = self.shipped {
            s.push_str(&format!("shipped {when}\n"));
        }
        if let Some(key) = &self.key {
            s.push_str(&format!("key {key}\n"));
        }
        s
    }

    pub fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        let sha256 = from_hex32(lines.next()?.split_whitespace().next()?)?;
        let (mut tree, mut shipped, mut key) = (None, None, None);
        for line in lines {
            match line.split_once(' ') {
                Some(("tree", _)) if tree.is_none() => tree = Some(Fingerprint::from_line(line)?),
                Some(("shipped", t)) if shipped.is_none() => shipped = Some(t.parse().ok()?),
                Some(("key", k)) if key.is_none() && protocol::resumable::is_upload_key(k) => {
                    key = Some(k.to_owned())
                }
                _ => return None,
            }
        }
        Some(Record {
            sha256,
            tree,
            shipped,
            key,
        })
    }

    /// `None` if missing, unreadable or malformed: the caller then re-hashes
    /// or repacks; a record is never trusted half-read.
    pub fn read(path: &Path) -> Option<Record> {
        let mut text = String::new();
        // Two short lines; anything larger is not a record.
        std::fs::File::open(path)
            .ok()?
            .take(1024)
            .read_to_string(&mut text)
            .ok()?;
        Record::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_dirs() {
        let d = Dirs::new(Path::new("/d"));
        let file = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        let id = "ep.tar";
        assert_eq!(parse(&file(d.tarball(id))), Name::Tarball(id));
        assert_eq!(parse(&file(d.partial(id))), Name::Partial(id));
        assert_eq!(parse(&file(d.sidecar(id))), Name::Sidecar(id));
        assert_eq!(parse(&file(d.receipt(id))), Name::Receipt(id));
        assert_eq!(parse(&file(d.conflict(id))), Name::Conflict(id));
        assert_eq!(parse(&file(d.unstable(id))), Name::Unstable(id));
        assert_eq!(parse("x.tar.zst.sha256.tmp"), Name::Temp);
        assert_eq!(parse("notes.txt"), Name::Unknown);
        assert_eq!(parse(".tar.zst"), Name::Unknown);
    }

    #[test]
    fn records_with_and_without_a_tree() {
        let tree = Fingerprint {
            digest: [3; 32],
            entries: 5,
            bytes: 99,
        };
        let r = Record {
            sha256: [7; 32],
            tree: Some(tree),
            shipped: None,
            key: None,
        };
        let text = r.to_text("ep");
        assert!(text.starts_with(&format!("{}  ep.tar.zst\n", hashing::to_hex(&[7; 32]))));
        assert_eq!(Record::parse(&text), Some(r.clone()));
        let legacy = Record {
            tree: None,
            ..r.clone()
        };
        assert_eq!(Record::parse(&legacy.to_text("ep")), Some(legacy));
        let shipped = Record {
            shipped: Some(1_795_842_000),
            ..r.clone()
        };
        assert!(shipped.to_text("ep").ends_with("shipped 1795842000\n"));
        assert_eq!(Record::parse(&shipped.to_text("ep")), Some(shipped));
        let keyed = Record {
            key: Some("0123456789abcdef0123456789abcdef".into()),
            ..r.clone()
        };
        assert!(keyed
            .to_text("ep")
            .ends_with("key 0123456789abcdef0123456789abcdef\n"));
        assert_eq!(Record::parse(&keyed.to_text("ep")), Some(keyed));
        for bad in [
            "",
            "zz  ep.tar.zst\n",
            &format!("{text}extra\n"),
            "00\ntree\n",
            &format!("{text}key 0123\n"),
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }
}
