//! `GET /v1/keys/{id}/rotation-status`: the newest key of a rotation lineage and, for
//! each older one, who still used it since it was rotated (`rotation_status.rs`).

use axum::Json;
use axum::extract::State;
use keyward_proto as proto;

use crate::auth::{KEYS_READ, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::IdPath;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/keys/{id}/rotation-status", tag = "keys",
    params(("id" = Uuid, Path, description = "the id of any key of the lineage")),
    responses((status = 200, body = proto::RotationStatus),
              (status = 403, body = proto::Problem), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::RotationStatus>> {
    who.require(KEYS_READ)?;
    crate::rotation_status::status(&*st.store, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))
}
