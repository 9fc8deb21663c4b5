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
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(8);
    let mut i = 0;
    let err = |at: usize| LiteralError { at, text: text.to_string() };
    if b.is_empty() {
        return Ok(out);
    }
    loop {
        match b.get(i) {
            Some(b'\'') => {
                let mut s = String::new();
                let mut start = i + 1;
                let mut j = start;
                loop {
                    match b.get(j) {
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => {
                            s.push_str(&text[start..=j]);
                            j += 2;
                            start = j;
                        }
                        Some(b'\'') => {
                            s.push_str(&text[start..j]);
                            break;
                        }
                        Some(_) => j += 1,
                        None => return Err(err(i)),
                    }
                }
                out.push(Value::Text(s));
                i = j + 1;
            }
            Some(b'X') | Some(b'x') if b.get(i + 1) == Some(&b'\'') => {
                let start = i + 2;
                let end = text[start..].find('\'').map(|e| start + e).ok_or_else(|| err(i))?;
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
                let end = text[i..].find(',').map(|e| i + e).unwrap_or(text.len());
                let tok = &text[i..end];
                let is_float = tok.bytes().any(|c| matches!(c, b'.' | b'e' | b'E' | b'I' | b'N'));
                let v = if is_float {
                    Value::Float(tok.parse::<f64>().map_err(|_| err(i))?)
                } else {
                    match tok.parse::<i64>() {
                        Ok(n) => Value::Int(n),
                        Err(_) => Value::Float(tok.parse::<f64>().map_err(|_| err(i))?),
                    }
                };
                out.push(v);
                i = end;
            }
            None => return Err(err(i)),
        }
        match b.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err(err(i)),
        }
    }
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
    fn rejects_garbage() {
        assert!(parse_row("'open").is_err());
        assert!(parse_row("1,,2").is_err());
        assert!(parse_row("X'0'").is_err());
    }
}
