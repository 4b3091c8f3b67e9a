//! The first dispatch of a new transaction: its command, published durably
//! on `loket.cmd.<provider>.<operation>` with `Nats-Msg-Id` =
//! `cmd:<id>:0` (so a re-publish within JetStream's duplicate window is
//! dropped), then `dispatched_at` recorded.
//!
//! A failed publish does not fail the call: the transaction is in Postgres
//! (the record of truth) and the reconciler's sweep re-dispatches anything
//! left undispatched, as a status check first.
//!
//! Recording `dispatched_at` is batched: the ids published within
//! [`MARK_LINGER`] share one `UPDATE … WHERE id = ANY($1)`. The mark exists
//! for the sweep, which looks only at unresolved transactions, so a
//! transaction that has already settled by then (most purchases do, well
//! within the linger) is not written again: a call that waited and saw its
//! transaction settle tells the dispatcher ([`Dispatcher::settled`]), which
//! drops the id before it reaches the database; the statement filters out
//! the rest that settled meanwhile. A lost or late mark only costs a
//! harmless sweep re-dispatch, which starts with a status check.

use async_nats::jetstream;
use loket_protocol::subjects;
use loket_runtime::bus;
use loket_runtime::db::BoundedPool;
use loket_runtime::telemetry::TraceContext;
use loket_store::TransactionRow;
use prost::Message as _;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::metrics::DISPATCH_FAILURES;

/// Most ids recorded by one `UPDATE`.
const MARK_BATCH: usize = 512;
/// Queue of ids waiting to be recorded; beyond it the mark is written inline.
const MARK_QUEUE: usize = 65_536;
/// How long the first id of a batch waits for others (and for its
/// transaction to settle, which spares the write). Far below the sweep's
/// grace for never-dispatched transactions (30 s by default).
const MARK_LINGER: Duration = Duration::from_millis(500);

/// Test-only fault injection, named in configuration (`failpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failpoint {
    /// After the transaction is inserted and before its command is
    /// published: hang forever, as an ingress killed right there would
    /// never publish (RELIABILITY #1; the sweep must dispatch it).
    HangBeforePublish,
}

/// A first command being published ([`Dispatcher::start`]).
pub struct Publishing(tokio::task::JoinHandle<bool>);

impl Publishing {
    /// Waits for the publish at most `answer_within` (what the client's
    /// deadline leaves): past that the call answers and the publish goes on
    /// by itself. So a client is answered in time while the bus is slow or
    /// down, and its command is not given up for that.
    pub async fn answer_within(self, answer_within: Duration) {
        if tokio::time::timeout(answer_within, self.0).await.is_err() {
            tracing::debug!("answering before the command's publish is acknowledged (the client's deadline); it goes on");
        }
    }
}

/// What the task recording `dispatched_at` hears about a transaction.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// Its first command was published: record `dispatched_at`.
    Dispatched(Uuid),
    /// It settled: the sweep will never look at it, no need to record.
    Settled(Uuid),
}

#[derive(Clone)]
pub struct Dispatcher {
    js: jetstream::Context,
    db: BoundedPool,
    publish_timeout: Duration,
    failpoint: Option<Failpoint>,
    marks: mpsc::Sender<Mark>,
}

impl Dispatcher {
    /// The dispatcher and the task recording `dispatched_at`; the task ends
    /// (after writing what is queued) once `finished` fires; its panic stops
    /// the service (`vital`).
    pub fn new(
        js: jetstream::Context,
        db: BoundedPool,
        publish_timeout: Duration,
        failpoint: Option<Failpoint>,
        finished: loket_runtime::Shutdown,
        vital: &loket_runtime::Vital,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (marks, queue) = mpsc::channel(MARK_QUEUE);
        let task = tokio::spawn(
            vital
                .guard_against_panics("dispatch marker", record_marks(db.clone(), queue, finished)),
        );
        (
            Dispatcher {
                js,
                db,
                publish_timeout,
                failpoint,
                marks,
            },
            task,
        )
    }

    /// How long a publish may wait for its acknowledgement.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    /// Starts [`Dispatcher::dispatch`] in a task of its own: the publish
    /// goes on, up to the publish timeout, whatever becomes of the call that
    /// started it (one never acknowledged is dispatched by the sweep).
    pub fn start(&self, row: &TransactionRow, trace: TraceContext) -> Publishing {
        let dispatcher = self.clone();
        let row = row.clone();
        Publishing(tokio::spawn(
            async move { dispatcher.dispatch(&row, &trace).await }.in_current_span(),
        ))
    }

    /// Publishes the first command of `row`. Returns whether it was published;
    /// a failure is logged and counted, never returned to the client (the
    /// transaction is committed, and the reconciler's sweep dispatches what
    /// was not).
    async fn dispatch(&self, row: &TransactionRow, trace: &TraceContext) -> bool {
        let (Some(provider), Some(kind)) = (row.provider(), row.kind()) else {
            tracing::error!(provider = %row.provider, kind = %row.kind, "row with unknown provider or kind; not dispatched");
            return false;
        };
        if self.failpoint == Some(Failpoint::HangBeforePublish) {
            tracing::warn!("failpoint hang_before_publish: the command is never published");
            std::future::pending::<()>().await;
        }
        let subject = subjects::command(provider, kind.operation());
        let id = row.id.to_string();
        let headers = bus::headers(&row.command_msg_id(0), trace, &id);
        let payload = row.command(true).encode_to_vec();
        let publish = bus::publish_durable(&self.js, subject, headers, payload);
        let failure = match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!(
                "no acknowledgement within {:?}",
                self.publish_timeout
            )),
        };
        if let Some(reason) = failure {
            metrics::counter!(DISPATCH_FAILURES).increment(1);
            tracing::warn!(%reason, "command publish failed; the transaction is accepted and the sweep will re-dispatch it");
            return false;
        }
        if self.marks.try_send(Mark::Dispatched(row.id)).is_err() {
            if let Err(error) = crate::queries::mark_dispatched(&self.db, &[row.id]).await {
                tracing::warn!(%error, "recording dispatched_at failed; the sweep may re-dispatch (status check first)");
            }
        }
        true
    }

    /// Tells the dispatcher that transaction `id` settled, so its
    /// `dispatched_at` need not be recorded. Best effort: with the queue full
    /// the mark is simply written.
    pub fn settled(&self, id: Uuid) {
        let _ = self.marks.try_send(Mark::Settled(id));
    }
}

impl Dispatcher {
    /// Publishes a status check about `row`'s own operation (a client's
    /// `QrQuery`) with `msg_id`. Returns whether it was published; a failure
    /// is logged and counted (the reconciler's scheduler keeps checking
    /// unresolved transactions anyway).
    pub async fn publish_check(
        &self,
        row: &TransactionRow,
        msg_id: &str,
        trace: &TraceContext,
    ) -> bool {
        let Some(provider) = row.provider() else {
            tracing::error!(provider = %row.provider, "row with unknown provider; no status check");
            return false;
        };
        let subject = subjects::command(provider, loket_protocol::Operation::StatusCheck);
        let headers = bus::headers(msg_id, trace, &row.id.to_string());
        let payload = row.status_check().encode_to_vec();
        let publish = bus::publish_durable(&self.js, subject, headers, payload);
        let failure = match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(())) => return true,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no acknowledgement within {:?}", self.publish_timeout),
        };
        metrics::counter!(DISPATCH_FAILURES).increment(1);
        tracing::warn!(reason = %failure, "status-check publish failed");
        false
    }
}

async fn record_marks(
    db: BoundedPool,
    mut queue: mpsc::Receiver<Mark>,
    finished: loket_runtime::Shutdown,
) {
    let mut heard = Vec::with_capacity(MARK_BATCH);
    let mut pending = HashSet::with_capacity(MARK_BATCH);
    loop {
        // Until a first id to record arrives (a settled transaction with
        // nothing pending is old news).
        while pending.is_empty() {
            tokio::select! {
                biased;
                received = queue.recv_many(&mut heard, MARK_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    take(&mut heard, &mut pending);
                }
                _ = finished.wait() => return drain(&db, &mut queue, &mut pending).await,
            }
        }
        let until = tokio::time::Instant::now() + MARK_LINGER;
        while pending.len() < MARK_BATCH {
            tokio::select! {
                biased;
                _ = finished.wait() => return drain(&db, &mut queue, &mut pending).await,
                _ = tokio::time::sleep_until(until) => break,
                received = queue.recv_many(&mut heard, MARK_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    take(&mut heard, &mut pending);
                }
            }
        }
        flush(&db, &mut pending).await;
    }
}

/// Applies what was heard to the ids waiting to be recorded.
fn take(heard: &mut Vec<Mark>, pending: &mut HashSet<Uuid>) {
    for mark in heard.drain(..) {
        match mark {
            Mark::Dispatched(id) => pending.insert(id),
            Mark::Settled(id) => pending.remove(&id),
        };
    }
}

/// At shutdown: records what is pending and what is still queued.
async fn drain(db: &BoundedPool, queue: &mut mpsc::Receiver<Mark>, pending: &mut HashSet<Uuid>) {
    let mut heard = Vec::new();
    while let Ok(mark) = queue.try_recv() {
        heard.push(mark);
    }
    take(&mut heard, pending);
    flush(db, pending).await;
}

async fn flush(db: &BoundedPool, pending: &mut HashSet<Uuid>) {
    let ids: Vec<Uuid> = pending.drain().collect();
    for chunk in ids.chunks(MARK_BATCH) {
        if let Err(error) = crate::queries::mark_dispatched(db, chunk).await {
            tracing::warn!(%error, count = chunk.len(), "recording dispatched_at failed; the sweep may re-dispatch (status check first)");
        }
    }
}
