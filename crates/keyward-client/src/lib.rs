//! A typed async client for the Keyward HTTP API (contract, "HTTP API").
//!
//! One method per API call; errors carry the server's RFC 9457 [`Problem`] and HTTP
//! status. The bearer token is never part of an error or of `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyward_client::Error> {
//! let client = keyward_client::Client::new("http://127.0.0.1:7070", Some("kw_...".into()))?;
//! let identities = client.list_all_identities().await?;
//! # Ok(()) }
//! ```

mod admins;
mod audit_chain;

use std::fmt;
use std::future::Future;

use keyward_proto::{
    AuditRecord, CreateIdentity, CreateKey, CreatedKey, Health, Identity, Key, LeakReport,
    LeakResponse, Page, Problem, RotateKey, UpdateIdentity, UpdateKey, VerifyRequest,
    VerifyResponse,
};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use keyward_proto as proto;

mod rotation_status;
mod vault;
mod webhooks;
pub use vault::SecretListParams;
mod anomalies;
mod usage;
pub use anomalies::AnomalyParams;
pub use usage::{PostureParams, TopParams, UsageParams};
mod require;
mod tokens;
pub use require::{Credential, KeywardPrincipal, Rejection, RequireKeyward, RequireKeywardService};
pub use tokens::{TokenError, TokenVerifier};

/// The most pages a `list_all_*` helper follows before it gives up (a server that keeps
/// answering with a cursor would otherwise loop forever).
pub const MAX_PAGES: usize = 10_000;

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered 4xx or 5xx. `problem` is its RFC 9457 body, or one made up
    /// from the status when the body was not a problem document.
    #[error("{} ({status}){}", problem.title, detail_suffix(&problem.detail))]
    Api { status: u16, problem: Problem },
    /// The request did not get an answer: connection refused, timeout, TLS, ...
    #[error("cannot reach the server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected answer from the server (HTTP {status}): {message}")]
    Decode { status: u16, message: String },
    /// The base URL is not a usable http(s) URL.
    #[error("invalid server URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    /// A listing returned more than [`MAX_PAGES`] pages, or repeated a cursor.
    #[error("listing did not terminate: {0}")]
    Pagination(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl Error {
    /// The HTTP status, for [`Error::Api`] and [`Error::Decode`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem document, for [`Error::Api`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A bearer credential whose `Debug` does not show it.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Query of `GET /v1/identities`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyListParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/audit`. `after` is a sequence number (a page's `next_cursor`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditListParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A Keyward API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Token>,
}

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:7070`), authenticating
    /// `/v1` calls with `token` when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("keyward-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Transport)?;
        Self::with_http(http, base_url, token)
    }

    /// Like [`Client::new`], with a caller-built `reqwest::Client` (timeouts, proxies, ...).
    pub fn with_http(http: reqwest::Client, base_url: &str, token: Option<String>) -> Result<Self> {
        let invalid = |message: String| Error::InvalidUrl {
            url: base_url.to_string(),
            message,
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("no host".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Client {
            http,
            base,
            token: token.filter(|t| !t.is_empty()).map(Token),
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ------------------------------------------------------------ identities

    /// `POST /v1/identities`.
    pub async fn create_identity(&self, body: &CreateIdentity) -> Result<Identity> {
        self.call(Method::POST, &["v1", "identities"], NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/identities`: one page.
    pub async fn list_identities(&self, params: &ListParams) -> Result<Page<Identity>> {
        self.call(Method::GET, &["v1", "identities"], Some(params), NO_BODY)
            .await
    }

    /// Every identity, following `next_cursor`.
    pub async fn list_all_identities(&self) -> Result<Vec<Identity>> {
        collect_pages(|cursor| {
            let params = ListParams {
                limit: None,
                cursor,
            };
            async move { self.list_identities(&params).await }
        })
        .await
    }

    /// `GET /v1/identities/{id}`.
    pub async fn get_identity(&self, id: Uuid) -> Result<Identity> {
        let id = id.to_string();
        self.call(Method::GET, &["v1", "identities", &id], NO_QUERY, NO_BODY)
            .await
    }

    /// `PATCH /v1/identities/{id}`.
    pub async fn update_identity(&self, id: Uuid, body: &UpdateIdentity) -> Result<Identity> {
        let id = id.to_string();
        self.call(
            Method::PATCH,
            &["v1", "identities", &id],
            NO_QUERY,
            Some(body),
        )
        .await
    }

    /// `DELETE /v1/identities/{id}`: also revokes all its keys. Returns the identity as
    /// the server last saw it, or `None` if it answered without a body (204).
    pub async fn delete_identity(&self, id: Uuid) -> Result<Option<Identity>> {
        let id = id.to_string();
        self.call_optional(
            Method::DELETE,
            &["v1", "identities", &id],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    // ------------------------------------------------------------ keys

    /// `POST /v1/keys`. The answer is the only one that holds the key.
    pub async fn create_key(&self, body: &CreateKey) -> Result<CreatedKey> {
        self.call(Method::POST, &["v1", "keys"], NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/keys`: one page.
    pub async fn list_keys(&self, params: &KeyListParams) -> Result<Page<Key>> {
        self.call(Method::GET, &["v1", "keys"], Some(params), NO_BODY)
            .await
    }

    /// Every key (of one identity, if given), following `next_cursor`.
    pub async fn list_all_keys(&self, identity_id: Option<Uuid>) -> Result<Vec<Key>> {
        collect_pages(|cursor| {
            let params = KeyListParams {
                identity_id,
                limit: None,
                cursor,
            };
            async move { self.list_keys(&params).await }
        })
        .await
    }

    /// `GET /v1/keys/{id}`.
    pub async fn get_key(&self, id: Uuid) -> Result<Key> {
        let id = id.to_string();
        self.call(Method::GET, &["v1", "keys", &id], NO_QUERY, NO_BODY)
            .await
    }

    /// `PATCH /v1/keys/{id}`.
    pub async fn update_key(&self, id: Uuid, body: &UpdateKey) -> Result<Key> {
        let id = id.to_string();
        self.call(Method::PATCH, &["v1", "keys", &id], NO_QUERY, Some(body))
            .await
    }

    /// `POST /v1/keys/{id}/rotate`: the new key; the old one works for `grace_seconds`.
    pub async fn rotate_key(&self, id: Uuid, grace_seconds: i64) -> Result<CreatedKey> {
        let id = id.to_string();
        let body = RotateKey { grace_seconds };
        self.call(
            Method::POST,
            &["v1", "keys", &id, "rotate"],
            NO_QUERY,
            Some(&body),
        )
        .await
    }

    /// `POST /v1/keys/{id}/revoke`.
    pub async fn revoke_key(&self, id: Uuid) -> Result<Key> {
        let id = id.to_string();
        self.call(
            Method::POST,
            &["v1", "keys", &id, "revoke"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    // ------------------------------------------------------------ verify, audit

    /// `POST /v1/verify`. An invalid key is an `Ok` answer with `valid: false`.
    pub async fn verify(&self, body: &VerifyRequest) -> Result<VerifyResponse> {
        self.call(Method::POST, &["v1", "verify"], NO_QUERY, Some(body))
            .await
    }

    /// `POST /v1/verify/batch`: up to [`VERIFY_BATCH_MAX`](keyward_proto::VERIFY_BATCH_MAX)
    /// verifications in one exchange; the answers come in the order of `requests`.
    pub async fn verify_batch(&self, requests: &[VerifyRequest]) -> Result<Vec<VerifyResponse>> {
        /// `VerifyBatchRequest`'s wire form, borrowing the requests (keys are not copied).
        #[derive(Serialize)]
        struct Batch<'a> {
            requests: &'a [VerifyRequest],
        }
        let body = Batch { requests };
        let answer: keyward_proto::VerifyBatchResponse = self
            .call(
                Method::POST,
                &["v1", "verify", "batch"],
                NO_QUERY,
                Some(&body),
            )
            .await?;
        Ok(answer.results)
    }

    /// `POST /v1/leaks` (scope `keyward:leaks:report`): revokes the key if it is one of
    /// this server's.
    pub async fn report_leak(&self, body: &LeakReport) -> Result<LeakResponse> {
        self.call(Method::POST, &["v1", "leaks"], NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/audit`: one page.
    pub async fn list_audit(&self, params: &AuditListParams) -> Result<Page<AuditRecord>> {
        self.call(Method::GET, &["v1", "audit"], Some(params), NO_BODY)
            .await
    }

    /// The audit log after `after` (from the start if `None`), following `next_cursor`.
    pub async fn list_all_audit(&self, after: Option<String>) -> Result<Vec<AuditRecord>> {
        let mut first = Some(after);
        collect_pages(|cursor| {
            // The first call starts at `after`; later ones at the page's cursor.
            let after = first.take().unwrap_or(cursor);
            let params = AuditListParams { after, limit: None };
            async move { self.list_audit(&params).await }
        })
        .await
    }

    // ------------------------------------------------------------ health

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<Health> {
        self.call_health("healthz").await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> Result<Health> {
        self.call_health("readyz").await
    }

    async fn call_health(&self, path: &str) -> Result<Health> {
        let answer: Option<Health> = self
            .call_optional(Method::GET, &[path], NO_QUERY, NO_BODY)
            .await?;
        Ok(answer.unwrap_or_else(|| Health {
            status: "ok".into(),
            ..Health::default()
        }))
    }

    // ------------------------------------------------------------ plumbing

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in Client::with_http");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    async fn call<Q, B, T>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<T>
    where
        Q: Serialize + ?Sized,
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let (status, bytes) = self.send(method, segments, query, body).await?;
        decode(status, &bytes)
    }

    /// Like `call`, but an empty body is `None`.
    async fn call_optional<Q, B, T>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<Option<T>>
    where
        Q: Serialize + ?Sized,
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let (status, bytes) = self.send(method, segments, query, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        decode(status, &bytes).map(Some)
    }

    async fn send<Q, B>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<(StatusCode, Vec<u8>)>
    where
        Q: Serialize + ?Sized,
        B: Serialize + ?Sized,
    {
        let mut req = self
            .http
            .request(method, self.url(segments))
            .header(reqwest::header::ACCEPT, "application/json");
        // Only `/v1` calls take the credential; `/healthz` and `/readyz` do not get it.
        if let (Some(token), Some(&"v1")) = (&self.token, segments.first()) {
            // `bearer_auth` marks the header sensitive.
            req = req.bearer_auth(&token.0);
        }
        if let Some(query) = query {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status.is_client_error() || status.is_server_error() {
            return Err(Error::Api {
                status: status.as_u16(),
                problem: problem_from(status, &bytes),
            });
        }
        Ok((status, bytes))
    }
}

const NO_QUERY: Option<&()> = None;
const NO_BODY: Option<&()> = None;

fn transport(e: reqwest::Error) -> Error {
    // Errors carry the URL, which never holds the credential; strip it anyway so a base
    // URL with user info cannot leak.
    Error::Transport(e.without_url())
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        status: status.as_u16(),
        message: e.to_string(),
    })
}

/// The problem document of an error answer, or one made from its status.
fn problem_from(status: StatusCode, bytes: &[u8]) -> Problem {
    if let Ok(p) = serde_json::from_slice::<Problem>(bytes) {
        return p;
    }
    let title = status
        .canonical_reason()
        .unwrap_or("Unexpected status")
        .to_string();
    let text = String::from_utf8_lossy(bytes);
    let mut detail: String = text.trim().chars().take(200).collect();
    if text.trim().chars().count() > 200 {
        detail.push('…');
    }
    Problem {
        type_: "about:blank".into(),
        title,
        status: status.as_u16(),
        detail,
        field: None,
    }
}

/// Calls `fetch` with `None`, then with each page's `next_cursor` until there is none,
/// and gathers the items.
pub async fn collect_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_PAGES {
        let page = fetch(cursor.take()).await?;
        items.extend(page.items);
        match page.next_cursor {
            None => return Ok(items),
            Some(next) if next.is_empty() => return Ok(items),
            Some(next) => {
                if !seen.insert(next.clone()) {
                    return Err(Error::Pagination(format!("cursor {next:?} repeated")));
                }
                cursor = Some(next);
            }
        }
    }
    Err(Error::Pagination(format!("more than {MAX_PAGES} pages")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let c = Client::new("http://127.0.0.1:1", Some("kw_secret_token".into())).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("kw_secret_token"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn urls_join_under_the_base_path() {
        let c = Client::new("http://h:1/prefix", None).unwrap();
        assert_eq!(
            c.url(&["v1", "keys", "x"]).as_str(),
            "http://h:1/prefix/v1/keys/x"
        );
        let c = Client::new("http://h:1/", None).unwrap();
        assert_eq!(c.url(&["healthz"]).as_str(), "http://h:1/healthz");
        // Segments are escaped, not interpreted.
        assert_eq!(c.url(&["v1", "a/b"]).as_str(), "http://h:1/v1/a%2Fb");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "not a url", "ftp://h/", "http://h/?q=1", "mailto:x@y"] {
            assert!(
                matches!(Client::new(bad, None), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn problem_bodies_are_parsed_or_made_up() {
        let body = br#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"bad scope","field":"scopes"}"#;
        let p = problem_from(StatusCode::BAD_REQUEST, body);
        assert_eq!(p.field.as_deref(), Some("scopes"));
        assert_eq!(p.detail, "bad scope");
        let p = problem_from(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(p.status, 502);
        assert_eq!(p.title, "Bad Gateway");
        assert_eq!(p.detail, "upstream down");
        let e = Error::Api {
            status: 400,
            problem: problem_from(StatusCode::BAD_REQUEST, body),
        };
        assert_eq!(e.to_string(), "Bad Request (400): bad scope");
    }

    #[tokio::test]
    async fn collect_pages_follows_cursors_and_stops_on_repeats() {
        let pages = |c: Option<String>| async move {
            Ok(match c.as_deref() {
                None => Page {
                    items: vec![1, 2],
                    next_cursor: Some("a".into()),
                },
                Some("a") => Page {
                    items: vec![3],
                    next_cursor: Some("b".into()),
                },
                _ => Page {
                    items: vec![4],
                    next_cursor: None,
                },
            })
        };
        assert_eq!(collect_pages(pages).await.unwrap(), vec![1, 2, 3, 4]);

        let looping = |_c: Option<String>| async move {
            Ok(Page {
                items: vec![0],
                next_cursor: Some("same".into()),
            })
        };
        assert!(matches!(
            collect_pages(looping).await,
            Err(Error::Pagination(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error_without_the_token() {
        // Port 9 (discard) on localhost is closed on any sane test machine.
        let c = Client::new("http://127.0.0.1:9", Some("kw_secret_token".into())).unwrap();
        let e = c.healthz().await.unwrap_err();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        assert!(!format!("{e:?} {e}").contains("kw_secret_token"));
    }
}
