//! Rows travel through the changelog as SQLite `quote()` literal lists
//! (`1,'it''s',X'00ff',NULL,2.5`): exact for every SQLite storage class (quote() prints
//! a REAL with enough digits to round-trip), cheap to produce in a trigger, and parsed here.

use crate::model::Value;

/// Quotes an identifier for SQLite.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string as a SQLite string literal.
pub fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SQL expression yielding the literal list of `cols`, read from `prefix` ("NEW", "OLD" or "").
pub fn row_expr(prefix: &str, cols: &[&str]) -> String {
    let parts: Vec<String> =
        cols.iter()
            .map(|c| {
                if prefix.is_empty() { format!("quote({})", ident(c)) } else { format!("quote({prefix}.{})", ident(c)) }
            })
            .collect();
    parts.join("||','||")
}

/// A literal list that is not what quote() produces.
#[derive(Debug, thiserror::Error)]
#[error("malformed row literal at byte {at}: {text:.80}")]
pub struct LiteralError {
    /// Byte offset of the problem.
    pub at: usize,
    /// The text (truncated when shown).
    pub text: String,
}

/// Parses a literal list into values.
pub fn parse_row(text: &str) -> Result<Vec<Value>, LiteralError> {
    let mut out = Vec::with_capacity(8);
    let end = parse_list(text, 0, &mut out)?;
    if end != text.len() {
        return Err(LiteralError { at: end, text: text.to_string() });
    }
    Ok(out)
}

/// Parses the literal list starting at byte `from` into `out`, up to the end of the text
/// or an unquoted `;` (the row separator of a packed changelog read); returns the offset
/// where it stopped. One pass: the row's end is found while its values are read.
pub fn parse_list(text: &str, from: usize, out: &mut Vec<Value>) -> Result<usize, LiteralError> {
    let b = text.as_bytes();
    let mut i = from;
    let err = |at: usize| LiteralError { at, text: text[from..].chars().take(200).collect() };
    if i >= b.len() || b[i] == b';' {
        return Ok(i);
    }
    loop {
        match b.get(i) {
            Some(b'\'') => {
                let start = i + 1;
                // memchr on the bytes: `str::find(char)` cost ~200 instructions a call.
                let close = |at: usize| memchr::memchr(b'\'', &b[at..]).map(|e| at + e).ok_or_else(|| err(i));
                let mut j = close(start)?;
                if b.get(j + 1) == Some(&b'\'') {
                    // Rare: an escaped quote; build the value piece by piece.
                    let mut s = String::with_capacity(j - start + 16);
                    let mut piece = start;
                    loop {
                        if b.get(j + 1) == Some(&b'\'') {
                            s.push_str(&text[piece..=j]);
                            piece = j + 2;
                            j = close(piece)?;
                        } else {
                            s.push_str(&text[piece..j]);
                            break;
                        }
                    }
                    out.push(Value::Text(s));
                } else {
                    out.push(Value::Text(text[start..j].to_string()));
                }
                i = j + 1;
            }
            Some(b'X') | Some(b'x') if b.get(i + 1) == Some(&b'\'') => {
                let start = i + 2;
                let end = memchr::memchr(b'\'', &b[start..]).map(|e| start + e).ok_or_else(|| err(i))?;
                let hex = &b[start..end];
                if !hex.len().is_multiple_of(2) {
                    return Err(err(i));
                }
                let mut bytes = Vec::with_capacity(hex.len() / 2);
                for pair in hex.chunks(2) {
                    let hi = hex_digit(pair[0]).ok_or_else(|| err(start))?;
                    let lo = hex_digit(pair[1]).ok_or_else(|| err(start))?;
                    bytes.push(hi << 4 | lo);
                }
                out.push(Value::Bytes(bytes));
                i = end + 1;
            }
            Some(b'N') => {
                if !text[i..].starts_with("NULL") {
                    return Err(err(i));
                }
                out.push(Value::Null);
                i += 4;
            }
            Some(_) => {
                // Integers (most numbers) are read in the same pass that finds their end.
                let (v, end) = match int_prefix(&b[i..]) {
                    Some((n, len)) => (Value::Int(n), i + len),
                    None => {
                        let end = b[i..].iter().position(|c| matches!(c, b',' | b';')).map_or(b.len(), |e| i + e);
                        (Value::Float(text[i..end].parse::<f64>().map_err(|_| err(i))?), end)
                    }
                };
                out.push(v);
                i = end;
            }
            None => return Err(err(i)),
        }
        match b.get(i) {
            None | Some(b';') => return Ok(i),
            Some(b',') => i += 1,
            Some(_) => return Err(err(i)),
        }
    }
}

/// A decimal integer literal at the start of `b` that ends at a `,`, a `;` or the end,
/// and its length: what [`int`] accepts, read in one pass. `None` when the token is
/// anything else (a REAL, or an integer out of range, which quote() prints as a REAL).
pub fn int_prefix(b: &[u8]) -> Option<(i64, usize)> {
    let neg = b.first() == Some(&b'-');
    let start = usize::from(neg);
    let mut n: i64 = 0;
    let mut i = start;
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        // Accumulate negatively so i64::MIN fits.
        n = n.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
        i += 1;
    }
    if i == start || i - start > 19 || !matches!(b.get(i), None | Some(b',' | b';')) {
        return None;
    }
    Some((if neg { n } else { n.checked_neg()? }, i))
}

/// A decimal integer literal as quote() prints one (optional `-`, digits, nothing
/// else); `None` for anything else, including values out of range (those are REALs).
pub fn int(tok: &[u8]) -> Option<i64> {
    let (neg, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, tok),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // Accumulate negatively so i64::MIN fits.
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
    }
    if neg { Some(n) } else { n.checked_neg() }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_storage_class() {
        let row = parse_row(
            "1,-9223372036854775808,'it''s, ok','',X'00FF',NULL,2.5,-0.0,9.0e+999,1.00000000000000005551e-01",
        )
        .expect("parses");
        assert_eq!(row[0], Value::Int(1));
        assert_eq!(row[1], Value::Int(i64::MIN));
        assert_eq!(row[2], Value::Text("it's, ok".into()));
        assert_eq!(row[3], Value::Text(String::new()));
        assert_eq!(row[4], Value::Bytes(vec![0, 255]));
        assert_eq!(row[5], Value::Null);
        assert_eq!(row[6], Value::Float(2.5));
        assert!(row[7].same(&Value::Float(-0.0)));
        assert_eq!(row[8], Value::Float(f64::INFINITY));
        assert_eq!(row[9], Value::Float(0.1));
    }

    #[test]
    fn stops_at_the_row_separator() {
        let text = "1,'a;b',NULL;2,'c'";
        let mut out = Vec::new();
        let end = parse_list(text, 0, &mut out).expect("parses");
        assert_eq!(&text[end..end + 1], ";");
        assert_eq!(out, vec![Value::Int(1), Value::Text("a;b".into()), Value::Null]);
        out.clear();
        assert_eq!(parse_list(text, end + 1, &mut out).expect("parses"), text.len());
        assert_eq!(out, vec![Value::Int(2), Value::Text("c".into())]);
        assert_eq!(int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(int(b"9223372036854775808"), None);
        assert_eq!(int(b"1e5"), None);
        assert_eq!(int_prefix(b"-9223372036854775808,1"), Some((i64::MIN, 20)));
        assert_eq!(int_prefix(b"9223372036854775808"), None);
        assert_eq!(int_prefix(b"12;3"), Some((12, 2)));
        assert_eq!(int_prefix(b"1.5,2"), None);
        assert_eq!(int_prefix(b"-,2"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_row("'open").is_err());
        assert!(parse_row("1,,2").is_err());
        assert!(parse_row("X'0'").is_err());
    }
}
