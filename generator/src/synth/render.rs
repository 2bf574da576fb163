//! Text helpers of the learner: DNS-1123 names, timestamps, YAML.

use k8s_openapi::api::networking::v1::NetworkPolicy;

/// Longest name a NetworkPolicy may have (a DNS-1123 subdomain).
pub(crate) const MAX_NAME: usize = 253;

/// FNV-1a, 64 bits: small, stable across versions and platforms (unlike
/// `std`'s hashers), good enough to tell truncated names apart.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `s` as a DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`,
/// starting and ending alphanumeric, at most `max` characters. A name that
/// had to be changed or shortened ends with a hash of the original so that
/// two different inputs stay different.
pub(crate) fn dns1123(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let trimmed = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed == s && s.len() <= max {
        return s.to_owned();
    }
    let hash = format!("{:010x}", fnv1a(s) & 0xff_ffff_ffff);
    let keep = max.saturating_sub(hash.len() + 1);
    let head: String = trimmed.chars().take(keep).collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// Unix nanoseconds as RFC 3339 UTC to the second, `unknown` for 0.
pub(crate) fn timestamp(nanos: u64) -> String {
    if nanos == 0 {
        return "unknown".to_owned();
    }
    let secs = nanos / 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One policy as a YAML document (without the `---` line).
pub(super) fn policy_yaml(policy: &NetworkPolicy) -> String {
    // A NetworkPolicy is plain data with string map keys: serializing it
    // cannot fail.
    serde_yaml::to_string(policy).expect("a NetworkPolicy always serializes to YAML")
}

/// `yaml` (one policy) with a comment line above some rules:
/// `(direction, rule index, text)`, where direction is `egress` or
/// `ingress`. The rules are found as the items of `spec.egress` and
/// `spec.ingress`; a rule not found gets no comment.
pub(super) fn with_rule_comments(yaml: &str, comments: &[(&str, usize, String)]) -> String {
    if comments.is_empty() {
        return yaml.to_owned();
    }
    let mut out = String::with_capacity(yaml.len() + 64 * comments.len());
    let mut in_spec = false;
    // (direction, the items' indentation, the next item's index)
    let mut list: Option<(&str, usize, usize)> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if indent == 0 {
            in_spec = body == "spec:";
            list = None;
        } else if in_spec && (body == "egress:" || body == "ingress:") {
            list = Some((body.trim_end_matches(':'), indent, 0));
        } else if let Some((direction, items, next)) = list {
            if indent == items && body.starts_with("- ") {
                for (_, _, text) in comments
                    .iter()
                    .filter(|(d, i, _)| *d == direction && *i == next)
                {
                    out.push_str(&" ".repeat(indent));
                    out.push_str("# ");
                    out.push_str(text);
                    out.push('\n');
                }
                list = Some((direction, items, next + 1));
            } else if indent <= items && !body.starts_with("- ") {
                list = None;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_when_valid_and_hashed_when_not() {
        assert_eq!(dns1123("weir-frontend", MAX_NAME), "weir-frontend");
        let long = format!("weir-{}", "a".repeat(260));
        let n = dns1123(&long, MAX_NAME);
        assert_eq!(n.len(), MAX_NAME);
        assert!(n.starts_with("weir-aaa"));
        let other = format!("weir-{}b", "a".repeat(260));
        assert_ne!(dns1123(&other, MAX_NAME), n);
        let weird = dns1123("weir-Foo_Bar", 63);
        assert!(weird.starts_with("weir-foo-bar-"), "{weird}");
        assert!(weird.len() <= 63);
    }

    #[test]
    fn rule_comments_go_above_their_rule_only() {
        let yaml = "metadata:\n  name: x\nspec:\n  egress:\n  - ports:\n    - port: 1\n    to:\n    - ipBlock:\n        cidr: 1.2.3.4/32\n  - ports:\n    - port: 2\n  ingress:\n  - from:\n    - podSelector: {}\n  podSelector: {}\n";
        let out = with_rule_comments(
            yaml,
            &[
                ("egress", 1, "api.example: 1 address".to_owned()),
                ("ingress", 0, "in".to_owned()),
                ("egress", 5, "missing".to_owned()),
            ],
        );
        assert_eq!(
            out,
            "metadata:\n  name: x\nspec:\n  egress:\n  - ports:\n    - port: 1\n    to:\n    - ipBlock:\n        cidr: 1.2.3.4/32\n  # api.example: 1 address\n  - ports:\n    - port: 2\n  ingress:\n  # in\n  - from:\n    - podSelector: {}\n  podSelector: {}\n"
        );
        let parsed: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            parsed,
            serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap()
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "unknown");
        assert_eq!(timestamp(1_000_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(
            timestamp(1_714_557_600 * 1_000_000_000),
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(
            timestamp(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00Z"
        );
    }
}
