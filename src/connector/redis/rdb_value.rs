//! A value as an RDB (and a `DUMP` payload) serializes it, decoded into its elements:
//! every encoding Redis 7.x writes (plain, ziplist, listpack, intset, zipmap, quicklist,
//! stream listpacks with consumer groups). The sink needs it when a key cannot be
//! `RESTORE`d on the target (payload too big or of a newer RDB version) and is written
//! as ordinary commands instead (see `rewrite.rs`).

use super::rdb::lzf_decompress;

/// Why a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid serialization.
    #[error("its serialized value is corrupt ({0})")]
    Corrupt(&'static str),
    /// A type or encoding ferry does not decode.
    #[error("it holds {0}, which ferry cannot rewrite as commands")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, DecodeError>;

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A pending entry of a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The entry.
    pub id: StreamId,
    /// When it was last delivered, ms since the epoch.
    pub delivered_ms: i64,
    /// How many times it was delivered.
    pub count: u64,
}

/// A consumer of a group, with the ids it has pending.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// Its name.
    pub name: Vec<u8>,
    /// Its pending entries.
    pub pending: Vec<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its name.
    pub name: Vec<u8>,
    /// The last id delivered to it.
    pub last_id: StreamId,
    /// Entries read (None: unknown, as Redis keeps it after some deletions).
    pub entries_read: Option<u64>,
    /// Its pending entries list.
    pub pending: Vec<Pending>,
    /// Its consumers.
    pub consumers: Vec<Consumer>,
}

/// A stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    /// Its entries in order: id and field/value pairs.
    pub entries: Vec<(StreamId, Vec<(Vec<u8>, Vec<u8>)>)>,
    /// The last id generated.
    pub last_id: StreamId,
    /// Entries ever added (RDB 10+).
    pub entries_added: Option<u64>,
    /// The greatest id deleted (RDB 10+).
    pub max_deleted: Option<StreamId>,
    /// Its consumer groups.
    pub groups: Vec<Group>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(Vec<u8>),
    /// A list, in order.
    List(Vec<Vec<u8>>),
    /// A set's members.
    Set(Vec<Vec<u8>>),
    /// A hash's fields and values.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// A sorted set's members and exact scores.
    ZSet(Vec<(Vec<u8>, f64)>),
    /// A stream.
    Stream(Box<Stream>),
}

/// The value and the RDB version of a `DUMP` payload (its trailer: 2 bytes of version,
/// 8 of CRC). The CRC is not checked here: the payload came from ferry's own framing.
pub fn split_payload(payload: &[u8]) -> Option<(&[u8], u16)> {
    let body = payload.len().checked_sub(10)?;
    let v = u16::from_le_bytes([payload[body], payload[body + 1]]);
    Some((&payload[..body], v))
}

/// Decodes a value serialization (type byte first).
pub fn decode(value: &[u8]) -> Result<Value> {
    let mut c = Cur { b: value, i: 0 };
    let t = c.byte()?;
    let v = match t {
        0 => Value::Str(c.string()?),
        1 => Value::List(c.strings()?),
        2 => Value::Set(c.strings()?),
        3 | 5 => {
            let n = c.count()?;
            let mut out = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let m = c.string()?;
                let score = if t == 5 { f64::from_le_bytes(c.array()?) } else { c.text_double()? };
                out.push((m, score));
            }
            Value::ZSet(out)
        }
        4 => {
            let n = c.count()?;
            let mut out = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                out.push((c.string()?, c.string()?));
            }
            Value::Hash(out)
        }
        9 => Value::Hash(zipmap(&c.string()?)?),
        10 => Value::List(texts(ziplist(&c.string()?)?)),
        11 => Value::Set(intset(&c.string()?)?),
        12 => Value::ZSet(scored(ziplist(&c.string()?)?)?),
        13 => Value::Hash(pairs(ziplist(&c.string()?)?)?),
        14 | 18 => {
            let mut out = Vec::new();
            for _ in 0..c.count()? {
                let packed = t == 14 || c.plain_len()? == 2;
                let node = c.string()?;
                match (t, packed) {
                    (14, _) => out.extend(texts(ziplist(&node)?)),
                    (_, true) => out.extend(texts(listpack(&node)?)),
                    _ => out.push(node),
                }
            }
            Value::List(out)
        }
        16 => Value::Hash(pairs(listpack(&c.string()?)?)?),
        17 => Value::ZSet(scored(listpack(&c.string()?)?)?),
        20 => Value::Set(texts(listpack(&c.string()?)?)),
        15 | 19 | 21 => Value::Stream(Box::new(stream(&mut c, t)?)),
        6 | 7 => return Err(DecodeError::Unsupported("a value of a module's type".into())),
        22..=25 => return Err(DecodeError::Unsupported("a hash with field expiries (Redis 7.4+)".into())),
        other => return Err(DecodeError::Unsupported(format!("an RDB value of type {other}"))),
    };
    Ok(v)
}

/// An element of a ziplist or listpack.
#[derive(Debug, Clone, PartialEq)]
enum Elem {
    Bytes(Vec<u8>),
    Int(i64),
}

impl Elem {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Elem::Bytes(b) => b,
            Elem::Int(i) => i.to_string().into_bytes(),
        }
    }

    fn int(&self) -> Result<i64> {
        match self {
            Elem::Int(i) => Ok(*i),
            Elem::Bytes(b) => {
                std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(DecodeError::Corrupt("a number"))
            }
        }
    }

    fn score(self) -> Result<f64> {
        match self {
            Elem::Int(i) => Ok(i as f64),
            Elem::Bytes(b) => parse_double(&b),
        }
    }
}

fn parse_double(b: &[u8]) -> Result<f64> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(DecodeError::Corrupt("a score"))
}

fn texts(v: Vec<Elem>) -> Vec<Vec<u8>> {
    v.into_iter().map(Elem::into_bytes).collect()
}

fn pairs(v: Vec<Elem>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    pairs_with(v, |a, b| Ok((a.into_bytes(), b.into_bytes())))
}

fn scored(v: Vec<Elem>) -> Result<Vec<(Vec<u8>, f64)>> {
    pairs_with(v, |m, s| Ok((m.into_bytes(), s.score()?)))
}

fn pairs_with<T>(v: Vec<Elem>, f: impl Fn(Elem, Elem) -> Result<T>) -> Result<Vec<T>> {
    if !v.len().is_multiple_of(2) {
        return Err(DecodeError::Corrupt("an odd number of elements in pairs"));
    }
    let mut it = v.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push(f(a, b)?);
    }
    Ok(out)
}

/// A cursor over serialized bytes.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n).ok_or(DecodeError::Corrupt("a length"))?);
        let s = s.ok_or(DecodeError::Corrupt("the value ends early"))?;
        self.i += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Corrupt("a fixed field"))
    }

    /// A length, or a special string encoding (`true`).
    fn len(&mut self) -> Result<(u64, bool)> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => (u64::from(b & 0x3f), false),
            1 => (u64::from(b & 0x3f) << 8 | u64::from(self.byte()?), false),
            2 if b == 0x80 => (u64::from(u32::from_be_bytes(self.array()?)), false),
            2 if b == 0x81 => (u64::from_be_bytes(self.array()?), false),
            2 => return Err(DecodeError::Corrupt("a length encoding")),
            _ => (u64::from(b & 0x3f), true),
        })
    }

    fn plain_len(&mut self) -> Result<u64> {
        match self.len()? {
            (n, false) => Ok(n),
            _ => Err(DecodeError::Corrupt("a string-encoded length")),
        }
    }

    /// A count of elements, bounded by what the bytes left could hold.
    fn count(&mut self) -> Result<usize> {
        let n = self.plain_len()?;
        usize::try_from(n).ok().filter(|n| *n <= self.b.len() - self.i).ok_or(DecodeError::Corrupt("an element count"))
    }

    fn size(&mut self) -> Result<usize> {
        usize::try_from(self.plain_len()?).map_err(|_| DecodeError::Corrupt("a length"))
    }

    fn string(&mut self) -> Result<Vec<u8>> {
        Ok(match self.len()? {
            (n, false) => self.take(usize::try_from(n).map_err(|_| DecodeError::Corrupt("a length"))?)?.to_vec(),
            (0, true) => (self.byte()? as i8).to_string().into_bytes(),
            (1, true) => i16::from_le_bytes(self.array()?).to_string().into_bytes(),
            (2, true) => i32::from_le_bytes(self.array()?).to_string().into_bytes(),
            (3, true) => {
                let (clen, ulen) = (self.size()?, self.size()?);
                let data = self.take(clen)?;
                lzf_decompress(data, ulen).map_err(|_| DecodeError::Corrupt("an LZF string"))?
            }
            _ => return Err(DecodeError::Corrupt("a string encoding")),
        })
    }

    fn strings(&mut self) -> Result<Vec<Vec<u8>>> {
        (0..self.count()?).map(|_| self.string()).collect()
    }

    /// A score of the old sorted-set type: a length byte, then its text.
    fn text_double(&mut self) -> Result<f64> {
        Ok(match self.byte()? {
            253 => f64::NAN,
            254 => f64::INFINITY,
            255 => f64::NEG_INFINITY,
            n => parse_double(self.take(n as usize)?)?,
        })
    }

    fn id(&mut self) -> Result<StreamId> {
        Ok(StreamId { ms: self.plain_len()?, seq: self.plain_len()? })
    }

    /// A 128-bit id as raw big-endian bytes (pending entries lists).
    fn raw_id(&mut self) -> Result<StreamId> {
        Ok(StreamId { ms: u64::from_be_bytes(self.array()?), seq: u64::from_be_bytes(self.array()?) })
    }
}

/// The elements of a ziplist (header: bytes u32, tail u32, count u16; 0xFF ends it).
fn ziplist(b: &[u8]) -> Result<Vec<Elem>> {
    let bad = |w| DecodeError::Corrupt(w);
    let mut i = 10;
    let mut out = Vec::new();
    let get = |from: usize, n: usize| b.get(from..from + n).ok_or(bad("a ziplist ends early"));
    loop {
        let first = *b.get(i).ok_or(bad("a ziplist has no end"))?;
        if first == 0xFF {
            return Ok(out);
        }
        i += if first < 254 { 1 } else { 5 };
        let enc = *b.get(i).ok_or(bad("a ziplist ends early"))?;
        let (elem, size) = match enc >> 6 {
            0 => {
                let n = (enc & 0x3f) as usize;
                (Elem::Bytes(get(i + 1, n)?.to_vec()), 1 + n)
            }
            1 => {
                let n = ((enc & 0x3f) as usize) << 8 | *b.get(i + 1).ok_or(bad("a ziplist ends early"))? as usize;
                (Elem::Bytes(get(i + 2, n)?.to_vec()), 2 + n)
            }
            2 => {
                let n = u32::from_be_bytes(get(i + 1, 4)?.try_into().map_err(|_| bad("a ziplist length"))?) as usize;
                (Elem::Bytes(get(i + 5, n)?.to_vec()), 5 + n)
            }
            _ => match enc {
                0xC0 => (Elem::Int(int_le(get(i + 1, 2)?)), 3),
                0xD0 => (Elem::Int(int_le(get(i + 1, 4)?)), 5),
                0xE0 => (Elem::Int(int_le(get(i + 1, 8)?)), 9),
                0xF0 => (Elem::Int(int_le(get(i + 1, 3)?)), 4),
                0xFE => (Elem::Int(int_le(get(i + 1, 1)?)), 2),
                0xF1..=0xFD => (Elem::Int(i64::from(enc & 0x0f) - 1), 1),
                _ => return Err(bad("a ziplist entry encoding")),
            },
        };
        out.push(elem);
        i += size;
    }
}

/// A little-endian signed integer of 1 to 8 bytes.
fn int_le(b: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (k, &x) in b.iter().enumerate() {
        v |= u64::from(x) << (8 * k);
    }
    let bits = 8 * b.len() as u32;
    if bits < 64 && v >> (bits - 1) & 1 == 1 {
        v |= u64::MAX << bits;
    }
    v as i64
}

/// The elements of a listpack (header: bytes u32, count u16; each entry's encoding and
/// data, then its length again backwards in 1 to 5 bytes; 0xFF ends it).
fn listpack(b: &[u8]) -> Result<Vec<Elem>> {
    let bad = |w| DecodeError::Corrupt(w);
    let get = |from: usize, n: usize| b.get(from..from + n).ok_or(bad("a listpack ends early"));
    let mut i = 6;
    let mut out = Vec::new();
    loop {
        let enc = *b.get(i).ok_or(bad("a listpack has no end"))?;
        let (elem, size) = match enc {
            0xFF => return Ok(out),
            e if e & 0x80 == 0 => (Elem::Int(i64::from(e)), 1),
            e if e & 0xC0 == 0x80 => {
                let n = (e & 0x3f) as usize;
                (Elem::Bytes(get(i + 1, n)?.to_vec()), 1 + n)
            }
            e if e & 0xE0 == 0xC0 => {
                let v = i64::from(e & 0x1f) << 8 | i64::from(get(i + 1, 1)?[0]);
                (Elem::Int(if v >= 1 << 12 { v - (1 << 13) } else { v }), 2)
            }
            e if e & 0xF0 == 0xE0 => {
                let n = ((e & 0x0f) as usize) << 8 | get(i + 1, 1)?[0] as usize;
                (Elem::Bytes(get(i + 2, n)?.to_vec()), 2 + n)
            }
            0xF0 => {
                let n = int_le(get(i + 1, 4)?) as u32 as usize;
                (Elem::Bytes(get(i + 5, n)?.to_vec()), 5 + n)
            }
            0xF1 => (Elem::Int(int_le(get(i + 1, 2)?)), 3),
            0xF2 => (Elem::Int(int_le(get(i + 1, 3)?)), 4),
            0xF3 => (Elem::Int(int_le(get(i + 1, 4)?)), 5),
            0xF4 => (Elem::Int(int_le(get(i + 1, 8)?)), 9),
            _ => return Err(bad("a listpack entry encoding")),
        };
        out.push(elem);
        let back = match size {
            0..128 => 1,
            128..16_384 => 2,
            16_384..2_097_152 => 3,
            2_097_152..268_435_456 => 4,
            _ => 5,
        };
        i += size + back;
    }
}

/// An intset's members (encoding u32: 2, 4 or 8 bytes a member; count u32).
fn intset(b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = DecodeError::Corrupt("an intset");
    let head = b.get(..8).ok_or(DecodeError::Corrupt("an intset"))?;
    let width = int_le(&head[..4]) as usize;
    let n = int_le(&head[4..8]) as u32 as usize;
    if !matches!(width, 2 | 4 | 8) || b.len() != 8 + width * n {
        return Err(bad);
    }
    Ok(b[8..].chunks(width).map(|c| int_le(c).to_string().into_bytes()).collect())
}

/// A zipmap's pairs (the hash encoding of Redis before 2.6).
fn zipmap(b: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || DecodeError::Corrupt("a zipmap");
    let mut i = 1;
    let len = |i: &mut usize| -> Result<usize> {
        let f = *b.get(*i).ok_or_else(bad)?;
        if f < 254 {
            *i += 1;
            return Ok(f as usize);
        }
        let n = int_le(b.get(*i + 1..*i + 5).ok_or_else(bad)?) as u32 as usize;
        *i += 5;
        Ok(n)
    };
    let mut out = Vec::new();
    while *b.get(i).ok_or_else(bad)? != 0xFF {
        let kl = len(&mut i)?;
        let k = b.get(i..i + kl).ok_or_else(bad)?.to_vec();
        i += kl;
        let vl = len(&mut i)?;
        let free = *b.get(i).ok_or_else(bad)? as usize;
        i += 1;
        let v = b.get(i..i + vl).ok_or_else(bad)?.to_vec();
        i += vl + free;
        out.push((k, v));
    }
    Ok(out)
}

/// Stream entry flags.
const DELETED: i64 = 1;
const SAME_FIELDS: i64 = 2;

/// A stream (types 15, 19 and 21: listpacks of entries, then its ids and groups).
fn stream(c: &mut Cur, t: u8) -> Result<Stream> {
    let mut s = Stream::default();
    for _ in 0..c.count()? {
        let master = c.string()?;
        let master: [u8; 16] = master.try_into().map_err(|_| DecodeError::Corrupt("a stream node id"))?;
        let (ms, seq) = (int_be(&master[..8]), int_be(&master[8..]));
        let lp = c.string()?;
        stream_node(listpack(&lp)?, ms, seq, &mut s.entries)?;
    }
    c.plain_len()?; // length: the entries decoded say it
    s.last_id = c.id()?;
    if t >= 19 {
        c.id()?; // first id: the entries say it
        s.max_deleted = Some(c.id()?);
        s.entries_added = Some(c.plain_len()?);
    }
    for _ in 0..c.count()? {
        let name = c.string()?;
        let last_id = c.id()?;
        let entries_read = if t >= 19 { Some(c.plain_len()?).filter(|n| *n != u64::MAX) } else { None };
        let mut pending = Vec::new();
        for _ in 0..c.count()? {
            let id = c.raw_id()?;
            let delivered_ms = i64::from_le_bytes(c.array()?);
            pending.push(Pending { id, delivered_ms, count: c.plain_len()? });
        }
        let mut consumers = Vec::new();
        for _ in 0..c.count()? {
            let name = c.string()?;
            c.take(if t >= 21 { 16 } else { 8 })?; // seen (and active) times: not carried
            let ids = (0..c.count()?).map(|_| c.raw_id()).collect::<Result<Vec<_>>>()?;
            consumers.push(Consumer { name, pending: ids });
        }
        s.groups.push(Group { name, last_id, entries_read, pending, consumers });
    }
    Ok(s)
}

fn int_be(b: &[u8]) -> u64 {
    b.iter().fold(0, |v, &x| v << 8 | u64::from(x))
}

type Entries = Vec<(StreamId, Vec<(Vec<u8>, Vec<u8>)>)>;

/// The entries of one stream node: a master entry (count, deleted, fields, 0), then
/// each entry as flags, id deltas, its fields (or values of the master fields) and the
/// number of its elements.
fn stream_node(elems: Vec<Elem>, ms: u64, seq: u64, out: &mut Entries) -> Result<()> {
    let bad = || DecodeError::Corrupt("a stream node");
    let mut it = elems.into_iter();
    let mut next = || it.next().ok_or_else(bad);
    let (count, deleted) = (next()?.int()?, next()?.int()?);
    let nfields = usize::try_from(next()?.int()?).map_err(|_| bad())?;
    let master: Vec<Vec<u8>> = (0..nfields).map(|_| next().map(Elem::into_bytes)).collect::<Result<_>>()?;
    next()?; // the master entry's end
    for _ in 0..count + deleted {
        let flags = next()?.int()?;
        let id = StreamId { ms: ms.wrapping_add(next()?.int()? as u64), seq: seq.wrapping_add(next()?.int()? as u64) };
        let fields: Vec<(Vec<u8>, Vec<u8>)> = if flags & SAME_FIELDS != 0 {
            master.iter().map(|f| Ok((f.clone(), next()?.into_bytes()))).collect::<Result<_>>()?
        } else {
            let n = next()?.int()?;
            (0..n).map(|_| Ok((next()?.into_bytes(), next()?.into_bytes()))).collect::<Result<_>>()?
        };
        next()?; // the entry's element count
        if flags & DELETED == 0 {
            out.push((id, fields));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_and_ziplist_elements_decode() {
        // A listpack of "ab", 5, -2 and 1000.
        let mut lp = vec![0, 0, 0, 0, 4, 0];
        lp.extend([0x82, b'a', b'b', 3]);
        lp.extend([5, 1]);
        lp.extend([0xC0 | 0x1f, 0xfe, 2]); // 13-bit -2
        lp.extend([0xC0 | 0x03, 0xe8, 2]); // 13-bit 1000
        lp.push(0xFF);
        assert_eq!(
            texts(listpack(&lp).expect("listpack")),
            vec![b"ab".to_vec(), b"5".to_vec(), b"-2".to_vec(), b"1000".to_vec()]
        );
        // A ziplist of "x", 7 (immediate), -300 (int16).
        let mut zl = vec![0u8; 10];
        zl.extend([0, 0x01, b'x']);
        zl.extend([3, 0xF8]);
        zl.extend([1, 0xC0]);
        zl.extend((-300i16).to_le_bytes());
        zl.push(0xFF);
        assert_eq!(texts(ziplist(&zl).expect("ziplist")), vec![b"x".to_vec(), b"7".to_vec(), b"-300".to_vec()]);
    }

    #[test]
    fn intsets_and_payload_trailers_decode() {
        let mut is = 2u32.to_le_bytes().to_vec();
        is.extend(2u32.to_le_bytes());
        is.extend((-1i16).to_le_bytes());
        is.extend(300i16.to_le_bytes());
        assert_eq!(intset(&is).expect("intset"), vec![b"-1".to_vec(), b"300".to_vec()]);
        let payload = super::super::crc64::dump_payload(vec![0, 1, b'v'], 11);
        let (body, v) = split_payload(&payload).expect("trailer");
        assert_eq!((body, v), (&[0, 1, b'v'][..], 11));
        assert_eq!(decode(body).expect("string"), Value::Str(b"v".to_vec()));
        assert!(matches!(decode(&[7, 0]), Err(DecodeError::Unsupported(_))));
    }
}
