//! Long-haul transfers, end to end: a cut upload resumes where the
//! receiver's durable copy stopped, through a real forwarder that cuts the
//! link or stalls it; a receiver killed mid-upload still lets the next pass resume; a
//! repacked episode starts over; and `max_upload_rate` holds.

mod common;

use std::fs;
use std::time::Instant;

use common::forwarder::{Fault, Forwarder};
use common::fs::names;
use common::lab::Lab;
use common::*;

#[test]
fn a_cut_upload_resumes_and_sends_less_than_half_again() {
    let lab = Lab::new("resume-cut");
    lab.incompressible("ep-big", 110_000_000, 1);
    let size = lab.pack_only("ep-big");
    assert!(size >= 100_000_000, "{size}");
    let fwd = Forwarder::start(lab.receiver().https.unwrap());
    let cfg = lab.through("via", &fwd.url());
    let (_, out, sent) = failed_then_resumed(
        &lab,
        &fwd,
        &cfg,
        Fault::CutAfter(size * 2 / 3),
        Some("ep-big"),
    );
    assert!(
        sent < size / 2,
        "the second pass sent {sent} of {size} bytes\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("ep-big: resumed at 6"),
        "{}",
        describe(&out)
    );
    lab.assert_stored_is_shipped("ep-big");
}

#[test]
#[cfg(feature = "fault-injection")]
fn a_receiver_killed_mid_upload_still_lets_the_next_pass_resume() {
    // Sent while packing (a chunked PUT, its partial named by its key) and
    // packed first (a PUT of known length, its partial named by its digest).
    for (name, point, extra) in [
        ("resume-kill", "recv.mid_chunked", ""),
        (
            "resume-kill-packfirst",
            "recv.mid_body",
            "upload_while_packing = false\n",
        ),
    ] {
        let mut lab = Lab::build(name)
            .shipper_extra(extra)
            .receiver_env("CIS490_CRASH_AT", point)
            .start();
        lab.incompressible("ep-1", 40_000_000, 2);
        let out = lab.once();
        assert_exit(&out, 75);
        lab.receiver().wait_log(&format!("CRASHPOINT {point}"));
        lab.restart_receiver(&[]);
        let out = lab.once();
        assert_exit(&out, 0);
        let err = stderr(&out);
        assert!(err.contains("ep-1: resumed at "), "{point}: {err}");
        lab.assert_stored_is_shipped("ep-1");
    }
}

#[test]
fn a_repacked_episode_discards_the_old_partial() {
    let lab = Lab::new("resume-repack");
    lab.incompressible("ep-1", 30_000_000, 3);
    let size = lab.pack_only("ep-1");
    let fwd = Forwarder::start(lab.receiver().https.unwrap());
    let cfg = lab.through("via", &fwd.url());
    fwd.set(Fault::CutAfter(size / 2));
    assert_exit(&shipper(&cfg, &["--once"]), 75);
    fwd.set(Fault::None);
    let partials = || -> Vec<String> {
        names(&lab.host_dir())
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    };
    let old = partials();
    assert_eq!(old.len(), 1, "{old:?}");
    // The recorder adds a file: the episode is packed again, other bytes.
    fs::write(lab.data("episodes/ep-1/late.json"), b"{}").unwrap();
    let out = shipper(&cfg, &["--once"]);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("resumed at"), "{}", describe(&out));
    assert!(partials().is_empty(), "{:?} left", partials());
    lab.assert_stored_is_shipped("ep-1");
}

/// The seconds an upload took, from the shipper's `… uploaded in Xs` line.
fn upload_secs(err: &str, id: &str) -> f64 {
    let line = err
        .lines()
        .find(|l| {
            l.contains(&format!("{id}: stored")) || l.contains(&format!("{id}: already present"))
        })
        .unwrap_or_else(|| panic!("no result line for {id} in\n{err}"));
    line.split("uploaded in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"))
}

/// 20 MB at "5MB/s" takes 3.6 to 4.4 s (a bound on the feature, not on the
/// machine: the link here is loopback), and a cut-and-resume under the
/// limit stays within it.
#[test]
fn max_upload_rate_holds_and_holds_for_a_resumed_upload() {
    let lab = Lab::build("resume-rate")
        .shipper_extra("max_upload_rate = \"5MB/s\"\n")
        .start();
    lab.incompressible("ep-1", 20_000_000, 4);
    let t = Instant::now();
    let out = lab.once();
    assert_exit(&out, 0);
    let secs = upload_secs(&stderr(&out), "ep-1");
    assert!(
        (3.6..=4.4).contains(&secs),
        "20 MB at 5MB/s took {secs}s (the pass {:?})\n{}",
        t.elapsed(),
        describe(&out)
    );
    assert!(
        stderr(&out).contains("at most 5.0 MB/s"),
        "{}",
        describe(&out)
    );

    // Cut half way, then resumed: the rest (about 10 MB) at the same rate.
    lab.incompressible("ep-2", 20_000_000, 5);
    let size = lab.pack_only("ep-2");
    let fwd = Forwarder::start(lab.receiver().https.unwrap());
    let cfg = lab.through("via", &fwd.url());
    let (_, out, sent) = failed_then_resumed(&lab, &fwd, &cfg, Fault::CutAfter(size / 2), None);
    let secs = upload_secs(&stderr(&out), "ep-2");
    let rate = sent as f64 / secs;
    assert!(
        sent < size * 6 / 10 && (4.5e6..=5.5e6).contains(&rate),
        "resumed: {sent} bytes in {secs}s ({rate} B/s)\n{}",
        describe(&out)
    );
}

/// A link that goes silent mid-upload: the shipper gives up after
/// `io_timeout_s` (75, tarball kept); once the link is back, the next pass
/// resumes from what the receiver holds.
#[test]
fn a_stalled_upload_times_out_and_the_next_pass_resumes() {
    let lab = Lab::new("resume-stall");
    lab.incompressible("ep-1", 30_000_000, 6);
    let size = lab.pack_only("ep-1");
    let fwd = Forwarder::start(lab.receiver().https.unwrap());
    let cfg = lab.through("via", &fwd.url());
    let text = fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("io_timeout_s = 10\n"));
    fs::write(
        &cfg,
        text.replace("io_timeout_s = 10\n", "io_timeout_s = 2\n"),
    )
    .unwrap();
    let (first, out, sent) =
        failed_then_resumed(&lab, &fwd, &cfg, Fault::StallAfter(size / 2), Some("ep-1"));
    assert!(stderr(&first).contains("ep-1: "), "{}", describe(&first));
    assert!(
        sent < size * 6 / 10,
        "the second pass sent {sent} of {size} bytes\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("ep-1: resumed at "),
        "{}",
        describe(&out)
    );
    lab.assert_stored_is_shipped("ep-1");
}

/// One pass through `fwd` with `fault` (exit 75; with `kept`, that
/// episode's tarball stays in outbox/), then, the link healed and the
/// receiver done with the cut upload, a pass that ships (exit 0): both
/// passes' output and the bytes the second sent.
fn failed_then_resumed(
    lab: &Lab,
    fwd: &Forwarder,
    cfg: &std::path::Path,
    fault: Fault,
    kept: Option<&str>,
) -> (std::process::Output, std::process::Output, u64) {
    fwd.set(fault);
    let first = shipper(cfg, &["--once"]);
    assert_exit(&first, 75);
    if let Some(id) = kept {
        let tarball = format!("outbox/{id}.tar.zst");
        assert!(lab.data(&tarball).exists(), "tarball kept");
    }
    fwd.set(Fault::None);
    // The receiver has let go of the cut upload's partial (a PATCH that
    // came before would be 409 upload_in_progress: tried again next pass).
    lab.receiver().wait_log("bytes kept to resume");
    let before = fwd.up_bytes();
    let out = shipper(cfg, &["--once"]);
    assert_exit(&out, 0);
    (first, out, fwd.up_bytes() - before)
}
