//! One upload exchange of a tarball in `outbox/`: a `PUT` of the whole
//! tarball, or, for one that was sent before (a tarball already waiting in
//! `outbox/`), a `HEAD` to learn where the receiver's copy stopped and a
//! `PATCH` of only the rest (docs/transport.md, "Resumable uploads"), with
//! the `Upload-Key` of a streamed upload when the record has one. Sending
//! while packing is `stream`'s.
//!
//! ```text
//! Attempt::First?       yes -> PUT (whole)
//! no -> HEAD (Repr-Digest)  200 ?1  -> present (nothing sent)
//!                           409     -> conflict (theirs in Repr-Digest)
//!                           204 N   -> N = 0: PUT;  0 < N: PATCH N.. (?1)
//!                           404/405/501 (a receiver without resume) -> PUT
//!                           else    -> that answer decides
//! PATCH -> 409 offset_mismatch M -> PATCH M.. once more
//! ```
//! What the answer means is `verdict`'s business; this module only gets one.

use std::time::Instant;

use crate::config::ShipperConfig;
use crate::hashing::to_hex;
use crate::info;
use crate::protocol::{self, resumable, status, Reply};
use crate::shipper::client::{pace, ClientError, Response, Session};
use crate::shipper::prepare::Tarball;
use crate::shipper::progress::Progress;

/// What went over the wire for one episode.
pub struct Sent {
    /// The answer that decides (`verdict`).
    pub resp: Response,
    /// Body bytes sent.
    pub bytes: u64,
    /// Where the upload resumed, if it did.
    pub resumed_from: Option<u64>,
    pub secs: f64,
    /// Sent while it was packed: `secs` covers both.
    pub streamed: bool,
}

/// `12.3 of 20.1 GB` style sizes.
fn size(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.1} GB", b as f64 / 1e9)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

/// Whether the receiver may hold some of this tarball already.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Packed just now and never sent: `PUT` it.
    First,
    /// Sent before (a tarball found in `outbox/`, or a streamed upload the
    /// receiver kept without a digest): ask first (`HEAD`).
    Again,
}

pub fn upload(
    session: &mut Session<'_>,
    cfg: &ShipperConfig,
    id: &str,
    t: &Tarball,
    attempt: Attempt,
) -> Result<Sent, ClientError> {
    let started = Instant::now();
    let auth = format!("Bearer {}", cfg.token.expose());
    let digest = protocol::content_digest(&t.record.sha256);
    let target = protocol::episode_path(&cfg.host_id, id);
    // A streamed upload's partial is named by its key (its digest was not
    // known when it began).
    let keyed: Vec<(&str, &str)> = t
        .record
        .key
        .as_deref()
        .map(|k| (resumable::UPLOAD_KEY, k))
        .into_iter()
        .collect();
    let mut from = 0;
    if attempt == Attempt::Again {
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            (resumable::REPR_DIGEST, &digest),
        ];
        headers.extend(&keyed);
        let head = session.head(id, &target, &headers)?;
        match head.status {
            204 => {
                from = head
                    .headers
                    .get(resumable::UPLOAD_OFFSET)
                    .and_then(|v| resumable::parse_offset(v).ok())
                    .filter(|&n| n <= t.size)
                    .unwrap_or(0);
                // The receiver has told its durable offset; nothing of
                // the rest has been sent.
                crate::fault::point("up.resume_offset");
            }
            // A receiver that does not resume this way: upload it whole.
            404 | 405 | 501 => {}
            _ => {
                return Ok(Sent {
                    resp: with_stored_digest(head),
                    bytes: 0,
                    resumed_from: None,
                    secs: started.elapsed().as_secs_f64(),
                    streamed: false,
                })
            }
        }
    }
    let limit = cfg.max_upload_rate.map_or(String::new(), |r| {
        format!(", at most {}", pace::show_rate(r))
    });
    let mut bytes = 0;
    let mut resumed_from = None;
    let mut tries = 0;
    let resp = loop {
        tries += 1;
        let mut sent_now = 0;
        let label = if from > 0 {
            let pct = from as f64 * 100.0 / t.size.max(1) as f64;
            info!(
                "{id}: resumed at {pct:.0}% ({} of {}), sending the rest{limit}",
                size(from),
                size(t.size)
            );
            resumed_from = Some(from);
            format!("{id}: uploading (resumed at {pct:.0}%{limit})")
        } else {
            format!("{id}: uploading{limit}")
        };
        let mut progress = Progress::new(&label, Some(t.size));
        let offset = from.to_string();
        let r = if from == 0 {
            session.send_file(
                id,
                "PUT",
                &target,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", protocol::CONTENT_TYPE),
                    ("Content-Digest", &digest),
                ],
                &t.path,
                (0, t.size),
                &mut |n| {
                    sent_now = n;
                    progress.update(n)
                },
            )
        } else {
            let mut headers = vec![
                ("Authorization", auth.as_str()),
                ("Content-Type", resumable::PARTIAL_UPLOAD),
                (resumable::REPR_DIGEST, &digest),
                (resumable::UPLOAD_OFFSET, &offset),
                (resumable::UPLOAD_COMPLETE, resumable::complete(true)),
            ];
            headers.extend(&keyed);
            session.send_file(
                id,
                "PATCH",
                &target,
                &headers,
                &t.path,
                (from, t.size),
                &mut |n| {
                    sent_now = n;
                    progress.update(from + n)
                },
            )
        };
        progress.finish();
        bytes += sent_now;
        let r = r?;
        // The receiver holds another offset than it said a moment ago (a
        // power cut there lost an unsynced tail, say): once more, from
        // where it says.
        let mismatch = r.status == 409
            && r.reply
                .as_ref()
                .is_some_and(|x| x.status == status::OFFSET_MISMATCH);
        let told = r
            .headers
            .get(resumable::UPLOAD_OFFSET)
            .and_then(|v| resumable::parse_offset(v).ok())
            .filter(|&n| n <= t.size);
        match (mismatch, told) {
            (true, Some(n)) if tries < 2 => from = n,
            _ => break r,
        }
    };
    Ok(Sent {
        resp,
        bytes,
        resumed_from,
        secs: started.elapsed().as_secs_f64(),
        streamed: false,
    })
}

/// An answer to `HEAD` has no body: a 409 names the stored digest in
/// `Repr-Digest`, which the conflict note wants in hex.
fn with_stored_digest(mut r: Response) -> Response {
    if r.status == 409 && r.reply.is_none() {
        let theirs = r
            .headers
            .get(resumable::REPR_DIGEST)
            .and_then(|v| protocol::parse_content_digest(v).ok());
        let mut reply = Reply::status(status::CONFLICT);
        if let Some(d) = theirs {
            reply = reply.with_sha256(to_hex(&d));
        }
        r.reply = Some(reply);
    }
    r
}
