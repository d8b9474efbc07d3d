//! The receiver against denial of service over real TLS on loopback: slow
//! peers (bad-inputs.md L3, L5), crowds of idle connections (L6), and a
//! thread that cannot be started. Every test runs the real binaries; the
//! attackers are real sockets, paced by sleeps (pacing the attacker is the
//! point, never synchronisation with the receiver).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::raw::client_config;
use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

fn client(cfg: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(Arc::clone(cfg), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Writes `bytes` one at a time, `gap` apart, and returns how long after
/// `start` the receiver closed the connection (EOF, reset, or a failed
/// write), or `None` if it was still open after `give_up`. Whatever the
/// receiver sends before closing (a 408, TLS records) is read and ignored.
fn dribble(
    s: &mut TcpStream,
    bytes: &[u8],
    gap: Duration,
    start: Instant,
    give_up: Duration,
) -> Option<Duration> {
    s.set_read_timeout(Some(gap)).unwrap();
    let mut sink = [0u8; 4096];
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            return Some(start.elapsed());
        }
        // Waiting for the receiver's move is the attacker's pause.
        loop {
            match s.read(&mut sink) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => return Some(start.elapsed()),
            }
        }
        if start.elapsed() > give_up {
            return None;
        }
    }
    None
}

/// Completes a handshake with the receiver at `addr` as `cfg`'s host.
fn handshake(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> (TcpStream, ClientConnection) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = client(cfg);
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    (tcp, conn)
}

/// The TLS records carrying `plain`, one record per `chunk` bytes.
fn records(conn: &mut ClientConnection, plain: &[u8], chunk: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for part in plain.chunks(chunk) {
        conn.writer().write_all(part).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
    }
    wire
}

const HEAD_TIMEOUT: u64 = 2;

/// D2 (L5, L3 behind TLS): rustls reads many times inside one handshake or
/// one TLS record; the head deadline must hold across all of those reads.
/// Three slow clients, each sending a byte every 250 ms (every gap far
/// inside `head_timeout_s = 2`, the whole far beyond it), are cut within
/// head_timeout + 2 s, and meanwhile a real `--ping` succeeds.
#[test]
fn d2_dribbling_clients_are_cut_at_the_head_deadline() {
    let dir = TempDir::new("dos-d2");
    let pki = TestPki::new(&dir.join("pki"));
    let opts = ReceiverOptions {
        extra: format!("head_timeout_s = {HEAD_TIMEOUT}\n"),
        ..ReceiverOptions::tls(&pki, &dir.join("store"))
    };
    let r = Receiver::start(dir.path(), &opts);
    let addr = r.https.unwrap();
    let ident = pki.client("lab-01");
    let cfg = client_config(&pki, &ident);
    let gap = Duration::from_millis(250);
    let limit = Duration::from_secs(HEAD_TIMEOUT + 2);
    let give_up = Duration::from_secs(HEAD_TIMEOUT + 8);
    let head = format!("POST /v1/ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: 0\r\n\r\n");

    let (hello, in_one_record, byte_per_record) = std::thread::scope(|sc| {
        // A real ClientHello, one byte at a time (about 300 bytes: 75 s).
        let hello = sc.spawn(|| {
            let mut conn = client(&cfg);
            let mut wire = Vec::new();
            conn.write_tls(&mut wire).unwrap();
            let start = Instant::now();
            let mut tcp = TcpStream::connect(addr).unwrap();
            dribble(&mut tcp, &wire, gap, start, give_up)
        });
        // After a complete handshake, the head inside one TLS record whose
        // bytes arrive one at a time: one rustls read, many socket reads.
        let in_one_record = sc.spawn(|| {
            let start = Instant::now();
            let (mut tcp, mut conn) = handshake(addr, &cfg);
            let wire = records(&mut conn, head.as_bytes(), head.len());
            dribble(&mut tcp, &wire, gap, start, give_up)
        });
        // The head one byte per TLS record, each record's bytes dribbled.
        let byte_per_record = sc.spawn(|| {
            let start = Instant::now();
            let (mut tcp, mut conn) = handshake(addr, &cfg);
            let wire = records(&mut conn, head.as_bytes(), 1);
            dribble(&mut tcp, &wire, gap, start, give_up)
        });
        // Meanwhile a real shipper gets through.
        let ship = shipper_config(
            dir.path(),
            "lab-01",
            &r.url(),
            &pki.ca_file,
            Some(&ident),
            TOKEN_A,
            "",
        );
        let out = shipper(&ship.config, &["--ping"]);
        assert_exit(&out, 0);
        (
            hello.join().unwrap(),
            in_one_record.join().unwrap(),
            byte_per_record.join().unwrap(),
        )
    });
    eprintln!(
        "cut after: ClientHello {hello:?}, head in one record {in_one_record:?}, head a byte per record {byte_per_record:?}"
    );
    for (what, cut) in [
        ("dribbled ClientHello", hello),
        ("head dribbled inside one TLS record", in_one_record),
        ("head one byte per TLS record", byte_per_record),
    ] {
        let cut = cut.unwrap_or_else(|| panic!("{what}: still open after {give_up:?}"));
        assert!(
            cut <= limit,
            "{what}: cut after {cut:?}, expected within {limit:?}"
        );
        assert!(
            cut >= Duration::from_millis(HEAD_TIMEOUT * 1000 - 100),
            "{what}: cut after {cut:?}, before the deadline"
        );
    }
    r.wait_log("TLS handshake not finished within head_timeout_s");
    r.wait_log("request head not complete within head_timeout_s");
}

/// Hostile sockets bound to chosen loopback source addresses. std cannot
/// bind a TCP socket before connecting, the project has no socket2, and
/// the tests use no `unsafe`: so the crowd is a small python3 program (the
/// standard library only; python3 is on every machine of this kind).
///
/// `crowd PORT SRCS N SECS`: N idle sockets from the comma-separated SRCS,
/// each reconnected as soon as the receiver drops it, for SECS seconds or
/// until its stdin closes; prints `ready` once all are opened and
/// `connects=C closed=D` at the end.
///
/// `line PORT SRCS WAIT EXPECT`: one idle socket per SRCS, connected one
/// after another; then waits up to WAIT seconds until EXPECT of them were
/// closed by the receiver and prints, per socket, 1 (closed) or 0 (open).
const CROWD_PY: &str = r#"
import selectors, socket, sys, time
mode, port, srcs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
def connect(src, blocking):
    s = socket.socket()
    s.bind((src, 0))
    s.setblocking(blocking)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    return s
if mode == "crowd":
    n, secs = int(sys.argv[4]), float(sys.argv[5])
    sel = selectors.DefaultSelector()
    stats = {"connects": 0, "closed": 0}
    def open_one(src):
        sel.register(connect(src, False), selectors.EVENT_READ, src)
        stats["connects"] += 1
    for i in range(n):
        open_one(srcs[i % len(srcs)])
    print("ready", flush=True)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    end = time.time() + secs
    while time.time() < end:
        for key, _ in sel.select(timeout=0.1):
            if key.data is None:
                end = 0
                continue
            s = key.fileobj
            try:
                if s.recv(4096):
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            sel.unregister(s)
            s.close()
            stats["closed"] += 1
            open_one(key.data)
    print("connects=%d closed=%d" % (stats["connects"], stats["closed"]), flush=True)
else:
    wait, expect = float(sys.argv[4]), int(sys.argv[5])
    socks = [connect(src, True) for src in srcs]
    closed = [0] * len(socks)
    end = time.time() + wait
    while sum(closed) < expect and time.time() < end:
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            if not closed[i]:
                sel.register(s, selectors.EVENT_READ, i)
        for key, _ in sel.select(timeout=max(0.0, end - time.time())):
            key.fileobj.settimeout(0.1)
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed[key.data] = 1
        sel.close()
    print(",".join(map(str, closed)), flush=True)
"#;

fn crowd(args: &[String]) -> std::process::Child {
    std::process::Command::new("python3")
        .arg("-c")
        .arg(CROWD_PY)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the hostile crowd; install python3")
}

fn sources(range: std::ops::RangeInclusive<u8>) -> String {
    range
        .map(|i| format!("127.0.0.{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// D3: 300 idle sockets from 127.0.0.2 that reconnect the moment they are
/// dropped. Before, they held every slot and no shipper pass got through;
/// now 127.0.0.2 holds at most `max_connections_per_ip` (8) of the 16
/// slots, and the unauthenticated share evicts its oldest rather than
/// refusing the shipper (127.0.0.1): every pass ships its episode.
#[test]
fn d3_reconnecting_crowd_from_one_address_leaves_room_for_shipper_passes() {
    use std::io::BufRead;
    let lab = Lab::build("dos-d3-one")
        .receiver_extra("head_timeout_s = 2\nmax_connections = 16\n")
        .start();
    let port = lab.receiver().https.unwrap().port().to_string();
    let passes = 5;
    let mut attack = crowd(&[
        "crowd".into(),
        port,
        "127.0.0.2".into(),
        "300".into(),
        "60".into(),
    ]);
    let mut out = std::io::BufReader::new(attack.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let t = Instant::now();
    let mut shipped = 0;
    let mut outcomes = Vec::new();
    for i in 0..passes {
        let id = format!("ep-{i}");
        lab.episode(&id, 50_000, i);
        let o = lab.once();
        outcomes.push(o.status.code());
        if o.status.code() == Some(0) && lab.stored(&id).exists() {
            shipped += 1;
        }
    }
    let took = t.elapsed();
    drop(attack.stdin.take()); // ends the crowd
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = attack.wait();
    eprintln!(
        "{shipped} of {passes} passes shipped in {took:?} under attack ({}); exits {outcomes:?}",
        line.trim()
    );
    let r = lab.receiver();
    assert_eq!(shipped, passes, "exits: {outcomes:?}\n{}", r.log_text());
    r.wait_log("that address already holds max_connections_per_ip (8) connections");
}

/// D3, the unauthenticated share, from many addresses: with
/// `max_connections = 8`, connections that have not authenticated hold at
/// most 4 slots. One authenticated keep-alive connection, then eight idle
/// sockets from 127.0.0.2..9 one after another: the first four are closed
/// to admit the last four (every address holds one, so the oldest goes),
/// the authenticated connection is never touched and still answers, and a
/// real `--ping` gets in.
#[test]
fn d3_unauthenticated_connections_hold_at_most_half_and_never_evict_a_host() {
    let dir = TempDir::new("dos-d3-share");
    let pki = TestPki::new(&dir.join("pki"));
    let opts = ReceiverOptions {
        extra: "head_timeout_s = 5\nidle_timeout_s = 30\nmax_connections = 8\n".into(),
        ..ReceiverOptions::tls(&pki, &dir.join("store"))
    };
    let r = Receiver::start(dir.path(), &opts);
    let addr = r.https.unwrap();
    let ident = pki.client("lab-01");
    let cfg = client_config(&pki, &ident);
    let (mut tcp, mut conn) = handshake(addr, &cfg);
    assert!(keepalive_ping(&mut conn, &mut tcp).starts_with("HTTP/1.1 200"));

    let out = crowd(&[
        "line".into(),
        addr.port().to_string(),
        sources(2..=9),
        "3".into(),
        "4".into(),
    ])
    .wait_with_output()
    .unwrap();
    let closed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(closed, "1,1,1,1,0,0,0,0", "{}", r.log_text());

    let again = keepalive_ping(&mut conn, &mut tcp);
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    let ship = shipper_config(
        dir.path(),
        "lab-01",
        &r.url(),
        &pki.ca_file,
        Some(&ident),
        TOKEN_A,
        "",
    );
    assert_exit(&shipper(&ship.config, &["--ping"]), 0);
    r.wait_log("closed the oldest unauthenticated connection from 127.0.0.2 to admit 127.0.0.6");
}

/// `POST /v1/ping` on an open connection, keeping it alive; the answer.
fn keepalive_ping(conn: &mut ClientConnection, tcp: &mut TcpStream) -> String {
    let mut s = rustls::Stream::new(conn, tcp);
    s.write_all(
        format!("POST /v1/ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A receiver with `CIS490_FAULT_AT` set, on TLS, `head_timeout_s = 2`.
fn receiver_with_fault(dir: &TempDir, pki: &TestPki, fault: &str) -> Receiver {
    let opts = ReceiverOptions {
        extra: "head_timeout_s = 2\n".into(),
        ..ReceiverOptions::tls(pki, &dir.join("store"))
    };
    let config = dir.join("receiver.toml");
    write_file(&config, &opts.render(), 0o644);
    Receiver::start_with_config(&config, true, false, &[("CIS490_FAULT_AT", fault)])
}

/// Whether the receiver closes a fresh connection without a word, at once.
fn closed_at_once(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true; // the listener is gone
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    match s.read(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// D9, transient: one thread that cannot be started (EAGAIN, as from a
/// pids limit) closes that one connection; the accept loop lives on and the
/// next connection, a real `--ping`, is served.
#[test]
fn d9_one_failed_thread_spawn_closes_one_connection_and_serving_goes_on() {
    let dir = TempDir::new("dos-d9-once");
    let pki = TestPki::new(&dir.join("pki"));
    let mut r = receiver_with_fault(&dir, &pki, "recv.spawn:EAGAIN@1");
    let addr = r.https.unwrap();
    assert!(closed_at_once(addr), "the first connection had no thread");
    r.wait_log("cannot start a thread for the connection from 127.0.0.1");
    let ident = pki.client("lab-01");
    let ship = shipper_config(
        dir.path(),
        "lab-01",
        &r.url(),
        &pki.ca_file,
        Some(&ident),
        TOKEN_A,
        "",
    );
    assert_exit(&shipper(&ship.config, &["--ping"]), 0);
    assert!(r.child.try_wait().unwrap().is_none(), "the receiver exited");
}

/// D9, persistent: when no thread can be started at all, the receiver does
/// not sit on a listener that serves nobody (before: a panic in the accept
/// thread closed the listener and the process lived on, so systemd never
/// restarted it). It logs why and exits non-zero within the give-up time.
#[test]
fn d9_persistently_failing_thread_spawns_end_the_process_non_zero() {
    let dir = TempDir::new("dos-d9-always");
    let pki = TestPki::new(&dir.join("pki"));
    let mut r = receiver_with_fault(&dir, &pki, "recv.spawn:EAGAIN");
    let addr = r.https.unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still running after {:?}:\n{}",
            t.elapsed(),
            r.log_text()
        );
        // A client retrying: each attempt is closed without an answer.
        assert!(closed_at_once(addr));
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("exited {status} after {:?}", t.elapsed());
    assert_eq!(status.code(), Some(70), "{}", r.log_text());
    r.wait_log("starting a thread has failed");
    r.wait_log("exiting so that systemd restarts the receiver");
}
