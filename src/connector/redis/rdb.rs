//! The RDB stream a master sends in a full resync, read as it arrives: each key with its
//! database, expiry and its value's serialization exactly as the RDB holds it (type byte
//! included), which is what a `DUMP` payload carries, so the sink can `RESTORE` it
//! without decoding. Values are only walked to find where they end. RDB versions up to
//! 12 (Redis 7.x); module values and hashes with field expiries are refused by name.

use std::fmt;

use super::resp::{Reader, RespError};

/// The newest RDB version this reader knows.
pub const MAX_VERSION: u16 = 12;

/// Why an RDB stream could not be read.
#[derive(Debug)]
pub enum RdbError {
    /// The connection failed.
    Io(RespError),
    /// The stream is not an RDB this release reads.
    Format(String),
    /// A value ferry cannot carry (module types), with its key.
    Unsupported {
        /// The key.
        key: Vec<u8>,
        /// What it holds.
        what: String,
    },
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbError::Io(e) => write!(f, "reading the RDB stream: {e}"),
            RdbError::Format(m) => write!(f, "the RDB stream: {m}"),
            RdbError::Unsupported { key, what } => {
                write!(f, "key {:?} holds {what}, which ferry cannot carry", String::from_utf8_lossy(key))
            }
        }
    }
}

impl std::error::Error for RdbError {}

impl From<RespError> for RdbError {
    fn from(e: RespError) -> Self {
        RdbError::Io(e)
    }
}

/// One key of an RDB.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its database.
    pub db: u32,
    /// The key.
    pub key: Vec<u8>,
    /// The value's RDB type byte.
    pub kind: u8,
    /// Type byte and value, as the RDB (and a `DUMP` payload) serializes them.
    pub raw: Vec<u8>,
    /// Absolute expiry, ms since the epoch.
    pub expire_ms: Option<i64>,
}

/// What comes next in an RDB.
#[derive(Debug)]
pub enum Item {
    /// A key.
    Key(Entry),
    /// Server functions (carried by no key; not synced).
    Function,
    /// The end of the RDB.
    End,
}

/// A module type's name from its 64-bit id (9 characters of 6 bits, then 10 bits of
/// encoding version).
pub fn module_name(id: u64) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = String::new();
    let bits = id >> 10;
    for i in (0..9).rev() {
        name.push(SET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    name
}

/// LZF decompression (strings an RDB stores compressed).
pub fn lzf_decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, RdbError> {
    let bad = || RdbError::Format("an LZF-compressed string is corrupt".into());
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input.get(i..i + n).ok_or_else(bad)?;
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i).ok_or_else(bad)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(i).ok_or_else(bad)? as usize + 1;
            i += 1;
            if back > out.len() {
                return Err(bad());
            }
            let start = out.len() - back;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > out_len {
            return Err(bad());
        }
    }
    if out.len() != out_len {
        return Err(bad());
    }
    Ok(out)
}

/// Reads an RDB from a connection.
pub struct RdbReader<'a> {
    r: &'a mut Reader,
    cap: Option<Vec<u8>>,
    /// The RDB's version.
    pub version: u16,
    db: u32,
    expire: Option<i64>,
}

impl<'a> RdbReader<'a> {
    /// Reads the header (`REDIS0010`).
    pub async fn open(r: &'a mut Reader) -> Result<RdbReader<'a>, RdbError> {
        let head = r.exact(9).await?;
        if &head[..5] != b"REDIS" {
            return Err(RdbError::Format(format!("does not start with REDIS ({:?})", String::from_utf8_lossy(&head))));
        }
        let version: u16 = std::str::from_utf8(&head[5..])
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| RdbError::Format("bad version in the header".into()))?;
        if version > MAX_VERSION {
            return Err(RdbError::Format(format!(
                "RDB version {version} is newer than this release reads (up to {MAX_VERSION}, Redis 7.x)"
            )));
        }
        Ok(RdbReader { r, cap: None, version, db: 0, expire: None })
    }

    async fn byte(&mut self) -> Result<u8, RdbError> {
        let b = self.r.byte().await?;
        if let Some(c) = &mut self.cap {
            c.push(b);
        }
        Ok(b)
    }

    async fn bytes(&mut self, n: usize) -> Result<Vec<u8>, RdbError> {
        let v = self.r.exact(n).await?;
        if let Some(c) = &mut self.cap {
            c.extend_from_slice(&v);
        }
        Ok(v)
    }

    /// Skips `n` bytes (into the capture when capturing).
    async fn skip(&mut self, n: usize) -> Result<(), RdbError> {
        match &mut self.cap {
            Some(c) => Ok(self.r.exact_into(n, c).await?),
            None => {
                let mut sink = Vec::new();
                let mut left = n;
                while left > 0 {
                    let take = left.min(1 << 20);
                    sink.clear();
                    self.r.exact_into(take, &mut sink).await?;
                    left -= take;
                }
                Ok(())
            }
        }
    }

    /// A length; `true` when it is a special string encoding instead.
    async fn len(&mut self) -> Result<(u64, bool), RdbError> {
        let b = self.byte().await?;
        Ok(match b >> 6 {
            0 => (u64::from(b & 0x3f), false),
            1 => (u64::from(b & 0x3f) << 8 | u64::from(self.byte().await?), false),
            2 => match b {
                0x80 => {
                    let v = self.bytes(4).await?;
                    (u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]])), false)
                }
                0x81 => {
                    let v = self.bytes(8).await?;
                    (u64::from_be_bytes(v.try_into().unwrap_or([0; 8])), false)
                }
                _ => return Err(RdbError::Format(format!("unknown length encoding {b:#04x}"))),
            },
            _ => (u64::from(b & 0x3f), true),
        })
    }

    async fn plain_len(&mut self) -> Result<u64, RdbError> {
        match self.len().await? {
            (n, false) => Ok(n),
            (_, true) => Err(RdbError::Format("a length is string-encoded".into())),
        }
    }

    fn size(n: u64) -> Result<usize, RdbError> {
        usize::try_from(n)
            .ok()
            .filter(|n| *n < (1 << 40))
            .ok_or_else(|| RdbError::Format(format!("length {n} is too big")))
    }

    /// A string, decoded.
    async fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len().await? {
            (n, false) => self.bytes(Self::size(n)?).await,
            (0, true) => Ok((self.byte().await? as i8).to_string().into_bytes()),
            (1, true) => {
                let v = self.bytes(2).await?;
                Ok(i16::from_le_bytes([v[0], v[1]]).to_string().into_bytes())
            }
            (2, true) => {
                let v = self.bytes(4).await?;
                Ok(i32::from_le_bytes([v[0], v[1], v[2], v[3]]).to_string().into_bytes())
            }
            (3, true) => {
                let clen = Self::size(self.plain_len().await?)?;
                let ulen = Self::size(self.plain_len().await?)?;
                let data = self.bytes(clen).await?;
                lzf_decompress(&data, ulen)
            }
            (e, true) => Err(RdbError::Format(format!("unknown string encoding {e}"))),
        }
    }

    /// A string, skipped.
    async fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.len().await? {
            (n, false) => self.skip(Self::size(n)?).await,
            (0, true) => self.skip(1).await,
            (1, true) => self.skip(2).await,
            (2, true) => self.skip(4).await,
            (3, true) => {
                let clen = Self::size(self.plain_len().await?)?;
                self.plain_len().await?;
                self.skip(clen).await
            }
            (e, true) => Err(RdbError::Format(format!("unknown string encoding {e}"))),
        }
    }

    /// Module opcodes up to their end marker.
    async fn skip_module_data(&mut self) -> Result<(), RdbError> {
        loop {
            match self.plain_len().await? {
                0 => return Ok(()),
                1 | 2 => {
                    self.plain_len().await?;
                }
                3 => self.skip(4).await?,
                4 => self.skip(8).await?,
                5 => self.skip_string().await?,
                op => return Err(RdbError::Format(format!("unknown module opcode {op}"))),
            }
        }
    }

    /// Walks a value of type `t` (after its key).
    async fn skip_value(&mut self, t: u8, key: &[u8]) -> Result<(), RdbError> {
        let unsupported = |what: String| RdbError::Unsupported { key: key.to_vec(), what };
        match t {
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string().await,
            1 | 2 | 14 => {
                for _ in 0..self.plain_len().await? {
                    self.skip_string().await?;
                }
                Ok(())
            }
            18 => {
                for _ in 0..self.plain_len().await? {
                    self.plain_len().await?;
                    self.skip_string().await?;
                }
                Ok(())
            }
            3 => {
                for _ in 0..self.plain_len().await? {
                    self.skip_string().await?;
                    let n = self.byte().await?;
                    if n < 253 {
                        self.skip(n as usize).await?;
                    }
                }
                Ok(())
            }
            5 => {
                for _ in 0..self.plain_len().await? {
                    self.skip_string().await?;
                    self.skip(8).await?;
                }
                Ok(())
            }
            4 => {
                for _ in 0..self.plain_len().await? {
                    self.skip_string().await?;
                    self.skip_string().await?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.skip_stream(t).await,
            6 => Err(unsupported("a value of a module type written by an old module API".into())),
            7 => {
                let (id, _) = self.len().await?;
                Err(unsupported(format!("a value of module type {}", module_name(id))))
            }
            22..=25 => {
                Err(unsupported("a hash with field expiries (Redis 7.4+), which this release does not read".into()))
            }
            other => Err(RdbError::Format(format!("unknown value type {other}"))),
        }
    }

    async fn skip_stream(&mut self, t: u8) -> Result<(), RdbError> {
        for _ in 0..self.plain_len().await? {
            self.skip_string().await?;
            self.skip_string().await?;
        }
        for _ in 0..3 {
            self.plain_len().await?;
        }
        if t >= 19 {
            for _ in 0..5 {
                self.plain_len().await?;
            }
        }
        for _ in 0..self.plain_len().await? {
            self.skip_string().await?;
            self.plain_len().await?;
            self.plain_len().await?;
            if t >= 19 {
                self.plain_len().await?;
            }
            for _ in 0..self.plain_len().await? {
                self.skip(16 + 8).await?;
                self.plain_len().await?;
            }
            for _ in 0..self.plain_len().await? {
                self.skip_string().await?;
                self.skip(8).await?;
                if t >= 21 {
                    self.skip(8).await?;
                }
                for _ in 0..self.plain_len().await? {
                    self.skip(16).await?;
                }
            }
        }
        Ok(())
    }

    /// The next key, function or the end.
    pub async fn next(&mut self) -> Result<Item, RdbError> {
        loop {
            let op = self.byte().await?;
            match op {
                0xFF => {
                    if self.version >= 5 {
                        self.skip(8).await?;
                    }
                    return Ok(Item::End);
                }
                0xFE => {
                    self.db = u32::try_from(self.plain_len().await?)
                        .map_err(|_| RdbError::Format("a database number is too big".into()))?;
                }
                0xFD => {
                    let v = self.bytes(4).await?;
                    self.expire = Some(i64::from(u32::from_le_bytes([v[0], v[1], v[2], v[3]])) * 1000);
                }
                0xFC => {
                    let v = self.bytes(8).await?;
                    self.expire = Some(i64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                }
                0xFB => {
                    self.plain_len().await?;
                    self.plain_len().await?;
                }
                0xFA => {
                    self.skip_string().await?;
                    self.skip_string().await?;
                }
                0xF9 => {
                    self.byte().await?;
                }
                0xF8 => {
                    self.plain_len().await?;
                }
                0xF7 => {
                    self.plain_len().await?;
                    self.plain_len().await?;
                    self.plain_len().await?;
                    self.skip_module_data().await?;
                }
                0xF5 => {
                    self.skip_string().await?;
                    return Ok(Item::Function);
                }
                0xF4 => {
                    for _ in 0..3 {
                        self.plain_len().await?;
                    }
                }
                t if t <= 25 && t != 8 => {
                    let key = self.string().await?;
                    self.cap = Some(vec![t]);
                    let walked = self.skip_value(t, &key).await;
                    let raw = self.cap.take().unwrap_or_default();
                    walked?;
                    return Ok(Item::Key(Entry { db: self.db, key, kind: t, raw, expire_ms: self.expire.take() }));
                }
                other => {
                    return Err(RdbError::Format(format!(
                        "unknown opcode {other:#04x} (RDB version {}): written by a newer Redis than this release reads",
                        self.version
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzf_round_trips_a_back_reference() {
        // "aaaaaaaaaa": literal 'a', then a back reference of length 9 at distance 1.
        let out = lzf_decompress(&[0x00, b'a', 0xE0, 0x00, 0x00], 10).expect("decompresses");
        assert_eq!(out, b"aaaaaaaaaa");
        assert!(lzf_decompress(&[0xE0, 0x00, 0x05], 10).is_err(), "reference before the start");
    }

    /// Reads an RDB from bytes.
    async fn read_all(bytes: Vec<u8>) -> Result<Vec<Entry>, RdbError> {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(&bytes).await;
        });
        let io: Box<dyn super::super::resp::Io> = Box::new(r);
        let mut reader = super::super::resp::Reader::over(io);
        let mut rdb = RdbReader::open(&mut reader).await?;
        let mut out = Vec::new();
        loop {
            match rdb.next().await? {
                Item::Key(e) => out.push(e),
                Item::Function => {}
                Item::End => return Ok(out),
            }
        }
    }

    #[tokio::test]
    async fn keys_come_with_their_raw_values_and_module_types_are_refused_by_name() {
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend([0xFA, 3, b'v', b'e', b'r', 3, b'7', b'.', b'0']); // aux
        rdb.extend([0xFE, 2, 0xFC]); // db 2, an expiry
        rdb.extend(1_700_000_000_000i64.to_le_bytes());
        rdb.extend([0, 1, b'k', 0xC0, 42]); // string "k" = int8 42
        rdb.extend([0xFF]);
        rdb.extend([0u8; 8]);
        let keys = read_all(rdb).await.expect("reads");
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].db, keys[0].key.as_slice(), keys[0].expire_ms),
            (2, b"k".as_slice(), Some(1_700_000_000_000))
        );
        assert_eq!(keys[0].raw, vec![0, 0xC0, 42], "type byte and value as the RDB has them");

        let set = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut id: u64 = 0;
        for c in b"ReJSON-RL" {
            id = (id << 6) | set.iter().position(|x| x == c).expect("in set") as u64;
        }
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend([7, 3, b'd', b'o', b'c', 0x81]);
        rdb.extend(((id << 10) | 3).to_be_bytes());
        let e = read_all(rdb).await.expect_err("refused");
        assert!(e.to_string().contains("key \"doc\" holds a value of module type ReJSON-RL"), "{e}");
    }

    #[test]
    fn module_ids_name_their_type() {
        // "ReJSON-RL" encoding version 3: the id RedisJSON registers.
        let set = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut id: u64 = 0;
        for c in b"ReJSON-RL" {
            id = (id << 6) | set.iter().position(|x| x == c).expect("in set") as u64;
        }
        assert_eq!(module_name((id << 10) | 3), "ReJSON-RL");
    }
}
