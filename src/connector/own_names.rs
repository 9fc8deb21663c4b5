//! Names of ferry's own per-table objects (version tables, trigger functions): short
//! enough for every store's identifier limit, readable, and unique by a hash of the
//! whole name.

/// FNV-1a of a name, for short unique identifiers.
pub fn short_hash(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// FNV-1a, 64-bit: stable across builds and platforms (names and ids derived from it
/// must not change between releases).
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// [`fnv1a64`] of a direction (task, a zero byte, direction): the same on every node,
/// for names of the sessions that work for it.
pub fn direction_hash(dir: &crate::connector::DirectionId) -> u64 {
    fnv1a64(dir.task.bytes().chain([0]).chain(dir.direction().bytes()))
}

/// Letters, digits and `_` of a name (anything else becomes `_`), at most `max` of them.
pub fn readable(text: &str, max: usize) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_is_the_published_function() {
        // Test vectors of FNV-1a 64: server ids and session names derived from it must
        // stay the same from one release to the next.
        assert_eq!(fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(*b"foobar"), 0x8594_4171_f739_67e8);
    }
}
