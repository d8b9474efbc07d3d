//! Publishing verified uploads to the bucket, and looking up what is
//! published: the object layout, the publish order, and the decisions
//! between them (pure functions, table-tested below).
//!
//! ## Layout
//!
//! ```text
//! <prefix>_data/sha256/<hex>.tar.zst        the tarball's bytes, content-addressed
//! <prefix><host_id>/<episode_id>.tar.zst.sha256
//!                                           the name: "<hex>  <episode_id>.tar.zst\n"
//!                                           (sha256sum format), metadata
//!                                           x-amz-meta-cis490-sha256, -length, -data
//! ```
//!
//! An episode is stored once its *name object* exists. The name binds the
//! id to a digest; the bytes live under that digest. Host ids start with a
//! letter or digit, so `_data/` can never be a host's folder.
//!
//! ## Why two objects
//!
//! The no-replace rule needs a conditional create, and S3 has one for a
//! single `PUT` (`If-None-Match: *`: one winner among racing writers, 412
//! for the others), but not one every store honours for multipart uploads:
//! RGW 16 ignores `If-None-Match` on `CompleteMultipartUpload`, and
//! episodes above the single-`PUT` limit (5 GiB) must go by multipart. So
//! the bytes are written first, unconditionally, where overwriting cannot
//! change them (a key derived from their sha256: a second writer writes
//! the same bytes), and only then the small name object, conditionally.
//! One rule for every size: a reader never has to know how an episode was
//! uploaded.
//!
//! ## Publish
//!
//! ```text
//! name exists?            yes -> theirs == ours ? present : conflict   (nothing sent)
//! data: PUT <= s3_max_single_put_bytes, x-amz-content-sha256 = the digest (the store
//!       hashes what it receives and refuses other bytes: 400, nothing created)
//!       or multipart: create; per part, its sha256 read from the spool first, then
//!       PUT ?partNumber&uploadId signed with it; complete; (on failure: abort)
//!       then HEAD: the object's length is the upload's
//! name: PUT If-None-Match: *    200 -> stored
//!                               412 -> read the name: theirs == ours ? present : conflict
//! ```
//!
//! The store acknowledges each step before the next, and the name last:
//! a name is never visible before its bytes are complete. A receiver
//! killed between the data and the name leaves a data object no name
//! points to; the next upload of the episode writes the same key again.
//! Such objects, and multipart uploads a killed receiver never completed
//! or aborted, are garbage, never wrong data: docs/deploy.md ("Scaling
//! out") says how to collect them. Data objects are never deleted by the
//! receiver: two names may share one (the same bytes under two ids).

use std::fs::File;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::s3::{S3Config, MAX_PARTS, MIN_PART_BYTES};
use crate::hashing::{from_hex32, sidecar_line, to_hex};
use crate::http::Headers;
use crate::s3::api::{xml_escape, xml_text, Bucket, Call, ErrorKind, Op, S3Error, Session, Stats};
use crate::s3::conn::{Answer, Body};
use crate::sigv4::Payload;
use crate::{fault, timefmt};

const META_SHA256: &str = "x-amz-meta-cis490-sha256";
const META_LENGTH: &str = "x-amz-meta-cis490-length";
const META_DATA: &str = "x-amz-meta-cis490-data";
/// Parts of 64 MiB unless more are needed to stay within `MAX_PARTS`: few
/// requests, and little to send again should one fail.
const PART_TARGET: u64 = 64 << 20;
/// A conditional create answered 409 (AWS: another conditional write to
/// the key is in flight) is tried again this often.
const CONFLICT_RETRIES: u32 = 3;

/// What the store holds under an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Absent,
    Present { digest: [u8; 32], length: u64 },
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Stored,
    /// These bytes were already published under the id.
    AlreadyPresent,
    /// Other bytes are published under the id: their digest.
    Conflict([u8; 32]),
}

/// An id already named: the same bytes, or others (pure).
pub fn decide(theirs: [u8; 32], ours: &[u8; 32]) -> Published {
    if theirs == *ours {
        Published::AlreadyPresent
    } else {
        Published::Conflict(theirs)
    }
}

/// The part size for a multipart upload of `len` bytes (pure): 64 MiB,
/// more when `MAX_PARTS` parts of that would not hold `len`, never more
/// than the single-`PUT` limit nor less than S3's 5 MiB minimum.
pub fn part_size(len: u64, max_single_put: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let need = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    need.max(PART_TARGET)
        .min(max_single_put)
        .max(MIN_PART_BYTES)
}

/// The parts of an upload of `len` bytes: (number from 1, offset, length).
pub fn parts(len: u64, size: u64) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < len {
        let n = size.min(len - offset);
        out.push((out.len() as u32 + 1, offset, n));
        offset += n;
    }
    out
}

/// The digest and length a name object's metadata records, if it has
/// both (pure).
pub fn name_metadata(h: &Headers) -> Option<([u8; 32], u64)> {
    let digest = from_hex32(h.get(META_SHA256)?)?;
    let length = crate::http::parse_content_length(h.get(META_LENGTH)?)?;
    Some((digest, length))
}

/// What a `HEAD` of the bucket says about the configuration (pure; for
/// start-up and `--check-config`). `date`: the store's `Date` header;
/// `now`: this machine's clock.
pub fn judge_bucket(status: u16, date: Option<&str>, now: SystemTime) -> Result<(), String> {
    let skew = date.and_then(http_date).map(|t| {
        let ours = timefmt::unix(now) as i64;
        (ours - t).abs()
    });
    match status {
        200 => Ok(()),
        403 if skew.is_some_and(|s| s > 300) => Err(format!(
            "the store refused the signature (403), and its clock differs from this machine's \
             by {}s: SigV4 allows 15 minutes at most; fix the clock (timedatectl, NTP)",
            skew.unwrap_or(0)
        )),
        403 => Err(
            "the store refused the request (403): check s3_access_key_id, \
                    s3_secret_key_file and that the user may use s3_bucket"
                .into(),
        ),
        404 => Err("no such bucket (404): create s3_bucket, or fix its name".into()),
        301 | 400 => Err(format!(
            "the store answered {status}: check s3_region (the bucket's region) and s3_bucket"
        )),
        s => Err(format!("the store answered {s} to a HEAD of the bucket")),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), seconds since the
/// epoch.
fn http_date(s: &str) -> Option<i64> {
    let mut w = s.split_whitespace().skip(1);
    let day: u32 = w.next()?.parse().ok()?;
    let month = w.next()?;
    let year: i64 = w.next()?.parse().ok()?;
    let mut hms = w.next()?.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|n| *n == month)? as u32
        + 1;
    timefmt::unix_from_civil(year, month, day, h, m, sec)
}

/// The receiver's published episodes in one bucket.
pub struct S3Store {
    bucket: Bucket,
    prefix: String,
    max_single_put: u64,
}

impl S3Store {
    pub fn new(cfg: &S3Config) -> Result<S3Store, crate::tls::TlsError> {
        Ok(S3Store {
            bucket: Bucket::new(cfg)?,
            prefix: cfg.prefix.clone(),
            max_single_put: cfg.max_single_put_bytes,
        })
    }

    /// `s3://bucket/prefix at https://host:port`.
    pub fn describe(&self) -> String {
        self.bucket.describe().replacen(
            " at ",
            &format!(
                "{}{} at ",
                if self.prefix.is_empty() { "" } else { "/" },
                self.prefix
            ),
            1,
        )
    }

    pub fn stats(&self) -> &Stats {
        &self.bucket.stats
    }

    /// The name object's key.
    pub fn name_key(&self, host: &str, episode: &str) -> String {
        format!("{}{host}/{episode}.tar.zst.sha256", self.prefix)
    }

    /// The data object's key for bytes of this digest.
    pub fn data_key(&self, digest: &[u8; 32]) -> String {
        format!("{}_data/sha256/{}.tar.zst", self.prefix, to_hex(digest))
    }

    /// A signed `HEAD` of the bucket: reachable, the credentials accepted,
    /// the bucket there. `Err` says what to fix.
    pub fn check(&self) -> Result<(), String> {
        let call = Call {
            op: Op::HeadBucket,
            method: "HEAD",
            key: "",
            query: &[],
            headers: &[],
            body: Body::Empty,
            payload: Payload::of(b""),
        };
        let a = self
            .bucket
            .session()
            .call(&call, &mut || {})
            .map_err(|e| e.to_string())?;
        judge_bucket(a.status, a.headers.get("date"), SystemTime::now())
            .map_err(|e| format!("{}: {e}", self.bucket.describe()))
    }

    /// What is published under an id, and its length.
    pub fn lookup(&self, host: &str, episode: &str) -> Result<Found, S3Error> {
        self.lookup_in(&mut self.bucket.session(), host, episode)
    }

    fn head(&self, s: &mut Session<'_>, op: Op, key: &str) -> Result<Option<Answer>, S3Error> {
        let call = Call {
            op,
            method: "HEAD",
            key,
            query: &[],
            headers: &[],
            body: Body::Empty,
            payload: Payload::of(b""),
        };
        let a = s.call(&call, &mut || {})?;
        match a.status {
            200 => Ok(Some(a)),
            404 => Ok(None),
            _ => Err(S3Error::status(op, key, &a)),
        }
    }

    /// The name, and then its data: a name is only believed while its
    /// bytes are there (a 200 lets the shipper delete its copy).
    fn lookup_in(&self, s: &mut Session<'_>, host: &str, episode: &str) -> Result<Found, S3Error> {
        let name = self.name_key(host, episode);
        let Some(a) = self.head(s, Op::HeadName, &name)? else {
            return Ok(Found::Absent);
        };
        let (digest, length) = name_metadata(&a.headers).ok_or_else(|| {
            let why = format!(
                "the name object has no valid {META_SHA256} and {META_LENGTH} metadata (not \
                 written by cis490-receiver?)"
            );
            S3Error::new(Op::HeadName, &name, ErrorKind::Protocol(why))
        })?;
        let data = self.data_key(&digest);
        let held = self.head(s, Op::HeadData, &data)?.and_then(|a| {
            a.headers
                .get("content-length")
                .and_then(crate::http::parse_content_length)
        });
        if held != Some(length) {
            let why = format!(
                "{name} names {length} bytes, but the data object holds {}: restore it, or \
                 delete the name to let the episode be uploaded again",
                held.map_or("none".to_owned(), |n| n.to_string())
            );
            return Err(S3Error::new(Op::HeadData, &data, ErrorKind::Protocol(why)));
        }
        Ok(Found::Present { digest, length })
    }

    /// Publishes `len` bytes of `file` (a spooled upload whose sha256 was
    /// verified to be `digest`) under `host`/`episode` (see the module doc
    /// for the order). `beat` runs every chunk or second while the store
    /// is busy (`receiver::conn` answers `102 Processing` from it).
    pub fn publish(
        &self,
        host: &str,
        episode: &str,
        file: &File,
        len: u64,
        digest: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<Published, S3Error> {
        let mut s = self.bucket.session();
        // The request's head was checked against the store when it came,
        // maybe minutes ago: another receiver may have named the id since.
        if let Found::Present { digest: theirs, .. } = self.lookup_in(&mut s, host, episode)? {
            return Ok(decide(theirs, digest));
        }
        let data = self.data_key(digest);
        if len <= self.max_single_put {
            self.put_data(&mut s, &data, file, len, digest, beat)?;
        } else {
            self.multipart(&mut s, &data, file, len, digest, beat)?;
        }
        fault::point("s3.after_data");
        self.put_name(&mut s, host, episode, len, digest, beat)
    }

    fn put_data(
        &self,
        s: &mut Session<'_>,
        key: &str,
        file: &File,
        len: u64,
        digest: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<(), S3Error> {
        let hex = to_hex(digest);
        let call = Call {
            op: Op::PutData,
            method: "PUT",
            key,
            query: &[],
            headers: &[("content-type", "application/zstd"), (META_SHA256, &hex)],
            body: Body::File {
                file,
                offset: 0,
                len,
            },
            payload: Payload::Sha256(*digest),
        };
        let a = s.call(&call, beat)?;
        if a.status != 200 {
            return Err(S3Error::status(Op::PutData, key, &a));
        }
        Ok(())
    }

    fn multipart(
        &self,
        s: &mut Session<'_>,
        key: &str,
        file: &File,
        len: u64,
        digest: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<(), S3Error> {
        let hex = to_hex(digest);
        let call = Call {
            op: Op::CreateMultipart,
            method: "POST",
            key,
            query: &[("uploads", "")],
            headers: &[("content-type", "application/zstd"), (META_SHA256, &hex)],
            body: Body::Empty,
            payload: Payload::of(b""),
        };
        let a = s.call(&call, beat)?;
        let id = match xml_text(&String::from_utf8_lossy(&a.body), "UploadId") {
            Some(id) if a.status == 200 && !id.is_empty() => id,
            _ if a.status != 200 => return Err(S3Error::status(Op::CreateMultipart, key, &a)),
            _ => {
                let why = "no UploadId in the answer".to_owned();
                return Err(S3Error::new(
                    Op::CreateMultipart,
                    key,
                    ErrorKind::Protocol(why),
                ));
            }
        };
        let result = self.upload_parts(s, key, &id, file, len, digest, beat);
        if result.is_err() {
            // Best effort: parts of an upload neither completed nor aborted
            // hold space until a lifecycle rule removes them.
            let abort = Call {
                op: Op::AbortMultipart,
                method: "DELETE",
                key,
                query: &[("uploadId", &id)],
                headers: &[],
                body: Body::Empty,
                payload: Payload::of(b""),
            };
            let _ = self.bucket.session().call(&abort, beat);
            return result;
        }
        // The completion's answer carries no usable ETag on RGW 16: the
        // object's length is what can be checked.
        let held = self.head(s, Op::HeadData, key)?.and_then(|a| {
            a.headers
                .get("content-length")
                .and_then(crate::http::parse_content_length)
        });
        if held != Some(len) {
            let why = format!("{len} bytes uploaded in parts, but the object holds {held:?}");
            return Err(S3Error::new(Op::HeadData, key, ErrorKind::Protocol(why)));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_parts(
        &self,
        s: &mut Session<'_>,
        key: &str,
        id: &str,
        file: &File,
        len: u64,
        digest: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<(), S3Error> {
        let mut done = String::from("<CompleteMultipartUpload>");
        // The store checks each part against the sha256 signed for it, and
        // that is computed from the spool here, not from what the shipper
        // sent: the whole upload's sha256, over the same reads, ties the
        // parts to the verified digest (a spool changed on this disk since
        // its verification must not become the object named by it).
        let mut whole = Sha256::new();
        let parts = parts(len, part_size(len, self.max_single_put));
        let last = parts.len() as u32;
        for (n, offset, plen) in parts {
            // Read twice (here, then to send it), never held in memory:
            // the signature states the part's sha256 before its bytes.
            let sha = hash_range(file, offset, plen, &mut whole, beat)
                .map_err(|e| S3Error::new(Op::PutPart, key, ErrorKind::Local(e)))?;
            if n == last && <[u8; 32]>::from(whole.clone().finalize()) != *digest {
                // Before the last part is sent: nothing completes.
                return Err(S3Error::new(Op::PutPart, key, ErrorKind::SpoolChanged));
            }
            let number = n.to_string();
            let call = Call {
                op: Op::PutPart,
                method: "PUT",
                key,
                query: &[("partNumber", &number), ("uploadId", id)],
                headers: &[],
                body: Body::File {
                    file,
                    offset,
                    len: plen,
                },
                payload: Payload::Sha256(sha),
            };
            let a = s.call(&call, beat)?;
            let etag = a.headers.get("etag").unwrap_or_default();
            if a.status != 200 {
                return Err(S3Error::status(Op::PutPart, key, &a));
            }
            if etag.is_empty() {
                let why = format!("no ETag for part {n}");
                return Err(S3Error::new(Op::PutPart, key, ErrorKind::Protocol(why)));
            }
            done += &format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            );
        }
        done += "</CompleteMultipartUpload>";
        let call = Call {
            op: Op::CompleteMultipart,
            method: "POST",
            key,
            query: &[("uploadId", id)],
            headers: &[("content-type", "application/xml")],
            body: Body::Bytes(done.as_bytes()),
            payload: Payload::of(done.as_bytes()),
        };
        let a = s.call(&call, beat)?;
        // AWS may report a failed completion in a 200's body.
        if a.status != 200 || String::from_utf8_lossy(&a.body).contains("<Error>") {
            return Err(S3Error::status(Op::CompleteMultipart, key, &a));
        }
        Ok(())
    }

    /// Creates the name object, unless one exists (`If-None-Match: *`).
    fn put_name(
        &self,
        s: &mut Session<'_>,
        host: &str,
        episode: &str,
        len: u64,
        digest: &[u8; 32],
        beat: &mut dyn FnMut(),
    ) -> Result<Published, S3Error> {
        let key = self.name_key(host, episode);
        let body = sidecar_line(digest, &format!("{episode}.tar.zst"));
        let (hex, length, data) = (to_hex(digest), len.to_string(), self.data_key(digest));
        let call = Call {
            op: Op::PutName,
            method: "PUT",
            key: &key,
            query: &[],
            headers: &[
                ("content-type", "text/plain"),
                ("if-none-match", "*"),
                (META_SHA256, &hex),
                (META_LENGTH, &length),
                (META_DATA, &data),
            ],
            body: Body::Bytes(body.as_bytes()),
            payload: Payload::of(body.as_bytes()),
        };
        let mut tries = 0;
        loop {
            let a = s.call(&call, beat)?;
            match a.status {
                200 => return Ok(Published::Stored),
                412 => {
                    return match self.lookup_in(s, host, episode)? {
                        Found::Present { digest: theirs, .. } => Ok(decide(theirs, digest)),
                        Found::Absent => {
                            let why = "412 to a conditional create, yet no name object".to_owned();
                            Err(S3Error::new(Op::PutName, &key, ErrorKind::Protocol(why)))
                        }
                    }
                }
                409 if tries < CONFLICT_RETRIES => {
                    // A backoff, not a synchronisation: the concurrent
                    // write decides, and the next try sees its result.
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
                _ => return Err(S3Error::status(Op::PutName, &key, &a)),
            }
        }
    }
}

/// sha256 of `len` bytes of `file` from `offset`, the same bytes fed to
/// `whole` too, `beat` between chunks.
fn hash_range(
    file: &File,
    offset: u64,
    len: u64,
    whole: &mut Sha256,
    beat: &mut dyn FnMut(),
) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    crate::hashing::for_each_chunk_at(file, offset, len, &mut |c| {
        hasher.update(c);
        whole.update(c);
        beat();
    })?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn the_same_bytes_are_present_others_conflict() {
        assert_eq!(decide([1; 32], &[1; 32]), Published::AlreadyPresent);
        assert_eq!(decide([1; 32], &[2; 32]), Published::Conflict([1; 32]));
    }

    #[test]
    fn part_sizes() {
        // (length, single-PUT limit) -> part size
        let table = [
            (6 * GIB, 5 * GIB, 64 * MIB),
            (64 * GIB, 5 * GIB, 64 * MIB),
            (1000 * GIB, 5 * GIB, 103 * MIB), // 10000 parts of 64 MiB hold 625 GiB
            (50_000 * GIB, 5 * GIB, 5 * GIB), // the most that fits: 10000 parts of 5 GiB
            (13 * MIB, 5 * MIB, 5 * MIB),     // a test's lowered limit
            (13 * MIB, 6 * MIB, 6 * MIB),
        ];
        for (len, limit, want) in table {
            let size = part_size(len, limit);
            assert_eq!(size, want, "len {len}, limit {limit}");
            assert!(len.div_ceil(size) <= MAX_PARTS, "len {len}");
        }
        assert_eq!(
            parts(13 * MIB, 5 * MIB),
            vec![
                (1, 0, 5 * MIB),
                (2, 5 * MIB, 5 * MIB),
                (3, 10 * MIB, 3 * MIB)
            ]
        );
        assert_eq!(parts(10 * MIB, 5 * MIB).len(), 2, "no empty last part");
    }

    #[test]
    fn name_metadata_needs_both_fields() {
        let h = |pairs: &[(&str, &str)]| {
            Headers(
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let hex = "ab".repeat(32);
        assert_eq!(
            name_metadata(&h(&[
                ("X-Amz-Meta-Cis490-Sha256", &hex),
                (META_LENGTH, "12")
            ])),
            Some(([0xab; 32], 12))
        );
        assert_eq!(name_metadata(&h(&[(META_SHA256, &hex)])), None);
        assert_eq!(
            name_metadata(&h(&[(META_SHA256, "abc"), (META_LENGTH, "1")])),
            None
        );
        assert_eq!(
            name_metadata(&h(&[(META_SHA256, &hex), (META_LENGTH, "-1")])),
            None
        );
    }

    #[test]
    fn a_bucket_check_says_what_to_fix() {
        let now = timefmt::from_unix(1_795_842_061); // 2026-11-28T05:01:01Z
        assert_eq!(judge_bucket(200, None, now), Ok(()));
        let e = judge_bucket(403, Some("Sat, 28 Nov 2026 05:01:30 GMT"), now).unwrap_err();
        assert!(e.contains("s3_secret_key_file"), "{e}");
        let e = judge_bucket(403, Some("Sat, 28 Nov 2026 05:31:01 GMT"), now).unwrap_err();
        assert!(e.contains("1800s") && e.contains("clock"), "{e}");
        assert!(judge_bucket(404, None, now)
            .unwrap_err()
            .contains("create s3_bucket"));
        assert!(judge_bucket(400, None, now)
            .unwrap_err()
            .contains("s3_region"));
        assert_eq!(
            http_date("Sat, 28 Nov 2026 05:01:01 GMT"),
            Some(1_795_842_061)
        );
        assert_eq!(http_date("yesterday"), None);
    }
}
