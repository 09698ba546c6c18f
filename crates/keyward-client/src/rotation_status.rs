//! The rotation status of a key's lineage.

use keyward_proto::RotationStatus;
use reqwest::Method;
use uuid::Uuid;

use super::{Client, NO_BODY, NO_QUERY, Result};

impl Client {
    /// `GET /v1/keys/{id}/rotation-status`: the newest key of `id`'s lineage and who
    /// still used each older one since it was rotated.
    pub async fn rotation_status(&self, id: Uuid) -> Result<RotationStatus> {
        let id = id.to_string();
        self.call(
            Method::GET,
            &["v1", "keys", &id, "rotation-status"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }
}
