//! `cis490-shipper`'s command line: parse what the user typed (no I/O),
//! then load the configuration and run one mode. `--help` and `--version`
//! return before any file is read.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{ShipperConfig, SHIPPER_DEFAULT_PATH};
use crate::shipper::{endpoint, ping, queue};
use crate::{error, exit};

const HELP: &str = "\
cis490-shipper: ship finished robot-lab episodes to the central receiver

USAGE:
    cis490-shipper [--config PATH] --once
    cis490-shipper [--config PATH] --ping

MODES:
    --once          one pass: pack every finished episode (a directory in
                    <data_dir>/episodes/ holding done.marker) into
                    <data_dir>/outbox/<id>.tar.zst, upload it, and move it to
                    <data_dir>/shipped/. Safe to interrupt at any moment; the
                    next pass finishes the work. A systemd timer runs this.
    --ping          check DNS, TCP, TLS and authentication against the
                    receiver, one line per stage; ships nothing.

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

EXIT CODES:
    0   done; nothing left to do (also: another pass was already running)
    64  usage error
    65  an episode needs a human: conflict with the receiver (see
        <data_dir>/outbox/<id>.conflict), rejected upload, or invalid name
    69  receiver unreachable (--ping) or TLS failure (certificates)
    75  temporary failure (receiver down or busy, disk full); the next pass retries
    77  the receiver refused this host's token or certificate
    78  configuration error
";

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Once,
    Ping,
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
    let mut mode = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let m = match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") => {
                config = parser.value().map_err(|e| e.to_string())?.into();
                continue;
            }
            Long("once") => Mode::Once,
            Long("ping") => Mode::Ping,
            _ => return Err(arg.unexpected().to_string()),
        };
        if mode.is_some_and(|prev| prev != m) {
            return Err("--once and --ping cannot be combined".into());
        }
        mode = Some(m);
    }
    let mode = mode.ok_or("say what to do: --once (ship) or --ping (check the connection)")?;
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
    let cfg = match ShipperConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return exit::CONFIG;
        }
    };
    let ep = match endpoint(&cfg) {
        Ok(ep) => ep,
        Err(e) => {
            error!("{}: {e}", cfg.path.display());
            return exit::CONFIG;
        }
    };
    match mode {
        Mode::Ping => ping::run(&cfg, &ep, &mut std::io::stdout()),
        Mode::Once => match queue::run_once(&cfg, &ep) {
            Ok(None) => exit::OK,
            Ok(Some(summary)) => summary.exit_code(),
            Err(e) => {
                error!("{e}");
                exit::CONFIG
            }
        },
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
                mode: Mode::Once,
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
    }

    #[test]
    fn usage_errors_exit_64_without_reading_files() {
        assert_eq!(run(["--nope"].map(OsString::from)), exit::USAGE);
        assert_eq!(run(["--version"].map(OsString::from)), exit::OK);
    }
}
