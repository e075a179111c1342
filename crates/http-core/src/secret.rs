//! Secrets that never print: a token wrapper, and URL redaction for errors and logs.

use std::fmt;

use url::Url;

/// A credential. Its `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Query parameter names whose values are credentials and are redacted in every URL we print.
const SECRET_PARAMS: &[&str] = &[
    "auth_token",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "key",
    "password",
    "secret",
];

/// A URL as it may be printed: user info removed, credential query values replaced by `***`,
/// and, when given, the configured query credential's name too.
pub fn redact_url(url: &Url, extra_secret_param: Option<&str>) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s))
                    || extra_secret_param.is_some_and(|p| k.eq_ignore_ascii_case(p));
                (
                    k.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        if pairs.iter().any(|(_, v)| v == "***") {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    url.to_string()
}

/// Replaces every occurrence of the secrets in `text` by `***`.
pub fn redact_text(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.expose().len() >= 4 {
            out = out.replace(s.expose(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn credential_params_and_user_info_are_redacted() {
        let u =
            Url::parse("https://me:pw@api.example.com/x?auth_token=abc&per_page=5&sig=1").unwrap();
        assert_eq!(
            redact_url(&u, Some("sig")),
            "https://api.example.com/x?auth_token=***&per_page=5&sig=***"
        );
        let plain = Url::parse("https://api.example.com/x?offset%5Bcount%5D=1").unwrap();
        assert_eq!(
            redact_url(&plain, None),
            "https://api.example.com/x?offset%5Bcount%5D=1"
        );
    }
}
