//! `Doc`: a configuration file read (strictly, then by nanoserde, which
//! must agree) into keys that are taken out as they are read, so whatever
//! is left at the end is an unknown key, named in the error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoserde::{Toml, TomlParser};

use super::files::*;
use super::toml::*;
use super::*;

/// A parsed TOML file; reading a key takes it out.
pub(super) struct Doc {
    path: PathBuf,
    /// Keys not yet read.
    pub(super) map: BTreeMap<String, Toml>,
    /// Keys written as floats (`3.0`), which nanoserde reads as `3`.
    floats: BTreeSet<String>,
}

impl Doc {
    pub(super) fn load(path: &Path) -> Result<Doc, ConfigError> {
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

    pub(super) fn parse(path: &Path, text: &str) -> Result<Doc, ConfigError> {
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

    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// Takes a key out of the document; what is left at `finish` is unknown.
    pub(super) fn get(&mut self, key: &str) -> Option<Toml> {
        self.map.remove(key)
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Toml::Str(s)) if s.trim().is_empty() => Err(self.err(key, "must not be empty")),
            Some(Toml::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(key, "must be a string in double quotes")),
        }
    }

    pub(super) fn required_string(&mut self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.err(key, "is required but missing"))
    }

    pub(super) fn path(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(PathBuf::from))
    }

    pub(super) fn required_path(&mut self, key: &str) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(self.required_string(key)?))
    }

    /// A directory cis490 fills and empties (`data_dir`, `store_dir`):
    /// absolute, and not a system directory. `example` says what to write.
    pub(super) fn required_dir(
        &mut self,
        key: &str,
        example: &str,
    ) -> Result<PathBuf, ConfigError> {
        let dir = self.required_path(key)?;
        check_own_dir(&dir, example).map_err(|m| self.err(key, m))?;
        Ok(dir)
    }

    /// A file a loader reads later (certificate, key, CA). Refused here,
    /// where the key is known, if it exists and is not a regular file; the
    /// loader opens it without blocking and checks again, and reports a
    /// missing or unreadable file with its path.
    pub(super) fn file(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
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

    pub(super) fn integer(
        &mut self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
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
    pub(super) fn optional_integer(
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

    /// `true` or `false` (without quotes), `default` when absent.
    pub(super) fn boolean(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Toml::Bool(b)) => Ok(b),
            Some(_) => Err(self.err(key, "must be true or false (without quotes)")),
        }
    }

    pub(super) fn seconds(&mut self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.integer(key, default, 1, 86_400)?))
    }

    /// Every `[table]` entry, as (name, value).
    pub(super) fn table(&mut self, table: &str) -> Vec<(String, Toml)> {
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
    pub(super) fn finish(self, known: &str) -> Result<(), ConfigError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(k, format!("unknown key (known keys: {known})"))),
        }
    }
}
