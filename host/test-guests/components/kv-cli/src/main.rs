//! A command-line extension for `hightower run`: a tiny client of its
//! namespace. Usage: `kv-cli set KEY VALUE | get KEY | delete KEY | list
//! [PREFIX] | exit CODE | spin` (spin never ends). Output goes to stdout, errors to stderr; exit
//! status 0 on success, 1 when a key is absent, 2 on bad usage or errors,
//! or CODE.

wit_bindgen::generate!({
    path: ["../../../../wit"],
    // Rust's std exits with 0 or 1 only; `exit-with-code` passes any status.
    inline: "
        package local:kv-cli;
        world kv-cli {
            include hightower:kv/extension@0.1.0;
            import wasi:cli/exit@0.2.12;
        }
    ",
    world: "local:kv-cli/kv-cli",
    generate_all,
});

use hightower::kv::store::{self, Namespace};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = store::granted().into_iter().next() else {
        eprintln!("kv-cli: no namespace granted");
        exit(2);
    };
    let ns = Namespace::open(&name).unwrap_or_else(|e| fail(e));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["set", key, value] => {
            let version = ns
                .set(key.as_bytes(), value.as_bytes())
                .unwrap_or_else(|e| fail(e));
            println!("{version}");
        }
        ["get", key] => match ns.get(key.as_bytes()).unwrap_or_else(|e| fail(e)) {
            Some(entry) => {
                std::io::stdout().write_all(&entry.value).unwrap();
                println!();
            }
            None => {
                eprintln!("kv-cli: {key}: not found");
                exit(1);
            }
        },
        ["delete", key] => {
            if ns
                .delete(key.as_bytes())
                .unwrap_or_else(|e| fail(e))
                .is_none()
            {
                eprintln!("kv-cli: {key}: not found");
                exit(1);
            }
        }
        ["list", rest @ ..] if rest.len() <= 1 => {
            let prefix = rest.first().copied().unwrap_or("").as_bytes();
            let mut cursor: Option<Vec<u8>> = None;
            loop {
                let page = ns
                    .list_keys(prefix, cursor.as_deref(), 0)
                    .unwrap_or_else(|e| fail(e));
                for key in page.keys {
                    println!("{}", key.escape_ascii());
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        ["exit", code] => exit(code.parse().unwrap_or(2)),
        ["spin"] => {
            let mut counter = 0u64;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        _ => {
            eprintln!(
                "usage: kv-cli set KEY VALUE | get KEY | delete KEY | list [PREFIX] | exit CODE | spin"
            );
            exit(2);
        }
    }
}

fn fail(error: store::Error) -> ! {
    eprintln!("kv-cli: {error:?}");
    exit(2);
}

/// Exits with `code`: std's `exit` on wasip2 can only say 0 or 1.
fn exit(code: u8) -> ! {
    std::io::stdout().flush().unwrap();
    std::io::stderr().flush().unwrap();
    wasi::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned");
}
