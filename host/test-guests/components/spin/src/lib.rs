//! A guest that never returns from `spin`: the host's per-call time limit
//! must stop it. `ping` writes and reads a key, so a test can check that a
//! fresh instance works afterwards.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
});

use hightower::kv::store::{self, Namespace};

struct Spin;

impl Guest for Spin {
    fn call(command: String, _arg: Vec<u8>) -> Result<Vec<u8>, String> {
        match command.as_str() {
            "ping" => ping(),
            "spin" => {
                let mut counter = 0u64;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            other => Err(format!("unknown command {other}")),
        }
    }
}

export!(Spin);

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
