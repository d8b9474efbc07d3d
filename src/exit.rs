//! Exit codes, from sysexits(3), shared by both binaries.
//!
//! systemd units and alerting key off these, so they are part of the
//! interface: `SuccessExitStatus=75` lets "retry later" pass quietly while
//! 65/69/77/78 trigger `OnFailure=`.

/// Everything done; nothing left for the next pass.
pub const OK: u8 = 0;
/// The command line was wrong.
pub const USAGE: u8 = 64;
/// Data needs a human: an episode in conflict with the receiver or rejected.
pub const DATAERR: u8 = 65;
/// The receiver could not be reached, or TLS failed (certificate, handshake).
pub const UNAVAILABLE: u8 = 69;
/// The receiver, or a run already in progress, will not be reached this
/// time; the next pass retries.
pub const TEMPFAIL: u8 = 75;
/// The receiver refused our credentials (401/403).
pub const NOPERM: u8 = 77;
/// The configuration is wrong: a file, a key, a value.
pub const CONFIG: u8 = 78;
/// An internal error: a bug, or an environment we did not foresee.
pub const SOFTWARE: u8 = 70;
