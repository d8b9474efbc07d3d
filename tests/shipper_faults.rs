//! The shipper against a scripted TLS server on loopback: odd but legal
//! answers, broken ones, a kept-alive connection closed under it, and a
//! black hole (bad-inputs.md F17, C8, L9). The server is ours, in the test,
//! so each answer is exact bytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cis490::chunked::{ChunkedReader, Limits as ChunkLimits};
use cis490::http::{self, Limits};
use common::episodes::make_episode;
use common::*;
use rustls::{ServerConnection, StreamOwned};

type Tls = StreamOwned<ServerConnection, std::net::TcpStream>;

/// One request as the fake server saw it.
struct Seen {
    head: http::RequestHead,
    leftover: Vec<u8>,
}

/// Reads one request head; `None` if the client closed.
fn read_request(s: &mut Tls, leftover: Vec<u8>) -> Option<Seen> {
    let mut buf = leftover;
    let end = http::read_head(s, &mut buf, &Limits::default(), &mut || Ok(())).ok()??;
    let head = http::parse_request_head(&buf[..end], &Limits::default()).ok()?;
    Some(Seen {
        head,
        leftover: buf[end..].to_vec(),
    })
}

/// Reads the body announced by the head (after the leftover bytes): of
/// `Content-Length`, or chunked (a tarball sent while it is packed),
/// decoded by the receiver's own decoder up to its trailer.
fn read_body(s: &mut Tls, seen: &Seen) -> Vec<u8> {
    if seen.head.headers.has_token("transfer-encoding", "chunked") {
        let wire = std::io::BufReader::new(std::io::Cursor::new(seen.leftover.clone()).chain(s));
        let mut body = Vec::new();
        let mut decoder = ChunkedReader::new(wire, ChunkLimits::default());
        decoder.read_to_end(&mut body).unwrap();
        assert!(
            decoder
                .trailer()
                .is_some_and(|t| t.get("content-digest").is_some()),
            "a streamed body ends with its digest"
        );
        return body;
    }
    let len: usize = seen
        .head
        .headers
        .get("content-length")
        .unwrap()
        .parse()
        .unwrap();
    let mut body = seen.leftover.clone();
    let mut chunk = vec![0u8; 65536];
    while body.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "client closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    body
}

/// A TLS server whose connection `i` is handled by `script(i, stream)`.
struct Fake {
    port: u16,
    conns: mpsc::Receiver<usize>,
}

fn fake<F>(pki: &TestPki, script: F) -> Fake
where
    F: Fn(usize, &mut Tls) + Send + Sync + 'static,
{
    let config = cis490::tls::server_config(&pki.server_cert, &pki.server_key, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, conns) = mpsc::channel();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        for (i, tcp) in listener.incoming().enumerate() {
            let Ok(tcp) = tcp else { break };
            let config = Arc::clone(&config);
            let script = Arc::clone(&script);
            let tx = tx.clone();
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let conn = ServerConnection::new(config).unwrap();
                let mut s = StreamOwned::new(conn, tcp);
                script(i, &mut s);
                let _ = tx.send(i);
            });
        }
    });
    Fake { port, conns }
}

struct Case {
    _dir: TempDir,
    cfg: ShipperSetup,
}

fn case(name: &str, pki_dir: &TempDir, pki: &TestPki, port: u16, episodes: usize) -> Case {
    let dir = TempDir::new(name);
    let _ = pki_dir;
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        &format!("https://localhost:{port}"),
        &pki.ca_file,
        None,
        TOKEN_A,
        "",
    );
    // Tighter than the default, so the black-hole case ends quickly.
    let text = std::fs::read_to_string(&cfg.config)
        .unwrap()
        .replace("io_timeout_s = 10", "io_timeout_s = 2");
    write_file(&cfg.config, &text, 0o644);
    for i in 0..episodes {
        make_episode(&cfg.data_dir, &format!("ep-{i}"), 30_000, i as u64, true);
    }
    Case { _dir: dir, cfg }
}

fn shipped(c: &Case) -> usize {
    std::fs::read_dir(c.cfg.data_dir.join("shipped"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"status\":\"stored\"}\n";

#[test]
fn c8_kept_alive_connection_closed_under_us_is_retried_once() {
    let d = TempDir::new("fault-c8-pki");
    let pki = TestPki::new(d.path());
    let f = fake(&pki, |i, s| {
        // Connection 0 answers the first PUT, then closes without answering
        // the second, as a receiver whose idle timeout fired would.
        let seen = read_request(s, Vec::new()).unwrap();
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        s.flush().unwrap();
        read_body(s, &seen);
        s.write_all(CREATED).unwrap();
        s.flush().unwrap();
        if i == 0 {
            let _ = read_request(s, Vec::new());
        }
    });
    let c = case("fault-c8", &d, &pki, f.port, 2);
    let out = shipper(&c.cfg.config, &["--once"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("kept-alive connection was closed by the receiver; retrying"),
        "{}",
        describe(&out)
    );
    assert_eq!(shipped(&c), 2);
    assert_eq!(f.conns.iter().take(2).count(), 2);
}

/// One episode against a server that reads the head and answers `answer`
/// (after reading the body when `read_body_first`).
fn one_answer(name: &str, read_first: bool, answer: &'static [u8]) -> (std::process::Output, Case) {
    let d = TempDir::new(&format!("{name}-pki"));
    let pki = TestPki::new(d.path());
    let f = fake(&pki, move |_, s| {
        let Some(seen) = read_request(s, Vec::new()) else {
            return;
        };
        if read_first {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
            s.flush().unwrap();
            read_body(s, &seen);
        }
        let _ = s.write_all(answer);
        let _ = s.flush();
        s.conn.send_close_notify();
        let _ = s.flush();
    });
    let c = case(name, &d, &pki, f.port, 1);
    let out = shipper(&c.cfg.config, &["--once"]);
    drop(d);
    (out, c)
}

#[test]
fn f17_status_without_reason_is_fine() {
    let (out, c) = one_answer(
        "fault-noreason",
        true,
        b"HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n",
    );
    assert_exit(&out, 0);
    assert_eq!(shipped(&c), 1);
}

#[test]
fn f17_interim_answers_before_the_final_one() {
    let (out, c) = one_answer(
        "fault-1xx",
        true,
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_exit(&out, 0);
    assert_eq!(shipped(&c), 1);
}

#[test]
fn f17_continue_then_413_is_rejected() {
    let (out, c) = one_answer("fault-413", false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_exit(&out, 65);
    assert_eq!(shipped(&c), 0);
    assert!(
        stderr(&out).contains("rejected the upload with 413"),
        "{}",
        describe(&out)
    );
}

#[test]
fn f17_answer_without_length_ends_at_close() {
    let (out, c) = one_answer(
        "fault-nolen",
        true,
        b"HTTP/1.0 201 Created\r\n\r\n{\"status\":\"stored\"}",
    );
    assert_exit(&out, 0);
    assert_eq!(shipped(&c), 1);
}

#[test]
fn f17_answer_cut_short_is_75_and_keeps_everything() {
    let (out, c) = one_answer(
        "fault-short",
        true,
        b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"sta",
    );
    assert_exit(&out, 75);
    assert_eq!(shipped(&c), 0);
    assert!(c.cfg.data_dir.join("outbox/ep-0.tar.zst").exists());
}

#[test]
fn f17_garbage_status_and_huge_heads_are_75() {
    let (out, _) = one_answer("fault-garbage", true, b"HTTP/1.1 2x1 Created\r\n\r\n");
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("unexpected answer"),
        "{}",
        describe(&out)
    );
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 201 Created\r\n{}\r\n",
            "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(2000)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (out, c) = one_answer("fault-huge", true, huge);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("too large"), "{}", describe(&out));
    assert_eq!(shipped(&c), 0);
}

#[test]
fn l8_no_interim_answer_means_the_body_follows_after_a_second() {
    let d = TempDir::new("fault-no100-pki");
    let pki = TestPki::new(d.path());
    let f = fake(&pki, |_, s| {
        // Never sends 100 Continue: just waits for the body.
        let seen = read_request(s, Vec::new()).unwrap();
        read_body(s, &seen);
        s.write_all(CREATED).unwrap();
        s.flush().unwrap();
    });
    let c = case("fault-no100", &d, &pki, f.port, 1);
    let out = shipper(&c.cfg.config, &["--once"]);
    assert_exit(&out, 0);
    assert_eq!(shipped(&c), 1);
}

#[test]
fn l9_black_hole_gives_up_at_io_timeout_with_75() {
    let d = TempDir::new("fault-hole-pki");
    let pki = TestPki::new(d.path());
    let f = fake(&pki, |_, s| {
        // Completes the handshake, reads the head, then says nothing.
        let _ = read_request(s, Vec::new());
        std::thread::sleep(Duration::from_secs(6));
    });
    let c = case("fault-hole", &d, &pki, f.port, 1);
    let t = Instant::now();
    let out = shipper(&c.cfg.config, &["--once"]);
    assert_exit(&out, 75);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "gave up after {:?}",
        t.elapsed()
    );
    assert!(stderr(&out).contains("timed out"), "{}", describe(&out));
    assert_eq!(shipped(&c), 0);
    assert!(c.cfg.data_dir.join("episodes/ep-0").exists());
}

/// An answer with a JSON body, closing the connection.
fn json_answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `--ping` against other implementations of the protocol: a 200 whose
/// body does not name the host passes with a warning (it used to fail as
/// "authenticates as ?", 77); a field of an unexpected type no longer makes
/// the whole answer unreadable; a host id that differs stays 77.
#[test]
fn ping_reads_other_receivers_answers_leniently() {
    let d = TempDir::new("fault-ping-lenient");
    let pki = TestPki::new(d.path());
    let bodies = [
        r#"{"status":"ok"}"#,
        r#"{"status":"ok","host_id":"lab-01","server_time":1764356400,"extra":{"a":[1]}}"#,
        r#"{"status":"ok","host_id":"lab-02","version":2}"#,
    ];
    let f = fake(&pki, move |i, s| {
        if read_request(s, Vec::new()).is_some() {
            let _ = s.write_all(&json_answer("200 OK", bodies[i.min(2)]));
            let _ = s.flush();
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    let c = case("fault-ping-lenient-a", &d, &pki, f.port, 0);
    let out = shipper(&c.cfg.config, &["--ping"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("receiver did not say which host it authenticated"),
        "{}",
        describe(&out)
    );
    let out = shipper(&c.cfg.config, &["--ping"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("authenticated as lab-01"),
        "{}",
        describe(&out)
    );
    let out = shipper(&c.cfg.config, &["--ping"]);
    assert_exit(&out, 77);
    assert!(
        stdout(&out).contains("the token authenticates as lab-02"),
        "{}",
        describe(&out)
    );
}

/// The same leniency for upload answers: a 409 whose body carries a field
/// of another type still yields the receiver's digest for the conflict note.
#[test]
fn upload_answers_are_read_leniently() {
    let d = TempDir::new("fault-upload-lenient");
    let pki = TestPki::new(d.path());
    let theirs = "ab".repeat(32);
    let body =
        format!(r#"{{"status":"conflict","sha256":"{theirs}","stored_at":1764356400,"size":12}}"#);
    let f = fake(&pki, move |_, s| {
        if read_request(s, Vec::new()).is_some() {
            let _ = s.write_all(&json_answer("409 Conflict", &body));
            let _ = s.flush();
        }
    });
    let c = case("fault-upload-lenient-a", &d, &pki, f.port, 1);
    let out = shipper(&c.cfg.config, &["--once"]);
    assert_exit(&out, 65);
    let note = std::fs::read_to_string(c.cfg.data_dir.join("outbox/ep-0.conflict")).unwrap();
    assert!(
        note.contains(&format!("receiver_sha256: {}", "ab".repeat(32))),
        "{note}"
    );
}
