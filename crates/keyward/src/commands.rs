//! The client commands: `identity`, `key`, `audit`. Each calls the API through
//! `keyward-client` and prints a table or, with `--json`, the API's JSON.

use std::io::Read;

use chrono::{Duration, Utc};
use keyward_client::{AuditListParams, Client, KeyListParams, ListParams, collect_pages};
use keyward_proto::{CreateIdentity, CreateKey, Page, UpdateIdentity, UpdateKey, VerifyRequest};
use serde::Serialize;

use crate::cli::{AuditCmd, IdentityCmd, KeyCmd, ListArgs};
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

mod rotation_status;
mod run;
mod vault;
pub mod webhook;
pub use run::run;
pub use vault::secret;

pub struct Ctx {
    pub client: Client,
    pub url: String,
    pub json: bool,
}

impl Ctx {
    pub fn new(settings: &Settings, json: bool) -> Result<Ctx, CliError> {
        let client = Client::new(&settings.url, settings.token.clone())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Ctx {
            client,
            url: settings.url.clone(),
            json,
        })
    }

    pub(crate) fn api(&self, error: keyward_client::Error) -> CliError {
        CliError::Api {
            error: Box::new(error),
            url: self.url.clone(),
        }
    }

    /// Prints `value` as JSON, or `human(value)`.
    pub(crate) fn print<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!("{}", output::json(value));
        } else {
            println!("{}", human(value));
        }
    }

    /// Prints a page (or everything, with `--all`), and where the next page starts.
    fn print_page<T: Serialize>(&self, page: &Page<T>, human: impl FnOnce(&[T]) -> String) {
        if self.json {
            println!("{}", output::json(page));
            return;
        }
        println!("{}", human(&page.items));
        if let Some(next) = &page.next_cursor {
            eprintln!("more: --cursor {next}  (or --all)");
        }
    }
}

fn all<T>(items: Vec<T>) -> Page<T> {
    Page {
        items,
        next_cursor: None,
    }
}

fn enabled_flag(enable: bool, disable: bool) -> Option<bool> {
    match (enable, disable) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------- identities

pub async fn identity(ctx: &Ctx, cmd: IdentityCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        IdentityCmd::Create {
            name,
            owner,
            description,
            meta,
            disabled,
        } => {
            let body = CreateIdentity {
                name,
                owner,
                description,
                meta,
                enabled: disabled.then_some(false),
            };
            let i = c.create_identity(&body).await.map_err(|e| ctx.api(e))?;
            ctx.print(&i, output::identity);
        }
        IdentityCmd::List(ListArgs { limit, cursor, all }) => {
            let page = if all {
                let pages = collect_pages(|cursor| {
                    let params = ListParams { limit, cursor };
                    async move { c.list_identities(&params).await }
                });
                self::all(pages.await.map_err(|e| ctx.api(e))?)
            } else {
                c.list_identities(&ListParams { limit, cursor })
                    .await
                    .map_err(|e| ctx.api(e))?
            };
            ctx.print_page(&page, output::identities);
        }
        IdentityCmd::Show { id } => {
            let i = c.get_identity(id).await.map_err(|e| ctx.api(e))?;
            ctx.print(&i, output::identity);
        }
        IdentityCmd::Update {
            id,
            name,
            owner,
            description,
            meta,
            enable,
            disable,
        } => {
            let body = UpdateIdentity {
                name,
                owner,
                description,
                meta,
                enabled: enabled_flag(enable, disable),
            };
            if serde_json::to_value(&body)
                .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
            {
                return Err(CliError::Usage(
                    "nothing to update: give at least one of --name, --owner, --description, \
                     --meta, --enable, --disable"
                        .into(),
                ));
            }
            let i = c.update_identity(id, &body).await.map_err(|e| ctx.api(e))?;
            ctx.print(&i, output::identity);
        }
        IdentityCmd::AnomalyPolicy(args) => crate::anomalies::policy(ctx, args).await?,
        IdentityCmd::Delete { id } => {
            let deleted = c.delete_identity(id).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                match deleted {
                    Some(i) => println!("{}", output::json(&i)),
                    None => println!("{}", serde_json::json!({ "id": id, "deleted": true })),
                }
            } else {
                println!("deleted identity {id}; its keys are revoked");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- keys

pub async fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    let now = Utc::now;
    match cmd {
        KeyCmd::Create {
            identity,
            name,
            prefix,
            scopes,
            expires_at,
            ttl,
            allow_ips,
            rate_limits,
            remaining,
            meta,
            disabled,
        } => {
            let body = CreateKey {
                identity_id: identity,
                name,
                prefix,
                scopes: non_empty(scopes),
                expires_at,
                ttl_seconds: ttl,
                ip_allowlist: non_empty(allow_ips),
                rate_limits: non_empty(rate_limits),
                remaining,
                meta,
                enabled: disabled.then_some(false),
            };
            let k = c.create_key(&body).await.map_err(|e| ctx.api(e))?;
            ctx.print(&k, |k| output::created_key(k, now()));
        }
        KeyCmd::List {
            identity,
            list: ListArgs { limit, cursor, all },
        } => {
            let page = if all {
                let pages = collect_pages(|cursor| {
                    let params = KeyListParams {
                        identity_id: identity,
                        limit,
                        cursor,
                    };
                    async move { c.list_keys(&params).await }
                });
                self::all(pages.await.map_err(|e| ctx.api(e))?)
            } else {
                c.list_keys(&KeyListParams {
                    identity_id: identity,
                    limit,
                    cursor,
                })
                .await
                .map_err(|e| ctx.api(e))?
            };
            ctx.print_page(&page, |items| output::keys(items, now()));
        }
        KeyCmd::Show { id } => {
            let k = c.get_key(id).await.map_err(|e| ctx.api(e))?;
            ctx.print(&k, |k| output::key(k, now()));
        }
        KeyCmd::Update {
            id,
            name,
            scopes,
            clear_scopes,
            expires_at,
            ttl,
            clear_expiry,
            allow_ips,
            clear_allow_ips,
            rate_limits,
            clear_rate_limits,
            remaining,
            clear_remaining,
            enable,
            disable,
            meta,
        } => {
            let expires_at = if clear_expiry {
                Some(None)
            } else if let Some(secs) = ttl {
                Some(Some(now() + Duration::seconds(secs)))
            } else {
                expires_at.map(Some)
            };
            let body = UpdateKey {
                name,
                scopes: replace(scopes, clear_scopes),
                expires_at,
                ip_allowlist: replace(allow_ips, clear_allow_ips),
                rate_limits: replace(rate_limits, clear_rate_limits),
                remaining: if clear_remaining {
                    Some(None)
                } else {
                    remaining.map(Some)
                },
                enabled: enabled_flag(enable, disable),
                meta,
            };
            if is_empty_patch(&body) {
                return Err(CliError::Usage(
                    "nothing to update: see `keyward key update --help` for what can change".into(),
                ));
            }
            let k = c.update_key(id, &body).await.map_err(|e| ctx.api(e))?;
            ctx.print(&k, |k| output::key(k, now()));
        }
        KeyCmd::Rotate { id, grace } => {
            let k = c.rotate_key(id, grace).await.map_err(|e| ctx.api(e))?;
            ctx.print(&k, |k| output::created_key(k, now()));
        }
        KeyCmd::RotationPolicy(cmd) => vault::rotation_policy(ctx, cmd).await?,
        KeyCmd::RotationStatus { id } => rotation_status::show(ctx, id).await?,
        KeyCmd::Revoke { id } => {
            let k = c.revoke_key(id).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", output::json(&k));
            } else {
                println!("revoked key {id}");
            }
        }
        KeyCmd::Verify {
            key,
            scopes,
            permission,
            ip,
        } => {
            let key = if key == "-" {
                read_key_from_stdin()?
            } else {
                key
            };
            let body = VerifyRequest {
                key,
                scopes: non_empty(scopes),
                permission,
                ip,
                tags: None,
            };
            let v = c.verify(&body).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", output::json(&v));
            } else {
                print!("{}", output::verify(&v));
            }
            if !v.valid {
                return Err(CliError::Reported);
            }
        }
    }
    Ok(())
}

/// A list to replace the current one: empty means "leave", unless `clear`.
fn replace<T>(v: Vec<T>, clear: bool) -> Option<Vec<T>> {
    if clear {
        Some(Vec::new())
    } else {
        non_empty(v)
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn is_empty_patch(body: &UpdateKey) -> bool {
    serde_json::to_value(body).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
}

/// The key of `key verify -`: stdin, trimmed. An empty one is bad usage.
fn read_key_from_stdin() -> Result<String, CliError> {
    let mut buf = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut buf)
        .map_err(|e| CliError::Usage(format!("cannot read the key from stdin: {e}")))?;
    let key = buf.trim();
    if key.is_empty() {
        return Err(CliError::Usage("no key on stdin".into()));
    }
    Ok(key.to_string())
}

// ---------------------------------------------------------------- audit

pub async fn audit(ctx: &Ctx, cmd: AuditCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        AuditCmd::List { after, limit, all } => {
            let page = if all {
                let pages = collect_pages(|after| {
                    let params = AuditListParams { after, limit };
                    async move { c.list_audit(&params).await }
                });
                self::all(pages.await.map_err(|e| ctx.api(e))?)
            } else {
                c.list_audit(&AuditListParams { after, limit })
                    .await
                    .map_err(|e| ctx.api(e))?
            };
            ctx.print_page(&page, output::audit);
        }
        // It reads the store, not the API: dispatched in main.rs before a client exists.
        AuditCmd::Verify => unreachable!("audit verify is dispatched in main"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_patches_are_detected() {
        assert!(is_empty_patch(&UpdateKey::default()));
        assert!(!is_empty_patch(&UpdateKey {
            remaining: Some(None),
            ..UpdateKey::default()
        }));
        assert!(!is_empty_patch(&UpdateKey {
            scopes: Some(vec![]),
            ..UpdateKey::default()
        }));
    }

    #[test]
    fn clearing_sends_null() {
        let body = UpdateKey {
            expires_at: Some(None),
            remaining: Some(None),
            ..UpdateKey::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"expires_at": null, "remaining": null})
        );
    }

    #[test]
    fn enable_disable() {
        assert_eq!(enabled_flag(true, false), Some(true));
        assert_eq!(enabled_flag(false, true), Some(false));
        assert_eq!(enabled_flag(false, false), None);
    }
}
