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

/// Whether a query parameter of this name carries a credential (`auth_token`, `api_key`,
/// `access_token`, `sig`, `X-Amz-Signature`, …): its value is redacted in every URL printed
/// and the parameter is dropped from every URL stored. Pagination tokens (`page_token`,
/// `next_token`) are not credentials.
pub fn is_credential_param(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "key",
        "apikey",
        "token",
        "auth",
        "bearer",
        "secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "session",
        "sessionid",
        "x_amz_credential",
        "x_amz_security_token",
    ];
    const SUFFIXES: &[&str] = &[
        "api_key",
        "_apikey",
        "access_token",
        "auth_token",
        "refresh_token",
        "id_token",
        "private_token",
        "session_token",
        "_secret",
        "_password",
        "_signature",
    ];
    let n = name.to_ascii_lowercase().replace('-', "_");
    EXACT.contains(&n.as_str()) || SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// A URL as it may be printed: user info removed, credential query values replaced by `***`
/// ([`is_credential_param`], and, when given, the configured query credential's name too).
pub fn redact_url(url: &Url, extra_secret_param: Option<&str>) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = is_credential_param(&k)
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

/// Replaces every occurrence of the secrets in `text` by `***`, as written and as
/// percent-encoded in a URL, whatever their length: a short token is still a token.
pub fn redact_text(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        let raw = s.expose();
        if raw.is_empty() {
            continue;
        }
        out = out.replace(raw, "***");
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        if encoded != raw {
            out = out.replace(&encoded, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 12: a token of fewer than four characters went into error lines unredacted.
    #[test]
    fn short_and_percent_encoded_secrets_are_redacted() {
        let short = Secret::new("Zq9");
        let odd = Secret::new("a b/c");
        assert_eq!(
            redact_text("bad token Zq9 (a+b%2Fc, a b/c)", &[&short, &odd]),
            "bad token *** (***, ***)"
        );
    }

    #[test]
    fn credential_names_are_told_from_pagination_tokens() {
        for name in [
            "auth_token",
            "API_KEY",
            "access_token",
            "sig",
            "X-Amz-Signature",
            "client_secret",
            "token",
        ] {
            assert!(is_credential_param(name), "{name}");
        }
        for name in [
            "page_token",
            "next_token",
            "cursor",
            "offset",
            "per_page",
            "keys",
        ] {
            assert!(!is_credential_param(name), "{name}");
        }
    }

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
        let plain =
            Url::parse("https://api.example.com/x?offset%5Bcount%5D=1&page_token=p").unwrap();
        assert_eq!(
            redact_url(&plain, None),
            "https://api.example.com/x?offset%5Bcount%5D=1&page_token=p"
        );
    }
}
