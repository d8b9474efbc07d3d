//! Configuration errors: exit 78, naming the file and the key, for both
//! binaries; and the command lines' usage errors (64).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn shipper_base(dir: &Path) -> (String, std::path::PathBuf) {
    let token = dir.join("token");
    write_file(&token, "tok\n", 0o600);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let base = format!(
        "host_id = \"lab-01\"\ndata_dir = \"{}\"\nreceiver = \"https://127.0.0.1:9\"\ntoken_file = \"{}\"\n",
        dir.join("data").display(),
        token.display()
    );
    (base, token)
}

/// (what to change, key the error must name, words it must contain)
#[test]
fn shipper_config_errors_are_78_and_name_the_key() {
    let dir = TempDir::new("cfg-shipper");
    let (base, _) = shipper_base(dir.path());
    let loose = dir.join("loose-token");
    write_file(&loose, "tok\n", 0o644);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace("host_id = \"lab-01\"\n", ""),
            "host_id",
            "required",
        ),
        (
            base.replace("\"lab-01\"", "\"../etc\""),
            "host_id",
            "not a valid id",
        ),
        (
            base.replace("https://127.0.0.1:9", "http://127.0.0.1:9"),
            "receiver",
            "https://",
        ),
        (
            base.replace("https://127.0.0.1:9", "https://127.0.0.1:99999"),
            "receiver",
            "port",
        ),
        (
            format!("{base}io_timout_s = 5\n"),
            "io_timout_s",
            "unknown key",
        ),
        (
            format!("{base}compression_level = 30\n"),
            "compression_level",
            "1 to 19",
        ),
        (
            format!("{base}compression_level = \"3\"\n"),
            "compression_level",
            "number",
        ),
        (
            format!("{base}connect_timeout_s = 0\n"),
            "connect_timeout_s",
            "1 to 86400",
        ),
        (
            format!("{base}cert_file = \"/x.crt\"\n"),
            "key_file",
            "cert_file is set",
        ),
        (
            format!("{base}key_file = \"/x.key\"\n"),
            "cert_file",
            "key_file is set",
        ),
        (
            base.replace(dir.join("token").to_str().unwrap(), loose.to_str().unwrap()),
            "token_file",
            "chmod 600",
        ),
        (
            base.replace(dir.join("token").to_str().unwrap(), "/nonexistent/token"),
            "token_file",
            "No such file",
        ),
        (format!("{base}host_id = \"again\"\n"), "", "set twice"),
        ("host_id = = 1\n".to_owned(), "", "not valid TOML"),
    ];
    for (i, (text, key, words)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("s{i}.toml"));
        write_file(&cfg, text, 0o644);
        let out = shipper(&cfg, &["--once"]);
        assert_exit(&out, 78);
        let err = stderr(&out);
        assert!(
            err.contains(cfg.to_str().unwrap()),
            "case {i}: file not named: {err}"
        );
        if !key.is_empty() {
            assert!(
                err.contains(&format!("key `{key}`")),
                "case {i}: key {key} not named: {err}"
            );
        }
        assert!(err.contains(words), "case {i}: {words:?} missing: {err}");
    }
    let out = shipper(&dir.join("missing.toml"), &["--ping"]);
    assert_exit(&out, 78);
    assert!(
        stderr(&out).contains("cannot read the configuration file"),
        "{}",
        describe(&out)
    );
}

#[test]
fn shipper_bad_certificate_files_are_78_naming_the_file() {
    let dir = TempDir::new("cfg-certs");
    let (base, _) = shipper_base(dir.path());
    let garbage = dir.join("garbage.pem");
    write_file(&garbage, "not a certificate\n", 0o644);
    let pki = TestPki::new(&dir.join("pki"));
    let a = pki.client("lab-01");
    let b = pki.client("lab-02");
    let cases = [
        (
            format!("{base}ca_file = \"{}\"\n", garbage.display()),
            "garbage.pem",
        ),
        (
            format!("{base}ca_file = \"/nonexistent/ca.crt\"\n"),
            "/nonexistent/ca.crt",
        ),
        (
            format!(
                "{base}cert_file = \"{}\"\nkey_file = \"{}\"\n",
                a.cert.display(),
                b.key.display()
            ),
            "does not match",
        ),
        (
            format!(
                "{base}cert_file = \"{}\"\nkey_file = \"{}\"\n",
                a.cert.display(),
                garbage.display()
            ),
            "no PEM private key",
        ),
    ];
    for (i, (text, words)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("c{i}.toml"));
        write_file(&cfg, text, 0o644);
        let out = shipper(&cfg, &["--ping"]);
        assert_exit(&out, 78);
        assert!(stderr(&out).contains(words), "case {i}: {}", describe(&out));
    }
}

#[test]
fn receiver_config_errors_are_78_and_name_the_key() {
    let dir = TempDir::new("cfg-receiver");
    let pki = TestPki::new(&dir.join("pki"));
    let hash = token_hash(TOKEN_A);
    let base = format!(
        "listen = \"127.0.0.1:0\"\nstore_dir = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        dir.join("store").display(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_file.display()
    );
    let hosts = format!("[hosts]\n\"lab-01\" = \"{hash}\"\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{base}listen_plain = \"0.0.0.0:8080\"\n{hosts}"),
            "listen_plain",
            "loopback",
        ),
        (
            format!("{base}listen_plain = \"[::]:8080\"\n{hosts}"),
            "listen_plain",
            "loopback",
        ),
        (
            format!("{}{hosts}", base.replace("127.0.0.1:0", "localhost:80")),
            "listen",
            "IP address",
        ),
        (
            format!("{}{hosts}", base.replace("listen = \"127.0.0.1:0\"\n", "")),
            "listen",
            "required",
        ),
        (
            format!(
                "{}{hosts}",
                base.replace(
                    &format!("cert_file = \"{}\"\n", pki.server_cert.display()),
                    ""
                )
            ),
            "cert_file",
            "required",
        ),
        (
            format!("{base}max_connections = 0\n{hosts}"),
            "max_connections",
            "1 to 4096",
        ),
        (format!("{base}bogus = 1\n{hosts}"), "bogus", "unknown key"),
        (base.clone(), "hosts", "no hosts"),
        (
            format!("{base}[hosts]\n\"lab-01\" = \"{}\"\n", hash.to_uppercase()),
            "hosts.lab-01",
            "64 lowercase hex",
        ),
        (
            format!("{base}[hosts]\n\"lab_01\" = \"{hash}\"\n"),
            "hosts.lab_01",
            "DNS names",
        ),
        (
            format!("{base}[hosts]\n\"../x\" = \"{hash}\"\n"),
            "hosts.../x",
            "not a valid host id",
        ),
        (
            format!("{base}[hosts]\n\"a\" = \"{hash}\"\n\"b\" = \"{hash}\"\n"),
            "hosts.b",
            "same token hash",
        ),
        (
            format!("{base}[hosts]\n\"a\" = \"{hash}\"\n\"a\" = \"{hash}\"\n"),
            "",
            "set twice",
        ),
    ];
    for (i, (text, key, words)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("r{i}.toml"));
        write_file(&cfg, text, 0o644);
        let out = run(Command::new(RECEIVER).arg("--config").arg(&cfg));
        assert_exit(&out, 78);
        let err = stderr(&out);
        if !key.is_empty() {
            assert!(
                err.contains(&format!("key `{key}`")),
                "case {i}: key {key} not named: {err}"
            );
        }
        assert!(err.contains(words), "case {i}: {words:?} missing: {err}");
    }
    // Without client_ca_file, ids that are not DNS names are fine (token only).
    let ok = format!(
        "listen_plain = \"127.0.0.1:0\"\nstore_dir = \"{}\"\n[hosts]\n\"lab_01\" = \"{hash}\"\n",
        dir.join("store").display()
    );
    let cfg = dir.join("ok.toml");
    write_file(&cfg, &ok, 0o644);
    let r = Receiver::start_with_config(&cfg, false, true, &[]);
    assert!(r.http.unwrap().ip().is_loopback());
}

#[test]
fn usage_errors_are_64_and_help_is_complete() {
    let out = run(Command::new(SHIPPER).arg("--bogus"));
    assert_exit(&out, 64);
    let out = run(&mut Command::new(SHIPPER));
    assert_exit(&out, 64);
    assert!(stderr(&out).contains("--once"), "{}", describe(&out));
    let out = run(Command::new(SHIPPER).arg("--help"));
    assert_exit(&out, 0);
    let help = stdout(&out);
    for key in [
        "--once",
        "--ping",
        "--config",
        "host_id",
        "data_dir",
        "receiver",
        "ca_file",
        "cert_file",
        "token_file",
        "compression_level",
        "compression_threads",
        "connect_timeout_s",
        "io_timeout_s",
        "65",
        "69",
        "75",
        "77",
        "78",
    ] {
        assert!(help.contains(key), "--help lacks {key}");
    }
    let out = run(Command::new(SHIPPER).arg("--version"));
    assert_eq!(
        stdout(&out).trim(),
        format!("cis490-shipper {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(Command::new(RECEIVER).arg("--version"));
    assert_eq!(
        stdout(&out).trim(),
        format!("cis490-receiver {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(Command::new(RECEIVER).arg("--nope"));
    assert_exit(&out, 64);
}

#[test]
fn receiver_stops_cleanly_on_sigterm() {
    let dir = TempDir::new("cfg-sigterm");
    let pki = TestPki::new(&dir.join("pki"));
    let r = Receiver::start(dir.path(), &ReceiverOptions::tls(&pki, &dir.join("store")));
    unsafe_kill(r.child.id() as i32, "TERM");
    r.wait_log("SIGTERM received");
    r.wait_log("stopped");
    let mut r = r;
    let status = r.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn under_journald_every_line_carries_a_priority() {
    let dir = TempDir::new("cfg-journal");
    let (base, _) = shipper_base(dir.path());
    let cfg = dir.join("bad.toml");
    write_file(&cfg, &format!("{base}bogus = 1\n"), 0o644);
    let out = shipper_env(&cfg, &["--once"], &[("JOURNAL_STREAM", "8:12345")]);
    assert_exit(&out, 78);
    let err = stderr(&out);
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(
            line.starts_with("<3>") || line.starts_with("<4>") || line.starts_with("<6>"),
            "{line:?}"
        );
    }
    assert!(err.starts_with("<3>"), "an error is priority 3: {err}");
    // Without journald: a plain, self-describing line.
    let out = shipper(&cfg, &["--once"]);
    assert!(
        stderr(&out).starts_with("cis490-shipper: error: "),
        "{}",
        describe(&out)
    );
}
