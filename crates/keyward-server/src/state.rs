//! What every handler shares.

use std::sync::Arc;

use keyward_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::verifier::Verifier;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub metrics: PrometheusHandle,
}
