//! Liveness, readiness, metrics and the API description: no authentication.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use keyward_proto as proto;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up", body = proto::Health)))]
pub async fn healthz() -> Json<proto::Health> {
    Json(proto::Health {
        status: "ok".into(),
        ..proto::Health::default()
    })
}

/// How long readiness waits for the store.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the store answers; `checks` says how Redis and the job leadership are", body = proto::Health),
              (status = 503, body = proto::Problem)))]
pub async fn readyz(State(st): State<AppState>) -> ApiResult<Json<proto::Health>> {
    let store = async {
        matches!(
            tokio::time::timeout(STORE_PING_TIMEOUT, st.store.ping()).await,
            Ok(Ok(()))
        )
    };
    let redis = async {
        match &st.redis {
            Some(r) => Some((r.ping().await, r.fails_closed())),
            None => None,
        }
    };
    let (store_ok, redis) = tokio::join!(store, redis);
    if !store_ok {
        return Err(ApiError::Unavailable("the store does not answer".into()));
    }
    let mut checks = BTreeMap::from([("store".to_owned(), "ok".to_owned())]);
    match redis {
        Some((true, _)) => {
            checks.insert("redis".into(), "ok".into());
        }
        // Still ready: every node shares the outage, and keys without rate limits are
        // served either way; taking all nodes out of the load balancer helps nobody.
        Some((false, true)) => {
            checks.insert(
                "redis".into(),
                "unreachable: rate-limited keys refused (fail closed)".into(),
            );
        }
        Some((false, false)) => {
            checks.insert("redis".into(), "unreachable: per-node rate limits".into());
        }
        None => {}
    }
    let leads = st.jobs_leader.load(std::sync::atomic::Ordering::Relaxed);
    checks.insert(
        "jobs".into(),
        if leads { "leader" } else { "standby" }.into(),
    );
    Ok(Json(proto::Health {
        status: "ready".into(),
        checks,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    st.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this description")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
