//! The webhook settings of `keyward serve`, from the merged settings (flags, then
//! `KEYWARD_WEBHOOK_*` variables, then the TOML file, then defaults).

use std::time::Duration;

use keyward_server::webhooks::WebhookSettings;

use crate::error::CliError;
use crate::parse;
use crate::settings::Settings;

pub fn from(s: &Settings) -> Result<WebhookSettings, CliError> {
    let d = WebhookSettings::default();
    let secs = |v: &Option<String>, flag: &str, default: Duration| match v {
        None => Ok(default),
        Some(v) => parse::ttl(v)
            .map(|n| Duration::from_secs(n.unsigned_abs()))
            .map_err(|e| CliError::Usage(format!("invalid --{flag} {v:?}: {e}"))),
    };
    let max_attempts = match &s.webhook_max_attempts {
        None => d.max_attempts,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "invalid --webhook-max-attempts {v:?}: a whole number from 1 to 100"
                ))
            })?,
    };
    let deny_private = match s.webhook_deny_private.as_deref().map(str::trim) {
        None => d.deny_private,
        Some("true" | "1" | "yes" | "on") => true,
        Some("false" | "0" | "no" | "off") => false,
        Some(v) => {
            return Err(CliError::Usage(format!(
                "invalid --webhook-deny-private {v:?}: true or false"
            )));
        }
    };
    Ok(WebhookSettings {
        timeout: secs(&s.webhook_timeout, "webhook-timeout", d.timeout)?,
        max_attempts,
        backoff_base: secs(&s.webhook_backoff, "webhook-backoff", d.backoff_base)?,
        backoff_cap: secs(&s.webhook_backoff_cap, "webhook-backoff-cap", d.backoff_cap)?,
        deny_private,
        expiring_before: secs(
            &s.webhook_expiring_before,
            "webhook-expiring-before",
            d.expiring_before,
        )?,
        old_version_before: secs(
            &s.webhook_old_version_before,
            "webhook-old-version-before",
            d.old_version_before,
        )?,
        poll: d.poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Layer, merge};

    fn settings(f: impl FnOnce(&mut Layer)) -> Settings {
        let mut l = Layer::default();
        f(&mut l);
        merge(&l, &Layer::default(), &Layer::default())
    }

    #[test]
    fn defaults_and_values() {
        let d = from(&settings(|_| {})).unwrap();
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert!(!d.deny_private);
        assert_eq!(d.old_version_before, Duration::from_secs(3600));
        let s = from(&settings(|l| {
            l.webhook_timeout = Some("3s".into());
            l.webhook_max_attempts = Some("4".into());
            l.webhook_backoff = Some("1m".into());
            l.webhook_backoff_cap = Some("2h".into());
            l.webhook_deny_private = Some("true".into());
            l.webhook_expiring_before = Some("2d".into());
            l.webhook_old_version_before = Some("10m".into());
        }))
        .unwrap();
        assert_eq!(
            (s.timeout, s.max_attempts, s.backoff_base, s.backoff_cap),
            (
                Duration::from_secs(3),
                4,
                Duration::from_secs(60),
                Duration::from_secs(7200)
            )
        );
        assert!(s.deny_private);
        assert_eq!(s.expiring_before, Duration::from_secs(2 * 86_400));
        assert_eq!(s.old_version_before, Duration::from_secs(600));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for f in [
            (|l: &mut Layer| l.webhook_timeout = Some("soon".into())) as fn(&mut Layer),
            |l| l.webhook_timeout = Some("0".into()),
            |l| l.webhook_max_attempts = Some("0".into()),
            |l| l.webhook_deny_private = Some("maybe".into()),
            |l| l.webhook_old_version_before = Some("later".into()),
        ] {
            assert!(matches!(from(&settings(f)), Err(CliError::Usage(_))));
        }
    }
}
