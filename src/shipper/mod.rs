//! The lab host's side: one pass over finished episodes (`--once`), or a
//! connectivity check (`--ping`). Single-threaded, no async, no daemon:
//! systemd's timer schedules passes.
//!
//! - `cli` parses arguments and maps outcomes to exit codes; `ping` checks
//!   the path stage by stage.
//! - `queue` runs a pass: `tidy` (crash leftovers), `prepare` (reuse or
//!   pack a tarball), the upload through `client::Session` (`stream`: sent
//!   while packed; `upload`: a tarball in `outbox/`), `verdict` (what an
//!   answer means), `retire` (confirm, move to `shipped/`).
//! - `outbox` names the files of the state machine; `tree` walks an episode
//!   by descriptor and fingerprints it; `pack` turns it into a tar.zst while
//!   hashing; `progress` draws a live line on a terminal.

pub mod cli;
pub mod client;
pub mod dryrun;
pub mod outbox;
pub mod pack;
pub mod ping;
pub mod prepare;
pub mod progress;
pub mod queue;
pub mod retention;
pub mod retire;
pub mod state;
pub mod status;
pub mod stream;
pub mod tidy;
pub mod tree;
pub mod upload;
pub mod verdict;

use crate::config::ShipperConfig;
use crate::tls::{self, TlsError};
use client::Endpoint;

/// The receiver endpoint described by a config, with its TLS setup loaded.
pub fn endpoint(cfg: &ShipperConfig) -> Result<Endpoint, TlsError> {
    let client_auth = cfg
        .client_auth
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    Ok(Endpoint {
        url: cfg.receiver.clone(),
        tls: tls::client_config(cfg.ca_file.as_deref(), client_auth)?,
        connect_timeout: cfg.connect_timeout,
        io_timeout: cfg.io_timeout,
        upload_rate: cfg.max_upload_rate,
    })
}
