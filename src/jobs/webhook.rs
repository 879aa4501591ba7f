//! Signed webhooks. The body is signed with HMAC-SHA256 over `"{timestamp}.{body}"`, sent
//! as `X-Provenance-Signature: sha256=<hex>` with `X-Provenance-Timestamp`, so a receiver
//! can check both origin and freshness. Failed deliveries are retried with backoff.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::suspect::UrlGuard;

pub const SIGNATURE_HEADER: &str = "x-provenance-signature";
pub const TIMESTAMP_HEADER: &str = "x-provenance-timestamp";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL refused: {0}")]
    Guard(#[from] crate::suspect::GuardError),
    #[error("webhook delivery failed after {attempts} attempts: {last}")]
    Failed { attempts: u32, last: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "{timestamp}.{body}").
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// True when `signature` is `sign(secret, timestamp, body)` (constant-time compare).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub allow_private_targets: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
            allow_private_targets: false,
        }
    }
}

/// POSTs `payload` to `url`, signed when there is a secret; retries 5xx, 429 and
/// connection errors with doubling waits. Returns the attempts it took.
pub async fn deliver(
    url: &str,
    secret: Option<&[u8]>,
    payload: &serde_json::Value,
    opts: &Delivery,
) -> Result<u32, WebhookError> {
    let guard = UrlGuard::new(opts.allow_private_targets);
    let parsed = guard.check_url(url)?;
    // Resolve once, check the address and pin the client to it (no second lookup).
    let addr = guard.resolve(&parsed).await?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(opts.timeout)
        .resolve(&host, addr)
        .build()
        .map_err(|e| WebhookError::Client(e.to_string()))?;
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let mut last = String::new();
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        let timestamp = chrono::Utc::now().timestamp();
        let mut req = client
            .post(parsed.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .body(body.clone());
        if let Some(secret) = secret {
            req = req.header(SIGNATURE_HEADER, sign(secret, timestamp, &body));
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => {
                last = format!("HTTP {}", resp.status());
                let status = resp.status();
                if !(status.is_server_error() || status.as_u16() == 429) {
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
        if attempt < attempts {
            tokio::time::sleep(opts.backoff * 2u32.saturating_pow(attempt - 1)).await;
        }
    }
    Err(WebhookError::Failed { attempts, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let sig = sign(b"k", 1700000000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256="));
        assert!(verify(b"k", 1700000000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1700000001, b"{\"a\":1}", &sig));
        assert!(!verify(b"other", 1700000000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1700000000, b"{\"a\":2}", &sig));
    }
}
