//! `keyward key rotation-status ID`: the newest key of a lineage and, per older key,
//! the sources that still used it since it was rotated.

use keyward_proto::RotationStatus;
use uuid::Uuid;

use super::Ctx;
use crate::error::CliError;

fn table(s: &RotationStatus) -> String {
    let mut out = format!("current key: {}\n", s.current.id);
    if s.previous.is_empty() {
        out.push_str("no older keys in this lineage");
        return out;
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "old key",
        "stops at",
        "last used",
        "source",
        "count",
        "last seen",
    ]);
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339())
    };
    for k in &s.previous {
        let key_cells = [k.id.to_string(), time(k.expires_at), time(k.last_used_at)];
        if k.sources.is_empty() {
            let mut row = key_cells.to_vec();
            row.extend(["(none since rotation)".into(), "0".into(), "-".into()]);
            t.add_row(row);
        }
        for src in &k.sources {
            let mut source = src.ip.clone().unwrap_or_else(|| "-".into());
            if let Some(tags) = &src.tags {
                source.push_str(&format!(" {tags}"));
            }
            let mut row = key_cells.to_vec();
            row.extend([source, src.count.to_string(), src.last_seen.to_rfc3339()]);
            t.add_row(row);
        }
    }
    out.push_str(&t.to_string());
    out
}

pub async fn show(ctx: &Ctx, id: Uuid) -> Result<(), CliError> {
    let s = ctx
        .client
        .rotation_status(id)
        .await
        .map_err(|e| ctx.api(e))?;
    ctx.print(&s, table);
    Ok(())
}
