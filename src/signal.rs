//! SIGTERM/SIGINT for the receiver's clean shutdown, without a handler.
//!
//! std has no signal API. Instead of an async-signal handler (which may do
//! almost nothing safely), the receiver blocks both signals in every thread
//! (the mask is inherited, so `block_termination` must run before any thread
//! is spawned) and one thread waits for them with sigwait(2). This module
//! is the crate's only `unsafe` outside test-only fault injection.
#![allow(unsafe_code)]

use std::io;

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it
/// spawns afterwards.
pub fn block_termination() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: a valid, initialised set; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until SIGTERM or SIGINT arrives; returns its name.
pub fn wait_termination() -> &'static str {
    let set = termination_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: valid set and out-pointer; sigwait only writes `sig`.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
        }
    }
}
