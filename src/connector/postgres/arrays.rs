//! PostgreSQL arrays as ferry carries them: JSON arrays (the canonical form, what a
//! MySQL/MariaDB `JSON` column or a SQLite `TEXT` column holds), converted from
//! PostgreSQL's literal (`{1,NULL,3}`, `{{"a b",NULL},{"NULL",x}}`) when read and back
//! into it when written to an array column. Numbers keep their exact digits, booleans
//! become `true`/`false`, elements of `json[]` stay documents, everything else is a JSON
//! string; `NULL` and the string `"NULL"` stay apart. An array's non-default bounds
//! (`[0:1]={…}`) are not carried.

/// How an array's elements read as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// Numbers (integers, floats, numeric): JSON numbers (`NaN`, `Infinity` as strings).
    Number,
    /// Booleans (`t`/`f`): JSON booleans.
    Bool,
    /// json/jsonb: the documents themselves.
    Json,
    /// Everything else: JSON strings.
    Text,
}

/// A parsed array literal element.
enum Item {
    Array(Vec<Item>),
    Null,
    /// An element's text.
    Value(String),
}

/// PostgreSQL's array literal as a JSON array; `None` when it is not an array literal.
pub fn to_json(literal: &str, elem: Elem) -> Option<String> {
    let mut s = literal.trim();
    // `[1:3]={…}`: bounds other than 1 are dropped.
    if s.starts_with('[') {
        s = s.split_once('=')?.1.trim_start();
    }
    let mut chars = s.chars().peekable();
    let item = parse_array(&mut chars)?;
    if chars.any(|c| !c.is_whitespace()) {
        return None;
    }
    let mut out = String::with_capacity(literal.len() + 8);
    write_json(&item, elem, &mut out);
    Some(out)
}

fn parse_array(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Item> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek()? {
            '}' if items.is_empty() => {
                chars.next();
                return Some(Item::Array(items));
            }
            '{' => items.push(parse_array(chars)?),
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '\\' => text.push(chars.next()?),
                        '"' => break,
                        c => text.push(c),
                    }
                }
                items.push(Item::Value(text));
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    text.push(if c == '\\' {
                        chars.next();
                        *chars.peek()?
                    } else {
                        c
                    });
                    chars.next();
                }
                let text = text.trim_end().to_string();
                items.push(if text.eq_ignore_ascii_case("NULL") { Item::Null } else { Item::Value(text) });
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next()? {
            ',' => {}
            '}' => return Some(Item::Array(items)),
            _ => return None,
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// Whether `s` is a JSON number as written (so it can go unquoted).
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let int_start = i;
    if !digits(&mut i) || (b[int_start] == b'0' && i - int_start > 1) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn write_json(item: &Item, elem: Elem, out: &mut String) {
    match item {
        Item::Array(items) => {
            out.push('[');
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_json(i, elem, out);
            }
            out.push(']');
        }
        Item::Null => out.push_str("null"),
        Item::Value(text) => match elem {
            Elem::Number if is_json_number(text) => out.push_str(text),
            Elem::Bool if text == "t" || text == "true" => out.push_str("true"),
            Elem::Bool if text == "f" || text == "false" => out.push_str("false"),
            Elem::Json if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => out.push_str(text),
            _ => json_string(text, out),
        },
    }
}

/// A JSON value as the array literal converter walks it: arrays, strings, and the rest
/// as written (numbers keep their digits; objects stay documents).
enum Json<'a> {
    Array(Vec<Json<'a>>),
    Str(String),
    Raw(&'a str),
}

/// A JSON array as PostgreSQL's array literal; `None` when `text` is not a JSON array.
pub fn from_json(text: &str) -> Option<String> {
    let t = text.trim();
    if !t.starts_with('[') {
        return None;
    }
    let mut pos = 0;
    let value = parse_json(t, &mut pos)?;
    skip_ws(t, &mut pos);
    if pos != t.len() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 8);
    write_literal(&value, &mut out);
    Some(out)
}

fn skip_ws(t: &str, pos: &mut usize) {
    while t.as_bytes().get(*pos).is_some_and(|b| b.is_ascii_whitespace()) {
        *pos += 1;
    }
}

fn parse_json<'a>(t: &'a str, pos: &mut usize) -> Option<Json<'a>> {
    skip_ws(t, pos);
    let b = t.as_bytes();
    match *b.get(*pos)? {
        b'[' => {
            *pos += 1;
            let mut items = Vec::new();
            skip_ws(t, pos);
            if b.get(*pos) == Some(&b']') {
                *pos += 1;
                return Some(Json::Array(items));
            }
            loop {
                items.push(parse_json(t, pos)?);
                skip_ws(t, pos);
                match *b.get(*pos)? {
                    b',' => *pos += 1,
                    b']' => {
                        *pos += 1;
                        return Some(Json::Array(items));
                    }
                    _ => return None,
                }
            }
        }
        b'"' => {
            let end = string_end(b, *pos)?;
            let s: String = serde_json::from_str(&t[*pos..end]).ok()?;
            *pos = end;
            Some(Json::Str(s))
        }
        b'{' => {
            let start = *pos;
            let mut depth = 0usize;
            while *pos < b.len() {
                match b[*pos] {
                    b'"' => {
                        *pos = string_end(b, *pos)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            *pos += 1;
                            return Some(Json::Raw(&t[start..*pos]));
                        }
                    }
                    _ => {}
                }
                *pos += 1;
            }
            None
        }
        _ => {
            let start = *pos;
            while *pos < b.len() && !matches!(b[*pos], b',' | b']' | b'}') && !b[*pos].is_ascii_whitespace() {
                *pos += 1;
            }
            let raw = &t[start..*pos];
            (raw == "null" || raw == "true" || raw == "false" || is_json_number(raw)).then_some(Json::Raw(raw))
        }
    }
}

/// The index just past the JSON string starting at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn write_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn write_literal(v: &Json<'_>, out: &mut String) {
    match v {
        Json::Array(items) => {
            out.push('{');
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_literal(i, out);
            }
            out.push('}');
        }
        Json::Str(s) => write_quoted(s, out),
        Json::Raw("null") => out.push_str("NULL"),
        Json::Raw(raw) if raw.starts_with('{') => write_quoted(raw, out),
        Json::Raw(raw) => out.push_str(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_become_json_and_come_back_exactly() {
        let cases = [
            ("{1,NULL,3}", Elem::Number, "[1,null,3]"),
            ("{}", Elem::Number, "[]"),
            ("{{1,2},{3,4}}", Elem::Number, "[[1,2],[3,4]]"),
            ("{NaN,-12345678901234567890.0123456789}", Elem::Number, "[\"NaN\",-12345678901234567890.0123456789]"),
            ("{t,f,NULL}", Elem::Bool, "[true,false,null]"),
            (r#"{"a b","e\"f",NULL,"NULL","back\\slash"}"#, Elem::Text, r#"["a b","e\"f",null,"NULL","back\\slash"]"#),
            (r#"{"{\"a\": 1}",NULL}"#, Elem::Json, r#"[{"a": 1},null]"#),
        ];
        for (literal, elem, json) in cases {
            assert_eq!(to_json(literal, elem).as_deref(), Some(json), "{literal}");
        }
        let back = [
            ("[1,null,3]", "{1,NULL,3}"),
            ("[]", "{}"),
            ("[[1,2],[3,4]]", "{{1,2},{3,4}}"),
            ("[1, null, 3]", "{1,NULL,3}"),
            (r#"["a b","e\"f",null,"NULL","back\\slash"]"#, r#"{"a b","e\"f",NULL,"NULL","back\\slash"}"#),
            ("[true,false]", "{true,false}"),
            (r#"[{"a": [1, "}"]},null]"#, r#"{"{\"a\": [1, \"}\"]}",NULL}"#),
            ("[-12345678901234567890.0123456789]", "{-12345678901234567890.0123456789}"),
        ];
        for (json, literal) in back {
            assert_eq!(from_json(json).as_deref(), Some(literal), "{json}");
        }
        assert_eq!(to_json("[0:1]={7,8}", Elem::Number).as_deref(), Some("[7,8]"));
        assert_eq!(to_json("not an array", Elem::Text), None);
        assert_eq!(from_json("{\"a\": 1}"), None);
        assert_eq!(from_json("[1,"), None);
    }
}
