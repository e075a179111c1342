//! Incremental cursors (dlt's `incremental`): the request parameter a resource's start value
//! fills, how cursor values compare, and the state a partition leaves for the next run.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use paginate::JsonPath;

/// An endpoint's `incremental` section as written (dlt's keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Where each record's cursor value is (`received_at`, `meta.updated`).
    pub cursor_path: String,
    /// The start value of the first run (and of a `--full-refresh`). Default: none, so the
    /// first run sends no start parameter and fetches everything.
    #[serde(default)]
    pub initial_value: Option<Value>,
    /// The end of a backfill window: sent as `end_param`; a run with an end value neither
    /// reads nor advances the stored cursor (dlt's rule), so backfills never disturb it.
    #[serde(default)]
    pub end_value: Option<Value>,
    /// The query parameter that carries the start value (`filters[event.since][][value]`).
    #[serde(default)]
    pub start_param: Option<String>,
    /// The query parameter that carries the end value.
    #[serde(default)]
    pub end_param: Option<String>,
    /// The order rows come in by cursor (`asc` or `desc`): lets a paging stop at the first
    /// page past the window when the API cannot filter. Default: unknown, no early stop.
    #[serde(default)]
    pub row_order: Option<RowOrder>,
}

/// The order of rows by cursor value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// A checked incremental cursor.
#[derive(Debug, Clone)]
pub struct Incremental {
    /// Where each record's cursor value is.
    pub cursor_path: JsonPath,
    /// The start value when there is no state.
    pub initial_value: Option<String>,
    /// The end of a backfill window.
    pub end_value: Option<String>,
    /// The parameter the start value goes into.
    pub start_param: Option<String>,
    /// The parameter the end value goes into.
    pub end_param: Option<String>,
    /// The order rows come in.
    pub row_order: Option<RowOrder>,
}

impl IncrementalConfig {
    /// Checks the section; the message says which key is wrong.
    pub(crate) fn compile(&self) -> Result<Incremental, (String, String)> {
        let cursor_path =
            JsonPath::parse(&self.cursor_path).map_err(|m| ("cursor_path".to_owned(), m))?;
        let scalar = |key: &str, v: &Option<Value>| -> Result<Option<String>, (String, String)> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err((
                    key.to_owned(),
                    format!("expected a string or a number, got {other}"),
                )),
            }
        };
        let initial_value = scalar("initial_value", &self.initial_value)?;
        let end_value = scalar("end_value", &self.end_value)?;
        if end_value.is_some() && initial_value.is_none() {
            return Err((
                "end_value".to_owned(),
                "a backfill window needs `initial_value` as its start".to_owned(),
            ));
        }
        if let (Some(a), Some(b)) = (&initial_value, &end_value)
            && compare_cursors(a, b) == Ordering::Greater
        {
            return Err((
                "end_value".to_owned(),
                format!("`{b}` is before initial_value `{a}`"),
            ));
        }
        if end_value.is_some() && self.end_param.is_none() && self.row_order.is_none() {
            return Err((
                "end_value".to_owned(),
                "needs `end_param` (the API filters) or `row_order` (the paging stops)".to_owned(),
            ));
        }
        Ok(Incremental {
            cursor_path,
            initial_value,
            end_value,
            start_param: self.start_param.clone(),
            end_param: self.end_param.clone(),
            row_order: self.row_order,
        })
    }
}

/// The placeholder of the start value in a query parameter (dlt's form).
pub(crate) const START_PLACEHOLDER: &str = "{incremental.start_value}";
/// The placeholder of the end value in a query parameter.
pub(crate) const END_PLACEHOLDER: &str = "{incremental.end_value}";

/// Checks the `{incremental.…}` placeholders of a query parameter's value: only the start
/// and end values are known, and only with an `incremental` section.
pub(crate) fn check_placeholders(value: &str, has_incremental: bool) -> Result<(), String> {
    let mut rest = value;
    while let Some(at) = rest.find("{incremental.") {
        let tail = &rest[at..];
        let known = [START_PLACEHOLDER, END_PLACEHOLDER]
            .into_iter()
            .find(|p| tail.starts_with(p));
        let Some(placeholder) = known else {
            let end = tail.find('}').map_or(tail.len(), |e| e + 1);
            return Err(format!(
                "unknown placeholder `{}`: use {START_PLACEHOLDER} or {END_PLACEHOLDER}",
                &tail[..end]
            ));
        };
        if !has_incremental {
            return Err(format!(
                "`{placeholder}` needs an `incremental` section in the endpoint"
            ));
        }
        rest = &tail[placeholder.len()..];
    }
    Ok(())
}

/// A query parameter's value with its placeholders filled; `None` when one has no value
/// (a first run without `initial_value`, a run without `end_value`): the parameter is not
/// sent then, so the API applies no bound.
pub(crate) fn fill_placeholders(
    value: &str,
    start: Option<&str>,
    end: Option<&str>,
) -> Option<String> {
    let mut out = value.to_owned();
    for (placeholder, filled) in [(START_PLACEHOLDER, start), (END_PLACEHOLDER, end)] {
        if out.contains(placeholder) {
            out = out.replace(placeholder, filled?);
        }
    }
    Some(out)
}

/// Compares two cursor values: as instants when both are RFC 3339 timestamps (any offset,
/// any precision), as numbers when both are numbers, else as strings.
pub fn compare_cursors(a: &str, b: &str) -> Ordering {
    use chrono::DateTime;
    if let (Ok(x), Ok(y)) = (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    a.cmp(b)
}

/// The later of two optional cursor values.
pub fn max_cursor(a: Option<String>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if compare_cursors(&a, b) == Ordering::Less => Some(b.to_owned()),
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_owned),
    }
}

/// A record's cursor value as text (a string as is, a number in its JSON form).
pub fn cursor_of<'a>(
    record: json_tape::Value<'a>,
    path: &JsonPath,
) -> Option<std::borrow::Cow<'a, str>> {
    path.find(record)?.as_key_text()
}

/// What one (resource, partition) leaves for the next run: the stored cursor and, while a
/// paging is unfinished, where it goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The start value of the next run (the latest cursor value of the last finished
    /// paging, or the initial value); `None` for a resource without a cursor.
    pub cursor: Option<String>,
    /// The URL of the next page of an unfinished paging (credentials removed); the next run
    /// starts there instead of at the first page.
    pub resume_url: Option<String>,
    /// The latest cursor value of the pages already landed from the unfinished paging.
    pub resume_cursor: Option<String>,
    /// How many pages of the unfinished paging have landed, so that page numbers in errors
    /// go on counting when the next run resumes it.
    #[serde(default)]
    pub resume_page: Option<u64>,
}

impl PartitionState {
    /// Whether a paging is unfinished.
    pub fn is_resumable(&self) -> bool {
        self.resume_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_compare_as_instants_not_strings() {
        // The same instant in two offsets, and a shorter string that is later.
        assert_eq!(
            compare_cursors("2026-01-01T10:00:00+02:00", "2026-01-01T08:00:00Z"),
            Ordering::Equal
        );
        assert_eq!(
            compare_cursors("2026-01-01T08:00:00.5Z", "2026-01-01T08:00:00.123456Z"),
            Ordering::Greater
        );
        assert_eq!(compare_cursors("9", "10"), Ordering::Less);
        assert_eq!(compare_cursors("b", "a"), Ordering::Greater);
        assert_eq!(
            max_cursor(
                Some("2026-01-02T00:00:00Z".into()),
                Some("2026-01-01T23:00:00-02:00")
            ),
            Some("2026-01-01T23:00:00-02:00".into())
        );
        assert_eq!(max_cursor(None, None), None);
    }

    #[test]
    fn placeholders_are_filled_or_their_parameter_left_out() {
        let start = Some("2026-01-01T00:00:00Z");
        assert_eq!(
            fill_placeholders("{incremental.start_value}", start, None).as_deref(),
            start
        );
        assert_eq!(
            fill_placeholders("lastSeen:>{incremental.start_value}", start, None).as_deref(),
            Some("lastSeen:>2026-01-01T00:00:00Z")
        );
        assert_eq!(
            fill_placeholders("{incremental.end_value}", start, None),
            None
        );
        assert_eq!(
            fill_placeholders("{incremental.start_value}", None, None),
            None
        );
        assert_eq!(
            fill_placeholders("plain", None, None).as_deref(),
            Some("plain")
        );
        assert!(check_placeholders("a {incremental.start_value} b", true).is_ok());
        let unknown = check_placeholders("{incremental.last_value}", true).unwrap_err();
        assert!(unknown.contains("`{incremental.last_value}`"), "{unknown}");
        let alone = check_placeholders("{incremental.end_value}", false).unwrap_err();
        assert!(alone.contains("needs an `incremental` section"), "{alone}");
    }

    #[test]
    fn a_backfill_window_is_checked() {
        let cfg = |initial: Option<&str>, end: Option<&str>| IncrementalConfig {
            cursor_path: "received_at".into(),
            initial_value: initial.map(|s| Value::String(s.into())),
            end_value: end.map(|s| Value::String(s.into())),
            start_param: Some("since".into()),
            end_param: Some("before".into()),
            row_order: None,
        };
        assert!(
            cfg(Some("2026-01-01T00:00:00Z"), Some("2026-02-01T00:00:00Z"))
                .compile()
                .is_ok()
        );
        let (key, message) = cfg(None, Some("2026-02-01T00:00:00Z"))
            .compile()
            .unwrap_err();
        assert_eq!(key, "end_value");
        assert!(message.contains("initial_value"), "{message}");
        let (_, message) = cfg(Some("2026-03-01T00:00:00Z"), Some("2026-02-01T00:00:00Z"))
            .compile()
            .unwrap_err();
        assert!(message.contains("before initial_value"), "{message}");
    }
}
