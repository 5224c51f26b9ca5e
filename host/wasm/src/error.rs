//! What can go wrong loading or calling a component.

use hightower_engine::ConfigError;

/// An error of the WebAssembly host. A guest that misbehaves (runs too
/// long, grows too much memory, passes too much data, traps or panics) is
/// one of the `Timeout`, `MemoryLimit`, `HostcallDataLimit` or `Trap`
/// variants; the instance that did it has been discarded and the next call
/// gets a fresh one.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("component {component}: not a valid component: {message}")]
    Compile { component: String, message: String },
    #[error("component {component}: cannot be linked or instantiated: {message}")]
    Instantiate { component: String, message: String },
    #[error("component {component}: no export {export:?} of the expected type: {message}")]
    Export {
        component: String,
        export: String,
        message: String,
    },
    #[error(
        "component {component}: call to {export} stopped after its time limit of {limit_ms} ms"
    )]
    Timeout {
        component: String,
        export: String,
        limit_ms: u64,
    },
    #[error(
        "component {component}: call to {export} stopped: memory would grow to {desired_bytes} bytes, over the limit of {limit_bytes} bytes"
    )]
    MemoryLimit {
        component: String,
        export: String,
        limit_bytes: u64,
        desired_bytes: u64,
    },
    #[error(
        "component {component}: call to {export} stopped: it passed more than {limit_bytes} bytes into one host call"
    )]
    HostcallDataLimit {
        component: String,
        export: String,
        limit_bytes: usize,
    },
    #[error("component {component}: call to {export} trapped: {trap}{}", stderr.as_ref().map(|l| format!(" (last stderr lines: {l})")).unwrap_or_default())]
    Trap {
        component: String,
        export: String,
        /// Wasmtime's description of the trap, without the backtrace.
        trap: String,
        /// The guest's last few lines on stderr, e.g. its panic message.
        stderr: Option<String>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl WasmError {
    /// Whether the guest misbehaved (as opposed to a host or setup problem).
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            WasmError::Timeout { .. }
                | WasmError::MemoryLimit { .. }
                | WasmError::HostcallDataLimit { .. }
                | WasmError::Trap { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_faults_are_told_from_host_problems() {
        let timeout = WasmError::Timeout {
            component: "c".into(),
            export: "e".into(),
            limit_ms: 5,
        };
        assert!(timeout.is_guest_fault());
        assert_eq!(
            timeout.to_string(),
            "component c: call to e stopped after its time limit of 5 ms"
        );
        let trap = WasmError::Trap {
            component: "c".into(),
            export: "e".into(),
            trap: "unreachable".into(),
            stderr: Some("panicked at boom".into()),
        };
        assert!(trap.is_guest_fault());
        assert!(
            trap.to_string()
                .ends_with("(last stderr lines: panicked at boom)")
        );
        let compile = WasmError::Compile {
            component: "c".into(),
            message: "bad magic".into(),
        };
        assert!(!compile.is_guest_fault());
        let io = WasmError::Io {
            context: "read c".into(),
            source: std::io::Error::other("gone"),
        };
        assert!(!io.is_guest_fault());
    }
}
