//! Operating a fleet: `--status`, `--once --dry-run`, retention, escalation
//! of a receiver that never answers, and the metrics file read by a real
//! `promtool` and a real `prometheus-node-exporter`.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fs::{names, snapshot, Mtimes};
use common::lab::Lab;
use common::ymd_from_now;
use common::*;

fn days_ago(d: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(d * 86_400)
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| fs::File::open(p))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A lab with an episode in every state: shipped, recording, ready (old),
/// packed, in conflict, and an invalid name.
fn every_state(lab: &Lab) {
    lab.episode("ep-shipped", 60_000, 1);
    assert_exit(&lab.once(), 0);
    // The receiver already holds other bytes under ep-conflict.
    fs::write(lab.host_dir().join("ep-conflict.tar.zst"), b"other bytes").unwrap();
    lab.episode("ep-conflict", 60_000, 4);
    assert_exit(&lab.once(), 65);
    // Packed against a dead receiver, so its tarball waits in outbox/.
    lab.episode("ep-packed", 60_000, 3);
    let port = lab.receiver().https.unwrap().port();
    let dead = lab.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
    assert_exit(&shipper(&dead, &["--once"]), 65);
    common::episodes::make_episode(&lab.cfg.data_dir, "ep-recording", 10_000, 2, false);
    let ready = lab.episode("ep-ready", 60_000, 5);
    set_mtime(&ready.join("done.marker"), days_ago(2));
    let bad = lab.data("episodes/bad name");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("done.marker"), b"").unwrap();
}

#[test]
fn status_reports_every_state_read_only_even_while_a_pass_runs() {
    let lab = Lab::new("op-status");
    every_state(&lab);
    let before = snapshot(&lab.cfg.data_dir, Mtimes::Exact);
    // A pass holds the lock: --status does not care.
    let lock = fs::File::options()
        .write(true)
        .open(lab.data(".lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = shipper(&lab.cfg.config, &["--status", "--json"]);
    assert_exit(&out, 0);
    let json = stdout(&out);
    for want in [
        r#""host_id":"lab-01""#,
        r#""recording":1"#,
        r#""ready":1"#,
        r#""packed":1"#,
        r#""confirmed":0"#,
        r#""in_conflict":1"#,
        r#""invalid_names":1"#,
        r#""shipped":1"#,
        r#""id":"ep-conflict""#,
        r#""receiver_sha256":""#,
        "ep-conflict.conflict",
        r#""exit_code":65"#,
    ] {
        assert!(json.contains(want), "{want} missing from {json}");
    }
    assert_eq!(json.lines().count(), 1, "one JSON object on one line");
    let age: u64 = json
        .split("\"oldest_ready_age_s\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no oldest_ready_age_s in {json}"));
    assert!((2 * 86_400..3 * 86_400).contains(&age), "{age}");
    let table = stdout(&shipper(&lab.cfg.config, &["--status"]));
    for want in [
        "recording          1",
        "ready              1   oldest finished 2d",
        "conflict ep-conflict: ours ",
        "last pass: ",
        "exit 65",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    drop(lock);
    assert_eq!(
        snapshot(&lab.cfg.data_dir, Mtimes::Exact),
        before,
        "--status changed data_dir"
    );
}

#[test]
fn dry_run_writes_nothing_and_connects_nowhere() {
    let lab = Lab::new("op-dry");
    every_state(&lab);
    fs::write(lab.data("outbox/ep-ready.tar.zst.partial"), b"half").unwrap();
    let with_retention = lab.variant(
        "retain",
        "io_timeout_s = 10\n",
        "io_timeout_s = 10\nkeep_shipped_days = 0\n",
    );
    let data = snapshot(&lab.cfg.data_dir, Mtimes::Exact);
    let store = snapshot(&lab.store(), Mtimes::Exact);
    let log_lines = lab.receiver().log.lock().unwrap().len();
    let out = shipper(&with_retention, &["--once", "--dry-run"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for want in [
        "no connection is made",
        "would remove  ",
        "ep-ready.tar.zst.partial (unfinished)",
        "would pack    ep-ready: ",
        "would upload  ep-ready",
        "would upload  ep-packed: ",
        "packed earlier)",
        "would retire  ep-packed -> shipped/",
        "skip          ep-conflict: in conflict",
        "skip          episodes/bad name",
        "would delete  shipped/ep-shipped (shipped 0 day(s) ago, keep_shipped_days = 0",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    assert!(!text.contains("ep-recording"), "{text}");
    assert_eq!(snapshot(&lab.cfg.data_dir, Mtimes::Exact), data);
    assert_eq!(snapshot(&lab.store(), Mtimes::Exact), store);
    assert_eq!(
        lab.receiver().log.lock().unwrap().len(),
        log_lines,
        "the receiver saw something"
    );
}

/// Sets when shipped/<id> was shipped, in its record under receipts/.
fn shipped_days_ago(lab: &Lab, id: &str, d: u64) {
    let p = lab.data(&format!("receipts/{id}"));
    let text = fs::read_to_string(&p).unwrap();
    let when = days_ago(d).duration_since(UNIX_EPOCH).unwrap().as_secs();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("shipped "))
        .collect();
    fs::write(&p, format!("{}\nshipped {when}\n", kept.join("\n"))).unwrap();
}

#[test]
fn retention_deletes_only_shipped_episodes_oldest_first() {
    let lab = Lab::new("op-retain");
    for (i, id) in ["ep-a", "ep-b", "ep-c", "ep-d"].iter().enumerate() {
        lab.episode(id, 40_000, i as u64);
    }
    assert_exit(&lab.once(), 0);
    shipped_days_ago(&lab, "ep-a", 9);
    shipped_days_ago(&lab, "ep-b", 3);
    shipped_days_ago(&lab, "ep-c", 30);
    shipped_days_ago(&lab, "ep-d", 0);
    // Work that is not shipped yet is never touched.
    lab.episode("ep-pending", 40_000, 9);
    let port = lab.receiver().https.unwrap().port();
    let keep5 = lab.variant("keep5", &format!(":{port}\""), &format!(":{}\"", port + 1));
    let text = fs::read_to_string(&keep5).unwrap() + "keep_shipped_days = 5\n";
    write_file(&keep5, &text, 0o644);
    let out = shipper(&keep5, &["--once"]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    let c = err.find("deleted shipped/ep-c (").expect(&err);
    let a = err.find("deleted shipped/ep-a (").expect(&err);
    assert!(c < a, "oldest first:\n{err}");
    assert!(
        err.contains("retention deleted 2 shipped episode(s)"),
        "{err}"
    );
    assert_eq!(names(&lab.data("shipped")), ["ep-b", "ep-d"]);
    assert_eq!(names(&lab.data("receipts")), ["ep-b", "ep-d"]);
    assert_eq!(names(&lab.data("episodes")), ["ep-pending"]);
    assert!(lab.data("outbox/ep-pending.tar.zst").exists());
    // By space: a file system never 99% free deletes every shipped episode,
    // oldest first, and still nothing else.
    let text = fs::read_to_string(&keep5)
        .unwrap()
        .replace("keep_shipped_days = 5\n", "min_free_percent = 99\n");
    write_file(&keep5, &text, 0o644);
    let out = shipper(&keep5, &["--once"]);
    let err = stderr(&out);
    let b = err.find("deleted shipped/ep-b (").expect(&err);
    let d = err.find("deleted shipped/ep-d (").expect(&err);
    assert!(b < d && err.contains("min_free_percent = 99"), "{err}");
    assert!(names(&lab.data("shipped")).is_empty());
    assert_eq!(names(&lab.data("episodes")), ["ep-pending"]);
    // The receiver keeps everything.
    for id in ["ep-a", "ep-b", "ep-c", "ep-d"] {
        assert!(lab.stored(id).exists());
    }
}

#[test]
fn finished_work_waiting_too_long_without_a_verdict_fails_with_69() {
    let lab = Lab::new("op-escalate");
    let ep = lab.episode("ep-1", 40_000, 1);
    set_mtime(&ep.join("done.marker"), days_ago(2));
    let port = lab.receiver().https.unwrap().port();
    let dead = lab.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
    let text = fs::read_to_string(&dead).unwrap() + "alert_after_hours = 1\n";
    write_file(&dead, &text, 0o644);
    // The first pass of a fresh install does not alert: the clock starts now.
    let out = shipper(&dead, &["--once"]);
    assert_exit(&out, 75);
    // The receiver has been silent for two days (the state file says the
    // first pass was then): 69, at error level, saying why.
    let state = lab.data("state.json");
    let two_days = days_ago(2).duration_since(UNIX_EPOCH).unwrap().as_secs();
    let text = fs::read_to_string(&state).unwrap();
    let first = text
        .split("\"first_pass_unix\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .unwrap()
        .to_owned();
    fs::write(
        &state,
        text.replace(
            &format!("\"first_pass_unix\":{first}"),
            &format!("\"first_pass_unix\":{two_days}"),
        ),
    )
    .unwrap();
    let out = shipper(&dead, &["--once"]);
    assert_exit(&out, 69);
    assert!(
        stderr(&out).contains("more than alert_after_hours = 1"),
        "{}",
        describe(&out)
    );
    // Once the receiver answers, all is well again.
    let out = lab.once();
    assert_exit(&out, 0);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn metrics_pass_promtool_and_a_real_node_exporter_scrape() {
    for tool in ["promtool", "prometheus-node-exporter"] {
        assert!(
            have(tool),
            "{tool} not found: apt-get install prometheus prometheus-node-exporter"
        );
    }
    let textfile = TempDir::new("op-metrics-textfile");
    let dir = textfile.path().to_owned();
    let recv_prom = dir.join("cis490_receiver.prom");
    let mut lab = Lab::build("op-metrics")
        .shipper_extra("metrics_file = \"METRICS\"\n")
        .receiver_extra(&format!("metrics_file = \"{}\"\n", recv_prom.display()))
        .start();
    let prom = dir.join("cis490_shipper.prom");
    let text = fs::read_to_string(&lab.cfg.config)
        .unwrap()
        .replace("METRICS", prom.to_str().unwrap());
    write_file(&lab.cfg.config, &text, 0o644);
    lab.episode("ep-1", 80_000, 1);
    lab.episode("ep-2", 80_000, 2);
    assert_exit(&lab.once(), 0);
    let metrics = fs::read_to_string(&prom).unwrap();
    for want in [
        "cis490_shipper_last_pass_exit_code 0",
        "cis490_shipper_last_pass_episodes{outcome=\"stored\"} 2",
        "cis490_shipper_episodes{state=\"shipped\"} 2",
        "cis490_shipper_conflicts 0",
        "# TYPE cis490_shipper_last_pass_timestamp_seconds gauge",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
    // The receiver writes its file every 10 s and at shutdown.
    let status = lab.receiver.take().unwrap().stop();
    assert!(status.success(), "{status:?}");
    let recv = fs::read_to_string(&recv_prom).unwrap();
    for want in [
        "cis490_receiver_answers_total{code=\"201\",status=\"stored\"} 2",
        "cis490_receiver_episodes{host=\"lab-01\"} 2",
        "# TYPE cis490_receiver_answers_total counter",
        "cis490_receiver_store_free_bytes ",
        "cis490_receiver_certificate_expiry_timestamp_seconds 2051222400",
    ] {
        assert!(recv.contains(want), "{want} missing from\n{recv}");
    }
    for file in [&prom, &recv_prom] {
        let check = run(Command::new("sh")
            .args(["-c", "promtool check metrics < \"$1\"", "sh"])
            .arg(file));
        assert!(check.status.success(), "promtool: {}", describe(&check));
    }

    let port = free_port();
    let mut exporter = Command::new("prometheus-node-exporter")
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!("--collector.textfile.directory={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus-node-exporter");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let out = run(Command::new("curl").args(["-sf", &url]));
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "node exporter never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = exporter.kill();
    let _ = exporter.wait();
    assert!(scrape.contains("node_textfile_scrape_error 0"), "{scrape}");
    assert!(
        scrape.contains("cis490_shipper_last_pass_episodes{outcome=\"stored\"} 2"),
        "{scrape}"
    );
    assert!(
        scrape.contains("cis490_receiver_episodes{host=\"lab-01\"} 2"),
        "{scrape}"
    );
}

#[test]
fn example_alert_rules_pass_promtool() {
    assert!(
        have("promtool"),
        "promtool not found: apt-get install prometheus"
    );
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/cis490.rules.yml");
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("SUCCESS: 6 rules found"),
        "{}",
        describe(&out)
    );
}

/// `--check-config` lists every problem in one run: a key that does not
/// match its certificate, a certificate that expired and names another
/// host, a token others may read.
#[test]
fn check_config_lists_every_problem_in_one_run() {
    let lab = Lab::new("op-check");
    assert_exit(&shipper(&lab.cfg.config, &["--check-config"]), 0);
    let stale = lab
        .pki
        .client_dated("stale", &["lab-02"], ymd_from_now(-400), ymd_from_now(-2));
    let other_key = lab.pki.client("lab-03").key;
    let text = fs::read_to_string(&lab.cfg.config)
        .unwrap()
        .replace(
            lab.ident.cert.to_str().unwrap(),
            stale.cert.to_str().unwrap(),
        )
        .replace(lab.ident.key.to_str().unwrap(), other_key.to_str().unwrap());
    write_file(&lab.cfg.config, &text, 0o644);
    let token = lab.dir.join("lab-01.token");
    set_mode(&token, 0o644);
    let out = shipper(&lab.cfg.config, &["--check-config"]);
    assert_exit(&out, 78);
    let err = stderr(&out);
    for want in [
        "key `key_file`",
        "does not match",
        "the certificate expired on",
        "host_id is `lab-01`",
        "key `token_file`",
        "chmod 600",
        "4 problem(s)",
    ] {
        assert!(err.contains(want), "{want:?} missing from\n{err}");
    }
    // Nothing was written: not even the data_dir's subdirectories.
    assert!(names(&lab.cfg.data_dir).is_empty());
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A certificate that expires in 5 days: a warning naming the date, exit 0;
/// and the same warning at the start of a pass, which still ships.
#[test]
fn a_certificate_expiring_within_14_days_is_a_warning() {
    let lab = Lab::new("op-expiring");
    let soon = ymd_from_now(5);
    let id = lab
        .pki
        .client_dated("soon", &["lab-01"], ymd_from_now(-30), soon);
    let text = fs::read_to_string(&lab.cfg.config)
        .unwrap()
        .replace(lab.ident.cert.to_str().unwrap(), id.cert.to_str().unwrap())
        .replace(lab.ident.key.to_str().unwrap(), id.key.to_str().unwrap());
    write_file(&lab.cfg.config, &text, 0o644);
    let date = format!("{:04}-{:02}-{:02}", soon.0, soon.1, soon.2);
    let out = shipper(&lab.cfg.config, &["--check-config"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains(&format!("expires on {date}")),
        "{err}"
    );
    lab.episode("ep-1", 30_000, 1);
    let out = lab.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("expires on {date}")),
        "{}",
        describe(&out)
    );
}

#[test]
fn receiver_check_config() {
    let lab = Lab::new("op-recv-check");
    let config = lab.dir.join("receiver.toml");
    let out = run(Command::new(RECEIVER)
        .arg("--config")
        .arg(&config)
        .arg("--check-config"));
    assert_exit(&out, 0);
    let text = fs::read_to_string(&config).unwrap().replace(
        lab.pki.server_key.to_str().unwrap(),
        lab.ident.key.to_str().unwrap(),
    );
    let bad = lab.dir.join("bad-receiver.toml");
    write_file(&bad, &text, 0o644);
    let out = run(Command::new(RECEIVER)
        .arg("--config")
        .arg(&bad)
        .arg("--check-config"));
    assert_exit(&out, 78);
    assert!(
        stderr(&out).contains("does not match"),
        "{}",
        describe(&out)
    );
}

/// Under journald, severity follows the exit class: what ends in 75 (the
/// receiver down, busy, full; a timeout) is a warning, never an error, so
/// `journalctl -p err` stays quiet on every tick of a unit that succeeds;
/// what needs a human (65, 77, 69 by escalation) is an error.
#[test]
fn log_severity_follows_the_exit_class() {
    let journal = [("JOURNAL_STREAM", "8:12345")];
    let priorities = |err: &str| -> Vec<u8> {
        err.lines()
            .map(|l| {
                assert!(l.starts_with('<') && l.as_bytes()[2] == b'>', "{l:?}");
                l.as_bytes()[1] - b'0'
            })
            .collect()
    };
    let lab = Lab::new("op-severity");
    lab.episode("ep-1", 30_000, 1);
    // 75: the receiver is down.
    let port = lab.receiver().https.unwrap().port();
    let dead = lab.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
    let out = shipper_env(&dead, &["--once"], &journal);
    assert_exit(&out, 75);
    let p = priorities(&stderr(&out));
    assert!(
        p.contains(&4) && !p.contains(&3),
        "75 logs no error: {}",
        stderr(&out)
    );
    // 65: a conflict.
    fs::create_dir_all(lab.host_dir()).unwrap();
    fs::write(lab.host_dir().join("ep-1.tar.zst"), b"other bytes").unwrap();
    let out = lab.once_env(&journal);
    assert_exit(&out, 65);
    assert!(priorities(&stderr(&out)).contains(&3), "{}", describe(&out));
    // 77: credentials refused.
    let wrong = lab.dir.join("wrong.token");
    write_file(&wrong, "not-the-token\n", 0o600);
    let token = lab.dir.join("lab-01.token");
    let bad = lab.variant("badtoken", token.to_str().unwrap(), wrong.to_str().unwrap());
    fs::remove_file(lab.data("outbox/ep-1.conflict")).unwrap();
    fs::remove_file(lab.host_dir().join("ep-1.tar.zst")).unwrap();
    let out = shipper_env(&bad, &["--once"], &journal);
    assert_exit(&out, 77);
    assert!(priorities(&stderr(&out)).contains(&3), "{}", describe(&out));
}
