//! `GET /v1/audit/verify`: recomputes the audit log's hash chain and checks its signed
//! checkpoints (`keyward_core::audit_chain`).

use axum::Json;
use axum::extract::State;
use keyward_core::audit_chain::ChainVerdict;
use keyward_proto as proto;

use crate::auth::{AUDIT_READ, Principal};
use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = proto::AuditVerification)),
    security(("bearer" = [])))]
pub async fn verify(
    State(st): State<AppState>,
    who: Principal,
) -> ApiResult<Json<proto::AuditVerification>> {
    who.require(AUDIT_READ)?;
    let verdict =
        keyward_store::audit_chain::verify_chain(&*st.store, st.audit_key.as_ref()).await?;
    if !verdict.ok {
        tracing::error!(
            first_bad_seq = ?verdict.first_bad_seq,
            reason = verdict.reason.as_deref().unwrap_or(""),
            "the audit log does not verify"
        );
    }
    Ok(Json(to_wire(verdict, st.audit_key.is_some())))
}

pub fn to_wire(v: ChainVerdict, signatures_checked: bool) -> proto::AuditVerification {
    proto::AuditVerification {
        ok: v.ok,
        checked: v.checked,
        first_bad_seq: v.first_bad_seq,
        checkpoints: v.checkpoints,
        signatures_checked,
        reason: v.reason,
    }
}
