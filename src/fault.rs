//! Named crash points and injected I/O errors, for tests/crash.rs.
//!
//! Built only with `--features fault-injection`; otherwise every function
//! here is an empty inline stub, so the release binary carries no trigger.
//!
//! - `CIS490_CRASH_AT=<name>` kills the process (SIGKILL, so no `Drop`
//!   guard tidies anything up and hides a bug) at the first hit of that
//!   point; `<name>@k` at the k-th hit. Before dying it writes one line,
//!   `CRASHPOINT <name>`, to stderr so the test knows where it died.
//! - `CIS490_FAULT_AT=<name>:ENOSPC|EDQUOT|EIO|EAGAIN` makes every
//!   `io(<name>)` call fail with that error, for as long as the variable is
//!   set; `<name>:<ERR>@k` fails only the k-th call (a transient failure).
//!   Names: the store's file operations, and `recv.spawn` (starting a
//!   receiver thread; EAGAIN is what a pids limit gives).

/// Every crash point, so a test can loop over all of them.
pub const POINTS: &[&str] = &[
    "pack.start",
    "pack.mid_write",
    "pack.after_fsync",
    "pack.after_sidecar",
    "pack.after_rename",
    "pack.after_dirfsync",
    "up.after_connect",
    "up.after_head",
    "up.mid_body",
    "up.after_body",
    "up.after_status",
    "up.resume_offset",
    "stream.mid_body",
    "stream.after_trailer",
    "ship.after_receipt",
    "ship.after_confirm",
    "ship.after_rename",
    "ship.after_dirfsync",
    "clean.after_unlink",
    "retain.after_trash",
    "recv.after_head",
    "recv.mid_body",
    "recv.mid_chunked",
    "recv.after_trailer",
    "recv.mid_append",
    "recv.before_offset",
    "recv.after_tmp_fsync",
    "recv.after_publish",
    "recv.after_dir_fsync",
    "recv.before_response",
];

#[cfg(feature = "fault-injection")]
mod imp {
    use std::collections::HashMap;
    use std::io::{self, Write};
    use std::sync::Mutex;

    static HITS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

    pub fn point(name: &str) {
        let Ok(spec) = std::env::var("CIS490_CRASH_AT") else {
            return;
        };
        let (want, nth) = match spec.split_once('@') {
            Some((n, k)) => (n.to_owned(), k.parse::<u32>().unwrap_or(1)),
            None => (spec, 1),
        };
        if want != name {
            return;
        }
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        let count = hits
            .get_or_insert_with(HashMap::new)
            .entry(name.to_owned())
            .or_insert(0);
        *count += 1;
        if *count == nth {
            let _ = io::stderr().write_all(format!("CRASHPOINT {name}\n").as_bytes());
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own pid with a constant signal; no memory is touched.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }

    pub fn io(name: &str) -> io::Result<()> {
        let Ok(spec) = std::env::var("CIS490_FAULT_AT") else {
            return Ok(());
        };
        let Some((want, err)) = spec.split_once(':') else {
            return Ok(());
        };
        if want != name {
            return Ok(());
        }
        let (err, nth) = match err.split_once('@') {
            Some((e, k)) => (e, k.parse::<u32>().ok()),
            None => (err, None),
        };
        let code = match err {
            "ENOSPC" => libc::ENOSPC,
            "EDQUOT" => libc::EDQUOT,
            "EIO" => libc::EIO,
            "EAGAIN" => libc::EAGAIN,
            _ => return Ok(()),
        };
        if let Some(nth) = nth {
            let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
            let count = hits
                .get_or_insert_with(HashMap::new)
                .entry(format!("io:{name}"))
                .or_insert(0);
            *count += 1;
            if *count != nth {
                return Ok(());
            }
        }
        Err(io::Error::from_raw_os_error(code))
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    #[inline(always)]
    pub fn point(_name: &str) {}

    #[inline(always)]
    pub fn io(_name: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// A place where a test may kill the process.
#[inline(always)]
pub fn point(name: &str) {
    debug_assert!(POINTS.contains(&name), "unlisted crash point {name}");
    imp::point(name)
}

/// A place where a test may inject an I/O error.
#[inline(always)]
pub fn io(name: &str) -> std::io::Result<()> {
    imp::io(name)
}
