//! Times as weir prints them. The agent keeps times as Unix nanoseconds
//! (flow records, the store, health episodes); the API, the logs and the
//! CLI show them as RFC 3339.

use time::OffsetDateTime;

/// Unix nanoseconds as RFC 3339 in UTC with nine fractional digits
/// (fixed width, so the strings sort as the times do).
#[must_use]
pub fn rfc3339(unix_ns: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// RFC 3339 as Unix nanoseconds; `None` for text that is not RFC 3339 or
/// a time before 1970.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn parsing_gives_back_the_nanoseconds() {
        for ns in [0, 1_700_000_000_000_000_123] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn nanoseconds_in_utc_with_a_fixed_width() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_000_000_123),
            "2023-11-14T22:13:20.000000123Z"
        );
    }
}
