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

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

/// A TLS client config trusting the test CA, presenting `ident`.
fn client_config(pki: &TestPki, ident: &Identity) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&ident.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&ident.key).unwrap();
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    Arc::new(cfg)
}

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
        extra: format!("head_timeout_s = {HEAD_TIMEOUT}\nmax_connections = 4\n"),
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
