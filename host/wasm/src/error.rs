//! What can go wrong loading or calling a component.

use hightower_engine::ConfigError;

/// An error of the WebAssembly host. A guest that misbehaves (runs too
/// long, grows too much memory, passes too much data, traps or panics) is
/// one of the `Timeout`, `MemoryLimit`, `HostcallDataLimit` or `Trap`
/// variants ([`WasmError::is_guest_fault`]); the instance that did it has
/// been discarded and the next call gets a fresh one.
///
/// Every variant about a component names it (`component`: the name it was
/// loaded with) and, for a call, the export called (`export`;
/// `"(instantiation)"` when it failed while starting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// A sandbox setting or a namespace is invalid; the error names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bytes are not a valid WebAssembly component.
    #[error("component {component}: not a valid component: {message}")]
    Compile {
        /// The component's name.
        component: String,
        /// Wasmtime's explanation.
        message: String,
    },
    /// The component imports something the host does not provide, or it
    /// failed while starting (a trap in its initialisers).
    #[error("component {component}: cannot be linked or instantiated: {message}")]
    Instantiate {
        /// The component's name.
        component: String,
        /// Wasmtime's explanation, or the trap.
        message: String,
    },
    /// The component has no export of that name and type.
    #[error("component {component}: no export {export:?} of the expected type: {message}")]
    Export {
        /// The component's name.
        component: String,
        /// The export asked for.
        export: String,
        /// Wasmtime's explanation (for example the type it found).
        message: String,
    },
    /// The call ran past `call_timeout_ms` and was stopped.
    #[error(
        "component {component}: call to {export} stopped after its time limit of {limit_ms} ms"
    )]
    Timeout {
        /// The component's name.
        component: String,
        /// The export called.
        export: String,
        /// The time limit, `call_timeout_ms`.
        limit_ms: u64,
    },
    /// The guest tried to grow a linear memory past `max_memory_bytes`.
    #[error(
        "component {component}: call to {export} stopped: memory would grow to {desired_bytes} bytes, over the limit of {limit_bytes} bytes"
    )]
    MemoryLimit {
        /// The component's name.
        component: String,
        /// The export called.
        export: String,
        /// The limit, `max_memory_bytes`.
        limit_bytes: u64,
        /// The size the memory would have grown to.
        desired_bytes: u64,
    },
    /// The guest passed more data into one host call than the largest
    /// legal request ([`crate::Extension::max_hostcall_bytes`]); the data
    /// was refused before it was copied.
    #[error(
        "component {component}: call to {export} stopped: it passed more than {limit_bytes} bytes into one host call"
    )]
    HostcallDataLimit {
        /// The component's name.
        component: String,
        /// The export called.
        export: String,
        /// The most bytes one host call accepts.
        limit_bytes: usize,
    },
    /// The guest trapped (`unreachable`, a Rust panic, an out-of-bounds
    /// access, a stack overflow...).
    #[error("component {component}: call to {export} trapped: {trap}{}", stderr.as_ref().map(|l| format!(" (last stderr lines: {l})")).unwrap_or_default())]
    Trap {
        /// The component's name.
        component: String,
        /// The export called.
        export: String,
        /// Wasmtime's description of the trap, without the backtrace.
        trap: String,
        /// The guest's last few lines on stderr, e.g. its panic message.
        stderr: Option<String>,
    },
    /// The host could not do its part: create the wasmtime engine, the
    /// cache directory or the epoch ticker thread.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing.
        context: String,
        /// The underlying error.
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
