//! Kubernetes name and label validation, mirroring
//! `k8s.io/apimachinery/pkg/util/validation` (`IsQualifiedName`, `IsValidLabelValue`,
//! `IsDNS1123Subdomain`, `IsDNS1123Label`), including its error wording.

use std::fmt;

/// Maximum length of the name part of a qualified name (label key).
const QUALIFIED_NAME_MAX_LEN: usize = 63;
/// Maximum length of a label value.
const LABEL_VALUE_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Maximum length of a DNS-1123 label.
const DNS1123_LABEL_MAX_LEN: usize = 63;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
     character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower \
     case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
     character";

/// Why a label key or value (or a DNS-1123 name) is invalid; `Display` gives a
/// user-facing sentence naming the offending key/value and every violated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError(pub String);

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabelError {}

/// Validates a label (or annotation) key: an optional DNS-1123 subdomain prefix
/// (≤ 253 characters) and `/`, followed by a name of ≤ 63 characters matching
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (Kubernetes `IsQualifiedName`).
pub fn validate_label_key(key: &str) -> Result<(), LabelError> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                for msg in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part must be a DNS-1123 subdomain: {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return fail("label key", key, errs);
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LEN)
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    fail("label key", key, errs)
}

/// Validates a label value: empty, or ≤ 63 characters matching
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (Kubernetes `IsValidLabelValue`).
pub fn validate_label_value(value: &str) -> Result<(), LabelError> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    fail("label value", value, errs)
}

/// Validates a lowercase RFC 1123 subdomain (≤ 253 characters; dot-separated DNS-1123
/// labels of lower-case alphanumerics and `-`, each starting and ending with an
/// alphanumeric), as required for node names, Secret names and most object names.
pub fn validate_dns1123_subdomain(s: &str) -> Result<(), LabelError> {
    fail("DNS-1123 subdomain", s, dns1123_subdomain_errors(s))
}

/// Validates a lowercase RFC 1123 label (≤ 63 lower-case alphanumerics or `-`,
/// starting and ending with an alphanumeric), as required for e.g. namespace names.
pub fn validate_dns1123_label(s: &str) -> Result<(), LabelError> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LEN {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LEN));
    }
    if !is_dns1123_label_chars(s) {
        errs.push(regex_error(
            DNS1123_LABEL_ERR_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    fail("DNS-1123 label", s, errs)
}

/// Turns collected rule violations into a result naming what was validated.
fn fail(what: &str, input: &str, errs: Vec<String>) -> Result<(), LabelError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(LabelError(format!(
            "invalid {what} {input:?}: {}",
            errs.join("; ")
        )))
    }
}

/// Kubernetes `IsDNS1123Subdomain` messages (empty when valid).
fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LEN));
    }
    if !s.split('.').all(is_dns1123_label_chars) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Kubernetes `MaxLenError`.
fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// Kubernetes `RegexError`: the message, examples and the regex used.
fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    let examples = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join("or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{regex}')")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (no length check).
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (no length check).
fn is_dns1123_label_chars(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && b.iter().all(|c| lower_alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<(), LabelError>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn label_keys() {
        let long63 = "a".repeat(63);
        let long64 = "a".repeat(64);
        let prefix253 = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(prefix253.len(), 253);
        let valid: Vec<String> = vec![
            "app".into(),
            "App".into(),
            "a".into(),
            "1".into(),
            "my.name".into(),
            "my_name".into(),
            "123-abc".into(),
            "MyName".into(),
            "a-_.b".into(),
            "example.com/MyName".into(),
            "prewarm.io/pool".into(),
            "kubernetes.io/hostname".into(),
            "node-role.kubernetes.io/control-plane".into(),
            "a/b".into(),
            long63.clone(),
            format!("example.com/{long63}"),
            format!("{prefix253}/x"),
        ];
        for key in &valid {
            assert_eq!(validate_label_key(key), Ok(()), "{key:?} should be valid");
        }
        let invalid: Vec<String> = vec![
            "".into(),
            "-app".into(),
            "app-".into(),
            "_app".into(),
            ".app".into(),
            "app.".into(),
            "ap p".into(),
            "app!".into(),
            "äpp".into(),
            long64.clone(),
            "/app".into(),
            "example.com/".into(),
            "a/b/c".into(),
            "Example.com/app".into(),
            "example_com/app".into(),
            "-example.com/app".into(),
            "example..com/app".into(),
            "example.com./app".into(),
            format!("{prefix253}x/x"),
            format!("example.com/{long64}"),
        ];
        for key in &invalid {
            assert!(
                validate_label_key(key).is_err(),
                "{key:?} should be invalid"
            );
        }
    }

    #[test]
    fn label_key_messages() {
        let m = msg(validate_label_key("-app"));
        assert!(m.starts_with("invalid label key \"-app\": "), "{m}");
        assert!(m.contains("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"), "{m}");
        assert!(m.contains("(e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"), "{m}");

        let m = msg(validate_label_key(&"a".repeat(64)));
        assert!(
            m.contains("name part must be no more than 63 characters"),
            "{m}"
        );
        assert!(
            !m.contains("must consist"),
            "only the length rule is violated: {m}"
        );

        let m = msg(validate_label_key("Example.com/app"));
        assert!(
            m.contains("prefix part must be a DNS-1123 subdomain"),
            "{m}"
        );
        assert!(m.contains("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"), "{m}");
        assert!(!m.contains("name part"), "{m}");

        let m = msg(validate_label_key("/app"));
        assert!(m.contains("prefix part must be non-empty"), "{m}");

        let m = msg(validate_label_key("example.com/"));
        assert!(m.contains("name part must be non-empty"), "{m}");

        let m = msg(validate_label_key(""));
        assert!(m.contains("name part must be non-empty"), "{m}");

        let m = msg(validate_label_key("a/b/c"));
        assert!(
            m.contains("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
            "{m}"
        );

        // Both parts wrong: both reported.
        let m = msg(validate_label_key("Bad_prefix/-bad"));
        assert!(m.contains("prefix part") && m.contains("name part"), "{m}");

        // Control characters are escaped in the message.
        let m = msg(validate_label_key("a\nb"));
        assert!(m.contains("\"a\\nb\""), "{m}");
    }

    #[test]
    fn label_values() {
        for value in [
            "",
            "v",
            "V1",
            "my_value",
            "12345",
            "a.b-c_d",
            &"z".repeat(63),
        ] {
            assert_eq!(
                validate_label_value(value),
                Ok(()),
                "{value:?} should be valid"
            );
        }
        for value in [
            "-v",
            "v-",
            "_v",
            "v.",
            "a b",
            "a/b",
            "a:b",
            "é",
            &"z".repeat(64),
        ] {
            assert!(
                validate_label_value(value).is_err(),
                "{value:?} should be invalid"
            );
        }
        let m = msg(validate_label_value("-v"));
        assert!(m.starts_with("invalid label value \"-v\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"), "{m}");
        let m = msg(validate_label_value(&"z".repeat(64)));
        assert!(m.contains("must be no more than 63 characters"), "{m}");
        assert!(!m.contains("must be an empty string"), "{m}");
        // Too long and bad characters: both reported.
        let m = msg(validate_label_value(&format!("-{}", "z".repeat(63))));
        assert!(
            m.contains("no more than 63") && m.contains("must start and end"),
            "{m}"
        );
    }

    #[test]
    fn dns1123_subdomains() {
        let max = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        for s in [
            "a",
            "0",
            "node-1",
            "ip-10-0-0-1.ec2.internal",
            "example.com",
            "a.b.c",
            "a--b",
            &max,
        ] {
            assert_eq!(
                validate_dns1123_subdomain(s),
                Ok(()),
                "{s:?} should be valid"
            );
        }
        let too_long = format!("{max}d");
        for s in [
            "", "A", "Node1", "-a", "a-", ".a", "a.", "a..b", "a.-b", "a-.b", "a_b", "a b", "a/b",
            "é", &too_long,
        ] {
            assert!(
                validate_dns1123_subdomain(s).is_err(),
                "{s:?} should be invalid"
            );
        }
        let m = msg(validate_dns1123_subdomain("Node1"));
        assert_eq!(m, "invalid DNS-1123 subdomain \"Node1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
        let m = msg(validate_dns1123_subdomain(&too_long));
        assert!(m.contains("must be no more than 253 characters"), "{m}");
    }

    #[test]
    fn dns1123_labels() {
        for s in ["a", "0", "my-name", "123-abc", "a--b", &"x".repeat(63)] {
            assert_eq!(validate_dns1123_label(s), Ok(()), "{s:?} should be valid");
        }
        for s in [
            "",
            "A",
            "my.name",
            "-a",
            "a-",
            "a_b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(
                validate_dns1123_label(s).is_err(),
                "{s:?} should be invalid"
            );
        }
        let m = msg(validate_dns1123_label("my.name"));
        assert!(m.starts_with("invalid DNS-1123 label \"my.name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex"), "{m}");
        let m = msg(validate_dns1123_label(&"x".repeat(64)));
        assert!(m.contains("must be no more than 63 characters"), "{m}");
    }

    #[test]
    fn label_error_is_an_error() {
        let e: Box<dyn std::error::Error> = Box::new(LabelError("x".into()));
        assert_eq!(e.to_string(), "x");
    }
}
