//! `loketctl bench`: prepaid purchases through the real ingress, at a fixed
//! number in flight, for a fixed time, each with a unique `client_ref` and a
//! `wait_ms` so every call returns at the transaction's final state. It
//! prints throughput, latency percentiles, errors by gRPC code, and how much
//! CPU each loket process, nats-server and PostgreSQL used meanwhile.
//!
//! It is a benchmark: it reports figures and never fails on them. It fails
//! only when it cannot run at all (no connection, or the first purchase is
//! refused, e.g. an unknown product or a bad API key).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loket_protocol::pb;
use loket_runtime::Secret;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::client::{self, Client};
use crate::error::code_name;
use crate::output::{status_name, Render, Table};
use crate::CliError;

/// An account the OkeBayar simulator answers with immediate success: any
/// account that is not its scenario prefix (`089900000`) plus three digits
/// (crates/simulators/SCENARIOS.md). Override with `--account`.
pub const DEFAULT_ACCOUNT: &str = "081200000001";

/// Extra client-side deadline beyond the server-side wait.
const CALL_MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Latency histogram

/// Every latency in microseconds; sorted once at the end. At tens of
/// thousands of calls per run this is a few hundred kilobytes, and the
/// percentiles are exact.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    micros: Vec<u64>,
    sorted: bool,
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    pub fn merge(&mut self, other: Histogram) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank percentile (`q` in 0..=1): the smallest recorded
    /// value with at least `q` of all values at or below it.
    pub fn percentile(&mut self, q: f64) -> Option<u64> {
        if self.micros.is_empty() {
            return None;
        }
        self.sort();
        let n = self.micros.len();
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        Some(self.micros[rank.clamp(1, n) - 1])
    }

    pub fn max(&mut self) -> Option<u64> {
        self.percentile(1.0)
    }

    pub fn mean(&self) -> Option<u64> {
        if self.micros.is_empty() {
            return None;
        }
        let sum: u128 = self.micros.iter().map(|&m| u128::from(m)).sum();
        Some((sum / self.micros.len() as u128) as u64)
    }
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc

/// CPU ticks (user + system) of the processes we account for, by pid.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    processes: HashMap<u32, (String, u64)>,
}

/// Whether a process's `comm` is one we report.
pub fn is_watched(comm: &str) -> bool {
    comm.starts_with("loket") || comm == "nats-server" || comm == "postgres"
}

/// `comm` and utime + stime from the text of `/proc/<pid>/stat`. The comm is
/// in parentheses and may itself hold spaces or parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the comm: state (field 3) … utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

impl CpuSample {
    pub fn take() -> CpuSample {
        let mut processes = HashMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return CpuSample { processes };
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, ticks)) = parse_stat(&stat) {
                if is_watched(&comm) {
                    processes.insert(pid, (comm, ticks));
                }
            }
        }
        CpuSample { processes }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuShare {
    /// The process name (`comm`, at most 15 characters).
    pub process: String,
    /// How many processes of that name were seen (PostgreSQL backends, replicas).
    pub processes: usize,
    /// Percent of one core over the measured time (200 = two full cores).
    pub percent_of_core: f64,
}

/// Per-name CPU share between two samples. A process born in between counts
/// from zero; one that exited in between is not seen (a small undercount).
pub fn cpu_shares(
    before: &CpuSample,
    after: &CpuSample,
    elapsed: Duration,
    ticks_per_second: u64,
) -> Vec<CpuShare> {
    let mut by_name: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (pid, (comm, ticks)) in &after.processes {
        let earlier = match before.processes.get(pid) {
            Some((old_comm, old_ticks)) if old_comm == comm => *old_ticks,
            _ => 0,
        };
        let entry = by_name.entry(comm.clone()).or_default();
        entry.0 += 1;
        entry.1 += ticks.saturating_sub(earlier);
    }
    let available = elapsed.as_secs_f64() * ticks_per_second.max(1) as f64;
    let mut shares: Vec<CpuShare> = by_name
        .into_iter()
        .map(|(process, (processes, ticks))| CpuShare {
            process,
            processes,
            percent_of_core: if available > 0.0 {
                round1(ticks as f64 * 100.0 / available)
            } else {
                0.0
            },
        })
        .collect();
    shares.sort_by(|a, b| {
        b.percent_of_core
            .total_cmp(&a.percent_of_core)
            .then(a.process.cmp(&b.process))
    });
    shares
}

pub(crate) fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `getconf CLK_TCK`, or the usual 100 when that cannot be run.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------
// The run

#[derive(Debug, Default)]
struct WorkerStats {
    latencies: Histogram,
    success: u64,
    non_success_final: u64,
    not_final: u64,
    errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyMicros {
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<u64>,
}

impl LatencyMicros {
    pub fn of(latencies: &mut Histogram) -> LatencyMicros {
        LatencyMicros {
            p50: latencies.percentile(0.50),
            p90: latencies.percentile(0.90),
            p99: latencies.percentile(0.99),
            p999: latencies.percentile(0.999),
            max: latencies.max(),
            mean: latencies.mean(),
        }
    }

    /// `latency  p50 … mean …`, in milliseconds.
    pub fn line(&self) -> String {
        format!(
            "latency  p50 {}  p90 {}  p99 {}  p999 {}  max {}  mean {}",
            millis(self.p50),
            millis(self.p90),
            millis(self.p99),
            millis(self.p999),
            millis(self.max),
            millis(self.mean)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub product: String,
    pub account: String,
    pub concurrency: u32,
    pub connections: u32,
    pub warmup_ms: u64,
    /// The measured time: from the end of the warm-up until the last call returned.
    pub elapsed_ms: u64,
    /// Calls started in the measured time.
    pub calls: u64,
    /// Calls that returned a final transaction (success or failed) or needs_review.
    pub completed: u64,
    pub completed_per_second: f64,
    pub success: u64,
    pub success_per_second: f64,
    /// Returned at `failed` or `needs_review`.
    pub non_success_final: u64,
    /// Returned before reaching a final state (the wait ran out).
    pub not_final: u64,
    /// gRPC errors by status code name.
    pub errors: BTreeMap<String, u64>,
    /// Latency of every call that returned a transaction, in microseconds.
    pub latency_us: LatencyMicros,
    #[serde(flatten)]
    pub cpu_use: CpuUse,
    /// CPU time of all those processes per completed purchase, in
    /// milliseconds: the cost figure that compares across machines and
    /// loads (none when nothing completed).
    pub cpu_ms_per_purchase: Option<f64>,
    pub stopped_early: bool,
}

/// Whether `addr` (a URL) names this machine: `localhost` or a loopback IP.
fn on_this_machine(addr: &str) -> bool {
    let Ok(uri) = addr.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Runs the benchmark. `stop` ends it early (Ctrl-C); figures so far are
/// reported. An ingress on another machine is refused unless
/// `--allow-remote-ingress`.
pub async fn run(
    addr: &str,
    api_key: Option<&Secret>,
    args: &BenchArgs,
    stop: Arc<AtomicBool>,
) -> Result<BenchReport, CliError> {
    if !args.allow_remote_ingress && !on_this_machine(addr) {
        return Err(CliError::Usage(format!(
            "--addr {addr}: the benchmark makes thousands of real purchases, so it runs only against an \
             ingress on this machine (make run, with simulated providers); add --allow-remote-ingress if \
             {addr} is a test deployment whose providers are simulators"
        )));
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(client::connect_channel(addr).await?);
    }
    let run_id = format!(
        "bench-{:x}{:04x}",
        chrono::Utc::now().timestamp_millis(),
        rand::random::<u16>()
    );
    let template = pb::PurchaseRequest {
        client_ref: String::new(),
        product_code: args.product.clone(),
        account: args.account.clone(),
        inquiry_id: String::new(),
        wait_ms: crate::duration::wait_ms(Some(args.wait)).map_err(CliError::Usage)?,
    };

    // One purchase first: a setup problem (bad key, unknown product) should
    // be one clear error, not thousands of counted ones.
    let mut first = client::client(channels[0].clone(), api_key)?;
    let probe = purchase_once(&mut first, &template, format!("{run_id}-probe"), args.wait).await?;
    let probe_status = status_name(probe.status);
    if probe_status != "success" {
        eprintln!(
            "warning: the first purchase ended {probe_status} (code {:?}); the simulator may not treat account {} \
             as immediate success (see --account)",
            probe.provider_code, args.account
        );
    }

    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + args.duration;
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let channel = channels[(worker % args.connections) as usize].clone();
        let client = client::client(channel, api_key)?;
        let template = template.clone();
        let prefix = format!("{run_id}-{worker}");
        let stop = stop.clone();
        let wait = args.wait;
        workers.push(tokio::spawn(async move {
            drive(client, template, prefix, wait, measure_from, end, stop).await
        }));
    }

    // CPU is sampled over the measured time only.
    tokio::select! {
        () = tokio::time::sleep_until(measure_from.into()) => {}
        () = wait_for(stop.clone()) => {}
    }
    let cpu_before = CpuSample::take();
    let cpu_from = Instant::now();

    let mut stats = WorkerStats::default();
    for worker in workers {
        let done = worker
            .await
            .map_err(|e| CliError::Usage(format!("benchmark worker failed: {e}")))?;
        stats.latencies.merge(done.latencies);
        stats.success += done.success;
        stats.non_success_final += done.non_success_final;
        stats.not_final += done.not_final;
        for (code, count) in done.errors {
            *stats.errors.entry(code).or_default() += count;
        }
    }
    let cpu_after = CpuSample::take();
    let cpu_elapsed = cpu_from.elapsed();
    let elapsed = Instant::now().saturating_duration_since(measure_from);

    let cpu_use = CpuUse::between(&cpu_before, &cpu_after, cpu_elapsed);
    let completed = stats.success + stats.non_success_final;
    let errors_total: u64 = stats.errors.values().sum();
    let per_second = |count: u64| {
        if elapsed.is_zero() {
            0.0
        } else {
            round1(count as f64 / elapsed.as_secs_f64())
        }
    };
    let latencies = &mut stats.latencies;
    Ok(BenchReport {
        product: args.product.clone(),
        account: args.account.clone(),
        concurrency: args.concurrency,
        connections: args.connections,
        warmup_ms: args.warmup.as_millis() as u64,
        elapsed_ms: elapsed.as_millis() as u64,
        calls: completed + stats.not_final + errors_total,
        completed,
        completed_per_second: per_second(completed),
        success: stats.success,
        success_per_second: per_second(stats.success),
        non_success_final: stats.non_success_final,
        not_final: stats.not_final,
        errors: stats
            .errors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        latency_us: LatencyMicros::of(latencies),
        cpu_ms_per_purchase: cpu_use.ms_per(per_second(completed)),
        cpu_use,
        stopped_early: stop.load(Ordering::Relaxed),
    })
}

pub(crate) async fn wait_for(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn purchase_once(
    client: &mut Client,
    template: &pb::PurchaseRequest,
    client_ref: String,
    wait: Duration,
) -> Result<pb::Transaction, CliError> {
    let mut request = tonic::Request::new(pb::PurchaseRequest {
        client_ref,
        ..template.clone()
    });
    request.set_timeout(wait + CALL_MARGIN);
    Ok(client.purchase(request).await?.into_inner())
}

async fn drive(
    mut client: Client,
    template: pb::PurchaseRequest,
    prefix: String,
    wait: Duration,
    measure_from: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut sequence: u64 = 0;
    loop {
        let start = Instant::now();
        if start >= end || stop.load(Ordering::Relaxed) {
            return stats;
        }
        sequence += 1;
        let result =
            purchase_once(&mut client, &template, format!("{prefix}-{sequence}"), wait).await;
        let latency = start.elapsed();
        if start < measure_from {
            continue;
        }
        match result {
            Ok(transaction) => {
                stats.latencies.record(latency);
                match status_name(transaction.status) {
                    "success" => stats.success += 1,
                    "failed" | "needs_review" => stats.non_success_final += 1,
                    _ => stats.not_final += 1,
                }
            }
            Err(CliError::Grpc(status) | CliError::Unanswered(status)) => {
                *stats.errors.entry(code_name(status.code())).or_default() += 1
            }
            Err(_) => *stats.errors.entry("CLIENT").or_default() += 1,
        }
    }
}

fn millis(micros: Option<u64>) -> String {
    micros.map_or("-".into(), |m| format!("{:.2} ms", m as f64 / 1000.0))
}

impl Render for BenchReport {
    fn text(&self) -> String {
        let mut out = String::new();
        let errors_total: u64 = self.errors.values().sum();
        let lines = [
            format!(
                "product {} account {}, {} in flight over {} connection(s), warm-up {} ms, measured {:.1} s{}",
                self.product,
                self.account,
                self.concurrency,
                self.connections,
                self.warmup_ms,
                self.elapsed_ms as f64 / 1000.0,
                if self.stopped_early { " (stopped early)" } else { "" }
            ),
            format!("completed purchases/s   {:.1}", self.completed_per_second),
            format!("successful purchases/s  {:.1}", self.success_per_second),
            format!(
                "calls {}  completed {}  success {}  non-success final {}  not final {}  errors {}",
                self.calls, self.completed, self.success, self.non_success_final, self.not_final, errors_total
            ),
            self.latency_us.line(),
        ];
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            out.push_str(&format!("errors by code: {}\n", list.join(", ")));
        }
        out.push_str(&self.cpu_use.table(self.completed_per_second, "purchase"));
        out
    }
}

/// What the watched processes used over a measured time; `loketctl bench`
/// and `loketctl baseline` report it alike.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    pub cpu: Vec<CpuShare>,
    /// Sum of the shares above, percent of one core.
    pub cpu_total_percent_of_core: f64,
    pub cores: usize,
}

impl CpuUse {
    /// The use between two samples `elapsed` apart, on this machine.
    pub fn between(before: &CpuSample, after: &CpuSample, elapsed: Duration) -> CpuUse {
        let cpu = cpu_shares(before, after, elapsed, ticks_per_second());
        CpuUse {
            cpu_total_percent_of_core: round1(cpu.iter().map(|c| c.percent_of_core).sum()),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Milliseconds of CPU, all processes together, per unit of work done
    /// at `per_second`; none when nothing was done.
    pub fn ms_per(&self, per_second: f64) -> Option<f64> {
        cpu_ms_per(self.cpu.iter().map(|c| c.percent_of_core).sum(), per_second)
    }

    /// The share of every process and its cost per `unit` of work done at
    /// `per_second`, as a titled table.
    pub fn table(&self, per_second: f64, unit: &str) -> String {
        let per_unit = |percent: f64| {
            cpu_ms_per(percent, per_second).map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}"))
        };
        let mut out = format!(
            "CPU of every process named loket*, nats-server or postgres on this machine \
             (percent of one core; {} cores = {}%), total {:.1}% = {} ms of CPU per {unit}\n",
            self.cores,
            self.cores * 100,
            self.cpu_total_percent_of_core,
            per_unit(self.cpu_total_percent_of_core),
        );
        let per_unit_column = format!("MS/{}", unit.to_uppercase());
        let mut table = Table::new(&["PROCESS", "COUNT", "CPU %", &per_unit_column]);
        for share in &self.cpu {
            table.row(vec![
                share.process.clone(),
                share.processes.to_string(),
                format!("{:.1}", share.percent_of_core),
                per_unit(share.percent_of_core),
            ]);
        }
        out.push_str(&table.finish());
        out
    }
}

/// Milliseconds of CPU per unit of work: `percent_of_core` (100 = one core
/// busy) spread over `per_second` units; none when nothing was done.
fn cpu_ms_per(percent_of_core: f64, per_second: f64) -> Option<f64> {
    (per_second > 0.0).then(|| (percent_of_core * 10.0 / per_second * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ingress_on_this_machine_counts_as_local() {
        for local in [
            "http://127.0.0.1:50051",
            "http://127.0.0.2:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
        ] {
            assert!(on_this_machine(local), "{local}");
        }
        for remote in [
            "http://10.0.0.7:50051",
            "http://0.0.0.0:50051",
            "https://loket.internal:443",
            "http://[2001:db8::1]:50051",
            "http://localhost.example.com:50051",
            "not a url",
        ] {
            assert!(!on_this_machine(remote), "{remote}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(0.5), None);
        for micros in (1..=1000).rev() {
            h.record(Duration::from_micros(micros));
        }
        assert_eq!(h.len(), 1000);
        assert_eq!(h.percentile(0.50), Some(500));
        assert_eq!(h.percentile(0.99), Some(990));
        assert_eq!(h.percentile(0.999), Some(999));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.max(), Some(1000));
        assert_eq!(h.mean(), Some(500));

        let mut other = Histogram::default();
        other.record(Duration::from_millis(50));
        h.merge(other);
        assert_eq!(h.max(), Some(50_000));
        assert_eq!(h.percentile(0.999), Some(1000));
    }

    #[test]
    fn single_value_histogram() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(7));
        assert_eq!(h.percentile(0.5), Some(7));
        assert_eq!(h.percentile(0.999), Some(7));
    }

    #[test]
    fn parses_proc_stat_with_awkward_comm() {
        let stat =
            "1234 (loket-ingress) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_stat(stat), Some(("loket-ingress".to_string(), 325)));
        let stat = "99 (a) b (c)) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(stat), Some(("a) b (c)".to_string(), 10)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let own = std::fs::read_to_string("/proc/self/stat").expect("linux");
        let (comm, _) = parse_stat(&own).expect("parsed");
        assert!(!comm.is_empty());
        assert!(is_watched("loketctl") && is_watched("loket-reconcile") && is_watched("postgres"));
        assert!(is_watched("nats-server") && !is_watched("bash") && !is_watched("cargo"));
    }

    #[test]
    fn cpu_shares_by_name() {
        let before = CpuSample {
            processes: [
                (1, ("postgres".to_string(), 100)),
                (2, ("postgres".to_string(), 50)),
                (3, ("loket-ingress".to_string(), 1000)),
                // pid reused by another program: counted from zero
                (4, ("postgres".to_string(), 900)),
            ]
            .into(),
        };
        let after = CpuSample {
            processes: [
                (1, ("postgres".to_string(), 150)),
                (2, ("postgres".to_string(), 60)),
                (3, ("loket-ingress".to_string(), 1200)),
                (4, ("nats-server".to_string(), 40)),
                (5, ("postgres".to_string(), 30)), // new backend
            ]
            .into(),
        };
        let shares = cpu_shares(&before, &after, Duration::from_secs(2), 100);
        assert_eq!(
            shares,
            vec![
                CpuShare {
                    process: "loket-ingress".into(),
                    processes: 1,
                    percent_of_core: 100.0
                },
                CpuShare {
                    process: "postgres".into(),
                    processes: 3,
                    percent_of_core: 45.0
                },
                CpuShare {
                    process: "nats-server".into(),
                    processes: 1,
                    percent_of_core: 20.0
                },
            ]
        );
        assert!(cpu_shares(&before, &after, Duration::ZERO, 100)
            .iter()
            .all(|s| s.percent_of_core == 0.0));
    }

    #[test]
    fn report_text_and_json() {
        let report = BenchReport {
            product: "PULSA10".into(),
            account: DEFAULT_ACCOUNT.into(),
            concurrency: 32,
            connections: 4,
            warmup_ms: 3000,
            elapsed_ms: 30_000,
            calls: 60_010,
            completed: 60_000,
            completed_per_second: 2000.0,
            success: 59_990,
            success_per_second: 1999.7,
            non_success_final: 10,
            not_final: 0,
            errors: [("UNAVAILABLE".to_string(), 10)].into(),
            latency_us: LatencyMicros {
                p50: Some(12_340),
                p90: Some(20_000),
                p99: Some(40_000),
                p999: Some(80_000),
                max: Some(90_000),
                mean: Some(14_000),
            },
            cpu_use: CpuUse {
                cpu: vec![CpuShare {
                    process: "postgres".into(),
                    processes: 9,
                    percent_of_core: 55.5,
                }],
                cpu_total_percent_of_core: 55.5,
                cores: 2,
            },
            cpu_ms_per_purchase: cpu_ms_per(55.5, 1999.7),
            stopped_early: false,
        };
        let text = report.text();
        assert!(text.contains("completed purchases/s   2000.0"), "{text}");
        assert!(
            text.contains("p50 12.34 ms") && text.contains("p999 80.00 ms"),
            "{text}"
        );
        assert!(text.contains("errors by code: UNAVAILABLE 10"), "{text}");
        assert!(text.contains("postgres  9      55.5   0.278"), "{text}");
        assert!(
            text.contains("total 55.5% = 0.278 ms of CPU per purchase"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["latency_us"]["p99"].as_u64(), Some(40_000));
        assert_eq!(json["errors"]["UNAVAILABLE"].as_u64(), Some(10));
        assert_eq!(json["cpu_ms_per_purchase"].as_f64(), Some(0.278));
    }
}
