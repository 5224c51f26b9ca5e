//! Namespaces: the key prefixes a component is granted, and the mapping
//! between the keys a guest names and the keys stored.
//!
//! A stored key is `namespace ++ guest key`, byte for byte. Keys are opaque
//! bytes, so there is nothing to normalize and nothing to escape: `..` is two
//! dots. What keeps a guest inside is that every stored key it can name starts
//! with its namespace, and that a namespace ends with `/` and names no other
//! namespace as a prefix by accident (`auth` would also cover `auth2/...`;
//! `auth/` does not).

use hightower_engine::Config;
use hightower_engine::ConfigError;
use hightower_engine::Limits as StoreLimits;
use hightower_engine::RECORD_OVERHEAD_BYTES as RECORD_HEADER_LEN;

use super::config::SandboxConfig;

/// Longest namespace name accepted.
pub const MAX_NAMESPACE_BYTES: usize = 256;

/// Why a guest's key (or prefix, or cursor) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key is empty; the string says which argument.
    Empty(&'static str),
    /// Longer than this many bytes.
    TooLarge(u32),
}

/// The limits a guest sees in one namespace; see `limits` in the WIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLimits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u32,
    pub max_batch_ops: u32,
    pub max_batch_bytes: u64,
    pub max_page_keys: u32,
}

impl GuestLimits {
    /// The store's limits capped by the sandbox's, for a namespace
    /// `namespace_len` bytes long. A batch that passes these checks also
    /// passes the store's own, whose byte count includes each record's
    /// header and the namespace prefix.
    pub fn new(store: &Config, sandbox: &SandboxConfig, namespace_len: usize) -> Self {
        let namespace_len = namespace_len as u64;
        let max_batch_ops = store.max_batch_ops.min(sandbox.max_batch_ops);
        let overhead = u64::from(max_batch_ops) * (RECORD_HEADER_LEN as u64 + namespace_len);
        GuestLimits {
            max_key_bytes: store.max_key_bytes.saturating_sub(namespace_len as u32),
            max_value_bytes: store.max_value_bytes.min(sandbox.max_value_bytes),
            max_batch_ops,
            max_batch_bytes: store
                .max_batch_bytes
                .saturating_sub(overhead)
                .min(sandbox.max_batch_bytes),
            max_page_keys: sandbox.max_page_keys,
        }
    }

    /// The same limits in the store's terms, for [`hightower_engine::Command::validate`].
    pub fn as_store_limits(&self, namespace_len: usize) -> StoreLimits {
        StoreLimits {
            max_key_bytes: self.max_key_bytes as usize + namespace_len,
            max_value_bytes: self.max_value_bytes as usize,
            max_batch_ops: self.max_batch_ops as usize,
            max_batch_bytes: self.max_batch_bytes
                + u64::from(self.max_batch_ops) * (RECORD_HEADER_LEN + namespace_len) as u64,
        }
    }
}

/// One namespace granted to a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    name: String,
    limits: GuestLimits,
}

impl Namespace {
    /// Checks `name` and computes its limits. A namespace is 1 to 256 bytes
    /// of UTF-8 without control characters, ends with `/`, does not start
    /// with `/`, and has no empty, `.` or `..` segment; its keys must have
    /// room for at least one byte under the store's key limit.
    pub fn new(name: &str, store: &Config, sandbox: &SandboxConfig) -> Result<Self, ConfigError> {
        let fail = |reason: String| {
            Err(ConfigError {
                field: "namespace",
                reason: format!("{name:?}: {reason}"),
            })
        };
        if name.is_empty() || name.len() > MAX_NAMESPACE_BYTES {
            return fail(format!("must be 1 to {MAX_NAMESPACE_BYTES} bytes"));
        }
        let Some(body) = name.strip_suffix('/') else {
            return fail(
                "must end with '/' (so that it is not a prefix of other namespaces)".into(),
            );
        };
        if body
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."))
        {
            return fail("must not start with '/' or have an empty, '.' or '..' segment".into());
        }
        if name.chars().any(char::is_control) {
            return fail("must not contain control characters".into());
        }
        if name.len() >= store.max_key_bytes as usize {
            return fail(format!(
                "leaves no room for keys under max_key_bytes = {}",
                store.max_key_bytes
            ));
        }
        Ok(Namespace {
            name: name.to_string(),
            limits: GuestLimits::new(store, sandbox, name.len()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn prefix(&self) -> &[u8] {
        self.name.as_bytes()
    }

    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    /// The stored key for a guest's key: refused if empty or too long.
    pub fn key(&self, key: &[u8], what: &'static str) -> Result<Vec<u8>, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty(what));
        }
        self.prefixed(key)
    }

    /// The stored prefix for a guest's prefix, which may be empty.
    pub fn key_prefix(&self, prefix: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.prefixed(prefix)
    }

    fn prefixed(&self, key: &[u8]) -> Result<Vec<u8>, KeyError> {
        if key.len() > self.limits.max_key_bytes as usize {
            return Err(KeyError::TooLarge(self.limits.max_key_bytes));
        }
        let mut full = Vec::with_capacity(self.name.len() + key.len());
        full.extend_from_slice(self.prefix());
        full.extend_from_slice(key);
        Ok(full)
    }

    /// The guest's view of a stored key of this namespace.
    ///
    /// # Panics
    /// If `stored` is not under this namespace: a host bug, never the guest's.
    pub fn relative<'k>(&self, stored: &'k [u8]) -> &'k [u8] {
        stored
            .strip_prefix(self.prefix())
            .expect("a stored key outside the namespace reached the guest mapping")
    }
}

/// The namespaces one component was granted, in the order given.
#[derive(Clone, Debug)]
pub struct Grants {
    namespaces: Vec<Namespace>,
}

impl Grants {
    /// Validates every name; duplicates are refused (they are a config mistake).
    pub fn new(
        names: &[impl AsRef<str>],
        store: &Config,
        sandbox: &SandboxConfig,
    ) -> Result<Self, ConfigError> {
        let mut namespaces: Vec<Namespace> = Vec::with_capacity(names.len());
        for name in names {
            let namespace = Namespace::new(name.as_ref(), store, sandbox)?;
            if namespaces.iter().any(|n| n.name == namespace.name) {
                return Err(ConfigError {
                    field: "namespace",
                    reason: format!("{:?} is granted twice", namespace.name),
                });
            }
            namespaces.push(namespace);
        }
        Ok(Grants { namespaces })
    }

    /// Index of the namespace named exactly `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.namespaces.iter().position(|n| n.name == name)
    }

    pub fn get(&self, index: usize) -> Option<&Namespace> {
        self.namespaces.get(index)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(|n| n.name.as_str())
    }

    /// Bytes a guest may pass into one host call: the largest legal request
    /// in any granted namespace (a full batch with as many conditions as
    /// operations, each with a longest key, or a largest set), plus slack
    /// for `open`'s name. Anything larger is refused before it is copied.
    pub fn max_hostcall_bytes(&self) -> usize {
        // Host-side sizes of one lifted condition and op (their key vectors,
        // variant tags and versions), generously rounded up.
        const PER_ENTRY_BYTES: u64 = 128;
        let largest = self
            .namespaces
            .iter()
            .map(|n| {
                let l = &n.limits;
                let ops = u64::from(l.max_batch_ops);
                let batch =
                    ops * (2 * PER_ENTRY_BYTES + u64::from(l.max_key_bytes)) + l.max_batch_bytes;
                let set = u64::from(l.max_key_bytes) + u64::from(l.max_value_bytes);
                batch.max(set)
            })
            .max()
            .unwrap_or(0);
        usize::try_from(largest + 64 * 1024).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Config {
        Config {
            max_key_bytes: 64,
            max_value_bytes: 1000,
            max_batch_ops: 10,
            max_batch_bytes: 2000,
            ..Config::default()
        }
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name, &store(), &SandboxConfig::default()).unwrap()
    }

    #[test]
    fn names_must_be_separated_prefixes() {
        for bad in [
            "",
            "auth",
            "/",
            "/auth/",
            "auth//",
            "a/./",
            "a/../",
            "../",
            "./",
            "a\n/",
            &"x/".repeat(200),
        ] {
            let result = Namespace::new(bad, &store(), &SandboxConfig::default());
            assert!(result.is_err(), "{bad:?} accepted");
            assert_eq!(result.unwrap_err().field, "namespace");
        }
        for good in ["auth/", "a/b/", "é/", "tenant-1/auth/"] {
            ns(good);
        }
        let room = Namespace::new(
            &format!("{}/", "k".repeat(63)),
            &store(),
            &SandboxConfig::default(),
        );
        assert!(room.is_err(), "a namespace as long as the key limit");
    }

    #[test]
    fn keys_map_by_prefixing_and_stay_inside() {
        let auth = ns("auth/");
        assert_eq!(auth.key(b"users/1", "key").unwrap(), b"auth/users/1");
        assert_eq!(auth.key(b"../x", "key").unwrap(), b"auth/../x");
        assert_eq!(auth.key(b"/x", "key").unwrap(), b"auth//x");
        assert_eq!(auth.key(b"\xff\x00", "key").unwrap(), b"auth/\xff\x00");
        assert_eq!(auth.key(b"", "key"), Err(KeyError::Empty("key")));
        assert_eq!(auth.key_prefix(b"").unwrap(), b"auth/");
        // The store allows 64-byte keys; the guest gets 64 - 5.
        assert_eq!(auth.limits().max_key_bytes, 59);
        assert!(auth.key(&[b'k'; 59], "key").is_ok());
        assert_eq!(auth.key(&[b'k'; 60], "key"), Err(KeyError::TooLarge(59)));
        assert_eq!(auth.key_prefix(&[b'k'; 60]), Err(KeyError::TooLarge(59)));
        assert_eq!(auth.relative(b"auth/users/1"), b"users/1");
        // Every stored key starts with the namespace, whatever the guest sent.
        for key in [&b"x"[..], b"..", b"../../etc", b"2/secret", b"\0"] {
            assert!(auth.key(key, "key").unwrap().starts_with(b"auth/"));
        }
        assert!(!ns("auth/").key(b"x", "key").unwrap().starts_with(b"auth2/"));
    }

    #[test]
    fn guest_limits_never_exceed_the_stores() {
        let store = store();
        let sandbox = SandboxConfig::default();
        let limits = GuestLimits::new(&store, &sandbox, 5);
        assert_eq!(limits.max_value_bytes, 1000);
        assert_eq!(limits.max_batch_ops, 10);
        // 2000 - 10 records * (28-byte header + 5-byte prefix).
        assert_eq!(limits.max_batch_bytes, 2000 - 330);
        let as_store = limits.as_store_limits(5);
        assert_eq!(as_store.max_batch_bytes, 2000);
        assert_eq!(as_store.max_key_bytes, 64);
        let tight = SandboxConfig {
            max_value_bytes: 10,
            max_batch_ops: 2,
            max_batch_bytes: 50,
            ..sandbox
        };
        let limits = GuestLimits::new(&store, &tight, 5);
        assert_eq!(
            (
                limits.max_value_bytes,
                limits.max_batch_ops,
                limits.max_batch_bytes
            ),
            (10, 2, 50)
        );
    }

    #[test]
    fn grants_find_exact_names_only() {
        let grants = Grants::new(&["auth/", "logs/"], &store(), &SandboxConfig::default()).unwrap();
        assert_eq!(grants.find("logs/"), Some(1));
        for name in ["auth", "auth/x/", "AUTH/", "", "logs//"] {
            assert_eq!(grants.find(name), None, "{name:?}");
        }
        assert!(Grants::new(&["a/", "a/"], &store(), &SandboxConfig::default()).is_err());
        assert!(grants.max_hostcall_bytes() > 2000 + 10 * 64);
    }
}
