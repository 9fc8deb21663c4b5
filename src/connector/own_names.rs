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

/// Letters, digits and `_` of a name (anything else becomes `_`), at most `max` of them.
pub fn readable(text: &str, max: usize) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(max).collect()
}
