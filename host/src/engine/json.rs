//! The `json` type's boundary check: size first, then syntax and nesting depth.

use super::failure::Failure;

/// The deepest nesting (arrays and objects) accepted anywhere on the boundary.
pub const MAX_DEPTH: usize = 128;

/// Checks that `text` is at most `max_bytes` long and is JSON nested at most
/// [`MAX_DEPTH`] levels deep. The size is checked before any parsing, and the
/// depth is checked by a scan that uses no recursion, so hostile input can neither
/// make the host allocate nor overflow its stack.
pub fn check(what: &str, text: &str, max_bytes: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!(
            "{what} is {} bytes, more than the limit of {max_bytes}",
            text.len()
        ));
    }
    let depth = max_depth(text);
    if depth > MAX_DEPTH {
        return Err(format!("{what} nests deeper than {MAX_DEPTH} levels"));
    }
    // Depth is known to be bounded, so serde_json's recursive parser is safe here.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// Checks input JSON, mapping a problem to `INVALID_INPUT`.
pub fn check_input(what: &str, text: &str, max_bytes: usize) -> Result<(), Failure> {
    check(what, text, max_bytes).map_err(Failure::invalid_input)
}

/// The maximum bracket nesting of `text`, ignoring brackets inside strings.
fn max_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn accepts_depth_128_and_refuses_129() {
        assert!(check("input", &nested(128), 1 << 20).is_ok());
        let err = check("input", &nested(129), 1 << 20).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
    }

    #[test]
    fn res_12_deeply_nested_json_is_refused_without_recursion() {
        // A million levels would overflow a recursive parser's stack.
        let err = check("input", &nested(1_000_000), 8 << 20).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check("input", &text, 1 << 20).is_ok());
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let err = check("output", "\"0123456789\"", 5).unwrap_err();
        assert!(err.contains("more than the limit of 5"), "{err}");
    }

    #[test]
    fn invalid_json_is_named() {
        let err = check("input", "{\"a\": }", 100).unwrap_err();
        assert!(err.starts_with("input is not valid JSON"), "{err}");
    }
}
