//! One delivery attempt: a signed `POST` of the event body, redirects not followed, a
//! timeout, http(s) only, and (with `deny_private`) no private, loopback or link-local
//! destination, judged on the addresses the name resolves to at delivery time, so a
//! name that later resolves elsewhere (DNS rebinding) cannot reach one either.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use keyward_core::webhook::{Delivery, Webhook, is_private_destination};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};
use sha2::Sha256;

use super::WebhookSettings;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "Keyward-Signature";

/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`.
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Why it failed (no header values, no secret, no URL), `None` on a 2xx.
    pub error: Option<String>,
    pub duration: Duration,
    /// The metric label: `delivered`, `http_error`, `timeout`, `connect_error`,
    /// `refused`, `no_secret` (the signing secret cannot be opened) or `error`.
    pub result: &'static str,
}

impl Outcome {
    /// An attempt that failed before anything was sent.
    pub fn failed(result: &'static str, error: String) -> Outcome {
        Outcome {
            status: None,
            error: Some(error),
            duration: Duration::ZERO,
            result,
        }
    }

    pub fn delivered(&self) -> bool {
        self.result == "delivered"
    }
}

/// Sends deliveries; one per process, shared by every webhook's lane.
pub struct Sender {
    http: reqwest::Client,
    deny_private: bool,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Sender> {
        let mut builder = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A proxy would resolve the name itself, out of reach of the address check.
            .no_proxy()
            .user_agent(concat!("Keyward-Webhooks/", env!("CARGO_PKG_VERSION")));
        if settings.deny_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Sender {
            http: builder.build()?,
            deny_private: settings.deny_private,
        })
    }

    /// One attempt to deliver `d` to `w`, signed with `secret` at `t` (unix seconds).
    pub async fn send(&self, w: &Webhook, secret: &[u8], d: &Delivery, t: i64) -> Outcome {
        let started = Instant::now();
        let fail = |result, error: String| Outcome {
            status: None,
            error: Some(error),
            duration: started.elapsed(),
            result,
        };
        let url = match check_destination(&w.url, self.deny_private) {
            Ok(url) => url,
            Err(e) => return fail("refused", e),
        };
        let answer = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, t, &d.body))
            .header("Keyward-Event-Id", d.event_id.to_string())
            .header("Keyward-Event-Type", &d.event_type)
            .body(d.body.clone())
            .send()
            .await;
        match answer {
            Ok(resp) => {
                let status = resp.status();
                // The body is not read: a receiver cannot make us buffer anything.
                drop(resp);
                let (result, error) = if status.is_success() {
                    ("delivered", None)
                } else if status.is_redirection() {
                    (
                        "http_error",
                        Some(format!("HTTP {status}: redirects are not followed")),
                    )
                } else {
                    ("http_error", Some(format!("HTTP {status}")))
                };
                Outcome {
                    status: Some(status.as_u16()),
                    error,
                    duration: started.elapsed(),
                    result,
                }
            }
            Err(e) => {
                let e = e.without_url();
                if e.is_timeout() {
                    fail("timeout", "timed out".into())
                } else if let Some(refused) = find_refusal(&e) {
                    fail("refused", refused)
                } else if e.is_connect() {
                    fail("connect_error", describe(&e))
                } else {
                    fail("error", describe(&e))
                }
            }
        }
    }
}

/// The URL, if it may be posted to: http(s), and with `deny_private`, not an address
/// literal in a refused range (names are checked by [`PublicOnly`] as they resolve).
pub fn check_destination(url: &str, deny_private: bool) -> Result<Url, String> {
    let url = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https destinations are allowed".into());
    }
    if deny_private {
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if literal.is_some_and(is_private_destination) {
            return Err(REFUSED.into());
        }
    }
    Ok(url)
}

const REFUSED: &str = "destination refused: a private, loopback or link-local address";

/// A resolver that drops refused addresses, and fails if none is left.
struct PublicOnly;

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REFUSED)
    }
}

impl std::error::Error for Refused {}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| !is_private_destination(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

fn find_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<Refused>() {
            return Some(REFUSED.into());
        }
        cur = err.source();
    }
    None
}

/// The error and its causes, on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // The HMAC itself, on RFC 4231 test case 2.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The header signs "<t>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, r#"{"a":1}"#),
            format!("t=1700000000,v1={want}")
        );
    }

    #[test]
    fn destinations() {
        assert!(check_destination("ftp://example.com/", false).is_err());
        assert!(check_destination("http://127.0.0.1:9/", false).is_ok());
        assert!(check_destination("http://127.0.0.1:9/", true).is_err());
        assert!(check_destination("http://[::1]:9/", true).is_err());
        assert!(check_destination("http://[::ffff:10.0.0.1]/", true).is_err());
        assert!(check_destination("https://93.184.216.34/", true).is_ok());
        assert!(check_destination("https://example.com/", true).is_ok());
    }
}
