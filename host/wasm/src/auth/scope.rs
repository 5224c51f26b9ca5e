//! Scopes on the host side: the grammar that the auth component checks when
//! it stores them (wit/auth.wit, "Scopes"), parsed into what a server
//! enforces. The component stays the authority on what is stored; this
//! parser must agree with it (tests/auth.rs feeds both the same cases).
//!
//! ```text
//! scope     := "admin" | "read:" PREFIX | "write:" PREFIX | "call:" EXTENSION
//! PREFIX    := 0 to 256 bytes of UTF-8 without control characters,
//!              whitespace or commas; empty means every key
//! EXTENSION := 1 to 64 of [a-z0-9_-]
//! ```

use std::fmt;

/// Most scopes of a key or user.
pub const MAX_SCOPES: usize = 32;
const MAX_PREFIX_BYTES: usize = 256;
const MAX_EXTENSION_CHARS: usize = 64;
/// Keys under this prefix are reached only with [`Scope::Admin`].
pub const AUTH_KEYS_PREFIX: &str = "auth/";

/// One permission.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything, the keys under `auth/` included.
    Admin,
    /// Reading keys that start with the prefix (not under `auth/`).
    Read(String),
    /// Writing keys that start with the prefix (not under `auth/`); does
    /// not imply reading them.
    Write(String),
    /// Calling the extension of this name.
    Call(String),
}

/// What a command does to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A scope off the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scope {scope:?}: {reason}")]
pub struct ScopeError {
    pub scope: String,
    pub reason: &'static str,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let refuse = |reason| {
            Err(ScopeError {
                scope: text.to_string(),
                reason,
            })
        };
        if text == "admin" {
            return Ok(Scope::Admin);
        }
        let prefix_scope = |prefix: &str, make: fn(String) -> Scope| {
            if prefix.len() > MAX_PREFIX_BYTES {
                return refuse("the prefix is over 256 bytes");
            }
            if prefix
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ',')
            {
                return refuse("the prefix has a control character, whitespace or a comma");
            }
            if prefix.starts_with(AUTH_KEYS_PREFIX) {
                return refuse("keys under auth/ are reached only with admin");
            }
            Ok(make(prefix.to_string()))
        };
        if let Some(prefix) = text.strip_prefix("read:") {
            return prefix_scope(prefix, Scope::Read);
        }
        if let Some(prefix) = text.strip_prefix("write:") {
            return prefix_scope(prefix, Scope::Write);
        }
        if let Some(name) = text.strip_prefix("call:") {
            let valid = (1..=MAX_EXTENSION_CHARS).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
            return if valid {
                Ok(Scope::Call(name.to_string()))
            } else {
                refuse("an extension name is 1 to 64 of a-z, 0-9, _ and -")
            };
        }
        refuse("not admin, read:PREFIX, write:PREFIX or call:EXTENSION")
    }

    /// Whether this scope allows `access` to `key`.
    pub fn allows(&self, access: Access, key: &[u8]) -> bool {
        let under = |prefix: &str| {
            key.starts_with(prefix.as_bytes()) && !key.starts_with(AUTH_KEYS_PREFIX.as_bytes())
        };
        match (self, access) {
            (Scope::Admin, _) => true,
            (Scope::Read(prefix), Access::Read) | (Scope::Write(prefix), Access::Write) => {
                under(prefix)
            }
            _ => false,
        }
    }

    /// Whether this scope allows calling extension `name`.
    pub fn allows_call(&self, name: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Call(allowed) => allowed == name,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    /// The stored form: `admin`, `read:app/`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read(prefix) => write!(f, "read:{prefix}"),
            Scope::Write(prefix) => write!(f, "write:{prefix}"),
            Scope::Call(name) => write!(f, "call:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_stored_form() {
        for text in [
            "admin",
            "read:",
            "read:app/",
            "write:app/jobs/",
            "call:resize_2",
        ] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        for bad in [
            "",
            "kv:read",
            "read",
            "read:a b",
            "read:a,b",
            "read:auth/x",
            "call:",
            "call:A",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_never_reach_auth_keys_and_write_is_not_read() {
        let every = Scope::parse("read:").unwrap();
        assert!(every.allows(Access::Read, b"app/x"));
        assert!(!every.allows(Access::Read, b"auth/user/1"));
        assert!(!every.allows(Access::Write, b"app/x"));
        let au = Scope::parse("read:au").unwrap();
        assert!(au.allows(Access::Read, b"audit/1"));
        assert!(!au.allows(Access::Read, b"auth/apikey/1"));
        let jobs = Scope::parse("write:app/jobs/").unwrap();
        assert!(jobs.allows(Access::Write, b"app/jobs/7"));
        assert!(!jobs.allows(Access::Write, b"app/other"));
        assert!(!jobs.allows(Access::Read, b"app/jobs/7"));
        assert!(Scope::Admin.allows(Access::Write, b"auth/user/1"));
        assert!(Scope::parse("call:resize").unwrap().allows_call("resize"));
        assert!(!Scope::parse("call:resize").unwrap().allows_call("resize2"));
        assert!(!every.allows_call("resize"));
    }
}
