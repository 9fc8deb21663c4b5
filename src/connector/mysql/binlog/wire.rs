//! Event bytes at their lowest level: a cursor reading little- and big-endian integers
//! and length-encoded ones, the error a value that does not decode gives, and the CRC32
//! trailer some events carry.

use mysql_common::binlog::events::Event;

/// A value-decoding failure inside a row image.
#[derive(Debug)]
pub(super) struct DecodeError {
    /// What is wrong.
    pub(super) message: String,
    /// The column whose value it is, once known.
    pub(super) column: Option<usize>,
    /// The bytes are not text in the column's character set (the stored value is at
    /// fault, not the event).
    pub(super) invalid_text: bool,
}

impl DecodeError {
    pub(super) fn eof() -> Self {
        DecodeError { message: "the event ends inside a value".into(), column: None, invalid_text: false }
    }
}

/// A cursor over event bytes.
pub(super) struct Cur<'a> {
    buf: &'a [u8],
}

impl<'a> Cur<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cur { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::eof());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    pub(super) fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(le_uint(self.take(n)?))
    }

    #[inline]
    pub(super) fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    pub(super) fn lenenc(&mut self) -> Result<u64, DecodeError> {
        match self.le(1)? {
            0xfc => self.le(2),
            0xfd => self.le(3),
            0xfe => self.le(8),
            x => Ok(x),
        }
    }
}

/// A little-endian unsigned integer of up to 8 bytes.
#[inline]
pub(super) fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

/// True when the event's data ends with a CRC32 of its header and the rest of its data.
pub(super) fn crc_trailer_ok(ev: &Event) -> bool {
    let h = ev.header();
    let data = ev.data();
    let Some(split) = data.len().checked_sub(4) else { return false };
    let mut header = Vec::with_capacity(19);
    header.extend_from_slice(&h.timestamp().to_le_bytes());
    header.push(h.event_type_raw());
    header.extend_from_slice(&h.server_id().to_le_bytes());
    header.extend_from_slice(&h.event_size().to_le_bytes());
    header.extend_from_slice(&h.log_pos().to_le_bytes());
    header.extend_from_slice(&h.flags_raw().to_le_bytes());
    let crc = crc32(crc32(0, &header), &data[..split]);
    data[split..] == crc.to_le_bytes()
}

/// CRC-32 (IEEE), continuing from `crc`; only used on a few small events.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
    }
}
