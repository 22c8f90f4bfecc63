//! A small closed-loop load generator and what it saw ([`LoadReport`]): statuses, errors,
//! answering origins, latencies and their percentiles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use tokio::task::JoinSet;

use crate::client::{TestBody, TestClient, send};

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Latency of every completed exchange (any status).
    pub latencies: Vec<Duration>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Exchanges that failed without an answer.
    pub errors: Vec<String>,
    /// Answers by `x-origin`.
    pub by_origin: BTreeMap<String, usize>,
    /// Status and body of every answer that was not 2xx.
    pub refusals: Vec<(u16, String)>,
}

impl LoadReport {
    /// Answers with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Exchanges that were not answered 2xx.
    pub fn failures(&self) -> usize {
        self.errors.len()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    /// Every exchange.
    pub fn total(&self) -> usize {
        self.errors.len() + self.statuses.values().sum::<usize>()
    }

    /// The `p`-th percentile latency (0 < p ≤ 100).
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// Nearest-rank percentile of `samples`; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `concurrency` workers for `duration`, each sending `make(n)` in a closed loop
/// (the next request when the previous answer has been read).
pub async fn load<F>(
    client: &TestClient,
    concurrency: usize,
    duration: Duration,
    make: F,
) -> LoadReport
where
    F: Fn(u64) -> Request<TestBody> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let make = make.clone();
        let counter = counter.clone();
        workers.spawn(async move {
            let mut report = LoadReport::default();
            while Instant::now() < deadline {
                let request = make(counter.fetch_add(1, Ordering::SeqCst));
                let started = Instant::now();
                match send(&client, request).await {
                    Ok(answer) => {
                        report.latencies.push(started.elapsed());
                        *report.statuses.entry(answer.status.as_u16()).or_default() += 1;
                        if !answer.status.is_success() {
                            report
                                .refusals
                                .push((answer.status.as_u16(), answer.text()));
                        }
                        if let Some(origin) =
                            answer.headers.get("x-origin").and_then(|v| v.to_str().ok())
                        {
                            *report.by_origin.entry(origin.to_owned()).or_default() += 1;
                        }
                    }
                    Err(error) => report.errors.push(error),
                }
            }
            report
        });
    }
    let mut total = LoadReport::default();
    while let Some(report) = workers.join_next().await {
        let report = report.expect("load worker");
        total.latencies.extend(report.latencies);
        total.errors.extend(report.errors);
        total.refusals.extend(report.refusals);
        for (status, n) in report.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        for (origin, n) in report.by_origin {
            *total.by_origin.entry(origin).or_default() += n;
        }
    }
    total
}
