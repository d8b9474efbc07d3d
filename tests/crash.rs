//! Crash consistency end to end: the real shipper and receiver, killed at
//! every named crash point (`src/fault.rs::POINTS`) or fed injected I/O
//! errors, must never leave a torn or half-recorded state, and a pass
//! without faults must then finish the work (bad-inputs.md (c), C1-C5,
//! C10-C12, S3-S6).
//!
//! Each case has its own temp dir, PKI and receiver on 127.0.0.1:0. Cases
//! run on a few worker threads; a failing case keeps its temp dir
//! (`TempDir`), and all failures are reported together.
//!
//! Built only with `--features fault-injection` (`make test` passes it).
#![cfg(feature = "fault-injection")]

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::episodes::make_episode;
use common::fs::{extract, names, sha256_hex, snapshot, zstd_ok, Mtimes};
use common::lab::Lab;
use common::*;

const HOST: &str = "lab-01";
/// Shipped in this order (marker mtime, then name).
const IDS: [&str; 3] = ["ep-0001", "ep-0002", "ep-0003"];
/// The first two tarballs are larger than one 256 KiB upload chunk, so
/// `up.mid_body` really lands mid-body.
const SIZES: [u64; 3] = [600 * 1024, 500 * 1024, 250 * 1024];

/// A bounded wait for a condition that has no better readiness signal.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hex digest a `sha256sum`-format sidecar records.
fn sidecar_hex(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.split_whitespace().next().map(str::to_ascii_lowercase)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Waits (bounded) for a child, which a crash point should have killed.
fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One scenario: a `Lab` whose shipper has three finished episodes.
struct World {
    lab: Lab,
    /// Ids retired before the current receiver started: its log has no
    /// PUT line for them.
    retired_earlier: BTreeSet<String>,
}

impl std::ops::Deref for World {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl World {
    fn new(name: &str, receiver_env: &[(&str, &str)]) -> World {
        World::with(name, receiver_env, Mode::Stream)
    }

    fn with(name: &str, receiver_env: &[(&str, &str)], mode: Mode) -> World {
        let mut b = Lab::build(name);
        if mode == Mode::PackFirst {
            b = b.shipper_extra("upload_while_packing = false\n");
        }
        for (k, v) in receiver_env {
            b = b.receiver_env(k, v);
        }
        let lab = b.start();
        for (i, id) in IDS.iter().enumerate() {
            make_episode(&lab.cfg.data_dir, id, SIZES[i], 1000 + i as u64, true);
        }
        World {
            lab,
            retired_earlier: BTreeSet::new(),
        }
    }

    /// Stops (kill -9) any receiver and starts a new one on the same
    /// store_dir; the shipper is pointed at its new port.
    fn restart_receiver(&mut self, env: &[(&str, &str)]) {
        self.retired_earlier = names(&self.data("shipped")).into_iter().collect();
        self.lab.restart_receiver(env);
    }

    /// I1-I4 after a crash; returns the ids the receiver holds.
    fn check_invariants(&self, case: &str) -> BTreeSet<String> {
        // The log first, the store after: a receiver still finishing an
        // upload logs its 2xx only once the file is final, so whatever the
        // log acknowledges here is in the listing below.
        let log = self.lab.receiver.as_ref().map(Receiver::log_text);
        // I1: each id in exactly one of episodes/ and shipped/.
        for id in IDS {
            let e = self.data("episodes").join(id).exists();
            let s = self.data("shipped").join(id).exists();
            assert!(
                e ^ s,
                "{case}: I1: {id} in episodes/: {e}, in shipped/: {s}"
            );
        }
        // I2: outbox tarballs are never torn and match their sidecar.
        let outbox = self.data("outbox");
        for name in names(&outbox) {
            let path = outbox.join(&name);
            if name.ends_with(".partial") || name.ends_with(".tmp") {
                continue; // crash mid-pack: removed by the next pass
            }
            if let Some(id) = name.strip_suffix(".tar.zst") {
                assert!(IDS.contains(&id), "{case}: I2: unexpected {name}");
                assert!(zstd_ok(&path), "{case}: I2: torn outbox tarball {name}");
                if let Some(want) = sidecar_hex(&with_suffix(&path, ".sha256")) {
                    assert_eq!(
                        sha256_hex(&path),
                        want,
                        "{case}: I2: {name} does not match its sidecar"
                    );
                }
            } else if let Some(id) = name.strip_suffix(".tar.zst.sha256") {
                assert!(IDS.contains(&id), "{case}: I2: unexpected {name}");
            } else if let Some(id) = name.strip_suffix(".receipt") {
                // The receiver confirmed it: checked against the store (I4).
                assert!(IDS.contains(&id), "{case}: I2: unexpected {name}");
            } else {
                panic!("{case}: I2: unexpected file outbox/{name}");
            }
        }
        // I2/I3 on the receiver: no .partial anywhere, every final complete
        // and correct, nothing but temps, partial uploads (kept to resume:
        // never a final, so never torn), finals and sidecars.
        let store_snap = snapshot(&self.store(), Mtimes::Ignore);
        for p in store_snap.keys() {
            assert!(!p.ends_with(".partial"), "{case}: I2: store holds {p}");
        }
        let mut held = BTreeSet::new();
        for name in names(&self.host_dir()) {
            if name.starts_with(".upload-") {
                continue; // an upload in flight, or a crash's leftover
            }
            if let Some(rest) = name.strip_prefix(".partial-") {
                // `<id>.<sha256 hex>`, or `<id>.k<key hex>` for a stream
                // whose digest was not known when it began.
                let (id, suffix) = rest.rsplit_once('.').unwrap_or_default();
                let named = match suffix.strip_prefix('k') {
                    Some(key) => key.len() == 32,
                    None => suffix.len() == 64,
                };
                assert!(
                    IDS.contains(&id) && named,
                    "{case}: I3: unexpected partial {name}"
                );
                continue;
            }
            let path = self.host_dir().join(&name);
            if let Some(id) = name.strip_suffix(".tar.zst") {
                assert!(IDS.contains(&id), "{case}: I3: unexpected final {name}");
                assert!(zstd_ok(&path), "{case}: I3: torn final {name}");
                let got = sha256_hex(&path);
                if let Some(want) = sidecar_hex(&with_suffix(&path, ".sha256")) {
                    assert_eq!(got, want, "{case}: I3: {name} vs receiver sidecar");
                }
                let ours = self.data("outbox").join(format!("{id}.tar.zst.sha256"));
                if let Some(want) = sidecar_hex(&ours) {
                    assert_eq!(got, want, "{case}: I3: {name} vs shipper sidecar");
                }
                held.insert(id.to_owned());
            } else if let Some(id) = name.strip_suffix(".tar.zst.sha256") {
                assert!(IDS.contains(&id), "{case}: I3: unexpected {name}");
            } else {
                panic!("{case}: I3: unexpected file in the store: {name}");
            }
        }
        // I4: acknowledged (2xx logged by the receiver, a receipt in the
        // outbox, or retired locally) => the receiver holds these bytes.
        for id in IDS {
            if let Some(want) = sidecar_hex(&self.data("outbox").join(format!("{id}.receipt"))) {
                assert!(
                    held.contains(id),
                    "{case}: I4: receipt for {id} but not stored"
                );
                assert_eq!(
                    sha256_hex(&self.stored(id)),
                    want,
                    "{case}: I4: receipt of {id} vs the stored bytes"
                );
            }
            if self.data("shipped").join(id).exists() {
                assert!(
                    held.contains(id),
                    "{case}: I4: {id} is in shipped/ but not stored"
                );
            }
            if log.as_ref().is_some_and(|l| acked(l, id)) {
                assert!(
                    held.contains(id),
                    "{case}: I4: {id} answered 2xx but not stored"
                );
            }
        }
        held
    }

    /// After a clean pass: everything shipped, outbox empty, one stored
    /// copy per id, byte-identical to the source tree.
    fn check_converged(&self, case: &str) {
        assert!(
            names(&self.data("episodes")).is_empty(),
            "{case}: episodes/ not empty: {:?}",
            names(&self.data("episodes"))
        );
        let shipped = names(&self.data("shipped"));
        assert_eq!(shipped, IDS, "{case}: shipped/");
        let outbox = names(&self.data("outbox"));
        assert!(outbox.is_empty(), "{case}: outbox/ not empty: {outbox:?}");
        // An upload cut off by a crash may still be unwinding on the receiver.
        wait_until(
            &format!("{case}: receiver temps to go"),
            Duration::from_secs(10),
            || self.temps().is_empty(),
        );
        let finals: Vec<String> = names(&self.host_dir())
            .into_iter()
            .filter(|n| n.ends_with(".tar.zst"))
            .collect();
        let want: Vec<String> = IDS.iter().map(|id| format!("{id}.tar.zst")).collect();
        assert_eq!(finals, want, "{case}: stored tarballs");
        for name in names(&self.host_dir()) {
            assert!(
                name.ends_with(".tar.zst") || name.ends_with(".tar.zst.sha256"),
                "{case}: unexpected {name} in the store"
            );
        }
        for id in IDS {
            let stored = self.stored(id);
            assert!(zstd_ok(&stored), "{case}: {id}: zstd -t failed");
            if let Some(want) = sidecar_hex(&with_suffix(&stored, ".sha256")) {
                assert_eq!(sha256_hex(&stored), want, "{case}: {id}: receiver sidecar");
            }
            let x = self.dir.join(&format!("extract-{id}"));
            let _ = fs::remove_dir_all(&x);
            extract(&stored, &x);
            assert_eq!(names(&x), [id], "{case}: {id}: archive top level");
            let got = snapshot(&x.join(id), Mtimes::Ignore);
            let src = snapshot(&self.data("shipped").join(id), Mtimes::Ignore);
            assert!(
                got.len() >= 4 && got == src,
                "{case}: {id}: stored tarball differs from shipped/{id}:\n{got:#?}\nvs\n{src:#?}"
            );
            fs::remove_dir_all(&x).unwrap();
        }
    }

    /// C12: a pass over a finished state makes no request and changes
    /// nothing.
    fn check_noop_rerun(&self, case: &str) {
        // Every id was answered 2xx once; wait until those lines are in, so
        // a late line from an earlier pass is not counted below.
        for id in IDS.iter().filter(|id| !self.retired_earlier.contains(**id)) {
            wait_until(
                &format!("{case}: {id} answered 2xx"),
                Duration::from_secs(20),
                || acked(&self.receiver().log_text(), id),
            );
        }
        let requests = || self.logged(" PUT ") + self.logged(" PATCH ") + self.logged(" HEAD ");
        let before = requests();
        // state.json is the pass's report (--status), rewritten by every
        // pass by design; everything else must stay as it is.
        let data_snapshot = || {
            let mut s = snapshot(&self.cfg.data_dir, Mtimes::Exact);
            assert!(s.remove("state.json").is_some(), "{case}: no state.json");
            s
        };
        let data = data_snapshot();
        let store = snapshot(&self.store(), Mtimes::Exact);
        let out = self.once();
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("pass done: 0 ready, 0 stored, 0 already present"),
            "{case}: third pass did something\n{}",
            describe(&out)
        );
        assert_eq!(data_snapshot(), data, "{case}: third pass changed data_dir");
        assert_eq!(
            snapshot(&self.store(), Mtimes::Exact),
            store,
            "{case}: third pass changed the store"
        );
        assert_eq!(requests(), before, "{case}: third pass sent a request");
    }
}

/// The receiver's log shows that it holds `id`: 200/201 to a whole `PUT`,
/// to the completing `PATCH` of a resumed upload, or (200) to the `HEAD`
/// of a retry whose bytes it already held.
fn acked(log: &str, id: &str) -> bool {
    ["PUT", "PATCH", "HEAD"].iter().any(|m| {
        ["200", "201"]
            .iter()
            .any(|c| log.contains(&format!("{m} /v1/episodes/{HOST}/{id} {c} ")))
    })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "(non-string panic)".into()
    }
}

type Case = (String, Box<dyn FnOnce() + Send>);

/// Runs independent cases on a few threads; fails with every failure.
fn run_cases(cases: Vec<Case>) {
    let workers = std::env::var("CIS490_CRASH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let total = cases.len();
    let queue = Mutex::new(VecDeque::from(cases));
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().pop_front();
                let Some((name, case)) = next else { break };
                let started = Instant::now();
                match std::panic::catch_unwind(AssertUnwindSafe(case)) {
                    Ok(()) => eprintln!("ok     {name} ({:.1}s)", started.elapsed().as_secs_f64()),
                    Err(p) => {
                        eprintln!("FAILED {name}");
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{name}: {}", panic_text(p.as_ref())));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn case_name(prefix: &str, spec: &str) -> String {
    format!("{prefix}-{}", spec.replace(['.', '@'], "-"))
}

/// Kill the shipper at `spec` (`point` or `point@k`), check I1-I4, then a
/// clean pass converges and a third pass is a no-op.
fn shipper_crash(point: &str, nth: u32, mode: Mode) {
    let spec = if nth == 1 {
        point.to_owned()
    } else {
        format!("{point}@{nth}")
    };
    let prefix = match mode {
        Mode::Stream => "crash",
        Mode::PackFirst => "crash-packfirst",
    };
    let w = World::with(&case_name(prefix, &spec), &[], mode);
    let out = w.once_env(&[("CIS490_CRASH_AT", &spec)]);
    assert!(
        stderr(&out).contains(&format!("CRASHPOINT {point}\n")),
        "{spec}: crash point never reached (binaries built without --features fault-injection?)\n{}",
        describe(&out)
    );
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{spec}: not killed by SIGKILL\n{}",
        describe(&out)
    );
    let held = w.check_invariants(&spec);
    let pending: Vec<&str> = IDS
        .iter()
        .copied()
        .filter(|id| w.data("episodes").join(id).exists())
        .collect();

    let out = w.once();
    assert_exit(&out, 0);
    // C4: what the receiver already held is confirmed with 200, not resent.
    for id in &pending {
        if held.contains(*id) {
            assert!(
                stderr(&out).contains(&format!("{id}: already present")),
                "{spec}: {id} was stored before the crash; expected 200\n{}",
                describe(&out)
            );
        }
    }
    w.check_converged(&spec);
    w.check_noop_rerun(&spec);
}

/// Shipper points hit once per episode (so `@2` lands in the second one);
/// `up.after_connect` is once per connection, and the connection is kept
/// alive across episodes.
fn per_episode(point: &str) -> bool {
    point != "up.after_connect"
}

#[test]
fn shipper_crash_points_converge() {
    let points: Vec<&'static str> = cis490::fault::POINTS
        .iter()
        .copied()
        .filter(|p| {
            ["pack.", "up.", "stream.", "ship.", "clean."]
                .iter()
                .any(|x| p.starts_with(x))
        })
        .filter(|p| *p != SHIPPER_RESUME_POINT)
        .collect();
    assert!(points.len() >= 14, "shipper points: {points:?}");
    // Every point is exercised here, in receiver_crash_points_converge, in
    // shipper_killed_between_head_and_patch_resumes, (retention's) in
    // retention_crash_leaves_no_half_episode_that_looks_whole, or (the
    // object store's) in tests/s3.rs.
    for p in cis490::fault::POINTS {
        assert!(
            points.contains(p)
                || *p == SHIPPER_RESUME_POINT
                || p.starts_with("recv.")
                || p.starts_with("retain.")
                // tests/s3.rs, against a real object store.
                || p.starts_with("s3."),
            "crash point {p} is covered by no test"
        );
    }
    let mut cases: Vec<Case> = Vec::new();
    for mode in [Mode::Stream, Mode::PackFirst] {
        for &p in points.iter().filter(|p| reached(p, mode)) {
            let name = format!("{p} {mode:?}");
            cases.push((name, Box::new(move || shipper_crash(p, 1, mode))));
            if per_episode(p) {
                let name = format!("{p}@2 {mode:?}");
                cases.push((name, Box::new(move || shipper_crash(p, 2, mode))));
            }
        }
    }
    for p in &points {
        assert!(
            reached(p, Mode::Stream) || reached(p, Mode::PackFirst),
            "{p} is reached in no mode"
        );
    }
    run_cases(cases);
}

/// How the shipper sends a tarball it packs in the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// While packing (the default): a chunked `PUT`.
    Stream,
    /// `upload_while_packing = false`: a durable tarball first, then a `PUT`.
    PackFirst,
}

/// Whether a clean run of `mode` passes crash point `p`: a streamed upload
/// that the receiver takes never makes its tarball durable, nor sends a
/// body of known length.
fn reached(p: &str, mode: Mode) -> bool {
    let pack_first_only = [
        "pack.after_fsync",
        "pack.after_sidecar",
        "pack.after_rename",
        "pack.after_dirfsync",
        "up.mid_body",
        "up.after_body",
        // A streamed episode the receiver holds has nothing to record in
        // outbox/ (docs/transport.md, "Upload while packing").
        "ship.after_receipt",
        "ship.after_confirm",
    ];
    match mode {
        Mode::Stream => !pack_first_only.contains(&p),
        Mode::PackFirst => !p.starts_with("stream."),
    }
}

/// Kill the receiver at `spec`; the shipper sees a dead peer (75); no
/// final is torn; a restarted receiver removes the temps and a clean pass
/// converges, confirming with 200 what was published before the kill.
fn receiver_crash(point: &str, nth: usize, mode: Mode) {
    let spec = if nth == 1 {
        point.to_owned()
    } else {
        format!("{point}@{nth}")
    };
    let prefix = match mode {
        Mode::Stream => "recv-crash",
        Mode::PackFirst => "recv-crash-packfirst",
    };
    let mut w = World::with(
        &case_name(prefix, &spec),
        &[("CIS490_CRASH_AT", &spec)],
        mode,
    );
    let out = w.once();
    let status = {
        let r = w.lab.receiver.as_mut().unwrap();
        if out.status.code() == Some(0) && r.child.try_wait().unwrap().is_none() {
            panic!(
                "{spec}: crash point never reached (binaries built without --features fault-injection?)\n{}",
                describe(&out)
            );
        }
        wait_child(&mut r.child, "receiver")
    };
    assert_eq!(status.signal(), Some(9), "{spec}: receiver {status:?}");
    w.receiver().wait_log(&format!("CRASHPOINT {point}"));
    assert_exit(&out, 75);

    let held = w.check_invariants(&spec);
    // The upload that was cut off: nothing of it is retired, and a final
    // exists exactly when the crash came after the publish.
    let victim = IDS[nth - 1];
    assert!(
        w.data("episodes").join(victim).exists(),
        "{spec}: {victim} retired without an answer"
    );
    let published = matches!(
        point,
        "recv.after_publish" | "recv.after_dir_fsync" | "recv.before_response"
    );
    let unpublished = matches!(
        point,
        "recv.after_head"
            | "recv.mid_body"
            | "recv.mid_chunked"
            | "recv.after_trailer"
            | "recv.after_tmp_fsync"
    );
    if published {
        assert!(held.contains(victim), "{spec}: {victim} was published");
    }
    if unpublished {
        assert!(!held.contains(victim), "{spec}: {victim} must not be final");
    }
    for id in &held {
        // Never torn, and the shipper's bytes (checked in check_invariants
        // against the outbox sidecar, which must still be there).
        if w.data("episodes").join(id).exists() {
            assert!(
                w.data("outbox")
                    .join(format!("{id}.tar.zst.sha256"))
                    .exists(),
                "{spec}: outbox sidecar of {id} gone"
            );
        }
    }
    let pending: Vec<&str> = IDS
        .iter()
        .copied()
        .filter(|id| w.data("episodes").join(id).exists())
        .collect();
    let temps = w.temps();

    w.restart_receiver(&[]);
    if !temps.is_empty() {
        let log = w.receiver().log_text();
        assert!(
            log.contains(&format!(
                "removed {} unfinished upload(s) left by an earlier run",
                temps.len()
            )),
            "{spec}: restart did not report removing {temps:?}:\n{log}"
        );
    }
    assert!(
        w.temps().is_empty(),
        "{spec}: stale temps survived a restart: {:?}",
        w.temps()
    );

    let out = w.once();
    assert_exit(&out, 0);
    for id in &pending {
        if held.contains(*id) {
            assert!(
                stderr(&out).contains(&format!("{id}: already present")),
                "{spec}: {id} was published before the kill; expected 200\n{}",
                describe(&out)
            );
        }
    }
    w.check_converged(&spec);
    w.check_noop_rerun(&spec);
}

#[test]
fn receiver_crash_points_converge() {
    // The points inside a resumed upload (HEAD, PATCH) are driven by
    // `receiver_crash_points_inside_a_resume_converge`: a pass of PUTs
    // never reaches them.
    let points: Vec<&'static str> = cis490::fault::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("recv.") && !RESUME_POINTS.contains(p))
        .collect();
    assert!(points.len() >= 8, "receiver points: {points:?}");
    for p in &points {
        assert!(
            recv_reached(p, Mode::Stream) || recv_reached(p, Mode::PackFirst),
            "{p} is reached in no mode"
        );
    }
    // Each with a streamed (chunked) upload and a packed-first one (its
    // length known), wherever the point lies on that path.
    let mut cases: Vec<Case> = Vec::new();
    for mode in [Mode::Stream, Mode::PackFirst] {
        for &p in points.iter().filter(|p| recv_reached(p, mode)) {
            cases.push((
                format!("recv {p} {mode:?}"),
                Box::new(move || receiver_crash(p, 1, mode)),
            ));
        }
        // The second upload, on a kept-alive connection.
        for p in [
            "recv.mid_body",
            "recv.mid_chunked",
            "recv.after_publish",
            "recv.before_response",
        ] {
            if recv_reached(p, mode) {
                cases.push((
                    format!("recv {p}@2 {mode:?}"),
                    Box::new(move || receiver_crash(p, 2, mode)),
                ));
            }
        }
    }
    run_cases(cases);
}

/// Whether the receiver passes crash point `p` in a clean pass of `mode`:
/// a streamed upload is a chunked `PUT` (never a body of known length),
/// a packed-first one never is.
fn recv_reached(p: &str, mode: Mode) -> bool {
    match mode {
        Mode::Stream => p != "recv.mid_body",
        Mode::PackFirst => !STREAM_POINTS.contains(&p),
    }
}

/// S5: ENOSPC while the receiver writes the body -> 507, no temp, nothing
/// stored; after "space is freed", 201.
fn receiver_enospc() {
    let case = "store.write:ENOSPC";
    let mut w = World::new("fault-enospc", &[("CIS490_FAULT_AT", case)]);
    let out = w.once();
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("receiver answered 507"),
        "{case}\n{}",
        describe(&out)
    );
    w.receiver()
        .wait_log(&format!("PUT /v1/episodes/{HOST}/{} 507", IDS[0]));
    // The temp goes when the refused upload is dropped, just after the answer.
    wait_until(
        "the refused upload's temp to go",
        Duration::from_secs(10),
        || w.temps().is_empty(),
    );
    assert!(
        names(&w.host_dir()).is_empty(),
        "{case}: store: {:?}",
        names(&w.host_dir())
    );
    w.check_invariants(case);
    assert!(names(&w.data("shipped")).is_empty());

    w.restart_receiver(&[]);
    let out = w.once();
    assert_exit(&out, 0);
    for id in IDS {
        w.receiver()
            .wait_log(&format!("PUT /v1/episodes/{HOST}/{id} 201"));
        assert!(
            stderr(&out).contains(&format!("{id}: stored")),
            "{}",
            describe(&out)
        );
    }
    w.check_converged(case);
    w.check_noop_rerun(case);
}

/// S6: fsync EIO on the receiver's temp -> 500, nothing published, temp
/// gone; a later upload (a new temp, never a retried fsync) -> 201.
fn receiver_fsync_eio() {
    let case = "receiver sync_file:EIO";
    let mut w = World::new("fault-recv-eio", &[("CIS490_FAULT_AT", "sync_file:EIO")]);
    let out = w.once();
    assert_exit(&out, 75);
    for id in IDS {
        w.receiver()
            .wait_log(&format!("PUT /v1/episodes/{HOST}/{id} 500"));
    }
    wait_until(
        "the failed upload's temps to go",
        Duration::from_secs(10),
        || w.temps().is_empty(),
    );
    assert!(
        names(&w.host_dir()).is_empty(),
        "{case}: store: {:?}",
        names(&w.host_dir())
    );
    w.check_invariants(case);
    w.restart_receiver(&[]);
    let out = w.once();
    assert_exit(&out, 0);
    w.check_converged(case);
}

/// C11-like: fsync EIO while packing -> `.partial` removed, episode
/// untouched, 75; a clean pass then ships everything.
fn shipper_fsync_eio() {
    let case = "shipper sync_file:EIO";
    let w = World::with("fault-ship-eio", &[], Mode::PackFirst);
    let before = snapshot(&w.data("episodes"), Mtimes::Exact);
    let out = w.once_env(&[("CIS490_FAULT_AT", "sync_file:EIO")]);
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains(&format!("{}: syncing", IDS[0]))
            && stderr(&out).contains("Input/output error"),
        "{case}\n{}",
        describe(&out)
    );
    let outbox = names(&w.data("outbox"));
    assert!(
        !outbox.iter().any(|n| n.ends_with(".partial")),
        "{case}: .partial left: {outbox:?}"
    );
    // The episode whose pack failed is exactly as it was.
    let first: BTreeMap<_, _> = before
        .iter()
        .filter(|(k, _)| k.starts_with(IDS[0]))
        .collect();
    let now = snapshot(&w.data("episodes"), Mtimes::Exact);
    let first_now: BTreeMap<_, _> = now.iter().filter(|(k, _)| k.starts_with(IDS[0])).collect();
    assert_eq!(first_now, first, "{case}: {} changed", IDS[0]);
    assert!(
        !w.stored(IDS[0]).exists(),
        "{case}: an unsynced tarball was uploaded"
    );
    w.check_invariants(case);

    let out = w.once();
    assert_exit(&out, 0);
    w.check_converged(case);
    w.check_noop_rerun(case);
}

#[test]
fn injected_io_errors() {
    run_cases(vec![
        ("store.write:ENOSPC".into(), Box::new(receiver_enospc)),
        (
            "receiver sync_file:EIO".into(),
            Box::new(receiver_fsync_eio),
        ),
        ("shipper sync_file:EIO".into(), Box::new(shipper_fsync_eio)),
    ]);
}

/// C10: two `--once` at once -> the second logs, exits 0 and touches
/// nothing; after the holder is killed -9 the next run proceeds.
#[test]
fn concurrent_passes_take_turns() {
    // Packing first: the first pass must pack before it blocks on the
    // stopped receiver (a streamed upload would block before packing).
    let w = World::with("c10", &[], Mode::PackFirst);
    let recv_pid = w.receiver().child.id() as i32;
    let first_tarball = w.data("outbox").join(format!("{}.tar.zst", IDS[0]));

    // A stopped receiver: the first pass blocks in its TLS handshake (up to
    // io_timeout_s = 10) holding the lock, once its first tarball is packed.
    send_signal(recv_pid, "STOP");
    let first = w.spawn_once();
    wait_until("the first pass to pack", Duration::from_secs(8), || {
        first_tarball.exists()
    });
    let before = snapshot(&w.cfg.data_dir, Mtimes::Exact);
    let started = Instant::now();
    let second = w.once();
    let took = started.elapsed();
    let after = snapshot(&w.cfg.data_dir, Mtimes::Exact);
    send_signal(recv_pid, "CONT");
    assert_exit(&second, 0);
    assert!(
        stderr(&second).contains("another pass holds") && stderr(&second).contains(".lock"),
        "{}",
        describe(&second)
    );
    assert!(took < Duration::from_secs(3), "second pass took {took:?}");
    assert_eq!(after, before, "the second pass touched data_dir");
    let out = first.wait_with_output().unwrap();
    assert_exit(&out, 0);
    w.check_converged("c10");

    // The holder killed -9: its flock dies with it.
    let id = "ep-0004";
    make_episode(&w.cfg.data_dir, id, 300 * 1024, 7, true);
    let tarball = w.data("outbox").join(format!("{id}.tar.zst"));
    send_signal(recv_pid, "STOP");
    let mut holder = w.spawn_once();
    let packed = Instant::now() + Duration::from_secs(8);
    while !tarball.exists() && Instant::now() < packed {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = holder.kill();
    let status = holder.wait().unwrap();
    send_signal(recv_pid, "CONT");
    assert!(tarball.exists(), "the holder never packed {id}");
    assert_eq!(status.signal(), Some(9), "holder: {status:?}");
    let out = w.once();
    assert_exit(&out, 0);
    assert!(
        !stderr(&out).contains("another pass holds"),
        "the lock outlived its holder\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains(&format!("{id}: stored")),
        "{}",
        describe(&out)
    );
    assert!(w.data("shipped").join(id).exists());
    assert!(names(&w.data("outbox")).is_empty());
    assert!(w.stored(id).exists());
}

/// C7/C9: a receiver that accepts and drops the connection before the TLS
/// handshake completes (dying, restarting, or past its connection limit,
/// where src/receiver/server.rs closes at once) is a temporary failure:
/// 75, everything kept, not 69 ("TLS failure: certificates"). The same
/// race decides the exit code of `recv.*@2` above, where the shipper
/// retries a kept-alive upload on a new connection to a dying receiver.
#[test]
fn connection_dropped_during_handshake_is_temporary() {
    let dir = TempDir::new("handshake-drop");
    let pki = TestPki::new(&dir.join("pki"));
    let ident = pki.client(HOST);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept one connection, read nothing, close; then stop listening.
    std::thread::spawn(move || {
        if let Some(Ok(s)) = listener.incoming().next() {
            drop(s);
        }
    });
    let setup = shipper_config(
        dir.path(),
        HOST,
        &format!("https://127.0.0.1:{port}"),
        &pki.ca_file,
        Some(&ident),
        TOKEN_A,
        "",
    );
    make_episode(&setup.data_dir, IDS[0], 200 * 1024, 1, true);
    let out = shipper(&setup.config, &["--once"]);
    assert_exit(&out, 75);
    assert!(setup.data_dir.join("episodes").join(IDS[0]).exists());
    assert!(setup
        .data_dir
        .join("outbox")
        .join(format!("{}.tar.zst", IDS[0]))
        .exists());
}

/// D1: a crash after the retire rename (before the outbox is cleaned), then
/// the recorder writes a *new* recording under the same id before the next
/// pass. The old outbox state describes the old tree: nothing of it may
/// retire or delete the new one. The new recording is packed, the receiver
/// (holding the old bytes) answers 409, and both copies stay for a human.
#[test]
fn d1_new_recording_under_a_retired_id_is_quarantined_never_deleted() {
    let id = IDS[0];
    let w = World::new("d1-reuse", &[]);
    let out = w.once_env(&[("CIS490_CRASH_AT", "ship.after_rename")]);
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    assert!(w.data("shipped").join(id).exists());
    let stored = sha256_hex(&w.stored(id));
    // The recorder reuses the id: same names and sizes, other bytes.
    make_episode(&w.cfg.data_dir, id, SIZES[0], 424_242, true);
    let new_recording = snapshot(&w.data("episodes").join(id), Mtimes::Exact);
    let old_recording = snapshot(&w.data("shipped").join(id), Mtimes::Exact);

    let out = w.once();
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains(&format!(
            "{id}: conflict: the receiver holds sha256 {stored}"
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(
        snapshot(&w.data("episodes").join(id), Mtimes::Exact),
        new_recording,
        "the new recording was touched"
    );
    assert_eq!(
        snapshot(&w.data("shipped").join(id), Mtimes::Exact),
        old_recording
    );
    assert_eq!(sha256_hex(&w.stored(id)), stored, "the stored copy changed");
    assert!(w.data("outbox").join(format!("{id}.conflict")).exists());
    // The other episodes shipped as usual.
    for other in &IDS[1..] {
        assert!(w.data("shipped").join(other).exists(), "{other}");
    }
}

/// D1, the milder form: an upload cut off mid-body leaves the tarball in
/// outbox/; the recorder then adds a file to the episode. The next pass
/// must not upload the stale tarball and retire the episode (the new file
/// would never ship): it repacks, and the stored tarball holds the file.
#[test]
fn d1_files_added_after_a_failed_upload_are_shipped() {
    let id = IDS[0];
    let w = World::with("d1-late", &[], Mode::PackFirst);
    let out = w.once_env(&[("CIS490_CRASH_AT", "up.mid_body")]);
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    assert!(w.data("outbox").join(format!("{id}.tar.zst")).exists());
    fs::write(
        w.data("episodes").join(id).join("late.json"),
        b"{\"late\": true}",
    )
    .unwrap();

    let out = w.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("{id}: changed since")),
        "{}",
        describe(&out)
    );
    w.check_converged("d1-late");
    let x = w.dir.join("extract-late");
    extract(&w.stored(id), &x);
    assert_eq!(
        fs::read(x.join(id).join("late.json")).unwrap(),
        b"{\"late\": true}"
    );
}

/// Retention deletes through trash/: a crash after the move (the deepest
/// point of a delete) leaves shipped/ holding whole episodes only, and the
/// next pass empties the trash. Only shipped/ is touched.
#[test]
fn retention_crash_leaves_no_half_episode_that_looks_whole() {
    let w = World::new("retain-crash", &[]);
    assert_exit(&w.once(), 0);
    let kept = snapshot(&w.data("shipped"), Mtimes::Exact);
    let with_retention = w.variant(
        "retain",
        "io_timeout_s = 10\n",
        "io_timeout_s = 10\nkeep_shipped_days = 0\n",
    );
    let out = shipper_env(
        &with_retention,
        &["--once"],
        &[("CIS490_CRASH_AT", "retain.after_trash@2")],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    // The first was deleted, the second is in trash/, the third untouched.
    assert_eq!(names(&w.data("shipped")), [IDS[2]]);
    assert_eq!(names(&w.data("trash")), [IDS[1]]);
    for (path, what) in snapshot(&w.data("shipped"), Mtimes::Exact) {
        assert_eq!(kept.get(&path), Some(&what), "shipped/{path} changed");
    }
    let out = shipper(&with_retention, &["--once"]);
    assert_exit(&out, 0);
    assert!(names(&w.data("shipped")).is_empty());
    assert!(names(&w.data("trash")).is_empty());
    assert!(names(&w.data("receipts")).is_empty());
    assert!(
        stderr(&out).contains(&format!("deleted shipped/{} (", IDS[2])),
        "{}",
        describe(&out)
    );
    // The receiver's copies are untouched.
    for id in IDS {
        assert!(w.stored(id).exists());
    }
}

/// Crash points reached only by a `HEAD` or `PATCH`.
/// After a receiver crash case: `e` is stored whole with its sidecar, and
/// no partial is left.
fn assert_stored_whole(host_dir: &Path, whole: &[u8], point: &str, partials: &[String]) {
    assert_eq!(
        fs::read(host_dir.join("e.tar.zst")).unwrap(),
        whole,
        "{point}: stored bytes"
    );
    assert_eq!(
        sidecar_hex(&host_dir.join("e.tar.zst.sha256")),
        Some(common::raw::hex_of(whole))
    );
    assert!(partials.is_empty(), "{point}: {partials:?}");
}

/// Runs `case` for every one of `points` (each a named crash point).
fn run_points(kind: &str, points: &[&'static str], case: fn(&'static str)) {
    for p in points {
        assert!(
            cis490::fault::POINTS.contains(p),
            "{p} is not a crash point"
        );
    }
    let cases: Vec<Case> = points
        .iter()
        .map(|&p| -> Case { (format!("{kind} {p}"), Box::new(move || case(p))) })
        .collect();
    run_cases(cases);
}

const RESUME_POINTS: [&str; 2] = ["recv.mid_append", "recv.before_offset"];

/// A plain receiver on `store` (raw HTTP: the resume is driven by hand;
/// the lead's shipper drives it in the harness above), with `env`.
fn plain_receiver(dir: &TempDir, env: &[(&str, &str)]) -> Receiver {
    let opts = ReceiverOptions::plain(&dir.join("store"));
    let config = dir.join("receiver.toml");
    write_file(&config, &opts.render(), 0o644);
    Receiver::start_with_config(&config, false, true, env)
}

/// Waits for a receiver that a crash point should kill, and checks it did.
fn killed_at(r: &mut Receiver, point: &str) {
    let status = wait_child(&mut r.child, "receiver");
    assert_eq!(status.signal(), Some(9), "{point}: receiver {status:?}");
    r.wait_log(&format!("CRASHPOINT {point}"));
}

/// The receiver killed inside a resume: the partial's offset, reported by
/// a restarted receiver, never exceeds the bytes sent, and a PATCH from
/// there publishes exactly the upload's bytes.
fn resume_crash(point: &str) {
    use common::raw::*;
    let dir = TempDir::new(&case_name("recv-resume-crash", point));
    let whole = noise(3 << 20, 99);
    let host_dir = dir.join("store/lab-01");
    let partials = || -> Vec<String> {
        names(&host_dir)
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    };
    // A PUT cut after 1 MiB: a partial exists.
    let mut r = plain_receiver(&dir, &[("CIS490_CRASH_AT", point)]);
    cut_put(r.http.unwrap(), "e", &whole, 1 << 20);
    r.wait_log("client closed after");
    let mut sent = 1 << 20;
    match point {
        "recv.mid_append" => {
            // HEAD, then a PATCH of the rest: killed after some of it.
            let resp = exchange(r.http.unwrap(), head_req("e", &whole).as_bytes());
            let off = offset_of(&resp);
            let resp = exchange(r.http.unwrap(), &patch("e", &whole, off, whole.len() - off));
            assert!(resp.is_empty(), "{point}: answered {resp}");
            sent = whole.len();
        }
        "recv.before_offset" => {
            // Killed after the HEAD's fsync, before its 204.
            let resp = exchange(r.http.unwrap(), head_req("e", &whole).as_bytes());
            assert!(resp.is_empty(), "{point}: answered {resp}");
            killed_at(&mut r, point);
            // Again, inside an append with Upload-Complete: ?0: after its
            // fsync, before its 204 (the HEAD before it is hit 1).
            r = plain_receiver(&dir, &[("CIS490_CRASH_AT", &format!("{point}@2"))]);
            let resp = exchange(r.http.unwrap(), head_req("e", &whole).as_bytes());
            let off = offset_of(&resp);
            assert!(off <= sent, "{point}: offset {off} of {sent} sent");
            let resp = exchange(r.http.unwrap(), &patch("e", &whole, off, 500_000));
            assert!(resp.is_empty(), "{point}: answered {resp}");
            sent = off + 500_000;
        }
        _ => unreachable!("{point}"),
    }
    killed_at(&mut r, point);
    assert!(
        !host_dir.join("e.tar.zst").exists(),
        "{point}: a final before the upload completed"
    );
    assert_eq!(partials().len(), 1, "{point}: {:?}", partials());

    // A restarted receiver: the durable offset, then the rest.
    let r = plain_receiver(&dir, &[]);
    let resp = exchange(r.http.unwrap(), head_req("e", &whole).as_bytes());
    assert_eq!(status_of(&resp), 204, "{point}: {resp}");
    let off = offset_of(&resp);
    assert!(
        off > 0 && off <= sent,
        "{point}: offset {off} of {sent} sent"
    );
    if point == "recv.before_offset" {
        assert_eq!(
            off, sent,
            "{point}: the append was fsynced before the crash"
        );
    }
    let resp = exchange(r.http.unwrap(), &patch("e", &whole, off, whole.len() - off));
    assert_eq!(status_of(&resp), 201, "{point}: {resp}");
    assert_stored_whole(&host_dir, &whole, point, &partials());
}

#[test]
fn receiver_crash_points_inside_a_resume_converge() {
    // The PUT harness above drives every other receiver point.
    run_points("resume", &RESUME_POINTS, resume_crash);
}

/// Crash points reached only by a chunked `PUT` (in the harness above in
/// `Mode::Stream`; below with a raw one, cut and resumed by hand).
const STREAM_POINTS: [&str; 2] = ["recv.mid_chunked", "recv.after_trailer"];

/// The receiver killed inside a streamed (chunked) `PUT` under an
/// `Upload-Key`: no final; a restarted receiver reports, by the key, an
/// offset no further than the bytes sent, and a `PATCH` by the key from
/// there (an empty one when the whole body was in) publishes exactly the
/// upload's bytes.
fn stream_crash(point: &str) {
    use common::raw::*;
    let dir = TempDir::new(&case_name("recv-stream-crash", point));
    let whole = noise(3 << 20, 98);
    let key = upload_key(98);
    let host_dir = dir.join("store/lab-01");
    let partials = || -> Vec<String> {
        names(&host_dir)
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    };
    let mut r = plain_receiver(&dir, &[("CIS490_CRASH_AT", point)]);
    let head = stream_head("e", &format!("Upload-Key: {key}\r\n"));
    let mut req = head.into_bytes();
    // The trailer carries the digest: at `recv.after_trailer` the receiver
    // knew everything it needed to publish, and did not.
    req.extend_from_slice(&chunked(&whole, &[1 << 20], &digest_line(&whole)));
    let resp = exchange(r.http.unwrap(), &req);
    assert!(resp.is_empty(), "{point}: answered {resp}");
    killed_at(&mut r, point);
    assert!(
        !host_dir.join("e.tar.zst").exists(),
        "{point}: a final before the upload was published"
    );
    let keyed = format!(".partial-e.k{key}");
    assert_eq!(partials(), std::slice::from_ref(&keyed), "{point}");
    let on_disk = fs::metadata(host_dir.join(&keyed)).unwrap().len() as usize;
    match point {
        // Killed once the first chunk's data was in the file.
        "recv.mid_chunked" => assert!(on_disk >= 1 << 20, "{point}: {on_disk}"),
        "recv.after_trailer" => assert_eq!(on_disk, whole.len(), "{point}"),
        _ => unreachable!("{point}"),
    }

    let r = plain_receiver(&dir, &[]);
    let key_line = format!("Upload-Key: {key}");
    let resp = exchange(
        r.http.unwrap(),
        with_field(&head_req("e", &whole), &key_line).as_bytes(),
    );
    assert_eq!(status_of(&resp), 204, "{point}: {resp}");
    let off = offset_of(&resp);
    assert_eq!(off, on_disk, "{point}: the offset is what is on disk");
    let mut patch = patch_head(
        "e",
        &whole,
        off,
        whole.len() - off,
        &format!("{key_line}\r\n"),
    )
    .into_bytes();
    patch.extend_from_slice(&whole[off..]);
    let resp = exchange(r.http.unwrap(), &patch);
    assert_eq!(status_of(&resp), 201, "{point}: {resp}");
    assert_stored_whole(&host_dir, &whole, point, &partials());
}

#[test]
fn receiver_crash_points_inside_a_stream_converge() {
    run_points("stream", &STREAM_POINTS, stream_crash);
}

/// The shipper's one point inside a resume: only a tarball already waiting
/// in outbox/ is resumed, so the PUT harness never reaches it.
const SHIPPER_RESUME_POINT: &str = "up.resume_offset";

/// An upload killed mid-body leaves the tarball and the receiver's partial;
/// the next pass learns the offset (HEAD) and is killed before its PATCH;
/// the pass after that resumes from the partial, and everything converges.
#[test]
fn shipper_killed_between_head_and_patch_resumes() {
    let id = IDS[0];
    let w = World::with("crash-resume-offset", &[], Mode::PackFirst);
    let out = w.once_env(&[("CIS490_CRASH_AT", "up.mid_body")]);
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    // The receiver has let go of the partial (else the HEAD below could
    // race its claim and get 409 upload_in_progress).
    w.receiver().wait_log("bytes kept to resume");
    let out = w.once_env(&[("CIS490_CRASH_AT", SHIPPER_RESUME_POINT)]);
    assert!(
        stderr(&out).contains(&format!("CRASHPOINT {SHIPPER_RESUME_POINT}\n")),
        "{}",
        describe(&out)
    );
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    w.check_invariants("resume-offset");
    assert!(w.data("outbox").join(format!("{id}.tar.zst")).exists());

    let out = w.once();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("{id}: resumed at ")),
        "{}",
        describe(&out)
    );
    w.check_converged("resume-offset");
    w.check_noop_rerun("resume-offset");
}
