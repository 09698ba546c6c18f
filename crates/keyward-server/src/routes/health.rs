//! Liveness, readiness, metrics and the API description: no authentication.

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
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the store answers", body = proto::Health),
              (status = 503, body = proto::Problem)))]
pub async fn readyz(State(st): State<AppState>) -> ApiResult<Json<proto::Health>> {
    st.store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("the store does not answer".into()))?;
    Ok(Json(proto::Health {
        status: "ready".into(),
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
