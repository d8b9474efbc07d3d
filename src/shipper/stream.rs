//! Upload while packing: a first attempt sends the tarball as it is made,
//! a chunked `PUT` whose `Content-Digest` comes in the trailer
//! (docs/transport.md, "Upload while packing").
//!
//! ```text
//! head (Upload-Key, Expect: 100-continue)
//!   411/428/501 (no streams here, or a stored id) -> pack, then `upload` (PUT, digest first)
//!   another answer, or no connection              -> pack; that answer decides
//!   100 or silence -> pack: every compressed piece to the .partial, the hash, the socket
//!                     (the socket failing: packing goes on, the file is what a retry resumes)
//!      pack fails   -> abandon the body (no last chunk: never published)
//!      last chunk + trailer -> answer 200/201 -> the .partial goes, never synced
//!                              anything else  -> keep it (durable, record with the key)
//!                              400 digest_missing -> keep it, complete it now (HEAD, PATCH)
//! ```
//! One thread: the kernel's socket buffer is what overlaps packing with
//! sending. What an answer means is `verdict`'s business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::config::ShipperConfig;
use crate::hashing::to_hex;
use crate::info;
use crate::protocol::{self, resumable, Status};
use crate::shipper::client::{ClientError, Response, Session};
use crate::shipper::outbox::Dirs;
use crate::shipper::pack::PackOptions;
use crate::shipper::prepare::{self, PrepError, Tarball};
use crate::shipper::upload::{self, Attempt, Sent};

/// Packs `id` and sends it as it is packed; the tarball (in `outbox/`
/// unless the receiver confirmed it) and how the upload went.
pub fn stream(
    session: &mut Session<'_>,
    cfg: &ShipperConfig,
    dirs: &Dirs,
    opts: &PackOptions,
    id: &str,
) -> Result<(Tarball, Result<Sent, ClientError>), PrepError> {
    let started = Instant::now();
    let key = upload_key(id);
    let auth = format!("Bearer {}", cfg.token.expose());
    let target = protocol::episode_path(&cfg.host_id, id);
    let head = session.start_stream(
        id,
        "PUT",
        &target,
        &[
            ("Authorization", &auth),
            ("Content-Type", protocol::CONTENT_TYPE),
            ("Trailer", "Content-Digest"),
            (resumable::UPLOAD_KEY, &key),
        ],
    );
    let early = match head {
        Ok(None) => None,
        Ok(Some(r)) if takes_no_stream(&r) => {
            info!(
                "{id}: the receiver takes no streamed upload of it ({} {}); packing first",
                r.status,
                r.explain()
            );
            let t = prepare::pack(dirs, opts, id)?;
            let sent = upload::upload(session, cfg, id, &t, Attempt::First);
            return Ok((t, sent));
        }
        Ok(Some(r)) => Some(Ok(r)),
        Err(e) => Some(Err(e)),
    };
    if let Some(early) = early {
        // Busy, refused, unreachable: that decides, as it would after a
        // pack; the tarball waits in outbox/ for the next pass.
        let t = prepare::pack(dirs, opts, id)?;
        let sent = early.map(|resp| Sent {
            resp,
            bytes: 0,
            resumed_from: None,
            secs: started.elapsed().as_secs_f64(),
            streamed: false,
        });
        return Ok((t, sent));
    }

    let mut body = session.stream_body();
    let fresh = match prepare::pack_into(dirs, opts, id, Some(&mut body), Some(key)) {
        Ok(f) => f,
        Err(e) => {
            body.abandon();
            return Err(e);
        }
    };
    let digest = protocol::content_digest(&fresh.record().sha256);
    let (answer, bytes) = body.finish(&[("Content-Digest", &digest)]);
    let held = matches!(&answer, Ok(r) if r.status == 200 || r.status == 201);
    let t = if held {
        fresh.discard(dirs, id)
    } else {
        fresh.keep_cold(dirs, id)?
    };
    if let Ok(r) = &answer {
        // The receiver kept a streamed body that came without a digest (a
        // proxy that drops trailers): complete it with the resumable
        // exchange.
        let missing = Status::DigestMissing;
        if r.status == missing.code()
            && r.reply.as_ref().is_some_and(|x| x.status == missing.word())
        {
            info!(
                "{id}: the receiver got the body without its digest (a proxy that drops trailers?); completing it"
            );
            let sent = upload::upload(session, cfg, id, &t, Attempt::Again).map(|s| Sent {
                bytes: s.bytes + bytes,
                secs: started.elapsed().as_secs_f64(),
                ..s
            });
            return Ok((t, sent));
        }
    }
    let sent = answer.map(|resp| Sent {
        resp,
        bytes,
        resumed_from: None,
        secs: started.elapsed().as_secs_f64(),
        streamed: true,
    });
    Ok((t, sent))
}

/// A final answer to the head that means "not as a stream": a receiver or
/// proxy without chunked uploads (411, 501), or an id the receiver holds,
/// whose answer depends on a digest we do not have yet (428).
fn takes_no_stream(r: &Response) -> bool {
    [
        Status::LengthRequired,
        Status::DigestRequired,
        Status::NotImplemented,
    ]
    .iter()
    .any(|s| s.code() == r.status)
}

/// A fresh `Upload-Key`: 128 bits that no other upload of this id will
/// draw. It names a partial, it guards nothing (the whole digest is
/// checked before anything is published), so uniqueness is what matters,
/// not secrecy: the id, the process, the time and a count, hashed.
fn upload_key(id: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(now.to_le_bytes());
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    h.update(DRAWN.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut k = to_hex(&d);
    k.truncate(32);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_keys_are_well_formed_and_differ() {
        let a = upload_key("ep-1");
        let b = upload_key("ep-1");
        assert!(resumable::is_upload_key(&a), "{a}");
        assert_ne!(a, b);
    }
}
