//! Human administrators and their sessions.

use keyward_proto::{Admin, AdminList, CreateAdmin, CreateSession, CreatedAdmin, Session};
use reqwest::Method;
use uuid::Uuid;

use crate::{Client, NO_BODY, NO_QUERY, Result};

impl Client {
    /// `POST /v1/admins` (scope `keyward:admin`): the answer holds the TOTP URI and the
    /// recovery codes, shown this once.
    pub async fn create_admin(&self, body: &CreateAdmin) -> Result<CreatedAdmin> {
        self.call(Method::POST, &["v1", "admins"], NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/admins`.
    pub async fn list_admins(&self) -> Result<AdminList> {
        self.call(Method::GET, &["v1", "admins"], NO_QUERY, NO_BODY)
            .await
    }

    /// `POST /v1/admins/{id}/disable`: ends its sessions too.
    pub async fn disable_admin(&self, id: Uuid) -> Result<Admin> {
        let id = id.to_string();
        self.call(
            Method::POST,
            &["v1", "admins", &id, "disable"],
            NO_QUERY,
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `POST /v1/sessions`: logs in; the token is a bearer credential until `expires_at`.
    pub async fn create_session(&self, body: &CreateSession) -> Result<Session> {
        self.call(Method::POST, &["v1", "sessions"], NO_QUERY, Some(body))
            .await
    }
}
