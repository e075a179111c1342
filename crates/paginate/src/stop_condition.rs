//! `stop_condition`: a Jinja expression over the last response that ends the paging when true.

use std::fmt;
use std::sync::{Arc, LazyLock};

use http::HeaderMap;
use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value as JinjaValue};
use minijinja::{Environment, UndefinedBehavior};

/// The environment expressions are compiled in: Python-compatible methods (`headers.get`,
/// `str.split`, ...) so that expressions written for dlt or Airbyte work as written.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
});

/// A compiled `stop_condition`. In scope: `headers` (the response headers, looked up
/// case-insensitively; a repeated header's values are joined with `, `), `response` (the
/// parsed body) and `last_page` (the page's records).
#[derive(Clone)]
pub struct StopCondition {
    source: String,
    expression: Arc<minijinja::Expression<'static, 'static>>,
    /// Whether the expression names `response`.
    uses_response: bool,
    /// Whether the expression names `last_page`.
    uses_last_page: bool,
}

impl fmt::Debug for StopCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StopCondition").field(&self.source).finish()
    }
}

impl PartialEq for StopCondition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl StopCondition {
    /// Compiles an expression; a surrounding `{{ ... }}` (Airbyte's form) is accepted. The
    /// expression is also tried on an empty response, so that a mistake shows at config time.
    pub fn compile(source: &str) -> Result<StopCondition, String> {
        let trimmed = source.trim();
        let inner = trimmed
            .strip_prefix("{{")
            .and_then(|s| s.strip_suffix("}}"))
            .unwrap_or(trimmed)
            .trim()
            .to_owned();
        let expression = ENV
            .compile_expression_owned(inner)
            .map_err(|e| format!("`{source}` is not an expression: {e}"))?;
        let variables = expression.undeclared_variables(false);
        let condition = StopCondition {
            source: source.to_owned(),
            uses_response: variables.contains("response"),
            uses_last_page: variables.contains("last_page"),
            expression: Arc::new(expression),
        };
        condition.evaluate(
            &HeaderMap::new(),
            &serde_json::Value::Object(serde_json::Map::new()),
            &serde_json::Value::Array(Vec::new()),
        )?;
        Ok(condition)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads the page body (`response`).
    pub fn reads_response(&self) -> bool {
        self.uses_response
    }

    /// Whether the expression reads the page's records (`last_page`).
    pub fn reads_last_page(&self) -> bool {
        self.uses_last_page
    }

    /// Whether the paging must stop after this response.
    pub fn evaluate(
        &self,
        headers: &HeaderMap,
        response: &serde_json::Value,
        last_page: &serde_json::Value,
    ) -> Result<bool, String> {
        // Converting a page body for the template engine costs more than parsing it, so a
        // body goes into scope only when the expression names it.
        let body = |used: bool, value: &serde_json::Value| {
            if used {
                JinjaValue::from(Serde(value))
            } else {
                JinjaValue::UNDEFINED
            }
        };
        let ctx = minijinja::context! {
            headers => JinjaValue::from_object(HeadersView::new(headers)),
            response => body(self.uses_response, response),
            last_page => body(self.uses_last_page, last_page),
        };
        let value = self
            .expression
            .eval(ctx)
            .map_err(|e| format!("`{}` failed: {e}", self.source))?;
        Ok(value.is_true())
    }
}

/// Response headers as a case-insensitive map for expressions.
#[derive(Debug)]
struct HeadersView {
    /// Lower-cased names with their values (repeated headers joined).
    entries: Vec<(String, String)>,
}

impl HeadersView {
    fn new(headers: &HeaderMap) -> Self {
        let mut entries: Vec<(String, String)> = Vec::new();
        for name in headers.keys() {
            let joined = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            entries.push((name.as_str().to_ascii_lowercase(), joined));
        }
        HeadersView { entries }
    }
}

impl Object for HeadersView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        let key = key.as_str()?.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| JinjaValue::from(v.clone()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.entries
                .iter()
                .map(|(k, _)| JinjaValue::from(k.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use serde_json::json;

    use super::StopCondition;

    const SEED: &str = r#"not headers.get('Link') or 'rel="next"' not in headers.get('Link')"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_seed_condition_stops_without_a_next_link() {
        let c = StopCondition::compile(SEED).unwrap();
        let none = json!([]);
        assert!(c.evaluate(&headers(&[]), &json!(null), &none).unwrap());
        assert!(
            !c.evaluate(
                &headers(&[("link", "<https://a/x?offset=2>; rel=\"next\"")]),
                &json!(null),
                &none
            )
            .unwrap()
        );
        assert!(
            c.evaluate(
                &headers(&[("link", "<https://a/x?offset=0>; rel=\"prev\"")]),
                &json!(null),
                &none
            )
            .unwrap()
        );
    }

    #[test]
    fn airbyte_braces_and_response_and_last_page_are_in_scope() {
        let c =
            StopCondition::compile("{{ response.meta.done or last_page | length == 0 }}").unwrap();
        assert!(
            c.evaluate(&headers(&[]), &json!({"meta": {"done": true}}), &json!([1]))
                .unwrap()
        );
        assert!(
            !c.evaluate(
                &headers(&[]),
                &json!({"meta": {"done": false}}),
                &json!([1])
            )
            .unwrap()
        );
        assert!(
            c.evaluate(&headers(&[]), &json!({"meta": {}}), &json!([]))
                .unwrap()
        );
    }

    #[test]
    fn a_broken_expression_is_refused_at_compile_time() {
        let err = StopCondition::compile("not headers.get('Link'").unwrap_err();
        assert!(err.contains("is not an expression"), "{err}");
    }
}
