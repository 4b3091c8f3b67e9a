//! Group insert: the new transactions of concurrent calls share one `INSERT`
//! statement and one commit.
//!
//! A call hands its row to the queue and waits for its own answer. A free
//! slot takes what has queued up (at most [`BATCH_MAX`]), so a lone call is
//! inserted at once while busy traffic forms batches by itself. Each slot
//! keeps its own connection ([`HeldConnection`]): a batch is one round trip. The
//! statement keeps each row's meaning: a `client_ref` already used (before,
//! or by an earlier row of the batch) inserts nothing for that row. If the
//! batch's statement fails (one row breaking a constraint, a connection the
//! server ended), each row is inserted again on its own and gets its own
//! answer. A batch given up after waiting its work limit (a server gone
//! silent) answers every row with that failure at once instead: inserted
//! one by one, the last row's caller would wait a work limit per row before
//! it.

use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::queries::{self, NewTransaction};
use loket_runtime::db::{self, BoundedPool, HeldConnection};
use loket_store::TransactionRow;

/// Batches in flight at once (each slot keeps one pooled connection).
const SLOTS: usize = 2;
/// Most rows in one statement.
const BATCH_MAX: usize = 64;

/// The handle calls insert through; cheap to clone.
#[derive(Clone)]
pub struct GroupInsert {
    queue: mpsc::Sender<Job>,
}

struct Job {
    new: NewTransaction,
    event: serde_json::Value,
    answer: oneshot::Sender<Result<Option<TransactionRow>, sqlx::Error>>,
}

impl GroupInsert {
    /// Starts the tasks that insert; they end once every handle is dropped.
    /// A writer's panic stops the service (`vital`).
    pub fn start(db: BoundedPool, vital: &loket_runtime::Vital) -> Self {
        GroupInsert {
            queue: db::spawn_batch_writer(
                db.pool().clone(),
                SLOTS,
                BATCH_MAX,
                db.work_limit(),
                insert_batch,
                vital,
                "transaction insert writer",
            ),
        }
    }

    /// Inserts `new` with its `ingress` event unless its client already used
    /// its `client_ref`: the row, or `None` when the `client_ref` was taken.
    pub async fn insert(
        &self,
        new: NewTransaction,
        event: serde_json::Value,
    ) -> Result<Option<TransactionRow>, sqlx::Error> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job { new, event, answer })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn insert_batch(mut connection: HeldConnection, batch: Vec<Job>) -> HeldConnection {
    let rows: Vec<(&NewTransaction, &serde_json::Value)> =
        batch.iter().map(|job| (&job.new, &job.event)).collect();
    let result = connection
        .with(async |held| queries::insert_rows(held, &rows).await)
        .await;
    drop(rows);
    match result {
        Ok(inserted) => {
            let mut by_id: HashMap<Uuid, TransactionRow> =
                inserted.into_iter().map(|row| (row.id, row)).collect();
            for job in batch {
                let row = by_id.remove(&job.new.id);
                let _ = job.answer.send(Ok(row));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.answer.send(Err(error));
            }
        }
        Err(error) if db::is_timed_out(&error) => {
            for job in batch {
                let _ = job.answer.send(Err(same_failure(&error)));
            }
        }
        Err(error) => {
            tracing::debug!(%error, rows = batch.len(), "group insert failed; inserting its rows one at a time");
            for job in batch {
                let result = connection
                    .with(async |held| queries::insert_row(held, &job.new, &job.event).await)
                    .await;
                let _ = job.answer.send(result);
            }
        }
    }
    connection
}

/// The failure of a batch given up, for each of its rows (`sqlx::Error` is
/// not `Clone`): an I/O error of the same kind and text.
fn same_failure(error: &sqlx::Error) -> sqlx::Error {
    let kind = match error {
        sqlx::Error::Io(io) => io.kind(),
        _ => std::io::ErrorKind::TimedOut,
    };
    sqlx::Error::Io(std::io::Error::new(kind, error.to_string()))
}
