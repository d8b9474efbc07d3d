//! The README's deployment walkthrough, simulated: scripts/pki.sh makes the
//! PKI, the two installers install into temporary roots (`--root`), the
//! installed binaries run with the installed configs (paths re-rooted,
//! listening on loopback), `--ping` passes and an episode arrives.

mod common;

use std::path::Path;
use std::process::Command;

use common::episodes::make_episode;
use common::*;

fn script(name: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name),
    );
    c
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}\n{}", describe(&out));
    stdout(&out)
}

/// The installed config with its absolute paths moved under `root`.
fn reroot(config: &Path, root: &Path, prefixes: &[&str]) -> String {
    let mut text = std::fs::read_to_string(config).unwrap();
    for p in prefixes {
        text = text.replace(&format!("\"{p}"), &format!("\"{}{p}", root.display()));
    }
    text
}

#[test]
fn readme_walkthrough_ships_an_episode_between_two_installed_roots() {
    let dir = TempDir::new("walkthrough");
    let pki = dir.join("pki");
    let pki_s = pki.to_str().unwrap();
    // 1. The lab PKI in three commands.
    ok(script("pki.sh").args(["--dir", pki_s, "init"]));
    ok(script("pki.sh").args(["--dir", pki_s, "server", "localhost", "127.0.0.1"]));
    let host_out = ok(script("pki.sh").args(["--dir", pki_s, "host", "lab-01"]));
    let hosts_line = host_out.lines().last().unwrap().to_owned();
    assert!(hosts_line.starts_with("\"lab-01\" = \""), "{hosts_line}");

    // 2. The central node.
    let central = dir.join("central");
    std::fs::create_dir_all(&central).unwrap();
    ok(script("install-receiver.sh")
        .arg("--root")
        .arg(&central)
        .arg("--binary")
        .arg(RECEIVER)
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("server.crt"))
        .arg("--key")
        .arg(pki.join("server.key")));
    let installed = central.join("etc/cis490/receiver.toml");
    let mut text = reroot(
        &installed,
        &central,
        &["/etc/cis490", "/var/lib/cis490-receiver"],
    );
    text = text.replace("listen = \"0.0.0.0:8443\"", "listen = \"127.0.0.1:0\"");
    text.push_str(&format!("{hosts_line}\n")); // "paste the [hosts] line"
    let config = dir.join("receiver.toml");
    write_file(&config, &text, 0o640);
    let mut cmd = Command::new(central.join("usr/local/bin/cis490-receiver"));
    cmd.arg("--config").arg(&config);
    let receiver = Receiver::start_command(cmd, &config, true, false);
    let port = receiver.https.unwrap().port();

    // 3. A lab host.
    let lab = dir.join("lab");
    std::fs::create_dir_all(&lab).unwrap();
    let hosts = pki.join("hosts");
    ok(script("install-lab-host.sh")
        .arg("--root")
        .arg(&lab)
        .arg("--binary")
        .arg(SHIPPER)
        .args([
            "--host-id",
            "lab-01",
            "--receiver",
            &format!("https://localhost:{port}"),
        ])
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(hosts.join("lab-01.crt"))
        .arg("--key")
        .arg(hosts.join("lab-01.key"))
        .arg("--token")
        .arg(hosts.join("lab-01.token")));
    let text = reroot(
        &lab.join("etc/cis490/shipper.toml"),
        &lab,
        &["/etc/cis490", "/var/lib/cis490"],
    );
    let shipper_cfg = dir.join("shipper.toml");
    write_file(&shipper_cfg, &text, 0o640);
    let installed_shipper = lab.join("usr/local/bin/cis490-shipper");
    let ping = run(Command::new(&installed_shipper)
        .arg("--config")
        .arg(&shipper_cfg)
        .arg("--ping"));
    assert_exit(&ping, 0);
    assert!(
        stdout(&ping).contains("authenticated as lab-01"),
        "{}",
        describe(&ping)
    );

    // 4. The first episode.
    let data = lab.join("var/lib/cis490");
    make_episode(&data, "first-episode", 500_000, 1, true);
    let once = run(Command::new(&installed_shipper)
        .arg("--config")
        .arg(&shipper_cfg)
        .arg("--once"));
    assert_exit(&once, 0);
    assert!(
        stderr(&once).contains("first-episode: stored"),
        "{}",
        describe(&once)
    );
    assert!(data.join("shipped/first-episode").is_dir());
    let stored = central.join("var/lib/cis490-receiver/lab-01/first-episode.tar.zst");
    assert!(stored.is_file(), "not stored at {}", stored.display());
    let t = run(Command::new("zstd").arg("-t").arg(&stored));
    assert!(t.status.success(), "{}", describe(&t));
}
