//! Query-string values, checked one at a time so that an error names its
//! parameter: every handler's `Raw…Query` takes strings and parses them
//! with these.

use std::{collections::BTreeSet, fmt::Display, str::FromStr};

use super::error::ApiError;

/// A bad value of the parameter `name`.
pub fn bad(name: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::BadParameter {
        name,
        reason: reason.into(),
    }
}

/// `name=` as a `T`.
///
/// # Errors
/// `T`'s parse error, naming `name`.
pub fn value<T>(name: &'static str, text: &str) -> Result<T, ApiError>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse().map_err(|e: T::Err| bad(name, e.to_string()))
}

/// `name=` as a `T`, when given.
///
/// # Errors
/// See [`value`].
pub fn optional<T>(name: &'static str, text: Option<String>) -> Result<Option<T>, ApiError>
where
    T: FromStr,
    T::Err: Display,
{
    text.map(|t| value(name, &t)).transpose()
}

/// `name=`, given and not empty.
///
/// # Errors
/// Missing or empty.
pub fn required(name: &'static str, text: Option<String>) -> Result<String, ApiError> {
    match text {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(bad(name, "required")),
    }
}

/// `port=`: 0-65535, when given.
///
/// # Errors
/// Not a port number.
pub fn port(text: Option<String>) -> Result<Option<u16>, ApiError> {
    text.map(|p| {
        p.parse()
            .map_err(|_| bad("port", format!("expected 0-65535, got {p:?}")))
    })
    .transpose()
}

/// `namespace=`: a comma-separated list of namespaces, none empty, when
/// given.
///
/// # Errors
/// An empty name.
pub fn namespaces(text: Option<String>) -> Result<Option<BTreeSet<String>>, ApiError> {
    text.map(|list| {
        list.split(',')
            .map(|ns| {
                if ns.is_empty() {
                    Err(bad("namespace", "empty namespace name"))
                } else {
                    Ok(ns.to_owned())
                }
            })
            .collect()
    })
    .transpose()
}

/// `since=`: a duration back from `now` (`15m`, `2h`) or an RFC 3339 time,
/// as Unix ns, when given.
///
/// # Errors
/// Neither.
pub fn since(text: Option<String>, now: u64) -> Result<Option<u64>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if let Ok(d) = humantime::parse_duration(&text) {
        let back = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        return Ok(Some(now.saturating_sub(back)));
    }
    let time = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        bad(
            "since",
            format!("{text:?}: expected a duration (15m, 2h) or an RFC 3339 time"),
        )
    })?;
    Ok(Some(
        u64::try_from(time.unix_timestamp_nanos()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (&'static str, String) {
        match result {
            Err(ApiError::BadParameter { name, reason }) => (name, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_checked_and_errors_name_the_parameter() {
        assert_eq!(port(Some("443".into())).unwrap(), Some(443));
        assert_eq!(port(None).unwrap(), None);
        assert_eq!(
            named(port(Some("65536".into()))),
            ("port", r#"expected 0-65535, got "65536""#.to_owned())
        );
        assert_eq!(
            namespaces(Some("b,a".into())).unwrap(),
            Some(BTreeSet::from(["a".to_owned(), "b".to_owned()]))
        );
        assert_eq!(
            named(namespaces(Some("a,,b".into()))),
            ("namespace", "empty namespace name".to_owned())
        );
        assert_eq!(
            since(Some("2s".into()), 5_000_000_000).unwrap(),
            Some(3_000_000_000)
        );
        assert_eq!(
            since(Some("1970-01-01T00:00:01Z".into()), 0).unwrap(),
            Some(1_000_000_000)
        );
        assert_eq!(named(since(Some("soon".into()), 0)).0, "since");
        assert_eq!(named(required("id", Some(String::new()))).0, "id");
        assert_eq!(required("id", Some("x".into())).unwrap(), "x");
        assert_eq!(optional::<u8>("n", Some("7".into())).unwrap(), Some(7));
        assert_eq!(
            named(value::<u8>("n", "x")),
            ("n", "invalid digit found in string".to_owned())
        );
    }
}
