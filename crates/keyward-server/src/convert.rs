//! Mapping between the domain records of `keyward-core` and the wire types of
//! `keyward-proto`.

use keyward_core::VerifyCode;
use keyward_core::model::{AuditRecord, Identity, KeyRecord};
use keyward_core::ratelimit::RateLimitSpec;
use keyward_proto as proto;

pub fn identity(i: Identity) -> proto::Identity {
    proto::Identity {
        id: i.id,
        name: i.name,
        owner: i.owner,
        description: i.description,
        meta: i.meta,
        enabled: i.enabled,
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

pub fn key(k: KeyRecord) -> proto::Key {
    proto::Key {
        id: k.id,
        identity_id: k.identity_id,
        name: k.name,
        prefix: k.prefix,
        start: k.start,
        scopes: k.scopes,
        created_at: k.created_at,
        updated_at: k.updated_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        enabled: k.enabled,
        ip_allowlist: k.ip_allowlist,
        rate_limits: k.rate_limits.into_iter().map(rate_limit).collect(),
        remaining: k.remaining,
        last_used_at: k.last_used_at,
        meta: k.meta,
        rotated_from: k.rotated_from,
        rotated_to: k.rotated_to,
    }
}

pub fn rate_limit(r: RateLimitSpec) -> proto::RateLimit {
    proto::RateLimit {
        name: r.name,
        limit: r.limit,
        window_seconds: r.window_seconds,
    }
}

pub fn rate_limit_spec(r: proto::RateLimit) -> RateLimitSpec {
    RateLimitSpec {
        name: r.name,
        limit: r.limit,
        window_seconds: r.window_seconds,
    }
}

pub fn audit(r: AuditRecord) -> proto::AuditRecord {
    let e = r.entry;
    proto::AuditRecord {
        seq: r.seq,
        at: e.at,
        actor: e.actor,
        action: e.action,
        target: e.target,
        request_id: e.request_id,
        source_ip: e.source_ip,
        detail: e.detail,
    }
}

pub fn code(c: VerifyCode) -> proto::VerifyCode {
    match c {
        VerifyCode::Valid => proto::VerifyCode::Valid,
        VerifyCode::Malformed => proto::VerifyCode::Malformed,
        VerifyCode::NotFound => proto::VerifyCode::NotFound,
        VerifyCode::Revoked => proto::VerifyCode::Revoked,
        VerifyCode::Expired => proto::VerifyCode::Expired,
        VerifyCode::Disabled => proto::VerifyCode::Disabled,
        VerifyCode::IpNotAllowed => proto::VerifyCode::IpNotAllowed,
        VerifyCode::InsufficientScope => proto::VerifyCode::InsufficientScope,
        VerifyCode::RateLimited => proto::VerifyCode::RateLimited,
        VerifyCode::UsageExceeded => proto::VerifyCode::UsageExceeded,
    }
}
