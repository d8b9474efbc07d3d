//! Both configuration files: TOML read with nanoserde, checked key by key.
//!
//! Every error names the file, the key and what is wrong, and unknown keys
//! are errors: a typo (`io_timout_s`) must never fall back to a default in
//! silence. Key names are a contract: docs, the example files in etc/ and
//! operators' tooling use them.
//!
//! The TOML is read twice: first by a strict reader of the small part of
//! TOML these files need, which refuses everything else with the line and
//! the key, then by nanoserde, whose reading must agree (see
//! `read_plain_toml` for why). Directories cis490 fills must be absolute
//! and no system directory.
//!
//! Reading the files a key points at (certificates, the token) is not this
//! module's job beyond the token's permission check: `tls` and `auth` do it
//! and add the path to their own errors. How they are opened is:
//! `open_regular_file` refuses anything but a regular file and never blocks.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoserde::Toml;

use crate::auth::{self, Token, TokenHash};
use crate::ids;

mod doc;
mod files;
pub mod s3;
mod toml;

use doc::Doc;
#[cfg(test)]
pub(crate) use files::within_10s;
pub use files::{not_regular, open_regular_file, read_at_most, read_regular_file};

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

/// The most zstd worker threads a compression level may use, and the
/// levels that share that limit.
///
/// zstd's memory grows with the level (match tables of up to 88 MiB at
/// level 19) and, with workers, with their number (each has its own tables
/// and buffers jobs of four windows, 8 to 32 MiB). Peak RSS of the static
/// shipper packing a 300 MB episode (`/usr/bin/time -v`; the whole table is
/// in etc/shipper.toml.example) was 697 MiB at level 19 with 4 workers and
/// 451 MiB at level 15 with 4. These limits keep every accepted setting
/// under about 290 MiB (highest: level 9 with 4 workers, 267 MiB, 283 MiB
/// on a 600 MB episode; level 19 with 1, 274 MiB at both sizes); the
/// default, level 3 on the calling thread, takes 5 MiB. More than 4 workers
/// is refused at any level: each costs memory (level 3: 126 MiB with 4, 220
/// MiB with 8), and a lab host's other cores are the robots'.
fn max_compression_threads(level: i32) -> (u32, &'static str) {
    match level {
        ..=9 => (4, "1-9"),
        10..=16 => (2, "10-16"),
        _ => (1, "17-19"),
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
    /// zstd worker threads; 0 compresses on the calling thread. At most 4,
    /// fewer at high levels (`max_compression_threads`). Defaults to 0, so
    /// the robots keep the other cores.
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
    /// Upload bodies are paced to this many bytes per second. Defaults to
    /// no limit.
    pub max_upload_rate: Option<u64>,
    /// Send a tarball while it is being packed (a chunked `PUT`), not
    /// after. Defaults to true.
    pub upload_while_packing: bool,
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
     keep_shipped_days, min_free_percent, alert_after_hours, metrics_file, max_upload_rate, \
     upload_while_packing";

impl ShipperConfig {
    /// Reads and checks every key, and reads the token.
    pub fn load(path: &Path) -> Result<ShipperConfig, ConfigError> {
        ShipperConfig::read(path, true)
    }

    /// Every key, but the token left unread (`Token::not_read`), for
    /// `--check-config`, which checks the token file on its own so that a
    /// bad one is one problem in its list, not the end of the check.
    pub fn load_keys(path: &Path) -> Result<ShipperConfig, ConfigError> {
        ShipperConfig::read(path, false)
    }

    fn read(path: &Path, read_token: bool) -> Result<ShipperConfig, ConfigError> {
        let mut doc = Doc::load(path)?;
        let host_id = doc.required_string("host_id")?;
        if !ids::is_valid(&host_id) {
            return Err(doc.err(
                "host_id",
                format!("`{host_id}` is not a valid id: {}", ids::RULE),
            ));
        }
        let data_dir = doc.required_dir("data_dir", "/var/lib/cis490")?;
        let receiver_s = doc.required_string("receiver")?;
        let receiver = ReceiverUrl::parse(&receiver_s)
            .map_err(|e| doc.err("receiver", format!("`{receiver_s}` {e}")))?;
        let ca_file = doc.file("ca_file")?;
        let cert = doc.file("cert_file")?;
        let key = doc.file("key_file")?;
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
        let token = if read_token {
            auth::read_token_file(&token_file).map_err(|e| doc.err("token_file", e.to_string()))?
        } else {
            Token::not_read()
        };
        let compression_level = doc.integer("compression_level", 3, 1, 19)? as i32;
        let compression_threads = doc.integer("compression_threads", 0, 0, 4)? as u32;
        let (most, levels) = max_compression_threads(compression_level);
        if compression_threads > most {
            return Err(doc.err(
                "compression_threads",
                format!(
                    "{compression_threads} worker threads at compression_level {compression_level} \
                     would let zstd take more memory than a lab host should give (see \
                     etc/shipper.toml.example): at levels {levels} use at most {most}, or a lower level"
                ),
            ));
        }
        let connect_timeout = doc.seconds("connect_timeout_s", 10)?;
        let io_timeout = doc.seconds("io_timeout_s", 60)?;
        let retention = Retention {
            keep_days: doc.optional_integer("keep_shipped_days", 0, 36_500)?,
            min_free_percent: doc.optional_integer("min_free_percent", 1, 99)?,
        };
        let alert_after =
            Duration::from_secs(3600 * doc.integer("alert_after_hours", 24, 1, 8760)?);
        let metrics_file = doc.path("metrics_file")?;
        let max_upload_rate = match doc.string("max_upload_rate")? {
            None => None,
            Some(text) => Some(
                crate::shipper::client::pace::parse_rate(&text)
                    .map_err(|e| doc.err("max_upload_rate", format!("`{text}`: {e}")))?,
            ),
        };
        let upload_while_packing = doc.boolean("upload_while_packing", true)?;
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
            max_upload_rate,
            upload_while_packing,
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
    /// Prometheus text file refreshed every 10 s. Defaults to none.
    pub metrics_file: Option<PathBuf>,
    /// A partial upload untouched for longer is deleted. Defaults to 72 h.
    pub partial_ttl: Duration,
    /// A host's partial uploads together stay under this, oldest deleted
    /// first. Defaults to `max_body_bytes`: one upload of the largest size
    /// can always be resumed, and no host holds more than that unfinished.
    pub max_partial_bytes_per_host: u64,
    /// Set: uploads are published to this object store, and `store_dir`
    /// is only the spool of uploads in progress. Defaults to none.
    pub s3: Option<s3::S3Config>,
}

const RECEIVER_KEYS: &str =
    "listen, listen_plain, store_dir, cert_file, key_file, client_ca_file, \
     max_body_bytes, max_connections, max_connections_per_ip, head_timeout_s, \
     body_timeout_s, idle_timeout_s, metrics_file, partial_ttl_hours, \
     max_partial_bytes_per_host, s3_endpoint, s3_bucket, s3_prefix, s3_region, \
     s3_access_key_id, s3_secret_key_file, s3_ca_file, s3_max_single_put_bytes, [hosts]";

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
        let store_dir = doc.required_dir("store_dir", "/var/lib/cis490-receiver")?;
        let cert = doc.file("cert_file")?;
        let key = doc.file("key_file")?;
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
        let client_ca_file = doc.file("client_ca_file")?;
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
                         must be DNS names ({}), since the certificate's DNS SAN must equal the id",
                        ids::DNS_RULE
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
        let metrics_file = doc.path("metrics_file")?;
        let partial_ttl =
            Duration::from_secs(3600 * doc.integer("partial_ttl_hours", 72, 1, 8760)?);
        let max_partial_bytes_per_host =
            doc.integer("max_partial_bytes_per_host", max_body_bytes, 0, 1 << 50)?;
        let s3 = s3::read(&mut doc, max_body_bytes)?;
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
            metrics_file,
            partial_ttl,
            max_partial_bytes_per_host,
            s3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::doc::*;
    use super::files::*;
    use super::toml::*;
    use super::*;
    use nanoserde::TomlParser;

    fn doc(text: &str) -> Result<Doc, ConfigError> {
        Doc::parse(Path::new("/etc/x.toml"), text)
    }

    /// A receiver.toml in `dir` with a plain listener, one host and
    /// `extra` keys, loaded.
    fn load_receiver(dir: &std::path::Path, extra: &str) -> Result<ReceiverConfig, ConfigError> {
        let path = dir.join("receiver.toml");
        let toml = format!(
            "listen_plain = \"127.0.0.1:1\"\nstore_dir = \"{}\"\n{extra}[hosts]\n\"lab-01\" = \"{}\"\n",
            dir.join("store").display(),
            "ab".repeat(32)
        );
        std::fs::write(&path, toml).unwrap();
        ReceiverConfig::load(&path)
    }

    /// `partial_ttl_hours` and `max_partial_bytes_per_host`: defaults (the
    /// cap follows `max_body_bytes`), values, and a refusal naming the key.
    #[test]
    fn receiver_partial_bounds() {
        let dir = std::env::temp_dir().join(format!("cis490-cfg-partials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let load = |extra: &str| load_receiver(&dir, extra);
        let c = load("").unwrap();
        assert_eq!(c.partial_ttl, Duration::from_secs(72 * 3600));
        assert_eq!(c.max_partial_bytes_per_host, c.max_body_bytes);
        let c = load("max_body_bytes = 5000\n").unwrap();
        assert_eq!(c.max_partial_bytes_per_host, 5000);
        let c = load("partial_ttl_hours = 1\nmax_partial_bytes_per_host = 0\n").unwrap();
        assert_eq!(
            (c.partial_ttl, c.max_partial_bytes_per_host),
            (Duration::from_secs(3600), 0)
        );
        for bad in ["partial_ttl_hours = 0\n", "partial_ttl_hours = 8761\n"] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains("partial_ttl_hours"), "{e}");
        }
        let e = load("max_partial_bytes_per_host = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_partial_bytes_per_host"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The `s3_*` keys: none is the local store; any needs the four
    /// without a default; the rest default; each refusal names its key.
    #[test]
    fn receiver_s3_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cis490-cfg-s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("s3.secret");
        std::fs::write(&secret, "c2VjcmV0/key+1=\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let load = |extra: &str| load_receiver(&dir, extra);
        assert!(load("").unwrap().s3.is_none());
        let required = format!(
            "s3_endpoint = \"http://127.0.0.1:7480\"\ns3_bucket = \"cis490\"\n\
             s3_access_key_id = \"AK01\"\ns3_secret_key_file = \"{}\"\n",
            secret.display()
        );
        let c = load(&required).unwrap().s3.unwrap();
        assert_eq!(
            (
                c.bucket.as_str(),
                c.prefix.as_str(),
                c.credentials.region.as_str()
            ),
            ("cis490", "", "us-east-1")
        );
        assert_eq!(c.credentials.secret_key, "c2VjcmV0/key+1=");
        assert_eq!(c.max_single_put_bytes, 5 << 30);
        assert!(
            !format!("{c:?}").contains("c2VjcmV0"),
            "the secret is redacted"
        );
        for key in [
            "s3_endpoint",
            "s3_bucket",
            "s3_access_key_id",
            "s3_secret_key_file",
        ] {
            let without: String = required
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = load(&without).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("required"), "{e}");
        }
        for (extra, key) in [
            ("s3_endpoint = \"ftp://x\"\n", "s3_endpoint"),
            ("s3_bucket = \"Bad_Bucket\"\n", "s3_bucket"),
            ("s3_prefix = \"/abs/\"\n", "s3_prefix"),
            ("s3_region = \"\"\n", "s3_region"),
            ("s3_ca_file = \"/etc/hostname\"\n", "s3_ca_file"), // with http://
            (
                "s3_max_single_put_bytes = 1000\n",
                "s3_max_single_put_bytes",
            ),
            ("s3_bukket = \"x\"\n", "s3_bukket"),
        ] {
            // The bad value instead of the good one (a duplicate key is
            // an error of its own).
            let name = extra.split(' ').next().unwrap();
            let text: String = required
                .lines()
                .filter(|l| !l.starts_with(&format!("{name} ")))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + extra;
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&required).unwrap_err().to_string();
        assert!(
            e.contains("s3_secret_key_file") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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

    /// What a one-line document must give for key `a`.
    enum Want {
        Str(&'static str),
        Int(f64),
        /// Read as the float it is, and refused by every integer key.
        Float(f64),
        Bool(bool),
        /// Refused; the error contains these words and names line 1.
        Refused(&'static str),
    }

    /// D10: every TOML form we could think of is read exactly as TOML reads
    /// it, or refused with the line, never misread (nanoserde misreads most
    /// of the refused ones; see `read_plain_toml`).
    #[test]
    fn d10_toml_forms_read_exactly_or_are_refused() {
        use Want::*;
        let cases: &[(&str, Want)] = &[
            // Strings: plain, with tab, UTF-8, `#`, a trailing comment.
            ("a = \"/var/lib/cis490\"", Str("/var/lib/cis490")),
            ("a = \"x\ty\"", Str("x\ty")),
            ("a = \"é ü\"", Str("é ü")),
            ("a = \"x#y\"", Str("x#y")),
            ("a = \"x\" # note", Str("x")),
            ("a = \"x\"#note", Str("x")),
            ("  a\t=\t\"x\"  ", Str("x")),
            ("a=\"x\"", Str("x")),
            ("a = \"x\"\r", Str("x")),
            // Escapes: nanoserde reads `\t` as `t`, `\u0020` as `u0020`.
            ("a = \"x\\ty\"", Refused("backslash")),
            ("a = \"\\u0020\"", Refused("backslash")),
            ("a = \"C:\\\\data\"", Refused("backslash")),
            ("a = \"\\q\"", Refused("backslash")),
            ("a = 'x'", Refused("double quotes")),
            ("a = '''x'''", Refused("double quotes")),
            ("a = \"\"\"x\"\"\"", Refused("multi-line")),
            ("a = \"\"", Refused("empty")),
            ("a = \"x", Refused("closing")),
            ("a = \"x\" \"y\"", Refused("one `key = value` a line")),
            ("a = x", Refused("double quotes")),
            // Integers.
            ("a = 5", Int(5.0)),
            ("a = 0", Int(0.0)),
            ("a = +5", Int(5.0)),
            ("a = -5", Int(-5.0)),
            ("a = 1_000", Int(1000.0)),
            ("a = 5 # note", Int(5.0)),
            ("a = 5#note", Int(5.0)),
            ("a = 007", Refused("leading zeros")),
            ("a = 1__0", Refused("single underscores")),
            ("a = 1_", Refused("single underscores")),
            ("a = _1", Refused("double quotes")),
            ("a = 0x10", Refused("decimal")),
            ("a = 0o17", Refused("decimal")),
            ("a = 0b1", Refused("decimal")),
            ("a = 99999999999999999999", Refused("too large")),
            ("a = 1 b = 2", Refused("one `key = value` a line")),
            // Floats: read, then refused by every integer key.
            ("a = 3.0", Float(3.0)),
            ("a = -0.5", Float(-0.5)),
            ("a = 1_0.2_5", Float(10.25)),
            ("a = inf", Float(f64::INFINITY)),
            ("a = -inf", Float(f64::NEG_INFINITY)),
            ("a = 1e3", Refused("exponents")),
            ("a = 1.5E3", Refused("exponents")),
            ("a = 03.5", Refused("not a TOML number")),
            ("a = 3.", Refused("not a TOML number")),
            // Other value kinds no key takes.
            ("a = true", Bool(true)),
            ("a = false", Bool(false)),
            ("a = True", Refused("not a TOML value")),
            ("a = 1979-05-27", Refused("dates")),
            ("a = 07:32:00", Refused("dates")),
            ("a = [1, 2]", Refused("arrays")),
            ("a = { b = 1 }", Refused("inline tables")),
            ("a =", Refused("no value")),
            // Keys.
            ("a.b = 1", Refused("dotted keys")),
            ("a . b = 1", Refused("dotted keys")),
            ("\"a.b\" = 1", Refused("[hosts]")),
            ("'a' = 1", Refused("double quotes")),
            ("\"\" = 1", Refused("empty")),
            ("\"a\\u0062\" = 1", Refused("backslash")),
            ("007 = 1", Refused("double quotes")),
            ("-a = 1", Refused("double quotes")),
            ("a$b = 1", Refused("expected `=`")),
            ("$a = 1", Refused("expected a key")),
            ("é = 1", Refused("expected a key")),
            ("a", Refused("expected `=`")),
            // Control characters: nanoserde ends the file at a NUL.
            ("a = \"x\u{0}y\"", Refused("U+0000")),
            ("a = 1\u{0}", Refused("U+0000")),
            ("a = 1\rb = 2", Refused("U+000D")),
            ("a = \"x\u{7f}\"", Refused("U+007F")),
            ("# \u{1b}[31m", Refused("U+001B")),
            // Tables.
            ("[[t]]", Refused("arrays of tables")),
            ("[a.b]", Refused("dotted table")),
            ("[\"hosts\"]", Refused("quoted table")),
            ("[hosts", Refused("[hosts]")),
            ("[hosts] x", Refused("[hosts]")),
        ];
        for (text, want) in cases {
            let got = doc(text);
            match (want, got) {
                (Str(v), Ok(mut d)) => {
                    assert_eq!(d.get("a"), Some(Toml::Str((*v).into())), "{text:?}")
                }
                (Int(v), Ok(mut d)) => {
                    assert_eq!(d.map.get("a"), Some(&Toml::Num(*v)), "{text:?}");
                    assert!(
                        d.integer("a", 1, 0, 1 << 20).is_ok() == (*v >= 0.0),
                        "{text:?}"
                    );
                }
                (Float(v), Ok(mut d)) => {
                    assert_eq!(d.map.get("a"), Some(&Toml::Num(*v)), "{text:?}");
                    let e = d.integer("a", 1, 0, 1 << 20).unwrap_err().to_string();
                    assert!(e.contains("whole number"), "{text:?}: {e}");
                }
                (Bool(v), Ok(mut d)) => {
                    assert_eq!(d.map.get("a"), Some(&Toml::Bool(*v)), "{text:?}");
                    assert_eq!(d.boolean("a", !*v).ok(), Some(*v), "{text:?}");
                    let e = doc(text).unwrap().integer("a", 1, 0, 1).unwrap_err();
                    assert!(e.to_string().contains("must be a number"), "{text:?}: {e}");
                }
                (Refused(words), Err(e)) => {
                    let e = e.to_string();
                    assert!(e.contains(words), "{text:?}: {words:?} missing: {e}");
                    assert!(e.contains("line 1"), "{text:?}: no line: {e}");
                    assert!(e.starts_with("/etc/x.toml: "), "{text:?}: {e}");
                }
                (Refused(_), Ok(mut d)) => {
                    panic!("{text:?} was accepted as {:?}", d.get("a"))
                }
                (_, Err(e)) => panic!("{text:?} was refused: {e}"),
            }
        }
        // nan is no number either (and NaN != NaN, so apart).
        let mut d = doc("a = nan\n").unwrap();
        assert!(d.integer("a", 1, 0, 9).is_err());
    }

    #[test]
    fn d10_keys_lines_tables_and_bom() {
        // The key and the line are named, for refusals of valid TOML.
        let e = doc("# c\n\nstore_dir = \"/srv/a\\tb\"\n").err().unwrap();
        assert_eq!(e.key.as_deref(), Some("store_dir"));
        assert!(e.message.starts_with("line 3: "), "{e}");
        // CRLF line ends read as LF.
        let mut d = doc("a = \"x\"\r\nb = 2\r\n[hosts]\r\n\"h\" = \"y\"\r\n").unwrap();
        assert_eq!(d.get("b"), Some(Toml::Num(2.0)));
        assert_eq!(d.get("hosts.h"), Some(Toml::Str("y".into())));
        // A BOM at the start is dropped; anywhere else it is no key.
        let mut d = doc("\u{feff}host_id = \"lab-01\"\n").unwrap();
        assert_eq!(d.required_string("host_id").unwrap(), "lab-01");
        let e = doc("a = 1\n\u{feff}b = 2\n").err().unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
        // Under [hosts], a quoted id with dots is one key (nanoserde would
        // read a bare `lab.x` as the same flattened key, hence the refusal).
        let mut d = doc("[hosts] # ids\n\"lab-01.example\" = \"h\"\nlab_2 = \"i\"\n").unwrap();
        let hosts = d.table("hosts");
        assert_eq!(
            hosts,
            vec![
                ("lab-01.example".into(), Toml::Str("h".into())),
                ("lab_2".into(), Toml::Str("i".into()))
            ]
        );
        let e = doc("[hosts]\nlab.x = \"h\"\n").err().unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().contains("dotted"), "{e}");
        // Bare keys that nanoserde tokenises as something else read as written.
        for k in ["inf", "nan", "true", "e5", "_x", "a-1"] {
            let mut d = doc(&format!("{k} = 1\n")).unwrap();
            assert_eq!(d.get(k), Some(Toml::Num(1.0)), "{k}");
        }
        let mut d = doc("\"007\" = 1\n\"a b\" = 2\n").unwrap();
        assert_eq!(d.get("007"), Some(Toml::Num(1.0)));
        assert_eq!(d.get("a b"), Some(Toml::Num(2.0)));
        // A table twice: TOML refuses it, nanoserde merges.
        let e = doc("[hosts]\na = \"1\"\n[hosts]\nb = \"2\"\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("twice"), "{e}");
        // A key, then its `=` on the next line: nanoserde reads it, TOML not.
        let e = doc("a\n= 1\n").err().unwrap();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn d10_nanoserde_disagreement_is_an_error() {
        // Unreachable through `Doc::parse`, which only hands nanoserde what
        // both read alike; the tripwire itself must still fire.
        let plain = read_plain_toml("a = \"x\"\nb = 2\n").unwrap();
        let mut map = TomlParser::parse("a = \"x\"\nb = 2\n").unwrap();
        assert!(check_agreement(&plain, &map).is_ok());
        map.insert("a".into(), Toml::Str("y".into()));
        assert_eq!(check_agreement(&plain, &map), Err((Some(1), "a".into())));
        map.insert("a".into(), Toml::Str("x".into()));
        map.insert("c".into(), Toml::Num(1.0));
        assert_eq!(check_agreement(&plain, &map), Err((None, "c".into())));
    }

    #[test]
    fn d10_system_and_relative_dirs_are_refused() {
        for bad in [
            "/",
            "//",
            "/.",
            "/usr",
            "/usr/",
            "//usr",
            "/usr/.",
            "/./usr",
            "/var",
            "/var/lib",
            "/var/lib/",
            "/tmp",
            "/tmp/",
            "/home",
            "/etc",
            "/proc/self",
            "/sys/fs",
            "/dev/shm",
            "/run",
            "/srv",
            "/root",
        ] {
            let e = check_own_dir(Path::new(bad), "/var/lib/cis490").unwrap_err();
            assert!(e.contains("/var/lib/cis490"), "{bad}: {e}");
        }
        for bad in [
            "data",
            "./data",
            "var/lib/cis490",
            "",
            "/var/lib/cis490/../../etc",
        ] {
            let e = check_own_dir(Path::new(bad), "/var/lib/cis490").unwrap_err();
            assert!(e.contains("relative") || e.contains(".."), "{bad}: {e}");
        }
        for good in [
            "/var/lib/cis490",
            "/var/lib/cis490/",
            "/var/lib/cis490-receiver",
            "/srv/cis490/store",
            "/tmp/cis490-test",
            "/home/robot/data",
            "/devices",
            "/data",
        ] {
            assert_eq!(check_own_dir(Path::new(good), "x"), Ok(()), "{good}");
        }
    }

    #[test]
    fn d10_only_regular_files_are_opened_and_never_block() {
        let dir = std::env::temp_dir().join(format!("cis490-cfg-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let sock = dir.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();
        for (path, kind) in [
            (&fifo, "a FIFO"),
            (&sock, "a socket"),
            (&dir, "a directory"),
            (&PathBuf::from("/dev/null"), "a character device"),
        ] {
            let p = path.clone();
            let e = within_10s(move || read_regular_file(&p, 10).unwrap_err());
            assert!(e.to_string().contains(kind), "{}: {e}", path.display());
        }
        // Swapped after the path was checked: the open does not block on a
        // FIFO (O_NONBLOCK) and fstat refuses it.
        let p = fifo.clone();
        let e = within_10s(move || open_nonblocking_checked(&p).unwrap_err());
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert_eq!(read_regular_file(&file, 1).unwrap(), b"x");
        let e = read_regular_file(&file, 0).unwrap_err();
        assert!(e.to_string().contains("larger than 0 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn d10_compression_threads_are_bounded_by_level() {
        let most: Vec<u32> = (1..=19).map(|l| max_compression_threads(l).0).collect();
        assert_eq!(
            most,
            [4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1]
        );
        assert_eq!(max_compression_threads(19).1, "17-19");
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
