//! The suspect side: a model behind an OpenAI-compatible HTTP API, reached through an
//! outbound URL guard, with retries, rate limits and bounded responses.
//!
//! Policy in brief:
//! - `HttpModel::new` checks the base URL without any lookup (scheme, credentials, literal
//!   addresses in any spelling, internal names) and reads the API key from the named
//!   environment variable.
//! - The host is resolved once, on the first request; every address is checked and the
//!   client is pinned to the first for the life of the `HttpModel` (make a new one to
//!   pick up a DNS change). Proxies are off and other lookups fail.
//! - Redirects are never followed; a 3xx is a `Forbidden` error naming its target.

pub mod chosen_listed;
pub mod client;
pub mod params;
pub mod parse;
pub mod retry;
pub mod token_spelling;
pub mod url_guard;

pub use client::{HttpModel, HttpModelConfig, SuspectError};
pub use parse::{ErrorContext, ParseError, ProviderError};
pub use url_guard::{GuardError, UrlGuard};
