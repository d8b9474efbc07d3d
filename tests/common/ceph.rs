//! A real, throwaway S3 store for tests: a one-node Ceph cluster with a RADOS
//! Gateway, started by `scripts/ceph-rgw.sh` in a [`TempDir`] and killed (by
//! the PIDs the script recorded) when the [`Ceph`] is dropped.
//!
//! Where Ceph is not installed, or the cluster cannot start on this machine,
//! [`Ceph::start_or_skip`] prints `SKIPPED <test>: <reason>` and the test
//! returns early. `CIS490_REQUIRE_CEPH=1` turns that into a failure, for a
//! machine that is meant to run these tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cis490::http::{parse_response_head, read_head, write_request_head, Headers, Limits};
use cis490::sigv4::{self, Credentials, Payload};

use super::TempDir;

/// What the script's `start` takes at most (it bounds itself at 120 s; this
/// catches a script that hangs anyway).
#[allow(dead_code)]
const START_DEADLINE: Duration = Duration::from_secs(180);
/// The script's exit codes for "packages missing" and "the cluster did not
/// come up".
#[allow(dead_code)]
const EX_SKIP: i32 = 77;
#[allow(dead_code)]
const EX_UNAVAILABLE: i32 = 69;

#[allow(dead_code)]
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-rgw.sh")
}

/// How long a test's request to the gateway may stall.
#[allow(dead_code)]
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer body a test reads.
#[allow(dead_code)]
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// An answer of the gateway, read to the end.
#[allow(dead_code)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.status,
            self.headers.0,
            String::from_utf8_lossy(&self.body[..self.body.len().min(2000)])
        )
    }
}

/// A running gateway and what a client needs to talk to it.
#[allow(dead_code)]
pub struct Ceph {
    /// `127.0.0.1:PORT`, plain HTTP.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// ceph-mon, ceph-osd, radosgw and the watchdog, as the script recorded.
    pub pids: Vec<u32>,
    /// From running the script to the gateway answering HTTP, as the script
    /// measured it.
    pub startup: Duration,
    stopped: bool,
    // Dropped after `drop` ran `stop`; kept on a panic, with the daemons'
    // logs, for the post-mortem.
    dir: TempDir,
}

impl Ceph {
    /// Whether the packages are installed (`Err` says what to install).
    #[allow(dead_code)]
    pub fn available() -> Result<(), String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("check")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Starts a cluster, or prints why it cannot and returns `None` (a
    /// panic instead when `CIS490_REQUIRE_CEPH` is set).
    #[allow(dead_code)]
    pub fn start_or_skip(test: &str) -> Option<Ceph> {
        match Ceph::start() {
            Ok(c) => Some(c),
            Err(why) => {
                if std::env::var_os("CIS490_REQUIRE_CEPH").is_some() {
                    panic!("{test}: Ceph is required (CIS490_REQUIRE_CEPH) but: {why}");
                }
                eprintln!("SKIPPED {test}: {why}");
                None
            }
        }
    }

    /// Starts a cluster in a fresh temp dir. `Err` is a reason to skip:
    /// Ceph is not installed, or the cluster did not come up (the script's
    /// exit 69, with its log tails). Any other failure of the script is a
    /// bug in it or in this fixture, and panics rather than skip.
    #[allow(dead_code)]
    pub fn start() -> Result<Ceph, String> {
        Ceph::available()?;
        // Short: the admin sockets under it must fit a sockaddr_un.
        let dir = TempDir::new("ceph");
        let mut child = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            // The script's watchdog kills the cluster if this test process
            // dies without dropping the fixture (SIGKILL, abort).
            .arg("--owner")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        // Read both pipes on threads so neither can fill up and stall the
        // script while we wait for it.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + START_DEADLINE;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                stop_dir(dir.path());
                return Err(format!(
                    "scripts/ceph-rgw.sh start did not finish within {START_DEADLINE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        match status.code() {
            Some(0) => {}
            Some(EX_SKIP) => return Err(stderr.trim().to_owned()),
            Some(EX_UNAVAILABLE) => {
                // The script cleans up after a failed start; once more by
                // PID in case it was killed half-way.
                stop_dir(dir.path());
                return Err(format!(
                    "the cluster could not start here (scripts/ceph-rgw.sh exit 69):\n{}",
                    stderr.trim()
                ));
            }
            code => {
                stop_dir(dir.path());
                panic!(
                    "scripts/ceph-rgw.sh start failed (exit {code:?}):\n{}\n{}",
                    stdout.trim(),
                    stderr.trim()
                );
            }
        }
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| format!("ceph-rgw.sh printed no {key}=; stdout:\n{stdout}"))
        };
        let endpoint = field("endpoint")?;
        let addr = endpoint
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("bad endpoint {endpoint:?}"))?;
        let ceph = Ceph {
            addr,
            access_key: field("access_key")?,
            secret_key: field("secret_key")?,
            region: field("region")?,
            pids: field("pids")?
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            startup: Duration::from_millis(field("startup_ms")?.parse().unwrap_or(0)),
            endpoint,
            stopped: false,
            dir,
        };
        Ok(ceph)
    }

    #[allow(dead_code)]
    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            region: self.region.clone(),
        }
    }

    /// One signed request on a fresh connection (`Connection: close`), its
    /// answer read to the end: the tests' own S3 client, apart from the
    /// receiver's. `body` is what is sent; `payload` what the signature
    /// claims about it (normally `Payload::of(body)`).
    #[allow(dead_code)]
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        payload: Payload,
    ) -> Reply {
        let host = self.host();
        let len = body.len().to_string();
        let mut signed: Vec<(&str, &str)> = headers.to_vec();
        if method == "PUT" || method == "POST" {
            signed.push(("content-length", &len));
        }
        let req = sigv4::Request {
            method,
            host: &host,
            path,
            query,
            headers: &signed,
            payload,
        };
        let added = sigv4::sign(&req, &self.credentials(), SystemTime::now()).expect("sign");
        let mut all = signed.clone();
        all.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        all.push(("connection", "close"));
        let head = write_request_head(method, &sigv4::target(path, query), &host, &all);

        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(&head).expect("send head");
        s.write_all(body).expect("send body");
        let mut buf = Vec::new();
        let limits = Limits::default();
        let n = read_head(&mut s, &mut buf, &limits, &mut || Ok(()))
            .expect("read answer head")
            .expect("an answer, not a close");
        let resp = parse_response_head(&buf[..n], &limits).expect("parse answer head");
        let mut rest = buf[n..].to_vec();
        if method != "HEAD" {
            (&mut s)
                .take(MAX_BODY)
                .read_to_end(&mut rest)
                .expect("read answer body");
        }
        let body = if method == "HEAD" {
            Vec::new()
        } else if resp.headers.has_token("transfer-encoding", "chunked") {
            dechunk(&rest)
        } else if let Some(cl) = resp.headers.get("content-length") {
            let cl: usize = cl.parse().expect("numeric Content-Length");
            assert!(
                rest.len() >= cl,
                "answer body cut short: {} < {cl}",
                rest.len()
            );
            rest.truncate(cl);
            rest
        } else {
            rest
        };
        Reply {
            status: resp.status,
            headers: resp.headers,
            body,
        }
    }

    /// The `Host` header for requests to the gateway.
    #[allow(dead_code)]
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An outage: SIGKILLs the gateway only (`ceph-rgw.sh gateway-stop`);
    /// its port refuses connections once this returns.
    #[allow(dead_code)]
    pub fn stop_gateway(&self) {
        self.gateway("gateway-stop");
    }

    /// Starts the gateway again on the same port, with the same users and
    /// buckets; returns once it answers HTTP.
    #[allow(dead_code)]
    pub fn start_gateway(&self) {
        self.gateway("gateway-start");
    }

    #[allow(dead_code)]
    fn gateway(&self, command: &str) {
        let out = Command::new("bash")
            .arg(script())
            .arg(command)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run ceph-rgw.sh");
        assert!(
            out.status.success(),
            "ceph-rgw.sh {command}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the cluster now (Drop does the same).
    #[allow(dead_code)]
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if !self.stopped {
            self.stopped = true;
            stop_dir(self.dir.path());
        }
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// `ceph-rgw.sh stop DIR`: SIGKILLs the PIDs recorded in DIR, no others.
#[allow(dead_code)]
fn stop_dir(dir: &Path) {
    if !dir.join("pids").exists() {
        return;
    }
    let out = Command::new("bash")
        .arg(script())
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "ceph-rgw.sh stop {}: {:?}: {}",
            dir.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("cannot run ceph-rgw.sh stop: {e}"),
    }
}

/// A chunked body (RGW sends its XML answers so), trailers ignored.
#[allow(dead_code)]
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let line = std::str::from_utf8(&b[..eol]).expect("ASCII chunk size");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
