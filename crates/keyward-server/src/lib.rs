//! Keyward's HTTP server: axum routes over the domain logic of `keyward-core` and a
//! `keyward-store::Store`, with the verify cache, rate limiters and metrics.
//!
//! **Architecture Invariant:** handlers hold no domain rules of their own beyond
//! authorisation and field mapping: the decisions live in `keyward-core`, the data in the
//! `Store`. A PostgreSQL store or a gateway reuses them unchanged.

pub mod allocator;
pub mod anomalies;
pub mod audit_signing;
pub mod audit_stream;
pub mod auth;
pub mod background;
pub mod cluster;
pub mod console;
pub mod convert;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod jobs;
pub mod openapi;
pub mod redis_limits;
pub mod rotation_status;
pub mod routes;
pub mod sealed_secrets;
pub mod security_headers;
pub mod sessions;
pub mod shared_limits;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod usage;
mod usage_alerts;
pub mod vault;
pub mod vault_jobs;
pub mod verifier;
pub mod webhooks;

mod http_metrics;
mod request_id;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use keyward_core::key::{self, KeyPrefix};
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::time::Timestamp;
use keyward_store::{Bootstrap, PgStore, SqliteStore, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::redis_limits::{RedisDown, RedisLimits};
use crate::routes::{
    admins, audit, audit_verify, health, identities, keys, leaks, posture, rotation_policy,
    secrets, tokens as token_routes, verify, webhooks as webhook_routes,
};
use crate::state::AppState;
use crate::verifier::Verifier;

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Keys held in the verify cache.
pub const CACHE_CAPACITY: usize = 1_000_000;

/// The current time as Keyward stores it (microsecond precision).
pub fn now() -> Timestamp {
    keyward_core::time::truncate(chrono::Utc::now())
}

/// What `keyward serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The embedded store's folder.
    pub data_dir: PathBuf,
    /// `None`: the embedded store in `data_dir`.
    pub database_url: Option<String>,
    /// `redis://...`: rate limits shared by every node through this Redis. `None`:
    /// each node enforces them on its own.
    pub redis_url: Option<String>,
    /// What rate-limited keys get while Redis is unreachable.
    pub redis_down: RedisDown,
    /// Webhook delivery and `key.expiring` timing.
    pub webhooks: webhooks::WebhookSettings,
    /// The vault's master keys and limits (`vault.rs`).
    pub vault: vault::VaultConfig,
    /// Usage events: queue size and retention.
    pub usage: usage::UsageSettings,
    /// The Ed25519 key file that signs audit checkpoints (`None`: `audit-signing.key`
    /// in `data_dir` for the embedded store, no signing on PostgreSQL).
    pub audit_signing_key: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// PEM certificate chain and private key: serve HTTPS (and send HSTS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Stream the audit log to this append-only JSON-lines file.
    pub audit_log_file: Option<PathBuf>,
    /// How often the jobs leader makes a new token signing key current.
    pub token_key_rotation: std::time::Duration,
    /// Online anomaly detection (`anomalies/`).
    pub anomalies: anomalies::AnomalySettings,
    /// `keyward gateway`: proxy to an upstream on `listen` (`gateway/`).
    pub gateway: Option<gateway::GatewayConfig>,
}

impl ServerConfig {
    /// The embedded store in `data_dir`, no Redis.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            database_url: None,
            redis_url: None,
            redis_down: RedisDown::default(),
            webhooks: webhooks::WebhookSettings::default(),
            vault: vault::VaultConfig::default(),
            usage: usage::UsageSettings::default(),
            audit_signing_key: None,
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            audit_log_file: None,
            token_key_rotation: tokens::DEFAULT_ROTATION,
            anomalies: Default::default(),
            gateway: None,
        }
    }
}

/// Prepares the shared rate limits if `cfg` names a Redis (connected on first use).
pub fn open_redis(cfg: &ServerConfig) -> anyhow::Result<Option<Arc<RedisLimits>>> {
    match cfg.redis_url.as_deref() {
        None | Some("") => Ok(None),
        Some(url) => Ok(Some(
            RedisLimits::new(url, cfg.redis_down).context("--redis-url")?,
        )),
    }
}

/// Opens (creating if needed) the configured store and applies its migrations.
pub async fn open_store(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    match cfg.database_url.as_deref() {
        None | Some("") => {
            let store = SqliteStore::open(&cfg.data_dir)
                .await
                .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
            Ok(Arc::new(store))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let store = SqliteStore::open_url(url)
                .await
                .context("opening the SQLite store")?;
            Ok(Arc::new(store))
        }
        Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            let store = PgStore::open(url)
                .await
                .context("opening the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
        Some(_) => anyhow::bail!("--database-url must start with sqlite: or postgres:"),
    }
}

/// Creates the root identity and the bootstrap root key (scope `keyward:admin`) if the
/// store is empty. Returns the key, to be shown once, or `None` if the store was
/// already initialised.
pub async fn bootstrap(store: &dyn Store) -> anyhow::Result<Option<Zeroizing<String>>> {
    let now = now();
    let identity = Identity {
        id: Uuid::now_v7(),
        name: "keyward-root".into(),
        owner: "keyward".into(),
        description: "The bootstrap administrator, created when the store was initialised.".into(),
        meta: Default::default(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    let prefix = KeyPrefix::default();
    let minted = key::mint(&prefix);
    let key = KeyRecord {
        id: Uuid::now_v7(),
        identity_id: identity.id,
        name: "root".into(),
        prefix: prefix.as_str().into(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: vec![auth::ADMIN.into()],
        created_at: now,
        updated_at: now,
        expires_at: None,
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![],
        rate_limits: vec![],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    };
    let audit = AuditEntry {
        at: now,
        actor: "system".into(),
        action: "store.bootstrap".into(),
        target: key.id.to_string(),
        request_id: None,
        source_ip: None,
        detail: serde_json::json!({"identity_id": identity.id, "start": key.start}),
    };
    let created = store
        .bootstrap(&Bootstrap {
            identity,
            key,
            audit,
        })
        .await?;
    Ok(created.then_some(minted.plaintext))
}

/// The Prometheus recorder is process-wide; servers started in one process (tests)
/// share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/identities",
            post(identities::create).get(identities::list),
        )
        .route(
            "/v1/identities/{id}",
            get(identities::show)
                .patch(identities::update)
                .delete(identities::delete),
        )
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", get(keys::show).patch(keys::update))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/verify/batch", post(verify::verify_batch))
        .route("/v1/leaks", post(leaks::report))
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/webhooks",
            post(webhook_routes::create).get(webhook_routes::list),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhook_routes::show).delete(webhook_routes::delete),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhook_routes::deliveries),
        )
        .route("/v1/secrets", get(secrets::list))
        .route(
            "/v1/secrets/{*path}",
            put(secrets::put).get(secrets::get).delete(secrets::delete),
        )
        .route(
            "/v1/keys/{id}/rotation-policy",
            put(rotation_policy::put)
                .get(rotation_policy::show)
                .delete(rotation_policy::delete),
        )
        .route(
            "/v1/keys/{id}/rotation-status",
            get(routes::rotation_status::show),
        )
        .route("/v1/usage", get(routes::usage::usage))
        .route("/v1/usage/top", get(routes::usage::top))
        .route("/v1/reports/posture", get(posture::report))
        .route("/v1/audit/verify", get(audit_verify::verify))
        .route("/v1/admins", post(admins::create).get(admins::list))
        .route("/v1/admins/{id}/disable", post(admins::disable))
        .route("/v1/sessions", post(admins::login))
        .route("/v1/tokens", post(token_routes::create))
        .route("/v1/tokens/introspect", post(token_routes::introspect))
        .route("/v1/anomalies", get(routes::anomalies::list))
        .route(
            "/v1/identities/{id}/anomaly-policy",
            put(routes::anomalies::put_policy).get(routes::anomalies::show_policy),
        );
    // The API's routes carry their `/v1` prefix themselves rather than a nested router:
    // a nested router costs every request a prefix strip and a second route clone (a
    // few percent of a verify over HTTP).
    Router::new()
        .merge(v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/.well-known/jwks.json", get(token_routes::jwks))
        .nest("/console", console::router())
        .route("/console/", get(console::to_console))
        .fallback(|| async { ApiError::NotFound("no such path".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(http_metrics::record))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(
            request_id::Sequential::new(),
        ))
        .with_state(state)
}

/// A running server: its bound address and a handle to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// A gateway's management API (`--api-listen`), when it serves one.
    pub api_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Graceful shutdown: stops accepting, finishes in-flight requests, flushes
    /// write-behind state.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        self.task.await?
    }
}

/// Binds `cfg.listen` (port 0 picks a free port), bootstraps an empty store (printing
/// `root key: <key>` on a line of its own to stderr), and serves in a background task.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    let store = open_store(&cfg).await?;
    let redis = open_redis(&cfg)?;
    // Only the default embedded store may keep an auto-created master key next to it.
    let embedded = matches!(cfg.database_url.as_deref(), None | Some(""));
    let vault = vault::load_shared(&cfg.vault, embedded.then_some(cfg.data_dir.as_path()))?;
    let security = Security {
        audit_signer: audit_signing::signer_for(&cfg)?.map(Arc::new),
        cors_origins: cfg.cors_origins.clone(),
        audit_log_file: cfg.audit_log_file.clone(),
        ..Security::default()
    };
    let security = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Security {
            tls: Some(tls::load(cert, key)?),
            hsts: true,
            ..security
        },
        (None, None) => security,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let parts = Parts {
        redis,
        webhooks: cfg.webhooks,
        vault,
        usage: cfg.usage,
        security,
        token_key_rotation: cfg.token_key_rotation,
        anomalies: cfg.anomalies.clone(),
        gateway: cfg.gateway,
    };
    let root = bootstrap(&*store).await?;
    let started = start_with_parts(store, parts, cfg.listen).await;
    if let Some(root) = root {
        // The one and only time the root key is shown: once the server listens, so a
        // script that reads it can use it at once; and even if serving failed, since
        // the store holds it now.
        eprintln!("root key: {}", root.as_str());
    }
    started
}

/// What a server adds to guard itself and its record (issue 9).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Signs audit checkpoints (and verifies them, with its public half).
    pub audit_signer: Option<Arc<keyward_core::audit_chain::CheckpointSigner>>,
    /// Allowances for failed logins and unknown credentials.
    pub throttle: throttle::Limits,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Send HSTS (when serving HTTPS).
    pub hsts: bool,
    /// Serve HTTPS with this configuration (`tls::load`); `None`: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Stream the audit log to this append-only JSON-lines file.
    pub audit_log_file: Option<PathBuf>,
}

/// Serves an already opened store on `listen`, in a background task.
pub async fn start_on(store: Arc<dyn Store>, listen: SocketAddr) -> anyhow::Result<RunningServer> {
    start_with(store, None, listen).await
}

/// Serves an already opened store, with rate limits shared through `redis` if given,
/// on `listen`, in a background task.
pub async fn start_with(
    store: Arc<dyn Store>,
    redis: Option<Arc<RedisLimits>>,
    listen: SocketAddr,
) -> anyhow::Result<RunningServer> {
    let parts = Parts {
        redis,
        ..Parts::default()
    };
    start_with_parts(store, parts, listen).await
}

/// What a server has beyond its store; each part off (or at its defaults) by default.
pub struct Parts {
    /// Rate limits shared through this Redis.
    pub redis: Option<Arc<RedisLimits>>,
    /// Webhook delivery and `key.expiring` timing.
    pub webhooks: webhooks::WebhookSettings,
    /// The secrets vault (off when `None`: secret calls answer 503).
    pub vault: Option<Arc<vault::Vault>>,
    /// Usage events: queue size and retention.
    pub usage: usage::UsageSettings,
    /// TLS, headers, throttling, audit checkpoints and streaming.
    pub security: Security,
    /// How often the jobs leader makes a new token signing key current.
    pub token_key_rotation: std::time::Duration,
    /// Online anomaly detection (`anomalies/`).
    pub anomalies: anomalies::AnomalySettings,
    /// Proxy to an upstream on the main listener (`gateway/`); `None`: serve the API.
    pub gateway: Option<gateway::GatewayConfig>,
}

impl Default for Parts {
    fn default() -> Parts {
        Parts {
            redis: None,
            webhooks: Default::default(),
            vault: None,
            usage: Default::default(),
            security: Default::default(),
            token_key_rotation: tokens::DEFAULT_ROTATION,
            anomalies: Default::default(),
            gateway: None,
        }
    }
}

/// Serves an already opened store with these parts on `listen`, in a background task.
pub async fn start_with_parts(
    store: Arc<dyn Store>,
    parts: Parts,
    listen: SocketAddr,
) -> anyhow::Result<RunningServer> {
    let Parts {
        redis,
        webhooks: webhook_settings,
        vault,
        usage: usage_settings,
        security,
        token_key_rotation,
        anomalies: anomaly_settings,
        gateway,
    } = parts;
    if let Some(v) = vault.as_deref() {
        // The one-time upgrade of secrets stored in the clear before sealing existed.
        sealed_secrets::seal_plaintext(&*store, v)
            .await
            .context("sealing secrets stored in the clear")?;
    }
    let jobs_leader = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shared = redis
        .clone()
        .map(|r| r as Arc<dyn shared_limits::SharedLimiter>);
    // The recorder first: the verifier registers its counters when it is built.
    let metrics = metrics_handle();
    let (verifier, last_used) =
        Verifier::for_server(store.clone(), CACHE_CAPACITY, shared, usage_settings.record);
    if !usage_settings.record {
        tracing::warn!(
            "usage recording is OFF (a measurement setting): no usage events, analytics or last-use times"
        );
    }
    let signing_keys = tokens::SigningKeys::new(store.clone(), vault.clone());
    let state = AppState::new(state::SharedState {
        store: store.clone(),
        verifier: verifier.clone(),
        metrics,
        redis,
        jobs_leader: jobs_leader.clone(),
        vault: vault.clone(),
        audit_key: security.audit_signer.as_ref().map(|s| s.verifying_key()),
        throttle: Arc::new(throttle::Throttle::new(security.throttle)),
        tokens: signing_keys.clone(),
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "keyward listening");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let follower = cluster::follow_changes(&*store, verifier.clone(), rx.clone());
    let old_version_before = webhook_settings.old_version_before;
    let deliveries = webhooks::spawn(
        store.clone(),
        jobs_leader.clone(),
        webhook_settings,
        vault.clone(),
        rx.clone(),
    );
    let vault_jobs = vault_jobs::spawn(
        store.clone(),
        verifier.clone(),
        (vault, old_version_before),
        jobs_leader.clone(),
        rx.clone(),
    );
    let jobs = jobs::spawn(
        store.clone(),
        jobs_leader.clone(),
        rx.clone(),
        usage_settings,
        (signing_keys, token_key_rotation),
    );
    let detection = anomalies::spawn(
        store.clone(),
        verifier.clone(),
        jobs_leader.clone(),
        anomaly_settings,
        rx.clone(),
    );
    // The usage writer stops only once the HTTP server has finished every request, so
    // its last drain sees every event.
    let (usage_stop, usage_stopped) = tokio::sync::watch::channel(false);
    let usage_writer = background::spawn(
        "keyward-usage",
        usage::write_usage_alerting(
            verifier.usage().clone(),
            store.clone(),
            usage_stopped,
            usage_settings.alert_window,
        ),
    );
    // The audit log's readers take their last look only once every task that may
    // append to it has stopped: the final checkpoint then signs the true head, and the
    // stream ends with the last record.
    let (writers_stop, writers_stopped) = tokio::sync::watch::channel(false);
    let checkpoints = security.audit_signer.clone().map(|signer| {
        audit_signing::spawn_checkpoints(
            store.clone(),
            signer,
            jobs_leader.clone(),
            rx.clone(),
            writers_stopped.clone(),
        )
    });
    let stream = match security.audit_log_file.clone() {
        Some(path) => Some(audit_stream::spawn(store.clone(), path, writers_stopped)?),
        None => None,
    };
    let flusher = tokio::spawn(verifier::flush_last_used(store, last_used, rx.clone()));
    let app =
        security_headers::apply(router(state.clone()), security.hsts, &security.cors_origins)?;
    // Gateway mode: the main listener proxies; the API moves to its own listener, if any.
    let (app, api_server) = match gateway {
        None => (app, None),
        Some(g) => gateway::mount(g, &state, app, security.tls.is_some(), rx.clone()).await?,
    };
    let api_addr = api_server.as_ref().map(|a| a.addr);
    let mut stop = rx;
    // Ok: plain HTTP; Err: HTTPS (the two listener types, without a new enum).
    let listener = match security.tls.clone() {
        Some(config) => Err(tls::TlsListener::new(listener, config)?),
        None => Ok(listener),
    };
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match listener {
            Err(tls) => axum::serve(
                tls,
                app.layer(axum::middleware::from_fn(tls::peer_as_socket_addr))
                    .into_make_service_with_connect_info::<tls::TlsPeer>(),
            )
            .with_graceful_shutdown(stopped)
            .await
            .context("serving HTTPS")?,
            Ok(plain) => axum::serve(
                plain,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
            .context("serving HTTP")?,
        }
        if let Some(api) = api_server {
            api.task.await.context("the gateway's API listener")??;
        }
        let _ = usage_stop.send(true);
        usage_writer.await.context("writing usage events")?;
        flusher.await.context("flushing last-use times")?;
        if let Some(f) = follower {
            f.await.context("following the change feed")?;
        }
        jobs.await.context("background jobs")?;
        if let Some(d) = detection {
            d.await.context("anomaly detection")?;
        }
        deliveries.await.context("webhook delivery")?;
        vault_jobs.await.context("vault jobs")?;
        let _ = writers_stop.send(true);
        if let Some(c) = checkpoints {
            c.await.context("audit checkpoints")?;
        }
        if let Some(s) = stream {
            s.await.context("audit log stream")?;
        }
        tracing::info!("keyward stopped");
        Ok(())
    });
    Ok(RunningServer {
        addr,
        api_addr,
        shutdown: Some(tx),
        task,
    })
}

/// Runs until `shutdown` resolves (SIGTERM/ctrl-c in the binary), then shuts down
/// gracefully.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = start(cfg).await?;
    shutdown.await;
    server.stop().await
}
