//! The receiver's `s3_*` keys: an S3-compatible object store (Ceph RGW,
//! AWS S3, MinIO) as the place uploads are published to, instead of
//! `store_dir` itself. `store_dir` stays the local spool: partial
//! (resumable) uploads and temps live there until they are published.
//!
//! All or nothing: with no `s3_*` key the receiver stores in `store_dir`
//! exactly as before; with any of them, `s3_endpoint`, `s3_bucket`,
//! `s3_access_key_id` and `s3_secret_key_file` are required. The secret is
//! read here, under the token file's rules (a regular file, mode 0600 or
//! stricter), and is kept in a [`Credentials`] whose `Debug` is redacted.
//!
//! `s3_max_single_put_bytes` is the largest object sent with one `PUT`;
//! larger ones go by multipart upload. 5 GiB is the limit of AWS and of
//! RGW's default (`rgw_max_put_size`); the key exists so that a test can
//! exercise multipart without writing 5 GiB, and for stores configured
//! lower. It cannot go below 5 MiB, the smallest part S3 accepts.

use std::net::IpAddr;
use std::path::PathBuf;

use super::doc::Doc;
use super::{ConfigError, ReceiverUrl};
use crate::sigv4::Credentials;

/// The smallest part of a multipart upload (but the last) that S3 accepts.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The largest single `PUT` AWS S3 takes, and RGW by default.
pub const MAX_SINGLE_PUT_BYTES: u64 = 5 << 30;
/// The most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// Where the store answers: `https://host[:port]`, or `http://` (plain:
/// for a gateway on the same machine; the receiver warns otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    pub tls: bool,
    /// As written (brackets removed from an IPv6 literal): for DNS and as
    /// the TLS server name.
    pub host: String,
    pub port: u16,
}

impl S3Endpoint {
    pub fn parse(s: &str) -> Result<S3Endpoint, String> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(
                "must start with https:// (or http:// for a gateway on this machine)".into(),
            );
        };
        let bare = rest.strip_suffix('/').unwrap_or(rest);
        let explicit_port = match bare.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => bare.contains(':'),
        };
        // The host and port rules are the shipper's `receiver`'s.
        let url = ReceiverUrl::parse(&format!("https://{rest}")).map_err(|_| {
            "must be http(s)://host[:port] with no path, query or user (addressing is \
             path-style: the bucket is s3_bucket)"
                .to_owned()
        })?;
        let port = match (explicit_port, tls) {
            (true, _) | (false, true) => url.port,
            (false, false) => 80,
        };
        Ok(S3Endpoint {
            tls,
            host: url.host,
            port,
        })
    }

    /// `host:port` as sent in (and signed with) the `Host` header.
    pub fn authority(&self) -> String {
        ReceiverUrl {
            host: self.host.clone(),
            port: self.port,
        }
        .authority()
    }

    /// `scheme://host:port`, for log lines.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// Whether the host is this machine (`localhost` or a loopback IP):
    /// plain HTTP to it crosses no network.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The object store the receiver publishes to.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: S3Endpoint,
    /// Path-style: requests go to `/<bucket>/<key>`.
    pub bucket: String,
    /// Put before every key (e.g. `cis490/`). Defaults to empty.
    pub prefix: String,
    /// Access key, secret (from `s3_secret_key_file`) and region (the
    /// signature's scope). Region defaults to `us-east-1`.
    pub credentials: Credentials,
    pub secret_key_file: PathBuf,
    /// CA certificate(s) for an `https://` endpoint. Defaults to the
    /// public webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Objects up to this size go with one `PUT`, larger ones by multipart
    /// upload. Defaults to 5 GiB.
    pub max_single_put_bytes: u64,
}

/// Reads the `s3_*` keys, if any is set (see the module doc).
pub(super) fn read(doc: &mut Doc, max_body_bytes: u64) -> Result<Option<S3Config>, ConfigError> {
    if !doc.map.keys().any(|k| k.starts_with("s3_")) {
        return Ok(None);
    }
    let required = |doc: &mut Doc, key: &str| {
        doc.string(key)?.ok_or_else(|| {
            doc.err(
                key,
                "is required once any s3_* key is set (s3_endpoint, s3_bucket, \
                 s3_access_key_id, s3_secret_key_file)",
            )
        })
    };
    let endpoint_s = required(doc, "s3_endpoint")?;
    let endpoint = S3Endpoint::parse(&endpoint_s)
        .map_err(|e| doc.err("s3_endpoint", format!("`{endpoint_s}` {e}")))?;
    let bucket = required(doc, "s3_bucket")?;
    check(&bucket, bucket_rule).map_err(|e| doc.err("s3_bucket", format!("`{bucket}` {e}")))?;
    let prefix = doc.string("s3_prefix")?.unwrap_or_default();
    check(&prefix, prefix_rule).map_err(|e| doc.err("s3_prefix", format!("`{prefix}` {e}")))?;
    let region = doc
        .string("s3_region")?
        .unwrap_or_else(|| "us-east-1".to_owned());
    check(&region, region_rule).map_err(|e| doc.err("s3_region", format!("`{region}` {e}")))?;
    let access_key = required(doc, "s3_access_key_id")?;
    check(&access_key, access_key_rule)
        .map_err(|e| doc.err("s3_access_key_id", format!("`{access_key}` {e}")))?;
    let secret_key_file = PathBuf::from(required(doc, "s3_secret_key_file")?);
    let secret = crate::auth::read_secret_file(&secret_key_file, "an S3 secret key")
        .map_err(|e| doc.err("s3_secret_key_file", e.to_string()))?;
    let ca_file = doc.file("s3_ca_file")?;
    if ca_file.is_some() && !endpoint.tls {
        return Err(doc.err(
            "s3_ca_file",
            format!("is for an https:// endpoint; s3_endpoint is `{endpoint_s}`"),
        ));
    }
    let max_single_put_bytes = doc.integer(
        "s3_max_single_put_bytes",
        MAX_SINGLE_PUT_BYTES,
        MIN_PART_BYTES,
        MAX_SINGLE_PUT_BYTES,
    )?;
    // The largest upload must fit in MAX_PARTS parts of at most that size.
    if max_body_bytes > MAX_PARTS * max_single_put_bytes {
        return Err(doc.err(
            "s3_max_single_put_bytes",
            format!(
                "{max_single_put_bytes} is too small for max_body_bytes ({max_body_bytes}): a \
                 multipart upload has at most {MAX_PARTS} parts of at most this size"
            ),
        ));
    }
    Ok(Some(S3Config {
        endpoint,
        bucket,
        prefix,
        credentials: Credentials {
            access_key,
            secret_key: secret.expose().to_owned(),
            region,
        },
        secret_key_file,
        ca_file,
        max_single_put_bytes,
    }))
}

fn check(value: &str, rule: fn(&str) -> Result<(), &'static str>) -> Result<(), String> {
    rule(value).map_err(str::to_owned)
}

/// S3's bucket naming rules (the strict ones AWS applies to new buckets):
/// path-style addressing puts the name in the path as it is.
fn bucket_rule(b: &str) -> Result<(), &'static str> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len())
        || !ok_chars
        || !ends(b.bytes().next())
        || !ends(b.bytes().last())
        || b.contains("..")
    {
        return Err(
            "is not an S3 bucket name: 3-63 lowercase letters, digits, dots and \
                    hyphens, starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// A key prefix: letters, digits and `._-/`, no leading `/`, no empty,
/// `.` or `..` segment (S3 keys have no such rules, but tools that map
/// keys to paths do).
fn prefix_rule(p: &str) -> Result<(), &'static str> {
    let ok_chars = p
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/'));
    let segments = p.strip_suffix('/').unwrap_or(p);
    let bad_segment = !p.is_empty() && segments.split('/').any(|s| matches!(s, "" | "." | ".."));
    if p.len() > 512 || !ok_chars || bad_segment {
        return Err(
            "is not a key prefix: letters, digits and ._-/ (e.g. \"cis490/\"), no \
                    leading /, no empty, . or .. segment",
        );
    }
    Ok(())
}

fn region_rule(r: &str) -> Result<(), &'static str> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    ok.then_some(())
        .ok_or("is not a region name (letters, digits, - and _, e.g. us-east-1)")
}

fn access_key_rule(k: &str) -> Result<(), &'static str> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    ok.then_some(())
        .ok_or("is not an access key id (letters, digits, _ - and .)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = S3Endpoint::parse("https://s3.lab:8443/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "s3.lab", 8443));
        assert_eq!(e.authority(), "s3.lab:8443");
        assert!(!e.is_loopback());
        let e = S3Endpoint::parse("http://127.0.0.1:7480").unwrap();
        assert_eq!((e.tls, e.port), (false, 7480));
        assert!(e.is_loopback());
        assert_eq!(e.url(), "http://127.0.0.1:7480");
        assert_eq!(S3Endpoint::parse("http://localhost").unwrap().port, 80);
        assert!(S3Endpoint::parse("http://localhost").unwrap().is_loopback());
        assert_eq!(S3Endpoint::parse("https://s3.example").unwrap().port, 443);
        let e = S3Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert!(e.is_loopback());
        assert_eq!(e.authority(), "[::1]:9000");
        assert_eq!(S3Endpoint::parse("http://[::1]").unwrap().port, 80);
        for bad in [
            "s3.lab:9000",
            "ftp://s3.lab",
            "https://s3.lab/bucket",
            "https://u@s3.lab",
            "https://",
            "http://s3.lab:0",
            "https://s3.lab?x",
        ] {
            assert!(S3Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["cis490", "abc", "a.b-c1", &"a".repeat(63)] {
            assert_eq!(bucket_rule(good), Ok(()), "{good}");
        }
        for bad in [
            "ab",
            "Cis490",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(bucket_rule(bad).is_err(), "{bad}");
        }
        for good in ["", "cis490/", "a/b/", "lab-", "x.y_z/"] {
            assert_eq!(prefix_rule(good), Ok(()), "{good}");
        }
        for bad in ["/x/", "a//b/", "./", "a/../", "a b/", "é/", "a/./b"] {
            assert!(prefix_rule(bad).is_err(), "{bad}");
        }
        assert!(region_rule("us-east-1").is_ok() && region_rule("").is_err());
        assert!(access_key_rule("AKIA0123").is_ok() && access_key_rule("A/B").is_err());
    }
}
