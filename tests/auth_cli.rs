//! End-to-end tests of `hightower auth`: the real binary, a temporary data
//! directory per test, secrets on stdin. They check the documented exit
//! codes and messages (README "Auth service", host/src/auth_cli.rs), that
//! an unknown user and a wrong password look the same, and that no
//! password, token or key ever reaches stderr, even with `HIGHTOWER_LOG=trace`.
//!
//! Hashing uses `--argon2-m 7168 --argon2-t 5` (the cheapest parameters at
//! the floor) except where the defaults themselves are checked. No timing
//! is asserted.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod harness;
use harness::{BIN, DENIED, NOT_FOUND, OK, OUTPUT, Run, Store, TAKEN, TIMEOUT, USAGE};

/// The cheapest Argon2id parameters at the floor, for new hashes.
const FAST: [&str; 4] = ["--argon2-m", "7168", "--argon2-t", "5"];

const BAD_CREDENTIALS: &str = "hightower: invalid username or password\n";
const BAD_TOKEN: &str = "hightower: invalid API key\n";

impl Store {
    /// `hightower --data-dir DATA auth --argon2-m 7168 --argon2-t 5 ARGS...`
    fn auth(&self, args: &[&str]) -> Run {
        self.cli().arg("auth").args(FAST).args(args)
    }

    /// `auth ARGS` fails with exit 1, "user not found", and nothing else.
    #[track_caller]
    fn no_such_user(&self, args: &[&str]) {
        self.auth(args)
            .run()
            .exactly(NOT_FOUND, "", "hightower: user not found\n");
    }

    /// The raw value of a store key (`hightower get`), or `None` (exit 1).
    fn raw(&self, key: &str) -> Option<String> {
        let out = self.cli().args(["get", key]).run();
        match out.code {
            OK => Some(out.stdout_text().to_string()),
            NOT_FOUND => None,
            _ => panic!("{}", out.describe()),
        }
    }

    /// The stored password hash of a user.
    fn password_hash(&self, id: &str) -> String {
        let raw = self.raw(&format!("auth/user/{id}")).expect("user record");
        let record: serde_json::Value = serde_json::from_str(&raw).unwrap();
        record["password_hash"].as_str().unwrap().to_string()
    }

    /// Creates a user with the cheap parameters; returns its id.
    fn create_user(&self, name: &str, password: &str) -> String {
        let out = self
            .auth(&["user", "create", name])
            .stdin(format!("{password}\n"))
            .run();
        user_id_line(out.ok())
    }

    /// Creates an API key; returns (key id, token).
    fn create_key(&self, user: &str, name: &str, extra: &[&str]) -> (String, String) {
        let out = self
            .auth(&["key", "create", user, "--name", name])
            .args(extra)
            .run();
        let token = token_line(out.ok());
        let key_id = token[4..16].to_string();
        assert!(
            out.stderr.contains(&format!(
                "key id {key_id} (the token is shown only this once)"
            )),
            "{}",
            out.describe()
        );
        assert!(!out.stderr.contains(&token), "{}", out.describe());
        (key_id, token)
    }
}

/// The single line `<32 hex digits>` of `user create` / `user verify`.
#[track_caller]
fn user_id_line(stdout: &str) -> String {
    let id = stdout.strip_suffix('\n').expect("one line");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stdout:?}"
    );
    id.to_string()
}

/// The single line of `key create`: `hkv_<12>_<32 secret><6 checksum>`.
#[track_caller]
fn token_line(stdout: &str) -> String {
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(!token.contains('\n'), "{stdout:?}");
    assert_eq!(token.len(), 4 + 12 + 1 + 32 + 6, "{token}");
    assert!(token.starts_with("hkv_") && token.as_bytes()[16] == b'_');
    token.to_string()
}

fn secret_of(token: &str) -> &str {
    &token[17..49]
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn users_create_verify_passwd_show_list_delete() {
    let s = Store::new();
    let meta = s.file("meta.json", "{\"team\":\"blue-falcon\"}");
    let out = s
        .auth(&["user", "create", "Alice", "--metadata-file"])
        .arg(&meta)
        .stdin("pw-alice-1\n")
        .run();
    let alice = user_id_line(out.ok());
    let key_file = s.data.join("auth.kek");
    assert_eq!(
        out.stderr,
        format!(
            "hightower: created key-encryption key file {} (mode 0600)\n",
            key_file.display()
        )
    );
    assert_eq!(mode(&key_file), 0o600);

    // The normalized name is taken (full-width, other case).
    s.auth(&["user", "create", "ＡＬＩＣＥ"])
        .stdin("other\n")
        .run()
        .exactly(TAKEN, "", "hightower: username taken\n");
    s.auth(&["user", "create", "bad name"])
        .stdin("pw\n")
        .run()
        .fails(USAGE, &["invalid username", "U+0020"]);
    s.auth(&["user", "create", "bob"])
        .stdin(format!("{}\n", "p".repeat(1025)))
        .run()
        .fails(USAGE, &["invalid password: longer than 1024 bytes"]);
    s.auth(&["user", "create", "bob"])
        .run()
        .fails(USAGE, &["no password on stdin"]);

    // Verify: the right password prints the id; a wrong password, an
    // unknown user and an invalid name give the same code and message.
    s.auth(&["user", "verify", "ALICE"])
        .stdin("pw-alice-1\n")
        .run()
        .exactly(OK, format!("{alice}\n"), "");
    s.auth(&["user", "verify", "alice"])
        .stdin("pw-alice-1\r\n")
        .run()
        .exactly(OK, format!("{alice}\n"), "");
    for name in ["alice", "nobody", "no body"] {
        s.auth(&["user", "verify", name])
            .stdin("wrong-password\n")
            .run()
            .exactly(DENIED, "", BAD_CREDENTIALS);
    }
    s.auth(&["user", "verify", "alice"])
        .run()
        .fails(USAGE, &["no password on stdin"]);

    // passwd: the current password, then the new one.
    s.auth(&["user", "passwd", "alice"])
        .stdin("wrong\npw-alice-2\n")
        .run()
        .exactly(DENIED, "", BAD_CREDENTIALS);
    s.auth(&["user", "passwd", "alice"])
        .stdin("pw-alice-1\n")
        .run()
        .fails(USAGE, &["no new password on stdin"]);
    s.auth(&["user", "passwd", "alice"])
        .stdin("pw-alice-1\npw-alice-2\n")
        .run()
        .exactly(OK, "", "password changed\n");
    s.auth(&["user", "verify", "alice"])
        .stdin("pw-alice-1\n")
        .run()
        .exactly(DENIED, "", BAD_CREDENTIALS);
    s.auth(&["user", "verify", "alice"])
        .stdin("pw-alice-2\n")
        .run()
        .exactly(OK, format!("{alice}\n"), "");

    // show: metadata decrypted; stored encrypted.
    let out = s.auth(&["user", "show", "alice"]).run();
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 6, "{}", out.describe());
    assert_eq!(lines[0], format!("id: {alice}"));
    assert_eq!(lines[1], "username: Alice");
    assert!(lines[2].starts_with("created: ") && lines[3].starts_with("updated: "));
    assert_eq!(lines[4], "scopes: -");
    assert_eq!(lines[5], "metadata: {\"team\":\"blue-falcon\"}");
    let raw = s.raw(&format!("auth/user/{alice}")).unwrap();
    assert!(
        !raw.contains("blue-falcon") && !raw.contains("pw-alice"),
        "{raw}"
    );
    s.no_such_user(&["user", "show", "nobody"]);

    // list: pages of two, in id order, `next: ID` while there are more.
    let mut ids = vec![(alice.clone(), "Alice".to_string())];
    for name in ["bob", "carol", "dave", "erin"] {
        ids.push((s.create_user(name, "pw"), name.to_string()));
    }
    ids.sort();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut run = s.auth(&["user", "list", "--limit", "2"]);
        if let Some(c) = &cursor {
            run = run.args(["--cursor", c]);
        }
        let out = run.run();
        pages += 1;
        cursor = None;
        for line in out.ok().lines() {
            if let Some(next) = line.strip_prefix("next: ") {
                cursor = Some(next.to_string());
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert!(fields[2].parse::<u64>().is_ok(), "{line}");
            listed.push((fields[0].to_string(), fields[1].to_string()));
        }
        if cursor.is_none() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(listed, ids);
    assert_eq!(pages, 3);
    s.auth(&["user", "list", "--limit", "0"])
        .run()
        .fails(USAGE, &["--limit"]);
    // A closed stdout (`| head` that has exited) ends quietly with exit 9,
    // as Unix tools end (no panic, no message).
    s.auth(&["user", "list"])
        .stdout_closed()
        .run()
        .exactly(OUTPUT, "", "");

    // delete: the user, its indexes and its keys.
    let bob = ids.iter().find(|(_, n)| n == "bob").unwrap().0.clone();
    let (key_id, token) = s.create_key("bob", "ci", &[]);
    s.auth(&["key", "verify"])
        .stdin(format!("{token}\n"))
        .run()
        .ok();
    s.auth(&["user", "delete", "BOB"])
        .run()
        .exactly(OK, "", &format!("deleted user {bob}\n"));
    s.auth(&["key", "verify"])
        .stdin(format!("{token}\n"))
        .run()
        .exactly(DENIED, "", BAD_TOKEN);
    for key in [
        format!("auth/user/{bob}"),
        "auth/user_by_name/bob".to_string(),
        format!("auth/user_keys/{bob}"),
        format!("auth/apikey/{key_id}"),
    ] {
        assert_eq!(s.raw(&key), None, "{key} is left");
    }
    s.no_such_user(&["user", "delete", "bob"]);
    s.auth(&["user", "verify", "bob"])
        .stdin("pw\n")
        .run()
        .exactly(DENIED, "", BAD_CREDENTIALS);
    // The name is free again.
    s.create_user("Bob", "pw-2");
}

#[test]
fn api_keys_create_verify_revoke_list_expire() {
    let s = Store::new();
    let user = s.create_user("keyholder", "pw");
    let (key_id, token) = s.create_key(
        "KeyHolder",
        "deploy",
        &["--scope", "read:app/", "--scope", "write:app/jobs/"],
    );
    s.auth(&["key", "verify"])
        .stdin(format!("{token}\n"))
        .run()
        .exactly(
            OK,
            format!("user: {user}\nkey: {key_id}\nscopes: read:app/ write:app/jobs/\n"),
            "",
        );
    // A typo is caught by the checksum; garbage and an unknown key id look
    // the same.
    let mut typo = token.clone().into_bytes();
    typo[30] = if typo[30] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [typo.as_str(), "hello", "hkv_AAAAAAAAAAAA_bad"] {
        s.auth(&["key", "verify"])
            .stdin(format!("{bad}\n"))
            .run()
            .exactly(DENIED, "", BAD_TOKEN);
    }
    s.auth(&["key", "verify"])
        .run()
        .fails(USAGE, &["no token on stdin"]);
    // Only a digest of the secret is stored.
    let raw = s.raw(&format!("auth/apikey/{key_id}")).unwrap();
    assert!(!raw.contains(secret_of(&token)), "{raw}");

    // list: id, name, scopes, created, expires, revoked, last eight.
    let out = s.auth(&["key", "list", "keyholder"]).run();
    let fields: Vec<&str> = out.ok().trim_end().split('\t').collect();
    assert_eq!(fields.len(), 7, "{}", out.describe());
    assert_eq!(
        fields[..3],
        [key_id.as_str(), "deploy", "read:app/ write:app/jobs/"]
    );
    assert!(fields[3].parse::<u64>().is_ok());
    assert_eq!(fields[4..6], ["-", "-"]);
    assert_eq!(fields[6], format!("...{}", &token[token.len() - 8..]));
    assert!(!out.stdout_text().contains(secret_of(&token)));

    // revoke
    s.auth(&["key", "revoke", &key_id])
        .run()
        .exactly(OK, "", &format!("revoked key {key_id}\n"));
    s.auth(&["key", "verify"])
        .stdin(format!("{token}\n"))
        .run()
        .exactly(DENIED, "", BAD_TOKEN);
    let out = s.auth(&["key", "list", "keyholder"]).run();
    let revoked = out.ok().trim_end().split('\t').nth(5).unwrap().to_string();
    assert!(revoked.parse::<u64>().is_ok(), "{}", out.describe());
    s.auth(&["key", "revoke", "nosuchkey123"]).run().exactly(
        NOT_FOUND,
        "",
        "hightower: API key not found\n",
    );

    // expiry: valid now, refused once the time has passed (whole seconds:
    // 5 s after the creation returned, the 4 s are over whatever the rounding).
    let (_, short) = s.create_key("keyholder", "short", &["--expires-in", "4"]);
    let created = Instant::now();
    s.auth(&["key", "verify"])
        .stdin(format!("{short}\n"))
        .run()
        .code(OK);
    let out = s.auth(&["key", "list", "keyholder"]).run();
    let line = out.ok().lines().nth(1).unwrap().to_string();
    let f: Vec<&str> = line.split('\t').collect();
    let (made, expires): (u64, u64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
    assert!((made + 3..=made + 4).contains(&expires), "{line}");
    thread::sleep(Duration::from_secs(5).saturating_sub(created.elapsed()));
    s.auth(&["key", "verify"])
        .stdin(format!("{short}\n"))
        .run()
        .exactly(DENIED, "", BAD_TOKEN);

    // Bad arguments.
    s.no_such_user(&["key", "create", "nobody", "--name", "x"]);
    s.auth(&[
        "key",
        "create",
        "keyholder",
        "--name",
        "x",
        "--expires-in",
        "0",
    ])
    .run()
    .fails(USAGE, &["--expires-in"]);
    // Scopes follow the grammar (README "Scopes"): `a,b` is refused rather
    // than shown like two scopes.
    for (scopes, needle) in [
        (
            &["a b"][..],
            "not admin, read:PREFIX, write:PREFIX or call:EXTENSION",
        ),
        (&["read:a,b"], "comma"),
        (&["kv:read"], "not admin"),
        (
            &["read:auth/"],
            "keys under auth/ are reached only with admin",
        ),
        (&["call:Bad"], "extension name"),
        (&["admin", "admin"], "scope \"admin\" is given twice"),
    ] {
        let flags = scopes.iter().flat_map(|scope| ["--scope", scope]);
        s.auth(&["key", "create", "keyholder", "--name", "x"])
            .args(flags)
            .run()
            .fails(USAGE, &["hightower: invalid argument: scope", needle]);
    }

    // delete: revoked or not, the key is gone from the listing.
    let listed_before = s
        .auth(&["key", "list", "keyholder"])
        .run()
        .ok()
        .lines()
        .count();
    s.auth(&["key", "delete", &key_id])
        .run()
        .exactly(OK, "", &format!("deleted key {key_id}\n"));
    let out = s.auth(&["key", "list", "keyholder"]).run();
    assert_eq!(out.ok().lines().count(), listed_before - 1);
    assert!(!out.ok().contains(&key_id));
    s.auth(&["key", "delete", &key_id]).run().exactly(
        NOT_FOUND,
        "",
        "hightower: API key not found\n",
    );
    s.no_such_user(&["key", "list", "nobody"]);
}

/// Every command that handles a secret, at the most verbose log level, with
/// the key-encryption key from the environment: no password, token, token
/// secret or key reaches stderr.
#[test]
fn no_secret_reaches_stderr_even_at_trace() {
    let s = Store::new();
    let kek = "5a".repeat(32);
    let ring = format!("1:{kek}");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut run = s
            .auth(args)
            .env("HIGHTOWER_LOG", "trace")
            .env("HIGHTOWER_AUTH_KEK", &ring);
        if let Some(text) = stdin {
            run = run.stdin(text);
        }
        run.run()
    };
    let meta = s.file("meta", "launch-codes-0000");
    let meta_arg = meta.to_str().unwrap();
    let mut stderr = String::new();
    let out = run(
        &["user", "create", "secretive", "--metadata-file", meta_arg],
        Some("first-Pa55word\n"),
    );
    out.code(OK);
    stderr += &out.stderr;
    for (args, stdin, code) in [
        (&["user", "verify", "secretive"][..], "first-Pa55word\n", OK),
        (
            &["user", "verify", "secretive"],
            "second-Pa55word\n",
            DENIED,
        ),
        (&["user", "verify", "unknown"], "second-Pa55word\n", DENIED),
        (
            &["user", "passwd", "secretive"],
            "first-Pa55word\nsecond-Pa55word\n",
            OK,
        ),
        (&["user", "show", "secretive"], "", OK),
    ] {
        let out = run(args, Some(stdin));
        out.code(code);
        stderr += &out.stderr;
    }
    let out = run(&["key", "create", "secretive", "--name", "ci"], None);
    let token = token_line(out.ok());
    stderr += &out.stderr;
    for args in [&["key", "verify"][..], &["key", "list", "secretive"]] {
        let out = run(args, Some(&format!("{token}\n")));
        out.code(OK);
        stderr += &out.stderr;
    }
    let mut typo = token.clone();
    typo.replace_range(20..21, if &token[20..21] == "Q" { "R" } else { "Q" });
    let out = run(&["key", "verify"], Some(&format!("{typo}\n")));
    out.code(DENIED);
    stderr += &out.stderr;

    // Logging was on (the store logs its opening at info)...
    assert!(stderr.contains("store opened"), "{stderr}");
    // ...but WASI call tracing, which would print the random numbers the
    // token secrets and data keys are made of, is capped.
    assert!(!stderr.contains("get-random"), "{stderr}");
    for secret in [
        "first-Pa55word",
        "second-Pa55word",
        token.as_str(),
        secret_of(&token),
        &typo,
        &kek,
        &kek[..16],
        "launch-codes",
    ] {
        assert!(!stderr.contains(secret), "{secret:?} in stderr:\n{stderr}");
    }
    // The key came from the environment: no key file.
    assert!(!s.data.join("auth.kek").exists());

    // Another key under the metadata's id is refused for every command
    // (exit 2, naming the id), with no key in the message.
    let other = "a5".repeat(32);
    let out = s
        .auth(&["user", "show", "secretive"])
        .env("HIGHTOWER_AUTH_KEK", format!("1:{other}"))
        .run();
    out.fails(
        USAGE,
        &["the configured key-encryption key id 1 is not the key stored metadata is encrypted under"],
    );
    assert!(!out.stderr.contains(&other[..16]) && !out.stderr.contains(&kek[..16]));
    // A malformed key is a configuration error, and is not echoed.
    let out = s
        .auth(&["user", "show", "secretive"])
        .env("HIGHTOWER_AUTH_KEK", format!("1:{}", &kek[..62]))
        .run();
    out.exactly(
        USAGE,
        "",
        "hightower: auth key-encryption key: HIGHTOWER_AUTH_KEK: entry 1 is not <id>:<64 hex digits>\n",
    );
    // Rotation: a second, newer key; the old one still decrypts.
    let out = s
        .auth(&["user", "show", "secretive"])
        .env("HIGHTOWER_AUTH_KEK", format!("1:{kek},2:{other}"))
        .run();
    assert!(out.ok().contains("metadata: launch-codes-0000"));
}

#[test]
fn hashing_options_bcrypt_migration_rehash_and_bad_flags() {
    let s = Store::new();
    // The defaults: OWASP Argon2id parameters in a PHC string.
    let out = s
        .cli()
        .args(["auth", "user", "create", "owasp"])
        .stdin("pw-owasp\n")
        .run();
    let owasp = user_id_line(out.ok());
    assert!(
        s.password_hash(&owasp)
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    s.cli()
        .args(["auth", "user", "verify", "owasp"])
        .stdin("pw-owasp\n")
        .run()
        .exactly(OK, format!("{owasp}\n"), "");

    // Usernames are case-folded, not just lowercased, on both sides.
    let strasse = s.create_user("Straße", "pw-s");
    s.auth(&["user", "verify", "STRASSE"])
        .stdin("pw-s\n")
        .run()
        .exactly(OK, format!("{strasse}\n"), "");

    // bcrypt as the configured alternative, 71 bytes at most.
    let out = s
        .cli()
        .args(["auth", "--bcrypt-cost", "10", "user", "create", "legacy"])
        .stdin("pw-legacy\n")
        .run();
    let legacy = user_id_line(out.ok());
    assert!(s.password_hash(&legacy).starts_with("$2b$10$"));
    s.cli()
        .args(["auth", "--bcrypt-cost", "10", "user", "create", "long"])
        .stdin(format!("{}\n", "b".repeat(72)))
        .run()
        .fails(USAGE, &["invalid password: longer than 71 bytes"]);
    // A login with Argon2id configured migrates the hash...
    s.auth(&["user", "verify", "legacy"])
        .stdin("pw-legacy\n")
        .run()
        .exactly(OK, format!("{legacy}\n"), "");
    assert!(
        s.password_hash(&legacy)
            .starts_with("$argon2id$v=19$m=7168,t=5,p=1$")
    );
    // ...and raised parameters rehash again; a failed login does not.
    let raised = ["auth", "--argon2-m", "8192", "--argon2-t", "5"];
    let before = s.password_hash(&legacy);
    s.cli()
        .args(raised)
        .args(["user", "verify", "legacy"])
        .stdin("wrong\n")
        .run()
        .code(DENIED);
    assert_eq!(s.password_hash(&legacy), before);
    s.cli()
        .args(raised)
        .args(["user", "verify", "legacy"])
        .stdin("pw-legacy\n")
        .run()
        .code(OK);
    let raised_hash = s.password_hash(&legacy);
    assert!(raised_hash.starts_with("$argon2id$v=19$m=8192,t=5,p=1$"));
    // Never towards weaker parameters: fewer passes (the defaults), bcrypt,
    // or parameters below the floor (issue 17: `--argon2-m 8 --argon2-t 1`
    // rewrote the hash), which are refused before anything is opened.
    for weaker in [&["auth"][..], &["auth", "--bcrypt-cost", "12"]] {
        s.cli()
            .args(weaker)
            .args(["user", "verify", "legacy"])
            .stdin("pw-legacy\n")
            .run()
            .exactly(OK, format!("{legacy}\n"), "");
        assert_eq!(s.password_hash(&legacy), raised_hash);
    }
    s.cli()
        .args([
            "auth",
            "--argon2-m",
            "8",
            "--argon2-t",
            "1",
            "user",
            "verify",
            "legacy",
        ])
        .stdin("pw-legacy\n")
        .run()
        .fails(
            USAGE,
            &["--argon2-m: 8 KiB with --argon2-t 1 is below the floor"],
        );
    let weak_config = s.file("weak.toml", "[auth]\nargon2_m_kib = 1024\n");
    s.cli()
        .arg("--config")
        .arg(&weak_config)
        .args(["auth", "user", "verify", "legacy"])
        .stdin("pw-legacy\n")
        .run()
        .fails(
            USAGE,
            &["auth.argon2_m_kib: 1024 KiB with auth.argon2_t 2 is below the floor"],
        );
    assert_eq!(s.password_hash(&legacy), raised_hash);

    // Bad flags are refused before the data directory is created.
    let fresh = Store::new();
    for (flags, needle) in [
        (&["--argon2-t", "0"][..], "--argon2-t: must be at least 1"),
        (
            &["--argon2-m", "4"],
            "--argon2-m: 4 KiB with auth.argon2_t 2 is below the floor",
        ),
        (&["--argon2-m", "1048576"], "wasm.max_memory_bytes"),
        (
            &["--bcrypt-cost", "4"],
            "--bcrypt-cost: 4 is not in 10..=31",
        ),
        (
            &["--bcrypt-cost", "10", "--argon2-m", "64"],
            "cannot be used with",
        ),
    ] {
        fresh
            .cli()
            .arg("auth")
            .args(flags)
            .args(["user", "verify", "x"])
            .stdin("pw\n")
            .run()
            .fails(USAGE, &[needle]);
        assert!(!fresh.data.exists(), "{flags:?} created the data directory");
    }

    // A key file others can read is refused.
    let key_file = s.data.join("auth.kek");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.auth(&["user", "show", "owasp"])
        .run()
        .fails(USAGE, &["readable by group or others", "chmod 600"]);
    // A link named auth.kek is not followed, even to a private key file
    // outside the data directory; a directory under that name is named.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let moved = s.tmp.path().join("moved.kek");
    std::fs::rename(&key_file, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key_file).unwrap();
    s.auth(&["user", "show", "owasp"])
        .run()
        .fails(USAGE, &["auth.kek is a symbolic link, not a regular file"]);
    std::fs::remove_file(&key_file).unwrap();
    std::fs::create_dir(&key_file).unwrap();
    s.auth(&["user", "show", "owasp"])
        .run()
        .fails(USAGE, &["auth.kek is a directory, not a regular file"]);
    std::fs::remove_dir(&key_file).unwrap();
    std::fs::rename(&moved, &key_file).unwrap();
    s.auth(&["user", "show", "owasp"]).run().code(OK);
}

/// Runs `hightower ARGS` on a pseudo-terminal (util-linux `script`), and
/// answers each prompt once it has appeared. Returns the exit code and
/// everything the terminal showed.
fn on_terminal(s: &Store, args: &[&str], answers: &[(&str, &str)]) -> (i32, String) {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let mut command = vec![quote(BIN), "--data-dir".into()];
    command.push(quote(s.data.to_str().unwrap()));
    command.extend(["auth".to_string()]);
    command.extend(FAST.iter().chain(args).map(|a| quote(a)));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command.join(" "), "/dev/null"])
        .current_dir(s.tmp.path())
        .env_remove("HIGHTOWER_LOG")
        .env_remove("HIGHTOWER_AUTH_KEK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run util-linux `script` (it gives the binary a terminal)");
    let (tx, rx) = mpsc::channel();
    let mut stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut shown = String::new();
    let mut seen = 0;
    let mut stdin = child.stdin.take().unwrap();
    for (prompt, answer) in answers {
        loop {
            if let Some(at) = shown[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => shown.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => {
                    let _ = child.kill();
                    panic!("no prompt {prompt:?}; the terminal showed {shown:?}");
                }
            }
        }
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "`{}` hangs; the terminal showed {shown:?}",
                command.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    drop(stdin);
    while let Ok(bytes) = rx.recv_timeout(Duration::from_secs(10)) {
        shown.push_str(&String::from_utf8_lossy(&bytes));
    }
    (status.code().unwrap_or(-1), shown)
}

/// On a terminal, secrets are prompted for with echo off (a new password
/// twice); nothing typed is shown.
#[test]
fn prompts_on_a_terminal_without_echo() {
    let s = Store::new();
    let (code, shown) = on_terminal(
        &s,
        &["user", "create", "tty-user"],
        &[("Password: ", "tty-Secret-1"), ("Again: ", "tty-Secret-1")],
    );
    assert_eq!(code, OK, "{shown}");
    assert!(!shown.contains("tty-Secret"), "{shown:?}");
    let id = shown.lines().last().unwrap().trim().to_string();
    assert_eq!(id.len(), 32, "{shown:?}");

    let (code, shown) = on_terminal(
        &s,
        &["user", "verify", "tty-user"],
        &[("Password: ", "tty-Secret-1")],
    );
    assert_eq!(code, OK, "{shown}");
    assert!(
        shown.contains(&id) && !shown.contains("tty-Secret"),
        "{shown:?}"
    );

    let (code, shown) = on_terminal(
        &s,
        &["user", "passwd", "tty-user"],
        &[
            ("Current password: ", "tty-Secret-1"),
            ("New password: ", "tty-Secret-2"),
            ("Again: ", "tty-Secret-3"),
        ],
    );
    assert_eq!(code, USAGE, "{shown}");
    assert!(
        shown.contains("hightower: the two passwords differ"),
        "{shown:?}"
    );
    assert!(!shown.contains("tty-Secret"), "{shown:?}");

    let (code, shown) = on_terminal(&s, &["key", "create", "tty-user", "--name", "t"], &[]);
    assert_eq!(code, OK, "{shown}");
    let token = shown.lines().last().unwrap().trim().to_string();
    let (code, shown) = on_terminal(&s, &["key", "verify"], &[("Token: ", &token)]);
    assert_eq!(code, OK, "{shown}");
    assert!(shown.contains(&format!("user: {id}")), "{shown:?}");
    assert!(!shown.contains(&token), "{shown:?}");
}

/// Secrets and metadata files are read no further than their limits (an
/// endless stdin is refused, naming the limit), and a token that cannot be
/// shown is deleted again.
#[test]
fn endless_input_is_refused_and_an_unshown_token_is_deleted() {
    let s = Store::new();
    s.create_user("bounded", "pw-bounded");
    s.auth(&["key", "verify"])
        .stdin_file("/dev/zero")
        .run()
        .exactly(
            USAGE,
            "",
            "hightower: the token is longer than 4096 bytes\n",
        );
    s.auth(&["user", "verify", "bounded"])
        .stdin_file("/dev/zero")
        .run()
        .exactly(
            USAGE,
            "",
            "hightower: the password is longer than 4096 bytes\n",
        );
    s.auth(&["user", "create", "meta", "--metadata-file", "/dev/zero"])
        .stdin("pw\n")
        .run()
        .fails(
            USAGE,
            &["metadata file /dev/zero is longer than the limit of 16384 bytes"],
        );
    s.auth(&["user", "create", "meta", "--metadata-file", "-"])
        .stdin("pw\n")
        .run()
        .fails(USAGE, &["--metadata-file: `-` is not allowed"]);
    s.no_such_user(&["user", "show", "meta"]);

    let out = s
        .auth(&["key", "create", "bounded", "--name", "lost"])
        .stdout_file("/dev/full")
        .run();
    out.code(OUTPUT);
    let key_id = out
        .stderr
        .strip_prefix("key id ")
        .and_then(|rest| rest.get(..12))
        .unwrap_or_else(|| panic!("{}", out.describe()))
        .to_string();
    assert!(
        out.stderr.ends_with(&format!(
            "hightower: cannot write to stdout: No space left on device (os error 28) \
             (the command itself succeeded: created key {key_id}, but as its token could not \
             be shown, deleted it again)\n"
        )),
        "{}",
        out.describe()
    );
    s.auth(&["key", "list", "bounded"])
        .run()
        .exactly(OK, "", "");
}

/// Users have scopes too (for password logins on the server): set at
/// creation, shown, changed atomically one change at a time.
#[test]
fn user_scopes_are_set_shown_and_changed() {
    let s = Store::new();
    let out = s
        .auth(&[
            "user",
            "create",
            "ops",
            "--scope",
            "read:app/",
            "--scope",
            "call:resize",
        ])
        .stdin("pw-ops\n")
        .run();
    user_id_line(out.ok());
    let scopes = |extra: &[&str]| {
        let mut args = vec!["user", "scopes", "OPS"];
        args.extend_from_slice(extra);
        s.auth(&args).run()
    };
    scopes(&[]).exactly(OK, "read:app/ call:resize\n", "");
    scopes(&["--add", "write:app/", "--add", "read:app/"]).exactly(
        OK,
        "read:app/ call:resize write:app/\n",
        "",
    );
    scopes(&["--remove", "call:resize"]).exactly(OK, "read:app/ write:app/\n", "");
    scopes(&["--set", "admin"]).exactly(OK, "admin\n", "");
    let show = s.auth(&["user", "show", "ops"]).run();
    assert!(
        show.ok().contains("\nscopes: admin\n"),
        "{}",
        show.describe()
    );
    scopes(&["--clear"]).exactly(OK, "-\n", "");
    // One change per call; a bad scope changes nothing.
    scopes(&["--add", "admin", "--remove", "admin"]).fails(USAGE, &["cannot be used with"]);
    scopes(&["--set", "read:x y"]).fails(USAGE, &["invalid argument: scope \"read:x y\""]);
    scopes(&[]).exactly(OK, "-\n", "");
    s.no_such_user(&["user", "scopes", "nobody"]);
    s.auth(&["user", "create", "bad", "--scope", "write:auth/x"])
        .stdin("pw\n")
        .run()
        .fails(USAGE, &["keys under auth/ are reached only with admin"]);
    s.no_such_user(&["user", "show", "bad"]);
}

/// A snapshot does not carry the key file (by design). A store restored
/// without it is refused, naming the key id its metadata needs, instead of
/// getting a new key 1 that conflicts with the old one (issue 17, item 4);
/// with the key file put back beside it, everything reads.
#[test]
fn a_store_restored_without_its_key_file_is_refused_naming_the_key() {
    let s = Store::new();
    let meta = s.file("meta.json", "{\"team\":\"restored\"}");
    s.auth(&["user", "create", "kept", "--metadata-file"])
        .arg(&meta)
        .stdin("pw-kept\n")
        .run()
        .code(OK);
    let image = s.tmp.path().join("image.snapshot");
    s.cli()
        .args(["snapshot", "create"])
        .arg(&image)
        .run()
        .code(OK);

    let restored = Store::new();
    restored
        .cli()
        .args(["snapshot", "restore"])
        .arg(&image)
        .run()
        .code(OK);
    let key_file = restored.data.join("auth.kek");
    for (args, stdin) in [
        (&["user", "verify", "kept"][..], "pw-kept\n"),
        (&["user", "show", "kept"], ""),
        (
            &[
                "user",
                "create",
                "new",
                "--metadata-file",
                meta.to_str().unwrap(),
            ],
            "pw\n",
        ),
    ] {
        restored.auth(args).stdin(stdin).run().exactly(
            USAGE,
            "",
            &format!(
                "hightower: auth key-encryption key: the store holds auth metadata encrypted under \
                 key id 1, but there is no key file {} and HIGHTOWER_AUTH_KEK is not set: restore \
                 the key file kept with the store's backup (a snapshot does not carry it); no new \
                 key was created\n",
                key_file.display()
            ),
        );
        assert!(!key_file.exists(), "a key file was created");
    }
    // A new key under id 1 is not the old one; a key 2 alone lacks key 1.
    let ring = |entries: &str| {
        restored
            .auth(&["user", "show", "kept"])
            .env("HIGHTOWER_AUTH_KEK", entries)
            .run()
    };
    ring(&format!("1:{}", "ab".repeat(32))).fails(
        USAGE,
        &["the configured key-encryption key id 1 is not the key stored metadata is encrypted under"],
    );
    ring(&format!("2:{}", "ab".repeat(32))).fails(
        USAGE,
        &["stored metadata is encrypted under key-encryption key id 1, which is not configured"],
    );
    restored.auth(&["user", "show", "new"]).run().code(USAGE);
    // The key file kept with the backup makes it whole again.
    std::fs::copy(s.data.join("auth.kek"), &key_file).unwrap();
    let out = restored.auth(&["user", "show", "kept"]).run();
    assert!(
        out.ok().contains("metadata: {\"team\":\"restored\"}"),
        "{}",
        out.describe()
    );
    restored
        .auth(&["user", "verify", "kept"])
        .stdin("pw-kept\n")
        .run()
        .code(OK);

    // A store whose users have no metadata may get a new key file.
    let plain = Store::new();
    plain.create_user("plain", "pw");
    std::fs::remove_file(plain.data.join("auth.kek")).unwrap();
    let out = plain.auth(&["user", "show", "plain"]).run();
    out.code(OK);
    assert!(
        out.stderr.contains("created key-encryption key file"),
        "{}",
        out.describe()
    );
}
