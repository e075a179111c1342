//! Paginators as pure state machines: given the request just made and its response, the next
//! URL or the end.

use std::collections::HashSet;

use http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::json_path::JsonPath;
use crate::stop_condition::StopCondition;

/// A paginator as written in a pipeline file (`endpoint.paginator`), with dlt's names.
///
/// Defaults follow dlt's where they are safe. Where dlt's are traps, ours differ:
/// - `offset` and `page_number` have no `total_path` by default (dlt's `total` fails on APIs
///   that do not send a total); without one, an empty page ends the paging;
/// - `page_number` starts at page 1 (dlt: 0, which many APIs answer like page 1, so the first
///   page would be loaded twice);
/// - `cursor` with `cursor_param = "Link"` reads the Link header per RFC 8288 instead of
///   taking the header's first URL (which is Sentry's `rel="previous"`);
/// - a next URL seen before in the same paging is an error, not a loop.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginatorConfig {
    /// A cursor. With `cursor_param = "Link"` (the seed's form) the next URL is the `Link`
    /// header's `rel="next"` target; otherwise the cursor is read from the body at
    /// `cursor_path` and sent as the query parameter `cursor_param`.
    Cursor {
        /// `Link` for the Link header, or the query parameter that carries the cursor.
        /// Default: `cursor`.
        #[serde(default = "default_cursor_param")]
        cursor_param: String,
        /// Where the next cursor is in the body (body cursors only). Default: `cursors.next`.
        #[serde(default = "default_cursor_path")]
        cursor_path: String,
        /// The page size, sent as `page_size_param` unless the endpoint's params set it.
        #[serde(default)]
        limit: Option<u64>,
        /// The query parameter of the page size. Default: `per_page`.
        #[serde(default = "default_page_size_param")]
        page_size_param: String,
        /// A Jinja expression over `headers`, `response` and `last_page`: true ends the paging.
        #[serde(default)]
        stop_condition: Option<String>,
    },
    /// The next URL from the `Link` header (RFC 8288).
    HeaderLink {
        /// The relation of the next page. Default: `next`.
        #[serde(default = "default_links_next_key")]
        links_next_key: String,
        /// The page size, sent as `page_size_param` unless the endpoint's params set it.
        #[serde(default)]
        limit: Option<u64>,
        /// The query parameter of the page size. Default: `per_page`.
        #[serde(default = "default_page_size_param")]
        page_size_param: String,
    },
    /// The next URL from the body at `next_url_path`; paging ends when it is missing or null.
    JsonLink {
        /// Where the next URL is.
        next_url_path: String,
    },
    /// `offset` and `limit` query parameters.
    Offset {
        /// The page size.
        limit: u64,
        /// The first offset. Default: 0.
        #[serde(default)]
        offset: u64,
        /// Default: `offset`.
        #[serde(default = "default_offset_param")]
        offset_param: String,
        /// Default: `limit`.
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Where the total count is in the body, if the API gives it. Default: none.
        #[serde(default)]
        total_path: Option<String>,
        /// Stop before this offset. Default: none.
        #[serde(default)]
        maximum_offset: Option<u64>,
        /// An empty page ends the paging. Default: true. With false, `total_path` or
        /// `maximum_offset` must say where the end is.
        #[serde(default = "default_true")]
        stop_after_empty_page: bool,
    },
    /// A page number query parameter.
    PageNumber {
        /// The first page's number. Default: 1.
        #[serde(default = "default_base_page")]
        base_page: u64,
        /// Default: `page`.
        #[serde(default = "default_page_param")]
        page_param: String,
        /// Where the total number of pages is in the body, if the API gives it.
        #[serde(default)]
        total_path: Option<String>,
        /// Stop after this page. Default: none.
        #[serde(default)]
        maximum_page: Option<u64>,
        /// An empty page ends the paging. Default: true. With false, `total_path` or
        /// `maximum_page` must say where the end is.
        #[serde(default = "default_true")]
        stop_after_empty_page: bool,
    },
    /// One request, no paging.
    SinglePage,
}

fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_cursor_path() -> String {
    "cursors.next".into()
}
fn default_page_size_param() -> String {
    "per_page".into()
}
fn default_links_next_key() -> String {
    "next".into()
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_true() -> bool {
    true
}
fn default_base_page() -> u64 {
    1
}
fn default_page_param() -> String {
    "page".into()
}

/// How the next page is found: the checked form of a [`PaginatorConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// The `Link` header's target with this relation (RFC 8288), optionally ended early by a
    /// stop condition. Sentry's `results="false"` on the next link ends the paging too.
    Link {
        /// The relation of the next page (`next`).
        rel: String,
        /// True ends the paging.
        stop_condition: Option<StopCondition>,
    },
    /// A cursor from the body sent back as a query parameter.
    BodyCursor {
        /// Where the cursor is.
        cursor_path: JsonPath,
        /// The query parameter.
        cursor_param: String,
        /// True ends the paging.
        stop_condition: Option<StopCondition>,
    },
    /// The next URL from the body.
    JsonLink {
        /// Where the next URL is.
        next_url_path: JsonPath,
    },
    /// Offset and limit parameters.
    Offset {
        /// The page size.
        limit: u64,
        /// The first offset.
        offset: u64,
        /// The offset parameter.
        offset_param: String,
        /// The limit parameter.
        limit_param: String,
        /// Where the total is.
        total_path: Option<JsonPath>,
        /// Stop before this offset.
        maximum_offset: Option<u64>,
        /// An empty page ends the paging.
        stop_after_empty_page: bool,
    },
    /// A page number parameter.
    PageNumber {
        /// The first page.
        base_page: u64,
        /// The page parameter.
        page_param: String,
        /// Where the number of pages is.
        total_path: Option<JsonPath>,
        /// Stop after this page.
        maximum_page: Option<u64>,
        /// An empty page ends the paging.
        stop_after_empty_page: bool,
    },
    /// One request.
    SinglePage,
}

impl Strategy {
    /// The stop condition, for the strategies that take one.
    pub fn stop_condition(&self) -> Option<&StopCondition> {
        match self {
            Strategy::Link { stop_condition, .. } | Strategy::BodyCursor { stop_condition, .. } => {
                stop_condition.as_ref()
            }
            _ => None,
        }
    }
}

/// A paginator setting that cannot work: which field of the paginator's section, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    /// The field (`limit`, `cursor_path`, `stop_condition`, `stop_after_empty_page`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SettingError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        SettingError {
            field,
            message: message.into(),
        }
    }
}

/// The query parameters a paginator adds to the first request.
pub type FirstRequestParams = Vec<(String, String)>;

impl PaginatorConfig {
    /// Checks the config; an error names the paginator's field it is about.
    pub fn compile(&self) -> Result<(Strategy, FirstRequestParams), SettingError> {
        let page_size_params = |limit: &Option<u64>, param: &String| {
            Ok::<_, SettingError>(
                page_size(limit)?
                    .map(|l| vec![(param.clone(), l.to_string())])
                    .unwrap_or_default(),
            )
        };
        Ok(match self {
            PaginatorConfig::Cursor {
                cursor_param,
                cursor_path,
                limit,
                page_size_param,
                stop_condition,
            } => {
                let strategy = if cursor_param.eq_ignore_ascii_case("link") {
                    Strategy::Link {
                        rel: "next".into(),
                        stop_condition: stop(stop_condition)?,
                    }
                } else {
                    Strategy::BodyCursor {
                        cursor_path: path("cursor_path", cursor_path)?,
                        cursor_param: cursor_param.clone(),
                        stop_condition: stop(stop_condition)?,
                    }
                };
                (strategy, page_size_params(limit, page_size_param)?)
            }
            PaginatorConfig::HeaderLink {
                links_next_key,
                limit,
                page_size_param,
            } => (
                Strategy::Link {
                    rel: links_next_key.clone(),
                    stop_condition: None,
                },
                page_size_params(limit, page_size_param)?,
            ),
            PaginatorConfig::JsonLink { next_url_path } => (
                Strategy::JsonLink {
                    next_url_path: path("next_url_path", next_url_path)?,
                },
                Vec::new(),
            ),
            PaginatorConfig::Offset { .. } => self.compile_offset()?,
            PaginatorConfig::PageNumber { .. } => self.compile_page_number()?,
            PaginatorConfig::SinglePage => (Strategy::SinglePage, Vec::new()),
        })
    }

    fn compile_offset(&self) -> Result<(Strategy, FirstRequestParams), SettingError> {
        let PaginatorConfig::Offset {
            limit,
            offset,
            offset_param,
            limit_param,
            total_path,
            maximum_offset,
            stop_after_empty_page,
        } = self
        else {
            unreachable!("called for an offset paginator only")
        };
        page_size(&Some(*limit))?;
        if !stop_after_empty_page && total_path.is_none() && maximum_offset.is_none() {
            return Err(SettingError::new(
                "stop_after_empty_page",
                "false needs total_path or maximum_offset, or the paging never ends",
            ));
        }
        let strategy = Strategy::Offset {
            limit: *limit,
            offset: *offset,
            offset_param: offset_param.clone(),
            limit_param: limit_param.clone(),
            total_path: total_path
                .as_deref()
                .map(|p| path("total_path", p))
                .transpose()?,
            maximum_offset: *maximum_offset,
            stop_after_empty_page: *stop_after_empty_page,
        };
        let params = vec![
            (offset_param.clone(), offset.to_string()),
            (limit_param.clone(), limit.to_string()),
        ];
        Ok((strategy, params))
    }

    fn compile_page_number(&self) -> Result<(Strategy, FirstRequestParams), SettingError> {
        let PaginatorConfig::PageNumber {
            base_page,
            page_param,
            total_path,
            maximum_page,
            stop_after_empty_page,
        } = self
        else {
            unreachable!("called for a page number paginator only")
        };
        if !stop_after_empty_page && total_path.is_none() && maximum_page.is_none() {
            return Err(SettingError::new(
                "stop_after_empty_page",
                "false needs total_path or maximum_page, or the paging never ends",
            ));
        }
        let strategy = Strategy::PageNumber {
            base_page: *base_page,
            page_param: page_param.clone(),
            total_path: total_path
                .as_deref()
                .map(|p| path("total_path", p))
                .transpose()?,
            maximum_page: *maximum_page,
            stop_after_empty_page: *stop_after_empty_page,
        };
        Ok((strategy, vec![(page_param.clone(), base_page.to_string())]))
    }
}

/// A paginator's `limit`, checked.
fn page_size(limit: &Option<u64>) -> Result<Option<u64>, SettingError> {
    limit
        .map(|l| check_page_size(&l.to_string()).map_err(|e| SettingError::new("limit", e)))
        .transpose()
}

/// A paginator's `stop_condition`, compiled.
fn stop(source: &Option<String>) -> Result<Option<StopCondition>, SettingError> {
    source
        .as_deref()
        .map(StopCondition::compile)
        .transpose()
        .map_err(|e| SettingError::new("stop_condition", e))
}

/// A path field of a paginator, parsed.
fn path(field: &'static str, raw: &str) -> Result<JsonPath, SettingError> {
    JsonPath::parse(raw).map_err(|e| SettingError::new(field, e))
}

/// What comes after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Fetch this URL, exactly as given.
    Url(Url),
    /// The paging is done.
    Stop,
}

/// The paging state of one (resource, partition): feed it each response, get the next URL.
#[derive(Debug)]
pub struct Paginator {
    strategy: Strategy,
    /// Offsets and page numbers advance here.
    position: u64,
    /// The URLs fetched in this paging, as 128-bit hashes ([`url_hash`]): 16 bytes a page
    /// instead of the URL and its allocation, which over a long paging pinned the
    /// allocator's pages between short-lived allocations.
    seen: HashSet<u128>,
}

/// A URL's hash for [`Paginator`]'s loop check: 128 bits, so that two URLs of one paging
/// meet by chance about never.
fn url_hash(url: &Url) -> u128 {
    xxhash_rust::xxh3::xxh3_128(url.as_str().as_bytes())
}

/// A reason the paging cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingProblem {
    /// The next URL was fetched before in this paging: following it would loop.
    Repeated(String),
    /// The Link header or the next URL could not be read.
    Malformed(String),
    /// The stop condition failed.
    StopCondition(String),
}

impl Paginator {
    /// A paginator at the start of a paging.
    pub fn new(strategy: Strategy) -> Self {
        let position = match &strategy {
            Strategy::Offset { offset, .. } => *offset,
            Strategy::PageNumber { base_page, .. } => *base_page,
            _ => 0,
        };
        Paginator {
            strategy,
            position,
            seen: HashSet::new(),
        }
    }

    /// Whether an empty page may be followed by more (offset and page-number paging told
    /// not to stop at one); otherwise an empty page with a next URL ends the paging.
    pub fn continues_past_empty_pages(&self) -> bool {
        matches!(
            self.strategy,
            Strategy::Offset {
                stop_after_empty_page: false,
                ..
            } | Strategy::PageNumber {
                stop_after_empty_page: false,
                ..
            }
        )
    }

    /// The next step after `url` answered `headers` and `body`, whose records are `records`
    /// (for callers holding `serde_json` values; [`Paginator::next_in`] reads a parsed page).
    pub fn next(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        body: &Value,
        records: &Value,
    ) -> Result<Next, PagingProblem> {
        let malformed = |e: json_tape::Problem| PagingProblem::Malformed(e.to_string());
        let body = json_tape::Document::from_serde(body).map_err(malformed)?;
        let records = json_tape::Document::from_serde(records).map_err(malformed)?;
        self.next_in(url, headers, body.root(), records.root())
    }

    /// Whether the strategy's `stop_condition` (if any) ends the paging after this response.
    fn stop_condition_holds(
        &self,
        headers: &HeaderMap,
        body: json_tape::Value<'_>,
        records: json_tape::Value<'_>,
    ) -> Result<bool, PagingProblem> {
        let Some(c) = self.strategy.stop_condition() else {
            return Ok(false);
        };
        // A tree of the body only for an expression that reads it.
        let as_value = |used: bool, v: json_tape::Value<'_>| {
            if used { v.to_serde() } else { Value::Null }
        };
        let response = as_value(c.reads_response(), body);
        let last_page = as_value(c.reads_last_page(), records);
        c.evaluate(headers, &response, &last_page)
            .map_err(PagingProblem::StopCondition)
    }

    /// The next step after `url` answered `headers` and `body` (a parsed page), whose
    /// records are `records`. Only what the strategy names is read from the body.
    pub fn next_in(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        body: json_tape::Value<'_>,
        records: json_tape::Value<'_>,
    ) -> Result<Next, PagingProblem> {
        self.seen.insert(url_hash(url));
        let n_records = match records.kind() {
            json_tape::Kind::Array => records.len() as u64,
            _ => 0,
        };
        if self.stop_condition_holds(headers, body, records)? {
            return Ok(Next::Stop);
        }
        let next = match &self.strategy {
            Strategy::SinglePage => Next::Stop,
            Strategy::Link { rel, .. } => match next_link(headers, url, rel)? {
                Some(u) => Next::Url(u),
                None => Next::Stop,
            },
            Strategy::BodyCursor {
                cursor_path,
                cursor_param,
                ..
            } => body_cursor_next(url, cursor_path, cursor_param, body),
            Strategy::JsonLink { next_url_path } => json_link_next(url, next_url_path, body)?,
            Strategy::Offset {
                limit,
                offset_param,
                total_path,
                maximum_offset,
                stop_after_empty_page,
                ..
            } => {
                let total = total_path
                    .as_ref()
                    .and_then(|p| p.find(body))
                    .and_then(as_u64);
                self.position += limit;
                let past_total = total.is_some_and(|t| self.position >= t);
                let past_max = maximum_offset.is_some_and(|m| self.position >= m);
                if (n_records == 0 && *stop_after_empty_page) || past_total || past_max {
                    Next::Stop
                } else {
                    Next::Url(with_param(url, offset_param, &self.position.to_string()))
                }
            }
            Strategy::PageNumber {
                page_param,
                total_path,
                maximum_page,
                base_page,
                stop_after_empty_page,
            } => {
                let total_pages = total_path
                    .as_ref()
                    .and_then(|p| p.find(body))
                    .and_then(as_u64);
                self.position += 1;
                let pages_done = self.position - base_page;
                let past_total = total_pages.is_some_and(|t| pages_done >= t);
                let past_max = maximum_page.is_some_and(|m| self.position > m);
                if (n_records == 0 && *stop_after_empty_page) || past_total || past_max {
                    Next::Stop
                } else {
                    Next::Url(with_param(url, page_param, &self.position.to_string()))
                }
            }
        };
        if let Next::Url(u) = &next
            && self.seen.contains(&url_hash(u))
        {
            return Err(PagingProblem::Repeated(u.as_str().to_owned()));
        }
        Ok(next)
    }
}

/// The next URL of a body cursor: the request's URL with the cursor found in the body as
/// `cursor_param`; no cursor (missing, null or empty) is the end.
fn body_cursor_next(
    url: &Url,
    cursor_path: &JsonPath,
    cursor_param: &str,
    body: json_tape::Value<'_>,
) -> Next {
    match cursor_path.find(body) {
        None => Next::Stop,
        Some(cursor) if cursor.is_null() => Next::Stop,
        Some(cursor) => match cursor.as_str() {
            Some(s) if s.is_empty() => Next::Stop,
            Some(s) => Next::Url(with_param(url, cursor_param, &s)),
            None => Next::Url(with_param(url, cursor_param, &cursor.to_json())),
        },
    }
}

/// The next URL found in the body (relative ones resolved against the request's URL); none
/// (missing, null or empty) is the end, anything but a string a malformed response.
fn json_link_next(
    url: &Url,
    next_url_path: &JsonPath,
    body: json_tape::Value<'_>,
) -> Result<Next, PagingProblem> {
    match next_url_path.find(body) {
        None => Ok(Next::Stop),
        Some(next) if next.is_null() => Ok(Next::Stop),
        Some(next) => match next.as_str() {
            Some(s) if s.is_empty() => Ok(Next::Stop),
            Some(s) => url
                .join(&s)
                .map(Next::Url)
                .map_err(|e| PagingProblem::Malformed(format!("next URL `{s}`: {e}"))),
            None => Err(PagingProblem::Malformed(format!(
                "next URL is {}, not a string",
                next.to_json()
            ))),
        },
    }
}

fn as_u64(v: json_tape::Value<'_>) -> Option<u64> {
    match v.as_number() {
        Some(json_tape::Number::Int(i)) => u64::try_from(i).ok(),
        Some(json_tape::Number::UInt(u)) => Some(u),
        Some(_) => None,
        None => v.as_str().and_then(|s| s.trim().parse().ok()),
    }
}

/// `url` with the query parameter `name` set to `value` (replaced if present).
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let mut next = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    next.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    next
}

/// The target of the first link with relation `rel` in the `Link` headers, resolved against
/// the request URL; `None` when there is none, or when it says `results="false"` (Sentry).
pub fn next_link(
    headers: &HeaderMap,
    request_url: &Url,
    rel: &str,
) -> Result<Option<Url>, PagingProblem> {
    for value in headers.get_all(http::header::LINK) {
        let text = value
            .to_str()
            .map_err(|_| PagingProblem::Malformed("Link header is not text".into()))?;
        let links = http_link::parse_link_header(text, request_url)
            .map_err(|e| PagingProblem::Malformed(format!("Link header `{text}`: {e}")))?;
        for link in links {
            if !link.rel.eq_ignore_ascii_case(rel) {
                continue;
            }
            let no_results = link.attributes.iter().any(|p| {
                p.name.eq_ignore_ascii_case("results") && p.value.eq_ignore_ascii_case("false")
            });
            if no_results {
                return Ok(None);
            }
            return Ok(Some(link.target));
        }
    }
    Ok(None)
}

/// The largest page size accepted in a pipeline file: APIs cap theirs far below (Bugsnag
/// 100, Sentry 100), so a larger one is a typo.
pub const MAX_PAGE_SIZE: u64 = 10_000;

/// Checks a page size as written in a pipeline file (a paginator's `limit`, a `per_page`
/// parameter): a whole number from 1 to [`MAX_PAGE_SIZE`].
pub fn check_page_size(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "a page size is a whole number from 1 to {MAX_PAGE_SIZE}, got `{value}`"
        )),
    }
}
