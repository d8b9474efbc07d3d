//! cis490: ship finished robot-lab episodes to a central receiver, verified,
//! exactly once.
//!
//! One package, two binaries. `cis490-shipper` runs on each lab host from a
//! systemd timer; `cis490-receiver` runs on the central node. The modules at
//! the top are shared by both: configuration, TLS, the HTTP/1.1 wire format,
//! the protocol's ids and digests. `shipper` and `receiver` hold what only one
//! side needs.
//!
//! `unsafe` is denied everywhere but in `signal` (sigwait for the receiver's
//! clean shutdown), `dirfd` (openat and friends, so a walk over another
//! user's tree never follows a symlink) and `fault` (a test-only SIGKILL),
//! each a few audited lines.
#![deny(unsafe_code)]

pub mod auth;
pub mod check;
pub mod chunked;
pub mod config;
pub mod dirfd;
pub mod exit;
pub mod fault;
pub mod fsutil;
pub mod hashing;
pub mod http;
pub mod ids;
pub mod json;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod receiver;
pub mod shipper;
pub mod signal;
pub mod sigv4;
pub mod timefmt;
pub mod tls;

/// The size of every buffer that moves bulk bytes (file to zstd, tarball to
/// socket, socket to store, file to sha256): large enough that syscalls
/// and TLS record overhead are noise next to hashing and compression, small
/// enough that memory stays flat (one buffer per stream).
pub const IO_CHUNK: usize = 256 * 1024;

/// The version both binaries report, and the receiver's ping answer carries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
