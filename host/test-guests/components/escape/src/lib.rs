//! A guest that tries to reach keys outside its namespace.
//!
//! `probe` runs every attempt and returns one line per attempt,
//! `name: outcome`, which the host's test compares with the exact expected
//! report; the host then checks natively that nothing outside the namespace
//! changed. `ping` answers `pong`.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
});

use hightower::kv::store::{self, Condition, KeyValue, Namespace, Op};

struct Escape;

impl Guest for Escape {
    fn call(command: String, _arg: Vec<u8>) -> Result<Vec<u8>, String> {
        match command.as_str() {
            "ping" => Ok(b"pong".to_vec()),
            "probe" => Ok(probe().into_bytes()),
            other => Err(format!("unknown command {other}")),
        }
    }
}

export!(Escape);

fn probe() -> String {
    let mut report = String::new();
    let mut line = |name: &str, outcome: String| {
        report.push_str(name);
        report.push_str(": ");
        report.push_str(&outcome);
        report.push('\n');
    };
    line("granted", format!("{:?}", store::granted()));
    // Namespace names other than the exact grant.
    for name in [
        "", "/", "app", "ap", "app2/", "app/sub/", "APP/", "app//", "../app/", "other/",
    ] {
        line(
            &format!("open {name:?}"),
            format!("{:?}", Namespace::open(name).map(|_| ())),
        );
    }
    let ns = Namespace::open("app/").expect("app/ is granted");
    let limits = ns.limits();
    line("max key bytes", limits.max_key_bytes.to_string());

    // Keys that would be escapes if keys were paths or prefixes were loose.
    for key in [
        &b"../other/secret"[..],
        b"/../other/secret",
        b"..",
        b"/other/secret",
        b"\0other/secret",
    ] {
        line(
            &format!("get {}", key.escape_ascii()),
            format!("{:?}", ns.get(key)),
        );
        line(
            &format!("set {}", key.escape_ascii()),
            format!("{:?}", ns.set(key, b"pwned").map(|_| ())),
        );
    }
    line("get empty", format!("{:?}", ns.get(b"")));
    line("set empty", format!("{:?}", ns.set(b"", b"v").map(|_| ())));
    line("exists empty", format!("{:?}", ns.exists(b"")));
    line("delete empty", format!("{:?}", ns.delete(b"")));
    let long = vec![b'x'; limits.max_key_bytes as usize + 1];
    line("set long", format!("{:?}", ns.set(&long, b"v").map(|_| ())));
    line(
        "list long prefix",
        format!("{:?}", ns.list_keys(&long, None, 1).map(|_| ())),
    );
    line(
        "list long cursor",
        format!("{:?}", ns.list_keys(b"", Some(&long), 1).map(|_| ())),
    );
    let huge = vec![b'x'; 70_000];
    line("get huge key", format!("{:?}", ns.get(&huge)));
    line(
        "set non-utf8",
        format!("{:?}", ns.set(b"\xff\xfe", b"bytes").map(|_| ())),
    );
    line(
        "get non-utf8",
        format!("{:?}", ns.get(b"\xff\xfe").map(|e| e.map(|e| e.value))),
    );
    line(
        "batch",
        format!(
            "{:?}",
            ns.batch(
                &[Condition::Absent(b"../other/secret2".to_vec())],
                &[Op::Set(KeyValue {
                    key: b"../other/secret2".to_vec(),
                    value: b"pwned".to_vec()
                })],
            )
            .map(|_| ())
        ),
    );
    line(
        "batch empty key",
        format!("{:?}", ns.batch(&[], &[Op::Delete(Vec::new())]).map(|_| ())),
    );
    line(
        "batch empty condition key",
        format!(
            "{:?}",
            ns.batch(&[Condition::Absent(Vec::new())], &[]).map(|_| ())
        ),
    );
    // Listings show only this namespace's keys, relative to it.
    let listed = ns.list_keys(b"", None, 0).map(|page| {
        page.keys
            .iter()
            .map(|k| k.escape_ascii().to_string())
            .collect::<Vec<_>>()
    });
    line("list", format!("{listed:?}"));
    let listed = ns.list_keys(b"..", None, 0).map(|page| page.keys.len());
    line("list ..", format!("{listed:?}"));

    // WASI gives nothing but clocks, randomness and output.
    line("env vars", std::env::vars_os().count().to_string());
    line("args", std::env::args_os().count().to_string());
    line(
        "read /",
        format!(
            "{:?}",
            std::fs::read_dir("/").map(|_| ()).map_err(|e| e.kind())
        ),
    );
    line(
        "read .",
        format!(
            "{:?}",
            std::fs::read("data").map(|_| ()).map_err(|e| e.kind())
        ),
    );
    line(
        "write /tmp/x",
        format!("{:?}", std::fs::write("/tmp/x", b"x").map_err(|e| e.kind())),
    );
    line(
        "tcp connect",
        format!(
            "{:?}",
            std::net::TcpStream::connect("127.0.0.1:9")
                .map(|_| ())
                .map_err(|e| e.kind())
        ),
    );
    line(
        "tcp bind",
        format!(
            "{:?}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .map(|_| ())
                .map_err(|e| e.kind())
        ),
    );
    let mut random = [0u8; 16];
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok();
    line("clock", clock.to_string());
    // std has no public randomness; HashMap's seeds come from wasi:random.
    use std::hash::{BuildHasher, RandomState};
    random[..8].copy_from_slice(&RandomState::new().hash_one(1u8).to_le_bytes());
    line("random", (random != [0; 16]).to_string());
    report
}
