//! Counters and latency histograms behind a small hook trait.
//!
//! The engine reports events to a [`MetricsHook`]; [`Metrics`] is the
//! built-in one that `stats` reads, and an embedder may add its own (to feed
//! Prometheus, say) through `EngineOptions`. Histograms use logarithmic
//! buckets (four per power of two, so quantiles are within 19%) in
//! nanoseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// An event the engine counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Counter {
    /// Sets applied.
    Puts,
    /// Deletes applied (also of absent keys).
    Deletes,
    /// Batches applied.
    Batches,
    /// Gets served.
    Gets,
    /// Gets that found a value.
    GetHits,
    /// Batches refused because a condition failed.
    ConditionFailures,
    /// Bytes appended to the log.
    BytesAppended,
    /// Fsyncs of the log.
    Fsyncs,
    /// Group commits (each one write and at most one fsync).
    CommitGroups,
    /// Keys found through segment metadata and copied into the hot index.
    HotPromotions,
    /// Compactions finished.
    Compactions,
    /// Segment bytes compaction removed (inputs minus outputs).
    CompactionBytesReclaimed,
    /// I/O failures that failed no write: writing a sealed segment's
    /// metadata (its keys stay in memory; retried later), or writing zeros
    /// ahead of the tail after a write's bytes were appended (the log then
    /// grows without them).
    NonFatalIoFailures,
}

const COUNTERS: usize = 13;

/// A duration the engine measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Latency {
    /// From a write's submission to its acknowledgement.
    Commit,
    /// One fsync of the log.
    Fsync,
}

const LATENCIES: usize = 2;

/// Receives metric events. Implementations must be cheap and non-blocking:
/// they run on the write path.
pub trait MetricsHook: Send + Sync {
    /// Counts `amount` more of `counter`.
    fn add(&self, counter: Counter, amount: u64);
    /// Records one duration.
    fn observe(&self, latency: Latency, elapsed: Duration);
}

/// The built-in sink, plus an optional embedder hook that sees every event too.
pub struct Metrics {
    counters: [AtomicU64; COUNTERS],
    histograms: [Histogram; LATENCIES],
    extra: Option<Arc<dyn MetricsHook>>,
}

impl Metrics {
    pub fn new(extra: Option<Arc<dyn MetricsHook>>) -> Self {
        Metrics {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            histograms: std::array::from_fn(|_| Histogram::new()),
            extra,
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = |counter: Counter| self.counters[counter as usize].load(Ordering::Relaxed);
        MetricsSnapshot {
            puts: c(Counter::Puts),
            deletes: c(Counter::Deletes),
            batches: c(Counter::Batches),
            gets: c(Counter::Gets),
            get_hits: c(Counter::GetHits),
            condition_failures: c(Counter::ConditionFailures),
            bytes_appended: c(Counter::BytesAppended),
            fsyncs: c(Counter::Fsyncs),
            commit_groups: c(Counter::CommitGroups),
            hot_promotions: c(Counter::HotPromotions),
            compactions: c(Counter::Compactions),
            compaction_bytes_reclaimed: c(Counter::CompactionBytesReclaimed),
            non_fatal_io_failures: c(Counter::NonFatalIoFailures),
            commit_latency: self.histograms[Latency::Commit as usize].summary(),
            fsync_latency: self.histograms[Latency::Fsync as usize].summary(),
        }
    }
}

impl MetricsHook for Metrics {
    fn add(&self, counter: Counter, amount: u64) {
        self.counters[counter as usize].fetch_add(amount, Ordering::Relaxed);
        if let Some(extra) = &self.extra {
            extra.add(counter, amount);
        }
    }

    fn observe(&self, latency: Latency, elapsed: Duration) {
        self.histograms[latency as usize].record(elapsed);
        if let Some(extra) = &self.extra {
            extra.observe(latency, elapsed);
        }
    }
}

/// Point-in-time copy of the built-in metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Sets applied.
    pub puts: u64,
    /// Deletes applied.
    pub deletes: u64,
    /// Batches applied.
    pub batches: u64,
    /// Gets served.
    pub gets: u64,
    /// Gets that found a value.
    pub get_hits: u64,
    /// Batches refused by a condition.
    pub condition_failures: u64,
    /// Bytes appended to the log.
    pub bytes_appended: u64,
    /// Fsyncs of the log.
    pub fsyncs: u64,
    /// Group commits.
    pub commit_groups: u64,
    /// Keys found through segment metadata and copied into the hot index.
    pub hot_promotions: u64,
    /// Compactions finished.
    pub compactions: u64,
    /// Segment bytes compaction removed.
    pub compaction_bytes_reclaimed: u64,
    /// I/O failures that failed no write (see `Counter::NonFatalIoFailures`).
    pub non_fatal_io_failures: u64,
    /// From a write's submission to its acknowledgement.
    pub commit_latency: LatencySummary,
    /// Of one fsync.
    pub fsync_latency: LatencySummary,
}

/// Quantiles in microseconds (upper bounds of their buckets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Durations recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Longest.
    pub max_us: u64,
}

const SUB_BUCKET_BITS: u32 = 2;
const BUCKETS: usize = (64 << SUB_BUCKET_BITS) as usize;

struct Histogram {
    buckets: Box<[AtomicU64]>,
    max_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let quantile_us = |q: f64| {
            if count == 0 {
                return 0;
            }
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (bucket, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_upper_ns(bucket).div_ceil(1000);
                }
            }
            unreachable!("rank {rank} is at most count {count}")
        };
        LatencySummary {
            count,
            p50_us: quantile_us(0.5),
            p99_us: quantile_us(0.99),
            max_us: self.max_ns.load(Ordering::Relaxed).div_ceil(1000),
        }
    }
}

/// Bucket of a value: values below 4 get their own bucket; above, the
/// power of two and the next two bits.
fn bucket_of(ns: u64) -> usize {
    if ns < (1 << SUB_BUCKET_BITS) {
        return ns as usize;
    }
    let magnitude = 63 - ns.leading_zeros();
    let sub = (ns >> (magnitude - SUB_BUCKET_BITS)) & ((1 << SUB_BUCKET_BITS) - 1);
    (((magnitude - SUB_BUCKET_BITS + 1) << SUB_BUCKET_BITS) as u64 + sub) as usize
}

/// Largest value that lands in `bucket`.
fn bucket_upper_ns(bucket: usize) -> u64 {
    if bucket < (1 << SUB_BUCKET_BITS) {
        return bucket as u64;
    }
    let magnitude = (bucket >> SUB_BUCKET_BITS) as u32 + SUB_BUCKET_BITS - 1;
    let sub = (bucket & ((1 << SUB_BUCKET_BITS) - 1)) as u64;
    let lower = (1u64 << magnitude) + (sub << (magnitude - SUB_BUCKET_BITS));
    lower.saturating_add((1u64 << (magnitude - SUB_BUCKET_BITS)) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn buckets_bound_their_values() {
        for ns in (0..10_000u64).chain([1 << 20, (1 << 20) + 1, 123_456_789, u64::MAX / 2]) {
            let bucket = bucket_of(ns);
            assert!(bucket < BUCKETS);
            assert!(bucket_upper_ns(bucket) >= ns, "ns {ns} bucket {bucket}");
            if bucket > 0 {
                assert!(
                    bucket_upper_ns(bucket - 1) < ns,
                    "ns {ns} fits a lower bucket"
                );
            }
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let metrics = Metrics::new(None);
        for us in 1..=100 {
            metrics.observe(Latency::Fsync, Duration::from_micros(us));
        }
        let summary = metrics.snapshot().fsync_latency;
        assert_eq!(summary.count, 100);
        assert!((50..=60).contains(&summary.p50_us), "{summary:?}");
        assert!((99..=120).contains(&summary.p99_us), "{summary:?}");
        assert_eq!(summary.max_us, 100);
        assert_eq!(metrics.snapshot().commit_latency, LatencySummary::default());
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Counter, u64)>>);

    impl MetricsHook for Recorder {
        fn add(&self, counter: Counter, amount: u64) {
            self.0.lock().unwrap().push((counter, amount));
        }
        fn observe(&self, _: Latency, _: Duration) {}
    }

    #[test]
    fn counters_reach_the_snapshot_and_the_extra_hook() {
        let recorder = Arc::new(Recorder::default());
        let metrics = Metrics::new(Some(recorder.clone()));
        metrics.add(Counter::Puts, 2);
        metrics.add(Counter::BytesAppended, 100);
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.puts, snapshot.bytes_appended), (2, 100));
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![(Counter::Puts, 2), (Counter::BytesAppended, 100)]
        );
    }
}
