//! Upload while packing, end to end (docs/transport.md, "Upload while
//! packing"): the real shipper sends each tarball as a chunked `PUT` while
//! it packs it, to the real receiver over mTLS; the receiver's bytes are
//! the episode; a link cut mid-stream leaves the outbox tarball and the
//! receiver's keyed partial, and the next pass sends only the rest; an id
//! the receiver already holds is answered digest-first.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::forwarder::{Fault, Forwarder};
use common::fs::names;
use common::lab::Lab;
use common::*;

#[test]
fn an_episode_is_stored_while_it_is_packed() {
    let lab = Lab::new("stream-basic");
    lab.episode("ep-1", 3_000_000, 1);
    lab.episode("ep-2", 700_000, 2);
    let out = lab.once();
    assert_exit(&out, 0);
    let err = stderr(&out);
    for id in ["ep-1", "ep-2"] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{id}: stored: "))
                    && l.contains("packed and uploaded in")),
            "{id} was not streamed\n{err}"
        );
        lab.assert_stored_is_shipped(id);
    }
    assert!(
        names(&lab.data("outbox")).is_empty(),
        "outbox: {:?}",
        names(&lab.data("outbox"))
    );
    // Both on one kept-alive connection, and a second pass sends nothing.
    let puts = lab.puts_logged();
    assert_eq!(puts, 2);
    assert_exit(&lab.once(), 0);
    assert_eq!(lab.puts_logged(), 2);
}

/// The proof that sending overlaps packing: with the link stalled after
/// 2 MB, the receiver has bytes while the tarball is still being written.
/// Then the link drops: packing finishes into outbox/ (exit 75), and the
/// next pass resumes the receiver's keyed partial instead of starting over.
#[test]
fn a_stream_cut_mid_way_resumes_from_the_receivers_partial() {
    let lab = Lab::new("stream-cut");
    lab.incompressible("ep-big", 40_000_000, 7);
    let fwd = Forwarder::start(lab.receiver().https.unwrap());
    let cfg = lab.through("via", &fwd.url());
    fwd.set(Fault::StallAfter(2_000_000));
    let child = spawn_shipper(&cfg, &["--once"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fwd.up_bytes() < 2_000_000 {
        assert!(Instant::now() < deadline, "no bytes through the forwarder");
        std::thread::sleep(Duration::from_millis(20));
    }
    let partial = lab.data("outbox/ep-big.tar.zst.partial");
    let packed_so_far = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        packed_so_far > 0 && packed_so_far < 40_000_000,
        "sent 2 MB before packing was done: {packed_so_far} bytes packed"
    );
    assert!(!lab.data("outbox/ep-big.tar.zst").exists());

    fwd.set(Fault::None); // the stalled connection closes
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 75);
    let tarball = lab.data("outbox/ep-big.tar.zst");
    let size = fs::metadata(&tarball).expect("tarball kept").len();
    let record = fs::read_to_string(lab.data("outbox/ep-big.tar.zst.sha256")).unwrap();
    assert!(
        record.contains("\nkey "),
        "no Upload-Key in the record:\n{record}"
    );
    lab.receiver().wait_log("bytes kept to resume");
    // The receiver's partial, named by the stream's key.
    let keyed: Vec<u64> = fs::read_dir(lab.host_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".partial-ep-big.k")
        })
        .map(|e| e.metadata().unwrap().len())
        .collect();
    let [held] = keyed[..] else {
        panic!("one keyed partial expected: {keyed:?}")
    };
    assert!(held >= 1_000_000, "the receiver kept {held} bytes");

    let before = fwd.up_bytes();
    let out = shipper(&cfg, &["--once"]);
    assert_exit(&out, 0);
    let sent = fwd.up_bytes() - before;
    // Only the rest, plus TLS and HTTP overhead (well under 1%): starting
    // over would send at least `size`.
    assert!(
        sent < size - held + size / 100,
        "the second pass sent {sent} of {size} bytes, {held} held\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("ep-big: resumed at "),
        "{}",
        describe(&out)
    );
    lab.assert_stored_is_shipped("ep-big");
}

/// An id the receiver already holds cannot be judged before the digest is
/// known: the receiver answers the stream's head 428, and the shipper
/// packs and asks digest-first, so the same bytes are "already present"
/// with no body sent.
#[test]
fn an_id_already_stored_is_answered_digest_first() {
    let lab = Lab::new("stream-428");
    lab.episode("ep-1", 1_000_000, 3);
    assert_exit(&lab.once(), 0);
    // The shipper forgets it shipped ep-1 (a restored backup, say).
    fs::rename(lab.data("shipped/ep-1"), lab.data("episodes/ep-1")).unwrap();
    fs::remove_dir_all(lab.data("receipts")).unwrap();
    let stored = fs::read(lab.stored("ep-1")).unwrap();

    let out = lab.once();
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("ep-1: the receiver takes no streamed upload of it (428"),
        "{err}"
    );
    assert!(err.contains("ep-1: already present"), "{err}");
    assert_eq!(fs::read(lab.stored("ep-1")).unwrap(), stored);
    lab.receiver().wait_log("PUT /v1/episodes/lab-01/ep-1 200");
    assert_eq!(lab.logged("PUT /v1/episodes/lab-01/ep-1 201"), 1);
}
