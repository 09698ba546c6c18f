//! `key.rate_limited` and `key.usage_exceeded` alerts, raised by the usage writer from
//! the batches it has written (never on the verify path).
//!
//! For each key and kind seen refused in a batch, at most one audit record (actor
//! `system`) per alert window; the audit record is what fires the webhook event. The
//! window is kept in the store (`AlertStore::raise_key_alert`, a conditional upsert in
//! the audit record's transaction), so restarts and the other nodes of a cluster agree.
//! This node also remembers the windows it knows about, to ask the store only when an
//! alert may be due.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use keyward_core::VerifyCode;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use keyward_store::Store;
use uuid::Uuid;

/// The default alert window: one alert per key and kind per 5 minutes.
pub const DEFAULT_ALERT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Longer windows are cut to this (a year), so `now - window` cannot overflow.
const MAX_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// When another node holds the window, ask the store again after this long at most
/// (the window's start is not known here).
const RECHECK_OTHERS_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The audit action (and webhook event type) of an alerting outcome.
fn alert_action(code: VerifyCode) -> Option<&'static str> {
    match code {
        VerifyCode::RateLimited => Some("key.rate_limited"),
        VerifyCode::UsageExceeded => Some("key.usage_exceeded"),
        _ => None,
    }
}

/// The refusals of one key and kind in a batch.
struct Seen {
    identity_id: Option<Uuid>,
    count: u64,
    first_at: Timestamp,
    last_at: Timestamp,
}

/// The writer's alert state.
pub(crate) struct Alerts {
    window: chrono::TimeDelta,
    /// Per (key, action): ask the store nothing before this time.
    quiet_until: HashMap<(Uuid, &'static str), Timestamp>,
}

impl Alerts {
    pub(crate) fn new(window: Duration) -> Alerts {
        Alerts {
            window: chrono::TimeDelta::from_std(window)
                .unwrap_or(MAX_WINDOW)
                .min(MAX_WINDOW),
            quiet_until: HashMap::new(),
        }
    }

    /// Raises the alerts a written batch calls for. Failures are logged, not retried:
    /// the next refusal of the key asks again.
    pub(crate) async fn raise(&mut self, store: &dyn Store, batch: &[UsageEvent], now: Timestamp) {
        let mut seen: BTreeMap<(Uuid, &'static str), Seen> = BTreeMap::new();
        for e in batch {
            let (Some(action), Some(key_id)) = (alert_action(e.code), e.key_id) else {
                continue;
            };
            let s = seen.entry((key_id, action)).or_insert(Seen {
                identity_id: e.identity_id,
                count: 0,
                first_at: e.at,
                last_at: e.at,
            });
            s.count += 1;
            s.first_at = s.first_at.min(e.at);
            s.last_at = s.last_at.max(e.at);
        }
        self.quiet_until.retain(|_, until| *until > now);
        for ((key_id, action), s) in seen {
            if self.quiet_until.contains_key(&(key_id, action)) {
                continue;
            }
            let mut detail = serde_json::json!({
                "key_id": key_id,
                "identity_id": s.identity_id,
                "count": s.count,
                "first_at": s.first_at,
                "last_at": s.last_at,
                "window_seconds": self.window.num_seconds(),
            });
            if action == "key.usage_exceeded" {
                // The only usage limit a key has is its `remaining` quota.
                detail["limit"] = "remaining".into();
            }
            let audit = AuditEntry {
                at: now,
                actor: "system".into(),
                action: action.into(),
                target: key_id.to_string(),
                request_id: None,
                source_ip: None,
                detail,
            };
            match store
                .raise_key_alert(key_id, action, now, now - self.window, &audit)
                .await
            {
                Ok(true) => {
                    self.quiet_until.insert((key_id, action), now + self.window);
                }
                Ok(false) => {
                    let recheck = now + RECHECK_OTHERS_WINDOW.min(self.window);
                    self.quiet_until.insert((key_id, action), recheck);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %key_id, action, "could not write a usage alert")
                }
            }
        }
    }
}
