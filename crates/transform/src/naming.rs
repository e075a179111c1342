//! The snake_case naming convention for tables and columns, after dlt's `snake_case`.
//!
//! Differences from dlt, on purpose: letters outside ASCII are kept (lowercased) instead of
//! being replaced by `_`, so `é-ünïcode` becomes `é_ünïcode` and not `_n_code`;
//! an empty key becomes `_empty` instead of an error.

/// The separator between nesting levels in table and column names.
pub const PATH_SEPARATOR: &str = "__";

/// Normalizes one identifier (a JSON key or a resource name) to snake_case.
///
/// Rules, applied in order: `+`, `*` become `x`, `@` becomes `a`, `|` becomes `l`,
/// `-` and `.` become `_`; every other character that is not a letter, a digit or `_`
/// becomes `_`; camelCase is split (`errorClass` -> `error_class`,
/// `HTTPServer` -> `http_server`); letters are lowercased; a leading digit gets a `_`
/// prefix; trailing `_` become `x`; runs of `_` collapse to one.
pub fn normalize_identifier(identifier: &str) -> String {
    let trimmed = identifier.trim();
    if trimmed.is_empty() {
        return "_empty".to_owned();
    }
    let reduced: Vec<char> = trimmed
        .chars()
        .map(|c| match c {
            '+' | '*' => 'x',
            '@' => 'a',
            '|' => 'l',
            c if c.is_alphanumeric() || c == '_' => c,
            _ => '_',
        })
        .collect();

    // Split camelCase: before an upper-case letter that follows a lower-case letter or digit,
    // and before the last upper-case letter of a run that is followed by a lower-case letter.
    let mut out = String::with_capacity(reduced.len() + 4);
    for (i, &c) in reduced.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = reduced[i - 1];
            let next_is_lower = reduced.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev != '_'
                && (prev.is_lowercase()
                    || prev.is_numeric()
                    || (prev.is_uppercase() && next_is_lower))
            {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }

    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    let stripped_len = out.trim_end_matches('_').len();
    let n_trailing = out.len() - stripped_len;
    out.truncate(stripped_len);
    out.extend(std::iter::repeat_n('x', n_trailing));

    collapse_underscores(&out)
}

fn collapse_underscores(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_underscore = false;
    for c in s.chars() {
        if c == '_' {
            if !prev_underscore {
                out.push(c);
            }
            prev_underscore = true;
        } else {
            out.push(c);
            prev_underscore = false;
        }
    }
    out
}

/// Joins normalized path components with [`PATH_SEPARATOR`].
pub fn join_path(parent: &str, child: &str) -> String {
    let mut s = String::with_capacity(parent.len() + PATH_SEPARATOR.len() + child.len());
    s.push_str(parent);
    s.push_str(PATH_SEPARATOR);
    s.push_str(child);
    s
}

#[cfg(test)]
mod tests {
    use super::normalize_identifier;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        assert_eq!(normalize_identifier(input), expect, "input: {input:?}");
    }

    #[test]
    fn camel_case_is_split() {
        check("errorClass", "error_class");
        check("receivedAt", "received_at");
        check("metaData", "meta_data");
        check("HTTPServer", "http_server");
        check("lineNumber", "line_number");
        check("totalMemory2", "total_memory2");
    }

    #[test]
    fn snake_case_is_kept() {
        check("error_class", "error_class");
        check("id", "id");
        check("_dlt_id", "_dlt_id");
    }

    #[test]
    fn punctuation_and_spaces_become_underscores() {
        check("event.type", "event_type");
        check("a.b.c", "a_b_c");
        check("Content-Type", "content_type");
        check("my key", "my_key");
        check("a  --  b", "a_b");
        check("user@host", "userahost");
    }

    #[test]
    fn leading_digits_and_trailing_underscores() {
        check("2fa", "_2fa");
        check("value_", "valuex");
        check("__a", "_a");
    }

    #[test]
    fn non_ascii_letters_are_kept() {
        check("é-ünïcode", "é_ünïcode");
        check("Größe", "größe");
        check("имяПользователя", "имя_пользователя");
        check("名前", "名前");
    }

    #[test]
    fn empty_key_has_a_name() {
        check("", "_empty");
        check("   ", "_empty");
    }
}
