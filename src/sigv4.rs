//! AWS Signature Version 4 for S3 path-style requests, sans IO: from a
//! request's method, host, path, query, headers and payload digest to the
//! headers that authenticate it (`x-amz-date`, `x-amz-content-sha256`,
//! `authorization`).
//!
//! In scope: the `Authorization` header form, service `s3`, path-style
//! addressing (`/bucket/key`), a payload that is either hashed up front
//! (`x-amz-content-sha256` = its real sha256, which makes the server verify
//! the bytes it stores) or explicitly `UNSIGNED-PAYLOAD`. Out of scope:
//! presigned URLs, `aws-chunked` streaming signatures and trailers (RGW 16
//! supports neither trailers nor `x-amz-checksum-*`), session tokens.
//!
//! The steps, each a pure function tested on its own against AWS's published
//! S3 examples:
//!
//! ```text
//! canonical request   METHOD \n URI-encoded path \n sorted query \n
//!                     lower-cased sorted headers \n signed header names \n
//!                     payload hash
//! string to sign      AWS4-HMAC-SHA256 \n 20130524T000000Z \n
//!                     20130524/REGION/s3/aws4_request \n hex(sha256(canonical))
//! signing key         HMAC chain: "AWS4"+secret > date > region > "s3" > "aws4_request"
//! authorization       AWS4-HMAC-SHA256 Credential=AK/scope,SignedHeaders=..,Signature=hex
//! ```
//!
//! S3 differs from the other AWS services in two ways that matter here: the
//! path is URI-encoded once (not twice) and never normalised (`a//b` and
//! `a/./b` are distinct keys). [`target`] gives the request-target to put
//! on the wire from the same encoding the signature uses, so the two cannot
//! drift apart.

use std::fmt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::hashing::to_hex;

/// The access key pair and the region of the credential scope. RGW 16
/// accepts any region name in the scope; AWS requires the bucket's.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs and panic messages.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// What `x-amz-content-sha256` says about the body. The header is always
/// sent and signed: RGW refuses a SigV4 request without it (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The body's sha256: the server hashes what it receives and refuses the
    /// request (400 `XAmzContentSHA256Mismatch`) if it differs, before
    /// storing anything.
    Sha256([u8; 32]),
    /// `UNSIGNED-PAYLOAD`: the signature covers the head only.
    Unsigned,
}

impl Payload {
    /// The digest of a body held in memory.
    pub fn of(body: &[u8]) -> Payload {
        Payload::Sha256(Sha256::digest(body).into())
    }

    /// The value of `x-amz-content-sha256`, also the canonical request's
    /// last line.
    pub fn header_value(&self) -> String {
        match self {
            Payload::Sha256(d) => to_hex(d),
            Payload::Unsigned => "UNSIGNED-PAYLOAD".to_owned(),
        }
    }
}

/// One request to sign. `path` and `query` are decoded text: the signer
/// encodes them (and [`target`] encodes them the same way for the wire).
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The `Host` header's value exactly as sent, with the port if the URL
    /// has one (`127.0.0.1:7480`). Always signed.
    pub host: &'a str,
    /// `/bucket/key`, decoded.
    pub path: &'a str,
    /// Query parameters, decoded; an empty value is a bare name (`?uploads`).
    pub query: &'a [(&'a str, &'a str)],
    /// Every other header that is sent and signed (`content-length`,
    /// `if-none-match`, `x-amz-meta-*`, ...), sent exactly as given. Not
    /// `host`, `x-amz-date`, `x-amz-content-sha256` or `authorization`:
    /// the signer owns those.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: Payload,
}

/// A request the signer refuses to sign, because what it would sign is not
/// what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The caller passed a header the signer sets itself.
    Reserved(String),
    /// A header name that is not an HTTP token, or a value with a control
    /// character (CR or LF would split the head).
    InvalidHeader(String),
    /// An empty method or a path that does not start with `/`.
    InvalidRequest(&'static str),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::Reserved(n) => {
                write!(f, "header {n:?} is set by the signer, not the caller")
            }
            SignError::InvalidHeader(n) => write!(f, "header {n:?} has an invalid name or value"),
            SignError::InvalidRequest(why) => write!(f, "cannot sign request: {why}"),
        }
    }
}

impl std::error::Error for SignError {}

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "s3";
const RESERVED: [&str; 4] = [
    "host",
    "x-amz-date",
    "x-amz-content-sha256",
    "authorization",
];

/// Signs `req` at time `now`. Returns the headers to add to the request, in
/// this order: `x-amz-date`, `x-amz-content-sha256`, `authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    now: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let amz_date = crate::timefmt::amz_date(now);
    let payload = req.payload.header_value();
    let (creq, signed) = canonical_request(req, &amz_date)?;
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/{SERVICE}/aws4_request", creds.region);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let key = signing_key(&creds.secret_key, date, &creds.region);
    let signature = to_hex(&hmac_sha256(&key, sts.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope},SignedHeaders={signed},Signature={signature}",
        creds.access_key
    );
    Ok(vec![
        ("x-amz-date".to_owned(), amz_date),
        ("x-amz-content-sha256".to_owned(), payload),
        ("authorization".to_owned(), authorization),
    ])
}

/// The canonical request and its signed-header list (`host;x-amz-date;..`),
/// for a request carrying `x-amz-date: amz_date`. Every header given is
/// signed, plus `host`, `x-amz-date` and `x-amz-content-sha256`.
pub fn canonical_request(req: &Request<'_>, amz_date: &str) -> Result<(String, String), SignError> {
    if req.method.is_empty() || !req.method.bytes().all(is_tchar) {
        return Err(SignError::InvalidRequest(
            "the method must be an HTTP token",
        ));
    }
    if !req.path.starts_with('/') {
        return Err(SignError::InvalidRequest("the path must start with '/'"));
    }
    let payload = req.payload.header_value();
    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len() + 3);
    for (name, value) in req.headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            return Err(SignError::Reserved(lower));
        }
        if name.is_empty() || !name.bytes().all(is_tchar) || !valid_value(value) {
            return Err(SignError::InvalidHeader((*name).to_owned()));
        }
        headers.push((lower, canonical_value(value)));
    }
    if !valid_value(req.host) || req.host.is_empty() {
        return Err(SignError::InvalidHeader("host".to_owned()));
    }
    headers.push(("host".to_owned(), canonical_value(req.host)));
    headers.push(("x-amz-date".to_owned(), amz_date.to_owned()));
    headers.push(("x-amz-content-sha256".to_owned(), payload.clone()));
    // A stable sort by name keeps repeated headers in the order sent; their
    // values join with commas, as a server sees them.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut signed = String::new();
    let mut i = 0;
    while i < headers.len() {
        let name = &headers[i].0;
        let mut values = vec![headers[i].1.as_str()];
        while i + 1 < headers.len() && headers[i + 1].0 == *name {
            i += 1;
            values.push(headers[i].1.as_str());
        }
        canonical_headers += &format!("{name}:{}\n", values.join(","));
        if !signed.is_empty() {
            signed.push(';');
        }
        signed += name;
        i += 1;
    }
    let creq = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload}",
        req.method,
        uri_encode(req.path, true),
        canonical_query(req.query),
    );
    Ok((creq, signed))
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = to_hex(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// The key derived for one day, region and the `s3` service.
pub fn signing_key(secret_key: &str, date: &str, region: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, SERVICE.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

/// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || message)), with
/// K the key zero-padded to SHA-256's 64-byte block, or its digest if longer.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad = k.map(|b| b ^ 0x36);
    let opad = k.map(|b| b ^ 0x5c);
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// S3's URI encoding: every byte of the UTF-8 text except the unreserved
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case hex), so a space is
/// `%20` (never `+`) and a literal `%` is `%25`. `/` is kept in a path
/// (`keep_slash`) and encoded in a query name or value.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// Query parameters encoded and sorted by name, then value: `a=1&b=` (a
/// bare name signs as `name=`).
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request-target to send for `path` and `query`: the same encoding the
/// signature covers, with bare names for empty values (`/b?uploads`) as the
/// AWS SDKs send them; servers parse both forms to the same parameter.
pub fn target(path: &str, query: &[(&str, &str)]) -> String {
    let mut t = uri_encode(path, true);
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        t.push(if i == 0 { '?' } else { '&' });
        t += k;
        if !v.is_empty() {
            t.push('=');
            t += v;
        }
    }
    t
}

/// A canonical header value: surrounding whitespace trimmed and inner runs
/// of spaces collapsed to one, as SigV4 specifies (and RGW 16 does: a value
/// `a  b` signed as `a  b` is refused, signed as `a b` accepted).
fn canonical_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out += word;
    }
    out
}

fn valid_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_sha256_rfc4231() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            // Test case 5 gives only the first 128 bits.
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "a3b6167473100ee06e0c796c2955552b",
            ),
            // Keys longer than the block are hashed first.
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the \
                  HMAC algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, want)) in cases.iter().enumerate() {
            let mac = hmac_sha256(key, data);
            assert_eq!(
                mac[..want.len() / 2],
                hex(want)[..],
                "RFC 4231 test case {}",
                i + 1
            );
        }
        // A key of exactly one block is used as it is, not hashed.
        assert_ne!(hmac_sha256(&[7; 64], b"m"), hmac_sha256(&[7; 65], b"m"));
    }

    // The values of the examples in AWS's S3 API reference, "Signature
    // Calculations for the Authorization Header: Transferring Payload in a
    // Single Chunk".
    fn ex_creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }
    const EX_HOST: &str = "examplebucket.s3.amazonaws.com";
    const EX_DATE: &str = "20130524T000000Z";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ex_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    /// Checks every published intermediate: canonical request, the hash in
    /// the string to sign, and the Authorization header.
    fn check_example(req: &Request<'_>, creq_want: &str, sts_hash: &str, authz_want: &str) {
        let (creq, _) = canonical_request(req, EX_DATE).unwrap();
        assert_eq!(creq, creq_want);
        let sts = string_to_sign(EX_DATE, "20130524/us-east-1/s3/aws4_request", &creq);
        assert_eq!(
            sts,
            format!("AWS4-HMAC-SHA256\n{EX_DATE}\n20130524/us-east-1/s3/aws4_request\n{sts_hash}")
        );
        let added = sign(req, &ex_creds(), ex_time()).unwrap();
        assert_eq!(
            added,
            vec![
                ("x-amz-date".to_owned(), EX_DATE.to_owned()),
                (
                    "x-amz-content-sha256".to_owned(),
                    req.payload.header_value()
                ),
                ("authorization".to_owned(), authz_want.to_owned()),
            ]
        );
    }

    #[test]
    fn aws_example_get_object() {
        let req = Request {
            method: "GET",
            host: EX_HOST,
            path: "/test.txt",
            query: &[],
            headers: &[("Range", "bytes=0-9")],
            payload: Payload::of(b""),
        };
        check_example(
            &req,
            &format!(
                "GET\n/test.txt\n\nhost:{EX_HOST}\nrange:bytes=0-9\n\
                 x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{EX_DATE}\n\n\
                 host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        );
    }

    #[test]
    fn aws_example_put_object() {
        let body = b"Welcome to Amazon S3.";
        let sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        assert_eq!(Payload::of(body).header_value(), sha);
        let req = Request {
            method: "PUT",
            host: EX_HOST,
            path: "/test$file.text",
            query: &[],
            headers: &[
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            payload: Payload::of(body),
        };
        check_example(
            &req,
            &format!(
                "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\nhost:{EX_HOST}\n\
                 x-amz-content-sha256:{sha}\nx-amz-date:{EX_DATE}\n\
                 x-amz-storage-class:REDUCED_REDUNDANCY\n\n\
                 date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n{sha}"
            ),
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,\
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        );
    }

    #[test]
    fn aws_example_get_bucket_lifecycle() {
        let req = Request {
            method: "GET",
            host: EX_HOST,
            path: "/",
            query: &[("lifecycle", "")],
            headers: &[],
            payload: Payload::of(b""),
        };
        check_example(
            &req,
            &format!(
                "GET\n/\nlifecycle=\nhost:{EX_HOST}\nx-amz-content-sha256:{EMPTY_SHA256}\n\
                 x-amz-date:{EX_DATE}\n\nhost;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;x-amz-content-sha256;x-amz-date,\
             Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        );
        assert_eq!(target("/", &[("lifecycle", "")]), "/?lifecycle");
    }

    #[test]
    fn aws_example_list_objects() {
        // Given out of order: the canonical query sorts.
        let req = Request {
            method: "GET",
            host: EX_HOST,
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &[],
            payload: Payload::of(b""),
        };
        check_example(
            &req,
            &format!(
                "GET\n/\nmax-keys=2&prefix=J\nhost:{EX_HOST}\nx-amz-content-sha256:{EMPTY_SHA256}\n\
                 x-amz-date:{EX_DATE}\n\nhost;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;x-amz-content-sha256;x-amz-date,\
             Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
        assert_eq!(target("/", req.query), "/?max-keys=2&prefix=J");
    }

    #[test]
    fn path_encoding_follows_s3_rules() {
        // Unreserved bytes stay, '/' stays in a path, everything else is %XX
        // upper-case: space is %20 (not '+'), '+' and '%' are encoded, UTF-8
        // byte by byte. No normalisation: '//' and '/./' are kept.
        let cases = [
            ("/b/plain-key_1.txt~", "/b/plain-key_1.txt~"),
            ("/b/a b", "/b/a%20b"),
            ("/b/a+b", "/b/a%2Bb"),
            ("/b/100%", "/b/100%25"),
            ("/b/%41", "/b/%2541"),
            ("/b/é", "/b/%C3%A9"),
            ("/b/日本", "/b/%E6%97%A5%E6%9C%AC"),
            ("/b/x=y&z?#", "/b/x%3Dy%26z%3F%23"),
            ("/b/a//b/./c/../d", "/b/a//b/./c/../d"),
            ("/b/$@:,;*'()!", "/b/%24%40%3A%2C%3B%2A%27%28%29%21"),
        ];
        for (path, want) in cases {
            assert_eq!(uri_encode(path, true), want, "{path:?}");
            assert_eq!(target(path, &[]), want, "{path:?}");
        }
        // In a query, '/' is encoded too.
        assert_eq!(uri_encode("a/b c", false), "a%2Fb%20c");
        assert_eq!(
            canonical_query(&[("prefix", "a/b c"), ("list-type", "2"), ("a", "")]),
            "a=&list-type=2&prefix=a%2Fb%20c"
        );
    }

    #[test]
    fn odd_request_matches_an_independent_computation() {
        // Expected values computed separately with Python's hmac, hashlib and
        // urllib.parse.quote(safe='/~' for the path, '~' for the query).
        let body = b"odd";
        let req = Request {
            method: "PUT",
            host: "127.0.0.1:7480",
            path: "/bucket/a b~c+d%e/é/x=y&z",
            query: &[("prefix", "a/b c"), ("list-type", "2")],
            headers: &[("If-None-Match", "*"), ("Content-Length", "3")],
            payload: Payload::of(body),
        };
        let creds = Credentials {
            access_key: "AK".into(),
            secret_key: "secretsecret".into(),
            region: "us-east-1".into(),
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_842_061);
        let sha = "990cb8ebd0afb7150da453a213036a92f2c05e091df0d803e62d257ea7796c27";
        let (creq, signed) = canonical_request(&req, "20261128T050101Z").unwrap();
        assert_eq!(
            creq,
            format!(
                "PUT\n/bucket/a%20b~c%2Bd%25e/%C3%A9/x%3Dy%26z\nlist-type=2&prefix=a%2Fb%20c\n\
                 content-length:3\nhost:127.0.0.1:7480\nif-none-match:*\n\
                 x-amz-content-sha256:{sha}\nx-amz-date:20261128T050101Z\n\n\
                 content-length;host;if-none-match;x-amz-content-sha256;x-amz-date\n{sha}"
            )
        );
        assert_eq!(
            signed,
            "content-length;host;if-none-match;x-amz-content-sha256;x-amz-date"
        );
        let added = sign(&req, &creds, t).unwrap();
        assert!(
            added[2].1.ends_with(
                ",Signature=67219ec90a18fb67bcc49be3e1e9c9f1336fc831fe209fea902ace8a77087f2d"
            ),
            "{added:?}"
        );
        assert!(added[2]
            .1
            .starts_with("AWS4-HMAC-SHA256 Credential=AK/20261128/us-east-1/s3/aws4_request,"));
    }

    #[test]
    fn unsigned_payload() {
        let req = Request {
            method: "PUT",
            host: "h",
            path: "/b/k",
            query: &[],
            headers: &[],
            payload: Payload::Unsigned,
        };
        let (creq, _) = canonical_request(&req, EX_DATE).unwrap();
        assert!(creq.ends_with("\nUNSIGNED-PAYLOAD"), "{creq}");
        assert!(creq.contains("\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"));
        let added = sign(&req, &ex_creds(), ex_time()).unwrap();
        assert_eq!(added[1].1, "UNSIGNED-PAYLOAD");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed_names_lowered_repeats_joined() {
        let req = Request {
            method: "GET",
            host: " h ",
            path: "/",
            query: &[],
            headers: &[
                ("X-Amz-Meta-B", "  two   words\there  "),
                ("x-amz-meta-a", "1"),
                ("X-AMZ-META-A", "2"),
            ],
            payload: Payload::Unsigned,
        };
        let (creq, signed) = canonical_request(&req, EX_DATE).unwrap();
        assert!(
            creq.contains("host:h\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:20130524T000000Z\nx-amz-meta-a:1,2\nx-amz-meta-b:two words here\n\n"),
            "{creq}"
        );
        assert_eq!(
            signed,
            "host;x-amz-content-sha256;x-amz-date;x-amz-meta-a;x-amz-meta-b"
        );
    }

    #[test]
    fn refuses_what_it_would_not_sign_faithfully() {
        let base = Request {
            method: "PUT",
            host: "h",
            path: "/b/k",
            query: &[],
            headers: &[],
            payload: Payload::Unsigned,
        };
        let creds = ex_creds();
        let t = ex_time();
        for name in [
            "X-Amz-Date",
            "x-amz-content-sha256",
            "Authorization",
            "HOST",
        ] {
            let r = Request {
                headers: &[(name, "x")],
                ..base.clone()
            };
            assert_eq!(
                sign(&r, &creds, t),
                Err(SignError::Reserved(name.to_ascii_lowercase()))
            );
        }
        for (n, v) in [
            ("x-a", "a\r\nb"),
            ("bad name", "v"),
            ("", "v"),
            ("x-a", "é"),
        ] {
            let r = Request {
                headers: &[(n, v)],
                ..base.clone()
            };
            assert_eq!(
                sign(&r, &creds, t),
                Err(SignError::InvalidHeader(n.to_owned()))
            );
        }
        let r = Request {
            path: "b/k",
            ..base.clone()
        };
        assert!(matches!(
            sign(&r, &creds, t),
            Err(SignError::InvalidRequest(_))
        ));
        let r = Request {
            method: "",
            ..base.clone()
        };
        assert!(matches!(
            sign(&r, &creds, t),
            Err(SignError::InvalidRequest(_))
        ));
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let s = format!("{:?}", ex_creds());
        assert!(
            s.contains("AKIAIOSFODNN7EXAMPLE") && !s.contains("EXAMPLEKEY"),
            "{s}"
        );
    }
}
