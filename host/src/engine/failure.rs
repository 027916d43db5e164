//! Typed outcomes of an invocation: every way a guest call can fail has a stable code.

use serde::Serialize;

/// A stable, machine-readable failure code. These strings are part of Corral's
/// contract: they appear in `corral call --json`, run events and the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The fuel budget ran out (a CPU-bound guest).
    BudgetExhausted,
    /// The wall-clock deadline passed (a slow guest, or one blocked in a host call).
    DeadlineExceeded,
    /// The guest needed more linear memory than it may have.
    MemoryLimit,
    /// The guest exhausted the wasm call stack.
    StackOverflow,
    /// The guest tried to hand the host more data than the output cap.
    OutputTooLarge,
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    Trap,
    /// The bytes are not a loadable Corral plugin.
    InvalidComponent,
    /// The input (or the guest's own `invalid-input` answer) was not acceptable.
    InvalidInput,
    /// The guest returned a `plugin-error` (transient or permanent).
    PluginError,
    /// The invocation was cancelled from outside.
    Cancelled,
    /// Tables, instances or handles beyond the sandbox's caps.
    ResourceLimit,
    /// Compiling the component took longer than the host waits.
    CompileTimeout,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `BUDGET_EXHAUSTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BudgetExhausted => "BUDGET_EXHAUSTED",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::MemoryLimit => "MEMORY_LIMIT",
            ErrorCode::StackOverflow => "STACK_OVERFLOW",
            ErrorCode::OutputTooLarge => "OUTPUT_TOO_LARGE",
            ErrorCode::Trap => "TRAP",
            ErrorCode::InvalidComponent => "INVALID_COMPONENT",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::PluginError => "PLUGIN_ERROR",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ResourceLimit => "RESOURCE_LIMIT",
            ErrorCode::CompileTimeout => "COMPILE_TIMEOUT",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a guest's `plugin-error` is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// The guest said `transient`: the same call may succeed later.
    Transient,
    /// Anything else: retrying would fail the same way.
    Permanent,
}

/// Why an invocation did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for people. Never contains host secrets or paths.
    pub message: String,
    /// Set for `PLUGIN_ERROR`: whether the guest called it transient.
    pub retry: Retry,
}

impl Failure {
    /// A failure that retrying will not fix.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            retry: Retry::Permanent,
        }
    }

    /// A guest-reported failure that may go away on retry.
    pub fn transient(message: impl Into<String>) -> Self {
        Failure {
            code: ErrorCode::PluginError,
            message: message.into(),
            retry: Retry::Transient,
        }
    }

    /// `INVALID_COMPONENT` with a reason.
    pub fn invalid_component(message: impl Into<String>) -> Self {
        Failure::new(ErrorCode::InvalidComponent, message)
    }

    /// `INVALID_INPUT` with a reason.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Failure::new(ErrorCode::InvalidInput, message)
    }

    /// The failure with its message cut to [`MAX_MESSAGE`] bytes (a guest chooses its
    /// error text, and the host stores and streams it).
    pub fn bounded(mut self) -> Self {
        if self.message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            self.message.truncate(end);
            self.message.push_str("… (message cut at 16 KiB)");
        }
        self
    }
}

/// The longest failure message kept, in bytes.
pub const MAX_MESSAGE: usize = 16 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn res_17_a_failure_message_is_cut_at_its_cap() {
        let f = Failure::transient("é".repeat(MAX_MESSAGE)).bounded();
        assert!(f.message.len() <= MAX_MESSAGE + 64, "{}", f.message.len());
        assert!(f.message.ends_with("(message cut at 16 KiB)"));
        assert_eq!(f.retry, Retry::Transient);
        let short = Failure::invalid_input("short").bounded();
        assert_eq!(short.message, "short");
    }
}
