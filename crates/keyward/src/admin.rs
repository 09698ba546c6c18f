//! `keyward admin create|list|disable`: human administrators (contract, "Human
//! administrators"). The TOTP secret is shown once, as an `otpauth://` URI and a QR code
//! for the terminal; the recovery codes once, too.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;
use keyward_proto::{AdminList, CreateAdmin};
use qrcode::QrCode;
use qrcode::render::unicode;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::commands::Ctx;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Create an administrator: prints its TOTP enrolment (URI and QR code) and its
    /// recovery codes, once. The password is read from KEYWARD_ADMIN_PASSWORD, else
    /// from the first line of standard input
    Create {
        username: String,
        /// A keyward: scope its sessions carry (repeat, or separate with commas)
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List administrators
    List,
    /// Disable an administrator and end its sessions
    Disable { id: Uuid },
}

fn read_password() -> Result<Zeroizing<String>, CliError> {
    if let Ok(p) = std::env::var("KEYWARD_ADMIN_PASSWORD")
        && !p.is_empty()
    {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        eprint!("password for the new administrator: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        return Err(CliError::Usage(
            "no password: set KEYWARD_ADMIN_PASSWORD or write it on standard input".into(),
        ));
    }
    Ok(trimmed)
}

/// The URI as a QR code of Unicode half blocks (two modules per character cell).
pub fn qr_text(uri: &str) -> String {
    match QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build(),
        Err(_) => String::new(),
    }
}

pub async fn run(ctx: &Ctx, cmd: AdminCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        AdminCmd::Create { username, scopes } => {
            let password = read_password()?;
            let body = CreateAdmin {
                username,
                password: password.to_string(),
                scopes,
            };
            let created = c.create_admin(&body).await.map_err(|e| ctx.api(e))?;
            drop(body);
            if ctx.json {
                println!("{}", crate::output::json(&created));
            } else {
                println!(
                    "administrator {} created (id {})",
                    created.username, created.id
                );
                println!();
                println!(
                    "Enrol this TOTP secret in an authenticator app now; it is not shown again:"
                );
                println!("{}", qr_text(&created.totp_uri));
                println!("{}", created.totp_uri);
                println!();
                println!(
                    "Recovery codes (each works once instead of a TOTP code; keep them safe):"
                );
                for code in &created.recovery_codes {
                    println!("  {code}");
                }
            }
        }
        AdminCmd::List => {
            let list: AdminList = c.list_admins().await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", crate::output::json(&list));
            } else {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                t.set_header(["id", "username", "scopes", "enabled", "created_at"]);
                for a in &list.items {
                    t.add_row([
                        a.id.to_string(),
                        a.username.clone(),
                        a.scopes.join(" "),
                        a.enabled.to_string(),
                        a.created_at.to_rfc3339(),
                    ]);
                }
                println!("{t}");
            }
        }
        AdminCmd::Disable { id } => {
            let a = c.disable_admin(id).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", crate::output::json(&a));
            } else {
                println!(
                    "administrator {} disabled; its sessions are ended",
                    a.username
                );
            }
        }
    }
    Ok(())
}
