//! Object storage: `s3://bucket/prefix?endpoint=http://host:9000&region=us-east-1` for
//! any S3-compatible store, as a blob source (sorted ListObjectsV2 pages, ranged GETs)
//! and a blob sink (single PUT for small objects, multipart uploads resumed through
//! ListParts, ETags kept in the manifest). Requests are signed by `rusty-s3` and sent
//! with the reqwest client already in the tree (rustls).
//!
//! Credentials: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or the variables named by
//! `access_key_env=`/`secret_key_env=` in the URL; an endpoint's `password_env` or
//! `password_file` gives the secret key. Nothing is written into a source bucket; a
//! target's manifest, checkpoint and lease live in a local state file (`state=` in the
//! URL, else ferry's data folder), never in the bucket.

pub mod client;
pub mod connector;
pub mod http;
pub mod sink;
pub mod source;

pub use connector::Store;

/// ferry's own key prefix in a target (skipped by listings; ferry keeps nothing there
/// now, so a bucket it wrote holds only the copied objects).
pub const OWN_PREFIX: &str = ".ferry/";

/// Nanoseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff]Z` (S3 listings).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ns = 0i64;
    if b.get(19) == Some(&b'.') {
        let frac: String = s[20..].chars().take_while(char::is_ascii_digit).collect();
        let digits = frac.len().min(9);
        ns = frac[..digits].parse::<i64>().ok()? * 10i64.pow(9 - digits as u32);
    }
    Some(civil(y, mo, d)? * 86_400_000_000_000 + (h * 3600 + mi * 60 + se) * 1_000_000_000 + ns)
}

/// Nanoseconds since the epoch of an HTTP date (`Thu, 03 Dec 2026 13:00:00 GMT`).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() < 5 {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let d: i64 = parts[1].parse().ok()?;
    let mo = MONTHS.iter().position(|m| *m == parts[2])? as i64 + 1;
    let y: i64 = parts[3].parse().ok()?;
    let t: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if t.len() != 3 {
        return None;
    }
    Some(civil(y, mo, d)? * 86_400_000_000_000 + (t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// An ETag without its quotes, also when a listing left them XML-escaped (s3s-fs
/// writes `&quot;…&quot;`, moto `&#34;…&#34;`, which the listing's parser keeps as it is).
pub fn bare_etag(e: &str) -> String {
    let mut s = e.trim();
    for quote in ["&quot;", "&#34;", "&#x22;", "\""] {
        if let Some(inner) = s.strip_prefix(quote).and_then(|r| r.strip_suffix(quote)) {
            s = inner;
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401_500_000_000));
        assert_eq!(parse_rfc3339("2026-12-03T13:00:00.000Z"), parse_http_date("Thu, 03 Dec 2026 13:00:00 GMT"));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10_000_000_000));
    }

    #[test]
    fn etags_lose_their_quotes_escaped_or_not() {
        assert_eq!(bare_etag("\"abc\""), "abc");
        assert_eq!(bare_etag("&quot;abc-2&quot;"), "abc-2");
        assert_eq!(bare_etag("&#34;abc-3&#34;"), "abc-3");
        assert_eq!(bare_etag("abc"), "abc");
    }
}
