//! A guest that panics (`panic`, after writing a line to stdout) or executes
//! `unreachable` (`trap`). Panics abort on wasm, so both trap in the host.
//! `ping` writes and reads a key.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
});

use hightower::kv::store::{self, Namespace};

struct Panicky;

impl Guest for Panicky {
    fn call(command: String, _arg: Vec<u8>) -> Result<Vec<u8>, String> {
        match command.as_str() {
            "ping" => ping(),
            "panic" => {
                println!("about to panic");
                panic!("guest panicked on purpose");
            }
            "trap" => core::arch::wasm32::unreachable(),
            other => Err(format!("unknown command {other}")),
        }
    }
}

export!(Panicky);

fn ping() -> Result<Vec<u8>, String> {
    let name = store::granted().remove(0);
    let ns = Namespace::open(&name).map_err(|e| format!("{e:?}"))?;
    ns.set(b"ping", b"pong").map_err(|e| format!("{e:?}"))?;
    Ok(ns
        .get(b"ping")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("ping absent")?
        .value)
}
