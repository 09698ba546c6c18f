//! Short-lived tokens: exchange, introspection, the JWKS, and [`TokenVerifier`], which
//! checks tokens offline against the JWKS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_proto::{
    CreateToken, IntrospectToken, Jwks, TokenClaims, TokenCreated, TokenIntrospection,
};
use parking_lot::Mutex;
use reqwest::Method;

use crate::{Client, Error, NO_BODY, NO_QUERY, Result};

impl Client {
    /// `POST /v1/tokens`: exchanges this client's credential (a key) for a short-lived
    /// token.
    pub async fn create_token(&self, body: &CreateToken) -> Result<TokenCreated> {
        self.call(Method::POST, &["v1", "tokens"], NO_QUERY, Some(body))
            .await
    }

    /// `POST /v1/tokens/introspect` (scope `keyward:verify`). An inactive token is an
    /// `Ok` answer with `active: false`.
    pub async fn introspect_token(&self, token: &str) -> Result<TokenIntrospection> {
        let body = IntrospectToken {
            token: token.to_owned(),
        };
        self.call(
            Method::POST,
            &["v1", "tokens", "introspect"],
            NO_QUERY,
            Some(&body),
        )
        .await
    }

    /// `GET /.well-known/jwks.json` (no credential sent).
    pub async fn jwks(&self) -> Result<Jwks> {
        self.call(
            Method::GET,
            &[".well-known", "jwks.json"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }
}

/// Why a token was not accepted offline.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed Keyward token, a bad signature, an unknown `kid`, expired, or
    /// for another audience.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// The JWKS could not be fetched.
    #[error("cannot fetch the signing keys: {0}")]
    Jwks(#[source] Error),
}

/// Checks Keyward tokens offline: signature against the server's JWKS (fetched on first
/// use, fetched again when a token names an unknown `kid`, at most once per
/// `refresh_every`), expiry with `leeway`, and the audience if one is set.
///
/// Offline checks cannot see a revocation: the token's short life bounds it. Ask
/// [`Client::introspect_token`] where that is not enough.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    client: Client,
    audience: Option<String>,
    leeway: Duration,
    refresh_every: Duration,
    keys: Mutex<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl TokenVerifier {
    /// A verifier fetching the JWKS from `client`'s server; no audience check, 30 s
    /// leeway.
    pub fn new(client: Client) -> Self {
        Self::build(client, None, Duration::from_secs(30))
    }

    /// Only tokens whose `aud` is `audience` are accepted.
    pub fn with_audience(self, audience: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(i.client.clone(), Some(audience.into()), i.leeway)
    }

    /// Clock skew tolerated on `exp`.
    pub fn with_leeway(self, leeway: Duration) -> Self {
        let i = &self.inner;
        Self::build(i.client.clone(), i.audience.clone(), leeway)
    }

    fn build(client: Client, audience: Option<String>, leeway: Duration) -> Self {
        TokenVerifier {
            inner: Arc::new(VerifierInner {
                client,
                audience,
                leeway,
                refresh_every: Duration::from_secs(1),
                keys: Mutex::new(HashMap::new()),
                last_fetch: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The claims of `token` if it is valid now.
    pub async fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("not an EdDSA token".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid in the header".into()))?;
        let mut key = self.inner.keys.lock().get(&kid).cloned();
        if key.is_none() {
            self.refresh().await?;
            key = self.inner.keys.lock().get(&kid).cloned();
        }
        let key = key.ok_or_else(|| TokenError::Invalid(format!("unknown kid {kid}")))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = self.inner.leeway.as_secs();
        match &self.inner.audience {
            // Without "aud" among the required claims, a token with no audience at all
            // would pass the audience check.
            Some(aud) => {
                validation.set_required_spec_claims(&["exp", "sub", "aud"]);
                validation.set_audience(&[aud]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.validate_aud = false;
            }
        }
        jsonwebtoken::decode::<TokenClaims>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Fetches the JWKS unless it was fetched less than `refresh_every` ago.
    async fn refresh(&self) -> Result<(), TokenError> {
        let _one = self.inner.fetching.lock().await;
        if self
            .inner
            .last_fetch
            .lock()
            .is_some_and(|t| t.elapsed() < self.inner.refresh_every)
        {
            return Ok(());
        }
        let jwks = self.inner.client.jwks().await.map_err(TokenError::Jwks)?;
        *self.inner.last_fetch.lock() = Some(Instant::now());
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        *self.inner.keys.lock() = keys;
        Ok(())
    }
}
