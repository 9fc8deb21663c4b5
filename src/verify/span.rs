//! Chunks of a single integer key cut by arithmetic, for in-database comparisons: the
//! next chunk's upper key is the last one plus a span, instead of the key found `n`
//! rows on (`LIMIT 1 OFFSET n`), which walks `n` index entries on the source for every
//! chunk: work the source server did on top of its checksum, so the source finished
//! each chunk after the target. An in-database chunk's rows are never held in memory,
//! so a dense stretch of keys only makes a chunk take longer, and the span adapts to
//! the time chunks take.

use super::chunk::next_chunk_rows;
use crate::model::{Key, Value};

/// An integer key's value, widened so that spans never overflow.
pub fn int_of(key: &Key) -> Option<i128> {
    match key.as_slice() {
        [Value::Int(i)] => Some(i128::from(*i)),
        [Value::UInt(u)] => Some(i128::from(*u)),
        _ => None,
    }
}

/// The key holding `x`, as a value of the kind `like` is (a signed key stays signed;
/// an unsigned one above `i64::MAX` is carried as unsigned); `None` outside the range
/// of 64-bit keys (the chunk then runs to the end of the table).
pub fn key_of(x: i128, like: &Key) -> Option<Key> {
    let v = match like.as_slice() {
        [Value::Int(_)] => Value::Int(i64::try_from(x).ok()?),
        [Value::UInt(_)] if x > i128::from(i64::MAX) => Value::UInt(u64::try_from(x).ok()?),
        [Value::UInt(_)] => Value::Int(i64::try_from(x).ok()?),
        _ => return None,
    };
    Some(vec![v])
}

/// The key span of the next chunk after `rows` rows in `span` keys took `secs`: the
/// rows the time target asks for at the density just seen, or four times the span
/// after a chunk without rows (a gap in the keys).
pub fn next_span(span: i128, rows: u64, secs: f64) -> i128 {
    if rows == 0 {
        return span.saturating_mul(4);
    }
    let rows_next = next_chunk_rows(rows, secs);
    (span.saturating_mul(i128::from(rows_next)) / i128::from(rows)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_kind_and_width() {
        assert_eq!(int_of(&vec![Value::Int(-5)]), Some(-5));
        assert_eq!(int_of(&vec![Value::UInt(u64::MAX)]), Some(i128::from(u64::MAX)));
        assert_eq!(int_of(&vec![Value::Text("5".into())]), None);
        assert_eq!(int_of(&vec![Value::Int(1), Value::Int(2)]), None);
        assert_eq!(key_of(7, &vec![Value::Int(0)]), Some(vec![Value::Int(7)]));
        assert_eq!(key_of(i128::from(i64::MAX) + 1, &vec![Value::Int(0)]), None);
        let big = i128::from(i64::MAX) + 9;
        assert_eq!(key_of(big, &vec![Value::UInt(0)]), Some(vec![Value::UInt(big as u64)]));
        assert_eq!(key_of(3, &vec![Value::UInt(0)]), Some(vec![Value::Int(3)]));
        assert_eq!(key_of(i128::from(u64::MAX) + 1, &vec![Value::UInt(0)]), None);
    }

    #[test]
    fn spans_follow_the_density_and_time_seen() {
        // 20,000 keys held 20,000 rows in 0.025 s: four times as many next.
        assert_eq!(next_span(20_000, 20_000, 0.025), 80_000);
        // Sparse keys (one row in ten): the span grows with the rows asked for.
        assert_eq!(next_span(200_000, 20_000, 0.025), 800_000);
        // Too slow: fewer rows next.
        assert_eq!(next_span(100_000, 100_000, 0.5), 50_000);
        // A gap: four times the span.
        assert_eq!(next_span(1_000, 0, 0.01), 4_000);
        assert_eq!(next_span(1, 1_000_000, 100.0), 1);
    }
}
