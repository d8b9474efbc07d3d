//! `cis490-shipper`'s command line: parse what the user typed (no I/O),
//! then load the configuration and run one mode. `--help` and `--version`
//! return before any file is read.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::config::{ShipperConfig, SHIPPER_DEFAULT_PATH};
use crate::shipper::{dryrun, endpoint, ping, queue, status};
use crate::{error, exit, warn};

const HELP: &str = "\
cis490-shipper: ship finished robot-lab episodes to the central receiver

USAGE:
    cis490-shipper [--config PATH] --once [--dry-run]
    cis490-shipper [--config PATH] --ping
    cis490-shipper [--config PATH] --status [--json]
    cis490-shipper [--config PATH] --check-config

MODES:
    --once          one pass: pack every finished episode (a directory in
                    <data_dir>/episodes/ holding done.marker) into
                    <data_dir>/outbox/<id>.tar.zst, upload it, and move it to
                    <data_dir>/shipped/; then apply retention. Safe to
                    interrupt at any moment; the next pass finishes the work.
                    A systemd timer runs this.
    --dry-run       with --once: print what the pass would pack, upload,
                    retire and delete; write nothing, connect to nothing
    --ping          check DNS, TCP, TLS and authentication against the
                    receiver, one line per stage; ships nothing.
    --status        where every episode stands and what the last pass did;
                    read-only, works offline and while a pass runs
    --json          with --status: one JSON object (docs/operating.md)
    --check-config  check the configuration and the files it names, offline;
                    list every problem (exit 78) or none (exit 0)

OPTIONS:
    --config PATH   configuration file [default: /etc/cis490/shipper.toml]
    -h, --help      print this help
    -V, --version   print the version

CONFIGURATION (TOML; unknown keys are errors):
    host_id              this host's id, as in the receiver's [hosts]
    data_dir             holds episodes/, outbox/, shipped/
    receiver             https://HOST[:PORT] of cis490-receiver
    ca_file              CA certificate(s) for the receiver (PEM)
                         [default: the public web PKI roots]
    cert_file, key_file  client certificate and key for mTLS (both or neither)
    token_file           bearer token; must not be group/world-readable
    compression_level    zstd level 1-19 [default: 3]
    compression_threads  zstd worker threads; 0 = none [default: 0]
    connect_timeout_s    TCP connect timeout, seconds [default: 10]
    io_timeout_s         per read/write on a connection, seconds [default: 60]
    keep_shipped_days    delete shipped episodes this many days after they
                         shipped; 0 = at once [default: keep forever]
    min_free_percent     delete the oldest shipped episodes while data_dir's
                         file system has less free [default: no limit]
    alert_after_hours    exit 69 when finished work waited this long without a
                         verdict from the receiver [default: 24]
    metrics_file         Prometheus text file written after each pass
                         [default: none]

EXIT CODES:
    0   done; nothing left to do (also: another pass was already running)
    64  usage error
    65  an episode needs a human: conflict with the receiver (see
        <data_dir>/outbox/<id>.conflict), rejected upload, a retire that
        cannot heal, a recorder still writing, or an invalid name
    69  receiver unreachable (--ping), TLS failure (certificates), or finished
        work waiting longer than alert_after_hours without a verdict
    75  temporary failure (receiver down or busy, disk full); the next pass retries
    77  the receiver refused this host's token or certificate
    78  configuration error
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once { dry_run: bool },
    Ping,
    Status { json: bool },
    CheckConfig,
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    Run { mode: Mode, config: PathBuf },
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut config = PathBuf::from(SHIPPER_DEFAULT_PATH);
    let (mut once, mut ping, mut status, mut check) = (false, false, false, false);
    let (mut dry_run, mut json) = (false, false);
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") => config = parser.value().map_err(|e| e.to_string())?.into(),
            Long("once") => once = true,
            Long("ping") => ping = true,
            Long("status") => status = true,
            Long("check-config") => check = true,
            Long("dry-run") => dry_run = true,
            Long("json") => json = true,
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let mode = match (once, ping, status, check) {
        (true, false, false, false) => Mode::Once { dry_run },
        (false, true, false, false) => Mode::Ping,
        (false, false, true, false) => Mode::Status { json },
        (false, false, false, true) => Mode::CheckConfig,
        (false, false, false, false) => {
            return Err(
                "say what to do: --once (ship), --ping (check the connection), --status or --check-config"
                    .into(),
            )
        }
        _ => return Err("--once, --ping, --status and --check-config cannot be combined".into()),
    };
    if dry_run && !once {
        return Err("--dry-run goes with --once".into());
    }
    if json && !status {
        return Err("--json goes with --status".into());
    }
    Ok(Command::Run { mode, config })
}

pub fn main() -> ExitCode {
    crate::log::init("cis490-shipper");
    ExitCode::from(run(std::env::args_os().skip(1)))
}

fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let (mode, config) = match parse(args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return exit::OK;
        }
        Ok(Command::Version) => {
            println!("cis490-shipper {}", crate::VERSION);
            return exit::OK;
        }
        Ok(Command::Run { mode, config }) => (mode, config),
        Err(e) => {
            eprintln!("cis490-shipper: {e}\nTry `cis490-shipper --help`.");
            return exit::USAGE;
        }
    };
    if mode == Mode::CheckConfig {
        return crate::check::shipper(&config);
    }
    let cfg = match ShipperConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return exit::CONFIG;
        }
    };
    match mode {
        Mode::Status { json } => {
            let now = SystemTime::now();
            let report = status::gather(&cfg.host_id, &cfg.data_dir, now);
            let text = if json {
                report.to_json()
            } else {
                report.to_table(now)
            };
            print!("{text}");
            return exit::OK;
        }
        Mode::Once { dry_run: true } => {
            return dryrun::run(&cfg, &mut std::io::stdout());
        }
        _ => {}
    }
    let ep = match endpoint(&cfg) {
        Ok(ep) => ep,
        Err(e) => {
            error!("{}: {e}", cfg.path.display());
            return exit::CONFIG;
        }
    };
    match mode {
        Mode::Ping => ping::run(&cfg, &ep, &mut std::io::stdout()),
        _ => {
            if let Some((cert, _)) = &cfg.client_auth {
                let fix = format!("issue a new one: scripts/pki.sh host {}", cfg.host_id);
                if let Some(w) = crate::check::expiring_warning(cert, &fix) {
                    warn!("{w}");
                }
            }
            match queue::run_once(&cfg, &ep) {
                Ok(None) => exit::OK,
                Ok(Some(summary)) => summary.exit_code(),
                Err(e) => {
                    error!("{e}");
                    exit::CONFIG
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Command, String> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            args(&["--once"]),
            Ok(Command::Run {
                mode: Mode::Once { dry_run: false },
                config: PathBuf::from(SHIPPER_DEFAULT_PATH)
            })
        );
        assert_eq!(
            args(&["--config", "/c", "--ping"]),
            Ok(Command::Run {
                mode: Mode::Ping,
                config: PathBuf::from("/c")
            })
        );
        assert_eq!(args(&["--once", "--help"]), Ok(Command::Help));
        assert!(args(&[]).is_err());
        assert!(args(&["--once", "--ping"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["extra"]).is_err());
        assert_eq!(
            args(&["--dry-run", "--once"]).map(|c| match c {
                Command::Run { mode, .. } => mode,
                _ => Mode::Ping,
            }),
            Ok(Mode::Once { dry_run: true })
        );
        assert!(matches!(
            args(&["--status", "--json"]),
            Ok(Command::Run {
                mode: Mode::Status { json: true },
                ..
            })
        ));
        assert!(matches!(
            args(&["--check-config"]),
            Ok(Command::Run {
                mode: Mode::CheckConfig,
                ..
            })
        ));
        for bad in [
            &["--dry-run"][..],
            &["--ping", "--dry-run"],
            &["--once", "--json"],
            &["--status", "--check-config"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_errors_exit_64_without_reading_files() {
        assert_eq!(run(["--nope"].map(OsString::from)), exit::USAGE);
        assert_eq!(run(["--version"].map(OsString::from)), exit::OK);
    }
}
