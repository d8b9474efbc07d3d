//! Deployment checks: the systemd units, the installers, the lab PKI script,
//! and one end-to-end run of the real binaries with certificates from
//! `scripts/pki.sh`.
//!
//! Self-contained on purpose (std only, no `tests/common`): these tests are
//! about files under `etc/` and `scripts/` and the tools that judge them
//! (`systemd-analyze`, `shellcheck`, `openssl`), not about the crate's
//! internals. Network traffic stays on 127.0.0.1.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::fs::{snapshot, Mtimes};
use common::TempDir;

const SHIPPER: &str = env!("CARGO_BIN_EXE_cis490-shipper");
const RECEIVER: &str = env!("CARGO_BIN_EXE_cis490-receiver");
const UNITS: [&str; 3] = [
    "cis490-shipper.service",
    "cis490-shipper.timer",
    "cis490-receiver.service",
];
const SERVICES: [&str; 2] = ["cis490-shipper.service", "cis490-receiver.service"];
/// The hardening target: what both units reach with AF_UNIX allowed
/// (1.1 each with systemd 252), so any loosening fails.
const MAX_EXPOSURE: f64 = 1.3;

// ---- helpers ---------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the system temp dir, unique per process and call,
/// removed when dropped (kept if the test fails, for a look).
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {cmd:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to completion; the output, whatever the status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and fails the test, showing everything, unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    out
}

fn script(name: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts").join(name));
    c
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn write(p: &Path, text: &str) {
    fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

// ---- systemd units -----------------------------------------------------------

/// The units as installed, except ExecStart= points at the binaries cargo
/// built: `verify` insists that the executable exists, and these tests must
/// not need /usr/local/bin.
fn units_for_verify(dir: &Path) {
    for unit in UNITS {
        let text = read(&repo().join("etc").join(unit))
            .replace("/usr/local/bin/cis490-shipper", SHIPPER)
            .replace("/usr/local/bin/cis490-receiver", RECEIVER);
        write(&dir.join(unit), &text);
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        println!("SKIPPED: systemd-analyze not found (Debian: apt-get install systemd)");
        return;
    }
    let tmp = TempDir::new("verify");
    units_for_verify(tmp.path());
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg("--man=no");
    for unit in UNITS {
        cmd.arg(tmp.path().join(unit));
    }
    let out = output(&mut cmd);
    // Only our units' findings count: on some machines verify also reports
    // on the distribution's own units it loads as dependencies.
    let ours: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| l.contains("cis490"))
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "{}",
        describe(&cmd, &out)
    );
}

/// "→ Overall exposure level for cis490-shipper.service: 1.2 OK 🙂"
fn exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let after = line.rsplit_once(".service:")?.1.trim_start();
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_parser() {
    let t = "  NAME  DESC\n→ Overall exposure level for cis490-shipper.service: 1.2 OK 🙂\n";
    assert_eq!(exposure(t), Some(1.2));
    assert_eq!(exposure("nothing here"), None);
}

#[test]
fn services_are_hardened() {
    if !have("systemd-analyze") {
        println!("SKIPPED: systemd-analyze not found (Debian: apt-get install systemd)");
        return;
    }
    for unit in SERVICES {
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["security", "--offline=true", "--no-pager"])
            .arg(repo().join("etc").join(unit));
        let out = output(&mut cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let score = exposure(&text)
            .unwrap_or_else(|| panic!("no exposure level in the output\n{}", describe(&cmd, &out)));
        println!("{unit}: exposure {score}");
        assert!(
            score <= MAX_EXPOSURE,
            "{unit}: exposure {score} > {MAX_EXPOSURE}\n{}",
            describe(&cmd, &out)
        );
    }
}

// ---- scripts -------------------------------------------------------------------

fn scripts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo().join("scripts"))
        .expect("scripts/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    v.sort();
    v
}

#[test]
fn scripts_are_shellcheck_clean() {
    // Not skipped when missing: CI installs shellcheck, and a lint that
    // silently does not run is worse than a failure that says why.
    assert!(
        have("shellcheck"),
        "shellcheck not found (Debian: apt-get install shellcheck)"
    );
    let list = scripts();
    assert!(
        list.len() >= 5,
        "expected the deployment scripts, found {list:?}"
    );
    let mut cmd = Command::new("shellcheck");
    cmd.args(&list);
    run_ok(&mut cmd);
}

/// The installers carry copies of the units and config templates (so one
/// scp'd file works); etc/ is the source, and the copies must equal it.
#[test]
fn installers_embed_etc_verbatim() {
    for installer in ["install-lab-host.sh", "install-receiver.sh"] {
        let text = read(&repo().join("scripts").join(installer));
        let begin = text
            .lines()
            .find_map(|l| l.strip_prefix("# BEGIN EMBEDDED "))
            .unwrap_or_else(|| panic!("{installer}: no BEGIN EMBEDDED line"));
        let files: Vec<&str> = begin.split_whitespace().collect();
        assert!(!files.is_empty(), "{installer}: embeds nothing");
        for f in files {
            let func = format!(
                "emit_{}() {{\n    cat <<'CIS490_TEMPLATE_END'\n",
                f.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            let start = text
                .find(&func)
                .unwrap_or_else(|| panic!("{installer}: no {func:?}"))
                + func.len();
            let len = text[start..]
                .find("\nCIS490_TEMPLATE_END\n")
                .unwrap_or_else(|| panic!("{installer}: unterminated copy of {f}"))
                + 1;
            assert!(
                text[start..start + len] == read(&repo().join(f)),
                "{installer}: its copy of {f} differs from {f}: run scripts/embed-templates.sh"
            );
        }
    }
}

/// The code the installers share lives once, in scripts/lib/; each installer
/// carries a copy (so one scp'd file works). `embed-templates.sh --check`
/// compares every copy, etc/ and scripts/lib/ alike, with its source; the
/// library is also linted on its own, since its copies are all shellcheck
/// sees of it otherwise.
#[test]
fn installers_embed_the_shared_library() {
    for installer in ["install-lab-host.sh", "install-receiver.sh"] {
        let text = read(&repo().join("scripts").join(installer));
        assert!(
            text.contains("\n# BEGIN LIBRARY scripts/lib/install-common.sh\n"),
            "{installer}: no copy of scripts/lib/install-common.sh"
        );
    }
    run_ok(script("embed-templates.sh").arg("--check"));
    assert!(
        have("shellcheck"),
        "shellcheck not found (Debian: apt-get install shellcheck)"
    );
    run_ok(Command::new("shellcheck").arg(repo().join("scripts/lib/install-common.sh")));
}

fn assert_same_tree(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    if before != after {
        let mut diff = String::new();
        for (k, v) in before {
            match after.get(k) {
                None => diff += &format!("- {k}: {v}\n"),
                Some(w) if w != v => diff += &format!("~ {k}: {v} => {w}\n"),
                _ => {}
            }
        }
        for (k, v) in after {
            if !before.contains_key(k) {
                diff += &format!("+ {k}: {v}\n");
            }
        }
        panic!("{what}: the tree changed:\n{diff}");
    }
}

struct Installer {
    script: &'static str,
    binary: &'static str,
    config: &'static str,
    /// Files handed to the installer: (option, name in the scratch dir,
    /// installed path under the root).
    secrets: &'static [(&'static str, &'static str, &'static str)],
}

const LAB_SECRETS: &[(&str, &str, &str)] = &[
    ("--token", "token", "etc/cis490/shipper.token"),
    ("--ca", "ca.crt", "etc/cis490/tls/ca.crt"),
    ("--cert", "host.crt", "etc/cis490/tls/host.crt"),
    ("--key", "host.key", "etc/cis490/tls/host.key"),
];
const RECEIVER_SECRETS: &[(&str, &str, &str)] = &[
    ("--ca", "ca.crt", "etc/cis490/tls/ca.crt"),
    ("--cert", "server.crt", "etc/cis490/tls/server.crt"),
    ("--key", "server.key", "etc/cis490/tls/server.key"),
];

const INSTALLERS: [Installer; 2] = [
    Installer {
        script: "install-lab-host.sh",
        binary: SHIPPER,
        config: "etc/cis490/shipper.toml",
        secrets: LAB_SECRETS,
    },
    Installer {
        script: "install-receiver.sh",
        binary: RECEIVER,
        config: "etc/cis490/receiver.toml",
        secrets: RECEIVER_SECRETS,
    },
];

impl Installer {
    fn command(&self, root: &Path, src: &Path) -> Command {
        let mut c = script(self.script);
        c.arg("--root").arg(root).arg("--binary").arg(self.binary);
        for (opt, name, _) in self.secrets {
            c.arg(opt).arg(src.join(name));
        }
        c
    }

    /// Scratch copies of the files the installer is given to install.
    fn sources(&self, dir: &Path, generation: &str) {
        for (_, name, _) in self.secrets {
            let p = dir.join(name);
            write(&p, &format!("{name} {generation}\n"));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

#[test]
fn installers_are_idempotent() {
    for inst in &INSTALLERS {
        let tmp = TempDir::new("idem");
        let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&src).unwrap();
        inst.sources(&src, "one");
        run_ok(&mut inst.command(&root, &src));
        let first = snapshot(&root, Mtimes::Ignore);
        for want in ["usr/local/bin", inst.config, "etc/systemd/system"] {
            assert!(
                first.contains_key(want),
                "{}: no {want} in {first:#?}",
                inst.script
            );
        }
        run_ok(&mut inst.command(&root, &src));
        assert_same_tree(
            &first,
            &snapshot(&root, Mtimes::Ignore),
            &format!("{} run twice", inst.script),
        );
    }
}

#[test]
fn installers_keep_existing_config_and_secrets() {
    for inst in &INSTALLERS {
        let tmp = TempDir::new("keep");
        let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&src).unwrap();
        inst.sources(&src, "one");
        run_ok(&mut inst.command(&root, &src));
        // The operator edits the config; later the installer runs again with
        // other secrets (say, an upgrade from a colleague's checkout).
        let config = root.join(inst.config);
        write(&config, "# edited by the operator\n");
        inst.sources(&src, "two");
        run_ok(&mut inst.command(&root, &src));
        assert_eq!(
            read(&config),
            "# edited by the operator\n",
            "{}",
            inst.script
        );
        for (_, name, installed) in inst.secrets {
            assert_eq!(
                read(&root.join(installed)),
                format!("{name} one\n"),
                "{}: {installed} was overwritten",
                inst.script
            );
        }
    }
}

#[test]
fn installer_modes_follow_the_ownership_model() {
    let tmp = TempDir::new("modes");
    let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&src).unwrap();
    INSTALLERS[0].sources(&src, "one");
    run_ok(&mut INSTALLERS[0].command(&root, &src));
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(
        mode("etc/cis490/shipper.token"),
        0o600,
        "the shipper refuses anything looser"
    );
    assert_eq!(mode("etc/cis490/shipper.toml"), 0o640);
    assert_eq!(mode("var/lib/cis490"), 0o2770);
    assert_eq!(mode("var/lib/cis490/episodes"), 0o2770);
    assert_eq!(mode("var/lib/cis490/shipped"), 0o2770);
    assert_eq!(mode("var/lib/cis490/outbox"), 0o2700);
    assert_eq!(mode("usr/local/bin/cis490-shipper"), 0o755);
    // systemctl --root links to the unit's path as seen from inside the root.
    let link = root.join("etc/systemd/system/timers.target.wants/cis490-shipper.timer");
    if have("systemctl") {
        assert_eq!(
            fs::read_link(&link).ok(),
            Some(PathBuf::from("/etc/systemd/system/cis490-shipper.timer")),
            "the timer is not enabled in the root"
        );
    }
}

#[test]
fn installer_dry_run_changes_nothing() {
    for inst in &INSTALLERS {
        let tmp = TempDir::new("dry");
        let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&src).unwrap();
        inst.sources(&src, "one");
        // Into an empty root, and into an installed one.
        let out = run_ok(inst.command(&root, &src).arg("--dry-run"));
        assert!(
            snapshot(&root, Mtimes::Ignore).is_empty(),
            "{}: --dry-run wrote into an empty root",
            inst.script
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("would run: install"),
            "{}: --dry-run does not say what it would do",
            inst.script
        );
        run_ok(&mut inst.command(&root, &src));
        let installed = snapshot(&root, Mtimes::Ignore);
        fs::remove_file(root.join(inst.config)).unwrap();
        let without_config = snapshot(&root, Mtimes::Ignore);
        run_ok(inst.command(&root, &src).arg("--dry-run"));
        assert_same_tree(
            &without_config,
            &snapshot(&root, Mtimes::Ignore),
            &format!("{} --dry-run", inst.script),
        );
        assert_ne!(installed, without_config);
    }
}

#[test]
fn installer_refuses_a_binary_that_is_not_ours() {
    let tmp = TempDir::new("wrongbin");
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    // The receiver passed to the lab-host installer: caught by --version.
    let mut cmd = script("install-lab-host.sh");
    cmd.arg("--root").arg(&root).arg("--binary").arg(RECEIVER);
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    assert!(snapshot(&root, Mtimes::Ignore).is_empty());
}

// ---- the lab PKI, end to end -------------------------------------------------

/// A running receiver, killed by PID when dropped (also when a test fails).
struct Receiver {
    child: Child,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_receiver(config: &Path) -> Receiver {
    let mut child = Command::new(RECEIVER)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {RECEIVER}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    // Read stderr on a thread: the port arrives on a channel (with a
    // deadline, so a receiver that never gets ready fails the test instead
    // of hanging it), and the thread keeps draining the pipe afterwards so
    // the receiver never blocks writing its log.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on https://127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = tx.send(Ok(port.parse::<u16>().expect("port")));
                break;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(Err(seen));
        for _ in lines {}
    });
    let mut receiver = Receiver { child, port: 0 };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(port)) => receiver.port = port,
        Ok(Err(seen)) => panic!("the receiver exited without listening; its stderr:\n{seen}"),
        Err(_) => panic!("the receiver printed no `listening on https://127.0.0.1:PORT` in 30 s"),
    }
    receiver
}

struct Pki {
    dir: PathBuf,
    /// `"HOST" = "hash"` lines printed by `pki.sh host`.
    lines: Vec<String>,
}

fn make_pki(dir: &Path, hosts: &[&str]) -> Pki {
    let pki = dir.join("pki");
    let pki_cmd = |args: &[&str]| {
        let mut c = script("pki.sh");
        c.arg("--dir").arg(&pki).args(args);
        run_ok(&mut c)
    };
    pki_cmd(&["init"]);
    pki_cmd(&["server", "localhost", "127.0.0.1", "::1"]);
    let mut lines = Vec::new();
    for h in hosts {
        let out = pki_cmd(&["host", h]);
        let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(line.starts_with(&format!("\"{h}\" = \"")), "{line}");
        lines.push(line);
    }
    Pki { dir: pki, lines }
}

fn shipper_config(
    dir: &Path,
    pki: &Pki,
    port: u16,
    host_id: &str,
    cert_of: &str,
    token_of: &str,
) -> PathBuf {
    let data = dir.join(format!("data-{host_id}"));
    fs::create_dir_all(&data).unwrap();
    let p = dir.join(format!("shipper-{host_id}-{cert_of}-{token_of}.toml"));
    let d = pki.dir.display();
    write(
        &p,
        &format!(
            "host_id = \"{host_id}\"\n\
             data_dir = \"{}\"\n\
             receiver = \"https://127.0.0.1:{port}\"\n\
             ca_file = \"{d}/ca.crt\"\n\
             cert_file = \"{d}/hosts/{cert_of}.crt\"\n\
             key_file = \"{d}/hosts/{cert_of}.key\"\n\
             token_file = \"{d}/hosts/{token_of}.token\"\n",
            data.display()
        ),
    );
    p
}

fn shipper(config: &Path, mode: &str) -> (Option<i32>, Command, Output) {
    let mut cmd = Command::new(SHIPPER);
    cmd.arg("--config").arg(config).arg(mode);
    let out = output(&mut cmd);
    (out.status.code(), cmd, out)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(files_under(&p));
            } else {
                v.push(p.display().to_string());
            }
        }
    }
    v
}

#[test]
fn pki_certificates_work_end_to_end() {
    assert!(
        have("openssl"),
        "openssl not found (Debian: apt-get install openssl)"
    );
    let tmp = TempDir::new("e2e");
    let pki = make_pki(tmp.path(), &["lab-01", "lab-02"]);

    // Files and modes as promised in scripts/pki.sh.
    for (f, m) in [
        ("ca.key", 0o600),
        ("server.key", 0o600),
        ("hosts/lab-01.key", 0o600),
        ("hosts/lab-01.token", 0o600),
    ] {
        let mode = fs::metadata(pki.dir.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, m, "{f}");
    }
    // `init` twice must not replace the CA.
    let ca = read(&pki.dir.join("ca.crt"));
    let mut again = script("pki.sh");
    again.arg("--dir").arg(&pki.dir).arg("init");
    assert!(!output(&mut again).status.success());
    assert_eq!(read(&pki.dir.join("ca.crt")), ca);
    // Ids that cannot be a certificate's DNS SAN are refused.
    for bad in ["lab_01", "10.0.0.1", "-lab", "a..b", "x.123"] {
        let mut c = script("pki.sh");
        c.arg("--dir").arg(&pki.dir).args(["host", bad]);
        assert!(
            !output(&mut c).status.success(),
            "pki.sh host {bad} was accepted"
        );
    }

    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let rconf = tmp.path().join("receiver.toml");
    let d = pki.dir.display();
    write(
        &rconf,
        &format!(
            "listen = \"127.0.0.1:0\"\n\
             store_dir = \"{}\"\n\
             cert_file = \"{d}/server.crt\"\n\
             key_file = \"{d}/server.key\"\n\
             client_ca_file = \"{d}/ca.crt\"\n\
             [hosts]\n{}\n",
            store.display(),
            pki.lines.join("\n")
        ),
    );
    let receiver = start_receiver(&rconf);

    // lab-01, its own certificate and token: the whole path works.
    let ok = shipper_config(
        tmp.path(),
        &pki,
        receiver.port,
        "lab-01",
        "lab-01",
        "lab-01",
    );
    let (code, cmd, out) = shipper(&ok, "--ping");
    assert_eq!(code, Some(0), "{}", describe(&cmd, &out));

    // lab-01's token presented with lab-02's certificate: the certificate is
    // not lab-01's, so the receiver refuses (77), whichever id is claimed.
    for claimed in ["lab-01", "lab-02"] {
        let stolen = shipper_config(tmp.path(), &pki, receiver.port, claimed, "lab-02", "lab-01");
        let (code, cmd, out) = shipper(&stolen, "--ping");
        assert_eq!(code, Some(77), "{}", describe(&cmd, &out));
    }

    // And an episode arrives.
    let episode = tmp.path().join("data-lab-01/episodes/ep-0001");
    fs::create_dir_all(&episode).unwrap();
    write(&episode.join("frames.bin"), &"x".repeat(10_000));
    write(&episode.join("done.marker"), "");
    let (code, cmd, out) = shipper(&ok, "--once");
    assert_eq!(code, Some(0), "{}", describe(&cmd, &out));
    assert!(
        tmp.path()
            .join("data-lab-01/shipped/ep-0001/frames.bin")
            .exists(),
        "episode not moved to shipped/\n{}",
        describe(&cmd, &out)
    );
    let stored = files_under(&store);
    assert!(
        stored.iter().any(|f| f.contains("ep-0001")),
        "nothing named ep-0001 in the store: {stored:?}"
    );
    drop(receiver);
}

/// `pki.sh hash-token` gives the same `[hosts]` line as `pki.sh host` for
/// the token it made (a host migrating from the Python shipper keeps its
/// token this way), and refuses what the shipper would refuse.
#[test]
fn pki_hash_token_matches_the_host_line() {
    let tmp = TempDir::new("hash-token");
    let pki = make_pki(tmp.path(), &["lab-01"]);
    let mut c = script("pki.sh");
    c.arg("hash-token").arg(pki.dir.join("hosts/lab-01.token"));
    let out = run_ok(&mut c);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), pki.lines[0]);
    let spaced = tmp.path().join("old.token");
    write(&spaced, "two words\n");
    let mut c = script("pki.sh");
    c.arg("hash-token").arg(&spaced).arg("lab-01");
    assert!(!output(&mut c).status.success());
}

/// A lab host that ran the Python shipper: its daemon and orchestrator are
/// disabled before the timer is installed (else both would ship), it says
/// so, and /opt/cis490 stays, with the command to remove it.
#[test]
fn lab_installer_retires_the_python_shipper() {
    if !have("systemctl") {
        eprintln!("SKIPPED: no systemctl to enable/disable units under --root");
        return;
    }
    let inst = &INSTALLERS[0];
    let tmp = TempDir::new("python");
    let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
    let units = root.join("etc/systemd/system");
    let wants = units.join("multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    fs::create_dir_all(root.join("opt/cis490/venv")).unwrap();
    write(
        &units.join("cis490-shipper.service"),
        "[Unit]\nDescription=CIS490 shipper (Python)\n[Service]\nType=simple\n\
         ExecStart=/opt/cis490/venv/bin/python -m shipper\n[Install]\nWantedBy=multi-user.target\n",
    );
    write(
        &units.join("cis490-orchestrator.service"),
        "[Unit]\nDescription=CIS490 orchestrator\n[Service]\nExecStart=/opt/cis490/venv/bin/python -m orchestrator\n[Install]\nWantedBy=multi-user.target\n",
    );
    std::os::unix::fs::symlink(
        "/etc/systemd/system/cis490-shipper.service",
        wants.join("cis490-shipper.service"),
    )
    .unwrap();
    fs::create_dir_all(&src).unwrap();
    inst.sources(&src, "one");
    let out = run_ok(&mut inst.command(&root, &src));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("found the Python shipper")
            && text.contains("cis490-orchestrator.service")
            && text.contains("/opt/cis490"),
        "{text}"
    );
    assert!(
        fs::symlink_metadata(wants.join("cis490-shipper.service")).is_err(),
        "the old daemon is still enabled"
    );
    let unit = read(&units.join("cis490-shipper.service"));
    assert!(unit.contains("Type=oneshot"), "{unit}");
    assert!(
        root.join("opt/cis490/venv").is_dir(),
        "/opt/cis490 was removed"
    );
    assert!(text.contains("sudo rm -rf /opt/cis490"), "{text}");
    // Run again: nothing more to disable, the new service is left alone.
    let out = run_ok(&mut inst.command(&root, &src));
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(!again.contains("disable cis490-shipper.service"), "{again}");
}
