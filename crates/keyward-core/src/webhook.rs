//! Webhooks: the event types of the contract, how audit records become events, the
//! records the stores keep (webhooks, deliveries), retry timing and which destination
//! addresses a cautious deployment refuses. No IO: the server sends, the store keeps.
//!
//! Events come from the audit log (a durable outbox every node shares): each audit
//! action maps to at most one event type ([`event_type_of`]), and the event's `data` is
//! built from the record ([`event_data`]) with ids, names and times only.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use ipnet::IpNet;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::envelope::Sealed;
use crate::model::AuditRecord;
use crate::time::Timestamp;

/// The contract's event types, in its order.
pub const EVENT_TYPES: [&str; 9] = [
    "key.created",
    "key.rotated",
    "key.revoked",
    "key.expiring",
    "key.rate_limited",
    "key.usage_exceeded",
    "key.old_version_in_use",
    "anomaly.detected",
    "leak.detected",
];

/// The audit action that records a key about to expire (written by the leader's
/// expiring-keys job); it is also the event type.
pub const EXPIRING_ACTION: &str = "key.expiring";

/// The event type an audit action fires, if any: the past-tense names of key changes,
/// `key.leaked` as `leak.detected`, and actions already named like an event type.
pub fn event_type_of(action: &str) -> Option<&'static str> {
    match action {
        "key.create" => Some("key.created"),
        "key.rotate" => Some("key.rotated"),
        "key.revoke" => Some("key.revoked"),
        "key.leaked" => Some("leak.detected"),
        other => EVENT_TYPES.iter().copied().find(|t| *t == other),
    }
}

/// Detail fields never copied into an event, whatever action wrote them: a key's
/// `start` is part of the key, and the rest name secrets. Audit details should not
/// hold such values in the first place; this is the second line.
const WITHHELD: [&str; 9] = [
    "start",
    "key",
    "secret",
    "digest",
    "value",
    "token",
    "password",
    "plaintext",
    "totp",
];

/// The `data` of the event an audit record fires: the record's detail (ids, names,
/// times) without [`WITHHELD`] fields at any depth, the actor, and the target under
/// `key_id` for `key.*` actions (`target` otherwise).
pub fn event_data(record: &AuditRecord) -> Value {
    let mut data = match &record.entry.detail {
        Value::Object(m) => withhold(m),
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("detail".into(), scrub(other));
            m
        }
    };
    let target_name = if record.entry.action.starts_with("key.") {
        "key_id"
    } else {
        "target"
    };
    data.insert(target_name.into(), json!(record.entry.target));
    data.insert("actor".into(), json!(record.entry.actor));
    Value::Object(data)
}

fn withhold(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !WITHHELD.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.clone(), scrub(v)))
        .collect()
}

fn scrub(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(withhold(m)),
        Value::Array(a) => Value::Array(a.iter().map(scrub).collect()),
        other => other.clone(),
    }
}

/// The JSON body of a delivery: `{id, type, at, data}`. Built once, when the event is
/// queued, so every retry sends the very same bytes with the same id.
pub fn event_body(id: Uuid, event_type: &str, at: Timestamp, data: &Value) -> String {
    json!({"id": id, "type": event_type, "at": at, "data": data}).to_string()
}

/// A signing secret from the operating system's CSPRNG: `whsec_` and 32 random bytes
/// in hex.
pub fn generate_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(&mut *bytes)
        .expect("the operating system's random number generator failed");
    Zeroizing::new(format!("whsec_{}", hex::encode(*bytes)))
}

/// Checks a signing secret given by a client: 16-256 printable ASCII characters
/// without spaces (it goes into an HMAC key as bytes, and people copy it around).
pub fn check_secret(secret: &str) -> Result<(), &'static str> {
    if !(16..=256).contains(&secret.len()) {
        return Err("must be 16 to 256 characters");
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    Ok(())
}

/// Checks a list of event types: not empty, each one of [`EVENT_TYPES`]. Returns them
/// without repeats, in the order given; the error names the index at fault.
pub fn check_events(events: &[String]) -> Result<Vec<String>, (Option<usize>, String)> {
    if events.is_empty() {
        return Err((None, "give at least one event type".into()));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err((
                Some(i),
                format!("unknown event type; one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// How long to wait before attempt `attempt + 1`, after `attempt` failed attempts (1
/// for the first failure): `base * 2^(attempt-1)`, at most `cap`, of which the upper
/// half is random (`jitter` in `[0, 1)`), so receivers that failed together are not
/// retried in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A uniform random number in `[0, 1)` for [`backoff`], from the OS CSPRNG.
pub fn jitter() -> f64 {
    let x = OsRng.try_next_u64().unwrap_or(0);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Address ranges a webhook may not reach when private destinations are refused:
/// this host, private networks, link-local (cloud metadata lives there), shared
/// carrier space, multicast and the unspecified address.
static PRIVATE_RANGES: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|s| s.parse().expect("static ranges are valid"))
    .collect()
});

/// Whether `ip` is in a range refused by `--webhook-deny-private` (IPv4-mapped IPv6
/// addresses are judged as the IPv4 address they carry).
pub fn is_private_destination(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    PRIVATE_RANGES.iter().any(|net| net.contains(&ip))
}

/// A webhook: where to send which events, and the secret that signs them.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// The HMAC signing secret in the clear: set only on a new webhook (to answer it
    /// once) and on rows written before secrets were sealed; empty once sealed. It is
    /// never shown after creation, logged or audit-logged.
    pub secret: Zeroizing<String>,
    /// The signing secret sealed under the vault's master key (path
    /// [`secret_path`], version [`SECRET_VERSION`]): what the store keeps.
    pub sealed_secret: Option<Sealed>,
    pub created_at: Timestamp,
    /// The audit sequence number of its creation: it receives events recorded after it.
    pub after_seq: i64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("sealed_secret", &self.sealed_secret)
            .field("created_at", &self.created_at)
            .field("after_seq", &self.after_seq)
            .finish()
    }
}

/// The envelope path that binds a webhook's sealed signing secret to its row.
pub fn secret_path(id: Uuid) -> String {
    format!("keyward/webhook/{id}")
}

/// The envelope version of a sealed signing secret (a webhook has one secret).
pub const SECRET_VERSION: i64 = 1;

impl Webhook {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet; tried at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Gave up after the last allowed attempt.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// An event queued for one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The audit record that fired it: a webhook gets each record at most once.
    pub audit_seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    /// The exact body sent on every attempt.
    pub body: String,
    pub created_at: Timestamp,
}

/// A delivery as stored: the event, and how its attempts went.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub audit_seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
    pub created_at: Timestamp,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the next attempt is due (`Pending` only).
    pub next_attempt_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt, if an answer came.
    pub last_status: Option<i32>,
    /// Why the last attempt failed, if it did (never a secret: no header values).
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: Timestamp,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `Pending` with `next_attempt_at`, `Delivered` or `Failed`.
    pub state: DeliveryState,
    pub next_attempt_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AuditEntry;

    fn record(action: &str, detail: Value) -> AuditRecord {
        AuditRecord {
            seq: 7,
            entry: AuditEntry {
                at: chrono::Utc::now(),
                actor: "system".into(),
                action: action.into(),
                target: "0190f5a0-0000-7000-8000-000000000001".into(),
                request_id: None,
                source_ip: None,
                detail,
            },
        }
    }

    #[test]
    fn actions_map_to_the_contract_event_types() {
        assert_eq!(event_type_of("key.create"), Some("key.created"));
        assert_eq!(event_type_of("key.rotate"), Some("key.rotated"));
        assert_eq!(event_type_of("key.revoke"), Some("key.revoked"));
        assert_eq!(event_type_of("key.leaked"), Some("leak.detected"));
        for t in EVENT_TYPES {
            if t != "key.created" && t != "key.rotated" && t != "key.revoked" {
                assert_eq!(event_type_of(t), Some(t));
            }
        }
        for a in [
            "key.update",
            "key.expire",
            "identity.create",
            "store.bootstrap",
        ] {
            assert_eq!(event_type_of(a), None, "{a}");
        }
    }

    #[test]
    fn event_data_withholds_key_material_at_any_depth() {
        let r = record(
            "key.create",
            json!({"identity_id": "x", "start": "kw_abc", "nested": {"Secret": "s", "ok": 1},
                   "list": [{"token": "t", "name": "n"}]}),
        );
        let d = event_data(&r);
        assert_eq!(
            d,
            json!({"identity_id": "x", "nested": {"ok": 1}, "list": [{"name": "n"}],
                   "key_id": r.entry.target, "actor": "system"})
        );
        let d = event_data(&record("anomaly.detected", Value::Null));
        assert_eq!(d["target"], r.entry.target);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 0.5), Duration::from_secs(45));
    }

    #[test]
    fn private_destinations() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private_destination(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_private_destination(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn events_and_secrets_are_checked() {
        assert!(check_events(&[]).is_err());
        assert_eq!(
            check_events(&["key.created".into(), "nope".into()])
                .unwrap_err()
                .0,
            Some(1)
        );
        assert_eq!(
            check_events(&["key.created".into(), "key.created".into()]).unwrap(),
            ["key.created"]
        );
        let s = generate_secret();
        assert!(s.starts_with("whsec_") && s.len() == 70);
        assert!(check_secret(&s).is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("has a space in it, long enough").is_err());
        assert_ne!(*generate_secret(), *s);
    }
}
