//! `--once` end to end: the real shipper ships generated episodes to the
//! real receiver over mTLS on loopback, and the on-disk state machine does
//! what docs/transport.md says, outcome by outcome.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::episodes::make_episode;
use common::fs::{extract, names, sha256_hex, snapshot, Mtimes};
use common::lab::Lab;
use common::*;

#[test]
fn ships_several_episodes_and_round_trips_them() {
    let lab = Lab::new("ship-several");
    let ids = ["ep-a", "ep-b", "ep-c"];
    for (i, id) in ids.iter().enumerate() {
        let ep = lab.episode(id, 300_000 + i as u64 * 100_000, i as u64);
        // Modes, a nested dir, and a symlink pointing outside the episode.
        std::fs::set_permissions(ep.join("meta.json"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("../../../etc/passwd", ep.join("outside")).unwrap();
    }
    // Not finished: no marker, never shipped.
    make_episode(&lab.cfg.data_dir, "ep-unfinished", 10_000, 9, false);
    let sources: Vec<_> = ids
        .iter()
        .map(|id| snapshot(&lab.data(&format!("episodes/{id}")), Mtimes::Seconds))
        .collect();
    let out = lab.once();
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("pass done: 3 ready, 3 stored"), "{err}");
    assert!(
        err.contains("ep-a: stored:") && err.contains("MB/s"),
        "{err}"
    );
    assert_eq!(names(&lab.data("shipped")), ids);
    assert_eq!(names(&lab.data("episodes")), ["ep-unfinished"]);
    assert!(
        names(&lab.data("outbox")).is_empty(),
        "{:?}",
        names(&lab.data("outbox"))
    );
    for (id, source) in ids.iter().zip(&sources) {
        let stored = lab.stored(id);
        let x = lab.dir.join(&format!("extract-{id}"));
        extract(&stored, &x);
        assert_eq!(names(&x), [id.to_string()], "every entry is under <id>/");
        let got = snapshot(&x.join(id), Mtimes::Seconds);
        assert_eq!(
            &got, source,
            "{id}: extracted tree differs (contents, modes, mtimes, links)"
        );
        assert_eq!(
            got["outside"], "symlink -> ../../../etc/passwd",
            "symlink stored as a link"
        );
        // The sidecar the receiver keeps is sha256sum-compatible.
        let side = std::fs::read_to_string(stored.with_extension("zst.sha256")).unwrap();
        assert_eq!(side, format!("{}  {id}.tar.zst\n", sha256_hex(&stored)));
    }
    // One kept-alive connection carried the whole pass.
    let log = lab.receiver().log_text();
    let peers: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains(" PUT /v1/episodes/"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("127.0.0.1:")))
        .collect();
    assert_eq!(
        peers.len(),
        1,
        "expected one connection, got {peers:?}\n{log}"
    );
    // A rerun has nothing to do.
    let puts = lab.puts_logged();
    let out = lab.once();
    assert_exit(&out, 0);
    assert_eq!(lab.puts_logged(), puts, "a finished state makes no PUT");
}

#[test]
fn crash_after_store_before_retire_gets_200_and_retires() {
    let lab = Lab::new("ship-reship");
    lab.episode("ep-1", 200_000, 1);
    assert_exit(&lab.once(), 0);
    let stored_sha = sha256_hex(&lab.stored("ep-1"));
    // As if the shipper died after the 201, before the retire: the episode is
    // back in episodes/ and its tarball is gone (lost with a power cut).
    std::fs::rename(lab.data("shipped/ep-1"), lab.data("episodes/ep-1")).unwrap();
    let out = lab.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("ep-1: already present"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("shipped")), ["ep-1"]);
    assert!(names(&lab.data("outbox")).is_empty());
    assert_eq!(
        sha256_hex(&lab.stored("ep-1")),
        stored_sha,
        "repack is byte-identical"
    );
}

/// D1: a second copy under an id already in shipped/ is never deleted,
/// even once the receiver confirmed its bytes: it is quarantined for a
/// human, both copies kept, and nothing is uploaded again for it.
#[test]
fn second_copy_of_a_shipped_id_is_quarantined_never_deleted() {
    let lab = Lab::new("ship-dup");
    lab.episode("ep-1", 100_000, 1);
    assert_exit(&lab.once(), 0);
    // Same episode again in episodes/ while shipped/ still has it.
    lab.episode("ep-1", 100_000, 1);
    common::episodes::set_tree_mtime(&lab.data("episodes/ep-1"), 1_700_000_000);
    common::episodes::set_tree_mtime(&lab.data("shipped/ep-1"), 1_700_000_000);
    // The shipped copy's mtimes changed too, so the stored tarball differs:
    // replace the receiver's copy with the repacked bytes for this check.
    std::fs::remove_file(lab.stored("ep-1")).unwrap();
    let out = lab.once();
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("shipped/ep-1 already exists: a second copy under one id"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("episodes")), ["ep-1"]);
    assert_eq!(names(&lab.data("shipped")), ["ep-1"]);
    // The receiver confirmed it: the tarball is gone, the receipt stays.
    assert_eq!(
        names(&lab.data("outbox")),
        ["ep-1.conflict", "ep-1.receipt"]
    );
    let note = std::fs::read_to_string(lab.data("outbox/ep-1.conflict")).unwrap();
    assert!(note.contains("Nothing was deleted"), "{note}");
    // Quarantined until a human acts, every pass, without uploading.
    let puts = lab.puts_logged();
    assert_exit(&lab.once(), 65);
    assert_eq!(lab.puts_logged(), puts);
    // The human decides they are one recording: deletes the second copy
    // and the note; the receipt goes with the episode.
    std::fs::remove_dir_all(lab.data("episodes/ep-1")).unwrap();
    std::fs::remove_file(lab.data("outbox/ep-1.conflict")).unwrap();
    assert_exit(&lab.once(), 0);
    assert!(names(&lab.data("outbox")).is_empty());
}

#[test]
fn conflict_quarantines_and_exits_65() {
    let lab = Lab::new("ship-409");
    lab.episode("ep-1", 100_000, 1);
    lab.episode("ep-2", 100_000, 2);
    // The receiver already holds other bytes under ep-1.
    let store = lab.dir.join("store/lab-01");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("ep-1.tar.zst"), b"someone else's bytes").unwrap();
    let theirs = sha256_hex(&store.join("ep-1.tar.zst"));
    let out = lab.once();
    assert_exit(&out, 65);
    let conflict = lab.data("outbox/ep-1.conflict");
    let text = std::fs::read_to_string(&conflict).unwrap();
    assert!(
        text.contains(&format!("receiver_sha256: {theirs}")),
        "{text}"
    );
    assert!(text.contains("local_sha256: "), "{text}");
    assert!(
        stderr(&out).contains(&theirs) && stderr(&out).contains("ep-1.conflict"),
        "{}",
        describe(&out)
    );
    // ep-2 still shipped; ep-1 kept in place with its tarball.
    assert_eq!(names(&lab.data("shipped")), ["ep-2"]);
    assert_eq!(names(&lab.data("episodes")), ["ep-1"]);
    assert!(lab.data("outbox/ep-1.tar.zst").exists());
    // Later passes skip it (no PUT) and keep exiting 65 until resolved.
    let puts = lab.puts_logged();
    let out = lab.once();
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("in conflict with the receiver"),
        "{}",
        describe(&out)
    );
    assert_eq!(lab.puts_logged(), puts);
    // Operator resolves: the receiver's copy was wrong; remove it and the file.
    std::fs::remove_file(store.join("ep-1.tar.zst")).unwrap();
    std::fs::remove_file(&conflict).unwrap();
    assert_exit(&lab.once(), 0);
    assert_eq!(names(&lab.data("shipped")), ["ep-1", "ep-2"]);
}

/// A panic in one receiver connection (a bug) ends that connection's
/// thread only: the process goes on and gives the slot back, so with a
/// single connection slot the next pass ships. The release receiver keeps
/// this by unwinding (src/bin/cis490-receiver.rs, docs/build.md).
#[test]
fn a_panic_in_one_connection_leaves_the_receiver_serving() {
    let lab = Lab::build("ship-panic")
        .receiver_extra("max_connections = 1\n")
        .receiver_env("CIS490_PANIC_AT", "recv.after_head")
        .start();
    lab.episode("ep-1", 50_000, 1);
    let out = lab.once();
    assert_exit(&out, 75);
    lab.receiver().wait_log("injected panic at recv.after_head");
    assert_eq!(names(&lab.data("episodes")), ["ep-1"]);
    let out = lab.once();
    assert_exit(&out, 0);
    assert_eq!(names(&lab.data("shipped")), ["ep-1"]);
}

#[test]
fn receiver_down_keeps_everything_then_ships_when_back() {
    let mut lab = Lab::new("ship-down");
    lab.episode("ep-1", 150_000, 1);
    lab.episode("ep-2", 150_000, 2);
    let port = lab.receiver().https.unwrap().port();
    drop(lab.receiver.take()); // killed
    let out = lab.once();
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("stopping this pass"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("episodes")), ["ep-1", "ep-2"]);
    // The first tarball was packed before the connection failed: kept.
    assert_eq!(
        names(&lab.data("outbox")),
        ["ep-1.tar.zst", "ep-1.tar.zst.sha256"]
    );
    // Back on the same port.
    lab.opts.listen = Some(format!("127.0.0.1:{port}"));
    lab.receiver = Some(Receiver::start(lab.dir.path(), &lab.opts));
    let out = lab.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("ep-1: stored: ") && stderr(&out).contains("(packed earlier)"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("shipped")), ["ep-1", "ep-2"]);
}

#[test]
fn stale_partial_is_replaced_and_leftovers_tidied() {
    let lab = Lab::new("ship-partial");
    lab.episode("ep-1", 100_000, 1);
    std::fs::create_dir_all(lab.data("outbox")).unwrap();
    std::fs::write(lab.data("outbox/ep-1.tar.zst.partial"), b"half a tarball").unwrap();
    std::fs::write(lab.data("outbox/gone.tar.zst.partial"), b"episode is gone").unwrap();
    std::fs::write(lab.data("outbox/orphan.tar.zst.sha256"), b"x").unwrap();
    std::fs::write(lab.data("outbox/notes.txt"), b"operator's").unwrap();
    let out = lab.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("unexpected file"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("outbox")), ["notes.txt"]);
    assert_eq!(names(&lab.data("shipped")), ["ep-1"]);
}

#[test]
fn empty_or_unhashed_tarballs_are_repaired() {
    let lab = Lab::new("ship-repair");
    // Pack ep-2 without shipping it (receiver unreachable), then lose its
    // recorded digest: the next pass re-hashes the tarball, never trusts it.
    lab.episode("ep-2", 100_000, 2);
    let port = lab.receiver().https.unwrap().port();
    let dead = lab.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
    assert_exit(&shipper(&dead, &["--once"]), 75);
    std::fs::remove_file(lab.data("outbox/ep-2.tar.zst.sha256")).unwrap();
    // A zero-length final tarball: repacked.
    lab.episode("ep-1", 100_000, 1);
    std::fs::write(lab.data("outbox/ep-1.tar.zst"), b"").unwrap();
    let out = lab.once();
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("empty tarball; repacking"), "{err}");
    assert!(
        err.contains("ep-2.tar.zst: no recorded digest; hashing it"),
        "{err}"
    );
    assert_eq!(names(&lab.data("shipped")), ["ep-1", "ep-2"]);
}

#[test]
fn corrupt_sidecar_gets_400_then_repack_ships() {
    let lab = Lab::new("ship-badsidecar");
    lab.episode("ep-1", 120_000, 1);
    let port = lab.receiver().https.unwrap().port();
    // Pack without shipping: the same config, pointed at a dead port.
    let dead = lab.variant("dead", &format!(":{port}\""), &format!(":{}\"", port + 1));
    assert_exit(&shipper(&dead, &["--once"]), 75);
    let sidecar = lab.data("outbox/ep-1.tar.zst.sha256");
    std::fs::write(&sidecar, format!("{}  ep-1.tar.zst\n", "ab".repeat(32))).unwrap();
    let out = lab.once();
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("repacking next pass"),
        "{}",
        describe(&out)
    );
    assert!(
        !lab.stored("ep-1").exists(),
        "nothing stored on a digest mismatch"
    );
    assert!(names(&lab.data("outbox")).is_empty());
    let out = lab.once();
    assert_exit(&out, 0);
    assert_eq!(names(&lab.data("shipped")), ["ep-1"]);
}

#[test]
fn invalid_episode_names_are_skipped_and_counted() {
    let lab = Lab::new("ship-names");
    lab.episode("good-1", 50_000, 1);
    lab.episode("bad name", 50_000, 2);
    lab.episode(".hidden", 50_000, 3);
    let out = lab.once();
    assert_exit(&out, 65);
    let err = stderr(&out);
    assert!(
        err.contains("skipping episodes/bad name: not a valid episode id (1-128 characters"),
        "{err}"
    );
    assert!(err.contains("skipping episodes/.hidden"), "{err}");
    assert!(err.contains("2 invalid name(s)"), "{err}");
    assert_eq!(names(&lab.data("shipped")), ["good-1"]);
    assert!(err.contains("invalid name(s)"), "{err}");
    // A symlinked episode directory is never followed.
    let elsewhere = lab.dir.join("elsewhere");
    make_episode(&elsewhere, "linked", 10_000, 4, true);
    std::os::unix::fs::symlink(
        elsewhere.join("episodes/linked"),
        lab.data("episodes/linked"),
    )
    .unwrap();
    // Every pass says it again.
    let out = lab.once();
    assert_exit(&out, 65);
    assert!(stderr(&out).contains("skipping episodes/bad name"));
    assert!(
        stderr(&out).contains("skipping episodes/linked: a symlink"),
        "{}",
        describe(&out)
    );
    assert!(elsewhere.join("episodes/linked/meta.json").exists());
}

#[test]
fn wrong_token_stops_the_pass_with_77() {
    let lab = Lab::new("ship-401");
    lab.episode("ep-1", 50_000, 1);
    lab.episode("ep-2", 50_000, 2);
    let token = lab.dir.join("bad.token");
    write_file(&token, "not-the-token\n", 0o600);
    let good = lab.dir.join("lab-01.token");
    let bad = lab.variant("bad-token", good.to_str().unwrap(), token.to_str().unwrap());
    let out = shipper(&bad, &["--once"]);
    assert_exit(&out, 77);
    assert_eq!(lab.puts_logged(), 1, "stopped after the first refusal");
    assert_eq!(names(&lab.data("episodes")), ["ep-1", "ep-2"]);
}

#[test]
fn rejected_upload_keeps_everything_and_exits_65() {
    let lab = Lab::build("ship-413")
        .receiver_extra("max_body_bytes = 1000\n")
        .start();
    lab.episode("ep-1", 100_000, 1);
    let out = lab.once();
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("rejected the upload with 413"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("episodes")), ["ep-1"]);
    assert_eq!(
        names(&lab.data("outbox")),
        ["ep-1.tar.zst", "ep-1.tar.zst.sha256"]
    );
}

#[test]
fn compression_level_change_after_acceptance_is_a_conflict() {
    let lab = Lab::new("ship-level");
    lab.episode("ep-1", 200_000, 1);
    assert_exit(&lab.once(), 0);
    std::fs::rename(lab.data("shipped/ep-1"), lab.data("episodes/ep-1")).unwrap();
    let cfg = lab.variant(
        "level-9",
        "connect_timeout_s = 3\n",
        "connect_timeout_s = 3\ncompression_level = 9\n",
    );
    let out = shipper(&cfg, &["--once"]);
    assert_exit(&out, 65);
    assert!(lab.data("outbox/ep-1.conflict").exists());
}

#[test]
fn curl_as_a_third_party_client() {
    let lab = Lab::new("ship-curl");
    let body = lab.dir.join("upload.bin");
    std::fs::write(&body, b"a tarball from curl").unwrap();
    let port = lab.receiver().https.unwrap().port();
    let id = lab.pki.client("lab-01");
    let curl = |file: &Path| {
        let digest =
            cis490::protocol::content_digest(&cis490::hashing::sha256_file(file).unwrap().0);
        run(Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg("--cacert")
            .arg(&lab.pki.ca_file)
            .arg("--cert")
            .arg(&id.cert)
            .arg("--key")
            .arg(&id.key)
            .arg("-H")
            .arg(format!("Authorization: Bearer {TOKEN_A}"))
            .arg("-H")
            .arg(format!("Content-Digest: {digest}"))
            .arg("-T")
            .arg(file)
            .arg(format!(
                "https://localhost:{port}/v1/episodes/lab-01/from-curl"
            )))
    };
    assert_eq!(stdout(&curl(&body)), "201");
    assert_eq!(stdout(&curl(&body)), "200");
    let other = lab.dir.join("other.bin");
    std::fs::write(&other, b"different bytes here").unwrap();
    assert_eq!(stdout(&curl(&other)), "409");
    assert_eq!(
        std::fs::read(lab.stored("from-curl")).unwrap(),
        b"a tarball from curl"
    );
}

#[test]
fn large_episode_ships_with_flat_memory() {
    if !Path::new("/usr/bin/time").exists() {
        panic!("/usr/bin/time is required (apt-get install time)");
    }
    let lab = Lab::new("ship-large");
    let size: u64 = std::env::var("LARGE_EPISODE_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    lab.episode("ep-large", size, 7);
    let out = run(Command::new("/usr/bin/time")
        .arg("-v")
        .arg(SHIPPER)
        .arg("--config")
        .arg(&lab.cfg.config)
        .arg("--once"));
    assert_exit(&out, 0);
    let err = stderr(&out);
    let rss_kb: u64 = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS in {err}"));
    eprintln!("shipper peak RSS for a {size}-byte episode: {rss_kb} KiB");
    assert!(rss_kb < 64 * 1024, "peak RSS {rss_kb} KiB is not flat");
    assert_eq!(names(&lab.data("shipped")), ["ep-large"]);
    let stored = std::fs::metadata(lab.stored("ep-large")).unwrap().len();
    assert!(stored > size / 2, "stored {stored} bytes");
}

#[test]
fn progress_is_drawn_on_a_terminal_and_only_there() {
    let lab = Lab::new("ship-progress");
    lab.episode("ep-1", 3_000_000, 1);
    lab.episode("ep-2", 3_000_000, 2);
    // Without a terminal: plain log lines, no carriage returns.
    let out = lab.once();
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains('\r'), "{}", describe(&out));
    // Under a pseudo-terminal (util-linux `script`): a live line.
    lab.episode("ep-3", 3_000_000, 3);
    let cmd = format!("{SHIPPER} --config {} --once", lab.cfg.config.display());
    let out = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(out.status.success(), "{}", describe(&out));
    let tty = stdout(&out);
    assert!(tty.contains("\r\x1b[2Kep-3: packing"), "{tty:?}");
    assert!(tty.contains("ep-3: stored"), "{tty:?}");
    assert!(
        tty.contains("ETA"),
        "packing and uploading show an ETA: {tty:?}"
    );
}

#[test]
fn unreadable_episode_needs_a_human_65_and_keeps_everything() {
    let lab = Lab::new("ship-eacces");
    let ep = lab.episode("ep-1", 50_000, 1);
    std::fs::set_permissions(ep.join("meta.json"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Tests run as root, which reads anything: drop the capabilities that
    // let it, so the permission bits apply as they would to user cis490.
    let out = run(Command::new("setpriv")
        .arg("--bounding-set=-dac_override,-dac_read_search")
        .arg(SHIPPER)
        .arg("--config")
        .arg(&lab.cfg.config)
        .arg("--once"));
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("Permission denied") && stderr(&out).contains("ownership"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&lab.data("episodes")), ["ep-1"]);
    assert!(
        names(&lab.data("outbox")).is_empty(),
        "no partial left: {:?}",
        names(&lab.data("outbox"))
    );
}
