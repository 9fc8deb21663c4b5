//! CRC-64/Jones as Redis computes it (reflected, polynomial 0xad93d23594c935a9): the
//! checksum that ends a `DUMP` payload, so `RESTORE` accepts a payload ferry builds from
//! an RDB entry.

const fn table() -> [u64; 256] {
    // The polynomial with its bits reversed (the reflected algorithm).
    let poly: u64 = 0xad93_d235_94c9_35a9u64.reverse_bits();
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = table();

/// Continues a CRC over `bytes` (start with 0).
pub fn crc64(mut crc: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        crc = TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// A `DUMP` payload: the RDB serialization of a value (type byte included), the RDB
/// version (2 bytes, little-endian) and the CRC of both (8 bytes, little-endian).
pub fn dump_payload(mut value: Vec<u8>, rdb_version: u16) -> Vec<u8> {
    value.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = crc64(0, &value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_crc64_check_value() {
        // src/crc64.c's test vector.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn builds_the_payload_redis_dumps() {
        // DUMP of SET k "hello" on Redis 7.0 (RDB 10).
        let p = dump_payload(vec![0, 5, b'h', b'e', b'l', b'l', b'o'], 10);
        assert_eq!(&p[..9], &[0, 5, b'h', b'e', b'l', b'l', b'o', 10, 0]);
        assert_eq!(&p[9..], &[0x63, 0x72, 0xdf, 0x76, 0x65, 0x34, 0x20, 0x0a], "the CRC redis-server wrote");
    }
}
