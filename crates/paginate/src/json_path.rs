//! Dotted JSON paths (`data`, `meta.next`, `items.0.id`) used by data selectors and paginators.

use std::fmt;

use serde_json::Value;

/// A path into a JSON document: keys (and list indexes) separated by dots; `$` or the empty
/// string is the document itself. A leading `$.` is accepted, as in JSONPath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    raw: String,
    parts: Vec<String>,
}

impl JsonPath {
    /// Parses a dotted path; an empty segment (`a..b`) is an error.
    pub fn parse(raw: &str) -> Result<JsonPath, String> {
        let trimmed = raw.trim();
        let body = trimmed
            .strip_prefix("$.")
            .unwrap_or(if trimmed == "$" { "" } else { trimmed });
        let parts: Vec<String> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('.').map(str::to_owned).collect()
        };
        if parts.iter().any(String::is_empty) {
            return Err(format!("`{raw}` has an empty segment"));
        }
        Ok(JsonPath {
            raw: raw.to_owned(),
            parts,
        })
    }

    /// The value at the path, if present.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.parts.iter().try_fold(value, |v, part| match v {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// The value at the path in a parsed page, if present.
    pub fn find<'a>(&self, value: json_tape::Value<'a>) -> Option<json_tape::Value<'a>> {
        self.parts.iter().try_fold(value, |v, part| match v.kind() {
            json_tape::Kind::Object => v.get(part),
            json_tape::Kind::Array => part.parse::<usize>().ok().and_then(|i| v.elements().nth(i)),
            _ => None,
        })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::JsonPath;

    #[test]
    fn paths_find_values_in_trees_and_tapes() {
        let doc = json!({"data": [1, 2], "meta": {"next": "u"}, "items": [{"id": 7}]});
        assert_eq!(
            JsonPath::parse("meta.next").unwrap().get(&doc),
            Some(&json!("u"))
        );
        assert_eq!(
            JsonPath::parse("$.items.0.id").unwrap().get(&doc),
            Some(&json!(7))
        );
        assert_eq!(JsonPath::parse("$").unwrap().get(&doc), Some(&doc.clone()));
        let tape = json_tape::Document::from_serde(&doc).unwrap();
        let found = JsonPath::parse("$.items.0.id").unwrap().find(tape.root());
        assert_eq!(found.map(|v| v.to_json()), Some("7".to_owned()));
        assert!(
            JsonPath::parse("meta.none")
                .unwrap()
                .find(tape.root())
                .is_none()
        );
        assert!(JsonPath::parse("a..b").is_err());
    }
}
