//! Upload while packing, the receiver's side (docs/transport.md, "Upload
//! while packing"): the real receiver over mTLS on 127.0.0.1, raw chunked
//! PUTs written byte for byte (tests/common/raw.rs), chunks split every
//! which way, a digest in the trailer or the head or nowhere, streams cut
//! and resumed by their `Upload-Key`; and curl uploading from stdin, which
//! it sends chunked.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::fs::names;
use common::lab::Lab;
use common::raw::*;
use common::*;

/// A receiver over mTLS, and lab-01's way in.
struct Stream {
    lab: Lab,
    to: Target,
}

impl Stream {
    fn start(name: &str, receiver_extra: &str) -> Stream {
        let lab = Lab::build(name).receiver_extra(receiver_extra).start();
        let to = Target::tls(lab.receiver().https.unwrap(), &lab.pki, &lab.ident);
        Stream { lab, to }
    }

    fn host_dir(&self) -> PathBuf {
        self.lab.host_dir()
    }

    fn stored(&self, id: &str) -> Option<Vec<u8>> {
        std::fs::read(self.lab.stored(id)).ok()
    }

    /// Partials and temps in lab-01's directory.
    fn unfinished(&self) -> Vec<String> {
        names(&self.host_dir())
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    fn keyed(&self, id: &str, key: &str) -> PathBuf {
        self.host_dir().join(format!(".partial-{id}.k{key}"))
    }

    /// Waits until the receiver has logged `needle` one more time than
    /// `before` (its lines are its readiness signals).
    fn wait_more(&self, needle: &str, before: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.lab.logged(needle) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "never logged {needle:?}:\n{}",
                self.lab.receiver().log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a streamed PUT's head and the first `n` bytes of its chunked
    /// body, then breaks the connection; returns once the receiver has let
    /// go of the upload.
    fn cut_stream(&self, head: &str, wire: &[u8], n: usize) {
        let before = self.lab.logged("of a chunked body");
        let mut req = head.as_bytes().to_vec();
        req.extend_from_slice(wire);
        self.to.send_cut(&req, head.len() + n);
        self.wait_more("of a chunked body", before);
    }

    /// A HEAD with `Upload-Key` for the upload of `whole`.
    fn head_keyed(&self, id: &str, whole: &[u8], key: &str) -> String {
        let req = with_field(&head_req(id, whole), &format!("Upload-Key: {key}"));
        self.to.exchange(req.as_bytes())
    }

    /// A PATCH with `Upload-Key` appending `whole[offset..]`, completing it.
    fn patch_keyed(&self, id: &str, whole: &[u8], offset: usize, key: &str) -> String {
        let rest = whole.len() - offset;
        let head = patch_head(id, whole, offset, rest, &format!("Upload-Key: {key}\r\n"));
        let mut req = head.into_bytes();
        req.extend_from_slice(&whole[offset..]);
        self.to.exchange(&req)
    }
}

/// Chunk sizes that split a body every which way: 1 byte, odd sizes, the
/// shipper's 256 KiB, one larger than the receiver's reads.
const SPLITS: &[usize] = &[1, 7, 65_536, 3, 262_144, 300_001, 2];

fn word(resp: &str) -> &str {
    resp.split("\"status\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

#[test]
fn a_streamed_put_with_the_digest_in_the_trailer_is_stored() {
    let st = Stream::start("stream-trailer", "");
    let body = noise(3 << 20, 1);
    for (id, extra) in [
        ("no-key", String::new()),
        ("keyed", format!("Upload-Key: {}\r\n", upload_key(1))),
    ] {
        let mut c = st.to.connect();
        // The head first, waiting for 100 Continue as the shipper does.
        let head = stream_head(id, &format!("Expect: 100-continue\r\n{extra}"));
        c.send(head.as_bytes()).unwrap();
        assert_eq!(c.read_head(), "HTTP/1.1 100 Continue\r\n\r\n");
        // The first bytes one write (one TLS record) at a time.
        let wire = chunked(&body, SPLITS, &digest_line(&body));
        for b in &wire[..64] {
            c.send(&[*b]).unwrap();
        }
        for piece in wire[64..].chunks(100_003) {
            c.send(piece).unwrap();
        }
        let resp = c.read_until_close();
        assert_eq!(status_of(&resp), 201, "{id}: {resp}");
        assert_eq!(word(&resp), "stored", "{resp}");
        assert!(resp.contains(&hex_of(&body)), "{resp}");
        assert_eq!(st.stored(id).unwrap(), body, "{id}: byte for byte");
        let sidecar = std::fs::read_to_string(st.host_dir().join(format!("{id}.tar.zst.sha256")));
        assert_eq!(
            sidecar.unwrap(),
            format!("{}  {id}.tar.zst\n", hex_of(&body)),
            "{id}"
        );
    }
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
    // The log line counts the decoded bytes.
    st.lab.receiver().wait_log(&format!(
        "PUT /v1/episodes/lab-01/keyed 201 bytes={}",
        body.len()
    ));

    // Kept alive after a 201: a pipelined ping behind the trailer is
    // served on the same connection.
    let small = noise(10_000, 2);
    let head = stream_head("pipelined", "").replace("Connection: close\r\n", "");
    let mut req = head.into_bytes();
    req.extend_from_slice(&chunked(&small, &[4096], &digest_line(&small)));
    req.extend_from_slice(
        format!("POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut c = st.to.connect();
    c.send(&req).unwrap();
    let first = c.read_answer();
    assert_eq!(status_of(&first), 201, "{first}");
    assert_eq!(field(&first, "Connection"), None, "kept alive: {first}");
    let second = c.read_until_close();
    assert!(
        second.starts_with("HTTP/1.1 200 OK\r\n") && second.contains("\"host_id\":\"lab-01\""),
        "{second}"
    );
    assert_eq!(st.stored("pipelined").unwrap(), small);
}

#[test]
fn the_digest_may_be_in_the_head_instead() {
    let st = Stream::start("stream-head-digest", "");
    let body = noise(1 << 20, 3);
    let head = stream_head("e", &digest_line(&body));
    let mut req = head.clone().into_bytes();
    req.extend_from_slice(&chunked(&body, &[100_000], ""));
    let resp = st.to.exchange(&req);
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(st.stored("e").unwrap(), body);
    // The same bytes again: 200 from the head, the body never read.
    let mut c = st.to.connect();
    c.send(with_field(&head, "Expect: 100-continue").as_bytes())
        .unwrap();
    let resp = c.read_until_close();
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(word(&resp), "present", "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");
    // Other bytes, digest first: 409 from the head.
    let other = noise(1 << 20, 4);
    let resp = st
        .to
        .exchange(stream_head("e", &digest_line(&other)).as_bytes());
    assert_eq!(status_of(&resp), 409, "{resp}");
    assert!(resp.contains(&hex_of(&body)), "theirs: {resp}");
    assert_eq!(st.stored("e").unwrap(), body);
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
}

#[test]
fn a_wrong_trailer_digest_stores_nothing() {
    let st = Stream::start("stream-mismatch", "");
    let body = noise(700_000, 5);
    let other = noise(700_000, 6);
    let key = upload_key(5);
    let head = stream_head("e", &format!("Upload-Key: {key}\r\n"));
    let mut req = head.into_bytes();
    req.extend_from_slice(&chunked(&body, SPLITS, &digest_line(&other)));
    let resp = st.to.exchange(&req);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(word(&resp), "digest_mismatch", "{resp}");
    assert!(st.stored("e").is_none());
    assert!(
        st.unfinished().is_empty(),
        "no partial: {:?}",
        st.unfinished()
    );
}

#[test]
fn no_digest_anywhere_keeps_a_keyed_upload_for_an_empty_patch() {
    let st = Stream::start("stream-missing", "");
    let body = noise(2 << 20, 7);
    let key = upload_key(7);
    // A proxy that drops trailers: no Content-Digest reaches the receiver.
    let head = stream_head("e", &format!("Upload-Key: {key}\r\n"));
    let mut req = head.into_bytes();
    req.extend_from_slice(&chunked(&body, SPLITS, "X-Other: kept out\r\n"));
    let resp = st.to.exchange(&req);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(word(&resp), "digest_missing", "{resp}");
    assert_eq!(offset_of(&resp), body.len(), "{resp}");
    assert!(st.stored("e").is_none());
    assert_eq!(std::fs::read(st.keyed("e", &key)).unwrap(), body);
    // Where it stands: all of it, and its length known.
    let resp = st.head_keyed("e", &body, &key);
    assert_eq!(status_of(&resp), 204, "{resp}");
    assert_eq!(offset_of(&resp), body.len(), "{resp}");
    assert_eq!(
        field(&resp, "Upload-Length"),
        Some(body.len().to_string().as_str())
    );
    // Completed by an empty PATCH with the whole digest.
    let resp = st.patch_keyed("e", &body, body.len(), &key);
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(word(&resp), "stored", "{resp}");
    assert_eq!(st.stored("e").unwrap(), body);
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());

    // Without a key there is nothing to complete: nothing is kept.
    let mut req = stream_head("f", "").into_bytes();
    req.extend_from_slice(&chunked(&body[..5000], &[999], ""));
    let resp = st.to.exchange(&req);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(word(&resp), "digest_missing", "{resp}");
    assert_eq!(field(&resp, "Upload-Offset"), None, "{resp}");
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());

    // Kept, then a PATCH naming other bytes: digest_mismatch, and gone.
    let key = upload_key(8);
    let mut req = stream_head("g", &format!("Upload-Key: {key}\r\n")).into_bytes();
    req.extend_from_slice(&chunked(&body, &[500_000], ""));
    assert_eq!(word(&st.to.exchange(&req)), "digest_missing");
    let mut wrong = body.clone();
    wrong[0] ^= 1;
    let resp = st.patch_keyed("g", &wrong, wrong.len(), &key);
    assert_eq!(word(&resp), "digest_mismatch", "{resp}");
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
    assert!(st.stored("g").is_none());
}

#[test]
fn a_cut_stream_resumes_by_its_key() {
    let st = Stream::start("stream-cut", "");
    let body = noise(3 << 20, 9);
    let key = upload_key(9);
    let head = stream_head("e", &format!("Upload-Key: {key}\r\n"));
    let wire = chunked(&body, SPLITS, &digest_line(&body));
    // Cut inside a chunk's data, some 2 MB in.
    let n = 2_000_000;
    st.cut_stream(&head, &wire, n);
    assert!(st.stored("e").is_none(), "never published from a cut body");
    assert!(st.keyed("e", &key).exists(), "{:?}", st.unfinished());
    let resp = st.head_keyed("e", &body, &key);
    assert_eq!(status_of(&resp), 204, "{resp}");
    assert_eq!(field(&resp, "Upload-Length"), None, "not known: {resp}");
    let off = offset_of(&resp);
    assert!(off > 0 && off <= n, "offset {off} of {n} wire bytes sent");
    let resp = st.patch_keyed("e", &body, off, &key);
    assert_eq!(status_of(&resp), 201, "{resp}");
    assert_eq!(st.stored("e").unwrap(), body);
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());

    // Cut without a key: a private temp, removed; nothing to resume.
    let head = stream_head("f", "");
    st.cut_stream(&head, &wire, 1_000_000);
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
    let log = st.lab.receiver().log_text();
    let line = log.lines().find(|l| l.contains("lab-01/f: ")).unwrap_or("");
    assert!(
        line.contains("bytes of a chunked body") && line.ends_with("nothing stored, nothing kept"),
        "{log}"
    );
}

#[test]
fn a_stored_id_without_a_head_digest_is_428_from_the_head() {
    let st = Stream::start("stream-428", "");
    let body = b"the stored tarball".to_vec();
    let mut req = put_head("e", &body).into_bytes();
    req.extend_from_slice(&body);
    assert_eq!(status_of(&st.to.exchange(&req)), 201);
    // The head only, waiting for 100 Continue: the answer comes without one.
    let key = upload_key(10);
    let mut c = st.to.connect();
    let head = stream_head(
        "e",
        &format!("Expect: 100-continue\r\nUpload-Key: {key}\r\n"),
    );
    c.send(head.as_bytes()).unwrap();
    let resp = c.read_until_close();
    assert_eq!(status_of(&resp), 428, "{resp}");
    assert!(
        resp.starts_with("HTTP/1.1 428 Precondition Required\r\n"),
        "{resp}"
    );
    assert_eq!(word(&resp), "digest_required", "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
    // The same bytes said first: 200, no body read.
    let head = stream_head(
        "e",
        &format!("Expect: 100-continue\r\n{}", digest_line(&body)),
    );
    let resp = st.to.exchange(head.as_bytes());
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(word(&resp), "present", "{resp}");
    assert_eq!(st.stored("e").unwrap(), body);
}

#[test]
fn framing_refusals() {
    let st = Stream::start("stream-framing", "max_body_bytes = 1000000\n");
    let body = noise(300_000, 11);
    let good = chunked(&body, &[65_536], &digest_line(&body));
    let with = |head: &str, wire: &[u8]| [head.as_bytes(), wire].concat();
    let head = stream_head("e", "");
    let patch = patch_head("e", &body, 0, 10, "")
        .replace("Content-Length: 10", "Transfer-Encoding: chunked");
    let long_line = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(5000));
    let big_trailer = format!("1\r\na\r\n0\r\nX-Pad: {}\r\n\r\n", "y".repeat(17_000));
    let twice = format!("{}{}", digest_line(&body), digest_line(&body));
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("TE and CL", with(&with_field(&head, "Content-Length: 300000"), &good), 400, "bad_request"),
        ("gzip", with(&head.replace("chunked", "gzip"), &good), 501, "bad_request"),
        ("a list of codings", with(&head.replace("chunked", "gzip, chunked"), &good), 501, "bad_request"),
        ("two TE lines", with(&with_field(&head, "Transfer-Encoding: chunked"), &good), 400, "bad_request"),
        ("HTTP/1.0", with(&head.replace("HTTP/1.1", "HTTP/1.0"), &good), 400, "bad_request"),
        ("chunked PATCH", with(&patch, &chunked(&body[..10], &[10], "")), 411, "length_required"),
        ("a malformed Upload-Key", with(&with_field(&head, "Upload-Key: 123"), &good), 400, "bad_request"),
        ("0x size", with(&head, b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n"), 400, "bad_request"),
        ("not hex", with(&head, b"zz\r\nab\r\n0\r\n\r\n"), 400, "bad_request"),
        ("17 digits", with(&head, b"00000000000000001\r\na\r\n0\r\n\r\n"), 400, "bad_request"),
        ("bare LF", with(&head, b"1\na\r\n0\r\n\r\n"), 400, "bad_request"),
        ("over-long chunk line", with(&head, long_line.as_bytes()), 400, "bad_request"),
        ("no CRLF after data", with(&head, b"1\r\nab\r\n0\r\n\r\n"), 400, "bad_request"),
        ("trailer too large", with(&head, big_trailer.as_bytes()), 400, "bad_request"),
        ("Content-Digest twice in the trailer", with(&head, &chunked(&body, &[65_536], &twice)), 400, "bad_request"),
        ("Content-Digest in head and trailer", with(&stream_head("e", &digest_line(&body)), &good), 400, "bad_request"),
        ("an empty body", with(&head, format!("0\r\n{}\r\n", digest_line(b"")).as_bytes()), 400, "bad_request"),
        ("over max_body_bytes", with(&head, &chunks(&noise(1_200_000, 12), &[600_000])), 413, "too_large"),
    ];
    for (what, req, code, w) in cases {
        let resp = st.to.exchange(&req);
        assert_eq!(status_of(&resp), code, "{what}: {resp}");
        assert_eq!(word(&resp), w, "{what}: {resp}");
        assert_eq!(field(&resp, "Connection"), Some("close"), "{what}: {resp}");
        assert!(st.stored("e").is_none(), "{what}");
        assert!(st.unfinished().is_empty(), "{what}: {:?}", st.unfinished());
    }
    // The refusal over max_body_bytes came from the second chunk's size,
    // before its data: the log says how far the body got.
    st.lab.receiver().wait_log(
        "lab-01/e: chunked body refused after 600000 bytes of a chunked body (chunked body exceeds max_body_bytes (1000000))",
    );
    // And a good one still works.
    let resp = st.to.exchange(&with(&head, &good));
    assert_eq!(status_of(&resp), 201, "{resp}");
}

#[test]
fn a_stalled_stream_is_408_and_keeps_its_partial() {
    let st = Stream::start("stream-stall", "body_timeout_s = 1\n");
    let body = noise(400_000, 13);
    let key = upload_key(13);
    let mut c = st.to.connect();
    let head = stream_head("e", &format!("Upload-Key: {key}\r\n"));
    c.send(head.as_bytes()).unwrap();
    c.send(&chunks(&body[..200_000], &[100_000])).unwrap();
    // Nothing more: the next read waits body_timeout_s for nothing.
    let resp = c.read_until_close();
    assert_eq!(status_of(&resp), 408, "{resp}");
    assert_eq!(word(&resp), "timeout", "{resp}");
    st.lab
        .receiver()
        .wait_log("body stalled after 200000 bytes of a chunked body; nothing stored, 200000 bytes kept to resume");
    let resp = st.head_keyed("e", &body, &key);
    assert_eq!(offset_of(&resp), 200_000, "{resp}");
}

#[test]
fn a_new_key_for_the_id_deletes_the_old_keyed_partial() {
    let st = Stream::start("stream-rekey", "");
    let first = noise(1 << 20, 14);
    let (k1, k2) = (upload_key(14), upload_key(15));
    let wire = chunked(&first, &[100_000], &digest_line(&first));
    st.cut_stream(
        &stream_head("e", &format!("Upload-Key: {k1}\r\n")),
        &wire,
        500_000,
    );
    let held = std::fs::metadata(st.keyed("e", &k1)).unwrap().len();
    assert!(
        held > 400_000 && held < 500_000,
        "the decoded bytes: {held}"
    );
    // The episode is packed again (a crash mid-pack draws another key).
    let second = noise(1 << 20, 15);
    let wire = chunked(&second, &[100_000], &digest_line(&second));
    st.cut_stream(
        &stream_head("e", &format!("Upload-Key: {k2}\r\n")),
        &wire,
        300_000,
    );
    assert!(!st.keyed("e", &k1).exists(), "{:?}", st.unfinished());
    assert!(st.keyed("e", &k2).exists(), "{:?}", st.unfinished());
    st.lab.receiver().wait_log(&format!(
        "deleted partial upload lab-01/e ({held} bytes, key {k1}): episode repacked"
    ));
    // The old key holds nothing now; the new one resumes.
    let resp = st.head_keyed("e", &second, &k2);
    let off = offset_of(&resp);
    assert!(off > 0 && off <= 300_000, "{resp}");
    assert_eq!(status_of(&st.patch_keyed("e", &second, off, &k2)), 201);
    assert_eq!(st.stored("e").unwrap(), second);
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
}

/// `curl -T -` sends what it reads from stdin chunked (its length is not
/// known); with the digest said in the head, that is a streamed PUT.
#[test]
fn curl_uploading_from_stdin_with_the_digest_in_the_head() {
    let st = Stream::start("stream-curl", "");
    let body = noise(1_500_000, 16);
    let file = st.lab.dir.join("ep.tar.zst");
    std::fs::write(&file, &body).unwrap();
    let token = st.lab.dir.join("lab-01.token");
    std::fs::write(&token, TOKEN_A).unwrap();
    let port = st.lab.receiver().https.unwrap().port();
    let script = r#"
set -euo pipefail
cd "$DIR"
D="sha-256=:$(openssl dgst -sha256 -binary ep.tar.zst | base64):"
cat ep.tar.zst | curl -sS --fail-with-body --cacert "$CA" --cert "$CERT" --key "$KEY" \
     -H "Authorization: Bearer $(cat lab-01.token)" -H "Content-Digest: $D" \
     -H "Content-Type: application/zstd" -T - "https://localhost:$PORT/v1/episodes/lab-01/ep-1"
"#;
    let out = run_bounded(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("DIR", st.lab.dir.path())
            .env("CA", &st.lab.pki.ca_file)
            .env("CERT", &st.lab.ident.cert)
            .env("KEY", &st.lab.ident.key)
            .env("PORT", port.to_string()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("\"status\":\"stored\""),
        "{}",
        describe(&out)
    );
    assert_eq!(st.stored("ep-1").unwrap(), body);
    // It was chunked: the receiver counted the decoded bytes of a PUT
    // that announced no length.
    st.lab.receiver().wait_log(&format!(
        "PUT /v1/episodes/lab-01/ep-1 201 bytes={}",
        body.len()
    ));
    assert!(st.unfinished().is_empty(), "{:?}", st.unfinished());
}
