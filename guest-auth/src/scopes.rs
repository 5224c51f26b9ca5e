//! The grammar of scopes, the permissions of API keys and users (enforced
//! by the network server; checked here when they are stored):
//!
//! ```text
//! scope     := "admin" | "read:" PREFIX | "write:" PREFIX | "call:" EXTENSION
//! PREFIX    := 0 to 256 bytes of UTF-8 without control characters,
//!              whitespace or commas; empty means every key
//! EXTENSION := 1 to 64 of [a-z0-9_-]
//! ```
//!
//! `read:P` and `write:P` cover the keys that start with `P`, except those
//! under `auth/`, which only `admin` reaches: a prefix starting with
//! `auth/` is refused rather than stored as a grant that does nothing.
//! `write` does not imply `read`. A key or user has at most 32 scopes, no
//! two the same. No scope contains whitespace, so a list of them can be
//! shown space-separated without ambiguity.

use std::collections::BTreeSet;

pub const MAX_SCOPES: usize = 32;
pub const MAX_PREFIX_BYTES: usize = 256;
pub const MAX_EXTENSION_CHARS: usize = 64;
/// Only `admin` reaches keys under this prefix.
pub const AUTH_PREFIX: &str = "auth/";

/// Why `scope` does not follow the grammar, or `None`.
pub fn scope_error(scope: &str) -> Option<String> {
    let refuse = |why: &str| Some(format!("scope {scope:?}: {why}"));
    if scope == "admin" {
        return None;
    }
    if let Some(prefix) = scope
        .strip_prefix("read:")
        .or_else(|| scope.strip_prefix("write:"))
    {
        if prefix.len() > MAX_PREFIX_BYTES {
            return refuse(&format!("the prefix is over {MAX_PREFIX_BYTES} bytes"));
        }
        if prefix
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ',')
        {
            return refuse("the prefix has a control character, whitespace or a comma");
        }
        if prefix.starts_with(AUTH_PREFIX) {
            return refuse("keys under auth/ are reached only with admin");
        }
        return None;
    }
    if let Some(extension) = scope.strip_prefix("call:") {
        let valid = (1..=MAX_EXTENSION_CHARS).contains(&extension.len())
            && extension
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        return if valid {
            None
        } else {
            refuse(&format!(
                "an extension name is 1 to {MAX_EXTENSION_CHARS} of a-z, 0-9, _ and -"
            ))
        };
    }
    refuse("not admin, read:PREFIX, write:PREFIX or call:EXTENSION")
}

/// Why `scopes` is not a valid list: a scope off the grammar, a duplicate,
/// or more than [`MAX_SCOPES`].
pub fn scopes_error(scopes: &[String]) -> Option<String> {
    if scopes.len() > MAX_SCOPES {
        return Some(format!(
            "{} scopes; at most {MAX_SCOPES} are allowed",
            scopes.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for scope in scopes {
        if let Some(error) = scope_error(scope) {
            return Some(error);
        }
        if !seen.insert(scope.as_str()) {
            return Some(format!("scope {scope:?} is given twice"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        let long_prefix = format!("read:{}", "p".repeat(MAX_PREFIX_BYTES));
        let long_extension = format!("call:{}", "e".repeat(MAX_EXTENSION_CHARS));
        for good in [
            "admin",
            "read:",
            "write:",
            "read:app/",
            "write:app/jobs/",
            "read:auth",
            "read:ünïcode/ключ",
            "read:a:b;c/\"d\"",
            "call:resize_image-2",
            long_prefix.as_str(),
            long_extension.as_str(),
        ] {
            assert_eq!(scope_error(good), None, "{good}");
        }
        let over_prefix = format!("{long_prefix}p");
        let over_extension = format!("{long_extension}e");
        for (bad, why) in [
            ("", "not admin"),
            ("Admin", "not admin"),
            ("admin:", "not admin"),
            ("kv:read", "not admin"),
            ("read", "not admin"),
            ("READ:app/", "not admin"),
            ("read:a,b", "comma"),
            ("read:a b", "whitespace"),
            ("write:a\tb", "whitespace"),
            ("read:a\u{0}", "control"),
            ("read:a\u{85}", "control"),
            ("read:a\u{2003}b", "whitespace"),
            ("read:auth/", "auth/"),
            ("write:auth/user/", "auth/"),
            (over_prefix.as_str(), "over 256 bytes"),
            ("call:", "extension name"),
            ("call:Resize", "extension name"),
            ("call:a.b", "extension name"),
            (over_extension.as_str(), "extension name"),
        ] {
            let error = scope_error(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn lists_have_no_duplicates_and_at_most_32() {
        let list = |n: usize| (0..n).map(|i| format!("read:{i}/")).collect::<Vec<_>>();
        assert_eq!(scopes_error(&list(MAX_SCOPES)), None);
        assert!(
            scopes_error(&list(MAX_SCOPES + 1))
                .unwrap()
                .contains("at most 32")
        );
        let twice = vec!["admin".to_string(), "read:x".into(), "admin".into()];
        assert!(scopes_error(&twice).unwrap().contains("given twice"));
        assert_eq!(scopes_error(&[]), None);
    }
}
