//! The receiver's S3 store (issue 13) against a real one-node Ceph RGW
//! (`tests/common/ceph.rs`): real receivers publishing to one bucket, real
//! shippers over mTLS, objects read back with the tests' own S3 client.
//! Skipped, saying why, where Ceph is not installed (`CIS490_REQUIRE_CEPH=1`
//! makes that a failure, as in `.ci/run`).
//!
//! The receivers run with `CIS490_HOLD_DIR` (src/fault.rs): a file named
//! after a crash point in that directory stops a receiver there until the
//! test deletes it. That is how two receivers are lined up to name one
//! episode at the same moment, and how a spooled upload is changed after
//! its verification.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cis490::sigv4::Payload;
use common::ceph::{Ceph, Reply};
use common::episodes::make_episode;
use common::fs::{extract, names, snapshot, Mtimes};
use common::raw;
use common::*;

const BUCKET: &str = "cis490";
const PREFIX: &str = "lab/";
/// The lowered single-PUT limit (S3's smallest part): episodes above it go
/// by multipart upload.
const SINGLE_PUT: u64 = 5 << 20;
/// Bytes of an episode whose tarball is well above `SINGLE_PUT` (its camera
/// frames do not compress): about 9.6 MB, two parts.
const LARGE: u64 = 16_000_000;

/// One cluster, a bucket, a test PKI and the S3 secret in a 0600 file.
struct Rig {
    ceph: Ceph,
    dir: TempDir,
    pki: TestPki,
    secret: PathBuf,
    /// `CIS490_HOLD_DIR` of every receiver started here.
    holds: PathBuf,
}

/// A receiver of the rig: its config, spool and metrics file.
struct Node {
    name: String,
    config: PathBuf,
    spool: PathBuf,
    metrics: PathBuf,
    proc: Option<Receiver>,
}

impl Node {
    fn r(&self) -> &Receiver {
        self.proc.as_ref().expect("receiver running")
    }

    fn url(&self) -> String {
        self.r().url()
    }

    fn count(&self, needle: &str) -> usize {
        self.r()
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until `needle` has been logged more than `before`
    /// times.
    fn wait_count(&self, needle: &str, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(needle) <= before {
            assert!(
                Instant::now() < deadline,
                "{}: never logged {needle:?} (again):\n{}",
                self.name,
                self.r().log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts (or restarts: SIGKILL first) the receiver with `env`.
    fn start(&mut self, holds: &Path, env: &[(&str, &str)]) {
        self.proc = None;
        let holds = holds.to_string_lossy().into_owned();
        let mut all = vec![("CIS490_HOLD_DIR", holds.as_str())];
        all.extend_from_slice(env);
        self.proc = Some(Receiver::start_with_config(&self.config, true, true, &all));
    }

    /// The metrics file after a clean stop (written at shutdown).
    fn stop_for_metrics(&mut self) -> String {
        let r = self.proc.take().expect("receiver running");
        assert!(r.stop().success(), "{} did not stop cleanly", self.name);
        std::fs::read_to_string(&self.metrics).expect("metrics file")
    }

    /// Upload files in the spool (partials and temps) for lab-01.
    fn spooled(&self) -> Vec<String> {
        names(&self.spool.join("lab-01"))
    }
}

impl Rig {
    fn start(test: &str) -> Option<Rig> {
        let ceph = Ceph::start_or_skip(test)?;
        eprintln!("{test}: Ceph RGW up in {} ms", ceph.startup.as_millis());
        let r = ceph.request(
            "PUT",
            &format!("/{BUCKET}"),
            &[],
            &[],
            b"",
            Payload::of(b""),
        );
        assert_eq!(r.status, 200, "create bucket: {r:?}");
        let dir = TempDir::new(test);
        let pki = TestPki::new(&dir.join("pki"));
        let secret = dir.join("s3.secret");
        write_file(&secret, &format!("{}\n", ceph.secret_key), 0o600);
        let holds = dir.join("holds");
        std::fs::create_dir_all(&holds).unwrap();
        Some(Rig {
            ceph,
            dir,
            pki,
            secret,
            holds,
        })
    }

    fn s3_toml(&self, bucket: &str, secret: &Path) -> String {
        format!(
            "s3_endpoint = \"{}\"\ns3_bucket = \"{bucket}\"\ns3_prefix = \"{PREFIX}\"\n\
             s3_region = \"{}\"\ns3_access_key_id = \"{}\"\ns3_secret_key_file = \"{}\"\n\
             s3_max_single_put_bytes = {SINGLE_PUT}\nmax_body_bytes = 1073741824\n",
            self.ceph.endpoint,
            self.ceph.region,
            self.ceph.access_key,
            secret.display()
        )
    }

    /// A receiver config named `name` (TLS for shippers, plain for raw
    /// requests), publishing to the bucket; not started.
    fn node(&self, name: &str) -> Node {
        let home = self.dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let spool = home.join("spool");
        let metrics = home.join("receiver.prom");
        let mut opts = ReceiverOptions::tls(&self.pki, &spool);
        opts.listen_plain = Some("127.0.0.1:0".into());
        opts.extra = format!(
            "{}metrics_file = \"{}\"\n",
            self.s3_toml(BUCKET, &self.secret),
            metrics.display()
        );
        let config = home.join("receiver.toml");
        write_file(&config, &opts.render(), 0o644);
        Node {
            name: name.to_owned(),
            config,
            spool,
            metrics,
            proc: None,
        }
    }

    fn started(&self, name: &str) -> Node {
        let mut n = self.node(name);
        n.start(&self.holds, &[]);
        n
    }

    /// A shipper for `host` in its own directory `name`, pointed at `url`.
    fn shipper(&self, name: &str, host: &str, url: &str) -> ShipperSetup {
        self.shipper_with(name, host, url, "")
    }

    /// The same, with `extra` lines in its config.
    fn shipper_with(&self, name: &str, host: &str, url: &str, extra: &str) -> ShipperSetup {
        let home = self.dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let token = if host == "lab-01" { TOKEN_A } else { TOKEN_B };
        let ident = self.pki.client(host);
        shipper_config(
            &home,
            host,
            url,
            &self.pki.ca_file,
            Some(&ident),
            token,
            extra,
        )
    }

    fn hold(&self, point: &str) {
        write_file(&self.holds.join(point), "", 0o644);
    }

    fn release(&self, point: &str) {
        std::fs::remove_file(self.holds.join(point)).unwrap();
    }

    fn get(&self, key: &str) -> Reply {
        let path = format!("/{BUCKET}/{key}");
        self.ceph
            .request("GET", &path, &[], &[], b"", Payload::of(b""))
    }

    /// Every key in the bucket, sorted.
    fn keys(&self) -> Vec<String> {
        let r = self.ceph.request(
            "GET",
            &format!("/{BUCKET}"),
            &[("list-type", "2"), ("max-keys", "1000")],
            &[],
            b"",
            Payload::of(b""),
        );
        assert_eq!(r.status, 200, "list: {r:?}");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    fn name_key(host: &str, id: &str) -> String {
        format!("{PREFIX}{host}/{id}.tar.zst.sha256")
    }

    /// What the bucket holds under an id: the digest the name object
    /// records and the data object's bytes (`None`: no name).
    fn published(&self, host: &str, id: &str) -> Option<(String, Vec<u8>)> {
        let name = self.get(&Rig::name_key(host, id));
        if name.status == 404 {
            return None;
        }
        assert_eq!(name.status, 200, "GET name of {host}/{id}: {name:?}");
        let line = String::from_utf8(name.body.clone()).unwrap();
        let hex = line.split_whitespace().next().unwrap().to_owned();
        assert_eq!(line, format!("{hex}  {id}.tar.zst\n"), "sha256sum format");
        assert_eq!(
            name.headers.get("x-amz-meta-cis490-sha256"),
            Some(hex.as_str())
        );
        let data = self.get(&format!("{PREFIX}_data/sha256/{hex}.tar.zst"));
        assert_eq!(
            data.status, 200,
            "GET data of {host}/{id}: {:?}",
            data.headers
        );
        assert_eq!(raw::hex_of(&data.body), hex, "the data object's bytes");
        Some((hex, data.body))
    }

    /// Extracts a published episode and compares it with its source tree.
    fn assert_round_trip(&self, host: &str, id: &str, source: &Snapshot) {
        let (_, bytes) = self
            .published(host, id)
            .unwrap_or_else(|| panic!("{host}/{id} not published"));
        let file = self.dir.join(&format!("{host}-{id}.tar.zst"));
        std::fs::write(&file, &bytes).unwrap();
        let x = self.dir.join(&format!("x-{host}-{id}"));
        extract(&file, &x);
        assert_eq!(names(&x), [id.to_string()]);
        assert_eq!(
            &snapshot(&x.join(id), Mtimes::Seconds),
            source,
            "{host}/{id}: the published tarball extracts to another tree"
        );
    }
}

type Snapshot = std::collections::BTreeMap<String, String>;

fn once(cfg: &ShipperSetup) -> Output {
    shipper(&cfg.config, &["--once"])
}

fn spawn_once(cfg: &ShipperSetup) -> Child {
    Command::new(SHIPPER)
        .arg("--config")
        .arg(&cfg.config)
        .arg("--once")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cis490-shipper")
}

fn source(cfg: &ShipperSetup, id: &str) -> Snapshot {
    snapshot(&cfg.data_dir.join("episodes").join(id), Mtimes::Seconds)
}

fn check_config(config: &Path) -> Output {
    run(Command::new(RECEIVER)
        .arg("--config")
        .arg(config)
        .arg("--check-config"))
}

/// Two receivers, one bucket, shippers uploading while packing (the
/// default): episodes shipped through either are published once, byte for
/// byte; a re-ship is 200; the same id with other bytes through both at the
/// same moment is one 201 and one 409, for a single PUT and for a multipart
/// upload, and with the same bytes one 201 and one 200 (the loser's 412 on
/// the name, compared); a name whose data object is missing or of another
/// length is a 503, never a 200; a body that does not match its digest, at
/// the receiver or (changed on the spool's disk) at the store, creates
/// nothing. `--check-config` checks the bucket; the metrics count the
/// store's requests.
#[test]
fn two_receivers_share_one_bucket_with_the_same_guarantees() {
    let Some(rig) = Rig::start("s3-two") else {
        return;
    };
    let started = Instant::now();
    let mut a = rig.started("recv-a");
    let b = rig.started("recv-b");
    for n in [&a, &b] {
        n.r()
            .wait_log(&format!("publishing to s3://{BUCKET}/{PREFIX} at"));
    }

    // --check-config: a signed HEAD of the bucket.
    let out = check_config(&a.config);
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&a.config).unwrap();
    let wrong = rig.dir.join("wrong.secret");
    write_file(&wrong, "not-the-secret\n", 0o600);
    for (what, from, to, needle) in [
        (
            "a wrong secret",
            rig.secret.display().to_string(),
            wrong.display().to_string(),
            "403",
        ),
        (
            "a missing bucket",
            format!("s3_bucket = \"{BUCKET}\""),
            "s3_bucket = \"no-such-bucket\"".to_owned(),
            "create s3_bucket",
        ),
    ] {
        let cfg = rig.dir.join("variant.toml");
        write_file(&cfg, &text.replacen(&from, &to, 1), 0o644);
        let out = check_config(&cfg);
        assert_exit(&out, 78);
        assert!(stderr(&out).contains(needle), "{what}: {}", describe(&out));
    }
    let loose = rig.dir.join("loose.secret");
    write_file(&loose, &format!("{}\n", rig.ceph.secret_key), 0o644);
    let cfg = rig.dir.join("variant.toml");
    write_file(
        &cfg,
        &text.replacen(
            &rig.secret.display().to_string(),
            &loose.display().to_string(),
            1,
        ),
        0o644,
    );
    let out = check_config(&cfg);
    assert_exit(&out, 78);
    assert!(
        stderr(&out).contains("s3_secret_key_file") && stderr(&out).contains("chmod 600"),
        "{}",
        describe(&out)
    );

    // Two hosts, each through its own receiver; one episode by multipart.
    let one = rig.shipper("ship-1", "lab-01", &a.url());
    let two = rig.shipper("ship-2", "lab-02", &b.url());
    make_episode(&one.data_dir, "ep-1", 300_000, 1, true);
    make_episode(&one.data_dir, "ep-big", LARGE, 2, true);
    make_episode(&two.data_dir, "ep-1", 200_000, 3, true);
    let sources = [
        ("lab-01", "ep-1", source(&one, "ep-1")),
        ("lab-01", "ep-big", source(&one, "ep-big")),
        ("lab-02", "ep-1", source(&two, "ep-1")),
    ];
    for (cfg, eps) in [(&one, 2), (&two, 1)] {
        let out = once(cfg);
        assert_exit(&out, 0);
        // Uploaded while packing (the default): chunked PUTs, each spooled
        // as a keyed partial and published once its trailer's digest was
        // verified.
        let streamed = stderr(&out)
            .lines()
            .filter(|l| l.contains(": stored: ") && l.contains("packed and uploaded in"))
            .count();
        assert_eq!(streamed, eps, "{}", describe(&out));
    }
    for (host, id, src) in &sources {
        rig.assert_round_trip(host, id, src);
    }
    let (_, big) = rig.published("lab-01", "ep-big").unwrap();
    assert!(
        big.len() as u64 > SINGLE_PUT,
        "ep-big is {} bytes",
        big.len()
    );
    assert!(
        a.spooled().is_empty(),
        "the spool keeps nothing once published: {:?}",
        a.spooled()
    );

    // Re-shipped through the other receiver: 200, nothing written.
    let one_b = rig.shipper("ship-1", "lab-01", &b.url());
    std::fs::rename(
        one.data_dir.join("shipped/ep-1"),
        one.data_dir.join("episodes/ep-1"),
    )
    .unwrap();
    let keys = rig.keys();
    let out = once(&one_b);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("ep-1: already present"),
        "{}",
        describe(&out)
    );
    assert_eq!(rig.keys(), keys, "a re-ship writes nothing");

    // The same id, other bytes, through both receivers at the same moment:
    // both hold after writing their data, before naming it.
    for (id, bytes) in [("ep-race", 400_000), ("ep-race-big", LARGE)] {
        // Shippers of their own each round: a loser's quarantined id
        // would make its next pass exit 65 too.
        let x = rig.shipper(&format!("x-{id}"), "lab-01", &a.url());
        let y = rig.shipper(&format!("y-{id}"), "lab-01", &b.url());
        make_episode(&x.data_dir, id, bytes, 10, true);
        make_episode(&y.data_dir, id, bytes, 11, true);
        let (srcx, srcy) = (source(&x, id), source(&y, id));
        rig.hold("s3.after_data");
        let (ha, hb) = (a.count("HOLDPOINT"), b.count("HOLDPOINT"));
        let (cx, cy) = (spawn_once(&x), spawn_once(&y));
        a.wait_count("HOLDPOINT s3.after_data", ha);
        b.wait_count("HOLDPOINT s3.after_data", hb);
        rig.release("s3.after_data");
        let (ox, oy) = (
            cx.wait_with_output().unwrap(),
            cy.wait_with_output().unwrap(),
        );
        let codes = [ox.status.code(), oy.status.code()];
        assert!(
            codes == [Some(0), Some(65)] || codes == [Some(65), Some(0)],
            "{id}: one stored, one conflict:\n{}\n{}",
            describe(&ox),
            describe(&oy)
        );
        let (won, src) = if codes[0] == Some(0) {
            (&ox, &srcx)
        } else {
            (&oy, &srcy)
        };
        assert!(stderr(won).contains("stored"), "{}", describe(won));
        let lost = if codes[0] == Some(0) { &oy } else { &ox };
        assert!(stderr(lost).contains("conflict"), "{}", describe(lost));
        rig.assert_round_trip("lab-01", id, src);
        // The quarantined copy stays with its shipper; no third state.
        let loser = if codes[0] == Some(0) { &y } else { &x };
        assert!(loser
            .data_dir
            .join(format!("outbox/{id}.conflict"))
            .exists());
    }
    let put_lines = |n: &Node, code: &str| {
        n.r()
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" PUT /v1/episodes/lab-01/ep-race") && l.contains(code))
            .count()
    };
    assert_eq!(
        put_lines(&a, " 201 ") + put_lines(&b, " 201 "),
        2,
        "one 201 per raced id"
    );
    assert_eq!(put_lines(&a, " 409 ") + put_lines(&b, " 409 "), 2);

    // The same id, the same bytes, through both receivers at the same
    // moment (raw PUTs lined up between data and name): one creates the
    // name (201); the other's conditional create gets 412, it reads the
    // name, finds its own digest: 200.
    let same = raw::noise(200_000, 12);
    let head = raw::put_head("ep-same", &same);
    let mut req = head.clone().into_bytes();
    req.extend_from_slice(&same);
    rig.hold("s3.after_data");
    let (ha, hb) = (a.count("HOLDPOINT"), b.count("HOLDPOINT"));
    let racers: Vec<_> = [a.r().http.unwrap(), b.r().http.unwrap()]
        .into_iter()
        .map(|addr| {
            let req = req.clone();
            std::thread::spawn(move || raw::exchange(addr, &req))
        })
        .collect();
    a.wait_count("HOLDPOINT s3.after_data", ha);
    b.wait_count("HOLDPOINT s3.after_data", hb);
    rig.release("s3.after_data");
    let answers: Vec<String> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut codes: Vec<u16> = answers.iter().map(|r| raw::status_of(r)).collect();
    codes.sort();
    assert_eq!(codes, [200, 201], "{answers:?}");
    let (hex, bytes) = rig.published("lab-01", "ep-same").unwrap();
    assert_eq!(
        (hex.as_str(), bytes),
        (raw::hex_of(&same).as_str(), same.clone())
    );

    // A name is believed only while its data object is there with the
    // length it names: missing, or of another length, the answer is 503
    // (never a 200 that lets a shipper delete its copy); restored, 200.
    // Each decided from the head: the request sends none of its body.
    let data = format!("/{BUCKET}/{PREFIX}_data/sha256/{hex}.tar.zst");
    let ask = || raw::exchange(a.r().http.unwrap(), head.as_bytes());
    let gone = rig
        .ceph
        .request("DELETE", &data, &[], &[], b"", Payload::of(b""));
    assert_eq!(gone.status, 204, "{gone:?}");
    let short = &same[..1000];
    for (what, held) in [("missing", "none"), ("of another length", "1000")] {
        if held == "1000" {
            let r = rig
                .ceph
                .request("PUT", &data, &[], &[], short, Payload::of(short));
            assert_eq!(r.status, 200, "{r:?}");
        }
        let resp = ask();
        assert_eq!(raw::status_of(&resp), 503, "data object {what}: {resp}");
        assert!(resp.contains("unavailable"), "{resp}");
        assert_eq!(raw::field(&resp, "Retry-After"), Some("60"), "{resp}");
        let log = a.r().log_text();
        assert!(
            log.contains(&format!(
                "names 200000 bytes, but the data object holds {held}"
            )),
            "{what}: {log}"
        );
    }
    let r = rig
        .ceph
        .request("PUT", &data, &[], &[], &same, Payload::of(&same));
    assert_eq!(r.status, 200, "{r:?}");
    let resp = ask();
    assert_eq!(raw::status_of(&resp), 200, "restored: {resp}");

    // A body that does not match its digest: refused by the receiver,
    // nothing reaches the store.
    let keys = rig.keys();
    let body = raw::noise(100_000, 7);
    let mut req = raw::put_head("ep-bad", &raw::noise(100_000, 8)).into_bytes();
    req.extend_from_slice(&body);
    let resp = raw::exchange(a.r().http.unwrap(), &req);
    assert_eq!(raw::status_of(&resp), 400, "{resp}");
    assert!(resp.contains("digest_mismatch"), "{resp}");
    assert_eq!(rig.keys(), keys, "nothing created");

    // The spooled upload changed on disk after it was verified: the store
    // checks what it receives against the digest (single PUT:
    // x-amz-content-sha256) or the receiver against the parts it hashed
    // (multipart), and nothing is created. The next pass ships it.
    for (id, bytes) in [("ep-flip", 300_000), ("ep-flip-big", LARGE)] {
        let f = rig.shipper("flip", "lab-01", &a.url());
        make_episode(&f.data_dir, id, bytes, 20, true);
        let src = source(&f, id);
        let keys = rig.keys();
        rig.hold("recv.after_tmp_fsync");
        let held = a.count("HOLDPOINT recv.after_tmp_fsync");
        let child = spawn_once(&f);
        a.wait_count("HOLDPOINT recv.after_tmp_fsync", held);
        let spooled: Vec<String> = a
            .spooled()
            .into_iter()
            .filter(|n| n.starts_with(&format!(".partial-{id}.")))
            .collect();
        assert_eq!(spooled.len(), 1, "{spooled:?}");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(a.spool.join("lab-01").join(&spooled[0]))
            .unwrap();
        let len = file.metadata().unwrap().len();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, len - 10).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], len - 10).unwrap();
        drop(file);
        rig.release("recv.after_tmp_fsync");
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 75);
        assert_eq!(rig.keys(), keys, "{id}: nothing created from changed bytes");
        let log = a.r().log_text();
        assert!(
            log.contains("XAmzContentSHA256Mismatch")
                || log.contains("no longer has the sha256 it was verified to have"),
            "{log}"
        );
        let out = once(&f);
        assert_exit(&out, 0);
        rig.assert_round_trip("lab-01", id, &src);
    }

    // The store's requests, counted.
    let metrics = a.stop_for_metrics();
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert!(sample("cis490_receiver_s3_requests_total{op=\"put_part\",outcome=\"ok\"}") >= 2.0);
    assert!(
        sample("cis490_receiver_s3_requests_total{op=\"complete_multipart\",outcome=\"ok\"}")
            >= 1.0
    );
    assert!(sample("cis490_receiver_s3_requests_total{op=\"put_name\",outcome=\"ok\"}") >= 2.0);
    assert!(
        sample("cis490_receiver_s3_requests_total{op=\"put_data\",outcome=\"client_error\"}")
            >= 1.0
    );
    assert!(
        sample("cis490_receiver_s3_requests_total{op=\"abort_multipart\",outcome=\"ok\"}") >= 1.0
    );
    assert!(sample("cis490_receiver_s3_sent_bytes_total") > 2.0 * SINGLE_PUT as f64);
    assert!(sample("cis490_receiver_s3_last_success_timestamp_seconds") > 0.0);
    assert!(sample("cis490_receiver_s3_request_seconds_total{op=\"put_part\"}") > 0.0);
    // The race's 412 is either receiver's; together they saw both.
    drop(b);
    eprintln!(
        "two_receivers_share_one_bucket_with_the_same_guarantees: {:.1}s after the cluster was up",
        started.elapsed().as_secs_f64()
    );
}

/// How the shipper sends an episode it packs in the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `upload_while_packing = false`: a durable tarball, then one `PUT`
    /// of known length.
    PackFirst,
    /// Upload while packing (the default): a chunked `PUT` with the
    /// digest in its trailer, into the keyed partial its `Upload-Key`
    /// names in the receiver's spool.
    Stream,
}

impl Mode {
    fn extra(self) -> &'static str {
        match self {
            Mode::PackFirst => "upload_while_packing = false\n",
            Mode::Stream => "",
        }
    }
}

/// A receiver SIGKILLed while it receives or publishes an upload (mid-body
/// or mid-stream, halfway through a data object or a part, or between the
/// data and the name), for either way the shipper sends it, leaves nothing
/// visible under the episode's name; the shipper's next pass completes it,
/// and a verified spool means no byte is received twice. The store
/// stopped: 503, the shipper exits 75 and keeps everything; once it is
/// back, everything ships.
#[test]
fn crashes_and_outages_never_lose_or_half_publish_an_episode() {
    let Some(rig) = Rig::start("s3-crash") else {
        return;
    };
    let started = Instant::now();
    let mut a = rig.node("recv-a");
    // The receiver's crash points that an upload into the store passes, in
    // order, on each path (recv.after_publish and recv.after_dir_fsync are
    // the local store's), the store's own for both ways of sending the
    // bytes to it (one PUT; multipart above SINGLE_PUT). Each pass is one
    // upload request per episode, so the first hit of each point is that
    // episode's.
    let points = [
        (Mode::PackFirst, "recv.after_head", 300_000),
        (Mode::PackFirst, "recv.mid_body", 300_000),
        (Mode::PackFirst, "recv.after_tmp_fsync", 300_000),
        (Mode::PackFirst, "s3.mid_data", 300_000),
        (Mode::PackFirst, "s3.mid_data", LARGE),
        (Mode::PackFirst, "s3.after_data", LARGE),
        (Mode::PackFirst, "s3.after_data", 300_000),
        (Mode::PackFirst, "recv.before_response", 300_000),
        (Mode::Stream, "recv.after_head", 300_000),
        // Killed once the first chunk is in the spool, the rest of a
        // multipart-sized episode still being packed and sent.
        (Mode::Stream, "recv.mid_chunked", LARGE),
        (Mode::Stream, "recv.after_trailer", 300_000),
        (Mode::Stream, "recv.after_tmp_fsync", LARGE),
        (Mode::Stream, "s3.mid_data", 300_000),
        (Mode::Stream, "s3.after_data", LARGE),
        (Mode::Stream, "recv.before_response", 300_000),
    ];
    let mut shipped = Vec::new();
    for (n, (mode, point, bytes)) in points.into_iter().enumerate() {
        // Sorted as shipped: `shipped/` is compared with the list below.
        let id = format!("ep-{n:02}");
        let case = format!("{point} {mode:?} {id}");
        a.start(&rig.holds, &[("CIS490_CRASH_AT", point)]);
        let cfg = rig.shipper_with("ship", "lab-01", &a.url(), mode.extra());
        make_episode(&cfg.data_dir, &id, bytes, n as u64, true);
        let src = source(&cfg, &id);
        let out = once(&cfg);
        assert_exit(&out, 75);
        a.r().wait_log(&format!("CRASHPOINT {point}"));
        // Killed before answering, but after the name was created: the one
        // point where the episode is complete in the store already.
        let published = point == "recv.before_response";
        assert_eq!(
            rig.published("lab-01", &id).is_some(),
            published,
            "{case}: visible after the crash?"
        );
        assert_eq!(
            rig.keys().contains(&Rig::name_key("lab-01", &id)),
            published,
            "{case}: a name object?"
        );
        if mode == Mode::Stream && point != "recv.after_head" && !published {
            // The stream went into a keyed partial (`.k<key>`), the
            // spool a streamed upload resumes from.
            let spooled = a.spooled();
            let keyed: Vec<&String> = spooled
                .iter()
                .filter(|f| f.starts_with(&format!(".partial-{id}.k")))
                .collect();
            let [keyed] = keyed[..] else {
                panic!("{case}: one keyed partial expected: {spooled:?}")
            };
            if point == "recv.mid_chunked" {
                // Killed mid-stream: the spool holds a part of the tarball.
                let held = std::fs::metadata(a.spool.join("lab-01").join(keyed))
                    .unwrap()
                    .len();
                let tarball = cfg.data_dir.join(format!("outbox/{id}.tar.zst"));
                let size = std::fs::metadata(&tarball).expect("tarball kept").len();
                assert!(0 < held && held < size, "{case}: {held} of {size} bytes");
            }
        }
        a.start(&rig.holds, &[]);
        let cfg = rig.shipper_with("ship", "lab-01", &a.url(), mode.extra());
        let out = once(&cfg);
        assert_exit(&out, 0);
        let said = if published {
            "already present"
        } else {
            "stored"
        };
        assert!(
            stderr(&out).contains(&format!("{id}: {said}")),
            "{case}: {}",
            describe(&out)
        );
        rig.assert_round_trip("lab-01", &id, &src);
        if point == "recv.mid_chunked" {
            assert!(
                stderr(&out).contains(&format!("{id}: resumed at ")),
                "{case}: {}",
                describe(&out)
            );
        }
        let resumed = match mode {
            // Verified and spooled before the crash: published from the
            // spool by a PATCH that sends no byte again.
            Mode::PackFirst => point == "recv.after_tmp_fsync" || point.starts_with("s3."),
            // Every byte the stream delivered stays spooled: the next pass
            // sends the rest, if any, and the digest.
            Mode::Stream => !published && point != "recv.after_head",
        };
        if resumed {
            assert!(
                a.r()
                    .log_text()
                    .contains(&format!("PATCH /v1/episodes/lab-01/{id} 201")),
                "{case}: the next pass resumed the spool:\n{}",
                a.r().log_text()
            );
        }
        assert!(
            !a.spooled()
                .iter()
                .any(|f| f.starts_with(&format!(".partial-{id}."))),
            "{case}: the spool keeps nothing once published: {:?}",
            a.spooled()
        );
        shipped.push(id);
    }

    // The store is down before an upload: 503 at once, nothing read.
    a.start(&rig.holds, &[]);
    let cfg = rig.shipper("ship", "lab-01", &a.url());
    make_episode(&cfg.data_dir, "ep-out-1", 300_000, 30, true);
    make_episode(&cfg.data_dir, "ep-out-2", LARGE, 31, true);
    let srcs = [source(&cfg, "ep-out-1"), source(&cfg, "ep-out-2")];
    rig.ceph.stop_gateway();
    let out = once(&cfg);
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("object store unavailable"),
        "{}",
        describe(&out)
    );
    // A raw streamed PUT's head, answered the same: 503 unavailable, with
    // when to retry.
    let resp = raw::exchange(
        a.r().http.unwrap(),
        raw::stream_head("ep-raw", "").as_bytes(),
    );
    assert_eq!(raw::status_of(&resp), 503, "{resp}");
    assert!(resp.contains("unavailable"), "{resp}");
    assert_eq!(raw::field(&resp, "Retry-After"), Some("60"), "{resp}");
    // The streamed PUT's head was answered: not a byte of its body read.
    assert!(
        a.r()
            .log_text()
            .contains("PUT /v1/episodes/lab-01/ep-out-1 503 bytes=0 "),
        "{}",
        a.r().log_text()
    );
    assert_eq!(names(&cfg.data_dir.join("shipped")), shipped);

    // The store goes down while an upload is being published (after the
    // receiver verified and spooled it): 503, the spool kept. Once for the
    // PUT of ep-out-1 (packed after the 503), once for a stream (a fresh
    // episode through a shipper of its own): its keyed partial is kept.
    rig.ceph.start_gateway();
    let streaming = rig.shipper("ship-s", "lab-01", &a.url());
    make_episode(&streaming.data_dir, "ep-out-3", 300_000, 32, true);
    let src3 = source(&streaming, "ep-out-3");
    for (cfg, spool) in [
        (&cfg, ".partial-ep-out-1."),
        (&streaming, ".partial-ep-out-3.k"),
    ] {
        rig.hold("recv.after_tmp_fsync");
        let held = a.count("HOLDPOINT recv.after_tmp_fsync");
        let child = spawn_once(cfg);
        a.wait_count("HOLDPOINT recv.after_tmp_fsync", held);
        rig.ceph.stop_gateway();
        rig.release("recv.after_tmp_fsync");
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 75);
        assert!(
            stderr(&out).contains("object store unavailable"),
            "{}",
            describe(&out)
        );
        assert!(
            a.spooled().iter().any(|n| n.starts_with(spool)),
            "the verified upload stays spooled as {spool}*: {:?}",
            a.spooled()
        );
        rig.ceph.start_gateway();
    }
    assert!(
        a.r()
            .log_text()
            .contains("PUT /v1/episodes/lab-01/ep-out-3 503 bytes="),
        "{}",
        a.r().log_text()
    );

    // Back: everything ships; the spooled ones without sending them again.
    let out = once(&cfg);
    assert_exit(&out, 0);
    for (id, src) in ["ep-out-1", "ep-out-2"].iter().zip(&srcs) {
        rig.assert_round_trip("lab-01", id, src);
    }
    let out = once(&streaming);
    assert_exit(&out, 0);
    rig.assert_round_trip("lab-01", "ep-out-3", &src3);
    for id in ["ep-out-1", "ep-out-3"] {
        assert!(
            a.r()
                .log_text()
                .contains(&format!("PATCH /v1/episodes/lab-01/{id} 201 bytes=0 ")),
            "{}",
            a.r().log_text()
        );
    }
    assert!(
        a.spooled().iter().all(|n| !n.starts_with(".partial-")),
        "{:?}",
        a.spooled()
    );
    let metrics = a.stop_for_metrics();
    assert!(
        metrics.contains("outcome=\"unanswered\"} ")
            && !metrics.contains("cis490_receiver_s3_last_failure_timestamp_seconds 0\n"),
        "{metrics}"
    );
    eprintln!(
        "crashes_and_outages_never_lose_or_half_publish_an_episode: {:.1}s after the cluster was up",
        started.elapsed().as_secs_f64()
    );
}
