//! The stateless part of the verify decision: revocation, expiry, enablement, IP and
//! scopes, in the contract's order. Rate limits and `remaining` are stateful and are
//! applied after this by the caller (the server's verifier), in that order.

use std::net::IpAddr;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::code::VerifyCode;
use crate::ip::IpAllowlist;
use crate::permission::Permission;
use crate::scope;
use crate::time::Timestamp;

/// What verify needs of a key, prepared once when the key is loaded into the cache so
/// that evaluating it allocates nothing.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub enabled: bool,
    pub identity_enabled: bool,
    pub ip_allowlist: IpAllowlist,
    pub scopes: ScopeList,
}

/// A key's granted scopes as verify keeps them: the first in the list itself rather
/// than on the heap, and its text too when it has at most 24 bytes. Verify reads every
/// granted scope of the key it checks; with a large key set each key is a CPU cache
/// miss, and a `Vec<String>` added two more (the list, then each string). Most keys hold
/// one short scope, which this keeps in the key's own cache lines.
pub type ScopeList = SmallVec<[CompactString; 1]>;

/// The scope list of `scopes`.
pub fn scope_list<S: AsRef<str>>(scopes: &[S]) -> ScopeList {
    scopes
        .iter()
        .map(|s| CompactString::new(s.as_ref()))
        .collect()
}

/// What the caller asks of a key.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest<'a> {
    /// All of these are required.
    pub scopes: &'a [String],
    pub permission: Option<&'a Permission>,
    /// The address the key was presented from.
    pub ip: Option<IpAddr>,
}

impl KeyPolicy {
    /// Runs REVOKED, EXPIRED, DISABLED, IP_NOT_ALLOWED, INSUFFICIENT_SCOPE in that order
    /// and returns the first failing code, or `VALID`.
    ///
    /// A key is revoked when `revoked_at <= now`; expired when `expires_at <= now`; an
    /// allowlist with entries refuses a missing `ip`.
    pub fn evaluate(&self, req: &VerifyRequest<'_>, now: Timestamp) -> VerifyCode {
        if self.revoked_at.is_some_and(|t| t <= now) {
            return VerifyCode::Revoked;
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return VerifyCode::Expired;
        }
        if !self.enabled || !self.identity_enabled {
            return VerifyCode::Disabled;
        }
        if !self.ip_allowlist.is_empty() && !req.ip.is_some_and(|ip| self.ip_allowlist.allows(ip)) {
            return VerifyCode::IpNotAllowed;
        }
        if !scope::grants_all(&self.scopes, req.scopes)
            || req.permission.is_some_and(|p| !p.evaluate(&self.scopes))
        {
            return VerifyCode::InsufficientScope;
        }
        VerifyCode::Valid
    }
}
