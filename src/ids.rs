//! Host and episode ids: the one rule that keeps a name from ever becoming a
//! path the receiver did not mean.
//!
//! `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`: no `/`, no leading `.` (so `.` and `..`
//! are impossible, and names starting with `.` are free for our temp files),
//! at most 128 bytes (≤ 255 with `.tar.zst.sha256`).

/// The rule in words, for error messages.
pub const RULE: &str = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit";

pub const MAX_LEN: usize = 128;

/// What `is_dns_name` asks of a DNS name, in words, for error messages.
pub const DNS_RULE: &str = "labels of 1-63 letters, digits and hyphens joined by dots, \
     no leading or trailing hyphen, the last label not all digits";

pub fn is_valid(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether a host id can be bound to a client certificate: a DNS name as
/// rustls-webpki understands it (labels of 1-63 letters, digits and hyphens,
/// no leading or trailing hyphen, last label not all digits).
///
/// Ids such as `a..b`, `a.`, `lab_01` or `10.0.0.1` are fine as ids but no
/// certificate can carry them as a dNSName SAN, so the receiver refuses them
/// in `[hosts]` when `client_ca_file` is set, instead of accepting a host that
/// could never authenticate.
pub fn is_dns_name(id: &str) -> bool {
    if !is_valid(id) {
        return false;
    }
    let labels: Vec<&str> = id.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    labels.iter().all(|l| label_ok(l))
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|c| c.is_ascii_digit()))
        && rustls_pki_types::DnsName::try_from(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_legal_ids_literally() {
        for id in [
            "a",
            "ep-001",
            "a..b",
            "a.",
            "x.tar",
            "A_b-c.d",
            &"x".repeat(128),
        ] {
            assert!(is_valid(id), "{id}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for id in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "_x",
            "a/b",
            "a\\b",
            "a%2e",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(!is_valid(id), "{id:?}");
        }
    }

    #[test]
    fn dns_names_for_certificate_binding() {
        for id in ["lab-01", "lab01.robots.example", "a1", "x.y2"] {
            assert!(is_dns_name(id), "{id}");
        }
        for id in [
            "a..b",
            "a.",
            "lab_01",
            "10.0.0.1",
            "a-",
            "x.123",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_name(id), "{id}");
        }
    }
}
