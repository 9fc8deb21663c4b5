//! A decoder of pgoutput messages (protocol version 1), as the walsender sends them
//! inside XLogData: Relation, Type, Origin, Insert, Update, Delete, Truncate (Begin,
//! Commit and logical Messages arrive already parsed by the transport). Every read is
//! bounds-checked: bad input is an error, never a panic (a fuzz target holds it to that).

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    /// Part of the replica identity.
    pub key: bool,
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub typmod: i32,
}

/// A Relation message: a table's shape as the following changes carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub id: u32,
    /// Schema.
    pub namespace: String,
    /// Table.
    pub name: String,
    /// Replica identity: `d` default, `n` nothing, `f` full, `i` index.
    pub identity: u8,
    /// Columns in order.
    pub columns: Vec<RelColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// NULL.
    Null,
    /// An unchanged TOASTed value that was not sent.
    Unchanged,
    /// The value's text form.
    Text(Vec<u8>),
    /// The value's binary form (only with the `binary` option, unused by ferry).
    Binary(Vec<u8>),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A table's shape.
    Relation(Relation),
    /// A type's name (custom types).
    Type {
        /// OID.
        id: u32,
        /// Schema.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The transaction was replayed under a replication origin.
    Origin {
        /// Commit LSN at the origin.
        lsn: u64,
        /// Origin name.
        name: String,
    },
    /// A new row.
    Insert {
        /// Relation OID.
        rel: u32,
        /// The row.
        new: Vec<Datum>,
    },
    /// A changed row.
    Update {
        /// Relation OID.
        rel: u32,
        /// The old row (`O`, identity FULL) or old key (`K`, the key changed), if sent.
        old: Option<(u8, Vec<Datum>)>,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A removed row.
    Delete {
        /// Relation OID.
        rel: u32,
        /// `K` (key only) or `O` (whole row).
        kind: u8,
        /// The old key or row.
        old: Vec<Datum>,
    },
    /// Tables emptied.
    Truncate {
        /// Relation OIDs.
        rels: Vec<u32>,
    },
    /// A message the transport parses itself (Begin, Commit, logical Message) or one
    /// ferry does not use.
    Other(u8),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message (tag {tag:?}) at byte {at}: {what}")]
pub struct DecodeError {
    /// The message tag.
    pub tag: char,
    /// Offset of the failure.
    pub at: usize,
    /// What was expected.
    pub what: &'static str,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    tag: char,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError { tag: self.tag, at: self.at, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.err("more bytes"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        let n = rest.iter().position(|&b| b == 0).ok_or_else(|| self.err("a NUL-terminated string"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16()? as usize;
        // Each column takes at least one byte: a count beyond the buffer is malformed
        // (and must not reserve memory for it).
        if n > self.buf.len().saturating_sub(self.at) {
            return Err(self.err("a column count within the message"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?.to_vec();
                    if kind == b't' { Datum::Text(bytes) } else { Datum::Binary(bytes) }
                }
                _ => return Err(self.err("a column kind n, u, t or b")),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError { tag: '?', at: 0, what: "a message tag" });
    };
    let mut c = Cursor { buf, at: 1, tag: tag as char };
    Ok(match tag {
        b'R' => {
            let id = c.u32()?;
            let namespace = c.cstr()?;
            let name = c.cstr()?;
            let identity = c.u8()?;
            let n = c.u16()? as usize;
            if n > buf.len() {
                return Err(c.err("a column count within the message"));
            }
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = c.u8()?;
                let name = c.cstr()?;
                let type_oid = c.u32()?;
                let typmod = c.u32()? as i32;
                columns.push(RelColumn { key: flags & 1 == 1, name, type_oid, typmod });
            }
            Message::Relation(Relation { id, namespace, name, identity, columns })
        }
        b'Y' => {
            let id = c.u32()?;
            let namespace = c.cstr()?;
            let name = c.cstr()?;
            Message::Type { id, namespace, name }
        }
        b'O' => {
            let lsn = c.u64()?;
            let name = c.cstr()?;
            Message::Origin { lsn, name }
        }
        b'I' => {
            let rel = c.u32()?;
            if c.u8()? != b'N' {
                return Err(c.err("N before the new tuple"));
            }
            Message::Insert { rel, new: c.tuple()? }
        }
        b'U' => {
            let rel = c.u32()?;
            let mut old = None;
            let mut kind = c.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, c.tuple()?));
                kind = c.u8()?;
            }
            if kind != b'N' {
                return Err(c.err("N before the new tuple"));
            }
            Message::Update { rel, old, new: c.tuple()? }
        }
        b'D' => {
            let rel = c.u32()?;
            let kind = c.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(c.err("K or O before the old tuple"));
            }
            Message::Delete { rel, kind, old: c.tuple()? }
        }
        b'T' => {
            let n = c.u32()? as usize;
            let _options = c.u8()?;
            if n > buf.len() {
                return Err(c.err("a relation count within the message"));
            }
            let mut rels = Vec::with_capacity(n);
            for _ in 0..n {
                rels.push(c.u32()?);
            }
            Message::Truncate { rels }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.extend_from_slice(b"public\0t\0d");
        b.extend_from_slice(&2u16.to_be_bytes());
        b.push(1);
        b.extend_from_slice(b"id\0");
        b.extend_from_slice(&20u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(0);
        b.extend_from_slice(b"v\0");
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b
    }

    #[test]
    fn relations_and_rows_decode() {
        let Message::Relation(r) = decode(&relation()).expect("relation") else { panic!("not a relation") };
        assert_eq!((r.namespace.as_str(), r.name.as_str(), r.columns.len()), ("public", "t", 2));
        assert!(r.columns[0].key && !r.columns[1].key);
        let mut i = vec![b'I'];
        i.extend_from_slice(&16384u32.to_be_bytes());
        i.push(b'N');
        i.extend_from_slice(&3u16.to_be_bytes());
        i.push(b't');
        i.extend_from_slice(&1u32.to_be_bytes());
        i.push(b'7');
        i.push(b'n');
        i.push(b'u');
        assert_eq!(
            decode(&i).expect("insert"),
            Message::Insert { rel: 16384, new: vec![Datum::Text(b"7".to_vec()), Datum::Null, Datum::Unchanged] }
        );
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        let r = relation();
        for n in 0..r.len() {
            assert!(decode(&r[..n]).is_err(), "prefix {n}");
        }
        assert!(decode(&[b'I', 0, 0, 0, 1, b'N', 0xff, 0xff]).is_err());
        assert_eq!(decode(b"B").expect("other"), Message::Other(b'B'));
    }
}
