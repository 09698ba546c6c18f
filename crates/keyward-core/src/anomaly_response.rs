//! The automatic response to an anomaly, chosen per identity: notify only (the default),
//! or disable the key at or above a minimum severity. Pure decision; the server acts.
//!
//! Keys holding `keyward:` scopes are never disabled automatically: an anomaly detector
//! that disables the administrators' own keys could lock every operator out of the
//! service (and an attacker able to fake anomalous traffic with a stolen copy could use
//! it to do so on purpose). Those anomalies notify instead.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::anomaly::Severity;

/// What to do with an identity's keys when an anomaly is raised about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseAction {
    /// Alert (webhook `anomaly.detected`) and nothing more.
    Notify,
    /// Alert and disable the key (`enabled = false`), reversibly.
    DisableKey,
}

impl ResponseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseAction::Notify => "notify",
            ResponseAction::DisableKey => "disable_key",
        }
    }

    pub fn parse(s: &str) -> Option<ResponseAction> {
        [ResponseAction::Notify, ResponseAction::DisableKey]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

impl fmt::Display for ResponseAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identity's anomaly policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyPolicy {
    pub action: ResponseAction,
    /// `DisableKey` applies to anomalies of this severity or above; below it, notify.
    pub min_severity: Severity,
}

impl Default for AnomalyPolicy {
    /// Notify only: disabling keys is something an operator opts into.
    fn default() -> Self {
        AnomalyPolicy {
            action: ResponseAction::Notify,
            min_severity: Severity::High,
        }
    }
}

/// What the response to one anomaly is; its name is the anomaly's `action_taken`
/// (with [`Decision::as_str`]) once carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Notify,
    DisableKey,
    /// The policy asked to disable, but the key is one of Keyward's own (`keyward:`
    /// scopes): notify only, to rule out locking the operators out.
    NotifyAdminKey,
}

impl Decision {
    /// The `action_taken` recorded when the decision was carried out.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Notify => "notified",
            Decision::DisableKey => "key_disabled",
            Decision::NotifyAdminKey => "notified_admin_key_kept",
        }
    }
}

/// Decides the response to an anomaly of `severity` about a key (`admin_key`: whether it
/// holds scopes in the `keyward:` namespace).
pub fn decide(policy: &AnomalyPolicy, severity: Severity, admin_key: bool) -> Decision {
    match policy.action {
        ResponseAction::Notify => Decision::Notify,
        ResponseAction::DisableKey if severity < policy.min_severity => Decision::Notify,
        ResponseAction::DisableKey if admin_key => Decision::NotifyAdminKey,
        ResponseAction::DisableKey => Decision::DisableKey,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disables_only_at_or_above_the_minimum_and_never_admin_keys() {
        let policy = AnomalyPolicy {
            action: ResponseAction::DisableKey,
            min_severity: Severity::Medium,
        };
        assert_eq!(decide(&policy, Severity::Low, false), Decision::Notify);
        assert_eq!(
            decide(&policy, Severity::Medium, false),
            Decision::DisableKey
        );
        assert_eq!(decide(&policy, Severity::High, false), Decision::DisableKey);
        assert_eq!(
            decide(&policy, Severity::High, true),
            Decision::NotifyAdminKey
        );
        assert_eq!(decide(&policy, Severity::Low, true), Decision::Notify);
        let default = AnomalyPolicy::default();
        assert_eq!(decide(&default, Severity::High, false), Decision::Notify);
        for a in [ResponseAction::Notify, ResponseAction::DisableKey] {
            assert_eq!(ResponseAction::parse(a.as_str()), Some(a));
        }
    }
}
