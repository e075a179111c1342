//! Secret references (`{{ secrets.auth_token }}`) and where their values come from.

use std::collections::HashMap;
use std::path::Path;

use http_core::Secret;

/// Where secret values come from: the environment (`auth_token` is read from `AUTH_TOKEN`),
/// then an optional untracked TOML file of `name = "value"` lines.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    file_values: HashMap<String, Secret>,
    env_override: Option<HashMap<String, Secret>>,
    /// Answer every name with a placeholder: for checking a file without its secrets.
    stand_in: bool,
    /// A split run's shard index: `NAME_shard_<i>` is looked up before `NAME`.
    shard: Option<u32>,
}

impl Secrets {
    /// Secrets from the process environment only.
    pub fn from_env() -> Self {
        Secrets::default()
    }

    /// Secrets from the environment, then from a TOML file (values are kept as written:
    /// write tokens as strings so that `00123` stays `00123`).
    pub fn with_file(mut self, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for (k, v) in table {
            let value = match v {
                toml::Value::String(s) => s,
                _ => {
                    return Err(format!(
                        "{}: `{k}` must be a string (write tokens in quotes)",
                        path.display()
                    ));
                }
            };
            self.file_values.insert(k, Secret::new(value));
        }
        Ok(self)
    }

    /// Secrets from a fixed map instead of the environment (for tests and embedding programs).
    pub fn from_map(values: impl IntoIterator<Item = (String, String)>) -> Self {
        Secrets {
            file_values: HashMap::new(),
            env_override: Some(
                values
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
            ),
            stand_in: false,
            shard: None,
        }
    }

    /// Secrets for shard `index` of a split run: each name is looked up as
    /// `<name>_shard_<index>` first (`AUTH_TOKEN_SHARD_2` in the environment,
    /// `auth_token_shard_2` in a file), then as itself. This is how each shard gets a token of
    /// its own, and so a rate budget of its own.
    pub fn for_shard(mut self, index: u32) -> Self {
        self.shard = Some(index);
        self
    }

    /// Secrets that answer every name with a placeholder, to check a pipeline file where its
    /// secrets are not set. Nothing built with them may send a request.
    pub fn stand_in() -> Self {
        Secrets {
            stand_in: true,
            ..Secrets::default()
        }
    }

    /// The value of secret `name`, if set (for a shard, its own value first).
    pub fn get(&self, name: &str) -> Option<Secret> {
        if self.stand_in {
            return Some(Secret::new(format!("stand-in-for-{name}")));
        }
        self.shard
            .and_then(|i| self.get_as(&format!("{name}_shard_{i}")))
            .or_else(|| self.get_as(name))
    }

    fn get_as(&self, name: &str) -> Option<Secret> {
        if let Some(map) = &self.env_override {
            return map.get(name).cloned();
        }
        let var = name.to_ascii_uppercase();
        std::env::var(&var)
            .ok()
            .map(Secret::new)
            .or_else(|| self.file_values.get(name).cloned())
    }
}

/// The secret a config value refers to: `{{ secrets.NAME }}`, `{{ secrets['NAME'] }}` or the
/// seed's Python form `dlt.secrets["NAME"]`. `None` for a plain value.
pub fn secret_reference(value: &str) -> Option<String> {
    let v = value.trim();
    let inner = v
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .map(str::trim)
        .unwrap_or(v);
    let rest = inner
        .strip_prefix("dlt.secrets")
        .or_else(|| inner.strip_prefix("secrets"))?;
    let name = if let Some(n) = rest.strip_prefix('.') {
        n
    } else {
        rest.strip_prefix('[')?
            .strip_suffix(']')?
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_all_forms() {
        assert_eq!(
            secret_reference("{{ secrets.auth_token }}").as_deref(),
            Some("auth_token")
        );
        assert_eq!(
            secret_reference("{{secrets['auth_token']}}").as_deref(),
            Some("auth_token")
        );
        assert_eq!(
            secret_reference(r#"dlt.secrets["auth_token"]"#).as_deref(),
            Some("auth_token")
        );
        assert_eq!(secret_reference("token abc"), None);
        assert_eq!(secret_reference("{{ secrets.a b }}"), None);
    }

    #[test]
    fn a_shard_takes_its_own_secret_before_the_shared_one() {
        let secrets = Secrets::from_map([
            ("auth_token".to_owned(), "shared".to_owned()),
            ("auth_token_shard_1".to_owned(), "own".to_owned()),
        ]);
        assert_eq!(secrets.get("auth_token").unwrap().expose(), "shared");
        let one = secrets.clone().for_shard(1);
        assert_eq!(one.get("auth_token").unwrap().expose(), "own");
        let two = secrets.for_shard(2);
        assert_eq!(two.get("auth_token").unwrap().expose(), "shared");
    }

    #[test]
    fn file_values_stay_strings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "auth_token = \"00123\"\n").unwrap();
        let s = Secrets::default().with_file(&path).unwrap();
        assert_eq!(s.get("auth_token").unwrap().expose(), "00123");
        std::fs::write(&path, "auth_token = 123\n").unwrap();
        assert!(
            Secrets::default()
                .with_file(&path)
                .unwrap_err()
                .contains("must be a string")
        );
    }
}
