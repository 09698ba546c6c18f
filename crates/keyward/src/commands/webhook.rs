//! `keyward webhook create|list|show|delete|deliveries`, through `keyward-client`.

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use comfy_table::{ContentArrangement, Table, presets};
use keyward_client::{ListParams, collect_pages};
use keyward_proto::{CreateWebhook, CreatedWebhook, Webhook, WebhookDelivery};
use uuid::Uuid;

use super::{Ctx, all};
use crate::cli::ListArgs;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Create a webhook; its signing secret is shown once
    Create {
        /// Where events are POSTed (http or https). Positional: `--url` is the server
        #[arg(value_name = "URL")]
        endpoint: String,
        /// An event type to receive (repeatable), e.g. key.created, key.expiring,
        /// leak.detected
        #[arg(long = "event", value_name = "TYPE", required = true)]
        events: Vec<String>,
        /// The signing secret (default: one is generated)
        #[arg(long, value_name = "SECRET")]
        secret: Option<String>,
    },
    /// List webhooks
    List(ListArgs),
    /// Show one webhook (never its secret)
    Show { id: Uuid },
    /// Delete a webhook; its pending deliveries are dropped
    Delete { id: Uuid },
    /// The delivery log of a webhook, newest first
    Deliveries {
        id: Uuid,
        #[command(flatten)]
        list: ListArgs,
    },
}

pub async fn run(ctx: &Ctx, cmd: WebhookCmd) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        WebhookCmd::Create {
            endpoint,
            events,
            secret,
        } => {
            let body = CreateWebhook {
                url: endpoint,
                events,
                secret,
            };
            let w = c.create_webhook(&body).await.map_err(|e| ctx.api(e))?;
            ctx.print(&w, created);
        }
        WebhookCmd::List(ListArgs { limit, cursor, all }) => {
            let page = if all {
                let pages = collect_pages(|cursor| {
                    let params = ListParams { limit, cursor };
                    async move { c.list_webhooks(&params).await }
                });
                super::all(pages.await.map_err(|e| ctx.api(e))?)
            } else {
                c.list_webhooks(&ListParams { limit, cursor })
                    .await
                    .map_err(|e| ctx.api(e))?
            };
            ctx.print_page(&page, webhooks);
        }
        WebhookCmd::Show { id } => {
            let w = c.get_webhook(id).await.map_err(|e| ctx.api(e))?;
            ctx.print(&w, |w| webhooks(std::slice::from_ref(w)));
        }
        WebhookCmd::Delete { id } => {
            let w = c.delete_webhook(id).await.map_err(|e| ctx.api(e))?;
            if ctx.json {
                println!("{}", crate::output::json(&w));
            } else {
                println!("deleted webhook {id}");
            }
        }
        WebhookCmd::Deliveries {
            id,
            list: ListArgs { limit, cursor, all },
        } => {
            let page = if all {
                let pages = collect_pages(|cursor| {
                    let params = ListParams { limit, cursor };
                    async move { c.list_webhook_deliveries(id, &params).await }
                });
                self::all(pages.await.map_err(|e| ctx.api(e))?)
            } else {
                c.list_webhook_deliveries(id, &ListParams { limit, cursor })
                    .await
                    .map_err(|e| ctx.api(e))?
            };
            ctx.print_page(&page, deliveries);
        }
    }
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(header.to_vec());
    t
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn created(w: &CreatedWebhook) -> String {
    let mut out = format!("\n    {}\n\n", w.secret);
    out.push_str(
        "warning: this signing secret is shown only once; store it where the receiver \
         can check signatures with it.\n\n",
    );
    out.push_str(&webhooks(&[Webhook {
        id: w.id,
        url: w.url.clone(),
        events: w.events.clone(),
        created_at: w.created_at,
    }]));
    out
}

fn webhooks(items: &[Webhook]) -> String {
    let mut t = table(&["ID", "URL", "EVENTS", "CREATED"]);
    for w in items {
        t.add_row(vec![
            w.id.to_string(),
            w.url.clone(),
            w.events.join("\n"),
            time(&w.created_at),
        ]);
    }
    t.to_string()
}

fn deliveries(items: &[WebhookDelivery]) -> String {
    let mut t = table(&[
        "EVENT",
        "TYPE",
        "STATE",
        "ATTEMPTS",
        "STATUS",
        "ERROR",
        "MS",
        "NEXT RETRY",
    ]);
    for d in items {
        t.add_row(vec![
            d.event_id.to_string(),
            d.event_type.clone(),
            d.state.clone(),
            d.attempts.to_string(),
            d.last_status.map(|s| s.to_string()).unwrap_or_default(),
            d.last_error.clone().unwrap_or_default(),
            d.last_duration_ms
                .map(|m| m.to_string())
                .unwrap_or_default(),
            d.next_attempt_at.as_ref().map(time).unwrap_or_default(),
        ]);
    }
    t.to_string()
}
