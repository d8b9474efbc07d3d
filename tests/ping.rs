//! `--ping` end to end: the real receiver and shipper over mTLS on loopback.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::*;

#[test]
fn ping_succeeds_and_reports_each_stage() {
    let s = Lab::new("ping-ok");
    let id = s.pki.client("lab-01");
    let out = s.ping_as(Some(&id), TOKEN_A);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for stage in [
        "resolve   localhost",
        "connect   ",
        "tls       ",
        "auth      authenticated as lab-01",
        "ok        ",
    ] {
        assert!(text.contains(stage), "missing {stage:?} in:\n{text}");
    }
    assert!(
        text.contains("server certificate CN=cis490-receiver, expires 20"),
        "{text}"
    );
    assert!(text.contains("client certificate sent"), "{text}");
    // Ping writes nothing.
    let stored: Vec<_> = std::fs::read_dir(s.dir.join("store")).unwrap().collect();
    assert!(stored.is_empty());
    s.receiver().wait_log("host=lab-01 POST /v1/ping 200");
}

#[test]
fn ping_over_ipv6_loopback() {
    let s = Lab::new("ping-v6");
    let id = s.pki.client("lab-01");
    // The receiver listens on 127.0.0.1 only; a second one on ::1 if the
    // machine has IPv6 loopback at all.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    }
    let mut opts = ReceiverOptions::tls(&s.pki, &s.dir.join("store6"));
    opts.listen = Some("[::1]:0".into());
    let dir6 = TempDir::new("ping-v6-recv");
    let r6 = Receiver::start(dir6.path(), &opts);
    let url = format!("https://[::1]:{}", r6.https.unwrap().port());
    let cfg = shipper_config(
        s.dir.path(),
        "lab-01",
        &url,
        &s.pki.ca_file,
        Some(&id),
        TOKEN_A,
        "",
    );
    let out = shipper(&cfg.config, &["--ping"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("[::1]:"), "{}", describe(&out));
}

#[test]
fn wrong_token_is_77() {
    let s = Lab::new("ping-badtoken");
    let id = s.pki.client("lab-01");
    let out = s.ping_as(Some(&id), "not-a-known-token");
    assert_exit(&out, 77);
    assert!(
        stdout(&out).contains("FAILED at auth: receiver answered 401"),
        "{}",
        describe(&out)
    );
}

#[test]
fn token_of_one_host_with_certificate_of_another_is_77() {
    let s = Lab::new("ping-crossed");
    let cert_b = s.pki.client("lab-02");
    let out = s.ping_as(Some(&cert_b), TOKEN_A);
    assert_exit(&out, 77);
    assert!(stdout(&out).contains("403"), "{}", describe(&out));
    s.receiver().wait_log("host=lab-01 POST /v1/ping 403");
}

#[test]
fn wildcard_client_certificate_never_authorises() {
    let dir = TempDir::new("ping-wild");
    let pki = TestPki::new(&dir.join("pki"));
    let mut opts = ReceiverOptions::tls(&pki, &dir.join("store"));
    opts.hosts = vec![("lab-01.robots.example".into(), token_hash(TOKEN_A))];
    let receiver = Receiver::start(dir.path(), &opts);
    let wild = pki.client_with_sans("wild", &["*.robots.example"]);
    let cfg = shipper_config(
        dir.path(),
        "lab-01.robots.example",
        &receiver.url(),
        &pki.ca_file,
        Some(&wild),
        TOKEN_A,
        "",
    );
    let out = shipper(&cfg.config, &["--ping"]);
    assert_exit(&out, 77);
    assert!(stdout(&out).contains("wildcard"), "{}", describe(&out));
    let exact = pki.client("lab-01.robots.example");
    let cfg = shipper_config(
        dir.path(),
        "lab-01.robots.example",
        &receiver.url(),
        &pki.ca_file,
        Some(&exact),
        TOKEN_A,
        "",
    );
    assert_exit(&shipper(&cfg.config, &["--ping"]), 0);
}

#[test]
fn foreign_ca_client_certificate_is_refused_in_the_handshake() {
    let s = Lab::new("ping-foreign");
    let foreign = s.pki.foreign_client("lab-01");
    let out = s.ping_as(Some(&foreign), TOKEN_A);
    assert_exit(&out, 69);
    let text = stdout(&out);
    assert!(text.contains("FAILED at tls"), "{text}");
    assert!(text.contains("rejected our client certificate"), "{text}");
    s.receiver().wait_log("TLS handshake failed");
}

#[test]
fn missing_client_certificate_is_refused() {
    let s = Lab::new("ping-nocert");
    let out = s.ping_as(None, TOKEN_A);
    assert_exit(&out, 69);
    assert!(
        stdout(&out).contains("requires a client certificate"),
        "{}",
        describe(&out)
    );
}

#[test]
fn server_certificate_for_another_name_is_69_naming_verification() {
    let dir = TempDir::new("ping-wrongname");
    let pki = TestPki::new(&dir.join("pki"));
    let other = pki.server_for("other", &["other.example"]);
    let mut opts = ReceiverOptions::tls(&pki, &dir.join("store"));
    opts.cert = Some((other.cert.clone(), other.key.clone()));
    let receiver = Receiver::start(dir.path(), &opts);
    let id = pki.client("lab-01");
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        &receiver.url(),
        &pki.ca_file,
        Some(&id),
        TOKEN_A,
        "",
    );
    let out = shipper(&cfg.config, &["--ping"]);
    assert_exit(&out, 69);
    let text = stdout(&out);
    assert!(
        text.contains("FAILED at tls: TLS failed: server certificate verification failed"),
        "{text}"
    );
    assert!(text.contains("NotValidForName"), "{text}");
}

#[test]
fn server_certificate_from_an_untrusted_ca_is_69() {
    let s = Lab::new("ping-untrusted");
    let id = s.pki.client("lab-01");
    // Trust a CA that did not issue the receiver's certificate.
    let other_pki = TestPki::new(&s.dir.join("other-pki"));
    let cfg = shipper_config(
        s.dir.path(),
        "lab-01",
        &s.receiver().url(),
        &other_pki.ca_file,
        Some(&id),
        TOKEN_A,
        "",
    );
    let out = shipper(&cfg.config, &["--ping"]);
    assert_exit(&out, 69);
    assert!(
        stdout(&out).contains("server certificate verification failed: UnknownIssuer"),
        "{}",
        describe(&out)
    );
}

#[test]
fn receiver_not_running_is_69_within_the_connect_timeout() {
    let dir = TempDir::new("ping-down");
    let pki = TestPki::new(&dir.join("pki"));
    let id = pki.client("lab-01");
    // A port that was just free: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        &url,
        &pki.ca_file,
        Some(&id),
        TOKEN_A,
        "",
    );
    let t = Instant::now();
    let out = shipper(&cfg.config, &["--ping"]);
    assert!(
        t.elapsed() < Duration::from_secs(3 + 2),
        "took {:?}",
        t.elapsed()
    );
    assert_exit(&out, 69);
    let text = stdout(&out);
    assert!(text.contains("FAILED at connect"), "{text}");
    assert!(
        text.contains("what to check: check that cis490-receiver runs"),
        "{text}"
    );
}

#[test]
fn unresolvable_receiver_is_69_at_resolve() {
    let dir = TempDir::new("ping-dns");
    let pki = TestPki::new(&dir.join("pki"));
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        "https://no-such-host.invalid:8443",
        &pki.ca_file,
        None,
        TOKEN_A,
        "",
    );
    let out = shipper(&cfg.config, &["--ping"]);
    assert_exit(&out, 69);
    assert!(
        stdout(&out).contains("FAILED at resolve"),
        "{}",
        describe(&out)
    );
}

#[test]
fn curl_pings_with_the_same_certificate_and_token() {
    let s = Lab::new("ping-curl");
    let id = s.pki.client("lab-01");
    let port = s.receiver().https.unwrap().port();
    let out = run(Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST"])
        .arg("--cacert")
        .arg(&s.pki.ca_file)
        .arg("--cert")
        .arg(&id.cert)
        .arg("--key")
        .arg(&id.key)
        .arg("-H")
        .arg(format!("Authorization: Bearer {TOKEN_A}"))
        .arg(format!("https://localhost:{port}/v1/ping")));
    assert!(out.status.success(), "{}", describe(&out));
    let body = stdout(&out);
    assert!(
        body.contains("\"status\":\"ok\"") && body.contains("\"host_id\":\"lab-01\""),
        "{body}"
    );
    assert!(body.contains("\"server_time\":\"20"), "{body}");
}

#[test]
fn secrets_never_appear_in_output() {
    let s = Lab::new("ping-secrets");
    let id = s.pki.client("lab-01");
    let key_pem = std::fs::read_to_string(&id.key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    let mut outputs = Vec::new();
    for (token, ident) in [
        (TOKEN_A, Some(&id)),
        ("wrong-token-zzz", Some(&id)),
        (TOKEN_A, None),
    ] {
        let cfg = shipper_config(
            s.dir.path(),
            "lab-01",
            &s.receiver().url(),
            &s.pki.ca_file,
            ident,
            token,
            "",
        );
        let out = shipper_env(
            &cfg.config,
            &["--ping"],
            &[("SSLKEYLOGFILE", s.dir.join("keylog").to_str().unwrap())],
        );
        outputs.push(format!("{}{}", stdout(&out), stderr(&out)));
        let out = shipper(&cfg.config, &["--once"]);
        outputs.push(format!("{}{}", stdout(&out), stderr(&out)));
    }
    outputs.push(s.receiver().log_text());
    for text in &outputs {
        for secret in [TOKEN_A, "wrong-token-zzz", "PRIVATE KEY", key_line.as_str()] {
            assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
        }
    }
    assert!(
        !s.dir.join("keylog").exists(),
        "SSLKEYLOGFILE must be ignored"
    );
}

/// T9: certificate verification is never switched off, anywhere.
#[test]
fn no_dangerous_verifier_in_the_source() {
    fn walk(dir: &std::path::Path, hits: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, hits);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or_default();
                    if code.contains(".dangerous()") || code.contains("allow_unauthenticated") {
                        hits.push(format!("{}:{}", p.display(), n + 1));
                    }
                }
            }
        }
    }
    let mut hits = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut hits,
    );
    assert!(hits.is_empty(), "{hits:?}");
}

/// Behind a TLS-terminating proxy, the loopback plain listener identifies by
/// token alone, while the TLS listener of the same receiver still binds the
/// certificate to the host.
#[test]
fn plain_listener_next_to_mtls_identifies_by_token() {
    let dir = TempDir::new("ping-both");
    let pki = TestPki::new(&dir.join("pki"));
    let mut opts = ReceiverOptions::tls(&pki, &dir.join("store"));
    opts.listen_plain = Some("127.0.0.1:0".into());
    let r = Receiver::start(dir.path(), &opts);
    let plain = r.http.unwrap();
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {TOKEN_A}"))
        .arg(format!("http://{plain}/v1/ping")));
    assert_eq!(stdout(&out), "200", "{}", describe(&out));
    let crossed = pki.client("lab-02");
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        &r.url(),
        &pki.ca_file,
        Some(&crossed),
        TOKEN_A,
        "",
    );
    assert_exit(&shipper(&cfg.config, &["--ping"]), 77);
}
