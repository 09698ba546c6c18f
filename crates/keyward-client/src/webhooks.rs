//! `/v1/webhooks`: where events are sent, and the log of their deliveries.

use keyward_proto::{CreateWebhook, CreatedWebhook, Page, Webhook, WebhookDelivery};
use reqwest::Method;
use uuid::Uuid;

use crate::{Client, ListParams, NO_BODY, NO_QUERY, Result, collect_pages};

impl Client {
    /// `POST /v1/webhooks`. The answer is the only one that holds the signing secret.
    pub async fn create_webhook(&self, body: &CreateWebhook) -> Result<CreatedWebhook> {
        self.call(Method::POST, &["v1", "webhooks"], NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/webhooks`: one page.
    pub async fn list_webhooks(&self, params: &ListParams) -> Result<Page<Webhook>> {
        self.call(Method::GET, &["v1", "webhooks"], Some(params), NO_BODY)
            .await
    }

    /// Every webhook, following `next_cursor`.
    pub async fn list_all_webhooks(&self) -> Result<Vec<Webhook>> {
        collect_pages(|cursor| {
            let params = ListParams {
                limit: None,
                cursor,
            };
            async move { self.list_webhooks(&params).await }
        })
        .await
    }

    /// `GET /v1/webhooks/{id}` (never the secret).
    pub async fn get_webhook(&self, id: Uuid) -> Result<Webhook> {
        let id = id.to_string();
        self.call(Method::GET, &["v1", "webhooks", &id], NO_QUERY, NO_BODY)
            .await
    }

    /// `DELETE /v1/webhooks/{id}`: returns the deleted webhook, or `None` if the server
    /// answered without a body.
    pub async fn delete_webhook(&self, id: Uuid) -> Result<Option<Webhook>> {
        let id = id.to_string();
        self.call_optional(Method::DELETE, &["v1", "webhooks", &id], NO_QUERY, NO_BODY)
            .await
    }

    /// `GET /v1/webhooks/{id}/deliveries`: one page, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        id: Uuid,
        params: &ListParams,
    ) -> Result<Page<WebhookDelivery>> {
        let id = id.to_string();
        self.call(
            Method::GET,
            &["v1", "webhooks", &id, "deliveries"],
            Some(params),
            NO_BODY,
        )
        .await
    }
}
