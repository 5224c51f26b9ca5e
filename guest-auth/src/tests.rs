//! Native unit tests of the service against the in-memory fakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth_service::*;
use crate::auth_types::*;
use crate::crypto::{
    Argon2idHasher, HasherConfig, Kek, MAX_PASSWORD_BYTES, SecretHasher, hasher_for,
};
use crate::testing::{CountingHasher, FakeClock, FakeRandom, MemStore};

const CHEAP: HasherConfig = HasherConfig::Argon2id {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn config(hasher: HasherConfig) -> ServiceConfig {
    config_with_keys(hasher, &[(1, [9; 32])], 1)
}

fn config_with_keys(hasher: HasherConfig, keys: &[(u32, [u8; 32])], current: u32) -> ServiceConfig {
    ServiceConfig {
        hasher,
        keks: keys.iter().map(|&(id, key)| Kek { id, key }).collect(),
        current_kek: current,
    }
}

type Svc<'a> = AuthService<&'a MemStore, FakeRandom, &'a FakeClock>;

/// The hasher of `config`, but without the Argon2id floor: at the floor
/// every test hash would cost tens of milliseconds.
fn test_hasher(config: HasherConfig) -> Box<dyn SecretHasher> {
    match config {
        HasherConfig::Argon2id { m_kib, t, p } => {
            Box::new(Argon2idHasher::below_floor_for_tests(m_kib, t, p))
        }
        other => hasher_for(other).unwrap(),
    }
}

fn service_seeded<'a>(
    store: &'a MemStore,
    clock: &'a FakeClock,
    hasher: HasherConfig,
    seed: u64,
) -> Svc<'a> {
    AuthService::with_hasher(
        store,
        FakeRandom::new(seed),
        clock,
        test_hasher(hasher),
        &config(hasher),
    )
    .unwrap()
}

fn service<'a>(store: &'a MemStore, clock: &'a FakeClock, hasher: HasherConfig) -> Svc<'a> {
    static SEED: AtomicU64 = AtomicU64::new(100);
    service_seeded(store, clock, hasher, SEED.fetch_add(1, Ordering::SeqCst))
}

fn clock() -> FakeClock {
    FakeClock(AtomicU64::new(1_000_000))
}

#[test]
fn create_verify_get_delete() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    let u = svc
        .create_user("Alice", "hunter22", Some(b"{\"team\":\"red\"}"), &[])
        .unwrap();
    assert_eq!(u.username, "Alice");
    assert_eq!(svc.verify_password("ALICE", "hunter22").unwrap().id, u.id);
    assert_eq!(
        svc.verify_password("ａｌｉｃｅ", "hunter22").unwrap().id,
        u.id
    );
    assert_eq!(
        svc.verify_password("alice", "hunter23"),
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        svc.verify_password("bob", "hunter22"),
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        svc.create_user("alice", "x", None, &[]),
        Err(AuthError::UsernameTaken)
    );
    let got = svc.get_user(&u.id).unwrap();
    assert_eq!(got.metadata.as_deref(), Some(&b"{\"team\":\"red\"}"[..]));
    assert_eq!(svc.lookup_user("ALICE").unwrap(), u.id);
    // Metadata is stored encrypted.
    let raw = store.map.lock().unwrap()[&user_key(&u.id)].value.clone();
    assert!(!String::from_utf8_lossy(&raw).contains("team"));
    // The record's PHC string.
    let rec: UserRecord = from_bytes(&raw).unwrap();
    assert!(
        rec.password_hash
            .starts_with("$argon2id$v=19$m=64,t=1,p=1$")
    );

    let (_, token) = svc
        .create_api_key(&u.id, "ci", &["read:app/".into()], None)
        .unwrap();
    svc.delete_user(&u.id).unwrap();
    // No orphans: only the store-wide record of key ids is left.
    let left: Vec<Vec<u8>> = store.map.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, [KEK_IDS_KEY.as_bytes().to_vec()]);
    assert_eq!(svc.verify_api_key(&token), Err(AuthError::InvalidToken));
    assert_eq!(svc.get_user(&u.id), Err(AuthError::UserNotFound));
    assert_eq!(svc.delete_user(&u.id), Err(AuthError::UserNotFound));
    // The name is free again.
    svc.create_user("alice", "pw", None, &[]).unwrap();
}

/// A service whose hasher counts the hashes it computes.
fn counting<'a>(
    store: &'a MemStore,
    clock: &'a FakeClock,
    hasher: HasherConfig,
) -> (Svc<'a>, Arc<AtomicU64>) {
    let hashes = Arc::new(AtomicU64::new(0));
    let counting = CountingHasher {
        inner: test_hasher(hasher),
        hashes: hashes.clone(),
    };
    let svc = AuthService::with_hasher(
        store,
        FakeRandom::new(42),
        clock,
        Box::new(counting),
        &config(hasher),
    )
    .unwrap();
    (svc, hashes)
}

#[test]
fn passwords_are_bounded_before_hashing() {
    let (store, clock) = (MemStore::default(), clock());
    let (svc, hashes) = counting(&store, &clock, CHEAP);
    svc.create_user("a", "pw-a", None, &[]).unwrap();
    hashes.store(0, Ordering::SeqCst);
    let huge = "x".repeat(1 << 20);
    assert!(matches!(
        svc.create_user("b", &huge, None, &[]),
        Err(AuthError::InvalidPassword(_))
    ));
    assert!(matches!(
        svc.create_user("b", &"x".repeat(MAX_PASSWORD_BYTES + 1), None, &[]),
        Err(AuthError::InvalidPassword(_))
    ));
    assert!(
        svc.create_user("b", &"x".repeat(MAX_PASSWORD_BYTES), None, &[])
            .is_ok()
    );
    assert_eq!(
        hashes.swap(0, Ordering::SeqCst),
        1,
        "only the last one hashed"
    );
    // Refused before hashing, for a known and an unknown user alike.
    for user in ["a", "nobody"] {
        assert_eq!(
            svc.verify_password(user, &huge),
            Err(AuthError::InvalidCredentials)
        );
    }
    assert!(matches!(
        svc.change_password("a", "pw-a", &huge),
        Err(AuthError::InvalidPassword(_))
    ));
    assert_eq!(hashes.load(Ordering::SeqCst), 0);
    let store = MemStore::default();
    let svc = service(&store, &clock, CHEAP);
    assert!(matches!(
        svc.create_user("a", "", None, &[]),
        Err(AuthError::InvalidPassword(_))
    ));
    assert!(matches!(
        svc.create_user("a\u{7}", "pw", None, &[]),
        Err(AuthError::InvalidUsername(_))
    ));
    assert!(store.map.lock().unwrap().is_empty());
    // bcrypt: 71 bytes at most (it would silently truncate at 72).
    let b = service(&store, &clock, HasherConfig::Bcrypt { cost: 10 });
    assert!(matches!(
        b.create_user("b", &"y".repeat(72), None, &[]),
        Err(AuthError::InvalidPassword(_))
    ));
    let u = b.create_user("b", &"y".repeat(71), None, &[]).unwrap();
    assert!(b.verify_password("b", &"y".repeat(71)).is_ok());
    b.delete_user(&u.id).unwrap();
}

#[test]
fn login_rehashes_after_params_are_raised() {
    let (store, clock) = (MemStore::default(), clock());
    let old = service(&store, &clock, CHEAP);
    let u = old.create_user("carol", "pw-carol", None, &[]).unwrap();
    let hash_of = || -> String {
        let raw = store.map.lock().unwrap()[&user_key(&u.id)].value.clone();
        from_bytes::<UserRecord>(&raw).unwrap().password_hash
    };
    let before = hash_of();
    let raised = HasherConfig::Argon2id {
        m_kib: 128,
        t: 2,
        p: 1,
    };
    let new = service(&store, &clock, raised);
    // A failed login does not rehash.
    assert!(new.verify_password("carol", "nope").is_err());
    assert_eq!(hash_of(), before);
    new.verify_password("carol", "pw-carol").unwrap();
    let after = hash_of();
    assert!(
        after.starts_with("$argon2id$v=19$m=128,t=2,p=1$"),
        "{after}"
    );
    // Both old and new services still verify (parameters come from the hash).
    old.verify_password("carol", "pw-carol").unwrap();
    // bcrypt users migrate to Argon2id on login too.
    let legacy = service(&store, &clock, HasherConfig::Bcrypt { cost: 10 });
    let d = legacy.create_user("dave", "pw-dave", None, &[]).unwrap();
    new.verify_password("dave", "pw-dave").unwrap();
    assert!(new.get_user(&d.id).is_ok());
    let raw = store.map.lock().unwrap()[&user_key(&d.id)].value.clone();
    assert!(
        from_bytes::<UserRecord>(&raw)
            .unwrap()
            .password_hash
            .starts_with("$argon2id$")
    );
}

#[test]
fn change_password() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    svc.create_user("erin", "old-pw", None, &[]).unwrap();
    assert_eq!(
        svc.change_password("erin", "wrong", "new-pw"),
        Err(AuthError::InvalidCredentials)
    );
    svc.change_password("Erin", "old-pw", "new-pw").unwrap();
    assert!(svc.verify_password("erin", "old-pw").is_err());
    svc.verify_password("erin", "new-pw").unwrap();
}

/// No user enumeration by timing: an unknown user (or an invalid name)
/// costs as many hashes as a wrong password, on the first verification of a
/// fresh service (a new component instance, every CLI process: the dummy
/// hash is made before the lookup either way) and on later ones. Counted,
/// not timed; the times are measured in benches/auth.rs.
#[test]
fn unknown_user_costs_as_many_hashes_as_a_wrong_password() {
    let (store, clock) = (MemStore::default(), clock());
    service(&store, &clock, CHEAP)
        .create_user("henry", "pw-henry", None, &[])
        .unwrap();
    let hashes_of = |user: &str, password: &str| {
        let (svc, hashes) = counting(&store, &clock, CHEAP);
        let first = svc.verify_password(user, password);
        let after_first = hashes.load(Ordering::SeqCst);
        let second = svc.verify_password(user, password);
        assert_eq!(first, second);
        (
            first,
            after_first,
            hashes.load(Ordering::SeqCst) - after_first,
        )
    };
    let wrong = hashes_of("henry", "not-it");
    let unknown = hashes_of("nobody", "not-it");
    let invalid_name = hashes_of("no body", "not-it");
    assert_eq!(wrong.0, Err(AuthError::InvalidCredentials));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, invalid_name);
    // Dummy hash + one verification first, then one verification.
    assert_eq!((wrong.1, wrong.2), (2, 1));
    let right = hashes_of("henry", "pw-henry");
    assert!(right.0.is_ok());
    assert_eq!((right.1, right.2), (2, 1));
}

#[test]
fn list_users_pages() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    for i in 0..7 {
        svc.create_user(&format!("user{i}"), "pw", None, &[])
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = svc.list_users(cursor.as_deref(), 3).unwrap();
        assert!(page.users.len() <= 3);
        seen.extend(page.users.into_iter().map(|u| u.username));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, (0..7).map(|i| format!("user{i}")).collect::<Vec<_>>());
}

#[test]
fn api_keys() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    let u = svc.create_user("gina", "pw", None, &[]).unwrap();
    let scopes = vec!["read:app/".to_string(), "write:app/jobs/".to_string()];
    let (info, token) = svc
        .create_api_key(&u.id, "deploy", &scopes, Some(1_000_100))
        .unwrap();
    assert!(token.starts_with("hkv_") && token.ends_with(&info.last_eight));
    let p = svc.verify_api_key(&token).unwrap();
    assert_eq!(
        (p.user_id.as_str(), p.key_id.as_str(), p.scopes.clone()),
        (u.id.as_str(), info.id.as_str(), scopes)
    );
    // Only the secret's SHA-256 is stored.
    let dump = format!("{:?}", store.map.lock().unwrap());
    let secret = &token[4 + 13..token.len() - 6];
    assert!(!dump.contains(secret));
    // A typo fails without touching the store: the store is not even read.
    let mut typo = token.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let reads = store.reads.load(Ordering::SeqCst);
    assert_eq!(
        svc.verify_api_key(std::str::from_utf8(&typo).unwrap()),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        svc.verify_api_key("hkv_short"),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), reads, "no store access");
    // A well-formed token with a wrong secret (valid checksum) fails.
    let (_, other) = crate::id_generator::new_token(&FakeRandom::new(5), &info.id);
    assert_eq!(svc.verify_api_key(&other), Err(AuthError::InvalidToken));
    // Expiry.
    clock.0.store(1_000_100, Ordering::SeqCst);
    assert_eq!(svc.verify_api_key(&token), Err(AuthError::InvalidToken));
    // Revocation.
    let (info2, token2) = svc.create_api_key(&u.id, "ci", &[], None).unwrap();
    svc.verify_api_key(&token2).unwrap();
    svc.revoke_api_key(&info2.id).unwrap();
    assert_eq!(svc.verify_api_key(&token2), Err(AuthError::InvalidToken));
    assert_eq!(svc.revoke_api_key("nokey"), Err(AuthError::KeyNotFound));
    let listed = svc.list_api_keys(&u.id).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[1].revoked_at.is_some());
    for bad in [
        vec!["read:a b".to_string()],
        vec!["read:a,b".into()],
        vec!["read".into()],
        vec!["read:auth/".into()],
        vec!["admin".into(), "admin".into()],
    ] {
        assert!(
            matches!(
                svc.create_api_key(&u.id, "x", &bad, None),
                Err(AuthError::InvalidArgument(ref m)) if m.starts_with("scope")
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        svc.create_api_key("nouser", "x", &[], None).map(|_| ()),
        Err(AuthError::UserNotFound)
    );
}

#[test]
fn concurrent_registration_has_one_winner() {
    let (store, clock) = (MemStore::default(), clock());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, clock) = (&store, &clock);
                s.spawn(move || {
                    let svc = service_seeded(store, clock, CHEAP, i);
                    svc.create_user("Zoe", "pw", None, &[])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| *r == Err(AuthError::UsernameTaken))
    );
    assert_eq!(
        store.map.lock().unwrap().len(),
        3,
        "one user, its name and key indexes"
    );
}

#[test]
fn users_have_scopes_changed_atomically() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    let scopes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let u = svc
        .create_user(
            "ivy",
            "pw-ivy",
            None,
            &scopes(&["read:app/", "call:resize"]),
        )
        .unwrap();
    assert_eq!(u.scopes, scopes(&["read:app/", "call:resize"]));
    // A password login carries them.
    let verified = svc.verify_password("IVY", "pw-ivy").unwrap();
    assert_eq!(verified.scopes, u.scopes);
    assert_eq!(svc.get_user(&u.id).unwrap().scopes, u.scopes);
    let change = |c: ScopeChange| svc.update_user_scopes(&u.id, &c).map(|u| u.scopes);
    clock.0.store(1_000_050, Ordering::SeqCst);
    assert_eq!(
        change(ScopeChange::Add(scopes(&["write:app/", "read:app/"]))),
        Ok(scopes(&["read:app/", "call:resize", "write:app/"]))
    );
    assert_eq!(svc.get_user(&u.id).unwrap().updated_at, 1_000_050);
    assert_eq!(
        change(ScopeChange::Remove(scopes(&["call:resize", "admin"]))),
        Ok(scopes(&["read:app/", "write:app/"]))
    );
    assert_eq!(
        change(ScopeChange::Set(scopes(&["admin"]))),
        Ok(scopes(&["admin"]))
    );
    // Refused changes change nothing.
    for bad in [
        ScopeChange::Set(scopes(&["admin", "admin"])),
        ScopeChange::Add(scopes(&["read:x y"])),
        ScopeChange::Remove(scopes(&["nonsense"])),
        ScopeChange::Add((0..32).map(|i| format!("read:{i}")).collect()),
    ] {
        assert!(
            matches!(change(bad.clone()), Err(AuthError::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert_eq!(svc.get_user(&u.id).unwrap().scopes, scopes(&["admin"]));
    assert_eq!(change(ScopeChange::Set(vec![])), Ok(vec![]));
    assert_eq!(
        svc.update_user_scopes("nobody", &ScopeChange::Set(vec![])),
        Err(AuthError::UserNotFound)
    );
    assert!(matches!(
        svc.create_user("jay", "pw", None, &scopes(&["read:auth/user/"])),
        Err(AuthError::InvalidArgument(_))
    ));
    assert_eq!(svc.lookup_user("jay"), Err(AuthError::UserNotFound));
}

/// Only live keys count towards the cap of 100; revoked and expired ones
/// are kept for listings (up to 1000) until deleted.
#[test]
fn only_live_keys_count_and_keys_can_be_deleted() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    let u = svc.create_user("kim", "pw", None, &[]).unwrap();
    let mut ids = Vec::new();
    for i in 0..100 {
        let expires = (i % 2 == 0).then_some(1_000_100);
        let (key, _) = svc.create_api_key(&u.id, "k", &[], expires).unwrap();
        ids.push(key.id);
    }
    let full = svc.create_api_key(&u.id, "one-too-many", &[], None);
    assert!(
        matches!(&full, Err(AuthError::InvalidArgument(m)) if m.contains("100 live")),
        "{full:?}"
    );
    // Revoking one makes room; so does expiry.
    svc.revoke_api_key(&ids[1]).unwrap();
    let (extra, _) = svc
        .create_api_key(&u.id, "after-revoke", &[], None)
        .unwrap();
    assert!(svc.create_api_key(&u.id, "x", &[], None).is_err());
    clock.0.store(1_000_100, Ordering::SeqCst);
    for _ in 0..50 {
        svc.create_api_key(&u.id, "after-expiry", &[], None)
            .unwrap();
    }
    assert!(svc.create_api_key(&u.id, "x", &[], None).is_err());
    assert_eq!(svc.list_api_keys(&u.id).unwrap().len(), 151);

    // Deleting removes the record and the index entry.
    svc.revoke_api_key(&extra.id).unwrap();
    let (gone, token) = svc.create_api_key(&u.id, "gone", &[], None).unwrap();
    svc.delete_api_key(&gone.id).unwrap();
    assert_eq!(svc.verify_api_key(&token), Err(AuthError::InvalidToken));
    assert!(
        !store
            .map
            .lock()
            .unwrap()
            .contains_key(&apikey_key(&gone.id))
    );
    let listed = svc.list_api_keys(&u.id).unwrap();
    assert!(listed.iter().all(|k| k.id != gone.id));
    let raw = store.map.lock().unwrap()[&user_keys_key(&u.id)]
        .value
        .clone();
    let index: UserKeys = from_bytes(&raw).unwrap();
    assert_eq!(index.key_ids.len(), listed.len());
    assert_eq!(svc.delete_api_key(&gone.id), Err(AuthError::KeyNotFound));
    // A revoked key deletes too.
    svc.delete_api_key(&ids[1]).unwrap();
    assert_eq!(svc.list_api_keys(&u.id).unwrap().len(), listed.len() - 1);
}

/// The index of a user's keys is bounded even when all of them are dead.
#[test]
fn at_most_1000_keys_are_kept_per_user() {
    let (store, clock) = (MemStore::default(), clock());
    let svc = service(&store, &clock, CHEAP);
    let u = svc.create_user("lee", "pw", None, &[]).unwrap();
    for _ in 0..MAX_STORED_KEYS_PER_USER {
        let (key, _) = svc.create_api_key(&u.id, "k", &[], None).unwrap();
        svc.revoke_api_key(&key.id).unwrap();
    }
    let err = svc.create_api_key(&u.id, "k", &[], None);
    assert!(
        matches!(&err, Err(AuthError::InvalidArgument(m)) if m.contains("1000 API keys")),
        "{err:?}"
    );
    let first = svc.list_api_keys(&u.id).unwrap()[0].id.clone();
    svc.delete_api_key(&first).unwrap();
    svc.create_api_key(&u.id, "k", &[], None).unwrap();
}

/// A service of `store` with these key-encryption keys.
fn keyed<'a>(
    store: &'a MemStore,
    clock: &'a FakeClock,
    keys: &[(u32, [u8; 32])],
    current: u32,
) -> Svc<'a> {
    static SEED: AtomicU64 = AtomicU64::new(1_000);
    AuthService::with_hasher(
        store,
        FakeRandom::new(SEED.fetch_add(1, Ordering::SeqCst)),
        clock,
        test_hasher(CHEAP),
        &config_with_keys(CHEAP, keys, current),
    )
    .unwrap()
}

fn kek_ids(store: &MemStore) -> Option<Vec<u32>> {
    let raw = store
        .map
        .lock()
        .unwrap()
        .get(KEK_IDS_KEY.as_bytes())?
        .value
        .clone();
    Some(
        from_bytes::<KekIds>(&raw)
            .unwrap()
            .keks
            .iter()
            .map(|k| k.id)
            .collect(),
    )
}

/// A store restored without its key file: a missing or different key is
/// refused, naming its id, before anything is encrypted under a
/// conflicting id (issue 17, item 4).
#[test]
fn metadata_needs_its_own_keys_and_says_which() {
    let (store, clock) = (MemStore::default(), clock());
    let (key1, other1, key2) = ([1; 32], [0xa1; 32], [2; 32]);
    let owner = keyed(&store, &clock, &[(1, key1)], 1);
    owner.check_keks().unwrap();
    assert_eq!(kek_ids(&store), None, "no write on an empty store");
    assert_eq!(
        crate::kek_usage::ids_in_use(&&store).unwrap(),
        Vec::<u32>::new()
    );
    owner.create_user("plain", "pw", None, &[]).unwrap();
    assert_eq!(
        crate::kek_usage::ids_in_use(&&store).unwrap(),
        Vec::<u32>::new()
    );
    let u = owner.create_user("meta", "pw", Some(b"m"), &[]).unwrap();
    assert_eq!(kek_ids(&store), Some(vec![1]));
    assert_eq!(crate::kek_usage::ids_in_use(&&store).unwrap(), vec![1]);

    // Another key under id 1, or no key 1: refused, naming the id.
    let impostor = keyed(&store, &clock, &[(1, other1)], 1);
    assert_eq!(impostor.check_keks(), Err(AuthError::KekMismatch(1)));
    assert_eq!(
        impostor
            .create_user("new", "pw", Some(b"x"), &[])
            .map(|_| ()),
        Err(AuthError::KekMismatch(1))
    );
    let only2 = keyed(&store, &clock, &[(2, key2)], 2);
    assert_eq!(only2.check_keks(), Err(AuthError::KekMissing(1)));
    assert_eq!(owner.lookup_user("new"), Err(AuthError::UserNotFound));

    // Rotation: key 2 added; new metadata is recorded under it too.
    let rotated = keyed(&store, &clock, &[(1, key1), (2, key2)], 2);
    rotated.check_keks().unwrap();
    let v = rotated
        .create_user("meta2", "pw", Some(b"m2"), &[])
        .unwrap();
    assert_eq!(kek_ids(&store), Some(vec![1, 2]));
    assert_eq!(
        rotated.get_user(&u.id).unwrap().metadata.as_deref(),
        Some(&b"m"[..])
    );

    // A key no record uses any more is dropped from the record.
    rotated.delete_user(&u.id).unwrap();
    only2.check_keks().unwrap();
    assert_eq!(kek_ids(&store), Some(vec![2]));
    assert_eq!(
        only2.get_user(&v.id).unwrap().metadata.as_deref(),
        Some(&b"m2"[..])
    );
}

/// A store written before `kek_ids` existed: the record is built from the
/// user records, each id checked by decrypting one of its ciphertexts.
#[test]
fn stores_without_the_record_are_checked_from_their_users() {
    let (store, clock) = (MemStore::default(), clock());
    let owner = keyed(&store, &clock, &[(1, [1; 32])], 1);
    for i in 0..3 {
        owner
            .create_user(&format!("u{i}"), "pw", Some(b"m"), &[])
            .unwrap();
    }
    store.map.lock().unwrap().remove(KEK_IDS_KEY.as_bytes());
    assert_eq!(
        keyed(&store, &clock, &[(1, [0xa1; 32])], 1).check_keks(),
        Err(AuthError::KekMismatch(1))
    );
    assert_eq!(
        keyed(&store, &clock, &[(3, [3; 32])], 3).check_keks(),
        Err(AuthError::KekMissing(1))
    );
    assert_eq!(kek_ids(&store), None, "refusals write nothing");
    owner.check_keks().unwrap();
    assert_eq!(kek_ids(&store), Some(vec![1]));
}
