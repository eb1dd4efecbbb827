//! Operations: what an operator watches and checks.
//!
//! - [`metrics`]: Prometheus metrics. A leaf: the layers above feed it.
//! - [`doctor`]: the checks `keyward doctor` runs on a deployment.

pub mod doctor;
pub mod metrics;
