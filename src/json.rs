//! Reading the string members of one JSON object, leniently: whatever else
//! the object holds (numbers, booleans, null, nested objects and arrays, or
//! members we have never heard of) is skipped, not an error.
//!
//! Why not nanoserde's derive: it fails the whole document when one field
//! has an unexpected type, so another implementation of the protocol that
//! sends `"server_time": 1764356400` (a number) would make a good answer
//! unreadable. The shipper reads answers it acts on (`status`, `sha256`,
//! `host_id`) and must not care about the rest. Writing JSON stays with
//! nanoserde.

use std::collections::BTreeMap;

/// The top-level members of `text`'s object whose values are strings,
/// unescaped. `None` if `text` is not one JSON object.
pub fn string_members(text: &str) -> Option<BTreeMap<String, String>> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let members = p.object(true)?;
    p.ws();
    (p.i == p.b.len()).then_some(members)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// How deep nested values may go before the document is refused: answers
/// are flat, and a bound keeps a hostile body from exhausting the stack.
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// An object; with `keep`, its string members are returned.
    fn object(&mut self, keep: bool) -> Option<BTreeMap<String, String>> {
        self.object_at(keep, 0)
    }

    fn object_at(&mut self, keep: bool, depth: usize) -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(out);
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            if self.peek() == Some(b'"') {
                let v = self.string()?;
                if keep {
                    out.insert(key, v);
                }
            } else {
                self.skip(depth + 1)?;
            }
            if self.eat(b',').is_some() {
                continue;
            }
            self.eat(b'}')?;
            return Some(out);
        }
    }

    /// Skips one value that is not a string at this level.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object_at(false, depth).map(|_| ()),
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.eat(b',').is_some() {
                        continue;
                    }
                    return self.eat(b']');
                }
            }
            _ => {
                // A number, true, false or null: a run of these bytes.
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// A string, with JSON's escapes (a lone surrogate becomes U+FFFD).
    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return None,
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.b.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn unicode(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) && self.b.get(self.i..self.i + 2) == Some(b"\\u") {
            let save = self.i;
            self.i += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
            }
            self.i = save;
        }
        Some(char::from_u32(hi).unwrap_or('\u{FFFD}'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_read_and_everything_else_skipped() {
        let m = string_members(
            r#" {"status":"ok","server_time":1764356400,"host_id":"lab-01",
                "extra":{"a":[1,2,{"b":"c"}],"n":null},"ok":true,"v":-1.5e3,
                "msg":"a \"q\" \\ \u00e9 \ud83d\ude00 \n"} "#,
        )
        .unwrap();
        assert_eq!(m["status"], "ok");
        assert_eq!(m["host_id"], "lab-01");
        assert_eq!(m["msg"], "a \"q\" \\ é 😀 \n");
        assert!(!m.contains_key("server_time") && !m.contains_key("b"));
        assert_eq!(m.len(), 3);
        assert_eq!(string_members("{}").unwrap().len(), 0);
    }

    #[test]
    fn not_an_object_is_none() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        for bad in [
            "",
            "[]",
            "\"x\"",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":\"b\",}",
            "{\"a\":\"b\"} x",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\u{1}\"}",
            &deep,
        ] {
            assert_eq!(string_members(bad), None, "{bad:?}");
        }
    }
}
