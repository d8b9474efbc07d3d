//! Resumable uploads, the receiver's side (docs/transport.md, "Resumable
//! uploads"): the real receiver, raw HTTP on its loopback plain listener,
//! and curl over mTLS exactly as the doc's commands. Each test makes a
//! partial the way it happens in the field (a PUT cut mid-body, a receiver
//! killed with SIGKILL), then resumes it with HEAD and PATCH.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fs::names;
use common::lab::Lab;
use common::raw::*;
use common::*;

struct Plain {
    dir: TempDir,
    r: Receiver,
}

impl Plain {
    fn start(name: &str, extra: &str) -> Plain {
        let dir = TempDir::new(name);
        let r = Receiver::start(dir.path(), &options(&dir, extra));
        Plain { dir, r }
    }

    /// Kills the receiver (SIGKILL) and starts another on the same store.
    fn restart(&mut self, extra: &str) {
        let _ = self.r.child.kill();
        let _ = self.r.child.wait();
        self.r = Receiver::start(self.dir.path(), &options(&self.dir, extra));
    }

    fn addr(&self) -> SocketAddr {
        self.r.http.unwrap()
    }

    fn host_dir(&self) -> PathBuf {
        self.dir.join("store/lab-01")
    }

    fn partial(&self, id: &str, whole: &[u8]) -> PathBuf {
        self.host_dir()
            .join(format!(".partial-{id}.{}", hex_of(whole)))
    }

    fn partials(&self) -> Vec<String> {
        names(&self.host_dir())
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    }

    fn stored(&self, id: &str) -> Option<Vec<u8>> {
        std::fs::read(self.host_dir().join(format!("{id}.tar.zst"))).ok()
    }
}

fn options(dir: &TempDir, extra: &str) -> ReceiverOptions {
    ReceiverOptions {
        extra: extra.into(),
        ..ReceiverOptions::plain(&dir.join("store"))
    }
}

/// A PUT cut after `sent` bytes, awaited until the receiver has let go of
/// it (its log line comes after the partial is released).
fn cut(p: &Plain, id: &str, whole: &[u8], sent: usize) {
    let before = p.r.log_text().matches("client closed after").count();
    cut_put(p.addr(), id, whole, sent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.r.log_text().matches("client closed after").count() == before {
        assert!(Instant::now() < deadline, "{}", p.r.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HEAD, which must answer 204 with no body: the offset held.
fn held(p: &Plain, id: &str, whole: &[u8]) -> usize {
    let resp = exchange(p.addr(), head_req(id, whole).as_bytes());
    assert_eq!(status_of(&resp), 204, "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "no body: {resp:?}");
    assert_eq!(field(&resp, "Upload-Complete"), Some("?0"), "{resp}");
    assert_eq!(field(&resp, "Cache-Control"), Some("no-store"), "{resp}");
    assert_eq!(field(&resp, "Content-Length"), None, "{resp}");
    offset_of(&resp)
}

#[test]
fn a_cut_put_resumes_with_head_and_patch() {
    let p = Plain::start("resume-put-cut", "");
    let whole = noise(3 << 20, 1);
    let sent = 2 << 20;
    cut(&p, "e", &whole, sent);
    assert!(p.stored("e").is_none(), "a final is never partial");
    assert!(p.partial("e", &whole).exists(), "{:?}", p.partials());
    let off = held(&p, "e", &whole);
    assert!(off > 0 && off <= sent, "offset {off} of {sent} sent");
    let resp = exchange(p.addr(), head_req("e", &whole).as_bytes());
    assert_eq!(
        field(&resp, "Upload-Length"),
        Some("3145728"),
        "the PUT said how long: {resp}"
    );
    let resp = exchange(p.addr(), &patch("e", &whole, off, whole.len() - off));
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert!(resp.contains("\"status\":\"stored\""), "{resp}");
    assert_eq!(p.stored("e").unwrap(), whole, "byte for byte");
    assert!(p.partials().is_empty(), "{:?}", p.partials());
    // The sidecar describes the stored bytes.
    let sidecar = std::fs::read_to_string(p.host_dir().join("e.tar.zst.sha256")).unwrap();
    assert!(sidecar.starts_with(&hex_of(&whole)), "{sidecar}");
    // And now: stored.
    let resp = exchange(p.addr(), head_req("e", &whole).as_bytes());
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(field(&resp, "Upload-Complete"), Some("?1"), "{resp}");
    assert_eq!(offset_of(&resp), whole.len(), "{resp}");
}

#[test]
fn appends_without_completing_then_a_completing_one() {
    let p = Plain::start("resume-steps", "");
    let whole = noise(900_000, 2);
    // Nothing held: offset 0, and a PATCH from 0 creates the upload.
    assert_eq!(held(&p, "e", &whole), 0);
    let resp = exchange(p.addr(), &patch("e", &whole, 0, 300_000));
    assert_eq!(status_of(&resp), 204, "{resp}");
    assert_eq!(offset_of(&resp), 300_000, "{resp}");
    assert_eq!(field(&resp, "Upload-Complete"), Some("?0"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "204 has no body: {resp:?}");
    // Two requests on one kept-alive connection: HEAD, then PATCH.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = head_req("e", &whole).replace("Connection: close\r\n", "");
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        answer.push(b[0]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert_eq!(offset_of(&answer), 300_000, "{answer}");
    assert_eq!(field(&answer, "Connection"), None, "kept alive: {answer}");
    let mut req = patch_head("e", &whole, 300_000, 600_000, "").into_bytes();
    req.extend_from_slice(&whole[300_000..]);
    s.write_all(&req).unwrap();
    let resp = read_until_close(&mut s);
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(p.stored("e").unwrap(), whole);
}

#[test]
fn a_resume_after_a_restart_reads_the_prefix_back_once() {
    let mut p = Plain::start("resume-restart", "");
    let whole = noise(2 << 20, 3);
    cut(&p, "e", &whole, 1 << 20);
    // A new process knows nothing of the partial but the file.
    p.restart("");
    let off = held(&p, "e", &whole);
    assert!(off > 0 && off <= 1 << 20, "{off}");
    let resp = exchange(p.addr(), &patch("e", &whole, off, whole.len() - off));
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(p.stored("e").unwrap(), whole);
}

#[test]
fn a_receiver_killed_mid_upload_resumes_at_the_durable_offset() {
    let mut p = Plain::start("resume-sigkill", "");
    let whole = noise(4 << 20, 4);
    let sent = 3 << 20;
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(put_head("e", &whole).as_bytes()).unwrap();
    s.write_all(&whole[..sent]).unwrap();
    // The receiver has taken (some of) the bytes into the partial.
    let partial = p.partial("e", &whole);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "nothing written");
        std::thread::sleep(Duration::from_millis(10));
    }
    p.restart("");
    drop(s);
    let off = held(&p, "e", &whole);
    assert!(off > 0 && off <= sent, "offset {off} of {sent}");
    let resp = exchange(p.addr(), &patch("e", &whole, off, whole.len() - off));
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(p.stored("e").unwrap(), whole);
}

#[test]
fn head_of_stored_bytes_and_of_other_bytes() {
    let p = Plain::start("resume-head-stored", "");
    let whole = b"the stored tarball".to_vec();
    let mut req = put_head("e", &whole).into_bytes();
    req.extend_from_slice(&whole);
    assert_eq!(status_of(&exchange(p.addr(), &req)), 201);
    let resp = exchange(p.addr(), head_req("e", &whole).as_bytes());
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(field(&resp, "Upload-Complete"), Some("?1"), "{resp}");
    assert_eq!(offset_of(&resp), whole.len());
    assert!(
        resp.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {resp:?}"
    );
    let other = b"other bytes, same id".to_vec();
    let resp = exchange(p.addr(), head_req("e", &other).as_bytes());
    assert_eq!(status_of(&resp), 409, "{resp}");
    assert_eq!(
        field(&resp, "Repr-Digest"),
        Some(digest_of(&whole).as_str()),
        "theirs: {resp}"
    );
    assert!(resp.ends_with("\r\n\r\n"), "{resp:?}");
    // A PATCH of stored bytes: 200 from the head, nothing appended; of
    // other bytes: 409.
    let resp = exchange(p.addr(), &patch("e", &whole, 0, whole.len()));
    assert_eq!(status_of(&resp), 200, "{resp}");
    let resp = exchange(p.addr(), &patch("e", &other, 0, other.len()));
    assert_eq!(status_of(&resp), 409, "{resp}");
    assert!(resp.contains("\"status\":\"conflict\""), "{resp}");
    assert_eq!(p.stored("e").unwrap(), whole);
    assert!(p.partials().is_empty(), "{:?}", p.partials());
}

#[test]
fn another_digest_discards_the_old_partial() {
    let p = Plain::start("resume-repacked", "");
    let first = noise(1 << 20, 5);
    cut(&p, "e", &first, 600_000);
    assert!(p.partial("e", &first).exists());
    let repacked = noise(1 << 20, 6);
    assert_eq!(held(&p, "e", &repacked), 0);
    assert!(!p.partial("e", &first).exists(), "{:?}", p.partials());
    p.r.wait_log("deleted partial upload lab-01/e (");
    p.r.wait_log("episode repacked");
    // A PUT of the new bytes, cut, then resumed: the old one stays gone.
    cut(&p, "e", &repacked, 500_000);
    let off = held(&p, "e", &repacked);
    let resp = exchange(p.addr(), &patch("e", &repacked, off, repacked.len() - off));
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(p.stored("e").unwrap(), repacked);
    assert!(p.partials().is_empty(), "{:?}", p.partials());
}

#[test]
fn a_wrong_whole_digest_deletes_the_partial() {
    let p = Plain::start("resume-mismatch", "");
    let whole = noise(1 << 20, 7);
    cut(&p, "e", &whole, 400_000);
    let off = held(&p, "e", &whole);
    let mut wrong = whole.clone();
    wrong[whole.len() - 1] ^= 1;
    // The tail of other bytes under the announced digest of `whole`.
    let mut req = patch_head("e", &whole, off, whole.len() - off, "").into_bytes();
    req.extend_from_slice(&wrong[off..]);
    let resp = exchange(p.addr(), &req);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(resp.contains("digest_mismatch"), "{resp}");
    assert!(p.partials().is_empty(), "{:?}", p.partials());
    assert!(p.stored("e").is_none());
    assert_eq!(held(&p, "e", &whole), 0);
}

#[test]
fn two_appenders_one_wins_the_other_is_told_in_progress() {
    let p = Plain::start("resume-race", "");
    let whole = noise(2 << 20, 8);
    cut(&p, "e", &whole, 1 << 20);
    let off = held(&p, "e", &whole);
    // The first appender is admitted (its partial claimed) and waits for
    // 100 Continue before sending a byte.
    let mut first = TcpStream::connect(p.addr()).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let rest = whole.len() - off;
    first
        .write_all(patch_head("e", &whole, off, rest, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let mut interim = [0u8; 25];
    first.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    // The second, meanwhile: refused from its head, bytes never mixed in.
    let resp = exchange(p.addr(), &patch("e", &whole, off, rest));
    assert_eq!(status_of(&resp), 409, "{resp}");
    assert!(resp.contains("\"status\":\"upload_in_progress\""), "{resp}");
    // A PUT of the same bytes meanwhile goes to a temp of its own.
    let mut req = put_head("e", &whole).into_bytes();
    req.extend_from_slice(&whole);
    let put = exchange(p.addr(), &req);
    assert_eq!(status_of(&put), 201, "{put}");
    first.write_all(&whole[off..]).unwrap();
    let resp = read_until_close(&mut first);
    assert_eq!(status_of(&resp), 200, "the PUT won the publish: {resp}");
    assert_eq!(p.stored("e").unwrap(), whole);
    assert!(p.partials().is_empty(), "{:?}", p.partials());
    // And with no PUT in between: the one appender publishes (201).
    let again = noise(1 << 20, 9);
    cut(&p, "f", &again, 300_000);
    let off = held(&p, "f", &again);
    let mut first = TcpStream::connect(p.addr()).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let rest = again.len() - off;
    first
        .write_all(patch_head("f", &again, off, rest, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    first.read_exact(&mut interim).unwrap();
    let second = exchange(p.addr(), &patch("f", &again, off, rest));
    assert_eq!(status_of(&second), 409, "{second}");
    first.write_all(&again[off..]).unwrap();
    assert_eq!(status_of(&read_until_close(&mut first)), 201);
    assert_eq!(p.stored("f").unwrap(), again);
}

#[test]
fn the_framing_of_head_and_patch() {
    let p = Plain::start("resume-framing", "max_body_bytes = 2000000\n");
    let whole = noise(1_000_000, 10);
    cut(&p, "e", &whole, 500_000);
    let off = held(&p, "e", &whole);
    let before = std::fs::read(p.partial("e", &whole)).unwrap();
    let tail = |h: String, body: &[u8]| [h.as_bytes(), body].concat();
    let good = |extra: &str| patch_head("e", &whole, off, 10, extra);
    let ten = &whole[off..off + 10];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed offset",
            tail(
                good("").replace(&format!("Upload-Offset: {off}"), "Upload-Offset: 1x"),
                ten,
            ),
            400,
            "bad_request",
        ),
        (
            "negative offset",
            tail(
                good("").replace(&format!("Upload-Offset: {off}"), "Upload-Offset: -1"),
                ten,
            ),
            400,
            "bad_request",
        ),
        (
            "overlong offset",
            tail(
                good("").replace(
                    &format!("Upload-Offset: {off}"),
                    "Upload-Offset: 1234567890123456",
                ),
                ten,
            ),
            400,
            "bad_request",
        ),
        (
            "beyond Upload-Length",
            tail(good(&format!("Upload-Length: {}\r\n", off + 5)), ten),
            400,
            "bad_request",
        ),
        (
            "beyond the PUT's length",
            patch_head("e", &whole, off, 10, "")
                .replace(
                    "Content-Length: 10",
                    &format!("Content-Length: {}", whole.len()),
                )
                .into_bytes(),
            400,
            "bad_request",
        ),
        (
            "no Repr-Digest",
            tail(good("").replace("Repr-Digest", "X-Repr"), ten),
            400,
            "bad_request",
        ),
        (
            "zstd, not partial-upload",
            tail(
                good("").replace("application/partial-upload", "application/zstd"),
                ten,
            ),
            400,
            "bad_request",
        ),
        (
            "no Content-Type",
            tail(
                good("").replace("Content-Type: application/partial-upload\r\n", ""),
                ten,
            ),
            400,
            "bad_request",
        ),
        (
            "no Upload-Complete",
            tail(good("").replace("Upload-Complete: ?0\r\n", ""), ten),
            400,
            "bad_request",
        ),
        (
            "chunked",
            good("")
                .replace("Content-Length: 10", "Transfer-Encoding: chunked")
                .into_bytes(),
            411,
            "length_required",
        ),
        (
            "over max_body_bytes",
            good("")
                .replace("Content-Length: 10", "Content-Length: 2000001")
                .into_bytes(),
            413,
            "too_large",
        ),
        (
            "HEAD without Repr-Digest",
            head_req("e", &whole)
                .replace("Repr-Digest", "X-Repr")
                .into_bytes(),
            400,
            "",
        ),
        (
            "HEAD with another token",
            head_req("e", &whole).replace(TOKEN_A, "nope").into_bytes(),
            401,
            "",
        ),
        (
            "HEAD of another host",
            head_req("e", &whole)
                .replace("/lab-01/", "/HostA/")
                .into_bytes(),
            403,
            "",
        ),
    ];
    for (what, req, code, word) in cases {
        let resp = exchange(p.addr(), &req);
        assert_eq!(status_of(&resp), code, "{what}: {resp}");
        if !word.is_empty() {
            assert!(
                resp.contains(&format!("\"status\":\"{word}\"")),
                "{what}: {resp}"
            );
        } else {
            assert!(
                resp.ends_with("\r\n\r\n"),
                "{what}: a HEAD answer has no body: {resp:?}"
            );
        }
    }
    // An overlapping append (behind what is held) and one ahead of it:
    // 409 with the offset to go on from.
    for wrong in [off - 100, off + 100] {
        let mut req = patch_head("e", &whole, wrong, 10, "").into_bytes();
        req.extend_from_slice(&whole[wrong..wrong + 10]);
        let resp = exchange(p.addr(), &req);
        assert_eq!(status_of(&resp), 409, "{wrong}: {resp}");
        assert!(resp.contains("\"status\":\"offset_mismatch\""), "{resp}");
        assert_eq!(offset_of(&resp), off, "{resp}");
    }
    assert_eq!(
        std::fs::read(p.partial("e", &whole)).unwrap(),
        before,
        "refused appends change nothing"
    );
    // Expect: 100-continue works for PATCH as for PUT.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let rest = whole.len() - off;
    s.write_all(patch_head("e", &whole, off, rest, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&whole[off..]).unwrap();
    assert_eq!(status_of(&read_until_close(&mut s)), 201);
    assert_eq!(p.stored("e").unwrap(), whole);
}

/// Sets a file's mtime `hours` back (touch(1): the tests have no libc).
fn age_file(path: &Path, hours: u64) {
    let out = Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("{hours} hours ago"))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn partials_untouched_past_the_ttl_go_at_start() {
    let mut p = Plain::start("resume-ttl", "partial_ttl_hours = 2\n");
    let old = noise(500_000, 11);
    let young = noise(500_000, 12);
    cut(&p, "old", &old, 200_000);
    cut(&p, "young", &young, 200_000);
    age_file(&p.partial("old", &old), 3);
    age_file(&p.partial("young", &young), 1);
    p.restart("partial_ttl_hours = 2\n");
    // At start, before the listener (so before `Receiver::start` returned).
    let log = p.r.log_text();
    assert!(
        log.contains("deleted partial upload lab-01/old (")
            && log.contains("untouched for more than partial_ttl_hours (2)"),
        "{log}"
    );
    assert!(!log.contains("lab-01/young ("), "{log}");
    assert!(!p.partial("old", &old).exists());
    assert!(p.partial("young", &young).exists());
}

#[test]
fn a_host_over_its_cap_loses_its_oldest_partials() {
    let p = Plain::start("resume-cap", "max_partial_bytes_per_host = 1000000\n");
    let a = noise(600_000, 13);
    let b = noise(600_000, 14);
    cut(&p, "a", &a, 500_000);
    age_file(&p.partial("a", &a), 1);
    // Beginning b (600 000 bytes announced) makes room: a goes.
    cut(&p, "b", &b, 100_000);
    assert!(!p.partial("a", &a).exists(), "{:?}", p.partials());
    assert!(p.partial("b", &b).exists(), "{:?}", p.partials());
    p.r.wait_log("deleted partial upload lab-01/a (");
    p.r.wait_log("max_partial_bytes_per_host (1000000)");
    // b resumes as usual.
    let off = held(&p, "b", &b);
    let resp = exchange(p.addr(), &patch("b", &b, off, b.len() - off));
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(p.stored("b").unwrap(), b);
}

#[test]
fn the_sweep_at_start_keeps_a_host_under_its_cap() {
    // Two partials within the cap, then a restart with a smaller cap: the
    // sweep at start keeps the newest that fits.
    let mut p = Plain::start("resume-sweep", "");
    let a = noise(400_000, 15);
    let b = noise(400_000, 16);
    cut(&p, "a", &a, 300_000);
    cut(&p, "b", &b, 300_000);
    age_file(&p.partial("a", &a), 2);
    age_file(&p.partial("b", &b), 1);
    let cap = "max_partial_bytes_per_host = 400000\n";
    p.restart(cap);
    let log = p.r.log_text();
    assert!(log.contains("deleted partial upload lab-01/a ("), "{log}");
    assert!(!p.partial("a", &a).exists() && p.partial("b", &b).exists());
}

/// The doc's curl commands, verbatim but for the names (docs/transport.md,
/// "With curl"), against the TLS listener with client certificates.
#[test]
fn curl_resumes_as_the_doc_says() {
    let lab = Lab::new("resume-curl");
    let whole = noise(1_500_000, 17);
    let file = lab.dir.join("ep.tar.zst");
    std::fs::write(&file, &whole).unwrap();
    // A partial as a cut PUT leaves it: the first 700 000 bytes.
    let host_dir = lab.host_dir();
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join(format!(".partial-ep-1.{}", hex_of(&whole))),
        &whole[..700_000],
    )
    .unwrap();
    let token = lab.dir.join("lab-01.token");
    std::fs::write(&token, TOKEN_A).unwrap();
    let port = lab.receiver().https.unwrap().port();
    let script = r#"
set -euo pipefail
cd "$DIR"
D="sha-256=:$(openssl dgst -sha256 -binary ep.tar.zst | base64):"
H=(--cacert "$CA" --cert "$CERT" --key "$KEY" -H "Authorization: Bearer $(cat lab-01.token)")
URL=https://localhost:$PORT/v1/episodes/lab-01/ep-1
# where to resume
OFF=$(curl -sS -I "${H[@]}" -H "Repr-Digest: $D" "$URL" | tr -d '\r' | sed -n 's/^upload-offset: //Ip')
echo "offset $OFF"
# the rest, completing the upload
tail -c +$((OFF + 1)) ep.tar.zst | curl -sS "${H[@]}" -X PATCH --data-binary @- \
     -H "Content-Type: application/partial-upload" -H "Repr-Digest: $D" \
     -H "Upload-Offset: $OFF" -H "Upload-Complete: ?1" "$URL"
"#;
    let out = run_bounded(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("DIR", lab.dir.path())
            .env("CA", &lab.pki.ca_file)
            .env("CERT", &lab.ident.cert)
            .env("KEY", &lab.ident.key)
            .env("PORT", port.to_string()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("offset 700000\n"), "{text}");
    assert!(text.contains("\"status\":\"stored\""), "{text}");
    assert_eq!(std::fs::read(lab.stored("ep-1")).unwrap(), whole);
    assert!(
        !names(&host_dir).iter().any(|n| n.starts_with(".partial-")),
        "{:?}",
        names(&host_dir)
    );
}
