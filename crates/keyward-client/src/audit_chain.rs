//! The audit log's integrity.

use keyward_proto::AuditVerification;
use reqwest::Method;

use crate::{Client, NO_BODY, NO_QUERY, Result};

impl Client {
    /// `GET /v1/audit/verify`: the server recomputes the hash chain and checks the
    /// signed checkpoints.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        self.call(Method::GET, &["v1", "audit", "verify"], NO_QUERY, NO_BODY)
            .await
    }
}
