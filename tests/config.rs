//! Configuration errors: exit 78, naming the file and the key, for both
//! binaries; and the command lines' usage errors (64).

mod common;

use std::os::unix::fs::PermissionsExt;
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
    send_signal(r.child.id() as i32, "TERM");
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

/// How long a configuration check may take: a config error is reported in
/// milliseconds; a process still running after this hangs (or, with a
/// config that should have been refused, serves).
const PROMPT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `cmd` (in `dir`, so a relative path lands there) with a deadline
/// and checks exit 78 and that stderr names the file, the key and every
/// word. Returns what went wrong, so a test reports every case at once.
fn check_refused(
    cmd: &mut Command,
    dir: &Path,
    cfg: &Path,
    key: &str,
    words: &[&str],
) -> Result<(), String> {
    let out = try_run_bounded(cmd.current_dir(dir).arg("--config").arg(cfg), PROMPT)?;
    let err = stderr(&out);
    if out.status.code() != Some(78) {
        return Err(format!("not exit 78\n{}", describe(&out)));
    }
    if !err.contains(cfg.to_str().unwrap()) {
        return Err(format!("file not named: {err}"));
    }
    if !err.contains(&format!("key `{key}`")) {
        return Err(format!("key not named: {err}"));
    }
    match words.iter().find(|w| !err.contains(*w)) {
        Some(w) => Err(format!("{w:?} missing: {err}")),
        None => Ok(()),
    }
}

/// D10: values nanoserde would misread, files whose open would hang the
/// shipper, system or relative data dirs and a zstd setting that costs
/// hundreds of MB: each is exit 78, promptly, naming the file, the key, the
/// line where there is one, and what to write instead.
#[test]
fn d10_shipper_config_is_read_faithfully_or_refused() {
    let dir = TempDir::new("cfg-d10-shipper");
    let (base, token) = shipper_base(dir.path());
    let data = dir.join("data");
    let data_line = format!("data_dir = \"{}\"\n", data.display());
    let token_line = format!("token_file = \"{}\"\n", token.display());
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    // Private, as a token must be: only the open can stop at it now.
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let pki = TestPki::new(&dir.join("pki"));
    let id = pki.client("lab-01");
    let set_data = |v: &str| base.replace(&data_line, &format!("data_dir = {v}\n"));
    let set_token = |v: &str| base.replace(&token_line, &format!("token_file = {v}\n"));
    let quoted_token = format!("\"{}\"", token.display());
    let fifo_s = fifo.display().to_string();
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        // nanoserde: `\t` read as `t`, `\u0020` as `u0020`.
        (
            set_data(&format!("\"{}\\tx\"", data.display())),
            "data_dir",
            vec!["line 2", "backslash", "write the character itself"],
        ),
        (
            set_data(&format!("\"{}\\u0020x\"", data.display())),
            "data_dir",
            vec!["line 2", "backslash", "write the character itself"],
        ),
        // nanoserde: "Cannot parse toml tokenizer".
        (
            set_token(&format!("'{}'", token.display())),
            "token_file",
            vec!["line 4", "single-quoted", "double quotes", &quoted_token],
        ),
        // Files that are not regular files; a FIFO used to hang the shipper.
        (
            set_token(&format!("\"{fifo_s}\"")),
            "token_file",
            vec![&fifo_s, "a FIFO (named pipe), not a regular file"],
        ),
        (
            set_token(&format!("\"{}\"", dir.path().display())),
            "token_file",
            vec!["a directory, not a regular file"],
        ),
        (
            set_token("\"/dev/null\""),
            "token_file",
            vec!["/dev/null", "a character device, not a regular file"],
        ),
        (
            format!(
                "{base}cert_file = \"{fifo_s}\"\nkey_file = \"{}\"\n",
                id.key.display()
            ),
            "cert_file",
            vec![&fifo_s, "a FIFO (named pipe), not a regular file"],
        ),
        (
            format!("{base}ca_file = \"{}\"\n", sock.display()),
            "ca_file",
            vec!["a socket, not a regular file"],
        ),
        // Directories the shipper must not fill.
        (
            set_data("\"/usr/\""),
            "data_dir",
            vec!["system directory /usr", "/var/lib/cis490"],
        ),
        (
            set_data("\"//.\""),
            "data_dir",
            vec!["system directory /:", "/var/lib/cis490"],
        ),
        (
            set_data("\"data\""),
            "data_dir",
            vec!["relative path", "/var/lib/cis490"],
        ),
        // Memory: see etc/shipper.toml.example (level 19 with 4 workers
        // took 697 MiB packing a 300 MB episode).
        (
            format!("{base}compression_threads = 8\n"),
            "compression_threads",
            vec!["0 to 4"],
        ),
        (
            format!("{base}compression_level = 19\ncompression_threads = 4\n"),
            "compression_threads",
            vec!["levels 17-19 use at most 1", "etc/shipper.toml.example"],
        ),
        // nanoserde reads 3.0 as 3; TOML says float.
        (
            format!("{base}compression_level = 3.0\n"),
            "compression_level",
            vec!["whole number"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, key, words)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("d{i}.toml"));
        write_file(&cfg, text, 0o644);
        let mut cmd = Command::new(SHIPPER);
        cmd.arg("--ping");
        if let Err(e) = check_refused(&mut cmd, dir.path(), &cfg, key, words) {
            failures.push(format!("case {i} ({key}): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// D10: a byte order mark (Windows editors) and CRLF line ends are read as
/// the plain file they decorate; nanoserde read the BOM as part of the
/// first key ("host_id is required but missing").
#[test]
fn d10_bom_and_crlf_are_read() {
    let dir = TempDir::new("cfg-d10-bom");
    let (base, _) = shipper_base(dir.path());
    for (name, text) in [
        ("bom", format!("\u{feff}{base}")),
        ("crlf", base.replace('\n', "\r\n")),
        (
            "bom-crlf",
            format!("\u{feff}{}", base.replace('\n', "\r\n")),
        ),
    ] {
        let cfg = dir.join(&format!("{name}.toml"));
        write_file(&cfg, &text, 0o644);
        // Nothing to ship: a pass that loads the config and ends, 0.
        let out = run_bounded(
            Command::new(SHIPPER)
                .arg("--config")
                .arg(&cfg)
                .arg("--once"),
            PROMPT,
        );
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("pass done"), "{}", describe(&out));
    }
}

/// D10, the receiver: `store_dir = "/"` (it would create a directory per
/// host in / and delete files in every directory there at each start), and
/// PEM files that would hang it.
#[test]
fn d10_receiver_config_is_read_faithfully_or_refused() {
    let dir = TempDir::new("cfg-d10-receiver");
    let pki = TestPki::new(&dir.join("pki"));
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let fifo_s = fifo.display().to_string();
    let hosts = format!("[hosts]\n\"lab-01\" = \"{}\"\n", token_hash(TOKEN_A));
    let store = dir.join("store");
    let base = format!(
        "listen = \"127.0.0.1:0\"\nstore_dir = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{hosts}",
        store.display(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_file.display()
    );
    let store_line = format!("store_dir = \"{}\"\n", store.display());
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            base.replace(&store_line, "store_dir = \"/\"\n"),
            "store_dir",
            vec!["system directory /:", "/var/lib/cis490-receiver"],
        ),
        (
            base.replace(&store_line, "store_dir = \"/var/\"\n"),
            "store_dir",
            vec!["system directory /var", "/var/lib/cis490-receiver"],
        ),
        (
            base.replace(&store_line, "store_dir = \"store\"\n"),
            "store_dir",
            vec!["relative path", "/var/lib/cis490-receiver"],
        ),
        (
            // Under the test's dir: today's code creates `.../storeu0020`.
            base.replace(
                &store_line,
                &format!("store_dir = \"{}\\u0020\"\n", store.display()),
            ),
            "store_dir",
            vec!["line 2", "backslash"],
        ),
        (
            base.replace(
                &pki.server_key.display().to_string(),
                &fifo.display().to_string(),
            ),
            "key_file",
            vec![&fifo_s, "a FIFO (named pipe), not a regular file"],
        ),
        (
            base.replace(
                &pki.ca_file.display().to_string(),
                &fifo.display().to_string(),
            ),
            "client_ca_file",
            vec![&fifo_s, "a FIFO (named pipe), not a regular file"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, key, words)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("r{i}.toml"));
        write_file(&cfg, text, 0o644);
        let mut cmd = Command::new(RECEIVER);
        if let Err(e) = check_refused(&mut cmd, dir.path(), &cfg, key, words) {
            failures.push(format!("case {i} ({key}): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
