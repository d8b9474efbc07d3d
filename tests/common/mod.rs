//! Shared helpers for the end-to-end tests: a throwaway PKI, temp dirs,
//! config files, and the real binaries run as child processes on loopback.
//!
//! Readiness is the receiver's own `listening on https://ADDR` line read
//! from its stderr pipe, never a sleep.

pub mod ceph;
pub mod episodes;
pub mod forwarder;
pub mod fs;
pub mod lab;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

#[allow(dead_code)]
pub const SHIPPER: &str = env!("CARGO_BIN_EXE_cis490-shipper");
#[allow(dead_code)]
pub const RECEIVER: &str = env!("CARGO_BIN_EXE_cis490-receiver");

/// A unique directory, removed on drop unless the test panicked (so a
/// failure leaves its evidence) or KEEP_TEST_DIRS is set.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cis490-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    #[allow(dead_code)]
    pub fn path(&self) -> &Path {
        &self.0
    }

    #[allow(dead_code)]
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[allow(dead_code)]
pub fn write_file(path: &Path, contents: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[allow(dead_code)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[allow(dead_code)]
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

#[allow(dead_code)]
fn make_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

#[allow(dead_code)]
fn leaf(ca: &Ca, sans: &[&str], cn: &str, client: bool) -> (String, String) {
    leaf_dated(ca, sans, cn, client, (2025, 1, 1), (2035, 1, 1))
}

/// A date as (year, month, day).
#[allow(dead_code)]
pub type Ymd = (i32, u8, u8);

/// (year, month, day) `days` from today (negative: ago), UTC.
#[allow(dead_code)]
pub fn ymd_from_now(days: i64) -> Ymd {
    let t = std::time::SystemTime::now();
    let t = if days >= 0 {
        t + Duration::from_secs(days as u64 * 86_400)
    } else {
        t - Duration::from_secs((-days) as u64 * 86_400)
    };
    let s = cis490::timefmt::rfc3339(t);
    (
        s[0..4].parse().unwrap(),
        s[5..7].parse().unwrap(),
        s[8..10].parse().unwrap(),
    )
}

#[allow(dead_code)]
fn leaf_dated(
    #[allow(dead_code)] ca: &Ca,
    sans: &[&str],
    cn: &str,
    client: bool,
    not_before: Ymd,
    not_after: Ymd,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The test PKI: a lab CA, a server certificate for localhost, 127.0.0.1
/// and ::1, client certificates on demand, and a foreign CA.
#[allow(dead_code)]
pub struct TestPki {
    #[allow(dead_code)]
    ca: Ca,
    #[allow(dead_code)]
    foreign: Ca,
    #[allow(dead_code)]
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        static N: AtomicU32 = AtomicU32::new(0);
        // Distinct names, so two test CAs are never mistaken for each other.
        let ca = make_ca(&format!(
            "cis490 test CA {}",
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let foreign = make_ca("someone else's CA");
        std::fs::create_dir_all(dir).unwrap();
        let ca_file = dir.join("ca.crt");
        write_file(&ca_file, &ca.cert.pem(), 0o644);
        let (c, k) = leaf(
            &ca,
            &["localhost", "127.0.0.1", "::1"],
            "cis490-receiver",
            false,
        );
        let server_cert = dir.join("server.crt");
        let server_key = dir.join("server.key");
        write_file(&server_cert, &c, 0o644);
        write_file(&server_key, &k, 0o600);
        TestPki {
            ca,
            foreign,
            #[allow(dead_code)]
            dir: dir.to_owned(),
            ca_file,
            server_cert,
            server_key,
        }
    }

    #[allow(dead_code)]
    fn write_pair(&self, name: &str, (c, k): (String, String)) -> Identity {
        let cert = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        write_file(&cert, &c, 0o644);
        write_file(&key, &k, 0o600);
        Identity { cert, key }
    }

    /// A client certificate naming `host_id`, from the lab CA.
    #[allow(dead_code)]
    pub fn client(&self, host_id: &str) -> Identity {
        self.write_pair(
            &format!("client-{host_id}"),
            leaf(&self.ca, &[host_id], host_id, true),
        )
    }

    /// A client certificate from the lab CA valid between two dates.
    #[allow(dead_code)]
    pub fn client_dated(
        &self,
        name: &str,
        sans: &[&str],
        not_before: Ymd,
        not_after: Ymd,
    ) -> Identity {
        self.write_pair(
            name,
            leaf_dated(&self.ca, sans, name, true, not_before, not_after),
        )
    }

    /// A client certificate with arbitrary SANs, from the lab CA.
    #[allow(dead_code)]
    pub fn client_with_sans(&self, name: &str, sans: &[&str]) -> Identity {
        self.write_pair(name, leaf(&self.ca, sans, name, true))
    }

    /// A client certificate naming `host_id`, from a CA the receiver does not trust.
    #[allow(dead_code)]
    pub fn foreign_client(&self, host_id: &str) -> Identity {
        self.write_pair(
            &format!("foreign-{host_id}"),
            leaf(&self.foreign, &[host_id], host_id, true),
        )
    }

    /// A server certificate for names other than the ones the shipper uses.
    #[allow(dead_code)]
    pub fn server_for(&self, name: &str, sans: &[&str]) -> Identity {
        self.write_pair(name, leaf(&self.ca, sans, name, false))
    }
}

#[allow(dead_code)]
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Receiver configuration for a test, rendered to TOML.
#[allow(dead_code)]
pub struct ReceiverOptions {
    pub listen: Option<String>,
    pub listen_plain: Option<String>,
    pub store_dir: PathBuf,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub client_ca: Option<PathBuf>,
    pub hosts: Vec<(String, String)>,
    pub extra: String,
}

impl ReceiverOptions {
    /// TLS on 127.0.0.1:0 with client certificates required, two hosts.
    #[allow(dead_code)]
    pub fn tls(pki: &TestPki, store_dir: &Path) -> ReceiverOptions {
        ReceiverOptions {
            listen: Some("127.0.0.1:0".into()),
            listen_plain: None,
            store_dir: store_dir.to_owned(),
            cert: Some((pki.server_cert.clone(), pki.server_key.clone())),
            client_ca: Some(pki.ca_file.clone()),
            hosts: vec![
                ("lab-01".into(), token_hash(TOKEN_A)),
                ("lab-02".into(), token_hash(TOKEN_B)),
            ],
            extra: String::new(),
        }
    }

    /// Plain HTTP on 127.0.0.1:0 (the proxy setup), token-only, hosts
    /// `lab-01` (TOKEN_A) and `HostA` (TOKEN_B).
    #[allow(dead_code)]
    pub fn plain(store_dir: &Path) -> ReceiverOptions {
        ReceiverOptions {
            listen: None,
            listen_plain: Some("127.0.0.1:0".into()),
            store_dir: store_dir.to_owned(),
            cert: None,
            client_ca: None,
            hosts: vec![
                ("lab-01".into(), token_hash(TOKEN_A)),
                ("HostA".into(), token_hash(TOKEN_B)),
            ],
            extra: String::new(),
        }
    }

    #[allow(dead_code)]
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(l) = &self.listen {
            s += &format!("listen = \"{l}\"\n");
        }
        if let Some(l) = &self.listen_plain {
            s += &format!("listen_plain = \"{l}\"\n");
        }
        s += &format!("store_dir = \"{}\"\n", self.store_dir.display());
        if let Some((c, k)) = &self.cert {
            s += &format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                c.display(),
                k.display()
            );
        }
        if let Some(ca) = &self.client_ca {
            s += &format!("client_ca_file = \"{}\"\n", ca.display());
        }
        s += &self.extra;
        s += "\n[hosts]\n";
        for (h, hash) in &self.hosts {
            s += &format!("\"{h}\" = \"{hash}\"\n");
        }
        s
    }
}

#[allow(dead_code)]
pub const TOKEN_A: &str = "token-for-lab-01-aaaaaaaaaaaaaaaaaaaaaaaa";
#[allow(dead_code)]
pub const TOKEN_B: &str = "token-for-lab-02-bbbbbbbbbbbbbbbbbbbbbbbb";

/// A running cis490-receiver; killed (by PID) when dropped.
#[allow(dead_code)]
pub struct Receiver {
    pub child: Child,
    #[allow(dead_code)]
    pub https: Option<SocketAddr>,
    #[allow(dead_code)]
    pub http: Option<SocketAddr>,
    #[allow(dead_code)]
    pub log: Arc<Mutex<Vec<String>>>,
    #[allow(dead_code)]
    pub config: PathBuf,
}

impl Receiver {
    #[allow(dead_code)]
    pub fn start(dir: &Path, opts: &ReceiverOptions) -> Receiver {
        let config = dir.join("receiver.toml");
        write_file(&config, &opts.render(), 0o644);
        Receiver::start_with_config(
            &config,
            opts.listen.is_some(),
            opts.listen_plain.is_some(),
            &[],
        )
    }

    #[allow(dead_code)]
    pub fn start_with_config(
        #[allow(dead_code)] config: &Path,
        tls: bool,
        plain: bool,
        env: &[(&str, &str)],
    ) -> Receiver {
        let mut cmd = Command::new(RECEIVER);
        cmd.arg("--config").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Receiver::start_command(cmd, config, tls, plain)
    }

    /// Starts `cmd` (the receiver, or a wrapper such as strace that runs it
    /// and passes its stderr through) and waits for its listeners.
    pub fn start_command(mut cmd: Command, config: &Path, tls: bool, plain: bool) -> Receiver {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start cis490-receiver");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("SHOW_RECEIVER_LOG").is_some() {
                    eprintln!("[receiver] {line}");
                }
                let _ = tx.send(line.clone());
                log2.lock().unwrap().push(line);
            }
        });
        let (mut https, mut http) = (None, None);
        while (tls && https.is_none()) || (plain && http.is_none()) {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "receiver did not report readiness; log: {:#?}",
                        log.lock().unwrap()
                    );
                }
            };
            if let Some(a) = line.split("listening on https://").nth(1) {
                https = Some(a.trim().parse().unwrap());
            }
            if let Some(a) = line.split("listening on http://").nth(1) {
                http = Some(a.trim().parse().unwrap());
            }
        }
        Receiver {
            child,
            https,
            http,
            log,
            #[allow(dead_code)]
            config: config.to_owned(),
        }
    }

    #[allow(dead_code)]
    pub fn url(&self) -> String {
        format!(
            "https://localhost:{}",
            self.https.expect("TLS listener").port()
        )
    }

    #[allow(dead_code)]
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle` (bounded).
    #[allow(dead_code)]
    pub fn wait_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "receiver log never contained {needle:?}:\n{}",
            self.log_text()
        );
    }

    #[allow(dead_code)]
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        send_signal(pid, "TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1): the tests have no libc of their own to call.
#[allow(dead_code)]
pub fn send_signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A shipper configuration for a test.
#[allow(dead_code)]
pub struct ShipperSetup {
    #[allow(dead_code)]
    pub config: PathBuf,
    #[allow(dead_code)]
    pub data_dir: PathBuf,
}

#[allow(dead_code)]
pub fn shipper_config(
    #[allow(dead_code)] dir: &Path,
    host_id: &str,
    receiver_url: &str,
    #[allow(dead_code)] ca: &Path,
    ident: Option<&Identity>,
    token: &str,
    extra: &str,
) -> ShipperSetup {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let token_file = dir.join(format!("{host_id}.token"));
    write_file(&token_file, &format!("{token}\n"), 0o600);
    let mut s = format!(
        "host_id = \"{host_id}\"\ndata_dir = \"{}\"\nreceiver = \"{receiver_url}\"\nca_file = \"{}\"\ntoken_file = \"{}\"\nconnect_timeout_s = 3\nio_timeout_s = 10\n",
        data_dir.display(),
        ca.display(),
        token_file.display()
    );
    if let Some(id) = ident {
        s += &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            id.cert.display(),
            id.key.display()
        );
    }
    s += extra;
    let config = dir.join(format!("shipper-{host_id}.toml"));
    write_file(&config, &s, 0o644);
    ShipperSetup { config, data_dir }
}

/// Runs the shipper to completion.
#[allow(dead_code)]
pub fn shipper(config: &Path, args: &[&str]) -> Output {
    shipper_env(config, args, &[])
}

#[allow(dead_code)]
pub fn shipper_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SHIPPER);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cis490-shipper")
}

/// The shipper left running, its output piped.
#[allow(dead_code)]
pub fn spawn_shipper(config: &Path, args: &[&str]) -> std::process::Child {
    Command::new(SHIPPER)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cis490-shipper")
}

#[allow(dead_code)]
pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts an exit code, printing everything on failure.
#[track_caller]
#[allow(dead_code)]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit\n{}",
        describe(out)
    );
}

#[allow(dead_code)]
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[allow(dead_code)]
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command and returns its output, failing the test if it cannot start.
#[allow(dead_code)]
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command with stdin closed and a deadline: a process still running
/// after `limit` is killed (by its PID) and the test fails, so a hang shows
/// up as a failure instead of a test run that never ends.
#[allow(dead_code)]
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    try_run_bounded(cmd, limit).unwrap_or_else(|hang| panic!("{hang}"))
}

/// `run_bounded`, with a hang returned as an error (after the kill).
#[allow(dead_code)]
pub fn try_run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap();
            return Err(format!(
                "{cmd:?} was still running after {limit:?} and was killed; stderr:\n{}",
                String::from_utf8_lossy(&err)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

/// A named pipe (FIFO) at `path`, with mkfifo(1).
#[allow(dead_code)]
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}
