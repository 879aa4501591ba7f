//! Server-side secrets: API keys for suspect endpoints and webhook signing keys.
//!
//! A secret lives only in the service's environment, never in the database:
//! - `PROVENANCE_SECRET_<NAME>`: the value (8 characters at least);
//! - `PROVENANCE_SECRET_<NAME>__URL`: the URL prefix it may be sent to (scheme, host, port
//!   and a path prefix, e.g. `https://api.example.com/v1`). A secret without one is never
//!   sent anywhere, since a submitter could otherwise point a scan at their own server and
//!   collect the key;
//! - `PROVENANCE_SECRET_<NAME>__ROLE`: the lowest API role that may name it in a scan
//!   (`submitter`, `analyst` or `admin`; `analyst` when unset).
//!
//! Text that came from outside (a suspect's error body or answer) is passed through
//! [`scrub`] before it reaches the store, a response or a log, so a server that echoes the
//! `Authorization` header back cannot make the service show the key.

use url::Url;

use crate::store::Role;

/// Secrets are environment variables with this prefix; a scan names only the rest, so a
/// submitter can never make the service send an arbitrary variable (say its database
/// password) anywhere.
pub const SECRET_PREFIX: &str = "PROVENANCE_SECRET_";
const URL_SUFFIX: &str = "__URL";
const ROLE_SUFFIX: &str = "__ROLE";
/// Shorter values are refused: no real API key is that short, and scrubbing a short value
/// out of every text would mangle ordinary words.
pub const MIN_SECRET_LEN: usize = 8;
/// What a secret's value is replaced with wherever it appears in outside text.
pub const REDACTED: &str = "[redacted]";
/// The role that may name a secret whose `__ROLE` is unset.
pub const DEFAULT_ROLE: Role = Role::Analyst;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{0:?} is not a secret name (letters, digits and single underscores, at most 64)")]
    InvalidName(String),
    #[error("secret {0:?} is not configured on the server")]
    Unknown(String),
    #[error(
        "secret {0:?} is bound to no URL, so it is sent nowhere (the operator sets {SECRET_PREFIX}<NAME>{URL_SUFFIX})"
    )]
    Unbound(String),
    #[error("secret {name:?} has an unusable binding: {reason}")]
    BadBinding { name: String, reason: String },
    #[error("secret {0:?} may not be sent to this URL (it is bound to another host or path)")]
    WrongTarget(String),
    #[error("secret {name:?} may be used by the {} role and above", .min_role.as_str())]
    Role { name: String, min_role: Role },
}

/// Letters, digits and underscores, at most 64, and no double underscore (which separates
/// a secret's name from its `__URL` and `__ROLE` settings).
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// The environment variable that holds the secret `name`.
pub fn secret_env_name(name: &str) -> String {
    format!("{SECRET_PREFIX}{}", name.to_ascii_uppercase())
}

/// A secret that may be sent as a bearer key, with where it may go and who may use it.
#[derive(Clone)]
pub struct BoundSecret {
    pub name: String,
    /// The environment variable holding the value.
    pub env_var: String,
    pub allowed: Url,
    pub min_role: Role,
}

impl std::fmt::Debug for BoundSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSecret")
            .field("name", &self.name)
            .field("allowed", &self.allowed.as_str())
            .field("min_role", &self.min_role)
            .finish()
    }
}

impl BoundSecret {
    /// Refuses a URL outside the secret's binding.
    pub fn check_target(&self, url: &Url) -> Result<(), SecretError> {
        if url_within(&self.allowed, url) {
            Ok(())
        } else {
            Err(SecretError::WrongTarget(self.name.clone()))
        }
    }

    /// Refuses callers below the secret's role.
    pub fn check_role(&self, role: Role) -> Result<(), SecretError> {
        if role >= self.min_role {
            Ok(())
        } else {
            Err(SecretError::Role {
                name: self.name.clone(),
                min_role: self.min_role,
            })
        }
    }
}

/// The secret `name` as a bearer key: set, long enough, and bound to a URL prefix.
pub fn bound_secret(name: &str) -> Result<BoundSecret, SecretError> {
    bound_secret_from(name, |var| std::env::var(var).ok())
}

/// [`bound_secret`] over any source of variables (tests use a map).
pub fn bound_secret_from(
    name: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BoundSecret, SecretError> {
    if !valid_secret_name(name) {
        return Err(SecretError::InvalidName(name.to_string()));
    }
    let env_var = secret_env_name(name);
    env(&env_var)
        .filter(|v| v.trim().len() >= MIN_SECRET_LEN)
        .ok_or_else(|| SecretError::Unknown(name.to_string()))?;
    let binding = env(&format!("{env_var}{URL_SUFFIX}"))
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| SecretError::Unbound(name.to_string()))?;
    let allowed = parse_binding(binding.trim()).map_err(|reason| SecretError::BadBinding {
        name: name.to_string(),
        reason,
    })?;
    let min_role = match env(&format!("{env_var}{ROLE_SUFFIX}")) {
        None => DEFAULT_ROLE,
        Some(r) if r.trim().is_empty() => DEFAULT_ROLE,
        Some(r) => Role::parse(r.trim()).ok_or_else(|| SecretError::BadBinding {
            name: name.to_string(),
            reason: format!("{ROLE_SUFFIX} must be submitter, analyst or admin"),
        })?,
    };
    Ok(BoundSecret {
        name: name.to_string(),
        env_var,
        allowed,
        min_role,
    })
}

/// The value of the secret `name` for uses that never send it (signing webhooks).
pub fn secret_value(name: &str) -> Option<String> {
    if !valid_secret_name(name) {
        return None;
    }
    std::env::var(secret_env_name(name))
        .ok()
        .filter(|v| v.trim().len() >= MIN_SECRET_LEN)
}

fn parse_binding(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the URL must be http or https".into());
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not hold credentials".into());
    }
    Ok(url)
}

/// Whether `url` lies under `prefix`: same scheme, host and port, and a path that is the
/// prefix's path or continues it after a `/` (so `/v1` covers `/v1/chat` but not `/v1x`).
pub fn url_within(prefix: &Url, url: &Url) -> bool {
    if prefix.scheme() != url.scheme()
        || prefix.host() != url.host()
        || prefix.port_or_known_default() != url.port_or_known_default()
    {
        return false;
    }
    let base = prefix.path().trim_end_matches('/');
    let path = url.path();
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Every configured secret value, for scrubbing.
pub fn configured_values() -> Vec<String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with(SECRET_PREFIX) && !k.ends_with(URL_SUFFIX) && !k.ends_with(ROLE_SUFFIX)
        })
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() >= MIN_SECRET_LEN)
        .collect()
}

/// `text` with every configured secret's value replaced by [`REDACTED`].
pub fn scrub(text: &str) -> String {
    scrub_values(text, &configured_values())
}

/// `text` with each of `values` (those of at least [`MIN_SECRET_LEN`] characters)
/// replaced by [`REDACTED`].
pub fn scrub_values<S: AsRef<str>>(text: &str, values: &[S]) -> String {
    let mut out = text.to_string();
    for value in values {
        let value = value.as_ref();
        if value.len() >= MIN_SECRET_LEN && out.contains(value) {
            out = out.replace(value, REDACTED);
        }
    }
    out
}

/// Outside text cut for an error message: the first line only (a backtrace or a body's
/// rest stays out), at most `max_chars` characters, control characters dropped.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let first = text.lines().next().unwrap_or("").trim_end();
    let mut out: String = first
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect();
    if first.chars().count() > max_chars || text.trim_end().contains('\n') {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn names_are_plain_and_cannot_reach_the_settings() {
        assert!(valid_secret_name("openai_key"));
        assert!(valid_secret_name("K1"));
        for bad in ["", "a b", "key__URL", "x_", "../x", "a-b", &"k".repeat(65)] {
            assert!(!valid_secret_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_needs_a_value_and_a_binding() {
        let e = env(&[]);
        assert_eq!(
            bound_secret_from("key", &e).unwrap_err(),
            SecretError::Unknown("key".into())
        );
        let e = env(&[("PROVENANCE_SECRET_KEY", "short")]);
        assert!(matches!(
            bound_secret_from("key", &e),
            Err(SecretError::Unknown(_))
        ));
        let e = env(&[("PROVENANCE_SECRET_KEY", "sk-long-enough")]);
        assert_eq!(
            bound_secret_from("key", &e).unwrap_err(),
            SecretError::Unbound("key".into())
        );
        let e = env(&[
            ("PROVENANCE_SECRET_KEY", "sk-long-enough"),
            ("PROVENANCE_SECRET_KEY__URL", "ftp://x/"),
        ]);
        assert!(matches!(
            bound_secret_from("key", &e),
            Err(SecretError::BadBinding { .. })
        ));
        let e = env(&[
            ("PROVENANCE_SECRET_KEY", "sk-long-enough"),
            ("PROVENANCE_SECRET_KEY__URL", "https://api.example.com/v1"),
            ("PROVENANCE_SECRET_KEY__ROLE", "root"),
        ]);
        assert!(matches!(
            bound_secret_from("key", &e),
            Err(SecretError::BadBinding { .. })
        ));
    }

    #[test]
    fn a_bound_secret_goes_only_under_its_prefix_and_to_its_roles() {
        let e = env(&[
            ("PROVENANCE_SECRET_KEY", "sk-long-enough"),
            ("PROVENANCE_SECRET_KEY__URL", "https://api.example.com/v1"),
        ]);
        let s = bound_secret_from("key", &e).unwrap();
        assert_eq!(s.min_role, DEFAULT_ROLE);
        let ok = |u: &str| s.check_target(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://api.example.com/v1"));
        assert!(ok("https://api.example.com/v1/"));
        assert!(ok("https://api.example.com/v1/chat/completions"));
        assert!(ok("https://API.example.com:443/v1/models"));
        for bad in [
            "http://api.example.com/v1",
            "https://api.example.com:8443/v1",
            "https://api.example.com/v1x",
            "https://api.example.com/v2/chat",
            "https://api.example.com/",
            "https://api.example.com.evil.test/v1",
            "https://evil.test/api.example.com/v1",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(s.check_role(Role::Submitter).is_err());
        assert!(s.check_role(Role::Analyst).is_ok());
        assert!(s.check_role(Role::Admin).is_ok());
        let e = env(&[
            ("PROVENANCE_SECRET_KEY", "sk-long-enough"),
            ("PROVENANCE_SECRET_KEY__URL", "https://api.example.com/"),
            ("PROVENANCE_SECRET_KEY__ROLE", "submitter"),
        ]);
        let s = bound_secret_from("key", &e).unwrap();
        assert!(s.check_role(Role::Submitter).is_ok());
        assert!(s
            .check_target(&Url::parse("https://api.example.com/anything").unwrap())
            .is_ok());
    }

    #[test]
    fn scrubbing_replaces_every_occurrence_and_leaves_short_values() {
        let text = "echo: Bearer sk-abcdef123 and again sk-abcdef123.";
        assert_eq!(
            scrub_values(text, &["sk-abcdef123"]),
            "echo: Bearer [redacted] and again [redacted]."
        );
        assert_eq!(scrub_values("a b c", &["b"]), "a b c");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("0123456789abc", 10), "0123456789…");
        assert_eq!(
            excerpt("failed\nstack backtrace:\n 0: main", 100),
            "failed…"
        );
        assert_eq!(excerpt("a\u{7}b", 10), "ab");
    }
}
