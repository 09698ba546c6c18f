//! The secrets vault and rotation policies.

use keyward_proto::{
    PutRotationPolicy, PutSecret, RotationPolicy, Secret, SecretList, SecretWritten,
};
use reqwest::Method;
use serde::Serialize;
use uuid::Uuid;

use super::{Client, NO_BODY, NO_QUERY, Result};

/// Query of `GET /v1/secrets`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecretListParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Serialize)]
struct VersionQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
}

/// `["v1", "secrets", segments of path...]`: each segment is percent-encoded on its own.
fn secret_segments(path: &str) -> Vec<&str> {
    let mut s = vec!["v1", "secrets"];
    s.extend(path.split('/'));
    s
}

impl Client {
    /// `PUT /v1/secrets/{path}`: stores a new version. The answer never holds the value.
    pub async fn put_secret(&self, path: &str, body: &PutSecret) -> Result<SecretWritten> {
        self.call(Method::PUT, &secret_segments(path), NO_QUERY, Some(body))
            .await
    }

    /// `GET /v1/secrets/{path}`: the given version, or the latest.
    pub async fn get_secret(&self, path: &str, version: Option<i64>) -> Result<Secret> {
        self.call(
            Method::GET,
            &secret_segments(path),
            Some(&VersionQuery { version }),
            NO_BODY,
        )
        .await
    }

    /// `GET /v1/secrets`: one page of the secrets the caller may read.
    pub async fn list_secrets(&self, params: &SecretListParams) -> Result<SecretList> {
        self.call(Method::GET, &["v1", "secrets"], Some(params), NO_BODY)
            .await
    }

    /// `DELETE /v1/secrets/{path}`: every version.
    pub async fn delete_secret(&self, path: &str) -> Result<()> {
        self.call_optional::<_, _, serde_json::Value>(
            Method::DELETE,
            &secret_segments(path),
            NO_QUERY,
            NO_BODY,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /v1/keys/{id}/rotation-policy`.
    pub async fn set_rotation_policy(
        &self,
        id: Uuid,
        body: &PutRotationPolicy,
    ) -> Result<RotationPolicy> {
        let id = id.to_string();
        self.call(
            Method::PUT,
            &["v1", "keys", &id, "rotation-policy"],
            NO_QUERY,
            Some(body),
        )
        .await
    }

    /// `GET /v1/keys/{id}/rotation-policy`.
    pub async fn get_rotation_policy(&self, id: Uuid) -> Result<RotationPolicy> {
        let id = id.to_string();
        self.call(
            Method::GET,
            &["v1", "keys", &id, "rotation-policy"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `DELETE /v1/keys/{id}/rotation-policy`.
    pub async fn delete_rotation_policy(&self, id: Uuid) -> Result<()> {
        let id = id.to_string();
        self.call_optional::<_, _, serde_json::Value>(
            Method::DELETE,
            &["v1", "keys", &id, "rotation-policy"],
            NO_QUERY,
            NO_BODY,
        )
        .await
        .map(|_| ())
    }
}
