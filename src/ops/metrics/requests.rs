//! Request counts and latencies, kept where they happen: each thread adds to
//! its own shard (a lock no other core takes, on a cache line of its own),
//! and a scrape adds the shards up. A shared counter or a histogram behind
//! one lock would have every core write the same memory on every request,
//! which is what stops a cheap request from scaling with cores.

use std::{
    cell::Cell,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
};

use super::{GrpcLabels, HttpLabels, MethodLabel, RouteLabel};

/// Shards: threads beyond this share one with another thread.
const SHARDS: usize = 64;

/// Latency bucket bounds, seconds: 0.25 ms doubling to about 4 s (then +Inf).
const BOUNDS: [f64; 15] = {
    let mut bounds = [0.000_25; 15];
    let mut i = 1;
    while i < bounds.len() {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

/// What one label set saw: how many, their total time and their latencies.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    sum: f64,
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: [u64; BOUNDS.len() + 1],
}

impl Tally {
    fn add(&mut self, seconds: f64) {
        self.count += 1;
        self.sum += seconds;
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket] += 1;
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.sum += other.sum;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }

    /// `(upper bound, count)` per bucket, as the encoder takes them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.buckets)
            .collect()
    }
}

/// One shard, alone on its cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Shard<K>(Mutex<Vec<(K, Tally)>>);

/// Tallies by label set `K`, sharded by thread.
#[derive(Debug)]
struct Tallies<K> {
    shards: Box<[Shard<K>]>,
}

/// The shard of the calling thread, picked once per thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    }
    INDEX.with(|index| {
        index.get().unwrap_or_else(|| {
            let picked = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            index.set(Some(picked));
            picked
        })
    })
}

impl<K: Copy + Ord> Tallies<K> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard(Mutex::new(Vec::new()))).collect(),
        }
    }

    /// One request of `key` took `seconds`. Label sets are few (routes or
    /// methods times codes), so a shard is a short list.
    fn record(&self, key: K, seconds: f64) {
        let mut shard = self.shards[shard_index()]
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, tally)) = shard.iter_mut().find(|(k, _)| *k == key) {
            tally.add(seconds);
        } else {
            let mut tally = Tally::default();
            tally.add(seconds);
            shard.push((key, tally));
        }
    }

    /// Every label set's tally over all shards, sorted by label set, grouped
    /// by `group` of the label set.
    fn totals<G: Ord>(&self, group: impl Fn(K) -> G) -> Vec<(G, Tally)> {
        let mut totals: std::collections::BTreeMap<G, Tally> = std::collections::BTreeMap::new();
        for shard in &self.shards {
            let shard = shard
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, tally) in shard.iter() {
                totals.entry(group(*key)).or_default().merge(tally);
            }
        }
        totals.into_iter().collect()
    }
}

/// Requests on both transports: counts by route or method and status,
/// latency histograms by route or method.
#[derive(Debug)]
pub(super) struct RequestMetrics {
    http: Tallies<(&'static str, u16)>,
    grpc: Tallies<(&'static str, &'static str)>,
}

impl RequestMetrics {
    pub(super) fn new() -> Self {
        Self {
            http: Tallies::new(),
            grpc: Tallies::new(),
        }
    }

    pub(super) fn http(&self, route: &'static str, status: u16, seconds: f64) {
        self.http.record((route, status), seconds);
    }

    pub(super) fn grpc(&self, method: &'static str, code: &'static str, seconds: f64) {
        self.grpc.record((method, code), seconds);
    }
}

/// A counter family: one value per label set.
fn counters<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(S, Tally)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, tally) in values {
        ConstCounter::new(tally.count).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// A histogram family: one histogram per label set.
fn histograms<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(S, Tally)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, tally) in values {
        metric
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(tally.sum, tally.count, &tally.buckets(), None)?;
    }
    Ok(())
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labelled = |(key, tally): ((&'static str, &'static str), Tally)| {
            (
                GrpcLabels {
                    method: key.0,
                    code: key.1,
                },
                tally,
            )
        };
        let calls: Vec<_> = self.grpc.totals(|k| k).into_iter().map(labelled).collect();
        counters(
            &mut encoder,
            "grpc_requests",
            "keyward.v1 gRPC calls by method and status code",
            &calls,
        )?;
        let by_method: Vec<_> = self
            .grpc
            .totals(|(method, _)| method)
            .into_iter()
            .map(|(method, tally)| (MethodLabel { method }, tally))
            .collect();
        histograms(
            &mut encoder,
            "grpc_request_duration_seconds",
            "keyward.v1 gRPC call latency by method, authentication and audit included",
            &by_method,
        )?;
        let requests: Vec<_> = self
            .http
            .totals(|k| k)
            .into_iter()
            .map(|((route, code), tally)| (HttpLabels { route, code }, tally))
            .collect();
        counters(
            &mut encoder,
            "http_requests",
            "HTTP requests by route and status code",
            &requests,
        )?;
        let by_route: Vec<_> = self
            .http
            .totals(|(route, _)| route)
            .into_iter()
            .map(|(route, tally)| (RouteLabel { route }, tally))
            .collect();
        histograms(
            &mut encoder,
            "http_request_duration_seconds",
            "HTTP request latency by route",
            &by_route,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_across_threads_and_bucket_by_bound() {
        let tallies = std::sync::Arc::new(Tallies::<(&'static str, u16)>::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let tallies = std::sync::Arc::clone(&tallies);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        tallies.record(("/a", 200), 0.000_1);
                        tallies.record(("/a", 404), 0.003);
                        tallies.record(("/b", 200), 100.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let by_route = tallies.totals(|(route, _)| route);
        assert_eq!(by_route.len(), 2);
        let (route, a) = &by_route[0];
        assert_eq!(*route, "/a");
        assert_eq!(a.count, 16_000);
        assert_eq!(a.buckets[0], 8000, "0.1 ms is at most 0.25 ms");
        assert_eq!(a.buckets[4], 8000, "3 ms is above 2 ms, at most 4 ms");
        assert_eq!(by_route[1].1.buckets[BOUNDS.len()], 8000, "+Inf");
        let by_code = tallies.totals(|k| k);
        assert_eq!(
            by_code
                .iter()
                .map(|(k, t)| (*k, t.count))
                .collect::<Vec<_>>(),
            [
                (("/a", 200), 8000),
                (("/a", 404), 8000),
                (("/b", 200), 8000)
            ]
        );
        assert!((a.sum - (0.8 + 24.0)).abs() < 1e-6);
    }
}
