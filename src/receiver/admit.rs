//! Request admission: what a request earns from its head alone, before a
//! body byte is read or `100 Continue` is sent. Two pure steps, in the
//! order of docs/transport.md ("Upload"): [`request`] decides framing,
//! route, credentials and identity, length and digest header; [`against_store`]
//! decides from what the store holds under the id. Each is a table over
//! plain data, tested case by case below.
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
use crate::protocol::{self, Route, RouteError, Status};
use crate::receiver::answer::Answer;
use crate::receiver::store::Existing;
use crate::tls;

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
    pub keep_alive: bool,
    pub expect_continue: bool,
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
        Route::Episode { host_id, .. } if host_id != host => Err(Answer::new(Status::Forbidden)
            .with_message(format!("authenticated as {host}, not {host_id}"))),
        Route::Episode {
            host_id,
            episode_id,
        } => upload(head, &framing, facts.max_body_bytes).map(|(length, digest)| {
            Admitted::Put(Put {
                host: host_id,
                episode: episode_id,
                length,
                digest,
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

/// An upload's length, then its announced digest.
fn upload(
    head: &RequestHead,
    framing: &RequestFraming,
    max_body_bytes: u64,
) -> Result<(u64, [u8; 32]), Answer> {
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
    Ok((length, digest))
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
/// the receiver already has the bytes it named.
pub fn against_store(put: &Put, found: Existing) -> AfterLookup {
    match found {
        Existing::Absent => AfterLookup::ReadBody,
        Existing::Present(d) if d == put.digest => {
            AfterLookup::ConfirmThen(Answer::new(Status::Present).with_sha256(&d))
        }
        Existing::Present(d) => AfterLookup::Answer(Answer::conflict(&d)),
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

    type Header = Option<(&'static str, &'static str)>;

    /// (status, JSON word, extra header, who) of a refusal.
    type Refused<'v> = (u16, &'v str, Header, Who<'static>);

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
            ("chunked", put(|h| h.replace("Content-Length: 3", "Transfer-Encoding: chunked")),
                (411, "length_required", None, n)),
            ("another coding", put(|h| h.replace("Content-Length: 3", "Transfer-Encoding: gzip")),
                (501, "bad_request", None, n)),
            ("duplicate CL", put(|h| h.replace("Content-Length: 3", "Content-Length: 3\r\nContent-Length: 3")),
                (400, "bad_request", None, n)),
            ("no Host", put(|h| h.replace("Host: x\r\n", "")), (400, "bad_request", None, n)),
            ("expectation", put(|h| h.replace("Host: x\r\n", "Host: x\r\nExpect: foo\r\n")),
                (417, "bad_request", None, n)),
            ("no token and chunked: framing first", put(|h| h.replace(&ab, "").replace("Content-Length: 3", "Transfer-Encoding: chunked")),
                (411, "length_required", None, n)),
            // Route, before auth: a bad path never reaches a token check.
            ("bad path", put(|h| h.replace("ep-1", "%2e%2e").replace(&ab, "")), (400, "bad_request", None, n)),
            ("not found", put(|h| h.replace("/v1/episodes/lab-01/ep-1", "/v2/x")), (404, "not_found", None, n)),
            ("PUT on ping", put(|h| h.replace("/v1/episodes/lab-01/ep-1", "/v1/ping")),
                (405, "method_not_allowed", Some(("Allow", "POST")), n)),
            ("GET an episode", put(|h| h.replace("PUT ", "GET ")),
                (405, "method_not_allowed", Some(("Allow", "PUT")), n)),
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

    /// `Status::refusing` must keep every code `http::request_framing`
    /// refuses with (head errors: `answer`'s `head_errors_keep_their_code`).
    #[test]
    fn every_framing_refusal_keeps_its_code() {
        let base = "PUT /v1/episodes/a/b HTTP/1.1\r\nHost: x\r\n";
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
}
