//! Python-flavoured values for lm-eval's templates.
//!
//! lm-eval renders templates with Python's Jinja2, so a value printed by a template looks like
//! Python's `str()` of it (`None`, `True`, `['a', 'b']`), and `doc_to_choice` templates are read
//! back with `ast.literal_eval`. [`py_str`] prints a JSON value as Python would, and
//! [`literal_eval`] parses the literal subset these templates produce: lists, tuples, dicts,
//! strings (single or double quotes, the usual escapes), integers, floats, `True`/`False`/`None`.

use serde_json::{Map, Number, Value};

/// Python's `repr` of a string: single quotes unless the text holds a `'` and no `"`.
pub fn py_repr_str(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn py_num(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    py_float(f)
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, `inf`/`nan`.
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python switches to exponent form outside [1e-4, 1e16): 1e-05, 1e+16.
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Python's `repr` of a JSON value.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => py_repr_str(s),
        other => py_str(other),
    }
}

/// Python's `str` of a JSON value (strings as they are; containers with their items' `repr`).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => py_num(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Parses a Python literal (the subset described in the module docs) into a JSON value.
pub fn literal_eval(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!(
            "unexpected text after the literal at byte {}: {:?}",
            p.i,
            &text[p.i..]
        ));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!(
            "not a Python literal ({what} at byte {}): {:?}",
            self.i, self.text
        ))
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'[' | b'(' => {
                let close = if c == b'[' { b']' } else { b')' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.s.get(self.i) == Some(&close) {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(&x) if x == close => {}
                        _ => return self.err("expected `,` or a closing bracket"),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut m = Map::new();
                loop {
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Object(m));
                    }
                    let k = match self.value()? {
                        Value::String(s) => s,
                        other => py_str(&other),
                    };
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("expected `:`");
                    }
                    self.i += 1;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {}
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            b'\'' | b'"' => self.string(c),
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && !matches!(self.s[self.i], b',' | b']' | b')' | b'}' | b':')
                    && !self.s[self.i].is_ascii_whitespace()
                {
                    self.i += 1;
                }
                let tok = &self.text[start..self.i];
                match tok {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    _ => {
                        let t = tok.replace('_', "");
                        if let Ok(i) = t.parse::<i64>() {
                            Ok(Value::from(i))
                        } else if let Ok(f) = t.parse::<f64>() {
                            Ok(Number::from_f64(f)
                                .map(Value::Number)
                                .unwrap_or(Value::Null))
                        } else {
                            self.i = start;
                            self.err("unknown token")
                        }
                    }
                }
            }
        }
    }

    fn string(&mut self, q: u8) -> Result<Value, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let Some(c) = rest.chars().next() else {
                return self.err("unterminated string");
            };
            self.i += c.len_utf8();
            if c as u32 == q as u32 {
                return Ok(Value::String(out));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.text[self.i..].chars().next() else {
                return self.err("unterminated escape");
            };
            self.i += e.len_utf8();
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' => out.push(e),
                '\n' => {}
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex = self
                        .text
                        .get(self.i..self.i + n)
                        .ok_or_else(|| format!("bad escape in {:?}", self.text))?;
                    let cp = u32::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad escape \\{e}{hex} in {:?}", self.text))?;
                    self.i += n;
                    out.push(
                        char::from_u32(cp).ok_or_else(|| format!("bad code point \\{e}{hex}"))?,
                    );
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repr_like_python() {
        // Each expected string is what CPython prints for the same value.
        assert_eq!(
            py_str(&json!(["a", "it's", 1, null, true])),
            r#"['a', "it's", 1, None, True]"#
        );
        assert_eq!(py_str(&json!({"k": [1.5]})), "{'k': [1.5]}");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_repr_str("a\nb"), r"'a\nb'");
    }

    #[test]
    fn literal_round_trip() {
        assert_eq!(
            literal_eval(r#"['Quib', "Ümla upon Vol", 'it\'s']"#).unwrap(),
            json!(["Quib", "Ümla upon Vol", "it's"])
        );
        assert_eq!(
            literal_eval("(1, -2, 3.5, None)").unwrap(),
            json!([1, -2, 3.5, null])
        );
        assert_eq!(literal_eval("{'a': [True]}").unwrap(), json!({"a": [true]}));
        assert!(literal_eval("[1, 2").is_err());
        assert!(literal_eval("Quib").is_err());
    }
}
