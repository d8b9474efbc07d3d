//! Request admission: what a request earns from its head alone, before a
//! body byte is read or `100 Continue` is sent. Pure steps, in the order of
//! docs/transport.md ("Upload", "Resumable uploads", "Upload while
//! packing"): [`request`] decides framing, route, credentials and
//! identity, length and the digest and upload fields; [`against_store`]
//! (and [`probe_against_store`] for a `HEAD`, [`stream_against_store`] for
//! a chunked `PUT`) decides from what the store holds under the id; for an
//! append, [`against_partial`] decides from the upload's durable offset;
//! for a chunked `PUT` whose body has ended, [`streamed_digest`] decides
//! from its trailer. Each is a table over plain data, tested case by case
//! below.
//!
//! Why two steps around the store lookup rather than one function fed the
//! lookup's result: the lookup is I/O on a path built from the request, and
//! it may only happen once the path is valid and the host authenticated
//! (a refused request never reaches the file system; an unauthenticated
//! peer must not make us hash a stored tarball). So `conn` calls
//! [`request`], looks up only what an [`Admitted::Put`] names, and passes
//! the result to [`against_store`]; a closure handed to one function would
//! hide that I/O inside the "pure" decision.
//!
//! Not here: connection slots (`slots`), reading the head or the body
//! (`conn`, `body`), the wording and bytes of answers (`answer`).

use rustls::pki_types::CertificateDer;

use crate::auth::{self, Credentials, TokenHash};
use crate::http::{self, RequestFraming, RequestHead};
use crate::protocol::{self, resumable, Route, RouteError, Status};
use crate::receiver::answer::Answer;
use crate::receiver::store::Existing;
use crate::tls;

/// A sha256, as the digest fields carry it.
pub type Sha256 = [u8; 32];
/// An `Upload-Key`'s 128 bits.
pub type UploadKey = [u8; 16];

/// What the decision needs besides the head: this server's configuration
/// and this connection's certificate.
pub struct Facts<'a> {
    /// `[hosts]`: host id and the sha256 of its token.
    pub hosts: &'a [(String, TokenHash)],
    /// `max_body_bytes`.
    pub max_body_bytes: u64,
    pub cert: CertCheck<'a>,
}

/// Whether the client certificate must name the token's host.
#[derive(Clone, Copy, Debug)]
pub enum CertCheck<'a> {
    /// The token alone identifies: the loopback plain listener (the proxy
    /// in front did TLS and client certificates), or TLS without
    /// `client_ca_file`.
    TokenOnly,
    /// TLS with `client_ca_file`: the certificate the handshake verified
    /// (always present there; `None` is refused all the same).
    MustName(Option<&'a CertificateDer<'a>>),
}

/// Who the request proved to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who<'a> {
    /// Refused before or at the token.
    Nobody,
    /// A valid token whose host the client certificate does not name: the
    /// log names the host, but the connection is not trusted (403).
    Claimed(&'a str),
    /// Token and certificate agree: from now on the connection may not be
    /// evicted (`slots`), whatever the request's answer.
    Host(&'a str),
}

impl<'a> Who<'a> {
    /// The host to name in the log line.
    pub fn host(self) -> Option<&'a str> {
        match self {
            Who::Nobody => None,
            Who::Claimed(h) | Who::Host(h) => Some(h),
        }
    }
}

/// The decision on a head.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub who: Who<'a>,
    /// `Err`: the answer, sent before any body byte is read.
    pub decision: Result<Admitted<'a>, Answer>,
}

/// A request that passed every check of the head.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted<'a> {
    /// An authenticated ping, without a body: answer 200.
    Ping {
        host: &'a str,
        keep_alive: bool,
    },
    Put(Put),
    /// A chunked `PUT`: an upload sent while it is packed.
    Streamed(Streamed),
    /// `HEAD`: how much of an upload is held.
    Probe(Probe),
    /// `PATCH`: bytes appended to an upload.
    Append(Append),
}

/// An upload whose head passed: the store decides the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct Put {
    /// The path's host id, equal to the authenticated host.
    pub host: String,
    pub episode: String,
    /// `Content-Length`: 1 to `max_body_bytes`.
    pub length: u64,
    /// The announced sha256 (`Content-Digest`).
    pub digest: [u8; 32],
    /// `Upload-Key`: the body goes to the partial it names (so that a
    /// client that holds a key for this upload resumes it by the key).
    pub key: Option<[u8; 16]>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A chunked `PUT` whose head passed: an upload of unknown length, its
/// digest in the head or, later, in the trailer.
#[derive(Debug, PartialEq, Eq)]
pub struct Streamed {
    pub host: String,
    pub episode: String,
    /// `Content-Digest` in the head (a client that knows it already).
    pub digest: Option<[u8; 32]>,
    /// `Upload-Key`: names the partial; without one the body goes to a
    /// private temp (not resumable).
    pub key: Option<[u8; 16]>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A `HEAD` whose head passed: the store says what it holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    pub host: String,
    pub episode: String,
    /// `Repr-Digest`: which upload of the episode.
    pub digest: [u8; 32],
    /// `Upload-Key`: the partial to report is the one it names.
    pub key: Option<[u8; 16]>,
    pub keep_alive: bool,
}

/// A `PATCH` whose head passed: the upload's offset decides the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct Append {
    pub host: String,
    pub episode: String,
    /// `Repr-Digest`: the whole tarball's sha256.
    pub digest: [u8; 32],
    /// `Upload-Key`: the partial to append to is the one it names.
    pub key: Option<[u8; 16]>,
    /// `Upload-Offset`: where these bytes go.
    pub offset: u64,
    /// `Content-Length`: 0 to `max_body_bytes`, `offset` + it too.
    pub length: u64,
    /// `Upload-Complete`: these bytes end the upload.
    pub complete: bool,
    /// `Upload-Length`, if the client sent it.
    pub upload_length: Option<u64>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl Append {
    /// The upload's length once these bytes are in.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Decides a request from its head: framing, route, credentials and
/// identity, then per route the length and digest header.
pub fn request<'a>(head: &RequestHead, facts: &Facts<'a>) -> Verdict<'a> {
    let refuse = |who, answer| Verdict {
        who,
        decision: Err(answer),
    };
    let framing = match http::request_framing(head) {
        Ok(f) => f,
        Err(r) => {
            let answer = Answer::new(Status::refusing(r.status)).with_message(r.message);
            return refuse(Who::Nobody, answer);
        }
    };
    let route = match protocol::route(&head.method, &head.target) {
        Ok(r) => r,
        Err(e) => return refuse(Who::Nobody, route_refused(e)),
    };
    let host = match identify(head, facts) {
        Ok(h) => h,
        Err((who, answer)) => return refuse(who, answer),
    };
    let decision = match route {
        Route::Ping if framing.content_length.unwrap_or(0) != 0 => Err(bad("ping takes no body")),
        Route::Ping => Ok(Admitted::Ping {
            host,
            keep_alive: framing.keep_alive,
        }),
        Route::Episode { host_id, .. }
        | Route::Offset { host_id, .. }
        | Route::Append { host_id, .. }
            if host_id != host =>
        {
            Err(Answer::new(Status::Forbidden)
                .with_message(format!("authenticated as {host}, not {host_id}")))
        }
        Route::Offset {
            host_id,
            episode_id,
        } => probe(head, &framing).map(|(digest, key)| {
            Admitted::Probe(Probe {
                host: host_id,
                episode: episode_id,
                digest,
                key,
                keep_alive: framing.keep_alive,
            })
        }),
        Route::Append {
            host_id,
            episode_id,
        } => append(head, &framing, facts.max_body_bytes).map(|a| {
            Admitted::Append(Append {
                host: host_id,
                episode: episode_id,
                ..a
            })
        }),
        Route::Episode {
            host_id,
            episode_id,
        } if framing.chunked => streamed(head).map(|(digest, key)| {
            Admitted::Streamed(Streamed {
                host: host_id,
                episode: episode_id,
                digest,
                key,
                keep_alive: framing.keep_alive,
                expect_continue: framing.expect_continue,
            })
        }),
        Route::Episode {
            host_id,
            episode_id,
        } => upload(head, &framing, facts.max_body_bytes).map(|(length, digest, key)| {
            Admitted::Put(Put {
                host: host_id,
                episode: episode_id,
                length,
                digest,
                key,
                keep_alive: framing.keep_alive,
                expect_continue: framing.expect_continue,
            })
        }),
    };
    Verdict {
        who: Who::Host(host),
        decision,
    }
}

fn bad(why: &str) -> Answer {
    Answer::new(Status::BadRequest).with_message(why.to_owned())
}

fn route_refused(e: RouteError) -> Answer {
    match e {
        RouteError::BadPath(why) => bad(why),
        RouteError::BadId => bad(&format!(
            "host and episode ids must be {}",
            crate::ids::RULE
        )),
        RouteError::NotFound => Answer::new(Status::NotFound).with_message("no such endpoint"),
        RouteError::MethodNotAllowed(allow) => Answer::new(Status::MethodNotAllowed)
            .with_message(format!("use {allow}"))
            .with_header("Allow", allow),
    }
}

/// An upload's length, then its announced digest, then its key if any.
fn upload(
    head: &RequestHead,
    framing: &RequestFraming,
    max_body_bytes: u64,
) -> Result<(u64, Sha256, Option<UploadKey>), Answer> {
    let length = match framing.content_length {
        None => return Err(Answer::new(Status::LengthRequired).with_message("send Content-Length")),
        // No tar.zst is empty; an empty PUT is a client bug.
        Some(0) => return Err(bad("empty body: an episode tarball is never empty")),
        Some(n) if n > max_body_bytes => {
            return Err(Answer::new(Status::TooLarge).with_message(format!(
                "body of {n} bytes exceeds max_body_bytes ({max_body_bytes})"
            )))
        }
        Some(n) => n,
    };
    let digest = match head.headers.get("content-digest") {
        None => Err(bad("missing Content-Digest: sha-256=:<base64>:")),
        Some(v) => protocol::parse_content_digest(v).map_err(bad),
    }?;
    Ok((length, digest, upload_key(head)?))
}

/// A chunked `PUT`: the digest if the head has it (malformed: 400), and
/// the key if any. Its length is decided as it streams (`max_body_bytes`
/// on the decoded bytes, an empty body at its end).
fn streamed(head: &RequestHead) -> Result<(Option<Sha256>, Option<UploadKey>), Answer> {
    let digest = match head.headers.get("content-digest") {
        None => None,
        Some(v) => Some(protocol::parse_content_digest(v).map_err(bad)?),
    };
    Ok((digest, upload_key(head)?))
}

/// `Upload-Key`, if present: exactly 32 lowercase hex digits, once.
fn upload_key(head: &RequestHead) -> Result<Option<[u8; 16]>, Answer> {
    match single(head, resumable::UPLOAD_KEY)? {
        None => Ok(None),
        Some(v) => resumable::parse_upload_key(v)
            .map(Some)
            .map_err(|why| bad(&format!("{} {why}", resumable::UPLOAD_KEY))),
    }
}

/// The one value of a field that may appear once, if present; a repeated
/// one is a 400 (the framing rule for `Content-Digest`, applied to the
/// resumable fields `http` does not know).
fn single<'h>(head: &'h RequestHead, name: &str) -> Result<Option<&'h str>, Answer> {
    match head.headers.count(name) {
        0 => Ok(None),
        1 => Ok(head.headers.get(name)),
        _ => Err(bad(&format!("{name} must appear once"))),
    }
}

/// `Repr-Digest`, required on `HEAD` and `PATCH`: which upload is meant.
fn repr_digest(head: &RequestHead) -> Result<[u8; 32], Answer> {
    match single(head, resumable::REPR_DIGEST)? {
        None => Err(bad(
            "missing Repr-Digest: sha-256=:<base64 of the whole tarball's sha256>:",
        )),
        Some(v) => resumable::parse_repr_digest(v).map_err(bad),
    }
}

/// A `HEAD`: no body, the digest of the upload it asks about, and the key
/// that names its partial, if any.
fn probe(
    head: &RequestHead,
    framing: &RequestFraming,
) -> Result<([u8; 32], Option<[u8; 16]>), Answer> {
    if framing.content_length.unwrap_or(0) != 0 {
        return Err(bad("HEAD takes no body"));
    }
    Ok((repr_digest(head)?, upload_key(head)?))
}

/// A `PATCH`: its length, media type, digest and upload fields, each
/// checked on its own; how they sit with the upload's offset is
/// [`against_partial`]'s. Host and episode are filled in by the caller.
fn append(
    head: &RequestHead,
    framing: &RequestFraming,
    max_body_bytes: u64,
) -> Result<Append, Answer> {
    let too_large = |n: u64, what: &str| {
        Answer::new(Status::TooLarge).with_message(format!(
            "{what} of {n} bytes exceeds max_body_bytes ({max_body_bytes})"
        ))
    };
    let length = match framing.content_length {
        None => return Err(Answer::new(Status::LengthRequired).with_message("send Content-Length")),
        Some(n) if n > max_body_bytes => return Err(too_large(n, "body")),
        // 0 is allowed: the bytes may all be there already, and an empty
        // append with `Upload-Complete: ?1` completes the upload.
        Some(n) => n,
    };
    let media = head
        .headers
        .get("content-type")
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(resumable::PARTIAL_UPLOAD)) {
        return Err(bad(&format!(
            "PATCH needs Content-Type: {}",
            resumable::PARTIAL_UPLOAD
        )));
    }
    let digest = repr_digest(head)?;
    let field = |name: &str, required: bool| -> Result<Option<&str>, Answer> {
        match single(head, name)? {
            None if required => Err(bad(&format!("PATCH needs {name}"))),
            v => Ok(v),
        }
    };
    let number = |name: &str, v: &str| {
        resumable::parse_offset(v).map_err(|why| bad(&format!("{name} {why}")))
    };
    let offset = number(
        resumable::UPLOAD_OFFSET,
        field(resumable::UPLOAD_OFFSET, true)?.unwrap_or_default(),
    )?;
    let complete =
        resumable::parse_complete(field(resumable::UPLOAD_COMPLETE, true)?.unwrap_or_default())
            .map_err(|why| bad(&format!("{} {why}", resumable::UPLOAD_COMPLETE)))?;
    let upload_length = match field(resumable::UPLOAD_LENGTH, false)? {
        None => None,
        Some(v) => Some(number(resumable::UPLOAD_LENGTH, v)?),
    };
    // 15 digits each: the sum cannot overflow.
    let end = offset + length;
    if end > max_body_bytes {
        return Err(too_large(end, "upload"));
    }
    if complete && end == 0 {
        // As for PUT: no tar.zst is empty.
        return Err(bad("empty upload: an episode tarball is never empty"));
    }
    let a = Append {
        host: String::new(),
        episode: String::new(),
        digest,
        key: upload_key(head)?,
        offset,
        length,
        complete,
        upload_length,
        keep_alive: framing.keep_alive,
        expect_continue: framing.expect_continue,
    };
    if let Some(total) = upload_length {
        lengths_agree(&a, total)?;
    }
    Ok(a)
}

/// An append against the whole upload's length: it may not go beyond it,
/// and one that says it completes the upload must end exactly there.
fn lengths_agree(a: &Append, total: u64) -> Result<(), Answer> {
    if a.end() > total {
        return Err(bad(&format!(
            "Upload-Offset {} + Content-Length {} goes beyond Upload-Length {total}",
            a.offset, a.length
        )));
    }
    if a.complete && a.end() != total {
        return Err(bad(&format!(
            "Upload-Complete: ?1, but the upload would end at {} of Upload-Length {total}",
            a.end()
        )));
    }
    Ok(())
}

/// Who is asking: the token names the host; under mTLS the certificate
/// must name the same host.
fn identify<'a>(head: &RequestHead, facts: &Facts<'a>) -> Result<&'a str, (Who<'a>, Answer)> {
    let unauthorized = |why: &str, challenge: &'static str| {
        let answer = Answer::new(Status::Unauthorized)
            .with_message(why.to_owned())
            .with_header("WWW-Authenticate", challenge);
        (Who::Nobody, answer)
    };
    let token = match auth::parse_authorization(head.headers.get("authorization")) {
        Credentials::Bearer(t) => t,
        Credentials::Missing => {
            return Err(unauthorized("send Authorization: Bearer <token>", "Bearer"))
        }
        Credentials::Invalid => {
            return Err(unauthorized(
                "malformed Authorization: expected Bearer <token>",
                "Bearer error=\"invalid_request\"",
            ))
        }
    };
    let Some(host) = auth::host_for_token(facts.hosts, token) else {
        return Err(unauthorized(
            "unknown token",
            "Bearer error=\"invalid_token\"",
        ));
    };
    if let CertCheck::MustName(cert) = facts.cert {
        let bound = match cert {
            Some(c) => tls::cert_names_host(c, host),
            None => Err("no client certificate"),
        };
        if let Err(why) = bound {
            let answer = Answer::new(Status::Forbidden)
                .with_message(format!("token is for host {host}, but {why}"));
            return Err((Who::Claimed(host), answer));
        }
    }
    Ok(host)
}

/// What to do once the store has said what it holds under the id.
#[derive(Debug, PartialEq)]
pub enum AfterLookup {
    /// Nothing stored: read the body.
    ReadBody,
    /// These exact bytes are stored: make their name durable
    /// (`Store::confirm`), then send this 200.
    ConfirmThen(Answer),
    /// Answer now, without reading the body.
    Answer(Answer),
}

/// The last step decided from the head. `200` is decided from the
/// *announced* digest: a client that lies about it can only be told that
/// the receiver already has the bytes it named. The same for a `PATCH`
/// (its `Repr-Digest`): an upload that is already stored is not appended to.
pub fn against_store(put: &Put, found: Existing) -> AfterLookup {
    against_stored(&put.digest, found)
}

/// [`against_store`] for any upload: by its whole digest.
pub fn against_stored(digest: &[u8; 32], found: Existing) -> AfterLookup {
    match found {
        Existing::Absent => AfterLookup::ReadBody,
        Existing::Present(d) if d == *digest => {
            AfterLookup::ConfirmThen(Answer::new(Status::Present).with_sha256(&d))
        }
        Existing::Present(d) => AfterLookup::Answer(Answer::conflict(&d)),
    }
}

/// What a `HEAD` does once the store has said what it holds under the id.
#[derive(Debug, PartialEq)]
pub enum ProbeStep {
    /// These bytes are stored: make the name durable, then answer
    /// [`Answer::complete`] with the stored length.
    Complete,
    /// Other bytes are stored: this answer (409 with `Repr-Digest`).
    Answer(Answer),
    /// Nothing stored: report the partial's durable offset.
    Offset,
}

/// A chunked `PUT` against what the store holds: as a `PUT` when the head
/// has the digest; without one, an id already stored is **428**: the body
/// is not read (it could only end as 200 or 409, known now to a client
/// that says its digest first).
pub fn stream_against_store(put: &Streamed, found: Existing) -> AfterLookup {
    match (put.digest, found) {
        (Some(d), found) => against_stored(&d, found),
        (None, Existing::Absent) => AfterLookup::ReadBody,
        (None, Existing::Present(_)) => AfterLookup::Answer(Answer::digest_required()),
    }
}

/// A chunked `PUT` whose body of `length` decoded bytes has ended: its
/// digest, from the head or the trailer's `Content-Digest` (the one
/// trailer field read; others are ignored). An empty body, a digest in
/// both, a repeated or malformed one, is a 400. `None`: no digest anywhere
/// (`digest_missing`).
pub fn streamed_digest(
    head: Option<[u8; 32]>,
    trailer: &http::Headers,
    length: u64,
) -> Result<Option<[u8; 32]>, Answer> {
    if length == 0 {
        // As for PUT: no tar.zst is empty.
        return Err(bad("empty body: an episode tarball is never empty"));
    }
    match (trailer.count("content-digest"), head) {
        (0, head) => Ok(head),
        (1, Some(_)) => Err(bad(
            "Content-Digest in the head and again in the trailer: send it once",
        )),
        (1, None) => {
            protocol::parse_content_digest(trailer.get("content-digest").unwrap_or_default())
                .map(Some)
                .map_err(|why| bad(&format!("trailer: {why}")))
        }
        _ => Err(bad("Content-Digest repeated in the trailer")),
    }
}

pub fn probe_against_store(probe: &Probe, found: Existing) -> ProbeStep {
    match found {
        Existing::Absent => ProbeStep::Offset,
        Existing::Present(d) if d == probe.digest => ProbeStep::Complete,
        Existing::Present(d) => ProbeStep::Answer(Answer::conflict_head(&d)),
    }
}

/// What the receiver holds of one upload: its durable length (`fsync`
/// covered it before it was read here) and, if a `PUT` began it, the
/// length of the whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub offset: u64,
    pub length: Option<u64>,
}

/// The last check of an append, with the upload locked: its offset must be
/// the one held (409 `offset_mismatch`, with the right one, so that the
/// client can go on from there); its end must fit the upload's length.
pub fn against_partial(append: &Append, held: Held) -> Result<(), Answer> {
    if append.offset != held.offset {
        return Err(Answer::offset_mismatch(append.offset, held.offset));
    }
    match (held.length, append.upload_length) {
        (Some(ours), Some(theirs)) if ours != theirs => Err(bad(&format!(
            "Upload-Length is {theirs}, but this upload began as {ours} bytes"
        ))),
        (Some(total), _) => lengths_agree(append, total),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Token;
    use crate::hashing::to_hex;
    use crate::http::Limits;

    const TOKEN_A: &str = "token-a";
    const TOKEN_B: &str = "token-b";
    const DIGEST: [u8; 32] = [7; 32];

    fn hosts() -> Vec<(String, TokenHash)> {
        vec![
            ("lab-01".to_owned(), Token::new(TOKEN_A).unwrap().hash()),
            ("HostB".to_owned(), Token::new(TOKEN_B).unwrap().hash()),
        ]
    }

    fn head(text: &str) -> RequestHead {
        http::parse_request_head(text.as_bytes(), &Limits::default()).expect("the head parses")
    }

    /// A PUT for lab-01 with token A, everything right, then `edit`ed.
    fn put(edit: impl Fn(String) -> String) -> RequestHead {
        let h = format!(
            "PUT /v1/episodes/lab-01/ep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Content-Length: 3\r\nContent-Digest: {}\r\n\r\n",
            protocol::content_digest(&DIGEST)
        );
        head(&edit(h))
    }

    fn facts<'a>(hosts: &'a [(String, TokenHash)], cert: CertCheck<'a>) -> Facts<'a> {
        Facts {
            hosts,
            max_body_bytes: 1000,
            cert,
        }
    }

    fn cert(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    type Header<'v> = Option<(&'static str, &'v str)>;

    /// (status, JSON word, extra header, who) of a refusal.
    type Refused<'v> = (u16, &'v str, Header<'v>, Who<'static>);

    fn refused<'v>(v: &'v Verdict) -> Refused<'v> {
        let a = v.decision.as_ref().expect_err("refused");
        let who = match v.who {
            Who::Nobody => Who::Nobody,
            Who::Claimed(_) => Who::Claimed("*"),
            Who::Host(_) => Who::Host("*"),
        };
        (a.status().code(), &a.reply().status, a.header(), who)
    }

    #[test]
    fn a_good_put_is_admitted_with_its_facts() {
        let hosts = hosts();
        let v = request(&put(|h| h), &facts(&hosts, CertCheck::TokenOnly));
        assert_eq!(v.who, Who::Host("lab-01"));
        assert_eq!(
            v.decision,
            Ok(Admitted::Put(Put {
                host: "lab-01".into(),
                episode: "ep-1".into(),
                length: 3,
                digest: DIGEST,
                key: None,
                keep_alive: true,
                expect_continue: false,
            }))
        );
        let v = request(
            &put(|h| {
                h.replace(
                    "Host: x\r\n",
                    "Host: x\r\nExpect: 100-Continue\r\nConnection: close\r\n",
                )
            }),
            &facts(&hosts, CertCheck::TokenOnly),
        );
        let Ok(Admitted::Put(p)) = v.decision else {
            panic!("{v:?}")
        };
        assert!(p.expect_continue && !p.keep_alive);
    }

    /// docs/transport.md, "Upload" and "Framing", in the order the receiver
    /// decides: framing, route, auth and identity, length, digest header.
    #[test]
    fn the_status_table() {
        let hosts = hosts();
        let ab = format!("Authorization: Bearer {TOKEN_A}\r\n");
        let bearer = Some(("WWW-Authenticate", "Bearer"));
        let invalid_request = Some(("WWW-Authenticate", "Bearer error=\"invalid_request\""));
        let invalid_token = Some(("WWW-Authenticate", "Bearer error=\"invalid_token\""));
        let (n, h) = (Who::Nobody, Who::Host("*"));
        #[rustfmt::skip]
        let table: Vec<(&str, RequestHead, Refused)> = vec![
            // Framing, before anything else (even before auth).
            ("TE with CL", put(|h| h.replace("Host: x\r\n", "Host: x\r\nTransfer-Encoding: chunked\r\n")),
                (400, "bad_request", None, n)),
            ("another coding", put(|h| h.replace("Content-Length: 3", "Transfer-Encoding: gzip")),
                (501, "bad_request", None, n)),
            ("duplicate CL", put(|h| h.replace("Content-Length: 3", "Content-Length: 3\r\nContent-Length: 3")),
                (400, "bad_request", None, n)),
            ("no Host", put(|h| h.replace("Host: x\r\n", "")), (400, "bad_request", None, n)),
            ("expectation", put(|h| h.replace("Host: x\r\n", "Host: x\r\nExpect: foo\r\n")),
                (417, "bad_request", None, n)),
            ("no token and TE with CL: framing first", put(|h| h.replace(&ab, "").replace("Host: x\r\n", "Host: x\r\nTransfer-Encoding: chunked\r\n")),
                (400, "bad_request", None, n)),
            // Route, before auth: a bad path never reaches a token check.
            ("bad path", put(|h| h.replace("ep-1", "%2e%2e").replace(&ab, "")), (400, "bad_request", None, n)),
            ("not found", put(|h| h.replace("/v1/episodes/lab-01/ep-1", "/v2/x")), (404, "not_found", None, n)),
            ("PUT on ping", put(|h| h.replace("/v1/episodes/lab-01/ep-1", "/v1/ping")),
                (405, "method_not_allowed", Some(("Allow", "POST")), n)),
            ("GET an episode", put(|h| h.replace("PUT ", "GET ")),
                (405, "method_not_allowed", Some(("Allow", "PUT, HEAD, PATCH")), n)),
            // Credentials: three challenges.
            ("no Authorization", put(|h| h.replace(&ab, "")), (401, "unauthorized", bearer, n)),
            ("Basic", put(|h| h.replace("Bearer token-a", "Basic YTpi")), (401, "unauthorized", invalid_request, n)),
            ("two spaces", put(|h| h.replace("Bearer ", "Bearer  ")), (401, "unauthorized", invalid_request, n)),
            ("unknown token", put(|h| h.replace(TOKEN_A, "nope")), (401, "unauthorized", invalid_token, n)),
            // Identity: the token pins the path's host, byte for byte.
            ("another host's path", put(|h| h.replace("lab-01", "HostB")), (403, "forbidden", None, h)),
            ("host id case", put(|h| h.replace(TOKEN_A, TOKEN_B).replace("lab-01", "hostb")),
                (403, "forbidden", None, h)),
            // Length, after identity.
            ("no CL", put(|h| h.replace("Content-Length: 3\r\n", "")), (411, "length_required", None, h)),
            ("empty body", put(|h| h.replace("Content-Length: 3", "Content-Length: 0")), (400, "bad_request", None, h)),
            ("over max_body_bytes", put(|h| h.replace("Content-Length: 3", "Content-Length: 1001")),
                (413, "too_large", None, h)),
            ("too large and no digest: length first",
                put(|h| h.replace("Content-Length: 3", "Content-Length: 1001").replace("Content-Digest", "X-Digest")),
                (413, "too_large", None, h)),
            // Digest header.
            ("no digest", put(|h| h.replace("Content-Digest", "X-Digest")), (400, "bad_request", None, h)),
            ("other algorithm only", put(|h| h.replace("Content-Digest: sha-256", "Content-Digest: sha-512")),
                (400, "bad_request", None, h)),
            ("digest not in colons", put(|h| h.replace("sha-256=:", "sha-256=")), (400, "bad_request", None, h)),
            // Ping: no body.
            ("ping with a body", put(|h| h.replace("PUT /v1/episodes/lab-01/ep-1", "POST /v1/ping")),
                (400, "bad_request", None, h)),
        ];
        for (what, head, want) in table {
            let v = request(&head, &facts(&hosts, CertCheck::TokenOnly));
            assert_eq!(refused(&v), want, "{what}: {v:?}");
        }
        // An admitted ping: no body, keep-alive as asked.
        let ping = head(&format!(
            "POST /v1/ping HTTP/1.1\r\nHost: x\r\n{ab}Content-Length: 0\r\n\r\n"
        ));
        let v = request(&ping, &facts(&hosts, CertCheck::TokenOnly));
        assert_eq!(
            (v.who, v.decision),
            (
                Who::Host("lab-01"),
                Ok(Admitted::Ping {
                    host: "lab-01",
                    keep_alive: true
                })
            )
        );
    }

    #[test]
    fn under_mtls_the_certificate_must_name_the_tokens_host() {
        let hosts = hosts();
        let ours = cert(&["lab-01"]);
        let theirs = cert(&["lab-02"]);
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let ok = request(
            &put(|h| h),
            &facts(&hosts, CertCheck::MustName(Some(&ours))),
        );
        assert_eq!(ok.who, Who::Host("lab-01"));
        assert!(ok.decision.is_ok(), "{ok:?}");
        for (what, check, why) in [
            (
                "no certificate",
                CertCheck::MustName(None),
                "no client certificate",
            ),
            (
                "another host's",
                CertCheck::MustName(Some(&theirs)),
                "not issued for this host id",
            ),
            (
                "unparsable",
                CertCheck::MustName(Some(&garbage)),
                "cannot be parsed",
            ),
        ] {
            let v = request(&put(|h| h), &facts(&hosts, check));
            assert_eq!(v.who, Who::Claimed("lab-01"), "{what}");
            let a = v.decision.unwrap_err();
            assert_eq!(a.status(), Status::Forbidden, "{what}");
            let msg = a.reply().message.clone().unwrap();
            assert!(
                msg.starts_with("token is for host lab-01, but ") && msg.contains(why),
                "{what}: {msg}"
            );
        }
        // The token is checked first: a wrong token is 401 whatever the cert.
        let v = request(
            &put(|h| h.replace(TOKEN_A, "nope")),
            &facts(&hosts, CertCheck::MustName(Some(&ours))),
        );
        assert_eq!(
            (v.who, v.decision.unwrap_err().status()),
            (Who::Nobody, Status::Unauthorized)
        );
        // Where the token alone identifies, certificates are never looked at.
        let v = request(
            &put(|h| h.replace(TOKEN_A, TOKEN_B).replace("lab-01", "HostB")),
            &facts(&hosts, CertCheck::TokenOnly),
        );
        assert_eq!(v.who, Who::Host("HostB"));
        assert!(v.decision.is_ok());
    }

    #[test]
    fn what_the_store_holds_decides_the_rest() {
        let p = Put {
            host: "lab-01".into(),
            episode: "e".into(),
            length: 3,
            digest: DIGEST,
            key: None,
            keep_alive: true,
            expect_continue: true,
        };
        assert_eq!(against_store(&p, Existing::Absent), AfterLookup::ReadBody);
        let AfterLookup::ConfirmThen(a) = against_store(&p, Existing::Present(DIGEST)) else {
            panic!("same bytes: confirm, then 200")
        };
        assert_eq!(
            (a.status().code(), a.reply().status.as_str()),
            (200, "present")
        );
        assert_eq!(a.reply().sha256, Some(to_hex(&DIGEST)));
        let AfterLookup::Answer(a) = against_store(&p, Existing::Present([8; 32])) else {
            panic!("other bytes: 409 at once")
        };
        assert_eq!(
            (a.status().code(), a.reply().status.as_str()),
            (409, "conflict")
        );
        assert_eq!(a.reply().sha256, Some(to_hex(&[8; 32])), "theirs, not ours");
    }

    /// A PATCH for lab-01 with token A appending 3 bytes at 5 that end
    /// an upload of 8, everything right, then `edit`ed.
    fn patch(edit: impl Fn(String) -> String) -> RequestHead {
        let h = format!(
            "PATCH /v1/episodes/lab-01/ep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Content-Type: application/partial-upload\r\nContent-Length: 3\r\nRepr-Digest: {}\r\n\
             Upload-Offset: 5\r\nUpload-Complete: ?1\r\n\r\n",
            protocol::content_digest(&DIGEST)
        );
        head(&edit(h))
    }

    fn head_request(edit: impl Fn(String) -> String) -> RequestHead {
        let h = format!(
            "HEAD /v1/episodes/lab-01/ep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Repr-Digest: {}\r\n\r\n",
            protocol::content_digest(&DIGEST)
        );
        head(&edit(h))
    }

    fn good_append() -> Append {
        Append {
            host: "lab-01".into(),
            episode: "ep-1".into(),
            digest: DIGEST,
            key: None,
            offset: 5,
            length: 3,
            complete: true,
            upload_length: None,
            keep_alive: true,
            expect_continue: false,
        }
    }

    #[test]
    fn a_good_head_and_patch_are_admitted() {
        let hosts = hosts();
        let f = facts(&hosts, CertCheck::TokenOnly);
        let v = request(&head_request(|h| h), &f);
        assert_eq!(
            v.decision,
            Ok(Admitted::Probe(Probe {
                host: "lab-01".into(),
                episode: "ep-1".into(),
                digest: DIGEST,
                key: None,
                keep_alive: true,
            }))
        );
        let v = request(&patch(|h| h), &f);
        assert_eq!(v.decision, Ok(Admitted::Append(good_append())));
        // Media type case and parameters, Expect, ?0, Upload-Length, an
        // empty append, a Content-Digest (ignored).
        let v = request(
            &patch(|h| {
                h.replace("application/partial-upload", "Application/Partial-Upload; x=1")
                    .replace("?1", "?0")
                    .replace("Content-Length: 3", "Content-Length: 0")
                    .replace("Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\nUpload-Length: 9\r\nContent-Digest: sha-256=:AAAA:\r\n")
            }),
            &f,
        );
        assert_eq!(
            v.decision,
            Ok(Admitted::Append(Append {
                length: 0,
                complete: false,
                upload_length: Some(9),
                expect_continue: true,
                ..good_append()
            }))
        );
    }

    /// docs/transport.md, "Resumable uploads": what a HEAD or a PATCH
    /// earns from its head, after framing, route and identity as for PUT.
    #[test]
    fn the_resumable_status_table() {
        let hosts = hosts();
        let h = Who::Host("*");
        let n = Who::Nobody;
        #[rustfmt::skip]
        let table: Vec<(&str, RequestHead, Refused)> = vec![
            ("HEAD without Repr-Digest", head_request(|r| r.replace("Repr-Digest", "X-Digest")),
                (400, "bad_request", None, h)),
            ("HEAD with a bad Repr-Digest", head_request(|r| r.replace("sha-256=:", "sha-256=")),
                (400, "bad_request", None, h)),
            ("HEAD with two Repr-Digests", head_request(|r| r.replace("Repr-Digest: ", "Repr-Digest: sha-512=:AAAA:\r\nRepr-Digest: ")),
                (400, "bad_request", None, h)),
            ("HEAD with a body", head_request(|r| r.replace("Host: x\r\n", "Host: x\r\nContent-Length: 2\r\n")),
                (400, "bad_request", None, h)),
            ("HEAD without a token", head_request(|r| r.replace(&format!("Authorization: Bearer {TOKEN_A}\r\n"), "")),
                (401, "unauthorized", Some(("WWW-Authenticate", "Bearer")), n)),
            ("HEAD of another host", head_request(|r| r.replace("lab-01", "HostB")), (403, "forbidden", None, h)),
            ("HEAD of a hostile path", head_request(|r| r.replace("ep-1", "%2e%2e")), (400, "bad_request", None, n)),
            ("PATCH chunked", patch(|r| r.replace("Content-Length: 3", "Transfer-Encoding: chunked")),
                (411, "length_required", None, n)),
            ("PATCH without a length", patch(|r| r.replace("Content-Length: 3\r\n", "")),
                (411, "length_required", None, h)),
            ("PATCH over max_body_bytes", patch(|r| r.replace("Content-Length: 3", "Content-Length: 1001")),
                (413, "too_large", None, h)),
            ("PATCH ending beyond max_body_bytes", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: 998")),
                (413, "too_large", None, h)),
            ("PATCH without Content-Type", patch(|r| r.replace("Content-Type: application/partial-upload\r\n", "")),
                (400, "bad_request", None, h)),
            ("PATCH as zstd", patch(|r| r.replace("application/partial-upload", "application/zstd")),
                (400, "bad_request", None, h)),
            ("PATCH without Repr-Digest", patch(|r| r.replace("Repr-Digest", "Content-Digest")),
                (400, "bad_request", None, h)),
            ("PATCH without Upload-Offset", patch(|r| r.replace("Upload-Offset: 5\r\n", "")),
                (400, "bad_request", None, h)),
            ("negative offset", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: -5")),
                (400, "bad_request", None, h)),
            ("malformed offset", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: 5x")),
                (400, "bad_request", None, h)),
            ("over-long offset", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: 1234567890123456")),
                (400, "bad_request", None, h)),
            ("two offsets", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: 5\r\nUpload-Offset: 5")),
                (400, "bad_request", None, h)),
            ("no Upload-Complete", patch(|r| r.replace("Upload-Complete: ?1\r\n", "")),
                (400, "bad_request", None, h)),
            ("Upload-Complete: true", patch(|r| r.replace("?1", "true")), (400, "bad_request", None, h)),
            ("an empty upload", patch(|r| r.replace("Upload-Offset: 5", "Upload-Offset: 0").replace("Content-Length: 3", "Content-Length: 0")),
                (400, "bad_request", None, h)),
            ("beyond Upload-Length", patch(|r| r.replace("Host: x\r\n", "Host: x\r\nUpload-Length: 7\r\n")),
                (400, "bad_request", None, h)),
            ("complete before Upload-Length", patch(|r| r.replace("Host: x\r\n", "Host: x\r\nUpload-Length: 9\r\n")),
                (400, "bad_request", None, h)),
            ("PATCH of another host", patch(|r| r.replace("lab-01", "HostB")), (403, "forbidden", None, h)),
            ("PATCH with an unknown token", patch(|r| r.replace(TOKEN_A, "nope")),
                (401, "unauthorized", Some(("WWW-Authenticate", "Bearer error=\"invalid_token\"")), n)),
        ];
        for (what, head, want) in table {
            let v = request(&head, &facts(&hosts, CertCheck::TokenOnly));
            assert_eq!(refused(&v), want, "{what}: {v:?}");
        }
    }

    /// (code, JSON word, `Upload-Offset`) of a refused append.
    type Refusal<'v> = (u16, &'v str, Option<&'v str>);

    #[test]
    fn an_append_against_the_upload_it_continues() {
        let held = |offset, length| Held { offset, length };
        let a = good_append();
        // (what, append, held, Ok or (code, word, Upload-Offset))
        #[rustfmt::skip]
        let table: Vec<(&str, Append, Held, Option<Refusal>)> = vec![
            ("right offset, length unknown", good_append(), held(5, None), None),
            ("right offset, ends the upload", good_append(), held(5, Some(8)), None),
            ("more to come", Append { complete: false, ..good_append() }, held(5, Some(20)), None),
            ("behind: an overlapping append", good_append(), held(7, None),
                Some((409, "offset_mismatch", Some("7")))),
            ("ahead of what is held", good_append(), held(2, Some(8)),
                Some((409, "offset_mismatch", Some("2")))),
            ("nothing held", good_append(), held(0, None), Some((409, "offset_mismatch", Some("0")))),
            ("beyond the upload's length", good_append(), held(5, Some(7)),
                Some((400, "bad_request", None))),
            ("complete short of the length", good_append(), held(5, Some(9)),
                Some((400, "bad_request", None))),
            ("another Upload-Length", Append { upload_length: Some(8), ..good_append() }, held(5, Some(9)),
                Some((400, "bad_request", None))),
        ];
        for (what, append, held, want) in table {
            let got = against_partial(&append, held).err();
            let got = got.as_ref().map(|a| {
                (
                    a.status().code(),
                    a.reply().status.as_str(),
                    a.field("Upload-Offset"),
                )
            });
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(a.end(), 8);
    }

    #[test]
    fn a_head_against_the_store() {
        let p = Probe {
            host: "lab-01".into(),
            episode: "e".into(),
            digest: DIGEST,
            key: None,
            keep_alive: true,
        };
        assert_eq!(probe_against_store(&p, Existing::Absent), ProbeStep::Offset);
        assert_eq!(
            probe_against_store(&p, Existing::Present(DIGEST)),
            ProbeStep::Complete
        );
        let ProbeStep::Answer(a) = probe_against_store(&p, Existing::Present([8; 32])) else {
            panic!("other bytes: 409")
        };
        assert_eq!(a.status(), Status::Conflict);
        assert_eq!(
            a.field("Repr-Digest"),
            Some(protocol::content_digest(&[8; 32]).as_str()),
            "theirs, as a field: a HEAD answer has no body"
        );
        // A PATCH of an upload that is stored: 200 or 409, never appended.
        assert!(matches!(
            against_stored(&DIGEST, Existing::Present(DIGEST)),
            AfterLookup::ConfirmThen(_)
        ));
        assert_eq!(
            against_stored(&DIGEST, Existing::Absent),
            AfterLookup::ReadBody
        );
    }

    /// `Status::refusing` must keep every code `http::request_framing`
    /// refuses with (head errors: `answer`'s `head_errors_keep_their_code`).
    #[test]
    fn every_framing_refusal_keeps_its_code() {
        // A PATCH: chunked is 411 there (on a PUT it frames an upload).
        let base = "PATCH /v1/episodes/a/b HTTP/1.1\r\nHost: x\r\n";
        for extra in [
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: ,\r\n",
            "Expect: x\r\n",
            "Content-Length: x\r\n",
            "Host: y\r\n",
        ] {
            let r = http::request_framing(&head(&format!("{base}{extra}\r\n"))).unwrap_err();
            assert_eq!(Status::refusing(r.status).code(), r.status, "{extra}");
        }
    }

    const KEY: &str = "3f9c0a6e1b7d4c25a8e0f1d2c3b4a596";

    /// A chunked PUT for lab-01 with token A, no digest, no key, then
    /// `edit`ed.
    fn chunked(edit: impl Fn(String) -> String) -> RequestHead {
        let h = format!(
            "PUT /v1/episodes/lab-01/ep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Transfer-Encoding: chunked\r\nTrailer: Content-Digest\r\nExpect: 100-continue\r\n\r\n"
        );
        head(&edit(h))
    }

    fn streamed(digest: Option<[u8; 32]>, key: Option<[u8; 16]>) -> Streamed {
        Streamed {
            host: "lab-01".into(),
            episode: "ep-1".into(),
            digest,
            key,
            keep_alive: true,
            expect_continue: true,
        }
    }

    /// docs/transport.md, "Upload while packing": what a chunked PUT earns
    /// from its head.
    #[test]
    fn a_chunked_put_from_its_head() {
        let hosts = hosts();
        let f = facts(&hosts, CertCheck::TokenOnly);
        let key = resumable::parse_upload_key(KEY).unwrap();
        let with_key = format!("Host: x\r\nUpload-Key: {KEY}\r\n");
        let digest = format!(
            "Host: x\r\nContent-Digest: {}\r\n",
            protocol::content_digest(&DIGEST)
        );
        #[rustfmt::skip]
        let admitted: Vec<(&str, RequestHead, Streamed)> = vec![
            ("digest to come in the trailer", chunked(|h| h), streamed(None, None)),
            ("with a key", chunked(|h| h.replace("Host: x\r\n", &with_key)), streamed(None, Some(key))),
            ("digest in the head", chunked(|h| h.replace("Host: x\r\n", &digest)), streamed(Some(DIGEST), None)),
            ("both", chunked(|h| h.replace("Host: x\r\n", &format!("{with_key}{}", &digest[9..]))),
                streamed(Some(DIGEST), Some(key))),
        ];
        for (what, head, want) in admitted {
            let v = request(&head, &f);
            assert_eq!(v.decision, Ok(Admitted::Streamed(want)), "{what}");
        }
        let (n, h) = (Who::Nobody, Who::Host("*"));
        #[rustfmt::skip]
        let table: Vec<(&str, RequestHead, Refused)> = vec![
            ("chunked and Content-Length", chunked(|r| r.replace("Host: x\r\n", "Host: x\r\nContent-Length: 3\r\n")),
                (400, "bad_request", None, n)),
            ("gzip", chunked(|r| r.replace("chunked", "gzip")), (501, "bad_request", None, n)),
            ("HTTP/1.0", chunked(|r| r.replace("HTTP/1.1", "HTTP/1.0")), (400, "bad_request", None, n)),
            ("no token", chunked(|r| r.replace(&format!("Authorization: Bearer {TOKEN_A}\r\n"), "")),
                (401, "unauthorized", Some(("WWW-Authenticate", "Bearer")), n)),
            ("another host's path", chunked(|r| r.replace("lab-01", "HostB")), (403, "forbidden", None, h)),
            ("a malformed head digest", chunked(|r| r.replace("Host: x\r\n", "Host: x\r\nContent-Digest: sha-256=AAAA\r\n")),
                (400, "bad_request", None, h)),
            ("a short key", chunked(|r| r.replace("Host: x\r\n", &format!("Host: x\r\nUpload-Key: {}\r\n", &KEY[1..]))),
                (400, "bad_request", None, h)),
            ("an upper-case key", chunked(|r| r.replace("Host: x\r\n", &format!("Host: x\r\nUpload-Key: {}\r\n", KEY.to_uppercase()))),
                (400, "bad_request", None, h)),
            ("two keys", chunked(|r| r.replace("Host: x\r\n", &format!("Host: x\r\nUpload-Key: {KEY}\r\nUpload-Key: {KEY}\r\n"))),
                (400, "bad_request", None, h)),
        ];
        for (what, head, want) in table {
            let v = request(&head, &f);
            assert_eq!(refused(&v), want, "{what}: {v:?}");
        }
    }

    /// `Upload-Key` on the other requests of an episode: parsed the same
    /// way; it names the partial they work on.
    #[test]
    fn an_upload_key_on_put_head_and_patch() {
        let hosts = hosts();
        let f = facts(&hosts, CertCheck::TokenOnly);
        let key = resumable::parse_upload_key(KEY).unwrap();
        let add = |h: String, k: &str| {
            h.replace("Host: x\r\n", &format!("Host: x\r\nUpload-Key: {k}\r\n"))
        };
        let Ok(Admitted::Put(p)) = request(&put(|h| add(h, KEY)), &f).decision else {
            panic!("PUT")
        };
        assert_eq!(p.key, Some(key));
        let Ok(Admitted::Probe(p)) = request(&head_request(|h| add(h, KEY)), &f).decision else {
            panic!("HEAD")
        };
        assert_eq!(p.key, Some(key));
        let Ok(Admitted::Append(a)) = request(&patch(|h| add(h, KEY)), &f).decision else {
            panic!("PATCH")
        };
        assert_eq!(a.key, Some(key));
        for head in [
            put(|h| add(h, "nope")),
            head_request(|h| add(h, "nope")),
            patch(|h| add(h, "nope")),
        ] {
            let v = request(&head, &f);
            assert_eq!(refused(&v), (400, "bad_request", None, Who::Host("*")));
        }
    }

    #[test]
    fn a_chunked_put_against_the_store() {
        let table = [
            (None, Existing::Absent, "read"),
            (None, Existing::Present(DIGEST), "428"),
            (None, Existing::Present([8; 32]), "428"),
            (Some(DIGEST), Existing::Absent, "read"),
            (Some(DIGEST), Existing::Present(DIGEST), "200"),
            (Some(DIGEST), Existing::Present([8; 32]), "409"),
        ];
        for (digest, found, want) in table {
            let got = match stream_against_store(&streamed(digest, None), found) {
                AfterLookup::ReadBody => "read",
                AfterLookup::ConfirmThen(a) => {
                    assert_eq!(a.status(), Status::Present);
                    "200"
                }
                AfterLookup::Answer(a) => match a.status() {
                    Status::DigestRequired => {
                        assert_eq!(a.status().code(), 428);
                        assert_eq!(a.reply().status, "digest_required");
                        "428"
                    }
                    Status::Conflict => "409",
                    s => panic!("{s:?}"),
                },
            };
            assert_eq!(got, want, "{digest:?} {found:?}");
        }
    }

    #[test]
    fn the_digest_of_a_streamed_body_from_head_or_trailer() {
        let d = protocol::content_digest(&DIGEST);
        let fields = |lines: &[&str]| {
            http::Headers(
                lines
                    .iter()
                    .map(|l| {
                        let (n, v) = l.split_once(": ").unwrap();
                        (n.to_owned(), v.to_owned())
                    })
                    .collect(),
            )
        };
        let cd = format!("Content-Digest: {d}");
        let other = format!("Content-Digest: {}", protocol::content_digest(&[8; 32]));
        let lower = cd.replace("Content-Digest", "content-digest");
        #[rustfmt::skip]
        type Row<'a> = (&'a str, Option<Sha256>, Vec<&'a str>, Result<Option<Sha256>, ()>);
        let table: Vec<Row> = vec![
            ("in the trailer", None, vec![&cd], Ok(Some(DIGEST))),
            (
                "in the trailer, other fields ignored",
                None,
                vec!["X-Other: 1", &cd, "Repr-Digest: x"],
                Ok(Some(DIGEST)),
            ),
            (
                "field names in any case",
                None,
                vec![&lower],
                Ok(Some(DIGEST)),
            ),
            (
                "in the head",
                Some(DIGEST),
                vec!["X-Other: 1"],
                Ok(Some(DIGEST)),
            ),
            ("nowhere", None, vec![], Ok(None)),
            ("in both, even equal", Some(DIGEST), vec![&cd], Err(())),
            ("twice in the trailer", None, vec![&cd, &other], Err(())),
            (
                "malformed in the trailer",
                None,
                vec!["Content-Digest: sha-256=AAAA"],
                Err(()),
            ),
            (
                "another algorithm only",
                None,
                vec!["Content-Digest: sha-512=:AAAA:"],
                Err(()),
            ),
        ];
        let empty = streamed_digest(Some(DIGEST), &fields(&[]), 0).unwrap_err();
        assert_eq!(empty.status(), Status::BadRequest, "no tar.zst is empty");
        for (what, head, trailer, want) in table {
            let got = streamed_digest(head, &fields(&trailer), 3);
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(*g, w, "{what}"),
                (Err(a), Err(())) => assert_eq!(
                    (a.status().code(), a.reply().status.as_str()),
                    (400, "bad_request"),
                    "{what}"
                ),
                _ => panic!("{what}: {got:?}"),
            }
        }
    }
}
