//! A small, forgiving CSV parser (RFC 4180 plus the usual real-world leniency).
//!
//! - Fields may be quoted with `"`; inside quotes the delimiter, CR and LF are literal
//!   and `""` stands for one `"`.
//! - Records end with LF, CRLF or a lone CR (outside quotes).
//! - Whitespace before an opening quote is ignored (`a, "b, c"` is two fields).
//! - A quote in the middle of an unquoted field is kept literally, and text after a
//!   closing quote is appended to the field.
//! - Completely empty lines are skipped. A leading UTF-8 byte-order mark is ignored.
//! - A quoted field still open at the end of the text makes that last record an error
//!   (reported, not fatal).

/// One record as read from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The 1-based line on which the record starts.
    pub line: usize,
    /// The record's fields, unquoted.
    pub fields: Vec<String>,
    /// Set when the record could not be read completely.
    pub error: Option<String>,
}

/// Splits `text` into records. Never fails: problems are attached to the record.
pub fn parse(text: &str, delimiter: char) -> Vec<RawRecord> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();

    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    // Whether the current field started with a quote.
    let mut quoted = false;
    // Whether anything of the current record was seen (to tell empty lines apart).
    let mut record_started = false;

    let mut end_record = |fields: &mut Vec<String>,
                          field: &mut String,
                          record_started: &mut bool,
                          record_line: usize| {
        if *record_started {
            fields.push(std::mem::take(field));
            records.push(RawRecord {
                line: record_line,
                fields: std::mem::take(fields),
                error: None,
            });
        }
        field.clear();
        fields.clear();
        *record_started = false;
    };

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' => {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        in_quotes = false;
                    }
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                '\r' => {
                    // CRLF (or a lone CR) inside quotes is one line break.
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                        field.push('\r');
                        field.push('\n');
                    } else {
                        field.push('\r');
                    }
                    line += 1;
                }
                _ => field.push(c),
            }
            continue;
        }

        if c == delimiter {
            record_started = true;
            fields.push(std::mem::take(&mut field));
            quoted = false;
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            end_record(&mut fields, &mut field, &mut record_started, record_line);
            quoted = false;
            line += 1;
            record_line = line;
        } else if c == '"' && !quoted && field.chars().all(|f| f == ' ' || f == '\t') {
            // An opening quote, possibly after some padding, which is dropped.
            field.clear();
            in_quotes = true;
            quoted = true;
            record_started = true;
        } else {
            field.push(c);
            record_started = true;
        }
    }

    if in_quotes {
        fields.push(field);
        records.push(RawRecord {
            line: record_line,
            fields,
            error: Some(format!(
                "unterminated quoted field (opened on or after line {record_line})"
            )),
        });
    } else {
        end_record(&mut fields, &mut field, &mut record_started, record_line);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        parse(text, ',').into_iter().map(|r| r.fields).collect()
    }

    #[test]
    fn simple_records() {
        assert_eq!(
            fields("a,b,c\n1,2,3\n"),
            vec![vec!["a", "b", "c"], vec!["1", "2", "3"]]
        );
    }

    #[test]
    fn last_record_without_newline() {
        assert_eq!(fields("a,b\n1,2"), vec![vec!["a", "b"], vec!["1", "2"]]);
    }

    #[test]
    fn quoted_field_with_delimiter_and_doubled_quotes() {
        let got = fields("name,note\n\"Smith, Jane\",\"she said \"\"hi\"\"\"\n");
        assert_eq!(got[1], vec!["Smith, Jane", "she said \"hi\""]);
    }

    #[test]
    fn crlf_line_endings() {
        let recs = parse("a,b\r\n1,2\r\n3,4\r\n", ',');
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].fields, vec!["3", "4"]);
        assert_eq!(recs[2].line, 3);
        assert!(
            recs.iter()
                .all(|r| r.fields.iter().all(|f| !f.contains('\r')))
        );
    }

    #[test]
    fn lone_cr_line_endings() {
        assert_eq!(fields("a,b\r1,2"), vec![vec!["a", "b"], vec!["1", "2"]]);
    }

    #[test]
    fn newline_inside_quotes_and_line_numbers() {
        let recs = parse("a,b\n\"multi\nline\",x\ny,z\n", ',');
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].fields, vec!["multi\nline", "x"]);
        assert_eq!(recs[1].line, 2);
        assert_eq!(recs[2].line, 4);
    }

    #[test]
    fn empty_fields_and_quoted_empty() {
        assert_eq!(fields(",\"\",x,\n"), vec![vec!["", "", "x", ""]]);
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let recs = parse("a\n\n\nb\n", ',');
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].fields, vec!["b"]);
        assert_eq!(recs[1].line, 4);
    }

    #[test]
    fn other_delimiters() {
        assert_eq!(parse("a;b,c", ';')[0].fields, vec!["a", "b,c"]);
        assert_eq!(parse("a\tb", '\t')[0].fields, vec!["a", "b"]);
    }

    #[test]
    fn padding_before_quote_is_dropped() {
        assert_eq!(fields("a, \"b, c\""), vec![vec!["a", "b, c"]]);
    }

    #[test]
    fn stray_quote_inside_unquoted_field_is_literal() {
        assert_eq!(fields("5\" pipe,x"), vec![vec!["5\" pipe", "x"]]);
    }

    #[test]
    fn bom_is_ignored() {
        assert_eq!(fields("\u{feff}a,b"), vec![vec!["a", "b"]]);
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let recs = parse("a,b\n1,\"oops\n2,3\n", ',');
        assert_eq!(recs.len(), 2);
        assert!(recs[0].error.is_none());
        assert!(
            recs[1]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("unterminated")
        );
        assert_eq!(recs[1].line, 2);
    }

    #[test]
    fn crlf_inside_quotes_is_kept() {
        assert_eq!(fields("\"a\r\nb\",c\r\n"), vec![vec!["a\r\nb", "c"]]);
    }
}
