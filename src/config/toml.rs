//! The strict TOML reader: the small part of TOML the configuration files
//! need, exactly, and a clear refusal (line, key, what to write) of
//! everything else, before nanoserde reads the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nanoserde::Toml;

use super::*;

/// A value as the strict reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plain {
    Str(String),
    Int(i64),
    /// Read so that an integer key can say "must be a whole number"
    /// (nanoserde gives `3.0` and `3` alike); no key takes one.
    Float(f64),
    Bool(bool),
}

/// A line the strict reader does not accept.
#[derive(Debug)]
pub(super) struct LineError {
    line: usize,
    /// The key the line sets, when the reader got that far.
    key: Option<String>,
    /// TOML itself rejects the line (`a = = 1`), as opposed to valid TOML
    /// that cis490 refuses to read (`a = 'x'`).
    invalid_toml: bool,
    message: String,
}

impl LineError {
    pub(super) fn into_config_error(self, path: &Path) -> ConfigError {
        let LineError {
            line,
            key,
            invalid_toml,
            message,
        } = self;
        if invalid_toml {
            let at = match &key {
                Some(k) => format!("line {line}, key `{k}`"),
                None => format!("line {line}"),
            };
            ConfigError {
                path: path.to_owned(),
                key: None,
                message: format!("not valid TOML at {at}: {message}"),
            }
        } else {
            ConfigError {
                path: path.to_owned(),
                key,
                message: format!("line {line}: {message}"),
            }
        }
    }
}

pub(super) const TOML_WS: [char; 2] = [' ', '\t'];

/// Reads `text` as the small part of TOML our files need, line by line, and
/// refuses everything else with the line and, when known, the key.
///
/// Why this exists: nanoserde (the TOML reader the design card fixes) reads
/// a subset of TOML and misreads much of the rest in silence: `"a\tb"` is
/// `atb`, `"\u0020"` is `u0020`, `007 = 1` sets key `7`, `a = 1 b = 2` on
/// one line sets two keys, `lab.x = ..` under `[hosts]` becomes host
/// `lab.x`, `a = ""` swallows the next line, and a NUL byte ends the file.
/// A mangled `store_dir` would be created and used. So nothing reaches
/// nanoserde that this reader has not accepted, and `Doc::parse` checks that
/// nanoserde read every line exactly as this reader did.
///
/// What is accepted, each read exactly as TOML 1.0 reads it:
/// - blank lines and `# comments` (also after a value or a table header);
/// - `[name]` table headers with a bare name, each at most once;
/// - `key = value`, one a line, the key bare (`A-Za-z0-9_-`, starting with
///   a letter or `_`) or in double quotes (no backslash, not empty, and no
///   dot outside a table), each key once (nanoserde keeps the last of two,
///   and two `[hosts]` lines for one host are a mistake to show);
/// - values that are basic strings in double quotes without a backslash,
///   not empty; decimal integers (optional sign, `_` between digits); and
///   decimal floats without exponent (`0.5`, `inf`, `nan`), read only so
///   that an integer key can refuse them by name (nanoserde reads `3.0` as
///   `3`);
/// - LF or CRLF line ends, and a UTF-8 byte order mark at the very start
///   (`Doc::parse` strips it).
///
/// Escapes are refused rather than implemented: every value cis490 reads is
/// a path, a URL, an address, an id or a hex digest, which an operator
/// writes as it is (`/var/lib/cis490`); Windows paths do not occur. The only
/// characters a basic string cannot hold without an escape are `"`, `\` and
/// control characters, none of which belongs in those values. Implementing
/// the escapes would mean a string parser of our own beside nanoserde's,
/// which would still mangle them; refusing keeps nanoserde the reader and
/// makes its reading of every accepted string the identity. The same goes
/// for literal and multi-line strings, exponents, dates, arrays
/// and inline tables: no key takes them, so a clear refusal costs nothing.
pub(super) fn read_plain_toml(text: &str) -> Result<BTreeMap<String, (usize, Plain)>, LineError> {
    let mut entries = BTreeMap::new();
    let mut table: Option<String> = None;
    let mut tables = BTreeSet::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let err = |key: Option<&str>, invalid_toml: bool, message: String| LineError {
            line: n,
            key: key.map(str::to_owned),
            invalid_toml,
            message,
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(c) = line
            .chars()
            .find(|&c| (c < ' ' && c != '\t') || c == '\u{7f}')
        {
            return Err(err(
                None,
                true,
                format!(
                    "holds the control character U+{:04X} (TOML allows none but tab, and CR only before LF): delete it",
                    c as u32
                ),
            ));
        }
        let rest = line.trim_start_matches(TOML_WS);
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(after) = rest.strip_prefix('[') {
            let name = read_table_header(after).map_err(|(t, m)| err(None, t, m))?;
            if !tables.insert(name.clone()) {
                return Err(err(
                    None,
                    true,
                    format!("table [{name}] appears twice: TOML allows one [{name}] header; merge the two"),
                ));
            }
            table = Some(name);
            continue;
        }
        let (key, after) =
            read_key(rest, table.is_none()).map_err(|(k, t, m)| err(k.as_deref(), t, m))?;
        let after = after.trim_start_matches(TOML_WS);
        let Some(after) = after.strip_prefix('=') else {
            return Err(if after.starts_with('.') {
                err(
                    Some(&key),
                    false,
                    format!(
                        "dotted keys (`{key}.x = ...`) are not supported: if the dot is part of the name, \
                         write the key in double quotes (\"{key}.x\" = ...)"
                    ),
                )
            } else {
                err(
                    Some(&key),
                    true,
                    "expected `=` after the key, on the same line".into(),
                )
            });
        };
        let (value, after) = read_value(after.trim_start_matches(TOML_WS))
            .map_err(|(t, m)| err(Some(&key), t, m))?;
        if !at_line_end(after) {
            return Err(err(
                Some(&key),
                true,
                "unexpected text after the value: write one `key = value` a line; a comment starts with #"
                    .into(),
            ));
        }
        let full = match &table {
            Some(t) => format!("{t}.{key}"),
            None => key.clone(),
        };
        if let Some((first, _)) = entries.insert(full, (n, value)) {
            return Err(err(
                Some(&key),
                false,
                format!("is set twice (first on line {first}): TOML allows one value per key; delete one of the lines"),
            ));
        }
    }
    Ok(entries)
}

/// Whether only blanks and maybe a comment are left.
pub(super) fn at_line_end(s: &str) -> bool {
    let s = s.trim_start_matches(TOML_WS);
    s.is_empty() || s.starts_with('#')
}

pub(super) fn is_bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name in `[name]`, after the `[`. (is TOML invalid, message) on error.
pub(super) fn read_table_header(after: &str) -> Result<String, (bool, String)> {
    if after.starts_with('[') {
        return Err((
            false,
            "arrays of tables ([[...]]) are not used in cis490 configuration: the only table is [hosts]".into(),
        ));
    }
    let after = after.trim_start_matches(TOML_WS);
    if after.starts_with(['"', '\'']) {
        return Err((
            false,
            "quoted table names are not supported: write [hosts]".into(),
        ));
    }
    let end = after.find(|c| !is_bare_key_char(c)).unwrap_or(after.len());
    let (name, rest) = after.split_at(end);
    let rest = rest.trim_start_matches(TOML_WS);
    if !name.is_empty() && rest.starts_with('.') {
        return Err((
            false,
            "dotted table names ([a.b]) are not used in cis490 configuration: the only table is [hosts]"
                .into(),
        ));
    }
    match rest.strip_prefix(']') {
        Some(rest) if !name.is_empty() && at_line_end(rest) => Ok(name.to_owned()),
        _ => Err((
            true,
            "expected a table header such as [hosts] alone on its line".into(),
        )),
    }
}

/// The key at the start of `s` and what follows it.
/// On error: (the key if known, is TOML invalid, message).
pub(super) fn read_key(
    s: &str,
    top_level: bool,
) -> Result<(String, &str), (Option<String>, bool, String)> {
    let (key, rest) = if let Some(body) = s.strip_prefix('"') {
        if body.starts_with("\"\"") {
            return Err((None, true, "a key cannot be a multi-line string".into()));
        }
        let Some(end) = body.find(['"', '\\']) else {
            return Err((None, true, "the key's closing `\"` is missing".into()));
        };
        if body[end..].starts_with('\\') {
            return Err((
                None,
                false,
                "the key holds a backslash: cis490 reads no escape sequences; write the name without one"
                    .into(),
            ));
        }
        let key = &body[..end];
        if key.is_empty() {
            return Err((
                None,
                false,
                "the key is empty (\"\"): give it a name".into(),
            ));
        }
        if top_level && key.contains('.') {
            return Err((
                Some(key.to_owned()),
                false,
                "names with a dot are only used inside [hosts]: put the line under [hosts], \
                 or drop the dot"
                    .into(),
            ));
        }
        (key, &body[end + 1..])
    } else if s.starts_with('\'') {
        return Err((
            None,
            false,
            "single-quoted keys are not supported: write the key bare or in double quotes".into(),
        ));
    } else {
        let end = s.find(|c| !is_bare_key_char(c)).unwrap_or(s.len());
        let (key, rest) = s.split_at(end);
        if key.is_empty() {
            return Err((
                None,
                true,
                "expected a key: letters, digits, _ and - (e.g. host_id), or a name in double quotes"
                    .into(),
            ));
        }
        // nanoserde reads such a key as a number: `007` becomes `7`.
        if key.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return Err((
                Some(key.to_owned()),
                false,
                format!("a key that starts with a digit or `-` must be written in double quotes: \"{key}\" = ..."),
            ));
        }
        (key, rest)
    };
    Ok((key.to_owned(), rest))
}

/// The value at the start of `s` and what follows it.
pub(super) fn read_value(s: &str) -> Result<(Plain, &str), (bool, String)> {
    const NO_ESCAPES: &str = "the value holds a backslash: cis490 reads no TOML escape sequences \
        (\\t, \\u0020, ...); write the character itself between the double quotes, or choose a \
        value without it (a path such as /var/lib/cis490 needs none)";
    let refuse = |m: &str| Err((false, m.to_owned()));
    let Some(first) = s.chars().next() else {
        return Err((true, "has no value after `=`".into()));
    };
    match first {
        '"' if s.starts_with("\"\"\"") => {
            refuse("multi-line strings (\"\"\"...\"\"\") are not supported: write the value on one line in double quotes")
        }
        '"' => {
            let body = &s[1..];
            match body.find(['"', '\\']) {
                None => Err((true, "the string's closing `\"` is missing".into())),
                Some(i) if body[i..].starts_with('\\') => refuse(NO_ESCAPES),
                Some(0) => refuse("is empty (\"\"): delete the line to use the default, or write a value"),
                Some(i) => Ok((Plain::Str(body[..i].to_owned()), &body[i + 1..])),
            }
        }
        '\'' => {
            // Say exactly what to write when the value can be written so.
            let same = s[1..]
                .split_once('\'')
                .map(|(v, _)| v)
                .filter(|v| !v.is_empty() && !v.contains(['"', '\\']));
            refuse(&match same {
                Some(v) => format!(
                    "single-quoted (literal) strings are not supported: write the value in double quotes, \"{v}\""
                ),
                None => "single-quoted (literal) strings are not supported: write the value in double quotes, \
                         e.g. \"/var/lib/cis490\" (paths need no escapes)"
                    .to_owned(),
            })
        }
        '[' => refuse("arrays are not used by any cis490 key: write a single value"),
        '{' => refuse("inline tables ({ ... }) are not used by any cis490 key: write a single value"),
        _ => {
            let end = s.find(|c| TOML_WS.contains(&c) || c == '#').unwrap_or(s.len());
            let (word, rest) = s.split_at(end);
            read_word(word).map(|v| (v, rest))
        }
    }
}

/// Whether `digits` is TOML's `1_000` form: digits, `_` only between two.
pub(super) fn is_digit_groups(digits: &str) -> bool {
    let b = digits.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| c.is_ascii_digit() || c == b'_')
        && b[0] != b'_'
        && b[b.len() - 1] != b'_'
        && !digits.contains("__")
}

/// A value that is not quoted: a decimal integer or float, or refused.
pub(super) fn read_word(word: &str) -> Result<Plain, (bool, String)> {
    let refuse = |m: String| Err((false, m));
    let digits = word.strip_prefix(['+', '-']).unwrap_or(word);
    match word {
        "true" => return Ok(Plain::Bool(true)),
        "false" => return Ok(Plain::Bool(false)),
        _ => {}
    }
    let sign_minus = word.starts_with('-');
    match digits {
        "inf" => {
            return Ok(Plain::Float(if sign_minus {
                -f64::INFINITY
            } else {
                f64::INFINITY
            }))
        }
        "nan" => return Ok(Plain::Float(f64::NAN)),
        _ => {}
    }
    if digits.starts_with(|c: char| c.is_ascii_digit()) && digits.contains(['e', 'E']) {
        // nanoserde cannot read exponents (`1e3` is a bare word to it).
        return refuse(format!(
            "`{word}`: exponents are not supported, and every cis490 number is a whole number: \
             write it out in digits"
        ));
    }
    if let Some((int, frac)) = digits.split_once('.') {
        if is_digit_groups(int) && (int == "0" || !int.starts_with('0')) && is_digit_groups(frac) {
            let plain: String = word.chars().filter(|&c| c != '_').collect();
            if let Ok(f) = plain.parse::<f64>() {
                return Ok(Plain::Float(f));
            }
        }
        return Err((true, format!("`{word}` is not a TOML number")));
    }
    if ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p)) {
        return refuse(format!("`{word}`: hexadecimal, octal and binary numbers are not supported: write the number in decimal"));
    }
    if !word.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') {
        return Err((
            true,
            if word.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '/') {
                format!("`{word}` is not a TOML value: a string goes in double quotes, \"{word}\"")
            } else {
                "expected a value after `=`: a string in double quotes or a whole number".into()
            },
        ));
    }
    if digits.contains([':', '-']) {
        return refuse(format!(
            "`{word}`: dates and times are not used by any cis490 key"
        ));
    }
    // TOML: no leading zero, `_` only between two digits.
    if !is_digit_groups(digits) || (digits.starts_with('0') && digits.len() > 1) {
        return Err((
            true,
            format!("`{word}` is not a TOML integer: decimal digits without leading zeros, optionally grouped by single underscores (1_000)"),
        ));
    }
    let plain: String = word.chars().filter(|&c| c != '_').collect();
    plain
        .parse::<i64>()
        .map(Plain::Int)
        .map_err(|_| (true, format!("`{word}` is too large for a TOML integer")))
}

/// Whether nanoserde read every entry exactly as `read_plain_toml` did, and
/// nothing more: a tripwire for a misreading we did not foresee.
pub(super) fn check_agreement(
    plain: &BTreeMap<String, (usize, Plain)>,
    map: &BTreeMap<String, Toml>,
) -> Result<(), (Option<usize>, String)> {
    for (key, (line, value)) in plain {
        let same = match (map.get(key), value) {
            (Some(Toml::Str(s)), Plain::Str(v)) => s == v,
            (Some(Toml::Num(x)), Plain::Int(i)) => *x == *i as f64,
            (Some(Toml::Num(x)), Plain::Float(f)) => x == f || (x.is_nan() && f.is_nan()),
            (Some(Toml::Bool(x)), Plain::Bool(b)) => x == b,
            _ => false,
        };
        if !same {
            return Err((Some(*line), key.clone()));
        }
    }
    match map.keys().find(|k| !plain.contains_key(*k)) {
        Some(k) => Err((None, k.clone())),
        None => Ok(()),
    }
}
