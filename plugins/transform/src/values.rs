//! Pure helpers: column-name normalisation, value parsing and type inference.

use serde::{Deserialize, Serialize};

/// The type of a column after inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColType {
    /// Whole numbers (JSON integers).
    Integer,
    /// Any finite number (JSON numbers).
    Number,
    /// `true`/`false` (also `yes`/`no`, any case).
    Boolean,
    /// A calendar date written `YYYY-MM-DD` (kept as that string).
    Date,
    /// Anything else (trimmed text).
    String,
}

impl ColType {
    /// Whether values of this type are JSON numbers.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColType::Integer | ColType::Number)
    }

    /// How the type is described in messages.
    pub fn describe(self) -> &'static str {
        match self {
            ColType::Integer => "integer",
            ColType::Number => "number",
            ColType::Boolean => "boolean",
            ColType::Date => "date (YYYY-MM-DD)",
            ColType::String => "string",
        }
    }
}

/// `Order ID` -> `order_id`, `unitPrice` -> `unit_price`, `HTTPServer` -> `http_server`.
/// Returns an empty string when the name has no letters or digits.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    let mut pending_sep = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            pending_sep = true;
            continue;
        }
        if c.is_uppercase() {
            let prev = i.checked_sub(1).and_then(|j| chars.get(j));
            let next = chars.get(i + 1);
            let after_lower = prev.is_some_and(|p| p.is_lowercase() || p.is_numeric());
            let acronym_end =
                prev.is_some_and(|p| p.is_uppercase()) && next.is_some_and(|n| n.is_lowercase());
            if after_lower || acronym_end {
                pending_sep = true;
            }
        }
        if pending_sep && !out.is_empty() {
            out.push('_');
        }
        pending_sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// The digits after an optional sign must not have a superfluous leading zero
/// (`007`, `-01.5`): such values are identifiers, not numbers.
fn has_leading_zero(unsigned: &str) -> bool {
    let mut chars = unsigned.chars();
    chars.next() == Some('0') && chars.next().is_some_and(|c| c.is_ascii_digit())
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['+', '-']).unwrap_or(s)
}

/// A whole number such as `42`, `-7` or `+3`.
pub fn parse_integer(s: &str) -> Option<i64> {
    let digits = strip_sign(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || has_leading_zero(digits)
    {
        return None;
    }
    s.strip_prefix('+').unwrap_or(s).parse().ok()
}

/// A finite decimal number such as `3.5`, `-0.25`, `1e3` (not `inf`, `NaN`, `0x10`).
pub fn parse_number(s: &str) -> Option<f64> {
    let unsigned = strip_sign(s);
    if !unsigned.chars().any(|c| c.is_ascii_digit())
        || !unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        || has_leading_zero(unsigned)
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `true`/`false`/`yes`/`no`, in any case.
pub fn parse_boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// A real calendar date written `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_digit());
    if !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Picks a column's type from its (trimmed, non-empty) values: the first of number,
/// boolean and date that at least `threshold` (0..=1) of the values parse as, else
/// string. A numeric column is `integer` when all its numeric values are whole.
pub fn infer_type<'a>(values: impl IntoIterator<Item = &'a str>, threshold: f64) -> ColType {
    let (mut total, mut ints, mut nums, mut bools, mut dates) = (0usize, 0usize, 0, 0, 0);
    for v in values {
        total += 1;
        if parse_integer(v).is_some() {
            ints += 1;
        }
        if parse_number(v).is_some() {
            nums += 1;
        }
        if parse_boolean(v).is_some() {
            bools += 1;
        }
        if is_date(v) {
            dates += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let enough = |n: usize| n > 0 && n as f64 >= threshold * total as f64;
    if enough(nums) {
        if ints == nums {
            ColType::Integer
        } else {
            ColType::Number
        }
    } else if enough(bools) {
        ColType::Boolean
    } else if enough(dates) {
        ColType::Date
    } else {
        ColType::String
    }
}

/// Converts one trimmed, non-empty value to `ty`; `None` when it does not parse.
pub fn convert(s: &str, ty: ColType) -> Option<serde_json::Value> {
    use serde_json::Value;
    match ty {
        ColType::Integer => parse_integer(s).map(Value::from),
        ColType::Number => parse_number(s).map(Value::from),
        ColType::Boolean => parse_boolean(s).map(Value::Bool),
        ColType::Date => is_date(s).then(|| Value::String(s.to_string())),
        ColType::String => Some(Value::String(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Order ID"), "order_id");
        assert_eq!(snake_case("unitPrice"), "unit_price");
        assert_eq!(snake_case("UnitPrice"), "unit_price");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("  order-date "), "order_date");
        assert_eq!(snake_case("e-mail__address"), "e_mail_address");
        assert_eq!(snake_case("already_snake"), "already_snake");
        assert_eq!(snake_case("qty2"), "qty2");
        assert_eq!(snake_case("Größe"), "größe");
        assert_eq!(snake_case("%%"), "");
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("-7"), Some(-7));
        assert_eq!(parse_integer("+3"), Some(3));
        assert_eq!(parse_integer("0"), Some(0));
        assert_eq!(parse_integer("007"), None);
        assert_eq!(parse_integer("1.5"), None);
        assert_eq!(parse_integer(""), None);
        assert_eq!(parse_integer("-"), None);
        assert_eq!(parse_integer("99999999999999999999"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("19.99"), Some(19.99));
        assert_eq!(parse_number("-0.5"), Some(-0.5));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number("12"), Some(12.0));
        assert_eq!(parse_number("n/a"), None);
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("1e999"), None);
        assert_eq!(parse_number("01.5"), None);
        assert_eq!(parse_number("."), None);
        assert_eq!(parse_number("1.2.3"), None);
    }

    #[test]
    fn booleans_and_dates() {
        assert_eq!(parse_boolean("TRUE"), Some(true));
        assert_eq!(parse_boolean("no"), Some(false));
        assert_eq!(parse_boolean("1"), None);
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(is_date("2000-02-29"));
        assert!(!is_date("1900-02-29"));
        assert!(!is_date("2024-13-01"));
        assert!(!is_date("2024-04-31"));
        assert!(!is_date("2024-4-01"));
        assert!(!is_date("24-04-01"));
        assert!(!is_date("2024-04-01-01"));
        assert!(!is_date("2024/04/01"));
    }

    #[test]
    fn inference() {
        assert_eq!(infer_type(["1", "2", "-3"], 0.8), ColType::Integer);
        assert_eq!(infer_type(["1", "2.5"], 0.8), ColType::Number);
        assert_eq!(
            infer_type(["1.5", "2", "3", "4", "n/a"], 0.8),
            ColType::Number
        );
        assert_eq!(infer_type(["1", "n/a"], 0.8), ColType::String);
        assert_eq!(infer_type(["yes", "No", "true"], 0.8), ColType::Boolean);
        assert_eq!(infer_type(["2024-01-01", "2024-12-31"], 0.8), ColType::Date);
        assert_eq!(infer_type(["alice", "bob"], 0.8), ColType::String);
        assert_eq!(infer_type(["007", "012"], 0.8), ColType::String);
        assert_eq!(infer_type([], 0.8), ColType::String);
        assert_eq!(infer_type(["1", "x"], 0.5), ColType::Integer);
    }

    #[test]
    fn conversion() {
        assert_eq!(convert("5", ColType::Integer), Some(json!(5)));
        assert_eq!(convert("5", ColType::Number), Some(json!(5.0)));
        assert_eq!(convert("n/a", ColType::Number), None);
        assert_eq!(convert("Yes", ColType::Boolean), Some(json!(true)));
        assert_eq!(
            convert("2024-01-05", ColType::Date),
            Some(json!("2024-01-05"))
        );
        assert_eq!(convert("2024-01-32", ColType::Date), None);
        assert_eq!(convert("x", ColType::String), Some(json!("x")));
    }
}
