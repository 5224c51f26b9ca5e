//! The auth service component through [`AuthClient`]: uniqueness under
//! concurrency, Argon2id defaults and interop with the native `argon2`
//! crate, one error for unknown users and wrong passwords, API keys,
//! encrypted metadata and rotation, the SIMD build. No timing is asserted.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use hightower_engine::{Config, KvEngine, SyncMode};
use hightower_wasm::auth::{
    Argon2Params, AuthClient, AuthClientError, AuthError, Hasher, KeyRing, Scope, ScopeChange,
};
use hightower_wasm::{SandboxConfig, WasmRuntime};

/// The cheapest parameters at the floor, for tests that hash a lot.
const CHEAP: Hasher = Hasher::Argon2id(Argon2Params {
    m_kib: 7168,
    t: 5,
    p: 1,
});

struct Env {
    _dir: tempfile::TempDir,
    kv: Arc<KvEngine>,
    client: AuthClient,
}

/// One store and one loaded component for the whole file (compiling the
/// component is the slow part); tests use distinct usernames.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(new_env)
}

/// A store of its own, for a test that changes which keys the store needs.
fn new_env() -> Env {
    {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            sync: SyncMode::Os,
            segment_size_bytes: 4 << 20,
            preallocate_bytes: 0,
            ..Config::new(dir.path())
        };
        let kv = Arc::new(KvEngine::open(config).unwrap());
        let sandbox = SandboxConfig {
            call_timeout_ms: 20_000,
            max_memory_bytes: 64 << 20,
            ..SandboxConfig::default()
        };
        let runtime = WasmRuntime::new(kv.clone(), sandbox).unwrap();
        let client = AuthClient::load(&runtime, CHEAP, &KeyRing::single([7; 32])).unwrap();
        Env {
            _dir: dir,
            kv,
            client,
        }
    }
}

fn auth_err<T: std::fmt::Debug>(r: Result<T, AuthClientError>) -> AuthError {
    match r {
        Err(AuthClientError::Auth(e)) => e,
        other => panic!("expected a service error, got {other:?}"),
    }
}

/// The stored user record (JSON) of `id`.
fn raw_user(env: &Env, id: &str) -> serde_json::Value {
    let bytes = env
        .kv
        .get(format!("auth/user/{id}").as_bytes())
        .unwrap()
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn auth_keys(env: &Env, prefix: &str) -> Vec<String> {
    env.kv
        .dump()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.starts_with(prefix))
        .collect()
}

#[test]
fn eight_threads_one_username_one_winner_no_orphans() {
    let env = env();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    env.client.create_user(
                        if i % 2 == 0 { "Race" } else { "RACE" },
                        "pw-race",
                        None,
                        &[],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, AuthClientError::Auth(AuthError::UsernameTaken)),
                "{e:?}"
            );
        }
    }
    let id = &winners[0].id;
    // Exactly the winner's record and indexes: no orphan from a loser.
    let name_index = auth_keys(env, "auth/user_by_name/race");
    assert_eq!(name_index.len(), 1);
    let value = env.kv.get(name_index[0].as_bytes()).unwrap().unwrap();
    assert_eq!(value, id.as_bytes());
    let all = auth_keys(env, "auth/");
    let users = all.iter().filter(|k| k.starts_with("auth/user/")).count();
    let key_indexes = all
        .iter()
        .filter(|k| k.starts_with("auth/user_keys/"))
        .count();
    let names = all
        .iter()
        .filter(|k| k.starts_with("auth/user_by_name/"))
        .count();
    assert_eq!(users, names, "{all:?}");
    assert_eq!(users, key_indexes, "{all:?}");
    env.client.delete_user(id).unwrap();
}

#[test]
fn default_params_phc_verifies_natively_and_unknown_user_looks_like_wrong_password() {
    let env = env();
    let client = env
        .client
        .with_settings(Hasher::default(), &KeyRing::single([7; 32]));
    let user = client
        .create_user("Interop", "correct horse", None, &[])
        .unwrap();
    let phc = raw_user(env, &user.id)["password_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    // Another implementation (the native RustCrypto crate) accepts it.
    let parsed = PasswordHash::new(&phc).unwrap();
    argon2::Argon2::default()
        .verify_password(b"correct horse", &parsed)
        .unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err()
    );
    client.verify_password("interop", "correct horse").unwrap();

    // Unknown user vs wrong password: the same error. (The same hashing
    // work is counted in guest-auth's unit tests; the times are measured
    // in benches/auth.rs.)
    for name in ["interop", "nobody-at-all"] {
        assert_eq!(
            auth_err(client.verify_password(name, "not the password")),
            AuthError::InvalidCredentials
        );
    }
    client.delete_user(&user.id).unwrap();
}

#[test]
fn raised_params_rehash_on_login() {
    let env = env();
    let user = env
        .client
        .create_user("rehash-me", "pw-1", None, &[])
        .unwrap();
    let before = raw_user(env, &user.id)["password_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(before.contains("m=7168,t=5,p=1"), "{before}");
    let raised = Hasher::Argon2id(Argon2Params {
        m_kib: 8192,
        t: 5,
        p: 1,
    });
    let client = env.client.with_settings(raised, &KeyRing::single([7; 32]));
    auth_err(client.verify_password("rehash-me", "wrong"));
    client.verify_password("rehash-me", "pw-1").unwrap();
    let after = raw_user(env, &user.id)["password_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(after.contains("m=8192,t=5,p=1"), "{after}");
    // Settings weaker in one parameter verify without rehashing.
    let fewer_passes = env
        .client
        .with_settings(Hasher::default(), &KeyRing::single([7; 32]));
    fewer_passes.verify_password("rehash-me", "pw-1").unwrap();
    assert_eq!(raw_user(env, &user.id)["password_hash"], after.as_str());
    // Below the floor, the component refuses the configuration itself.
    let weak = env.client.with_settings(
        Hasher::Argon2id(Argon2Params {
            m_kib: 8,
            t: 1,
            p: 1,
        }),
        &KeyRing::single([7; 32]),
    );
    let e = auth_err(weak.verify_password("rehash-me", "pw-1"));
    assert!(
        matches!(&e, AuthError::InvalidArgument(m) if m.contains("below the floor")),
        "{e:?}"
    );
    assert_eq!(raw_user(env, &user.id)["password_hash"], after.as_str());
    // The old settings still verify it: parameters come from the hash.
    env.client.verify_password("rehash-me", "pw-1").unwrap();
    env.client
        .change_password("rehash-me", "pw-1", "pw-2")
        .unwrap();
    auth_err(env.client.verify_password("rehash-me", "pw-1"));
    env.client.verify_password("REHASH-me", "pw-2").unwrap();
    // Limits are enforced before hashing, and reported.
    let long = "p".repeat(1025);
    assert!(matches!(
        auth_err(env.client.create_user("longpw", &long, None, &[])),
        AuthError::InvalidPassword(_)
    ));
    assert!(matches!(
        auth_err(env.client.create_user("bad\u{1}name", "pw", None, &[])),
        AuthError::InvalidUsername(_)
    ));
    env.client.delete_user(&user.id).unwrap();
}

#[test]
fn api_keys_scopes_typos_expiry_revocation_and_cascade() {
    let env = env();
    let user = env
        .client
        .create_user("keyholder", "pw", None, &[])
        .unwrap();
    let scopes = vec!["read:app/".to_string(), "write:app/".to_string()];
    let new = env
        .client
        .create_api_key(&user.id, "deploy", &scopes, None)
        .unwrap();
    assert!(new.token.starts_with("hkv_"));
    assert!(!format!("{new:?}").contains(&new.token));
    let p = env.client.verify_api_key(&new.token).unwrap();
    assert_eq!(p.user_id, user.id);
    assert_eq!(p.key_id, new.key.id);
    assert_eq!(p.scopes, scopes);
    // The token is not stored; only a digest of its secret.
    let dump = format!("{:?}", env.kv.dump().unwrap());
    assert!(!dump.contains(&new.token[17..40]));
    // A typo is rejected.
    let mut typo = new.token.clone().into_bytes();
    typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
    assert_eq!(
        auth_err(
            env.client
                .verify_api_key(std::str::from_utf8(&typo).unwrap())
        ),
        AuthError::InvalidToken
    );
    // Expired: three whole seconds from `now` (rounded down), so it is
    // still valid at once (at least two seconds of margin on a loaded
    // machine) and surely expired 3.1 s later.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let short = env
        .client
        .create_api_key(&user.id, "short", &[], Some(now + 3))
        .unwrap();
    env.client.verify_api_key(&short.token).unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(
        auth_err(env.client.verify_api_key(&short.token)),
        AuthError::InvalidToken
    );
    // Revoked.
    env.client.revoke_api_key(&new.key.id).unwrap();
    assert_eq!(
        auth_err(env.client.verify_api_key(&new.token)),
        AuthError::InvalidToken
    );
    let listed = env.client.list_api_keys(&user.id).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|k| k.id == new.key.id && k.revoked_at.is_some())
    );
    // Deleting the user removes its keys and indexes.
    env.client.delete_user(&user.id).unwrap();
    assert!(
        env.kv
            .get(format!("auth/apikey/{}", new.key.id).as_bytes())
            .unwrap()
            .is_none()
    );
    assert!(
        env.kv
            .get(format!("auth/user_keys/{}", user.id).as_bytes())
            .unwrap()
            .is_none()
    );
    assert!(
        env.kv
            .get(b"auth/user_by_name/keyholder")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        auth_err(env.client.get_user(&user.id)),
        AuthError::UserNotFound
    );
}

#[test]
fn metadata_is_encrypted_bound_to_its_record_and_rotates() {
    // Its own store: once metadata is encrypted under key 2, a client
    // without key 2 is refused every call.
    let env = &new_env();
    let a = env
        .client
        .create_user("meta-a", "pw", Some(b"secret-team-blue"), &[])
        .unwrap();
    let b = env
        .client
        .create_user("meta-b", "pw", Some(b"other"), &[])
        .unwrap();
    assert_eq!(
        env.client.get_user(&a.id).unwrap().metadata.as_deref(),
        Some(&b"secret-team-blue"[..])
    );
    let dump = format!("{:?}", env.kv.dump().unwrap());
    assert!(!dump.contains("secret-team-blue"));
    // Rotation: a ring with a new key 2 reads old data and writes with 2.
    let hex7 = "07".repeat(32);
    let ring = KeyRing::parse(&format!("1:{hex7},2:{}", "09".repeat(32)), "test").unwrap();
    let rotated = env.client.with_settings(CHEAP, &ring);
    assert_eq!(
        rotated.get_user(&a.id).unwrap().metadata.as_deref(),
        Some(&b"secret-team-blue"[..])
    );
    let c = rotated
        .create_user("meta-c", "pw", Some(b"new"), &[])
        .unwrap();
    let blob: Vec<u8> = serde_json::from_value(raw_user(env, &c.id)["metadata"].clone()).unwrap();
    assert_eq!(&blob[..5], &[1, 0, 0, 0, 2]);
    // Without key 2 every call is refused, naming it; nothing is written.
    let e = auth_err(env.client.get_user(&c.id));
    assert_eq!(e, AuthError::KekMissing(2));
    assert!(!e.to_string().contains(&hex7[..16]));
    assert_eq!(
        auth_err(env.client.create_user("meta-d", "pw", Some(b"x"), &[])),
        AuthError::KekMissing(2)
    );
    // Another key under id 2 is refused too.
    let impostor = KeyRing::parse(&format!("1:{hex7},2:{}", "0a".repeat(32)), "test").unwrap();
    assert_eq!(
        auth_err(
            env.client
                .with_settings(CHEAP, &impostor)
                .lookup_user("meta-a")
        ),
        AuthError::KekMismatch(2)
    );
    let env_client = rotated;
    // A ciphertext moved to another record does not decrypt.
    let mut rec_b = raw_user(env, &b.id);
    rec_b["metadata"] = raw_user(env, &a.id)["metadata"].clone();
    env.kv
        .put(
            format!("auth/user/{}", b.id).as_bytes(),
            serde_json::to_vec(&rec_b).unwrap(),
        )
        .unwrap();
    let e = auth_err(env_client.get_user(&b.id));
    assert!(matches!(e, AuthError::Crypto(_)), "{e:?}");
    // The key never shows in the client's Debug output.
    assert!(!format!("{env_client:?}").contains("9, 9, 9"));
    assert!(!format!("{env_client:?}").contains(&hex7[..16]));
    for id in [&a.id, &b.id, &c.id] {
        env_client.delete_user(id).unwrap();
    }
}

#[test]
fn list_users_is_paged() {
    let env = env();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            env.client
                .create_user(&format!("page-{i}"), "pw", None, &[])
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = env.client.list_users(cursor.as_deref(), 2).unwrap();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for id in &ids {
        assert!(seen.contains(id));
        assert_eq!(
            env.client
                .lookup_user(&format!(
                    "PAGE-{}",
                    ids.iter().position(|x| x == id).unwrap()
                ))
                .unwrap(),
            *id
        );
    }
    for id in &ids {
        env.client.delete_user(id).unwrap();
    }
}

/// The component (which checks scopes when it stores them) and the host's
/// parser (which a server enforces) agree on the grammar.
#[test]
fn the_component_and_the_host_agree_on_the_scope_grammar() {
    let env = env();
    let user = env.client.create_user("grammar", "pw", None, &[]).unwrap();
    let long_prefix = format!("read:{}", "p".repeat(256));
    let over_prefix = format!("{long_prefix}p");
    let long_call = format!("call:{}", "e".repeat(64));
    let over_call = format!("{long_call}e");
    let cases = [
        "admin",
        "read:",
        "write:",
        "read:app/",
        "write:app/jobs/",
        "read:auth",
        "call:resize_2-x",
        &long_prefix,
        &long_call,
        "ADMIN",
        "kv:read",
        "read",
        "read:a b",
        "read:a,b",
        "read:\u{7}",
        "read:a\u{3000}",
        "read:auth/",
        "write:auth/x",
        "call:",
        "call:A",
        "call:a.b",
        "",
        &over_prefix,
        &over_call,
    ];
    for case in cases {
        let host = Scope::parse(case);
        let scopes = [case.to_string()];
        let component = env
            .client
            .update_user_scopes(&user.id, &ScopeChange::Set(scopes.to_vec()));
        match (&host, &component) {
            (Ok(scope), Ok(stored)) => {
                assert_eq!(stored.scopes, [scope.to_string()], "{case:?}");
            }
            (Err(_), Err(AuthClientError::Auth(AuthError::InvalidArgument(m)))) => {
                assert!(m.starts_with("scope "), "{case:?}: {m}");
            }
            _ => panic!("{case:?}: host {host:?}, component {component:?}"),
        }
    }
    // Users carry their scopes into a password login; keys can be deleted.
    env.client
        .update_user_scopes(&user.id, &ScopeChange::Set(vec!["read:app/".into()]))
        .unwrap();
    let verified = env.client.verify_password("GRAMMAR", "pw").unwrap();
    assert_eq!(verified.scopes, ["read:app/"]);
    let key = env
        .client
        .create_api_key(&user.id, "k", &["admin".into()], None)
        .unwrap();
    env.client.delete_api_key(&key.key.id).unwrap();
    assert_eq!(
        auth_err(env.client.verify_api_key(&key.token)),
        AuthError::InvalidToken
    );
    assert_eq!(
        auth_err(env.client.delete_api_key(&key.key.id)),
        AuthError::KeyNotFound
    );
    env.client.delete_user(&user.id).unwrap();
}

/// The embedded component is built with `+simd128` (guest-auth's
/// .cargo/config.toml): it validates with SIMD enabled and not without,
/// so it really contains SIMD instructions (Argon2's BlaMka rounds).
#[test]
fn the_component_uses_simd128() {
    use wasmparser::{Validator, WasmFeatures};
    let wasm = hightower_wasm::auth::COMPONENT;
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(wasm)
        .unwrap();
    let without = WasmFeatures::default() - WasmFeatures::SIMD - WasmFeatures::RELAXED_SIMD;
    let Err(err) = Validator::new_with_features(without).validate_all(wasm) else {
        panic!("the auth component validates without SIMD: built without +simd128");
    };
    assert!(err.to_string().contains("SIMD"), "{err}");
}
