//! A guest whose `bomb` allocates (and touches) memory until something stops
//! it: the host's linear-memory limit. `ping` writes and reads a key.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
});

use hightower::kv::store::{self, Namespace};

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn call(command: String, _arg: Vec<u8>) -> Result<Vec<u8>, String> {
        match command.as_str() {
            "ping" => ping(),
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xa5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            other => Err(format!("unknown command {other}")),
        }
    }
}

export!(MemoryBomb);

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
