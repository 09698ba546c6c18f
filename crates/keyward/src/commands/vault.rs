//! `keyward secret put|get|list|delete` and `keyward key rotation-policy set|show|clear`.

use std::io::Read;

use keyward_client::SecretListParams;
use keyward_proto::{PutRotationPolicy, PutSecret, RotationPolicy, SecretList};
use zeroize::{Zeroize, Zeroizing};

use super::Ctx;
use crate::cli::{RotationPolicyCmd, SecretCmd};
use crate::error::CliError;

/// Removes one trailing newline (`\n` or `\r\n`), as `echo` and editors add one.
fn strip_newline(mut s: Zeroizing<String>) -> Zeroizing<String> {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn read_value(
    from_file: Option<&std::path::Path>,
    value: Option<String>,
) -> Result<Zeroizing<String>, CliError> {
    if let Some(v) = value {
        return Ok(Zeroizing::new(v));
    }
    let mut buf = Zeroizing::new(String::new());
    match from_file {
        Some(path) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            f.read_to_string(&mut buf).map_err(|e| {
                CliError::Usage(format!("{} is not UTF-8 text: {e}", path.display()))
            })?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|e| CliError::Usage(format!("cannot read the value from stdin: {e}")))?;
        }
    }
    Ok(strip_newline(buf))
}

pub async fn secret(ctx: &Ctx, cmd: SecretCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        SecretCmd::Put {
            path,
            from_file,
            value,
            allow_argv: _,
            meta,
        } => {
            let value = read_value(from_file.as_deref(), value)?;
            let mut body = PutSecret {
                value: value.to_string(),
                meta,
            };
            let result = c.put_secret(&path, &body).await;
            body.value.zeroize();
            let w = result.map_err(|e| ctx.api(e))?;
            ctx.print(&w, |w| format!("stored {} version {}", w.path, w.version));
        }
        SecretCmd::Get { path, version } => {
            let mut s = c.get_secret(&path, version).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", crate::output::json(&s));
            } else {
                println!("{}", s.value);
            }
            s.value.zeroize();
        }
        SecretCmd::List {
            prefix,
            limit,
            cursor,
        } => {
            let page = c
                .list_secrets(&SecretListParams {
                    prefix,
                    limit,
                    cursor,
                })
                .await
                .map_err(|e| ctx.api(e))?;
            ctx.print(&page, table);
            if !ctx.json
                && let Some(next) = &page.next_cursor
            {
                eprintln!("more: --cursor {next}");
            }
        }
        SecretCmd::Delete { path } => {
            c.delete_secret(&path).await.map_err(|e| ctx.api(e))?;
            if !ctx.json {
                println!("deleted {path}");
            }
        }
    }
    Ok(())
}

fn table(page: &SecretList) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(vec!["PATH", "VERSION", "UPDATED"]);
    for s in &page.items {
        t.add_row(vec![
            s.path.clone(),
            s.version.to_string(),
            s.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ]);
    }
    t.to_string()
}

fn policy(p: &RotationPolicy) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.add_row(vec!["key".to_string(), p.key_id.to_string()]);
    t.add_row(vec![
        "max age (s)".to_string(),
        p.max_age_seconds.to_string(),
    ]);
    t.add_row(vec!["grace (s)".to_string(), p.grace_seconds.to_string()]);
    t.add_row(vec![
        "deliver to".to_string(),
        p.deliver_to.clone().unwrap_or_else(|| "-".into()),
    ]);
    t.to_string()
}

pub async fn rotation_policy(ctx: &Ctx, cmd: RotationPolicyCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        RotationPolicyCmd::Set {
            id,
            max_age,
            grace,
            deliver_to,
        } => {
            let body = PutRotationPolicy {
                max_age_seconds: max_age,
                grace_seconds: grace,
                deliver_to,
            };
            let p = c
                .set_rotation_policy(id, &body)
                .await
                .map_err(|e| ctx.api(e))?;
            ctx.print(&p, policy);
        }
        RotationPolicyCmd::Show { id } => {
            let p = c.get_rotation_policy(id).await.map_err(|e| ctx.api(e))?;
            ctx.print(&p, policy);
        }
        RotationPolicyCmd::Clear { id } => {
            c.delete_rotation_policy(id).await.map_err(|e| ctx.api(e))?;
            if !ctx.json {
                println!("cleared the rotation policy of key {id}");
            }
        }
    }
    Ok(())
}
