//! Prometheus metrics: what an operator watches to know that rotation happens,
//! verifiers are served and nothing is about to go stale.
//!
//! A leaf: the layers above feed it and it reaches back into none of them.
//! Counters and histograms are kept by [`Metrics`] and bumped where things
//! happen; request counts and latencies, bumped by every request on every
//! core, are kept per thread and added up at scrape time ([`requests`]).
//! What a scrape reads off the running process (per-key-set gauges, the JWKS
//! snapshot's generation and age, database errors, the TLS certificate's
//! expiry) comes through the narrow [`Readings`] trait the
//! server hands in, computed at scrape time, so it costs nothing between
//! scrapes and is never out of date.
//!
//! Every label value comes from a bounded set: gRPC method names from
//! [`crate::domain::access::Method`], HTTP routes from the router's fixed paths,
//! outcome codes from fixed tables, and key set names from the database (made
//! by an operator, never by a request).

mod requests;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        info::Info,
    },
    registry::Registry,
};

/// Content type of the text exposition [`Metrics::render`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    keyset: String,
    algorithm: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    keyset: String,
    trigger: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeysetLabel {
    keyset: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

/// Which door an authentication came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// A gRPC call's bearer token.
    Grpc,
    /// The OAuth token endpoint's client credentials.
    TokenEndpoint,
}

impl Door {
    fn label(self) -> TransportLabel {
        TransportLabel {
            transport: match self {
                Self::Grpc => "grpc",
                Self::TokenEndpoint => "oauth_token",
            },
        }
    }
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A due rotation, by the scheduler or `keyward rotate`.
    Schedule,
    /// `keyward keyset rotate`, an emergency rotation.
    Manual,
    /// Revoking the active key promoted its successor.
    Revocation,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Revocation => "revocation",
        }
    }
}

/// keyward's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<requests::RequestMetrics>,
    tokens_issued: Family<TokenLabels, Counter>,
    rotations: Family<RotationLabels, Counter>,
    revocations: Family<KeysetLabel, Counter>,
    auth_failures: Family<TransportLabel, Counter>,
    throttled: Family<TransportLabel, Counter>,
    unrecorded: Counter,
    webhook_attempts: Family<OutcomeLabel, Counter>,
    views: Arc<ViewGauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Arc::new(requests::RequestMetrics::new());
        registry.register_collector(Box::new(Arc::clone(&requests)));
        let tokens_issued = Family::default();
        registry.register(
            "tokens_issued",
            "JWTs signed (SignJwt, OpenMetadata tokens, the token endpoint) by key set and algorithm",
            Family::clone(&tokens_issued),
        );
        let rotations = Family::default();
        registry.register(
            "rotations",
            "Rotations this process performed (a new key started signing) by key set and trigger",
            Family::clone(&rotations),
        );
        let revocations = Family::default();
        registry.register(
            "revocations",
            "Keys this process revoked, by key set",
            Family::clone(&revocations),
        );
        let auth_failures = Family::default();
        registry.register(
            "auth_failures",
            "Failed authentications (bad API token, bad client credentials) by transport",
            Family::clone(&auth_failures),
        );
        let throttled = Family::default();
        registry.register(
            "throttled_requests",
            "Requests refused unchecked after too many failed authentications, by transport",
            Family::clone(&throttled),
        );
        let unrecorded = Counter::default();
        registry.register(
            "audit_refusals_unrecorded",
            "Refusals of unauthenticated callers not written to the audit log: the peer had used its budget for the window",
            unrecorded.clone(),
        );
        let webhook_attempts = Family::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts this process made, by outcome: delivered, retry (failed, \
             tried again later), failed (failed for good)",
            Family::clone(&webhook_attempts),
        );
        for outcome in ["delivered", "retry", "failed"] {
            webhook_attempts.get_or_create_owned(&OutcomeLabel { outcome });
        }
        registry.register(
            "build",
            "keyward's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Series that alerts take rates of exist from the start, at zero.
        for door in [Door::Grpc, Door::TokenEndpoint] {
            auth_failures.get_or_create_owned(&door.label());
            throttled.get_or_create_owned(&door.label());
        }
        let views = Arc::new(ViewGauges::default());
        registry.register_collector(Box::new(Arc::clone(&views)));
        Self {
            registry,
            requests,
            tokens_issued,
            rotations,
            revocations,
            auth_failures,
            throttled,
            unrecorded,
            webhook_attempts,
            views,
        }
    }

    /// Lets the scrape take `readings`, judging a rotation overdue once it
    /// is `overdue_grace` late. Until this is called the per-key-set gauges
    /// are absent (and database errors read zero).
    pub fn observe(&self, readings: Arc<dyn Readings>, overdue_grace: Duration) {
        let _ = self.views.readings.set(readings);
        let _ = self.views.overdue_grace.set(overdue_grace.as_secs());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "encoding the metrics failed");
        }
        out
    }

    /// One keyward.v1 gRPC call ended with `code` after `elapsed`.
    pub fn grpc_call(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        self.requests.grpc(method, code, elapsed.as_secs_f64());
    }

    /// One HTTP request to `route` ended with `status` after `elapsed`.
    pub fn http_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests.http(route, status, elapsed.as_secs_f64());
    }

    /// A token was signed with a key of `keyset`.
    pub fn token_issued(&self, keyset: &str, algorithm: &'static str) {
        self.tokens_issued
            .get_or_create(&TokenLabels {
                keyset: keyset.to_string(),
                algorithm,
            })
            .inc();
    }

    /// A new key of `keyset` started signing.
    pub fn rotated(&self, keyset: &str, trigger: Trigger) {
        self.rotations
            .get_or_create(&RotationLabels {
                keyset: keyset.to_string(),
                trigger: trigger.as_str(),
            })
            .inc();
    }

    /// A key of `keyset` was revoked.
    pub fn revoked(&self, keyset: &str) {
        self.revocations
            .get_or_create(&KeysetLabel {
                keyset: keyset.to_string(),
            })
            .inc();
    }

    /// An authentication failed.
    pub fn auth_failed(&self, door: Door) {
        self.auth_failures.get_or_create(&door.label()).inc();
    }

    /// A webhook delivery attempt ended: `delivered`, `retry` or `failed`.
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A refusal of an unauthenticated caller was not recorded (its peer's
    /// audit budget was used up).
    pub fn unrecorded_refusal(&self) {
        self.unrecorded.inc();
    }

    /// A request was refused unchecked by the failure throttle.
    pub fn throttled(&self, door: Door) {
        self.throttled.get_or_create(&door.label()).inc();
    }
}

/// What a scrape reads off the running process, at scrape time.
pub trait Readings: Send + Sync {
    /// The key sets' gauges and the JWKS snapshot's state; `None` once the
    /// process is shutting down.
    fn keysets(&self) -> Option<KeySetStatus>;
    /// Database errors so far, by kind.
    fn database_errors(&self) -> DatabaseErrors;
    /// When the served TLS certificate expires (Unix seconds), if TLS is on.
    fn tls_not_after(&self) -> Option<i64>;
}

/// Database errors of this process, whatever store raised them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatabaseErrors {
    /// No connection could be had.
    pub unavailable: u64,
    /// Anything else.
    pub query: u64,
}

/// The gauges read off the process at scrape time.
#[derive(Default)]
struct ViewGauges {
    readings: OnceLock<Arc<dyn Readings>>,
    overdue_grace: OnceLock<u64>,
}

impl std::fmt::Debug for ViewGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewGauges")
            .field("observed", &self.readings.get().is_some())
            .field("overdue_grace", &self.overdue_grace.get())
            .finish()
    }
}

/// One gauge family: a name, its help, and one value per label set.
fn gauge_family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(S, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ViewGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readings = self.readings.get();
        let errors = readings.map(|r| r.database_errors()).unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "database_errors",
            "Database errors by kind (unavailable: no connection; query: anything else)",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in [("unavailable", errors.unavailable), ("query", errors.query)] {
            ConstCounter::new(count).encode(family.encode_family(&KindLabel { kind })?)?;
        }
        let Some(readings) = readings else {
            return Ok(());
        };
        let Some(status) = readings.keysets() else {
            return Ok(());
        };
        let grace = i64::try_from(self.overdue_grace.get().copied().unwrap_or(60)).unwrap_or(60);
        let now = status.now;
        let mut next = Vec::with_capacity(status.keysets.len());
        let mut age = Vec::with_capacity(status.keysets.len());
        let mut published = Vec::with_capacity(status.keysets.len());
        let mut overdue = Vec::with_capacity(status.keysets.len());
        for set in status.keysets {
            let label = KeysetLabel {
                keyset: set.name.clone(),
            };
            next.push((label.clone(), set.next_rotation_at.saturating_sub(now)));
            if let Some(since) = set.active_since {
                age.push((label.clone(), now.saturating_sub(since)));
            }
            published.push((
                label.clone(),
                i64::try_from(set.published).unwrap_or(i64::MAX),
            ));
            let late = now > set.next_rotation_at.saturating_add(grace);
            overdue.push((label, i64::from(late)));
        }
        gauge_family(
            &mut encoder,
            "keyset_next_rotation_seconds",
            "Seconds until the key set's next rotation is due (negative: past due)",
            &next,
        )?;
        gauge_family(
            &mut encoder,
            "keyset_active_key_age_seconds",
            "Seconds since the key set's active key started signing",
            &age,
        )?;
        gauge_family(
            &mut encoder,
            "keyset_published_keys",
            "Keys the key set's JWKS publishes (pending, active, retired)",
            &published,
        )?;
        gauge_family(
            &mut encoder,
            "rotation_overdue",
            "1 when the key set's due rotation has not happened within --rotation-overdue-after (two scheduler intervals by default)",
            &overdue,
        )?;
        encoder
            .encode_descriptor(
                "jwks_snapshot_generation",
                "The database change counter the in-memory JWKS snapshot was built from",
                None,
                MetricType::Gauge,
            )
            .and_then(|m| ConstGauge::new(status.generation.unwrap_or(-1)).encode(m))?;
        encoder
            .encode_descriptor(
                "jwks_snapshot_age_seconds",
                "Seconds since the JWKS snapshot was last found to match the database",
                None,
                MetricType::Gauge,
            )
            .and_then(|m| {
                ConstGauge::new(status.synced_ago.map_or(-1.0, |d| d.as_secs_f64())).encode(m)
            })?;
        encoder
            .encode_descriptor(
                "jwks_snapshot_rebuilds",
                "Times the in-memory key set view (every JWKS) was rebuilt from the database",
                None,
                MetricType::Counter,
            )
            .and_then(|m| ConstCounter::new(status.rebuilds).encode(m))?;
        if let Some(not_after) = readings.tls_not_after() {
            encoder
                .encode_descriptor(
                    "tls_certificate_expiry_seconds",
                    "Seconds until the served TLS certificate expires (negative: expired)",
                    None,
                    MetricType::Gauge,
                )
                .and_then(|m| ConstGauge::new(not_after.saturating_sub(now)).encode(m))?;
        }
        Ok(())
    }
}

/// What the scrape reads of the key sets: one consistent look at the view.
#[derive(Debug)]
pub struct KeySetStatus {
    /// The service clock's now, Unix seconds.
    pub now: i64,
    /// Each live key set.
    pub keysets: Vec<KeySetGauge>,
    /// The key set generation the view holds.
    pub generation: Option<i64>,
    /// How long since the view last matched the database.
    pub synced_ago: Option<Duration>,
    /// Times the view was rebuilt from the database.
    pub rebuilds: u64,
}

/// One key set's gauges.
#[derive(Debug)]
pub struct KeySetGauge {
    /// Its name.
    pub name: String,
    /// When its next rotation is due.
    pub next_rotation_at: i64,
    /// When its active key started signing.
    pub active_since: Option<i64>,
    /// Keys its JWKS publishes.
    pub published: usize,
}
