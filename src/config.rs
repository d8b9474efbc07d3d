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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
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
    /// Keys written as floats (`3.0`), which nanoserde reads as `3`.
    floats: BTreeSet<String>,
}

impl Doc {
    fn load(path: &Path) -> Result<Doc, ConfigError> {
        let file_err = |message: String| ConfigError {
            path: path.to_owned(),
            key: None,
            message,
        };
        let bytes = read_regular_file(path, CONFIG_FILE_MAX)
            .map_err(|e| file_err(format!("cannot read the configuration file: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            file_err(
                "cannot read the configuration file: it is not UTF-8 text (TOML is UTF-8)".into(),
            )
        })?;
        Doc::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Doc, ConfigError> {
        let file_err = |message: String| ConfigError {
            path: path.to_owned(),
            key: None,
            message,
        };
        // A UTF-8 byte order mark: TOML does not mention one, but Windows
        // editors write it, it is invisible, and it changes nothing about
        // what the file says; nanoserde would read it as part of the first
        // key (`\u{feff}host_id`), leaving "host_id is required". Strip it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let plain = read_plain_toml(text).map_err(|e| e.into_config_error(path))?;
        // TOML reads CRLF as LF; nanoserde does too except after a bare
        // word. `read_plain_toml` refused any other CR.
        let text = text.replace("\r\n", "\n");
        let map = TomlParser::parse(&text).map_err(|e| {
            file_err(format!(
                "not valid TOML near line {}: {}",
                e.line + 1,
                e.msg.trim()
            ))
        })?;
        check_agreement(&plain, &map).map_err(|(line, key)| ConfigError {
            path: path.to_owned(),
            message: format!(
                "{}the TOML library (nanoserde) reads this differently from TOML: write the line \
                 as in etc/*.toml.example, and please report it",
                line.map(|n| format!("line {n}: ")).unwrap_or_default()
            ),
            key: Some(key),
        })?;
        let floats = plain
            .iter()
            .filter(|(_, (_, v))| matches!(v, Plain::Float(_)))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(Doc {
            path: path.to_owned(),
            map,
            floats,
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

    /// A directory cis490 fills and empties (`data_dir`, `store_dir`):
    /// absolute, and not a system directory. `example` says what to write.
    fn required_dir(&mut self, key: &str, example: &str) -> Result<PathBuf, ConfigError> {
        let dir = self.required_path(key)?;
        check_own_dir(&dir, example).map_err(|m| self.err(key, m))?;
        Ok(dir)
    }

    /// A file a loader reads later (certificate, key, CA). Refused here,
    /// where the key is known, if it exists and is not a regular file; the
    /// loader opens it without blocking and checks again, and reports a
    /// missing or unreadable file with its path.
    fn file(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let path = self.path(key)?;
        if let Some(p) = &path {
            if let Ok(meta) = std::fs::metadata(p) {
                if let Some(kind) = not_regular(&meta.file_type()) {
                    return Err(self.err(
                        key,
                        format!(
                            "{} is {kind}, not a regular file: name the PEM file itself",
                            p.display()
                        ),
                    ));
                }
            }
        }
        Ok(path)
    }

    fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Toml::Num(_)) if self.floats.contains(key) => Err(self.err(
                key,
                format!(
                    "must be a whole number from {min} to {max}, written without a decimal point"
                ),
            )),
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

/// A value as the strict reader sees it.
#[derive(Debug, Clone, PartialEq)]
enum Plain {
    Str(String),
    Int(i64),
    /// Read so that an integer key can say "must be a whole number"
    /// (nanoserde gives `3.0` and `3` alike); no key takes one.
    Float(f64),
}

/// A line the strict reader does not accept.
#[derive(Debug)]
struct LineError {
    line: usize,
    /// The key the line sets, when the reader got that far.
    key: Option<String>,
    /// TOML itself rejects the line (`a = = 1`), as opposed to valid TOML
    /// that cis490 refuses to read (`a = 'x'`).
    invalid_toml: bool,
    message: String,
}

impl LineError {
    fn into_config_error(self, path: &Path) -> ConfigError {
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

const TOML_WS: [char; 2] = [' ', '\t'];

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
/// for literal and multi-line strings, exponents, booleans, dates, arrays
/// and inline tables: no key takes them, so a clear refusal costs nothing.
fn read_plain_toml(text: &str) -> Result<BTreeMap<String, (usize, Plain)>, LineError> {
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
fn at_line_end(s: &str) -> bool {
    let s = s.trim_start_matches(TOML_WS);
    s.is_empty() || s.starts_with('#')
}

fn is_bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name in `[name]`, after the `[`. (is TOML invalid, message) on error.
fn read_table_header(after: &str) -> Result<String, (bool, String)> {
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
fn read_key(s: &str, top_level: bool) -> Result<(String, &str), (Option<String>, bool, String)> {
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
fn read_value(s: &str) -> Result<(Plain, &str), (bool, String)> {
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
fn is_digit_groups(digits: &str) -> bool {
    let b = digits.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| c.is_ascii_digit() || c == b'_')
        && b[0] != b'_'
        && b[b.len() - 1] != b'_'
        && !digits.contains("__")
}

/// A value that is not quoted: a decimal integer or float, or refused.
fn read_word(word: &str) -> Result<Plain, (bool, String)> {
    let refuse = |m: String| Err((false, m));
    let digits = word.strip_prefix(['+', '-']).unwrap_or(word);
    if matches!(word, "true" | "false") {
        return refuse("booleans are not used by any cis490 key".into());
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
fn check_agreement(
    plain: &BTreeMap<String, (usize, Plain)>,
    map: &BTreeMap<String, Toml>,
) -> Result<(), (Option<usize>, String)> {
    for (key, (line, value)) in plain {
        let same = match (map.get(key), value) {
            (Some(Toml::Str(s)), Plain::Str(v)) => s == v,
            (Some(Toml::Num(x)), Plain::Int(i)) => *x == *i as f64,
            (Some(Toml::Num(x)), Plain::Float(f)) => x == f || (x.is_nan() && f.is_nan()),
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

/// Largest configuration file read; ours are a few KiB.
const CONFIG_FILE_MAX: u64 = 1 << 20;

/// What a file that is not a regular file is, for an error; `None` for a
/// regular file.
pub fn not_regular(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("a special file")
    }
}

fn refuse_irregular(meta: &Metadata) -> io::Result<()> {
    match not_regular(&meta.file_type()) {
        None => Ok(()),
        Some(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file: name the file itself"),
        )),
    }
}

/// Opens a file for reading that the configuration names (a token,
/// certificate, key or CA file, or the configuration file itself), refusing
/// anything but a regular file, and never blocking.
///
/// Opening a FIFO for reading waits for a writer, forever: a shipper run by
/// a timer would hang with no message. Opening a device can have effects of
/// its own (a tape rewinds, a terminal becomes ours). So the type is checked
/// on the path first (following symlinks, so certbot's links work), and
/// then the open itself uses O_NONBLOCK (a FIFO open returns at once) and
/// O_NOCTTY, and the type is checked again on the open descriptor (fstat),
/// since the path may have been swapped in between. O_NONBLOCK changes
/// nothing when reading a regular file.
pub fn open_regular_file(path: &Path) -> io::Result<(File, Metadata)> {
    refuse_irregular(&std::fs::metadata(path)?)?;
    open_nonblocking_checked(path)
}

/// The second half of `open_regular_file`, on its own for a test that swaps
/// the file after the first check.
fn open_nonblocking_checked(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    refuse_irregular(&meta)?;
    Ok((file, meta))
}

/// Reads at most `limit` bytes, and refuses a longer file rather than
/// reading what no token, PEM or config file is.
pub fn read_at_most(file: File, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes, far more than such a file holds"),
        ));
    }
    Ok(buf)
}

/// `open_regular_file` and `read_at_most`.
pub fn read_regular_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_at_most(open_regular_file(path)?.0, limit)
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// 10 s: for tests of opens that used to block forever.
#[cfg(test)]
pub(crate) fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("still blocked after 10 s")
}

/// Directories that must never be a `data_dir` or `store_dir` themselves
/// (their subdirectories are fine): the root, the standard top-level
/// directories, and the shared second-level ones that hold other programs'
/// state. The shipper creates `episodes/`, `outbox/`, `shipped/` and
/// `.lock` in its data_dir and moves directories in and out; the receiver
/// creates a directory per host in its store_dir and, at every start,
/// deletes `.upload-*` files in each of them. In `/home` that is every
/// user's home; in `/tmp` anyone can plant a symlink first. Lexical only: a
/// symlink to `/` is not caught, but the slip this is for is a typo or an
/// empty variable in a template (`data_dir = "/"`, `"/var"`).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/mail",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// Kernel file systems: nothing of ours belongs anywhere under them.
const VIRTUAL_TREES: &[&str] = &["/dev", "/proc", "/sys"];

/// Whether `dir` may be a directory of cis490's own (see `SYSTEM_DIRS`).
/// A relative path is refused: systemd starts services in `/`, so
/// `data_dir = "data"` would mean `/data`, never what the operator meant.
fn check_own_dir(dir: &Path, example: &str) -> Result<(), String> {
    use std::path::Component;
    let shown = dir.display();
    if !dir.is_absolute() {
        return Err(format!(
            "`{shown}` is a relative path, but the service runs in / (systemd): \
             write an absolute path such as {example}"
        ));
    }
    // `Path::components` already folds `//`, `/./` and a trailing `/` or `/.`.
    let mut norm = PathBuf::from("/");
    for c in dir.components() {
        match c {
            Component::Normal(name) => norm.push(name),
            Component::ParentDir => {
                return Err(format!(
                    "`{shown}` contains `..`: write the directory itself, such as {example}"
                ))
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if let Some(tree) = VIRTUAL_TREES.iter().find(|t| norm.starts_with(t)) {
        if norm != Path::new(tree) {
            return Err(format!(
                "`{shown}` is under {tree}, a kernel file system: \
                 use a directory of cis490's own, such as {example}"
            ));
        }
    }
    if SYSTEM_DIRS.iter().any(|d| norm == Path::new(d)) {
        return Err(format!(
            "`{shown}` is the system directory {}: cis490 creates, moves and deletes \
             entries in it, so give it a directory of its own, such as {example}",
            norm.display()
        ));
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
        let token =
            auth::read_token_file(&token_file).map_err(|e| doc.err("token_file", e.to_string()))?;
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

    /// What a one-line document must give for key `a`.
    enum Want {
        Str(&'static str),
        Int(f64),
        /// Read as the float it is, and refused by every integer key.
        Float(f64),
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
            ("a = true", Refused("booleans")),
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
