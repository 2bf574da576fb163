//! Names and labels as the API server validates them
//! (`k8s.io/apimachinery/pkg/util/validation`): every name weir accepts
//! from a user (a policy's namespace and name, a namespace in a URL, a
//! label key or value in a selector) passes the same check `kubectl apply`
//! would, so weir never stores or sends what a cluster could not hold.
//!
//! Each function returns `Err` with the reason, worded like apimachinery's,
//! for the caller to put after the field's path.

/// Longest DNS-1123 label (`IsDNS1123Label`).
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (`IsDNS1123Subdomain`).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest label value and name part of a qualified name.
pub const LABEL_VALUE_MAX: usize = 63;

/// Quote a name for a message: printable, at most 80 characters, so a
/// 300-character or NUL-bearing name stays readable.
fn shown(s: &str) -> String {
    let mut quoted: String = format!("{s:?}");
    if quoted.chars().count() > 80 {
        quoted = quoted.chars().take(77).collect::<String>() + "...";
    }
    quoted
}

fn too_long(s: &str, max: usize) -> String {
    format!(
        "{} must be no more than {max} characters (it has {})",
        shown(s),
        s.len()
    )
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length check.
fn is_label_shape(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 label: what namespace names are.
///
/// # Errors
/// Why `s` is not one.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(too_long(s, DNS1123_LABEL_MAX));
    }
    if !is_label_shape(s) {
        return Err(format!(
            "{} is not a valid DNS-1123 label: lowercase letters, digits and '-', \
             starting and ending with a letter or digit",
            shown(s)
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: what most object names (Pod, NetworkPolicy,
/// Deployment) are.
///
/// # Errors
/// Why `s` is not one.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(too_long(s, DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_label_shape) {
        return Err(format!(
            "{} is not a valid DNS-1123 subdomain: lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit",
            shown(s)
        ));
    }
    Ok(())
}

/// A DNS-1035 label: what Service names are (a letter first).
///
/// # Errors
/// Why `s` is not one.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{} is not a valid DNS-1035 label: it must start with a lowercase letter",
            shown(s)
        ));
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: the name part of a label
/// key and a non-empty label value.
fn is_qualified_shape(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|&b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A label key (`IsQualifiedName`): `[prefix/]name`, the prefix a DNS-1123
/// subdomain, the name at most 63 characters of alphanumerics, `-`, `_`
/// and `.`, starting and ending with an alphanumeric.
///
/// # Errors
/// Why `key` is not one.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => {
            return Err(format!(
                "{} is not a valid label key: at most one '/' (prefix/name)",
                shown(key)
            ));
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(format!(
                "{} is not a valid label key: the prefix before '/' is empty",
                shown(key)
            ));
        }
        dns1123_subdomain(prefix).map_err(|e| format!("label key prefix: {e}"))?;
    }
    if name.is_empty() {
        return Err(format!(
            "{} is not a valid label key: the name part is empty",
            shown(key)
        ));
    }
    if name.len() > LABEL_VALUE_MAX {
        return Err(format!(
            "label key name part: {}",
            too_long(name, LABEL_VALUE_MAX)
        ));
    }
    if !is_qualified_shape(name) {
        return Err(format!(
            "{} is not a valid label key: the name part must be alphanumerics, '-', '_' \
             or '.', starting and ending with an alphanumeric",
            shown(key)
        ));
    }
    Ok(())
}

/// A label value (`IsValidLabelValue`): empty, or at most 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
///
/// # Errors
/// Why `value` is not one.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_VALUE_MAX {
        return Err(too_long(value, LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !is_qualified_shape(value) {
        return Err(format!(
            "{} is not a valid label value: alphanumerics, '-', '_' or '.', starting and \
             ending with an alphanumeric",
            shown(value)
        ));
    }
    Ok(())
}

/// Every key and value of a label map; `Err((field, reason))` names the
/// entry under `field_path` (`metadata.labels.app`).
///
/// # Errors
/// The first invalid key or value.
pub fn labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    field_path: &str,
) -> Result<(), (String, String)> {
    for (key, value) in labels {
        label_key(key).map_err(|e| (field_path.to_owned(), e))?;
        label_value(value).map_err(|e| (format!("{field_path}.{key}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from apimachinery's `validation_test.go`, and the ones a
    /// URL or a file path would bring.
    #[test]
    fn dns1123_labels_and_subdomains() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_subdomain = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(long_subdomain.len(), 253);
        let too_long_subdomain = format!("{long_subdomain}e");
        for good in [
            "a",
            "ab",
            "abc",
            "a1",
            "a-1",
            "a--1--2--b",
            "0",
            "01",
            "012",
            &long_label,
        ] {
            assert_eq!(dns1123_label(good), Ok(()), "{good}");
            assert_eq!(dns1123_subdomain(good), Ok(()), "{good}");
        }
        for good in [
            "a.a",
            "ab.b",
            "a.b.c",
            "1.2.3.4",
            "a-1.b-2",
            &long_subdomain,
        ] {
            assert_eq!(dns1123_subdomain(good), Ok(()), "{good}");
            assert!(dns1123_label(good).is_err(), "{good}");
        }
        let bad = [
            "",
            "A",
            "ABC",
            "aBc",
            "A1",
            "a_1",
            "a.1",
            "a..b",
            ".a",
            "a.",
            "-1",
            "1-",
            "a-",
            "-a",
            "_",
            "a b",
            "a\0b",
            "..",
            "../../etc",
            "kube-system#oops",
            "x?y",
            "x/y",
            "é",
        ];
        for bad in bad {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "", "A", "a..b", ".a", "a.", "-a.b", "a.b-", "a_b", "a/b", "a b", "..", "a\0",
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        let error = dns1123_label(&too_long_label).unwrap_err();
        assert!(
            error.contains("no more than 63 characters (it has 64)"),
            "{error}"
        );
        assert!(
            dns1123_subdomain(&too_long_subdomain)
                .unwrap_err()
                .contains("253")
        );
        let error = dns1123_label(&"x".repeat(300)).unwrap_err();
        assert!(
            error.len() < 200,
            "a long name is shortened in the message: {error}"
        );
        assert!(dns1035_label("db").is_ok());
        assert!(dns1035_label("1db").unwrap_err().contains("DNS-1035"));
    }

    #[test]
    fn label_keys_as_qualified_names() {
        let name63 = "a".repeat(63);
        let prefixed = format!("{}/{name63}", "p".repeat(253));
        for good in [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/now-with.dashes-and.dots",
            "now-with.dashes-and.dots/now-with.dashes-and.dots",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "app.kubernetes.io/name",
            "kubernetes.io/metadata.name",
            &name63,
            &prefixed,
        ] {
            assert_eq!(label_key(good), Ok(()), "{good}");
        }
        let bad_cases: &[(&str, &str)] = &[
            ("", "name part is empty"),
            ("nospecialchars%^=@", "name part must be"),
            ("cantendwithadash-", "name part must be"),
            ("-cantstartwithadash-", "name part must be"),
            ("only/one/slash", "at most one '/'"),
            ("Example.com/abc", "prefix"),
            ("example_com/abc", "prefix"),
            ("example.com/", "name part is empty"),
            ("/simple", "prefix before '/' is empty"),
            ("a b", "name part must be"),
        ];
        for (bad, why) in bad_cases {
            let error = label_key(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(label_key(&format!("{name63}a")).unwrap_err().contains("63"));
        assert!(
            label_key(&format!("{}/a", "p".repeat(254)))
                .unwrap_err()
                .contains("253")
        );
    }

    #[test]
    fn label_values() {
        for good in [
            "",
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "end-with-num-1",
            "1234",
            "A.B_c-1",
            &"a".repeat(63),
        ] {
            assert_eq!(label_value(good), Ok(()), "{good:?}");
        }
        for bad in [
            "nospecialchars%^=@",
            "Tama-nui-te-rā.is.Māori.sun",
            "\\backslashes\\are\\bad",
            "-starts-with-dash",
            "ends-with-dash-",
            ".starts.with.dot",
            "ends.with.dot.",
            "a b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_maps_name_the_entry() {
        let map = std::collections::BTreeMap::from([("app".to_owned(), "we b".to_owned())]);
        let (field, reason) = labels(&map, "metadata.labels").unwrap_err();
        assert_eq!(field, "metadata.labels.app");
        assert!(reason.contains("label value"), "{reason}");
        let map = std::collections::BTreeMap::from([("a/b/c".to_owned(), "x".to_owned())]);
        let (field, _) = labels(&map, "spec.podSelector.matchLabels").unwrap_err();
        assert_eq!(field, "spec.podSelector.matchLabels");
    }
}
