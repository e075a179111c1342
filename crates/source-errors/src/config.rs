//! The source's part of a pipeline file: the client, resource defaults and resources, merged
//! and checked into a [`Source`] before any request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use http_core::{ApiKeyLocation, Auth, AuthConfig, ClientConfig, ClientSettings, Secret};
use paginate::{JsonPath, PaginatorConfig, Strategy};

use crate::incremental::{Incremental, IncrementalConfig};
use crate::secrets::{Secrets, secret_reference};
use crate::{ConfigError, Result, SourceError};

/// The source's keys of a pipeline file, after resource defaults are merged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The API client.
    pub client: ClientConfig,
    /// Values every resource starts from (deep-merged: a resource's own keys win).
    #[serde(default)]
    pub resource_defaults: Option<Value>,
    /// The resources.
    pub resources: Vec<Value>,
    /// How many requests may be in flight at once, over all resources. Default: 4.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    4
}

/// One resource as written, after the defaults are merged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The resource and root table name.
    pub name: String,
    /// Where and how to fetch it.
    pub endpoint: EndpointConfig,
    /// The primary key column. Default: none (required for merge).
    #[serde(default)]
    pub primary_key: Option<String>,
    /// `append`, `replace` or `merge`. Default: `append`.
    #[serde(default)]
    pub write_disposition: WriteDisposition,
    /// The table name, when it is not the resource name. Default: the resource name.
    #[serde(default)]
    pub table_name: Option<String>,
    /// Requests of this resource in flight at most, over all its partitions (within the
    /// source's `concurrency`). Default: no limit of its own.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// An endpoint as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The path after the base URL; may hold `{{ stream_partition['<key>'] }}` templates.
    pub path: String,
    /// Only GET is supported (the APIs are read). Default: GET.
    #[serde(default = "default_method")]
    pub method: String,
    /// Query parameters of the first request. A value `{type = "resolve", resource, field}`
    /// declares where the partition key of that name comes from, as in dlt.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Where the list of records is in the body (`data`); default: the body itself.
    #[serde(default)]
    pub data_selector: Option<String>,
    /// How to page. Default: a single page.
    #[serde(default)]
    pub paginator: Option<PaginatorConfig>,
    /// An incremental cursor: each run asks only for records after the last run's latest
    /// cursor value, kept per partition in the destination. Default: none.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
}

fn default_method() -> String {
    "GET".into()
}

pub use table_model::WriteDisposition;

/// Where a partition key's values come from: a field of the parent resource's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The partition key (`organization_id`).
    pub key: String,
    /// The parent resource (`organizations`).
    pub resource: String,
    /// The field of the parent's records (`id`), or a dotted path into them
    /// (`organization.slug`); a key that holds a dot as written is taken first.
    pub field: String,
    /// `field` as a path, parsed once.
    pub path: JsonPath,
}

impl ParentRef {
    /// Where key `key` comes from: `field` of `resource`'s records; an empty segment in the
    /// path is an error.
    pub fn new(key: &str, resource: &str, field: &str) -> std::result::Result<ParentRef, String> {
        Ok(ParentRef {
            key: key.to_owned(),
            resource: resource.to_owned(),
            field: field.to_owned(),
            path: JsonPath::parse(field)?,
        })
    }

    /// The key's value in a parent record, as text: the field as written, else the path.
    pub fn value_in<'a>(&self, record: json_tape::Value<'a>) -> Option<std::borrow::Cow<'a, str>> {
        record
            .get(&self.field)
            .or_else(|| self.path.find(record))
            .and_then(|v| v.as_key_text())
    }
}

/// A checked resource, ready to fetch.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource name.
    pub name: String,
    /// The root table name.
    pub table_name: String,
    /// The path template, as written.
    pub path_template: String,
    /// Query parameters of the first request (the paginator's page size included).
    pub params: Vec<(String, String)>,
    /// Where the records are.
    pub data_selector: Option<JsonPath>,
    /// How to page.
    pub strategy: Strategy,
    /// The primary key.
    pub primary_key: Option<String>,
    /// How rows land.
    pub write_disposition: WriteDisposition,
    /// The partition keys the path uses, with where they come from; the last is the direct
    /// parent, the others its ancestors.
    pub partition_keys: Vec<ParentRef>,
    /// Requests of this resource in flight at most.
    pub concurrency: Option<usize>,
    /// The incremental cursor, if any.
    pub incremental: Option<Incremental>,
}

impl Resource {
    /// The direct parent resource, for a child resource.
    pub fn parent(&self) -> Option<&ParentRef> {
        self.partition_keys.last()
    }
}

/// A checked source: the client settings and the resources in dependency order.
#[derive(Debug, Clone)]
pub struct Source {
    /// The client settings, secrets resolved.
    pub client: ClientSettings,
    /// The resources, parents before children.
    pub resources: Vec<Resource>,
    /// Requests in flight at most.
    pub concurrency: usize,
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
});

impl Source {
    /// Checks the source keys of a pipeline file. `file` names the file in errors.
    pub fn from_value(value: Value, file: &Path, secrets: &Secrets) -> Result<Source> {
        let top = KeyPath::new(file, String::new());
        let config: SourceConfig = deserialize(value, file, "")?;
        if config.concurrency == 0 {
            return Err(top.err("concurrency", "must be at least 1"));
        }
        let auth = config
            .client
            .auth
            .as_ref()
            .map(|a| resolve_auth(a, secrets))
            .transpose()
            .map_err(|(field, m)| top.err(&format!("client.auth.{field}"), m))?;
        let client = ClientSettings::from_config(&config.client, auth)
            .map_err(|e| top.err(&format!("client.{}", e.field), e.message))?;
        let configs = resource_configs(config.resources, config.resource_defaults.as_ref(), file)?;
        let names: Vec<String> = configs.iter().map(|r| r.name.clone()).collect();
        let resources = configs
            .iter()
            .enumerate()
            .map(|(i, rc)| {
                let at = KeyPath::new(file, format!("resources[{i}]"));
                compile_resource(rc, &at, &names, &client)
            })
            .collect::<Result<Vec<Resource>>>()?;
        let resources = order_by_parent(resources).map_err(|m| top.err("resources", m))?;
        Ok(Source {
            client,
            resources,
            concurrency: config.concurrency,
        })
    }

    /// A resource by name.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The resources whose direct parent is `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.parent().is_some_and(|p| p.resource == name))
    }

    /// The first URL of `resource` for a partition (partition key -> value), with no
    /// incremental bounds (parameters that hold a placeholder are left out).
    pub fn first_url(
        &self,
        resource: &Resource,
        partition: &BTreeMap<String, String>,
    ) -> Result<Url> {
        self.first_url_within(resource, partition, None, None)
    }

    /// [`Source::first_url`] with the incremental start and end values: each parameter's
    /// `{incremental.start_value}` and `{incremental.end_value}` filled, and a parameter
    /// whose placeholder has no value left out.
    pub fn first_url_within(
        &self,
        resource: &Resource,
        partition: &BTreeMap<String, String>,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Url> {
        // A value goes into the path as one segment: `/`, `?` and `#` are escaped, and a
        // value that cannot be a segment at all (URL parsers resolve `.` and `..` even when
        // escaped) fails its partition before anything is sent.
        if let Some((key, value)) = partition
            .iter()
            .find(|(_, v)| matches!(v.as_str(), "" | "." | ".."))
        {
            let parent = resource
                .partition_keys
                .iter()
                .find(|p| p.key == *key)
                .map_or_else(String::new, |p| {
                    format!(" (the `{}` of a `{}` record)", p.field, p.resource)
                });
            return Err(SourceError::Partition {
                resource: resource.name.clone(),
                message: format!(
                    "partition value `{value}` of `{key}`{parent} cannot be a path segment; nothing was sent for it"
                ),
            });
        }
        let values: BTreeMap<&str, String> = partition
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    percent_encoding::utf8_percent_encode(v, SEGMENT).to_string(),
                )
            })
            .collect();
        let path = render_path(&resource.path_template, &values).map_err(|message| {
            SourceError::Partition {
                resource: resource.name.clone(),
                message,
            }
        })?;
        let base = &self.client.base_url;
        let mut url = base.clone();
        let joined = format!(
            "{}/{}",
            base.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        let params: Vec<(&str, String)> = resource
            .params
            .iter()
            .filter_map(|(k, v)| {
                crate::incremental::fill_placeholders(v, start, end).map(|v| (k.as_str(), v))
            })
            .collect();
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }
}

/// Whether a base URL is Sentry's Web API: sentry.io and its regions, or a self-hosted
/// instance's `/api/0/`.
fn is_sentry(base_url: &Url) -> bool {
    base_url
        .host_str()
        .is_some_and(|h| h == "sentry.io" || h.ends_with(".sentry.io"))
        || base_url.path().starts_with("/api/0/")
}

/// Sentry's largest page: a larger `per_page` or `limit` is a 400 Bad Request.
const SENTRY_MAX_PAGE_SIZE: u64 = 100;

/// Where in a pipeline file a check is (`resources[1]`), so that its errors name the key
/// path.
struct KeyPath<'a> {
    file: &'a Path,
    prefix: String,
}

impl<'a> KeyPath<'a> {
    fn new(file: &'a Path, prefix: String) -> Self {
        KeyPath { file, prefix }
    }

    /// An error at `key` below this place.
    fn err(&self, key: &str, message: impl Into<String>) -> SourceError {
        let key_path = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        };
        SourceError::Config(ConfigError {
            file: self.file.to_path_buf(),
            key_path,
            message: message.into(),
        })
    }
}

/// Each resource with `resource_defaults` merged in (dlt's deep merge), checked; a name
/// declared twice is an error.
fn resource_configs(
    raw: Vec<Value>,
    defaults: Option<&Value>,
    file: &Path,
) -> Result<Vec<ResourceConfig>> {
    let mut configs: Vec<ResourceConfig> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let merged = match defaults {
            Some(defaults) => deep_merge(defaults.clone(), raw),
            None => raw,
        };
        let rc: ResourceConfig = deserialize(merged, file, &format!("resources[{i}]"))?;
        if configs.iter().any(|c| c.name == rc.name) {
            return Err(KeyPath::new(file, format!("resources[{i}]"))
                .err("name", format!("resource `{}` is declared twice", rc.name)));
        }
        configs.push(rc);
    }
    Ok(configs)
}

/// A resource's checked form: its parameters, partition keys and their parents, paginator,
/// incremental cursor and data selector. `names` are every resource of the source.
fn compile_resource(
    rc: &ResourceConfig,
    at: &KeyPath<'_>,
    names: &[String],
    client: &ClientSettings,
) -> Result<Resource> {
    if !rc.endpoint.method.eq_ignore_ascii_case("GET") {
        return Err(at.err(
            "endpoint.method",
            format!("only GET is supported, got `{}`", rc.endpoint.method),
        ));
    }
    if rc.concurrency == Some(0) {
        return Err(at.err("concurrency", "must be at least 1"));
    }
    if rc.write_disposition == WriteDisposition::Merge && rc.primary_key.is_none() {
        return Err(at.err("primary_key", "merge needs a primary key"));
    }
    let EndpointParams {
        sent: mut params,
        resolved,
    } = endpoint_params(rc, at, client)?;
    let keys = partition_keys(&rc.endpoint.path).map_err(|m| at.err("endpoint.path", m))?;
    let refs = partition_parents(rc, at, &keys, resolved, names)?;
    // The template must render with the keys it names.
    let probe: BTreeMap<&str, &str> = keys.iter().map(|k| (k.as_str(), "probe")).collect();
    render_path(&rc.endpoint.path, &probe).map_err(|m| at.err("endpoint.path", m))?;

    let (strategy, first_params) = match &rc.endpoint.paginator {
        Some(p) => p
            .compile()
            .map_err(|e| at.err(&format!("endpoint.paginator.{}", e.field), e.message))?,
        None => (Strategy::SinglePage, Vec::new()),
    };
    for (k, v) in first_params {
        if !params.iter().any(|(pk, _)| *pk == k) {
            check_sentry_page_size(&client.base_url, &v)
                .map_err(|m| at.err("endpoint.paginator.limit", m))?;
            params.push((k, v));
        }
    }
    let incremental = rc
        .endpoint
        .incremental
        .as_ref()
        .map(|i| {
            i.compile()
                .map_err(|(key, message)| at.err(&format!("endpoint.incremental.{key}"), message))
        })
        .transpose()?;
    check_incremental_params(&params, incremental.as_ref(), at)?;
    let data_selector = rc
        .endpoint
        .data_selector
        .as_deref()
        .map(JsonPath::parse)
        .transpose()
        .map_err(|m| at.err("endpoint.data_selector", m))?;
    Ok(Resource {
        name: rc.name.clone(),
        table_name: rc.table_name.clone().unwrap_or_else(|| rc.name.clone()),
        path_template: rc.endpoint.path.clone(),
        params,
        data_selector,
        strategy,
        primary_key: rc.primary_key.clone(),
        write_disposition: rc.write_disposition,
        partition_keys: refs,
        concurrency: rc.concurrency,
        incremental,
    })
}

/// A resource's parameters, read: those sent with every request, and the partition keys
/// declared as `{type = "resolve", ...}` parameters.
struct EndpointParams {
    sent: Vec<(String, String)>,
    resolved: HashMap<String, ParentRef>,
}

fn endpoint_params(
    rc: &ResourceConfig,
    at: &KeyPath<'_>,
    client: &ClientSettings,
) -> Result<EndpointParams> {
    let mut params = Vec::new();
    let mut declared: HashMap<String, ParentRef> = HashMap::new();
    for (k, v) in &rc.endpoint.params {
        let key = format!("endpoint.params.{k}");
        match v {
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("resolve") => {
                let get = |f: &str| o.get(f).and_then(Value::as_str).map(str::to_owned);
                let (Some(resource), Some(field)) = (get("resource"), get("field")) else {
                    return Err(at.err(&key, "a resolve param needs `resource` and `field`"));
                };
                let parent = ParentRef::new(k, &resource, &field)
                    .map_err(|m| at.err(&format!("{key}.field"), m))?;
                declared.insert(k.clone(), parent);
            }
            Value::String(_) | Value::Number(_) if PAGE_SIZE_PARAMS.contains(&k.as_str()) => {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                paginate::check_page_size(&text)
                    .and_then(|_| check_sentry_page_size(&client.base_url, &text))
                    .map_err(|m| at.err(&key, m))?;
                params.push((k.clone(), text));
            }
            Value::String(s) => params.push((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => params.push((k.clone(), v.to_string())),
            other => {
                return Err(at.err(
                    &key,
                    format!("expected a string, number or boolean, got {other}"),
                ));
            }
        }
    }
    Ok(EndpointParams {
        sent: params,
        resolved: declared,
    })
}

/// The parent of each partition key of a resource's path: declared, or inferred
/// (`organization_id` is `organizations.id`); a declared key the path does not use is an
/// error.
fn partition_parents(
    rc: &ResourceConfig,
    at: &KeyPath<'_>,
    keys: &[String],
    mut declared: HashMap<String, ParentRef>,
    names: &[String],
) -> Result<Vec<ParentRef>> {
    let mut refs = Vec::new();
    for key in keys {
        let parent = match declared.remove(key) {
            Some(p) => p,
            None => infer_parent(key, names).ok_or_else(|| {
                at.err("endpoint.path", format!("no resource provides partition key `{key}`: declare it as params.{key} = {{ type = \"resolve\", resource = \"...\", field = \"id\" }}"))
            })?,
        };
        if !names.contains(&parent.resource) {
            return Err(at.err(
                &format!("endpoint.params.{key}"),
                format!("unknown parent resource `{}`", parent.resource),
            ));
        }
        if parent.resource == rc.name {
            return Err(at.err(
                "endpoint.path",
                format!("`{key}` refers to the resource itself"),
            ));
        }
        refs.push(parent);
    }
    if let Some(k) = declared.keys().next() {
        return Err(at.err(
            &format!("endpoint.params.{k}"),
            format!("resolved param `{k}` is not used as stream_partition['{k}'] in the path"),
        ));
    }
    Ok(refs)
}

/// Parameters and the incremental cursor agree: a placeholder needs a cursor, and the
/// cursor's own parameters are not also written by hand.
fn check_incremental_params(
    params: &[(String, String)],
    incremental: Option<&Incremental>,
    at: &KeyPath<'_>,
) -> Result<()> {
    for (k, v) in params {
        crate::incremental::check_placeholders(v, incremental.is_some())
            .map_err(|m| at.err(&format!("endpoint.params.{k}"), m))?;
    }
    if let Some(i) = incremental {
        for (key, param) in [("start_param", &i.start_param), ("end_param", &i.end_param)] {
            if let Some(p) = param
                && params.iter().any(|(k, _)| k == p)
            {
                return Err(at.err(
                    &format!("endpoint.incremental.{key}"),
                    format!("`{p}` is also in endpoint.params; the cursor fills it"),
                ));
            }
        }
    }
    Ok(())
}

/// On Sentry, a page size above [`SENTRY_MAX_PAGE_SIZE`] is refused; elsewhere any passes.
fn check_sentry_page_size(base_url: &Url, value: &str) -> std::result::Result<(), String> {
    if !is_sentry(base_url) {
        return Ok(());
    }
    match value.trim().parse::<u64>() {
        Ok(n) if n > SENTRY_MAX_PAGE_SIZE => Err(format!(
            "Sentry answers a page size above {SENTRY_MAX_PAGE_SIZE} with 400 Bad Request, got {n}"
        )),
        _ => Ok(()),
    }
}

/// Query parameters that set a page size, checked like a paginator's `limit`.
const PAGE_SIZE_PARAMS: &[&str] = &["per_page", "limit", "page_size", "pagelen"];

/// Characters escaped in a partition value put into a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn render_path<V: serde::Serialize>(
    template: &str,
    partition: &BTreeMap<&str, V>,
) -> std::result::Result<String, String> {
    TEMPLATES
        .render_str(template, minijinja::context! { stream_partition => minijinja::value::Value::from(minijinja::value::Serde(partition)) })
        .map_err(|e| format!("template `{template}` does not render: {e}"))
}

fn deserialize<T: serde::de::DeserializeOwned>(
    value: Value,
    file: &Path,
    prefix: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key_path = match (prefix.is_empty(), inner == ".") {
            (true, _) => inner,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        SourceError::Config(ConfigError {
            file: file.to_path_buf(),
            key_path,
            message: e.into_inner().to_string(),
        })
    })
}

/// dlt's merge of resource defaults: objects merge key by key, anything else is replaced.
pub fn deep_merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Object(mut b), Value::Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(bv) => deep_merge(bv, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, o) => o,
    }
}

/// The `stream_partition` keys a path template uses, in order of appearance.
pub fn partition_keys(template: &str) -> std::result::Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut rest = template;
    while let Some(pos) = rest.find("stream_partition") {
        rest = &rest[pos + "stream_partition".len()..];
        let key = if let Some(r) = rest.strip_prefix('[') {
            let r = r.trim_start();
            let quote = r
                .chars()
                .next()
                .filter(|c| *c == '\'' || *c == '"')
                .ok_or_else(|| format!("`{template}`: stream_partition[...] needs a quoted key"))?;
            let body = &r[1..];
            let end = body
                .find(quote)
                .ok_or_else(|| format!("`{template}`: unterminated key"))?;
            body[..end].to_owned()
        } else if let Some(r) = rest.strip_prefix('.') {
            r.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        } else {
            return Err(format!("`{template}`: use stream_partition['<key>']"));
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The convention: `organization_id` comes from resource `organizations` (or `organization`),
/// field `id`.
fn infer_parent(key: &str, names: &[String]) -> Option<ParentRef> {
    let stem = key.strip_suffix("_id")?;
    [format!("{stem}s"), stem.to_owned(), format!("{stem}es")]
        .into_iter()
        .find(|candidate| names.contains(candidate))
        .and_then(|resource| ParentRef::new(key, &resource, "id").ok())
}

/// Orders resources parents first, and sorts each resource's partition keys by the depth of
/// the resource providing them, so the last one is the direct parent. Cycles are errors.
fn order_by_parent(resources: Vec<Resource>) -> std::result::Result<Vec<Resource>, String> {
    fn depth(
        name: &str,
        by_name: &HashMap<&str, &Resource>,
        memo: &mut HashMap<String, usize>,
        stack: &mut Vec<String>,
    ) -> std::result::Result<usize, String> {
        if let Some(d) = memo.get(name) {
            return Ok(*d);
        }
        if stack.iter().any(|s| s == name) {
            return Err(format!(
                "resources form a cycle: {} -> {name}",
                stack.join(" -> ")
            ));
        }
        stack.push(name.to_owned());
        let mut d = 0;
        for p in &by_name[name].partition_keys {
            d = d.max(1 + depth(&p.resource, by_name, memo, stack)?);
        }
        stack.pop();
        memo.insert(name.to_owned(), d);
        Ok(d)
    }
    let mut depths = HashMap::new();
    {
        let by_name: HashMap<&str, &Resource> =
            resources.iter().map(|r| (r.name.as_str(), r)).collect();
        for r in &resources {
            depth(&r.name, &by_name, &mut depths, &mut Vec::new())?;
        }
    }
    let mut out: Vec<Resource> = resources
        .into_iter()
        .map(|mut r| {
            r.partition_keys
                .sort_by_key(|p| depths.get(&p.resource).copied().unwrap_or(0));
            r
        })
        .collect();
    out.sort_by_key(|r| depths[&r.name]);
    Ok(out)
}

fn resolve_auth(
    auth: &AuthConfig,
    secrets: &Secrets,
) -> std::result::Result<Auth, (&'static str, String)> {
    let resolve = |field: &'static str,
                   v: &str|
     -> std::result::Result<Secret, (&'static str, String)> {
        match secret_reference(v) {
            Some(name) => secrets.get(&name).ok_or_else(|| {
                (field, format!("secret `{name}` is not set: export {} or add it to the secrets file", name.to_ascii_uppercase()))
            }),
            None => Err((field, "write credentials as a secret reference such as \"{{ secrets.auth_token }}\", never as a literal".into())),
        }
    };
    Ok(match auth {
        AuthConfig::ApiKey {
            name,
            api_key,
            location,
        } => Auth::ApiKey {
            name: name.clone(),
            value: resolve("api_key", api_key)?,
            location: *location,
        },
        AuthConfig::Bearer { token } => Auth::Bearer(resolve("token", token)?),
        AuthConfig::HttpBasic { username, password } => Auth::Basic {
            username: username.clone(),
            password: resolve("password", password)?,
        },
    })
}

/// Reads a pipeline file as JSON values: `.toml` or `.json`.
pub fn read_pipeline_value(path: &Path) -> std::result::Result<Value, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_path_buf(),
        key_path: String::new(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))
        }
        Some("toml") => {
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| fail(format!("not valid TOML: {e}")))?;
            serde_json::to_value(table).map_err(|e| fail(e.to_string()))
        }
        _ => Err(fail("expected a .toml or .json file".into())),
    }
}

/// The header and query names the client may use for an API key, for display.
pub fn describe_auth(auth: &Option<Auth>) -> String {
    match auth {
        None => "none".into(),
        Some(Auth::ApiKey {
            name,
            location: ApiKeyLocation::Header,
            ..
        }) => format!("api_key in header `{name}`"),
        Some(Auth::ApiKey {
            name,
            location: ApiKeyLocation::Query,
            ..
        }) => format!("api_key in query param `{name}`"),
        Some(Auth::Bearer(_)) => "bearer token".into(),
        Some(Auth::Basic { username, .. }) => format!("basic auth as `{username}`"),
    }
}

/// The file a [`ConfigError`] is about, for callers building their own.
pub fn config_error(file: &Path, key_path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: PathBuf::from(file),
        key_path: key_path.to_owned(),
        message: message.into(),
    }
}
