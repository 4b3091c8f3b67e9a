//! `loketctl baseline`: the bare pipeline loket's throughput target is
//! measured against, run on the machine as it is now, so a `loketctl bench`
//! figure can be read against what this machine does at that moment.
//!
//! Each of N loops inserts one row, publishes its id on a JetStream work
//! queue and waits until a consumer has updated the row and acked the
//! message: INSERT → JetStream → UPDATE, one item at a time per loop, with no
//! batching, as a straightforward service would write it (each loop and each
//! updater keeps one database connection; statements are prepared once).
//! The issue that set loket's target measured about 3,400 items/s for its
//! bare pipeline on a 2-core machine; this one does 6,100–7,800/s on the
//! 2-core VM loket is developed on with PostgreSQL's durable commits (the
//! default, and `make run`'s), and 10,000–12,500/s with `synchronous_commit`
//! off: each item commits twice and waits for the WAL flush both times. On a
//! shared virtual machine every figure moves with the neighbours, which is why
//! the bench is best read next to it.
//!
//! It works in its own schema (`loket_baseline`) and stream
//! (`LOKET_BASELINE`), both removed afterwards; it never touches loket's
//! tables or streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt as _;
use loket_runtime::Secret;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::bench::{round1, CpuSample, CpuUse};
use crate::bench::{Histogram, LatencyMicros};
use crate::cli::BaselineArgs;
use crate::output::Render;
use crate::CliError;

pub const SCHEMA: &str = "loket_baseline";
pub const STREAM: &str = "LOKET_BASELINE";
const SUBJECT: &str = "loket.baseline.item";
/// How long a loop waits for its item's update before counting an error.
const UPDATE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineReport {
    pub concurrency: u32,
    pub warmup_ms: u64,
    pub elapsed_ms: u64,
    /// Items inserted, published, updated and acked in the measured time.
    pub completed: u64,
    pub completed_per_second: f64,
    /// Failed steps (insert, publish, update or ack), by step.
    pub errors: HashMap<String, u64>,
    /// From the INSERT to the consumer's UPDATE, per item, in microseconds.
    pub latency_us: LatencyMicros,
    /// Every row inserted (warm-up included) was found updated at the end.
    pub every_row_updated: bool,
    #[serde(flatten)]
    pub cpu_use: CpuUse,
    /// CPU time of all those processes per completed item, in milliseconds.
    pub cpu_ms_per_item: Option<f64>,
    pub stopped_early: bool,
}

type Pending = Arc<Mutex<HashMap<Uuid, oneshot::Sender<()>>>>;

fn failed(step: &str, error: impl std::fmt::Display) -> CliError {
    CliError::Baseline(format!("baseline: {step} failed: {error}"))
}

/// Runs the bare pipeline for the warm-up and the measured duration, then
/// removes its schema and stream.
pub async fn run(
    database_url: Option<&Secret>,
    nats_url: &str,
    args: &BaselineArgs,
    stop: Arc<AtomicBool>,
) -> Result<BaselineReport, CliError> {
    let concurrency = args.concurrency as usize;
    let url = crate::setting::required(
        database_url,
        "baseline needs the database",
        "LOKET_DATABASE_URL",
        "--database-url",
    )?;
    // One connection per loop and per updater, plus one for set-up.
    let pool = loket_runtime::db::connect(url, (2 * args.concurrency + 1).min(200)).await?;
    let nats = loket_runtime::bus::connect_once(nats_url, "loketctl baseline").await?;
    let js = jetstream::new(nats);
    set_up(&pool, &js).await?;
    let result = measure(&pool, &js, args, concurrency, stop).await;
    let removed = tear_down(&pool, &js).await;
    let report = result?;
    removed?;
    Ok(report)
}

async fn set_up(pool: &PgPool, js: &jetstream::Context) -> Result<(), CliError> {
    // A stream left by an interrupted run starts empty.
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![SUBJECT.to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|error| failed("creating the stream", error))?;
    for statement in [
        format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"),
        format!("CREATE SCHEMA {SCHEMA}"),
        format!(
            "CREATE TABLE {SCHEMA}.items (id UUID PRIMARY KEY, status TEXT NOT NULL, \
             created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ)"
        ),
    ] {
        sqlx::query(&statement)
            .execute(pool)
            .await
            .map_err(|error| failed("creating the table", error))?;
    }
    Ok(())
}

async fn tear_down(pool: &PgPool, js: &jetstream::Context) -> Result<(), CliError> {
    let stream = js.delete_stream(STREAM).await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(pool)
        .await
        .map_err(|error| failed("dropping the schema", error))?;
    stream.map_err(|error| failed("deleting the stream", error))?;
    Ok(())
}

#[derive(Default)]
struct LoopStats {
    latencies: Histogram,
    errors: HashMap<String, u64>,
}

async fn measure(
    pool: &PgPool,
    js: &jetstream::Context,
    args: &BaselineArgs,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> Result<BaselineReport, CliError> {
    let consumer = js
        .get_stream(STREAM)
        .await
        .map_err(|error| failed("finding the stream", error))?
        .create_consumer(pull::Config {
            durable_name: Some("baseline".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: (concurrency * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|error| failed("creating the consumer", error))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await
        .map_err(|error| failed("pulling", error))?;

    let pending: Pending = Arc::default();
    let update_errors: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    // The consumer hands each message to an updater, round robin.
    let mut updaters = Vec::new();
    for _ in 0..concurrency {
        let (sender, receiver) = mpsc::channel::<jetstream::Message>(4);
        let connection = acquire(pool).await?;
        tokio::spawn(update_each(
            connection,
            receiver,
            pending.clone(),
            update_errors.clone(),
        ));
        updaters.push(sender);
    }
    let consume = tokio::spawn(async move {
        let mut next = 0;
        while let Some(message) = messages.next().await {
            // A pull error (a heartbeat missed under load) is passed over;
            // the stream goes on pulling.
            let Ok(message) = message else { continue };
            if updaters[next].send(message).await.is_err() {
                break;
            }
            next = (next + 1) % updaters.len();
        }
    });

    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + args.duration;
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let connection = acquire(pool).await?;
        loops.push(tokio::spawn(insert_and_wait(
            connection,
            js.clone(),
            pending.clone(),
            measure_from,
            end,
            stop.clone(),
        )));
    }
    tokio::select! {
        () = tokio::time::sleep_until(measure_from.into()) => {}
        () = crate::bench::wait_for(stop.clone()) => {}
    }
    let cpu_before = CpuSample::take();
    let cpu_from = Instant::now();
    let mut stats = LoopStats::default();
    for handle in loops {
        let done = handle.await.map_err(|error| failed("a loop", error))?;
        stats.latencies.merge(done.latencies);
        for (step, count) in done.errors {
            *stats.errors.entry(step).or_default() += count;
        }
    }
    let cpu_after = CpuSample::take();
    let cpu_elapsed = cpu_from.elapsed();
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    consume.abort();
    for (step, count) in update_errors
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .drain()
    {
        *stats.errors.entry(step).or_default() += count;
    }
    let not_updated: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {SCHEMA}.items WHERE status <> 'updated'"
    ))
    .fetch_one(pool)
    .await
    .map_err(|error| failed("checking the rows", error))?;

    let cpu_use = CpuUse::between(&cpu_before, &cpu_after, cpu_elapsed);
    let completed = stats.latencies.len() as u64;
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        completed as f64 / elapsed.as_secs_f64()
    };
    let latencies = &mut stats.latencies;
    Ok(BaselineReport {
        concurrency: args.concurrency,
        warmup_ms: args.warmup.as_millis() as u64,
        elapsed_ms: elapsed.as_millis() as u64,
        completed,
        completed_per_second: round1(rate),
        errors: stats.errors,
        latency_us: LatencyMicros::of(latencies),
        every_row_updated: not_updated == 0,
        cpu_ms_per_item: cpu_use.ms_per(rate),
        cpu_use,
        stopped_early: stop.load(Ordering::Relaxed),
    })
}

async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, CliError> {
    pool.acquire()
        .await
        .map_err(|error| failed("connecting to the database", error))
}

/// One loop: insert, publish (awaiting the stream's ack), wait for the
/// update; until `end`.
async fn insert_and_wait(
    mut connection: PoolConnection<Postgres>,
    js: jetstream::Context,
    pending: Pending,
    measure_from: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
) -> LoopStats {
    let insert = format!("INSERT INTO {SCHEMA}.items (id, status) VALUES ($1, 'new')");
    let mut stats = LoopStats::default();
    let mut count = |step: &str| *stats.errors.entry(step.to_string()).or_default() += 1;
    let mut latencies = Histogram::default();
    loop {
        let start = Instant::now();
        if start >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let id = Uuid::now_v7();
        let (done, updated) = oneshot::channel();
        lock(&pending).insert(id, done);
        if let Err(error) = sqlx::query(&insert)
            .bind(id)
            .execute(&mut *connection)
            .await
        {
            lock(&pending).remove(&id);
            count("insert");
            tracing::debug!(%error, "baseline insert failed");
            continue;
        }
        let published = match js.publish(SUBJECT, id.as_bytes().to_vec().into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if !published {
            lock(&pending).remove(&id);
            count("publish");
            continue;
        }
        match tokio::time::timeout(UPDATE_WAIT, updated).await {
            Ok(Ok(())) if start >= measure_from => latencies.record(start.elapsed()),
            Ok(_) => {}
            Err(_) => {
                lock(&pending).remove(&id);
                count("update wait");
            }
        }
    }
    stats.latencies = latencies;
    stats
}

/// One updater: UPDATE the row a message names, ack, tell its loop.
async fn update_each(
    mut connection: PoolConnection<Postgres>,
    mut messages: mpsc::Receiver<jetstream::Message>,
    pending: Pending,
    errors: Arc<Mutex<HashMap<String, u64>>>,
) {
    let update =
        format!("UPDATE {SCHEMA}.items SET status = 'updated', updated_at = now() WHERE id = $1");
    let count = |step: &str| {
        *errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(step.to_string())
            .or_default() += 1
    };
    while let Some(message) = messages.recv().await {
        let Ok(id) = Uuid::from_slice(&message.payload) else {
            let _ = message.ack().await;
            continue;
        };
        if sqlx::query(&update)
            .bind(id)
            .execute(&mut *connection)
            .await
            .is_err()
        {
            count("update");
            // Back to the stream at once: its loop is still waiting.
            let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
            continue;
        }
        if message.ack().await.is_err() {
            count("ack");
        }
        if let Some(done) = lock(&pending).remove(&id) {
            let _ = done.send(());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Render for BaselineReport {
    fn text(&self) -> String {
        let mut out = format!(
            "bare pipeline INSERT -> JetStream -> UPDATE (machine calibration), {} in flight, \
             warm-up {} ms, measured {:.1} s{}\n",
            self.concurrency,
            self.warmup_ms,
            self.elapsed_ms as f64 / 1000.0,
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "completed items/s   {:.1}\n",
            self.completed_per_second
        ));
        let errors: u64 = self.errors.values().sum();
        out.push_str(&format!(
            "completed {}  errors {}  every row updated {}\n",
            self.completed,
            errors,
            if self.every_row_updated { "yes" } else { "NO" }
        ));
        out.push_str(&self.latency_us.line());
        out.push('\n');
        out.push_str(&self.cpu_use.table(self.completed_per_second, "item"));
        out
    }
}
