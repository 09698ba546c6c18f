//! `POST /v1/verify`: the hot path over HTTP; `POST /v1/verify/batch`: many
//! verifications for the price of one HTTP exchange.

use axum::extract::State;
use keyward_core::permission::Permission;
use keyward_core::policy::VerifyRequest;
use keyward_core::scope;
use keyward_core::usage::UsageTags;
use keyward_proto as proto;

use crate::auth::{Principal, VERIFY};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::verify_answer::{self, Answer, JsonBytes};
use crate::state::AppState;
use crate::verifier::Outcome;

#[utoipa::path(post, path = "/v1/verify", tag = "verify", request_body = proto::VerifyRequest,
    responses((status = 200, description = "the decision, whatever it is", body = proto::VerifyResponse),
              (status = 400, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::VerifyRequest>,
) -> ApiResult<JsonBytes> {
    who.require(VERIFY)?;
    let decision = Checked::new(body)?.decide(&st, who.at).await?;
    let answer = decision.answer();
    let mut json = Vec::with_capacity(answer.size_hint());
    answer.write(&mut json);
    Ok(JsonBytes(json))
}

#[utoipa::path(post, path = "/v1/verify/batch", tag = "verify", request_body = proto::VerifyBatchRequest,
    responses((status = 200, description = "the decisions, in the order of the requests", body = proto::VerifyBatchResponse),
              (status = 400, description = "a request is malformed (the field is named, as `requests[3].scopes[0]`); none was verified", body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn verify_batch(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::VerifyBatchRequest>,
) -> ApiResult<JsonBytes> {
    who.require(VERIFY)?;
    if body.requests.is_empty() {
        return Err(ApiError::field("requests", "at least one verification"));
    }
    if body.requests.len() > proto::VERIFY_BATCH_MAX {
        return Err(ApiError::field(
            "requests",
            format!("at most {} verifications", proto::VERIFY_BATCH_MAX),
        ));
    }
    // Every request is checked before any is verified: a malformed batch consumes no
    // rate limit or quota and records no usage.
    let checked = body
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| Checked::new(r).map_err(|e| e.within(&format!("requests[{i}]."))))
        .collect::<Result<Vec<_>, _>>()?;
    // When the usage writer falls behind, batches wait for it rather than have their
    // events dropped (`UsageRecorder::wait_for_room`).
    st.verifier
        .usage()
        .wait_for_room(BATCH_WAITS_FOR_RECORDING)
        .await;
    let now = crate::now();
    let mut decisions = Vec::with_capacity(checked.len());
    for c in checked {
        decisions.push(c.decide(&st, now).await?);
    }
    let answers: Vec<Answer<'_>> = decisions.iter().map(Decision::answer).collect();
    Ok(JsonBytes(verify_answer::write_batch(&answers)))
}

/// Longest a batch waits for room in the usage queue.
const BATCH_WAITS_FOR_RECORDING: std::time::Duration = std::time::Duration::from_millis(10);

/// A verify request whose scopes, permission, address and tags are well formed.
struct Checked {
    key: String,
    scopes: Vec<String>,
    permission: Option<Permission>,
    ip: Option<std::net::IpAddr>,
    tags: Option<Box<UsageTags>>,
}

impl Checked {
    /// Checks `body`; the error names the bad field.
    fn new(body: proto::VerifyRequest) -> Result<Checked, ApiError> {
        let scopes = body.scopes.unwrap_or_default();
        for (i, s) in scopes.iter().enumerate() {
            scope::validate(s)
                .map_err(|e| ApiError::field(format!("scopes[{i}]"), e.to_string()))?;
        }
        let permission = body
            .permission
            .as_deref()
            .map(Permission::parse)
            .transpose()
            .map_err(|e| ApiError::field("permission", e.to_string()))?;
        let ip = body
            .ip
            .as_deref()
            .map(|s| s.trim().parse::<std::net::IpAddr>())
            .transpose()
            .map_err(|_| ApiError::field("ip", "not an IPv4 or IPv6 address"))?;
        let tags = body
            .tags
            .map(|t| {
                keyward_core::usage::validate_tags(&t)
                    .map(|()| Box::new(t))
                    .map_err(|e| ApiError::field(e.field, e.reason))
            })
            .transpose()?;
        Ok(Checked {
            key: body.key,
            scopes,
            permission,
            ip,
            tags,
        })
    }

    /// Verifies the key (recording the usage event).
    async fn decide(
        self,
        st: &AppState,
        now: keyward_core::time::Timestamp,
    ) -> ApiResult<Decision> {
        let req = VerifyRequest {
            scopes: &self.scopes,
            permission: self.permission.as_ref(),
            ip: self.ip,
        };
        let outcome = st
            .verifier
            .verify_tagged(&self.key, &req, now, self.tags)
            .await?;
        let key = outcome.key.as_deref();
        let rate_limit = match (&outcome.denied, &outcome.allowance) {
            (Some(d), _) => Some(proto::RateLimitStatus {
                name: d.name.clone(),
                limit: d.limit,
                remaining: 0,
                reset_at: now + d.retry_after,
            }),
            (None, Some(a)) => Some(proto::RateLimitStatus {
                name: key
                    .and_then(|k| k.rate_limits.get(a.index))
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                limit: a.limit,
                remaining: a.remaining,
                reset_at: now + a.reset_after,
            }),
            _ => None,
        };
        Ok(Decision {
            outcome,
            rate_limit,
        })
    }
}

/// A verification's outcome and the rate limit it reports: what the answer is written
/// from, borrowing the key's ids and scopes from the cache rather than copying them.
struct Decision {
    outcome: Outcome,
    rate_limit: Option<proto::RateLimitStatus>,
}

impl Decision {
    fn answer(&self) -> Answer<'_> {
        let key = self.outcome.key.as_deref();
        Answer {
            code: self.outcome.code,
            key_id: key.map(|k| k.id),
            identity_id: key.map(|k| k.identity_id),
            scopes: key.map(|k| k.policy.scopes.as_slice()),
            remaining: self.outcome.remaining,
            rate_limit: self.rate_limit.as_ref(),
            expires_at: key.and_then(|k| k.policy.expires_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<Args, Fut, F: CallWith<Args, Fut>>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    trait CallWith<Args, Fut> {}
    impl<A, B, Fut, F: FnOnce(A, B) -> Fut> CallWith<(A, B), Fut> for F {}
    impl<A, B, C, Fut, F: FnOnce(A, B, C) -> Fut> CallWith<(A, B, C), Fut> for F {}
    impl<A, B, C, D, Fut, F: FnOnce(A, B, C, D) -> Fut> CallWith<(A, B, C, D), Fut> for F {}
    impl<A, B, C, D, E, Fut, F: FnOnce(A, B, C, D, E) -> Fut> CallWith<(A, B, C, D, E), Fut> for F {}

    /// A warm verification's futures carry none of the cold path's state (the store's
    /// and Redis's futures, boxed in `Verifier::finish`): each future is copied whole as
    /// it is created and moved, once per await level, on every request. Inline, the
    /// handler's future was 1,632 bytes and `verify_tagged`'s 992.
    #[test]
    fn a_warm_verification_carries_no_cold_path_state() {
        use crate::verifier::Verifier;
        let sizes = [
            ("POST /v1/verify's handler", future_size(&verify), 1024),
            (
                "POST /v1/verify/batch's handler",
                future_size(&verify_batch),
                1024,
            ),
            (
                "Verifier::verify_tagged",
                future_size(&Verifier::verify_tagged),
                256,
            ),
            (
                "Verifier::authenticate",
                future_size(&Verifier::authenticate),
                256,
            ),
            (
                "auth::authenticate",
                future_size(&crate::auth::authenticate),
                512,
            ),
        ];
        for (what, size, most) in sizes {
            assert!(
                size <= most,
                "{what}'s future is {size} bytes (at most {most})"
            );
        }
    }
}
