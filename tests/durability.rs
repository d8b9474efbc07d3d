//! Power-loss ordering, which no kill -9 test can show (the page cache
//! survives a killed process): the syscalls of a real upload, traced with
//! strace, must come in the order that makes each acknowledgement durable
//! (bad-inputs.md S9; docs/transport.md).
//!
//! Receiver: fsync(partial) < link(partial, final) < fsync(host dir) < "201" written,
//!           for a `PUT` of known length and for a chunked one (its partial
//!           named by its `Upload-Key`).
//! Shipper, packing first: fsync(.partial) < sidecar in place < rename(.partial, final)
//!           < fsync(outbox/) < the upload's first socket write;
//!           rename(episodes/id, shipped/id) < fsync(episodes/), fsync(shipped/)
//!           < unlink(receipt).
//! Shipper, uploading while packing: the tarball is sent as it is written
//!           and never made durable (no fsync, no rename, no sidecar, no
//!           receipt): what makes the retire safe is the receiver's order
//!           above, so the receiver's fsync(host dir) for the episode (traced
//!           with times) comes before the shipper's rename(episodes/id,
//!           shipped/id); the moves are synced once, after the last.

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

/// Starts the receiver under `strace -f -y` (plus `flags`), tracing
/// `calls` into `trace`.
fn traced_receiver(
    dir: &Path,
    opts: &ReceiverOptions,
    trace: &Path,
    flags: &[&str],
    calls: &str,
) -> Receiver {
    let config = dir.join("receiver.toml");
    write_file(&config, &opts.render(), 0o644);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-s", "48", "-e", "signal=none", "-e"])
        .arg(format!("trace={calls}"))
        .args(flags)
        .arg("-o")
        .arg(trace)
        .arg(RECEIVER)
        .arg("--config")
        .arg(&config);
    Receiver::start_command(
        cmd,
        &config,
        opts.listen.is_some(),
        opts.listen_plain.is_some(),
    )
}

/// Stops the traced receiver itself (killing strace would only detach
/// it), and waits for strace to end with it.
fn stop_traced(mut r: Receiver) {
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
    assert!(
        r.child.wait().unwrap().success(),
        "strace ends with the receiver"
    );
}

/// The receiver's order for one upload whose partial's name starts with
/// `partial` (`.partial-<id>.`): its fsync, the link to `final_name`, the
/// host directory's fsync; returns the line of that last fsync.
fn receiver_order(
    lines: &[String],
    from: usize,
    host_dir: &str,
    partial: &str,
    final_name: &str,
) -> usize {
    let temp_fsync = expect(lines, from, &["fsync(", partial]);
    let link = expect(
        lines,
        temp_fsync,
        &["link", partial, &format!("/{final_name}\"")],
    );
    expect(lines, link, &["fsync(", &format!("<{host_dir}>")])
}

#[test]
fn s9_receiver_makes_an_upload_durable_before_answering_201() {
    strace_available();
    let dir = TempDir::new("dur-recv");
    let store = dir.join("store");
    let trace = dir.join("receiver.strace");
    let r = traced_receiver(
        dir.path(),
        &ReceiverOptions::plain(&store),
        &trace,
        &[],
        "fsync,fdatasync,link,linkat,write,writev,sendto",
    );
    let body = b"a durable tarball";
    let digest = cis490::protocol::content_digest(
        &sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), body)).into(),
    );
    let exchange = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(r.http.unwrap()).unwrap();
        std::io::Write::write_all(&mut s, req).unwrap();
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    };
    let head = |id: &str, framing: &str| {
        format!(
            "PUT /v1/episodes/lab-01/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n{framing}Connection: close\r\n\r\n"
        )
    };
    // Known length, the digest in the head.
    let framing = format!(
        "Content-Length: {}\r\nContent-Digest: {digest}\r\n",
        body.len()
    );
    exchange(&[head("ep-1", &framing).as_bytes(), body].concat());
    r.wait_log("PUT /v1/episodes/lab-01/ep-1 201");
    // Chunked, named by its key, the digest in the trailer (upload while
    // packing).
    let key = "00112233445566778899aabbccddeeff";
    let framing =
        format!("Transfer-Encoding: chunked\r\nTrailer: Content-Digest\r\nUpload-Key: {key}\r\n");
    let chunks =
        format!("5\r\na dur\r\nc\r\nable tarball\r\n0\r\nContent-Digest: {digest}\r\n\r\n");
    exchange(&[head("ep-2", &framing).as_bytes(), chunks.as_bytes()].concat());
    r.wait_log("PUT /v1/episodes/lab-01/ep-2 201");
    stop_traced(r);
    let lines = read_trace(&trace);
    let host_dir = store.join("lab-01").display().to_string();
    // The upload's file is its partial (docs/transport.md, §3).
    let dir_fsync = receiver_order(&lines, 0, &host_dir, "/.partial-ep-1.", "ep-1.tar.zst");
    let answer = expect(&lines, dir_fsync, &["HTTP/1.1 201"]);
    let dir_fsync = receiver_order(
        &lines,
        answer,
        &host_dir,
        &format!("/.partial-ep-2.k{key}"),
        "ep-2.tar.zst",
    );
    expect(&lines, dir_fsync, &["HTTP/1.1 201"]);
}

/// Two finished episodes, ep-a then ep-b (distinct marker times, so the
/// order of the pass is known), for a shipper configured with `extra`.
fn two_episodes(dir: &Path, r: &Receiver, pki: &TestPki, extra: &str) -> ShipperSetup {
    let id = pki.client("lab-01");
    let cfg = shipper_config(
        dir,
        "lab-01",
        &r.url(),
        &pki.ca_file,
        Some(&id),
        TOKEN_A,
        extra,
    );
    for (i, ep) in ["ep-a", "ep-b"].iter().enumerate() {
        make_episode(&cfg.data_dir, ep, 200_000, i as u64, true);
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
    cfg
}

/// One pass of the shipper under `strace -f -y` (plus `flags`), its trace.
fn traced_pass(cfg: &ShipperSetup, trace: &Path, flags: &[&str]) -> Vec<String> {
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
        .args(flags)
        .arg("-o")
        .arg(trace)
        .arg(SHIPPER)
        .arg("--config")
        .arg(&cfg.config)
        .arg("--once"));
    assert_exit(&out, 0);
    read_trace(trace)
}

#[test]
fn s9_shipper_packs_durably_before_uploading_and_retires_durably() {
    strace_available();
    let dir = TempDir::new("dur-ship");
    let pki = TestPki::new(&dir.join("pki"));
    let r = Receiver::start(dir.path(), &ReceiverOptions::tls(&pki, &dir.join("store")));
    let cfg = two_episodes(dir.path(), &r, &pki, "upload_while_packing = false\n");
    let lines = traced_pass(&cfg, &dir.join("shipper.strace"), &[]);
    let data = cfg.data_dir.display().to_string();
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

/// The time strace put on a line (`-ttt`: seconds since the epoch).
fn time_of(line: &str) -> f64 {
    line.split_whitespace()
        .find(|t| t.contains('.'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"))
}

#[test]
fn s9_a_streamed_upload_is_retired_only_once_the_receiver_made_it_durable() {
    strace_available();
    let dir = TempDir::new("dur-stream");
    let pki = TestPki::new(&dir.join("pki"));
    let store = dir.join("store");
    let recv_trace = dir.join("receiver.strace");
    let r = traced_receiver(
        dir.path(),
        &ReceiverOptions::tls(&pki, &store),
        &recv_trace,
        &["-ttt"],
        "fsync,fdatasync,link,linkat",
    );
    let cfg = two_episodes(dir.path(), &r, &pki, "");
    let lines = traced_pass(&cfg, &dir.join("shipper.strace"), &["-ttt"]);
    stop_traced(r);
    let recv = read_trace(&recv_trace);
    let host_dir = store.join("lab-01").display().to_string();
    let data = cfg.data_dir.display().to_string();
    let outbox = format!("<{data}/outbox>");
    let mut from = 0;
    let mut recv_from = 0;
    let mut moves = Vec::new();
    for ep in ["ep-a", "ep-b"] {
        let partial = format!("/outbox/{ep}.tar.zst.partial");
        // Sent while it was written: a socket write between the first
        // write to the file and its removal.
        let first_piece = expect(&lines, from, &["write", &format!("{partial}>")]);
        let sent = expect(&lines, first_piece, &["<socket:["]);
        let gone = expect(&lines, first_piece, &["unlink", &format!("{partial}\"")]);
        assert!(sent < gone, "{ep}: nothing sent while packing");
        // Never made durable locally: the receiver's copy is the one.
        for needles in [
            &["fsync(", partial.as_str()][..],
            &["rename", &format!("{partial}\"")],
            &["rename", &format!("/outbox/{ep}.tar.zst.sha256")],
        ] {
            assert_eq!(
                find(&lines, first_piece, needles).filter(|&i| i < gone),
                None,
                "{ep}: {needles:?}"
            );
        }
        // Held by the receiver: nothing recorded in outbox/ (no receipt,
        // no outbox fsync); the episode moves without a directory fsync
        // of its own (see below).
        let retire = expect(
            &lines,
            gone,
            &[
                "rename",
                &format!("/episodes/{ep}\""),
                &format!("/shipped/{ep}\""),
            ],
        );
        for needles in [&["receipt"][..], &["fsync(", &outbox]] {
            assert_eq!(
                find(&lines, gone, needles).filter(|&i| i < retire),
                None,
                "{ep}: {needles:?}"
            );
        }
        moves.push(retire);
        // The receiver published it (its keyed partial fsynced, linked, the
        // directory fsynced) before the shipper let go of the episode.
        let durable = receiver_order(
            &recv,
            recv_from,
            &host_dir,
            &format!("/.partial-{ep}.k"),
            &format!("{ep}.tar.zst"),
        );
        assert!(
            time_of(&recv[durable]) < time_of(&lines[retire]),
            "{ep}: retired at {} before the receiver's fsync at {}",
            lines[retire],
            recv[durable]
        );
        from = retire;
        recv_from = durable;
    }
    // Both moves made durable by one fsync of each directory, after the
    // last: nothing relies on them sooner (docs/transport.md, "Upload while
    // packing"), and the pass ends with them durable.
    for d in ["episodes", "shipped"] {
        let tag = format!("<{data}/{d}>");
        let at: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains("fsync(") && lines[i].contains(&tag))
            .collect();
        assert_eq!(at.len(), 1, "fsync({d}/) once per pass: {at:?}");
        assert!(
            at[0] > moves[1],
            "fsync({d}/) at line {} before the last move",
            at[0]
        );
    }
}
