//! Both configuration files: TOML read with nanoserde, checked key by key.
//!
//! Every error names the file, the key and what is wrong, and unknown keys
//! are errors: a typo (`io_timout_s`) must never fall back to a default in
//! silence. Key names are a contract: docs, the example files in etc/ and
//! operators' tooling use them.
//!
//! Reading the files a key points at (certificates, the token) is not this
//! module's job beyond the token's permission check: `tls` and `auth` do it
//! and add the path to their own errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoserde::{Toml, TomlParser};

use crate::auth::{self, Token, TokenHash};
use crate::ids;

pub const SHIPPER_DEFAULT_PATH: &str = "/etc/cis490/shipper.toml";
pub const RECEIVER_DEFAULT_PATH: &str = "/etc/cis490/receiver.toml";

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: key `{k}`: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parsed TOML file; reading a key takes it out.
struct Doc {
    path: PathBuf,
    /// Keys not yet read.
    map: BTreeMap<String, Toml>,
}

impl Doc {
    fn load(path: &Path) -> Result<Doc, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Doc::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Doc, ConfigError> {
        let file_err = |message: String| ConfigError {
            path: path.to_owned(),
            key: None,
            message,
        };
        check_duplicate_keys(text).map_err(file_err)?;
        let map = TomlParser::parse(text).map_err(|e| {
            file_err(format!(
                "not valid TOML near line {}: {}",
                e.line + 1,
                e.msg.trim()
            ))
        })?;
        Ok(Doc {
            path: path.to_owned(),
            map,
        })
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// Takes a key out of the document; what is left at `finish` is unknown.
    fn get(&mut self, key: &str) -> Option<Toml> {
        self.map.remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Toml::Str(s)) if s.trim().is_empty() => Err(self.err(key, "must not be empty")),
            Some(Toml::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(key, "must be a string in double quotes")),
        }
    }

    fn required_string(&mut self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.err(key, "is required but missing"))
    }

    fn path(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(PathBuf::from))
    }

    fn required_path(&mut self, key: &str) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(self.required_string(key)?))
    }

    fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Toml::Num(n)) if n.fract() == 0.0 && n >= min as f64 && n <= max as f64 => {
                Ok(n as u64)
            }
            Some(Toml::Num(_)) => {
                Err(self.err(key, format!("must be a whole number from {min} to {max}")))
            }
            Some(_) => Err(self.err(key, "must be a number (without quotes)")),
        }
    }

    /// A whole number in `min..=max`, or `None` when the key is absent.
    fn optional_integer(
        &mut self,
        key: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        self.integer(key, min, min, max).map(Some)
    }

    fn seconds(&mut self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.integer(key, default, 1, 86_400)?))
    }

    /// Every `[table]` entry, as (name, value).
    fn table(&mut self, table: &str) -> Vec<(String, Toml)> {
        let prefix = format!("{table}.");
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let v = self.map.remove(&k)?;
                Some((k[prefix.len()..].to_owned(), v))
            })
            .collect()
    }

    /// Fails on the first key nobody asked for.
    fn finish(self, known: &str) -> Result<(), ConfigError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(k, format!("unknown key (known keys: {known})"))),
        }
    }
}

/// nanoserde keeps the last of two equal keys; we refuse them, since two
/// `[hosts]` lines for one host are a mistake an operator must see. A line
/// scan is enough for the subset of TOML our files use (no inline tables or
/// multi-line strings).
fn check_duplicate_keys(text: &str) -> Result<(), String> {
    let mut section = String::new();
    let mut seen = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').trim().to_owned();
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            if !seen.insert(format!("{section}.{key}")) {
                return Err(format!("line {}: key `{key}` is set twice", n + 1));
            }
        }
    }
    Ok(())
}

/// Where the receiver is: `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverUrl {
    /// Host as written (brackets removed from IPv6 literals): used for DNS
    /// and as the TLS server name.
    pub host: String,
    pub port: u16,
}

impl ReceiverUrl {
    pub fn parse(s: &str) -> Result<ReceiverUrl, String> {
        let rest = s
            .strip_prefix("https://")
            .ok_or("must start with https:// (the shipper only speaks TLS)")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err("must be https://host:port with no path, query or user".into());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in an IPv6 address")?;
            (h, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or("has an invalid port")?,
        };
        Ok(ReceiverUrl {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` as sent in the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The lab host's configuration (`/etc/cis490/shipper.toml`).
#[derive(Debug)]
pub struct ShipperConfig {
    pub path: PathBuf,
    pub host_id: String,
    /// Holds `episodes/`, `outbox/`, `shipped/` and `.lock`.
    pub data_dir: PathBuf,
    pub receiver: ReceiverUrl,
    /// Roots to trust for the receiver. Defaults to the public webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (mTLS). Defaults to none.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub token_file: PathBuf,
    /// Read at load time; its `Debug` is redacted.
    pub token: Token,
    /// zstd level, 1-19. Defaults to 3.
    pub compression_level: i32,
    /// zstd worker threads; 0 compresses on the calling thread. Defaults to 0,
    /// so the robots keep the other cores.
    pub compression_threads: u32,
    /// Defaults to 10 s.
    pub connect_timeout: Duration,
    /// Per read or write on an established connection. Defaults to 60 s.
    pub io_timeout: Duration,
    /// What to delete from `shipped/`, and when. Defaults to nothing, ever.
    pub retention: Retention,
    /// Exit 69 (a failed unit, an alert) when finished work has waited this
    /// long without one verdict from the receiver. Defaults to 24 h.
    pub alert_after: Duration,
    /// Prometheus text file written after each pass. Defaults to none.
    pub metrics_file: Option<PathBuf>,
}

/// Retention of `shipped/` (`keep_shipped_days`, `min_free_percent`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete shipped episodes this many days after they were shipped (0:
    /// right after the receiver confirmed them). `None`: keep them forever.
    pub keep_days: Option<u64>,
    /// Delete the oldest shipped episodes while the data_dir's file system
    /// has less than this percentage free. `None`: no such rule.
    pub min_free_percent: Option<u64>,
}

const SHIPPER_KEYS: &str =
    "host_id, data_dir, receiver, ca_file, cert_file, key_file, token_file, \
     compression_level, compression_threads, connect_timeout_s, io_timeout_s, \
     keep_shipped_days, min_free_percent, alert_after_hours, metrics_file";

impl ShipperConfig {
    pub fn load(path: &Path) -> Result<ShipperConfig, ConfigError> {
        let mut doc = Doc::load(path)?;
        let host_id = doc.required_string("host_id")?;
        if !ids::is_valid(&host_id) {
            return Err(doc.err(
                "host_id",
                format!("`{host_id}` is not a valid id: {}", ids::RULE),
            ));
        }
        let data_dir = doc.required_path("data_dir")?;
        let receiver_s = doc.required_string("receiver")?;
        let receiver = ReceiverUrl::parse(&receiver_s)
            .map_err(|e| doc.err("receiver", format!("`{receiver_s}` {e}")))?;
        let ca_file = doc.path("ca_file")?;
        let cert = doc.path("cert_file")?;
        let key = doc.path("key_file")?;
        let client_auth = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(doc.err("key_file", "cert_file is set, so key_file must be set too"))
            }
            (None, Some(_)) => {
                return Err(doc.err("cert_file", "key_file is set, so cert_file must be set too"))
            }
        };
        let token_file = doc.required_path("token_file")?;
        let token =
            auth::read_token_file(&token_file).map_err(|e| doc.err("token_file", e.to_string()))?;
        let compression_level = doc.integer("compression_level", 3, 1, 19)? as i32;
        let compression_threads = doc.integer("compression_threads", 0, 0, 64)? as u32;
        let connect_timeout = doc.seconds("connect_timeout_s", 10)?;
        let io_timeout = doc.seconds("io_timeout_s", 60)?;
        let retention = Retention {
            keep_days: doc.optional_integer("keep_shipped_days", 0, 36_500)?,
            min_free_percent: doc.optional_integer("min_free_percent", 1, 99)?,
        };
        let alert_after =
            Duration::from_secs(3600 * doc.integer("alert_after_hours", 24, 1, 8760)?);
        let metrics_file = doc.path("metrics_file")?;
        doc.finish(SHIPPER_KEYS)?;
        Ok(ShipperConfig {
            path: path.to_owned(),
            host_id,
            data_dir,
            receiver,
            ca_file,
            client_auth,
            token_file,
            token,
            compression_level,
            compression_threads,
            connect_timeout,
            io_timeout,
            retention,
            alert_after,
            metrics_file,
        })
    }
}

/// The central node's configuration (`/etc/cis490/receiver.toml`).
#[derive(Debug)]
pub struct ReceiverConfig {
    pub path: PathBuf,
    /// TLS listener.
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP listener for a TLS-terminating proxy; loopback only.
    pub listen_plain: Option<SocketAddr>,
    pub store_dir: PathBuf,
    /// Certificate chain and key; required with `listen`.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Set: client certificates from this CA are required.
    pub client_ca_file: Option<PathBuf>,
    /// Defaults to 64 GiB.
    pub max_body_bytes: u64,
    /// Defaults to 64.
    pub max_connections: usize,
    /// Connections one source address may hold on the TLS listener (the
    /// plain listener, behind a proxy, is exempt). Defaults to 8.
    pub max_connections_per_ip: usize,
    /// Total time to receive a request head (and a TLS handshake). Defaults to 10 s.
    pub head_timeout: Duration,
    /// Per read of a request body, and per write of an answer. Defaults to 60 s.
    pub body_timeout: Duration,
    /// Between requests on a kept-alive connection. Defaults to 30 s.
    pub idle_timeout: Duration,
    /// `[hosts]`: host id and the sha256 of its token.
    pub hosts: Vec<(String, TokenHash)>,
}

const RECEIVER_KEYS: &str =
    "listen, listen_plain, store_dir, cert_file, key_file, client_ca_file, \
     max_body_bytes, max_connections, max_connections_per_ip, head_timeout_s, \
     body_timeout_s, idle_timeout_s, [hosts]";

fn socket_addr(doc: &mut Doc, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match doc.string(key)? {
        None => Ok(None),
        Some(s) => s.parse::<SocketAddr>().map(Some).map_err(|_| {
            doc.err(key, format!("`{s}` is not ADDRESS:PORT with an IP address, e.g. 127.0.0.1:8443 or [::]:8443"))
        }),
    }
}

impl ReceiverConfig {
    pub fn load(path: &Path) -> Result<ReceiverConfig, ConfigError> {
        let mut doc = Doc::load(path)?;
        let listen = socket_addr(&mut doc, "listen")?;
        let listen_plain = socket_addr(&mut doc, "listen_plain")?;
        if let Some(a) = listen_plain {
            if !a.ip().is_loopback() {
                return Err(doc.err(
                    "listen_plain",
                    format!(
                        "refusing plain HTTP on {a}: it is only for a reverse proxy on the same machine \
                         (use a loopback address such as 127.0.0.1:{}), use `listen` for TLS",
                        a.port()
                    ),
                ));
            }
        }
        if listen.is_none() && listen_plain.is_none() {
            return Err(doc.err(
                "listen",
                "is required (or listen_plain, behind a TLS proxy)",
            ));
        }
        let store_dir = doc.required_path("store_dir")?;
        let cert = doc.path("cert_file")?;
        let key = doc.path("key_file")?;
        let tls_identity = match (listen.is_some(), cert, key) {
            (_, Some(c), Some(k)) => Some((c, k)),
            (false, None, None) => None,
            (true, None, _) => return Err(doc.err("cert_file", "is required with `listen` (TLS)")),
            (_, _, None) => {
                return Err(doc.err("key_file", "cert_file is set, so key_file must be set too"))
            }
            (false, None, Some(_)) => {
                return Err(doc.err("cert_file", "key_file is set, so cert_file must be set too"))
            }
        };
        let client_ca_file = doc.path("client_ca_file")?;
        let max_body_bytes = doc.integer("max_body_bytes", 64 << 30, 1, 1 << 50)?;
        let max_connections = doc.integer("max_connections", 64, 1, 4096)? as usize;
        let max_connections_per_ip = doc.integer("max_connections_per_ip", 8, 1, 4096)? as usize;
        let head_timeout = doc.seconds("head_timeout_s", 10)?;
        let body_timeout = doc.seconds("body_timeout_s", 60)?;
        let idle_timeout = doc.seconds("idle_timeout_s", 30)?;
        let mut hosts: Vec<(String, TokenHash)> = Vec::new();
        for (id, value) in doc.table("hosts") {
            let key = format!("hosts.{id}");
            if !ids::is_valid(&id) {
                return Err(doc.err(
                    &key,
                    format!("`{id}` is not a valid host id: {}", ids::RULE),
                ));
            }
            if client_ca_file.is_some() && !ids::is_dns_name(&id) {
                return Err(doc.err(
                    &key,
                    format!(
                        "`{id}` cannot be bound to a client certificate: with client_ca_file set, host ids \
                         must be DNS names (labels of letters, digits and hyphens joined by dots, \
                         last label not all digits), since the certificate's DNS SAN must equal the id"
                    ),
                ));
            }
            let Toml::Str(hex) = value else {
                return Err(doc.err(
                    &key,
                    "must be a string: the sha256 of the host's token in hex",
                ));
            };
            let hash = TokenHash::from_hex(&hex).ok_or_else(|| {
                doc.err(&key, "must be 64 lowercase hex digits: the sha256 of the host's token (see scripts/pki.sh host)")
            })?;
            if let Some((other, _)) = hosts.iter().find(|(_, h)| *h == hash) {
                return Err(doc.err(
                    &key,
                    format!(
                        "has the same token hash as host `{other}`: every host needs its own token"
                    ),
                ));
            }
            hosts.push((id, hash));
        }
        if hosts.is_empty() {
            return Err(doc.err("hosts", "no hosts configured: add a [hosts] table with `\"HOST_ID\" = \"<sha256 of token>\"`"));
        }
        doc.finish(RECEIVER_KEYS)?;
        Ok(ReceiverConfig {
            path: path.to_owned(),
            listen,
            listen_plain,
            store_dir,
            tls_identity,
            client_ca_file,
            max_body_bytes,
            max_connections,
            max_connections_per_ip,
            head_timeout,
            body_timeout,
            idle_timeout,
            hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Result<Doc, ConfigError> {
        Doc::parse(Path::new("/etc/x.toml"), text)
    }

    #[test]
    fn receiver_urls() {
        let u = ReceiverUrl::parse("https://recv.lab:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("recv.lab", 8443));
        assert_eq!(u.authority(), "recv.lab:8443");
        let u = ReceiverUrl::parse("https://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.authority(), "[::1]:9");
        assert_eq!(ReceiverUrl::parse("https://r").unwrap().port, 443);
        for bad in [
            "http://r:1",
            "https://",
            "https://r:0",
            "https://r:x",
            "https://r/path",
            "r:1",
            "https://u@r",
        ] {
            assert!(ReceiverUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = doc("[hosts]\n\"a\" = \"x\"\na = \"y\"\n").err().unwrap();
        assert!(e.to_string().contains("set twice"), "{e}");
        assert!(doc("a = 1\n[t]\na = 2\n").is_ok());
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let mut d = doc("io_timout_s = 5\n").unwrap();
        assert_eq!(
            d.seconds("io_timeout_s", 60).unwrap(),
            Duration::from_secs(60)
        );
        let e = d.finish("io_timeout_s").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("io_timout_s"));
        let mut d = doc("n = \"5\"\nm = 0.5\nz = 0\n").unwrap();
        assert!(d.integer("n", 1, 1, 9).is_err());
        assert!(d.integer("m", 1, 1, 9).is_err());
        assert!(d.seconds("z", 1).is_err());
    }

    #[test]
    fn bad_toml_names_the_file() {
        let e = doc("a = = 1\n").err().unwrap();
        assert!(
            e.to_string().starts_with("/etc/x.toml: not valid TOML"),
            "{e}"
        );
    }
}
