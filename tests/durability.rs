//! Power-loss ordering, which no kill -9 test can show (the page cache
//! survives a killed process): the syscalls of a real upload, traced with
//! strace, must come in the order that makes each acknowledgement durable
//! (bad-inputs.md S9; docs/transport.md).
//!
//! Receiver: fsync(partial) < link(partial, final) < fsync(host dir) < "201" written.
//! Shipper:  fsync(.partial) < sidecar in place < rename(.partial, final)
//!           < fsync(outbox/) < the upload's first socket write;
//!           rename(episodes/id, shipped/id) < fsync(episodes/), fsync(shipped/)
//!           < unlink(receipt).
//! Shipper, streaming (upload while packing): the tarball is never fsynced
//!           nor renamed, and there is no receipt; the moves to shipped/ are
//!           synced once, after the last, before the pass ends.

mod common;

use std::path::Path;
use std::process::Command;

use common::episodes::make_episode;
use common::*;

fn strace_available() {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "strace is required for this test (apt-get install strace)"
    );
}

/// Index of the first line at or after `from` containing every needle.
fn find(lines: &[String], from: usize, needles: &[&str]) -> Option<usize> {
    (from..lines.len()).find(|&i| needles.iter().all(|n| lines[i].contains(n)))
}

#[track_caller]
fn expect(lines: &[String], from: usize, needles: &[&str]) -> usize {
    find(lines, from, needles).unwrap_or_else(|| {
        panic!(
            "no syscall with {needles:?} after line {from}:\n{}",
            lines[from.min(lines.len())..].join("\n")
        )
    })
}

fn read_trace(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn s9_receiver_makes_an_upload_durable_before_answering_201() {
    strace_available();
    let dir = TempDir::new("dur-recv");
    let store = dir.join("store");
    let opts = ReceiverOptions::plain(&store);
    let config = dir.join("receiver.toml");
    write_file(&config, &opts.render(), 0o644);
    let trace = dir.join("receiver.strace");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-y",
        "-s",
        "48",
        "-e",
        "signal=none",
        "-e",
        "trace=fsync,fdatasync,link,linkat,write,writev,sendto",
    ])
    .arg("-o")
    .arg(&trace)
    .arg(RECEIVER)
    .arg("--config")
    .arg(&config);
    let r = Receiver::start_command(cmd, &config, false, true);
    let body = b"a durable tarball";
    let digest = cis490::protocol::content_digest(
        &sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), body)).into(),
    );
    let req = format!(
        "PUT /v1/episodes/lab-01/ep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: {}\r\nContent-Digest: {digest}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(r.http.unwrap()).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    std::io::Write::write_all(&mut s, body).unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    r.wait_log("PUT /v1/episodes/lab-01/ep-1 201");
    // Stop the traced receiver itself: killing strace would only detach it.
    let strace_pid = r.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let receiver_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("strace runs the receiver")
        .parse()
        .unwrap();
    send_signal(receiver_pid, "TERM");
    let mut r = r;
    assert!(
        r.child.wait().unwrap().success(),
        "strace ends with the receiver"
    );
    let lines = read_trace(&trace);
    let host_dir = store.join("lab-01").display().to_string();
    // The upload's file is its partial (docs/transport.md, §3).
    let temp_fsync = expect(&lines, 0, &["fsync(", "/.partial-ep-1."]);
    let link = expect(
        &lines,
        temp_fsync,
        &["link", "/.partial-ep-1.", "/ep-1.tar.zst\""],
    );
    let dir_fsync = expect(&lines, link, &["fsync(", &format!("<{host_dir}>")]);
    let answer = expect(&lines, dir_fsync, &["HTTP/1.1 201"]);
    assert!(temp_fsync < link && link < dir_fsync && dir_fsync < answer);
}

/// One traced `--once` pass over two episodes (`ep-a`, then `ep-b`) with
/// `extra` config lines: the trace's lines and the data_dir.
fn traced_pass(name: &str, extra: &str) -> (Vec<String>, String) {
    strace_available();
    let dir = TempDir::new(name);
    let pki = TestPki::new(&dir.join("pki"));
    let r = Receiver::start(dir.path(), &ReceiverOptions::tls(&pki, &dir.join("store")));
    let id = pki.client("lab-01");
    let cfg = shipper_config(
        dir.path(),
        "lab-01",
        &r.url(),
        &pki.ca_file,
        Some(&id),
        TOKEN_A,
        extra,
    );
    for (i, ep) in ["ep-a", "ep-b"].iter().enumerate() {
        make_episode(&cfg.data_dir, ep, 200_000, i as u64, true);
        // Distinct marker times, so the order of the pass is known.
        let marker = std::fs::File::options()
            .write(true)
            .open(cfg.data_dir.join(format!("episodes/{ep}/done.marker")))
            .unwrap();
        marker
            .set_modified(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + i as u64),
            )
            .unwrap();
    }
    let trace = dir.join("shipper.strace");
    let out = run(Command::new("strace")
        .args([
            "-f",
            "-y",
            "-s",
            "64",
            "-e",
            "signal=none",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,write,writev,sendto",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(SHIPPER)
        .arg("--config")
        .arg(&cfg.config)
        .arg("--once"));
    assert_exit(&out, 0);
    (read_trace(&trace), cfg.data_dir.display().to_string())
}

#[test]
fn s9_shipper_packs_durably_before_uploading_and_retires_durably() {
    // Pack first, then upload: the path of every retry, and of a receiver
    // that takes no streamed upload.
    let (lines, data) = traced_pass("dur-ship", "upload_while_packing = false\n");
    let outbox = format!("<{data}/outbox>");
    let mut from = 0;
    for ep in ["ep-a", "ep-b"] {
        let partial = format!("/outbox/{ep}.tar.zst.partial");
        let sync_partial = expect(&lines, from, &["fsync(", &partial]);
        let sidecar = expect(
            &lines,
            sync_partial,
            &[
                "rename",
                &format!("/outbox/{ep}.tar.zst.sha256.tmp\""),
                &format!("/outbox/{ep}.tar.zst.sha256\""),
            ],
        );
        let publish = expect(
            &lines,
            sidecar,
            &[
                "rename",
                &format!("{partial}\""),
                &format!("/outbox/{ep}.tar.zst\""),
            ],
        );
        let sync_outbox = expect(&lines, publish, &["fsync(", &outbox]);
        // The upload's bytes go out on the TCP socket only after that.
        let first_send = expect(&lines, publish, &["<socket:["]);
        assert!(
            sync_outbox < first_send,
            "{ep}: sent at line {first_send} before the outbox fsync at {sync_outbox}"
        );
        // The receiver's answer is recorded before anything relies on it:
        // the sidecar becomes the receipt, the tarball goes, outbox/ is
        // synced; only then is the episode moved, and the receipt is
        // dropped only once that move is durable.
        let receipt = expect(
            &lines,
            sync_outbox,
            &[
                "rename",
                &format!("/outbox/{ep}.tar.zst.sha256\""),
                &format!("/outbox/{ep}.receipt\""),
            ],
        );
        let unlink_tarball = expect(
            &lines,
            receipt,
            &["unlink", &format!("/outbox/{ep}.tar.zst\"")],
        );
        let sync_receipt = expect(&lines, unlink_tarball, &["fsync(", &outbox]);
        let retire = expect(
            &lines,
            sync_receipt,
            &[
                "rename",
                &format!("/episodes/{ep}\""),
                &format!("/shipped/{ep}\""),
            ],
        );
        let sync_episodes = expect(&lines, retire, &["fsync(", &format!("<{data}/episodes>")]);
        let sync_shipped = expect(&lines, retire, &["fsync(", &format!("<{data}/shipped>")]);
        let unlink = expect(
            &lines,
            retire,
            &["unlink", &format!("/outbox/{ep}.receipt\"")],
        );
        assert!(
            sync_episodes < unlink && sync_shipped < unlink,
            "{ep}: receipt deleted before the retire was durable"
        );
        from = unlink;
    }
}

#[test]
fn s9_a_streamed_pass_syncs_nothing_per_episode_and_its_moves_once() {
    let (lines, data) = traced_pass("dur-stream", "");
    let moves: Vec<usize> = ["ep-a", "ep-b"]
        .iter()
        .map(|ep| {
            expect(
                &lines,
                0,
                &[
                    "rename",
                    &format!("/episodes/{ep}\""),
                    &format!("/shipped/{ep}\""),
                ],
            )
        })
        .collect();
    assert!(moves[0] < moves[1], "ep-a is older, so it goes first");
    // Streamed and held by the receiver: the local copy was never made
    // durable, and nothing was recorded in outbox/.
    for needles in [
        &["fsync(", ".tar.zst.partial"][..],
        &["rename", ".tar.zst.sha256"],
        &["rename", ".receipt"],
        &["fsync(", &format!("<{data}/outbox>")],
    ] {
        assert_eq!(
            find(&lines, 0, needles),
            None,
            "a streamed pass does {needles:?}:\n{}",
            lines.join("\n")
        );
    }
    // Both moves made durable by one fsync of each directory, after the
    // second, and none in between.
    let synced = |d: &str| -> Vec<usize> {
        let tag = format!("<{data}/{d}>");
        (0..lines.len())
            .filter(|&i| lines[i].contains("fsync(") && lines[i].contains(&tag))
            .collect()
    };
    for d in ["episodes", "shipped"] {
        let at = synced(d);
        assert_eq!(at.len(), 1, "fsync({d}/) once per pass: {at:?}");
        assert!(
            at[0] > moves[1],
            "fsync({d}/) at line {} before the last move",
            at[0]
        );
    }
}
