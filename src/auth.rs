//! Bearer tokens: reading the shipper's token file, hashing, and the
//! receiver's lookup from token to host.
//!
//! The receiver stores only sha256(token) per host, so a leaked config file
//! leaks no credential. Comparison is constant-time over all hosts: the time
//! a lookup takes says nothing about how many bytes matched, or which host.
//! A token never reaches a log line or an error: `Token`'s `Debug` is
//! redacted and nothing here formats it.

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A bearer token. Printable ASCII without spaces (RFC 6750 b64token).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(s: &str) -> Option<Token> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s.len() <= 4096
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c));
        ok.then(|| Token(s.to_owned()))
    }

    /// A token that was deliberately not read (`ShipperConfig::load_keys`):
    /// empty, so it can never authenticate anything.
    pub fn not_read() -> Token {
        Token(String::new())
    }

    /// For the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// Largest token file read: a token is at most 4096 bytes.
const TOKEN_FILE_MAX: u64 = 64 * 1024;

/// Reads a token file, refusing one that other users could read: a token is
/// a password for this host's uploads. Only a regular file is read, and it
/// is opened without blocking (`config::open_regular_file`): a FIFO here
/// once hung the shipper forever. The mode checked is the open file's own
/// (fstat), so it is the mode of what is read.
pub fn read_token_file(path: &Path) -> io::Result<Token> {
    read_secret_file(path, "a token")
}

/// Reads a secret from a file under the token file's rules (mode 0600 or
/// stricter, a regular file, one line of letters, digits and `-._~+/=`):
/// the receiver's `s3_secret_key_file` too. `what` names the secret in the
/// error ("a token", "an S3 secret key").
pub fn read_secret_file(path: &Path, what: &str) -> io::Result<Token> {
    let cannot =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()));
    let (file, meta) = crate::config::open_regular_file(path).map_err(cannot)?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by group or others (mode {:04o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    let bytes = crate::config::read_at_most(file, TOKEN_FILE_MAX).map_err(cannot)?;
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    Token::new(text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} does not hold {what} (one line of letters, digits and -._~+/=)",
                path.display()
            ),
        )
    })
}

/// sha256 of a token, as the receiver's `[hosts]` table stores it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    /// 64 lowercase hex digits, as `sha256sum` prints them.
    pub fn from_hex(s: &str) -> Option<TokenHash> {
        crate::hashing::from_hex32(s).map(TokenHash)
    }
}

/// Constant-time equality of two 32-byte values.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The host a token belongs to. Visits every entry whatever matches.
pub fn host_for_token<'a>(hosts: &'a [(String, TokenHash)], token: &str) -> Option<&'a str> {
    let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (id, stored) in hosts {
        if ct_eq(&stored.0, &h) {
            found = Some(id.as_str());
        }
    }
    found
}

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No header: 401 with `WWW-Authenticate: Bearer`.
    Missing,
    /// Another scheme or a malformed value: 401.
    Invalid,
    Bearer(&'a str),
}

/// `Bearer <token>`: scheme case-insensitive (RFC 9110 §11.1), exactly one
/// space, a b64token (RFC 6750 §2.1).
pub fn parse_authorization(value: Option<&str>) -> Credentials<'_> {
    let Some(v) = value else {
        return Credentials::Missing;
    };
    let Some((scheme, token)) = v.split_once(' ') else {
        return Credentials::Invalid;
    };
    let token68 = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c);
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.bytes().all(token68) {
        Credentials::Bearer(token)
    } else {
        Credentials::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] = 2;
        assert!(!ct_eq(&a, &b));
        b = a;
        b[0] = 0;
        assert!(!ct_eq(&a, &b));
    }

    #[test]
    fn hex_hashes() {
        let t = Token::new("secret\n").unwrap();
        let hex = crate::hashing::to_hex(&t.hash().0);
        assert_eq!(TokenHash::from_hex(&hex), Some(t.hash()));
        assert_eq!(TokenHash::from_hex(&hex.to_uppercase()), None);
        assert_eq!(TokenHash::from_hex(&hex[..62]), None);
    }

    #[test]
    fn lookup_by_token() {
        let hosts = vec![
            ("a".to_owned(), Token::new("ta").unwrap().hash()),
            ("b".to_owned(), Token::new("tb").unwrap().hash()),
        ];
        assert_eq!(host_for_token(&hosts, "tb"), Some("b"));
        assert_eq!(host_for_token(&hosts, "tc"), None);
        assert_eq!(host_for_token(&hosts, ""), None);
    }

    #[test]
    fn t5_authorization_header() {
        assert_eq!(parse_authorization(None), Credentials::Missing);
        assert_eq!(
            parse_authorization(Some("Bearer abc")),
            Credentials::Bearer("abc")
        );
        assert_eq!(
            parse_authorization(Some("bearer abc")),
            Credentials::Bearer("abc")
        );
        for bad in [
            "Basic YTpi",
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer abc\t",
            "Bearer a b",
        ] {
            assert_eq!(
                parse_authorization(Some(bad)),
                Credentials::Invalid,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("hunter2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn token_files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("cis490-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "tok\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_token_file(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("tok\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&p).unwrap().expose(), "tok");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// D10: a private FIFO passed the permission check and then hung the
    /// shipper in `read_to_string`; a directory or device got "chmod 600".
    #[test]
    fn d10_token_file_must_be_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("cis490-auth-d10-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (sub.as_path(), "a directory"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            let p = path.to_owned();
            let e = crate::config::within_10s(move || read_token_file(&p).unwrap_err().to_string());
            assert!(e.contains(kind), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
