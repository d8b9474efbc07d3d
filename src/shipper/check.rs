//! `--check-config`: the configuration and every file it names, checked
//! offline, every problem listed. (Filled in below.)

use std::io::Write;
use std::path::Path;

use crate::config::ShipperConfig;
use crate::exit;

pub fn shipper(config: &Path, out: &mut dyn Write) -> u8 {
    match ShipperConfig::load(config) {
        Ok(_) => exit::OK,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            exit::CONFIG
        }
    }
}

pub fn warn_expiring(_cfg: &ShipperConfig) {}

/// notAfter of the configured client certificate, seconds since the epoch.
pub fn client_cert_expiry(_cfg: &ShipperConfig) -> Option<u64> {
    None
}
