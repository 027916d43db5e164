//! The budgets one invocation runs under, and the resource limiter that enforces the
//! memory and table caps inside a Store.

use std::time::Duration;

/// Budgets for one invocation. Every field has a safe default; the CLI and
/// pipelines narrow or widen them within the host's hard caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions). `None` means unmetered, still bounded by `timeout`.
    pub fuel: Option<u64>,
    /// Wall-clock limit, including time blocked in host calls and clocks.
    pub timeout: Duration,
    /// Linear memory, summed over the component's memories, in bytes.
    pub memory_bytes: usize,
    /// Table elements per table.
    pub table_elements: usize,
    /// Core instances per component (a component is several core instances).
    pub instances: usize,
    /// Largest JSON input accepted, in bytes.
    pub max_input_bytes: usize,
    /// Largest output (JSON text, or the sum of a list's strings) the guest may return.
    pub max_output_bytes: usize,
    /// Bytes of log lines (stdout, stderr and `log`) kept per invocation.
    pub max_log_bytes: usize,
    /// Most bytes the guest may hand the host in one call (arguments of an import, or
    /// an export's results). Bounds what the host allocates on the guest's say-so.
    pub max_transfer_bytes: usize,
    /// Live handles (component resources, and host-side WASI resources such as open
    /// files and streams) a guest may hold at once.
    pub max_handles: usize,
    /// Bytes the guest may write under its scratch directory `/work` (see
    /// `capabilities::scratch`): past it, writes fail with `insufficient-space`.
    pub scratch_bytes: u64,
    /// Files, directories and links the guest may create there: past it, creating
    /// fails with `quota`.
    pub scratch_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Some(DEFAULT_FUEL),
            timeout: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            table_elements: 100_000,
            instances: 64,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
            max_log_bytes: 1 << 20,
            max_transfer_bytes: 32 << 20,
            max_handles: 10_000,
            scratch_bytes: crate::capabilities::scratch::DEFAULT_BYTES,
            scratch_entries: crate::capabilities::scratch::DEFAULT_ENTRIES,
        }
    }
}

/// About a second of CPU for typical guests.
pub const DEFAULT_FUEL: u64 = 2_000_000_000;

/// Parses sizes like `64MiB`, `512KiB`, `1GiB`, `1000000` (bytes) or `10MB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (use B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses durations like `5s`, `250ms`, `2m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

/// Enforces the memory and table caps and remembers whether it refused growth, so
/// a trap that follows a refusal is reported as `MEMORY_LIMIT`, not as a bare trap.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    /// Bytes currently committed across all memories of the store.
    in_use: usize,
    /// Set when a memory growth was refused.
    pub memory_refused: bool,
    /// Set when a table growth was refused.
    pub table_refused: bool,
}

impl Limiter {
    /// A limiter for `limits`.
    pub fn new(limits: &Limits) -> Self {
        Limiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            in_use: 0,
            memory_refused: false,
            table_refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.in_use.saturating_add(growth);
        if total > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        self.in_use = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.table_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64 mib").unwrap(), 64 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1_024KiB").unwrap(), 1 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
