//! `hightower auth`: users and API keys through the auth component.
//!
//! Passwords and tokens never come from argv (visible in `ps` and shell
//! history): they are read from the terminal with echo off, or else one
//! per line from stdin (each line at most 4 KiB).
//!
//! Exit codes (in addition to the CLI's): 1 user or key not found ·
//! 2 invalid username, password, scope or argument, hashing parameters
//! (below the floor or otherwise bad), a missing or oversized secret on
//! stdin, or a key-encryption key that is missing (the store needs it),
//! different or unusable · 5 the component failed or data could not be
//! decrypted · 7 invalid credentials or token · 8 username taken or
//! conflict (retry) · 9 the output could not be written (a token that could
//! not be shown is deleted again). Bad flags are refused before the data
//! directory is opened.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use hightower_engine::{Config, KvEngine};
use hightower_wasm::auth::AuthConfig;
use hightower_wasm::auth::{
    Argon2Params, AuthClient, AuthClientError, Hasher, KekSource, ScopeChange,
};
use hightower_wasm::{SandboxConfig, WasmRuntime};

use crate::error::CliError;
use crate::input::{MAX_METADATA_FILE_BYTES, read_file_at_most, secret_line};
use crate::output::{Stdout, note, outln, prompt};

#[derive(Args)]
pub struct AuthArgs {
    /// Argon2id memory in KiB for new hashes [default: 19456].
    #[arg(long, global = true, value_name = "KIB")]
    argon2_m: Option<u32>,
    /// Argon2id passes [default: 2].
    #[arg(long, global = true, value_name = "T")]
    argon2_t: Option<u32>,
    /// Argon2id lanes [default: 1].
    #[arg(long, global = true, value_name = "P")]
    argon2_p: Option<u32>,
    /// Hash new passwords with bcrypt at this cost instead (legacy only).
    #[arg(long, global = true, value_name = "COST", conflicts_with_all = ["argon2_m", "argon2_t", "argon2_p"])]
    bcrypt_cost: Option<u32>,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Users and passwords.
    #[command(subcommand)]
    User(UserCommand),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (password from the prompt or stdin); prints its id.
    Create {
        username: String,
        /// A scope for the user's password logins, such as `read:app/`
        /// (repeat for more; see README "Scopes").
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Metadata stored encrypted with the user: a file of at most 16 KiB
        /// (`-` is not allowed: stdin has the password).
        #[arg(long, value_name = "FILE")]
        metadata_file: Option<PathBuf>,
    },
    /// Check a password (from the prompt or stdin); prints the user id. Exit 7 if wrong.
    Verify { username: String },
    /// Change a password: the current one, then the new one (two lines on stdin).
    Passwd { username: String },
    /// Show a user, its scopes and its decrypted metadata.
    Show { username: String },
    /// Show a user's scopes, or change them (one change per call, atomic);
    /// prints the scopes it has then, space-separated (`-` for none).
    #[command(group(clap::ArgGroup::new("change").args(["set", "add", "remove", "clear"])))]
    Scopes {
        username: String,
        /// Exactly these scopes (repeat for more).
        #[arg(long, value_name = "SCOPE")]
        set: Vec<String>,
        /// These scopes too (repeat for more).
        #[arg(long, value_name = "SCOPE")]
        add: Vec<String>,
        /// Not these scopes (repeat for more).
        #[arg(long, value_name = "SCOPE")]
        remove: Vec<String>,
        /// No scopes at all.
        #[arg(long)]
        clear: bool,
    },
    /// Delete a user, its indexes and all its API keys.
    Delete { username: String },
    /// List users, one per line: id, username, created (Unix seconds).
    List {
        /// Users per page, 1 to 1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Start after this user id (the `next:` line of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key for USERNAME; prints the token (shown only once) on stdout.
    Create {
        username: String,
        #[arg(long)]
        name: String,
        /// A scope to grant, such as `read:app/` (repeat for more; see
        /// README "Scopes").
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Lifetime in seconds, at least 1 [default: no expiry].
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_EXPIRES_IN_SECS))]
        expires_in: Option<u64>,
    },
    /// Check a token (from the prompt or stdin); prints user id, key id and scopes. Exit 7 if invalid.
    Verify,
    /// Revoke a key by id (it stays listed until deleted).
    Revoke { key_id: String },
    /// Delete a key by id, revoked or not.
    Delete { key_id: String },
    /// List a user's keys, one per line, tab-separated: id, name, scopes
    /// (space-separated, `-` for none), created, expires, revoked, last
    /// eight characters.
    List { username: String },
}

/// Longest `--expires-in`: 100 years (the expiry must fit a u64 of seconds).
const MAX_EXPIRES_IN_SECS: u64 = 100 * 366 * 24 * 3600;

/// The hasher the flags ask for, checked here (exit 2, before the data
/// directory is opened) with the rules the component applies.
/// The flags override the config file's `[auth]` table; an error names
/// whichever of the two set the bad value.
fn hasher_from_args(
    args: &AuthArgs,
    config: &AuthConfig,
    max_memory_bytes: u64,
) -> Result<Hasher, String> {
    let pick =
        |flag: Option<u32>, flag_name: &'static str, value: u32, field: &'static str| match flag {
            Some(given) => (given, flag_name),
            None => (value, field),
        };
    let argon2_flags =
        args.argon2_m.is_some() || args.argon2_t.is_some() || args.argon2_p.is_some();
    let bcrypt = match args.bcrypt_cost {
        Some(cost) => Some((cost, "--bcrypt-cost")),
        None if config.bcrypt_cost != 0 && !argon2_flags => {
            Some((config.bcrypt_cost, "auth.bcrypt_cost"))
        }
        None => None,
    };
    if let Some((cost, name)) = bcrypt {
        if !(10..=31).contains(&cost) {
            return Err(format!("{name}: {cost} is not in 10..=31"));
        }
        return Ok(Hasher::Bcrypt(cost));
    }
    let (m_kib, m_name) = pick(
        args.argon2_m,
        "--argon2-m",
        config.argon2_m_kib,
        "auth.argon2_m_kib",
    );
    let (t, t_name) = pick(
        args.argon2_t,
        "--argon2-t",
        config.argon2_t,
        "auth.argon2_t",
    );
    let (p, p_name) = pick(
        args.argon2_p,
        "--argon2-p",
        config.argon2_p,
        "auth.argon2_p",
    );
    let params = Argon2Params { m_kib, t, p };
    if params.t == 0 {
        return Err(format!("{t_name}: must be at least 1"));
    }
    if !(1..=0xFF_FFFF).contains(&params.p) {
        return Err(format!("{p_name}: {} is not in 1..=16777215", params.p));
    }
    if let Some(floor) = Argon2Params::floor_m_kib(params.t)
        && params.m_kib < floor
    {
        return Err(format!(
            "{m_name}: {} KiB with {t_name} {} is below the floor of Argon2id parameters \
             (OWASP's minimum): with t = {} at least {floor} KiB \
             (t = 1: 47104 KiB, 2: 19456, 3: 12288, 4: 9216, 5 or more: 7168)",
            params.m_kib, params.t, params.t
        ));
    }
    if (params.m_kib as u64) < 8 * params.p as u64 {
        return Err(format!(
            "{m_name}: {} KiB is below 8 KiB per lane ({} lanes)",
            params.m_kib, params.p
        ));
    }
    if params.m_kib as u64 * 1024 >= max_memory_bytes {
        return Err(format!(
            "{m_name}: {} KiB does not fit the sandbox's memory limit of {} bytes \
             (wasm.max_memory_bytes in the config file)",
            params.m_kib, max_memory_bytes
        ));
    }
    Ok(Hasher::Argon2id(params))
}

pub fn run(
    config: Config,
    sandbox: SandboxConfig,
    auth_config: AuthConfig,
    args: AuthArgs,
) -> Result<(), CliError> {
    let hasher =
        hasher_from_args(&args, &auth_config, sandbox.max_memory_bytes).map_err(CliError::Usage)?;
    // Files named by flags are read before the store is opened.
    let metadata = match &args.command {
        AuthCommand::User(UserCommand::Create {
            metadata_file: Some(path),
            ..
        }) => Some(read_metadata_file(path)?),
        _ => None,
    };
    let data_dir = config.data_dir.clone();
    let engine = Arc::new(KvEngine::open(config)?);
    let result = WasmRuntime::new(engine.clone(), sandbox)
        .map_err(AuthClientError::from)
        .and_then(|runtime| AuthClient::load_for_data_dir(&runtime, hasher, &data_dir))
        .map_err(CliError::from)
        .and_then(|(client, source)| {
            if let KekSource::File {
                path,
                created: true,
            } = &source
            {
                note!(
                    "hightower: created key-encryption key file {} (mode 0600)",
                    path.display()
                );
            }
            // Written before the store is closed: a token must not be lost
            // to a failing final fsync.
            let mut out = Stdout::new();
            dispatch(&client, args.command, metadata, &mut out)?;
            Ok(out.finish()?)
        });
    let closed = match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(_) => Ok(()),
    };
    result?;
    Ok(closed?)
}

fn read_metadata_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    if path.as_os_str() == "-" {
        return Err(CliError::Usage(
            "--metadata-file: `-` is not allowed (stdin has the password)".into(),
        ));
    }
    read_file_at_most(
        path,
        MAX_METADATA_FILE_BYTES,
        "metadata file",
        "the auth service's metadata limit",
    )
}

/// Runs one command, printing its output to `out`.
fn dispatch(
    client: &AuthClient,
    command: AuthCommand,
    metadata: Option<Vec<u8>>,
    out: &mut Stdout,
) -> Result<(), CliError> {
    let mut input = SecretInput::new();
    match command {
        AuthCommand::User(UserCommand::Create {
            username, scopes, ..
        }) => {
            let password = input.read_new("Password: ", "password")?;
            let user = client.create_user(&username, &password, metadata.as_deref(), &scopes)?;
            out.did(format!("created user {}", user.id));
            outln!(out, "{}", user.id)?;
        }
        AuthCommand::User(UserCommand::Verify { username }) => {
            let password = input.read("Password: ", "password")?;
            let user = client.verify_password(&username, &password)?;
            outln!(out, "{}", user.id)?;
        }
        AuthCommand::User(UserCommand::Passwd { username }) => {
            let current = input.read("Current password: ", "current password")?;
            let new = input.read_new("New password: ", "new password")?;
            client.change_password(&username, &current, &new)?;
            note!("password changed");
        }
        AuthCommand::User(UserCommand::Show { username }) => {
            let id = client.lookup_user(&username)?;
            let user = client.get_user(&id)?;
            outln!(out, "id: {}", user.id)?;
            outln!(out, "username: {}", user.username)?;
            outln!(out, "created: {}", user.created_at)?;
            outln!(out, "updated: {}", user.updated_at)?;
            outln!(out, "scopes: {}", scope_list(&user.scopes))?;
            match user.metadata {
                Some(m) => outln!(out, "metadata: {}", String::from_utf8_lossy(&m))?,
                None => outln!(out, "metadata: (none)")?,
            }
        }
        AuthCommand::User(UserCommand::Scopes {
            username,
            set,
            add,
            remove,
            clear,
        }) => {
            let id = client.lookup_user(&username)?;
            let change = match (clear, set, add, remove) {
                (true, ..) => Some(ScopeChange::Set(Vec::new())),
                (_, set, _, _) if !set.is_empty() => Some(ScopeChange::Set(set)),
                (_, _, add, _) if !add.is_empty() => Some(ScopeChange::Add(add)),
                (_, _, _, remove) if !remove.is_empty() => Some(ScopeChange::Remove(remove)),
                _ => None,
            };
            let user = match change {
                Some(change) => client.update_user_scopes(&id, &change)?,
                None => client.get_user(&id)?,
            };
            outln!(out, "{}", scope_list(&user.scopes))?;
        }
        AuthCommand::User(UserCommand::Delete { username }) => {
            let id = client.lookup_user(&username)?;
            client.delete_user(&id)?;
            note!("deleted user {id}");
        }
        AuthCommand::User(UserCommand::List { limit, cursor }) => {
            let page = client.list_users(cursor.as_deref(), limit)?;
            for u in page.users {
                outln!(out, "{}\t{}\t{}", u.id, u.username, u.created_at)?;
            }
            if let Some(next) = page.next_cursor {
                outln!(out, "next: {next}")?;
            }
        }
        AuthCommand::Key(KeyCommand::Create {
            username,
            name,
            scopes,
            expires_in,
        }) => {
            let id = client.lookup_user(&username)?;
            // Cannot overflow: at most 100 years are added.
            let expires_at = expires_in.map(|s| now().saturating_add(s));
            let new = client.create_api_key(&id, &name, &scopes, expires_at)?;
            note!("key id {} (the token is shown only this once)", new.key.id);
            if let Err(mut err) = outln!(out, "{}", new.token).and_then(|()| out.flush()) {
                // Nobody has the token (or only part of it): a key nobody can
                // use must not stay valid.
                let id = &new.key.id;
                err.done = Some(match client.delete_api_key(id) {
                    Ok(()) => format!(
                        "created key {id}, but as its token could not be shown, deleted it again"
                    ),
                    Err(e) => format!(
                        "created key {id}, whose token could not be shown; deleting it failed ({e}): delete it"
                    ),
                });
                return Err(err.into());
            }
        }
        AuthCommand::Key(KeyCommand::Verify) => {
            let token = input.read("Token: ", "token")?;
            let p = client.verify_api_key(&token)?;
            outln!(out, "user: {}", p.user_id)?;
            outln!(out, "key: {}", p.key_id)?;
            outln!(out, "scopes: {}", scope_list(&p.scopes))?;
        }
        AuthCommand::Key(KeyCommand::Revoke { key_id }) => {
            client.revoke_api_key(&key_id)?;
            note!("revoked key {key_id}");
        }
        AuthCommand::Key(KeyCommand::Delete { key_id }) => {
            client.delete_api_key(&key_id)?;
            note!("deleted key {key_id}");
        }
        AuthCommand::Key(KeyCommand::List { username }) => {
            let id = client.lookup_user(&username)?;
            for k in client.list_api_keys(&id)? {
                let opt = |v: Option<u64>| v.map_or("-".to_string(), |t| t.to_string());
                outln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t...{}",
                    k.id,
                    k.name,
                    scope_list(&k.scopes),
                    k.created_at,
                    opt(k.expires_at),
                    opt(k.revoked_at),
                    k.last_eight
                )?;
            }
        }
    }
    Ok(())
}

/// Scopes space-separated (no scope contains whitespace), `-` for none.
fn scope_list(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "-".into()
    } else {
        scopes.join(" ")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Secrets from the terminal (echo off) or, when stdin is not a terminal,
/// one per line from stdin. Both read through the one lock of stdin (std's
/// stdin lock is not reentrant: taking it again would hang).
struct SecretInput {
    tty: bool,
    stdin: std::io::StdinLock<'static>,
}

impl SecretInput {
    fn new() -> Self {
        let stdin = std::io::stdin();
        SecretInput {
            tty: stdin.is_terminal(),
            stdin: stdin.lock(),
        }
    }

    /// One secret; `what` names it in the message when stdin has none.
    fn read(&mut self, prompt: &str, what: &str) -> Result<String, CliError> {
        let line = if self.tty {
            self.prompt_no_echo(prompt, what)?
        } else {
            secret_line(&mut self.stdin, what)?
        };
        line.ok_or_else(|| {
            CliError::Usage(format!(
                "no {what} on stdin: give each secret on a line of its own"
            ))
        })
    }

    /// A new password: asked twice on a terminal.
    fn read_new(&mut self, prompt: &str, what: &str) -> Result<String, CliError> {
        let first = self.read(prompt, what)?;
        if self.tty && self.read("Again: ", what)? != first {
            return Err(CliError::Usage("the two passwords differ".into()));
        }
        Ok(first)
    }

    /// Prompts on stderr and reads a line with the terminal's echo off
    /// (the newline is still echoed). Echo is turned off before the prompt
    /// appears, so nothing typed after it is shown, and restored after.
    fn prompt_no_echo(&mut self, text: &str, what: &str) -> Result<Option<String>, CliError> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let no_echo = |e: rustix::io::Errno| {
            CliError::Usage(format!(
                "cannot turn off the terminal's echo ({e}); give the secret on stdin instead"
            ))
        };
        let saved = tcgetattr(&self.stdin).map_err(no_echo)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&self.stdin, OptionalActions::Now, &quiet).map_err(no_echo)?;
        prompt(text);
        let line = secret_line(&mut self.stdin, what);
        let _ = tcsetattr(&self.stdin, OptionalActions::Now, &saved);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn hasher_with(flags: &[&str], config: &AuthConfig) -> Result<Hasher, String> {
        let argv = ["auth"].iter().chain(flags).chain(&["key", "verify"]);
        hasher_from_args(&Cli::try_parse_from(argv).unwrap().auth, config, 64 << 20)
    }

    fn hasher(flags: &[&str]) -> Result<Hasher, String> {
        hasher_with(flags, &AuthConfig::default())
    }

    #[test]
    fn the_config_file_sets_the_hashing_and_flags_override_it() {
        let config = AuthConfig {
            argon2_m_kib: 12288,
            argon2_t: 3,
            ..AuthConfig::default()
        };
        let params = |m_kib, t| Ok(Hasher::Argon2id(Argon2Params { m_kib, t, p: 1 }));
        assert_eq!(hasher_with(&[], &config), params(12288, 3));
        assert_eq!(hasher_with(&["--argon2-t", "4"], &config), params(12288, 4));
        let bcrypt = AuthConfig {
            bcrypt_cost: 12,
            ..AuthConfig::default()
        };
        assert_eq!(hasher_with(&[], &bcrypt), Ok(Hasher::Bcrypt(12)));
        assert_eq!(
            hasher_with(&["--argon2-m", "20000"], &bcrypt),
            params(20000, 2)
        );
        let bad = AuthConfig {
            argon2_t: 0,
            ..AuthConfig::default()
        };
        let err = hasher_with(&[], &bad).unwrap_err();
        assert!(err.starts_with("auth.argon2_t:"), "{err}");
        let weak = AuthConfig {
            argon2_m_kib: 64,
            ..AuthConfig::default()
        };
        let err = hasher_with(&[], &weak).unwrap_err();
        assert!(
            err.starts_with("auth.argon2_m_kib: 64 KiB with auth.argon2_t 2 is below"),
            "{err}"
        );
        let bad_cost = AuthConfig {
            bcrypt_cost: 3,
            ..AuthConfig::default()
        };
        let err = hasher_with(&[], &bad_cost).unwrap_err();
        assert!(err.starts_with("auth.bcrypt_cost:"), "{err}");
    }

    #[test]
    fn hashing_flags_are_checked_with_the_components_rules() {
        assert_eq!(hasher(&[]), Ok(Hasher::default()));
        assert_eq!(
            hasher(&["--argon2-m", "7168", "--argon2-t", "5"]),
            Ok(Hasher::Argon2id(Argon2Params {
                m_kib: 7168,
                t: 5,
                p: 1
            }))
        );
        assert_eq!(hasher(&["--bcrypt-cost", "10"]), Ok(Hasher::Bcrypt(10)));
        for (flags, needle) in [
            (
                &["--bcrypt-cost", "4"][..],
                "--bcrypt-cost: 4 is not in 10..=31",
            ),
            (&["--argon2-t", "0"], "--argon2-t"),
            (&["--argon2-p", "0"], "--argon2-p"),
            (
                &[
                    "--argon2-m",
                    "7168",
                    "--argon2-t",
                    "5",
                    "--argon2-p",
                    "1000",
                ],
                "below 8 KiB per lane",
            ),
            // The floor: OWASP's minimums (issue 17: m = 8, t = 1 was taken).
            (
                &["--argon2-m", "8", "--argon2-t", "1"],
                "--argon2-m: 8 KiB with --argon2-t 1 is below the floor",
            ),
            (&["--argon2-m", "19455"], "with t = 2 at least 19456 KiB"),
            (
                &["--argon2-m", "7167", "--argon2-t", "9"],
                "with t = 9 at least 7168 KiB",
            ),
            (&["--argon2-t", "1"], "with t = 1 at least 47104 KiB"),
            (&["--argon2-m", "65536"], "wasm.max_memory_bytes"),
        ] {
            let err = hasher(flags).unwrap_err();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        // bcrypt and Argon2 flags exclude each other.
        assert!(
            Cli::try_parse_from([
                "auth",
                "--bcrypt-cost",
                "10",
                "--argon2-m",
                "20000",
                "key",
                "verify"
            ])
            .is_err()
        );
    }
}
