//! `cis490-receiver`'s command line: parse arguments (no I/O), then load the
//! configuration, build the TLS configuration, open the store and run the
//! server; map the outcome to an exit code. `--help`/`--version` return
//! before any file is read. What the server does with its parts is
//! `server`'s business.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{ReceiverConfig, RECEIVER_DEFAULT_PATH};
use crate::receiver::server::{ServeError, Server};
use crate::receiver::store::Store;
use crate::s3::store::S3Store;
use crate::{error, exit, info, tls, warn};

const HELP: &str = "\
cis490-receiver: store episode uploads from cis490-shipper, atomically and exactly once

USAGE:
    cis490-receiver [--config PATH]
    cis490-receiver [--config PATH] --check-config

OPTIONS:
    --config PATH   configuration file [default: /etc/cis490/receiver.toml]
    --check-config  check the configuration and the files it names, offline;
                    list every problem (exit 78) or none (exit 0)
    -h, --help      print this help
    -V, --version   print the version

Runs until SIGTERM or SIGINT, then finishes running requests (up to 20 s).
Accepts PUT, and HEAD + PATCH to resume a cut upload (docs/transport.md).
Logs one line per request to stderr (journald priorities under systemd);
`listening on https://ADDR:PORT` says it is ready.

CONFIGURATION (TOML; unknown keys are errors):
    listen            TLS listener, IP:PORT (e.g. \"[::]:8443\")
    listen_plain      optional plain-HTTP listener for a TLS proxy; loopback only
    store_dir         where <host_id>/<episode_id>.tar.zst files go
    cert_file         server certificate chain (PEM); required with listen
    key_file          its private key (PEM)
    client_ca_file    set: client certificates from this CA are required, and
                      each must name its host id as a DNS SAN
    max_body_bytes    largest upload accepted [default: 68719476736 (64 GiB)]
    max_connections   concurrent connections; 503 beyond [default: 64]
    max_connections_per_ip
                      connections one address may hold on the TLS listener
                      [default: 8]
    head_timeout_s    total time for a handshake or request head [default: 10]
    body_timeout_s    per body read and answer write [default: 60]
    idle_timeout_s    keep-alive wait for the next request [default: 30]
    metrics_file      Prometheus text file refreshed every 10 s [default: none]
    partial_ttl_hours delete a partial (resumable) upload untouched this long
                      [default: 72]
    max_partial_bytes_per_host
                      a host's partial uploads together stay under this,
                      oldest deleted first [default: max_body_bytes]
    s3_endpoint       publish to this S3-compatible store (https://HOST[:PORT],
                      or http:// on this machine); store_dir is then the spool
    s3_bucket, s3_prefix, s3_region, s3_access_key_id, s3_secret_key_file,
    s3_ca_file        the bucket, a key prefix [default: none], the signing
                      region [default: us-east-1], the key pair (the secret in
                      a 0600 file), the store's CA [default: public roots]
    [hosts]           \"HOST_ID\" = \"<sha256 of its token, lowercase hex>\"

EXIT CODES:
    0 stopped by a signal    64 usage error    69 cannot listen
    70 internal error        78 configuration error
";

enum Command {
    Help,
    Version,
    Serve { config: PathBuf },
    Check { config: PathBuf },
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut config = PathBuf::from(RECEIVER_DEFAULT_PATH);
    let mut check = false;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") => config = parser.value()?.into(),
            Long("check-config") => check = true,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(if check {
        Command::Check { config }
    } else {
        Command::Serve { config }
    })
}

pub fn main() -> ExitCode {
    crate::log::init("cis490-receiver");
    let cmd = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cis490-receiver: {e}\nTry `cis490-receiver --help`.");
            return ExitCode::from(exit::USAGE);
        }
    };
    let config = match cmd {
        Command::Help => {
            print!("{HELP}");
            return ExitCode::from(exit::OK);
        }
        Command::Version => {
            println!("cis490-receiver {}", crate::VERSION);
            return ExitCode::from(exit::OK);
        }
        Command::Serve { config } => config,
        Command::Check { config } => return ExitCode::from(crate::check::receiver(&config)),
    };
    let config = match ReceiverConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let tls = match &config.tls_identity {
        None => None,
        Some((cert, key)) => {
            match tls::server_config(cert, key, config.client_ca_file.as_deref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    error!("{}: {e}", config.path.display());
                    return ExitCode::from(exit::CONFIG);
                }
            }
        }
    };
    let store = match Store::open(&config.store_dir) {
        Ok((s, removed)) => {
            if removed > 0 {
                info!("removed {removed} unfinished upload(s) left by an earlier run");
            }
            s
        }
        Err(e) => {
            error!("store_dir: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let store = match &config.s3 {
        None => store,
        Some(cfg) => match S3Store::new(cfg) {
            Ok(s3) => {
                if !cfg.endpoint.tls && !cfg.endpoint.is_loopback() {
                    warn!(
                        "{}: s3_endpoint {} is plain HTTP to another machine: requests are \
                         signed (the secret never travels), but tarballs cross the network \
                         unencrypted; use https://",
                        config.path.display(),
                        cfg.endpoint.url()
                    );
                }
                // Not fatal: a store that is down now gets 503s until it is
                // back, and the receiver must be up to say so.
                match s3.check() {
                    Ok(()) => info!("publishing to {}", s3.describe()),
                    Err(e) => warn!("{e}; uploads are answered 503 until this is fixed"),
                }
                store.publish_to(s3)
            }
            Err(e) => {
                error!("{}: key `s3_ca_file`: {e}", config.path.display());
                return ExitCode::from(exit::CONFIG);
            }
        },
    };
    info!(
        "cis490-receiver {} {} {} for {} host(s){}",
        crate::VERSION,
        if config.s3.is_some() {
            "spooling in"
        } else {
            "storing in"
        },
        config.store_dir.display(),
        config.hosts.len(),
        if config.client_ca_file.is_some() {
            ", client certificates required"
        } else {
            ""
        }
    );
    match Server::new(config, store, tls).run() {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e @ ServeError::Bind(..)) => {
            error!("{e}");
            ExitCode::from(exit::UNAVAILABLE)
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Command, lexopt::Error> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn arguments() {
        assert!(
            matches!(args(&[]), Ok(Command::Serve { config }) if config.as_os_str() == RECEIVER_DEFAULT_PATH)
        );
        assert!(
            matches!(args(&["--config", "/x"]), Ok(Command::Serve { config }) if config.as_os_str() == "/x")
        );
        assert!(matches!(args(&["--help", "--bogus"]), Ok(Command::Help)));
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--config"]).is_err());
    }
}
