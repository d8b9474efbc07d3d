//! An upload being written: a [`Pending`] temp or partial, hashed as it
//! is written, and how it ends (cut, paused, kept, refused, or committed:
//! linked into the store or published to the object store); and the
//! [`Resume`] of a partial before its append starts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{write_sidecar, Claim, Existing, Hashed, Outcome, Store, StoreError};
use crate::fault;
use crate::fsutil::{self, sync_dir};
use crate::receiver::admit::Held;
use crate::s3::store::{Published, S3Store};

/// sha256 of a file's first `len` bytes (a resumed upload's durable prefix).
fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    crate::hashing::for_each_chunk_at(file, 0, len, &mut |c| hasher.update(c))?;
    Ok(hasher)
}

/// An append that passed `admit::request`, with its partial claimed and
/// its durable length read; [`Resume::start`] once the request has been
/// checked against it. Dropped without starting: the claim is released and
/// nothing changes.
pub struct Resume<'a> {
    pub(super) store: &'a Store,
    pub(super) claim: Claim<'a>,
    pub(super) file: Option<File>,
    pub(super) dir: PathBuf,
    pub(super) host: String,
    pub(super) episode: String,
    pub(super) held: Held,
    pub(super) ino: u64,
    pub(super) hashed: Option<Hashed>,
}

impl<'a> Resume<'a> {
    /// What the store holds of this upload.
    pub fn held(&self) -> Held {
        self.held
    }

    /// Starts appending bytes that will bring the upload to `end` bytes.
    /// The sha256 of what is there is carried on from this process's last
    /// write if it has it; else, if these bytes `complete` the upload, the
    /// durable prefix is read back once now; else hashing waits for the
    /// append that completes it.
    pub fn start(self, end: u64, complete: bool) -> Result<Pending<'a>, StoreError> {
        let path = self.claim.path.clone();
        self.store.make_room(&self.host, &path, end);
        let file = match self.file {
            Some(f) => f,
            None => OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| StoreError::io("creating", &path, e))?,
        };
        let ino = file
            .metadata()
            .map_err(|e| StoreError::io("checking", &path, e))?
            .ino();
        let offset = self.held.offset;
        let state = match self.hashed {
            Some(h) if h.ino == ino => Some(h.state),
            _ if offset == 0 => Some(Sha256::new()),
            _ if complete => {
                Some(hash_prefix(&file, offset).map_err(|e| StoreError::io("reading", &path, e))?)
            }
            _ => None,
        };
        debug_assert!(self.ino == 0 || self.ino == ino);
        Ok(Pending {
            writer: Some(Appender::new(file, offset, state)),
            final_path: self.store.final_path(&self.host, &self.episode),
            dir: self.dir,
            path,
            store: self.store,
            host: self.host,
            episode: self.episode,
            partial: true,
            ino,
            _claim: Some(self.claim),
        })
    }
}

/// Appends to a file, hashing what it accepted (when the hash of what was
/// there before is known) and counting the file's length.
pub(super) struct Appender {
    file: File,
    hasher: Option<Sha256>,
    len: u64,
    /// Where writeback was last started (see `WRITEBACK_EVERY`).
    queued: u64,
}

/// How much written data may wait in the page cache before its writeback
/// is started. The 201 needs an fsync of the whole upload; left to the
/// end, that fsync writes all of it while the client waits (about a
/// second per 160 MB on a VM disk, serial with the next episode). Started
/// as the bytes arrive (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which
/// does not wait), the disk works during the transfer and the final fsync
/// finds little left. Durability is unchanged: it is still the fsync that
/// makes the bytes durable before the 201.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl Appender {
    pub(super) fn new(file: File, len: u64, hasher: Option<Sha256>) -> Appender {
        Appender {
            file,
            hasher,
            len,
            queued: len,
        }
    }
}

impl Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        // Only what the file accepted (`n <= buf.len()`, the `Write`
        // contract), so the hash describes exactly the bytes on disk.
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        if self.len - self.queued >= WRITEBACK_EVERY {
            crate::dirfd::start_writeback(&self.file, self.queued, self.len - self.queued);
            self.queued = self.len;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An upload in progress: its partial (or temp), hashed as it is written.
/// Dropped without `commit` or `pause`: a temp is removed; a partial stays
/// for the client to resume (unless it is empty: nothing to resume), and
/// the hash of its bytes is remembered. A kill -9 leaves either as it is.
pub struct Pending<'a> {
    pub(super) writer: Option<Appender>,
    pub(super) path: PathBuf,
    pub(super) final_path: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) store: &'a Store,
    pub(super) host: String,
    pub(super) episode: String,
    /// A partial (else a private temp).
    pub(super) partial: bool,
    pub(super) ino: u64,
    /// A partial's claim; released when this is dropped, after `drop`.
    pub(super) _claim: Option<Claim<'a>>,
}

impl Write for Pending<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fault::io("store.write")?;
        match &mut self.writer {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("upload already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pending<'_> {
    /// A failed write of body bytes into the file, as a store error that
    /// names it (`Write` can only return an `io::Error`).
    pub fn write_failed(&self, e: io::Error) -> StoreError {
        StoreError::io("writing", &self.path, e)
    }

    /// The file's length so far.
    pub fn len(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.len)
    }

    /// Whether nothing has been written to the file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether, dropped now, it would leave bytes for a resume.
    pub fn is_resumable(&self) -> bool {
        self.partial && self.writer.is_some() && !self.is_empty()
    }

    /// This upload's bytes can never be published: a partial goes now.
    fn discard(&mut self) {
        if self.partial {
            self.store.remove_partial(&self.path);
        }
    }

    /// The request was refused after its bytes were written (a chunked
    /// body's framing, its size, or the digest fields at its end): what it
    /// sent is not an upload to resume, so a partial goes now, as a temp
    /// does. Only a body cut short (`drop`) keeps its partial.
    pub fn abandon(mut self) {
        self.writer = None;
        self.discard();
    }

    /// An append that does not complete the upload has ended: fsync, then
    /// the durable length (the 204's `Upload-Offset`). A failed fsync
    /// deletes the partial (never retried).
    pub fn pause(mut self) -> Result<u64, StoreError> {
        let Some(w) = &self.writer else {
            return Err(StoreError::io(
                "pausing",
                &self.path,
                io::Error::other("already finished"),
            ));
        };
        if let Err(e) = fsutil::sync_file(&w.file) {
            self.writer = None;
            self.discard();
            return Err(StoreError::io("syncing", &self.path, e));
        }
        Ok(self.len())
    }

    /// A streamed upload whose body ended with no digest anywhere
    /// (`digest_missing`): a partial is made durable (fsync) and kept, its
    /// length recorded as the upload's whole length (`Upload-Length`), for
    /// an empty completing `PATCH`; the sha256 of its bytes is remembered
    /// as for a cut, so that `PATCH` re-reads nothing in this run. Returns
    /// the length kept, or `None` for a temp or an empty file (not kept:
    /// removed when dropped). A failed fsync deletes the partial (never
    /// retried).
    pub fn keep(self) -> Result<Option<u64>, StoreError> {
        if !self.partial || self.writer.is_none() || self.is_empty() {
            return Ok(None);
        }
        let len = self.len();
        self.store
            .partials()
            .known
            .entry(self.path.clone())
            .or_default()
            .length = Some(len);
        self.pause().map(Some)
    }

    /// Publishes the upload if its whole sha256 is `expected` (see the
    /// module doc for the order of steps). Afterwards the temp or partial
    /// is gone, except after a storage error that may pass (ENOSPC on the
    /// sidecar or directory, the object store down: then the partial
    /// stays, resumable).
    pub fn commit(self, expected: &[u8; 32]) -> Result<Outcome, StoreError> {
        self.commit_with(expected, &mut || {})
    }

    /// [`Pending::commit`], with `beat` run every second or so while an
    /// object store takes the upload (the connection keeps its client
    /// informed; see `receiver::conn`).
    pub fn commit_with(
        mut self,
        expected: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<Outcome, StoreError> {
        let Some(writer) = self.writer.take() else {
            return Err(StoreError::io(
                "committing",
                &self.path,
                io::Error::other("already committed"),
            ));
        };
        let Appender {
            file, hasher, len, ..
        } = writer;
        // A partial appended to without its prefix's hash (after an append
        // with Upload-Complete: ?0 in another run): read it all back once.
        let hasher = match hasher {
            Some(h) => h,
            None => {
                hash_prefix(&file, len).map_err(|e| StoreError::io("reading", &self.path, e))?
            }
        };
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != *expected {
            self.discard();
            return Ok(Outcome::DigestMismatch(digest));
        }
        if let Err(e) = fsutil::sync_file(&file) {
            self.discard();
            return Err(StoreError::io("syncing", &self.path, e));
        }
        drop(file);
        fault::point("recv.after_tmp_fsync");
        let store = self.store;
        if let Some(s3) = &store.s3 {
            return self.publish_to_s3(s3, &digest, len, beat);
        }
        let sidecar = Store::sidecar_path(&self.final_path);
        // A sidecar whose tarball is gone (an operator deleted it) must not
        // describe the new tarball, even for an instant.
        fsutil::remove_if_exists(&sidecar).map_err(|e| StoreError::io("removing", &sidecar, e))?;
        match fs::hard_link(&self.path, &self.final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Lost a race with a concurrent upload of the same id.
                let found = self.store.lookup(&self.host, &self.episode);
                self.discard();
                return match found? {
                    Existing::Present(d) if d == digest => {
                        self.store.confirm(&self.host)?;
                        Ok(Outcome::AlreadyPresent)
                    }
                    Existing::Present(d) => Ok(Outcome::Conflict(d)),
                    Existing::Absent => Err(StoreError::io("publishing", &self.final_path, e)),
                };
            }
            Err(e) => return Err(StoreError::io("publishing", &self.final_path, e)),
        }
        fault::point("recv.after_publish");
        fs::remove_file(&self.path).map_err(|e| StoreError::io("removing", &self.path, e))?;
        // Published: nothing of it is left to resume or remember.
        self.store.partials().known.remove(&self.path);
        // Best effort: without a sidecar the next lookup hashes the file.
        let _ = write_sidecar(&sidecar, &digest, &self.final_path);
        sync_dir(&self.dir).map_err(|e| StoreError::io("syncing", &self.dir, e))?;
        fault::point("recv.after_dir_fsync");
        Ok(Outcome::Stored)
    }
}

impl Pending<'_> {
    /// The object store's publish (`s3::store`) of the verified, fsynced
    /// file, which is then deleted. After a failure a partial stays
    /// (complete and verified: the shipper's next `HEAD` finds all of it
    /// held, and an empty `PATCH` publishes it, no byte received again);
    /// a temp goes, as always; bytes the store refused as not those
    /// signed for (this disk changed them) go too.
    fn publish_to_s3(
        mut self,
        s3: &S3Store,
        digest: &[u8; 32],
        len: u64,
        beat: &mut dyn FnMut(),
    ) -> Result<Outcome, StoreError> {
        let file = File::open(&self.path).map_err(|e| StoreError::io("opening", &self.path, e))?;
        let published = s3.publish(&self.host, &self.episode, &file, len, digest, beat);
        drop(file);
        match published {
            Ok(p) => {
                self.discard();
                Ok(match p {
                    Published::Stored => Outcome::Stored,
                    Published::AlreadyPresent => Outcome::AlreadyPresent,
                    Published::Conflict(theirs) => Outcome::Conflict(theirs),
                })
            }
            Err(e) => {
                if e.is_payload_mismatch() {
                    self.discard();
                }
                Err(StoreError::ObjectStore(e))
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.partial {
            // A temp: an abandoned or rejected upload (after a successful
            // link it is already gone).
            let _ = fs::remove_file(&self.path);
            return;
        }
        // Still writing: a partial cut off (or refused by the disk). It
        // stays for the client to resume, with the hash of its bytes
        // remembered; an empty one holds nothing to resume. (Committed,
        // paused or discarded ones have no writer left, or need nothing.)
        // The claim is released after this, as the last field dropped.
        let Some(w) = self.writer.take() else {
            return;
        };
        if w.len == 0 {
            self.store.remove_partial(&self.path);
            return;
        }
        let mut partials = self.store.partials();
        let known = partials.known.entry(self.path.clone()).or_default();
        known.hashed = w.hasher.map(|state| Hashed {
            ino: self.ino,
            len: w.len,
            state,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::to_hex;
    use crate::protocol::Status;
    use crate::receiver::store::tests::{listing, put, tempdir};
    use crate::receiver::store::{PartialName as P, ResumeError};

    #[test]
    fn mismatch_and_abandon_leave_nothing() {
        let root = tempdir("mm");
        let (store, _) = Store::open(&root).unwrap();
        let mut up = store.begin("h", "e").unwrap();
        up.write_all(b"body").unwrap();
        assert!(matches!(
            up.commit(&[0; 32]).unwrap(),
            Outcome::DigestMismatch(_)
        ));
        let mut up = store.begin("h", "e").unwrap();
        up.write_all(b"half").unwrap();
        drop(up);
        assert!(listing(&root.join("h")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn write_errors_name_the_temp_and_keep_their_cause() {
        let root = tempdir("werr");
        let (store, _) = Store::open(&root).unwrap();
        let up = store.begin("h", "e").unwrap();
        let full = up.write_failed(io::Error::from_raw_os_error(28)); // ENOSPC
        assert_eq!(full.status(), Status::NoSpace);
        let eio = up.write_failed(io::Error::from_raw_os_error(5));
        assert_eq!(eio.status(), Status::Error);
        for e in [&full, &eio] {
            let text = e.to_string();
            assert!(text.contains("/h/.upload-e."), "{text}");
            assert!(std::error::Error::source(e).is_some(), "{text}");
        }
        drop(up);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn s2_concurrent_puts_one_winner() {
        let root = tempdir("s2");
        let (store, _) = Store::open(&root).unwrap();
        for round in 0..50 {
            let ep = format!("e{round}");
            let (a, b) = std::thread::scope(|s| {
                let ta = s.spawn(|| put(&store, "h", &ep, b"same"));
                let tb = s.spawn(|| {
                    put(
                        &store,
                        "h",
                        &ep,
                        if round % 2 == 0 { b"same" } else { b"diff" },
                    )
                });
                (ta.join().unwrap(), tb.join().unwrap())
            });
            let stored = [a, b].iter().filter(|o| **o == Outcome::Stored).count();
            assert_eq!(stored, 1, "round {round}: {a:?} {b:?}");
            let bytes = fs::read(root.join(format!("h/{ep}.tar.zst"))).unwrap();
            let winner_is_a = a == Outcome::Stored;
            let expect: &[u8] = if winner_is_a || round % 2 == 0 {
                b"same"
            } else {
                b"diff"
            };
            assert_eq!(bytes, expect);
        }
        fs::remove_dir_all(&root).unwrap();
    }

    /// A partial's life in one process: cut (kept, with its hash), offset,
    /// resumed without re-reading, refused while claimed, completed.
    #[test]
    fn a_partial_is_kept_resumed_and_published() {
        let root = tempdir("partial");
        let (store, _) = Store::open(&root).unwrap();
        let body = b"0123456789abcdef";
        let d: [u8; 32] = Sha256::digest(body).into();
        let mut up = store
            .begin_upload("h", "e", &P::Digest(d), Some(16))
            .unwrap();
        up.write_all(&body[..6]).unwrap();
        assert!(up.is_resumable());
        drop(up); // cut
        let partial = root.join(format!("h/.partial-e.{}", to_hex(&d)));
        assert_eq!(fs::read(&partial).unwrap(), &body[..6]);
        assert_eq!(
            store.offset("h", "e", &P::Digest(d)).unwrap(),
            Held {
                offset: 6,
                length: Some(16)
            }
        );
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert!(r.hashed.is_some(), "this process hashed the prefix");
        assert!(matches!(
            store.resume("h", "e", &P::Digest(d)),
            Err(ResumeError::Busy)
        ));
        let mut up = r.start(10, false).unwrap();
        up.write_all(&body[6..10]).unwrap();
        assert_eq!(up.pause().unwrap(), 10);
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert_eq!(r.held().offset, 10);
        let mut up = r.start(16, true).unwrap();
        up.write_all(&body[10..]).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        assert_eq!(fs::read(root.join("h/e.tar.zst")).unwrap(), body);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A new store (a restart) has no hash state: the prefix is read back.
    #[test]
    fn a_resume_in_a_new_process_reads_the_prefix() {
        let root = tempdir("prefix");
        let body = b"resumed after a restart";
        let d: [u8; 32] = Sha256::digest(body).into();
        {
            let (store, _) = Store::open(&root).unwrap();
            let mut up = store
                .begin_upload("h", "e", &P::Digest(d), Some(body.len() as u64))
                .unwrap();
            up.write_all(&body[..9]).unwrap();
        }
        let (store, _) = Store::open(&root).unwrap();
        let r = store.resume("h", "e", &P::Digest(d)).unwrap();
        assert!(r.hashed.is_none());
        assert_eq!(
            r.held(),
            Held {
                offset: 9,
                length: None
            }
        );
        let mut up = r.start(body.len() as u64, true).unwrap();
        up.write_all(&body[9..]).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        // An empty cut leaves nothing; another digest sweeps the old one.
        let mut up = store
            .begin_upload("h", "f", &P::Digest([1; 32]), Some(5))
            .unwrap();
        up.write_all(b"abc").unwrap();
        drop(up);
        drop(
            store
                .begin_upload("h", "f", &P::Digest([2; 32]), Some(5))
                .unwrap(),
        );
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A streamed upload under a key: no digest at its end, so it is kept
    /// (fsynced, its length known) and completed by an empty append that
    /// re-reads nothing in this run; a wrong whole digest deletes it.
    #[test]
    fn a_keyed_partial_is_kept_and_completed_without_rereading() {
        let root = tempdir("keyed");
        let (store, _) = Store::open(&root).unwrap();
        let body = b"streamed while packing";
        let d: [u8; 32] = Sha256::digest(body).into();
        let key = P::Key([0x5a; 16]);
        let mut up = store.begin_upload("h", "e", &key, None).unwrap();
        up.write_all(body).unwrap();
        assert_eq!(up.keep().unwrap(), Some(body.len() as u64));
        let partial = root.join(format!("h/.partial-e.k{}", "5a".repeat(16)));
        assert_eq!(fs::read(&partial).unwrap(), body);
        let held = Held {
            offset: body.len() as u64,
            length: Some(body.len() as u64),
        };
        assert_eq!(store.offset("h", "e", &key).unwrap(), held);
        // The digest's partial is another upload: nothing held there (and
        // asking for it would delete the keyed one: "repacked").
        let r = store.resume("h", "e", &key).unwrap();
        assert_eq!(r.held(), held);
        assert!(r.hashed.is_some(), "this process hashed the bytes");
        let up = r.start(body.len() as u64, true).unwrap();
        assert_eq!(up.commit(&d).unwrap(), Outcome::Stored);
        assert_eq!(fs::read(root.join("h/e.tar.zst")).unwrap(), body);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);

        // Kept, then completed against the wrong digest: deleted.
        let mut up = store.begin_upload("h", "f", &key, None).unwrap();
        up.write_all(body).unwrap();
        up.keep().unwrap();
        let up = store
            .resume("h", "f", &key)
            .unwrap()
            .start(body.len() as u64, true)
            .unwrap();
        assert!(matches!(
            up.commit(&[0; 32]).unwrap(),
            Outcome::DigestMismatch(_)
        ));
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);

        // A temp (no key, no digest) is never kept.
        let mut up = store.begin("h", "g").unwrap();
        up.write_all(body).unwrap();
        assert_eq!(up.keep().unwrap(), None);
        assert_eq!(listing(&root.join("h")), ["e.tar.zst", "e.tar.zst.sha256"]);
        fs::remove_dir_all(&root).unwrap();
    }
}
