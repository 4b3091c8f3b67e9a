//! The send journal: a row in Postgres (`send_intents`) for every
//! money-moving request, written before the request is sent.
//!
//! JetStream's delivery count says whether a command was handed out before,
//! but nats-server keeps its consumers' state in memory and writes it out
//! lazily: killed and started again, it can hand out a command that was
//! already sent (even answered and applied) as a first delivery. Postgres is
//! the record of truth, so the worker asks the journal too: a command whose
//! transaction was recorded before starts with a status check, whatever its
//! delivery count says.
//!
//! Records of concurrent commands share one statement
//! ([`loket_runtime::db::spawn_batch_writer`]).
//!
//! Recording also says whether the transaction is settled already: a
//! command that resurfaces for a transaction the reconciler has failed,
//! succeeded or parked for review is never sent (the worker checks its
//! status instead, so a contradiction reaches operators).
//!
//! A record's time is the last send it allowed. Sending again (after a
//! provider's "no record", or by a status check that itself re-sends) goes
//! through [`SendJournal::renew_if_older`], which moves it forward, and
//! allows that send only when the last one is older than the given grace.
//!
//! A record closed to sending (`refused_at`) allows none at all: the worker
//! closes it when the provider definitely refused the send
//! ([`SendJournal::mark_refused`]), and the reconciler closes it (creating it
//! if need be) in the database transaction that fails the transaction for
//! "no record at the provider", so a send allowed after that failure is
//! impossible and one allowed before it stops the failure.
//!
//! Every statement is bounded in time ([`SendJournal::start_with_work_limit`]):
//! on a database gone silent without closing its connections, a worker's
//! journal call fails instead of holding its command (with progress acks)
//! for as long as the kernel keeps the connection; the worker then sends
//! nothing and leaves the command for redelivery.

use chrono::{DateTime, Utc};
use loket_runtime::db::{self, HeldConnection};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Batches in flight at once (each keeps one pooled connection).
const SLOTS: usize = 2;
/// Most records in one statement.
const BATCH_MAX: usize = 64;

/// What recording a send told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first record for this transaction: no request can have been sent.
    /// `at` is the time recorded ([`SendJournal::touch`] compares it).
    First { at: DateTime<Utc> },
    /// Recorded before: a request may have reached the provider.
    Before,
    /// The transaction is settled (`success`, `failed` or `needs_review`):
    /// a command for it resurfaced, and nothing may be sent for it any more.
    Settled,
}

impl Recorded {
    pub fn is_first(self) -> bool {
        matches!(self, Recorded::First { .. })
    }
}

/// The statuses after which nothing is sent for a transaction.
const SETTLED: &str = "('success', 'failed', 'needs_review')";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("transaction_id {0:?} is not a UUID")]
    BadTransactionId(String),
    #[error("cannot record the send in PostgreSQL: {0}")]
    Database(String),
    #[error("the send journal has stopped")]
    Stopped,
}

/// The handle commands record through; cheap to clone.
#[derive(Clone)]
pub struct SendJournal {
    queue: mpsc::Sender<Job>,
    /// Each statement, and each batch of records, bounded in time.
    db: db::BoundedPool,
}

struct Job {
    transaction_id: Uuid,
    /// A failed batch's error goes to each of its jobs, as text.
    answer: oneshot::Sender<Result<Recorded, String>>,
}

impl SendJournal {
    /// Starts the writer tasks; they end once every handle is dropped. Each
    /// of the two keeps a connection of `pool`, so give it one more for
    /// [`Self::renew_if_older`]. A writer's panic stops the service (`vital`).
    /// Each statement may take [`db::HELD_WORK_LIMIT`].
    pub fn start(pool: PgPool, vital: &loket_runtime::Vital) -> Self {
        Self::start_with_work_limit(pool, vital, db::HELD_WORK_LIMIT)
    }

    /// The same with another bound on each statement: one still unanswered
    /// after `work_limit` fails ([`JournalError::Database`]) and its
    /// connection is closed.
    pub fn start_with_work_limit(
        pool: PgPool,
        vital: &loket_runtime::Vital,
        work_limit: Duration,
    ) -> Self {
        SendJournal {
            queue: db::spawn_batch_writer(
                pool.clone(),
                SLOTS,
                BATCH_MAX,
                work_limit,
                record_batch,
                vital,
                "send journal writer",
            ),
            db: db::BoundedPool::new(pool, work_limit),
        }
    }

    /// Runs `work` on a pooled connection within the work limit.
    async fn bounded<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, JournalError> {
        self.db
            .run(work)
            .await
            .map_err(|error| JournalError::Database(error.to_string()))
    }

    /// Records that `transaction_id`'s money-moving request is about to be
    /// sent, durably, and says whether it had been recorded before.
    pub async fn record(&self, transaction_id: &str) -> Result<Recorded, JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job {
                transaction_id,
                answer,
            })
            .await
            .map_err(|_| JournalError::Stopped)?;
        answered
            .await
            .map_err(|_| JournalError::Stopped)?
            .map_err(JournalError::Database)
    }

    /// Before sending a transaction's request again (it was recorded
    /// before): when the journal's last send for it is older than `grace`
    /// and the transaction is not settled, moves that time to now, durably,
    /// and returns true (send). Otherwise, with no record at all, or after
    /// the provider refused a send of it ([`Self::mark_refused`]), returns
    /// false (do not send: a request made less than `grace` ago may not show
    /// at the provider yet, or still be in flight). One statement, so of two
    /// workers racing only one may send.
    pub async fn renew_if_older(
        &self,
        transaction_id: &str,
        grace: Duration,
    ) -> Result<bool, JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        let grace_us = micros(grace);
        let statement = dated_now_if("recorded_at <= now() - $2::int8 * interval '1 microsecond'");
        let renewed = self
            .bounded(async |connection| {
                sqlx::query_scalar::<_, Uuid>(&statement)
                    .bind(transaction_id)
                    .bind(grace_us)
                    .fetch_optional(connection)
                    .await
            })
            .await?;
        Ok(renewed.is_some())
    }

    /// Whether `transaction_id`'s last send was recorded less than `window`
    /// ago: a request that may still be on its way, or not yet visible at
    /// the provider, so a "no record" answer proves nothing about it.
    pub async fn sent_within(
        &self,
        transaction_id: &str,
        window: Duration,
    ) -> Result<bool, JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        let window_us = micros(window);
        self.bounded(async |connection| {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM send_intents WHERE transaction_id = $1 \
                 AND recorded_at > now() - $2::int8 * interval '1 microsecond')",
            )
            .bind(transaction_id)
            .bind(window_us)
            .fetch_one(connection)
            .await
        })
        .await
    }

    /// Marks `transaction_id`'s send as definitely refused by the provider
    /// (a failure by its code table): from now on [`Self::renew_if_older`]
    /// and [`Self::touch`] allow no send, so a redelivered command whose
    /// status check finds no record (a refusal often leaves none) does not
    /// send it again before the reconciler has applied the refusal.
    pub async fn mark_refused(&self, transaction_id: &str) -> Result<(), JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        self.bounded(async |connection| {
            sqlx::query("UPDATE send_intents SET refused_at = now() WHERE transaction_id = $1")
                .bind(transaction_id)
                .execute(connection)
                .await
        })
        .await?;
        Ok(())
    }

    /// [`Self::mark_refused`] until it is written: tried again, after a
    /// pause growing from 100 ms to 2 s, for as long as the database cannot
    /// take it (restarting, gone silent). Left unmarked, a refusal that left
    /// no record at the provider would let a copy of its command handed out
    /// again before the reconciler fails the transaction find no record and
    /// send the request again. Fails only for a `transaction_id` that is no
    /// UUID.
    pub async fn mark_refused_until_written(
        &self,
        transaction_id: &str,
    ) -> Result<(), JournalError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.mark_refused(transaction_id).await {
                Err(JournalError::Database(error)) => {
                    tracing::error!(%error, pause_ms = pause.as_millis() as u64, "the provider's refusal could not be marked in the send journal yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Whether the provider definitely refused a send of `transaction_id`
    /// ([`Self::mark_refused`]): a redelivery that finds no record of it at
    /// the provider then knows why (a refusal often leaves none) and that
    /// no send of it is on its way.
    pub async fn refused(&self, transaction_id: &str) -> Result<bool, JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        self.bounded(async |connection| {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM send_intents WHERE transaction_id = $1 \
                 AND refused_at IS NOT NULL)",
            )
            .bind(transaction_id)
            .fetch_one(connection)
            .await
        })
        .await
    }

    /// Moves `transaction_id`'s last send to now, just before a send that
    /// was recorded earlier (first, at `recorded`, before a status check
    /// that may have taken a while): the time the journal keeps is when the
    /// request left. Returns false, moving nothing (do not send), when the
    /// record changed since (another worker sent it again meanwhile, through
    /// [`Self::renew_if_older`]) or the transaction has settled.
    pub async fn touch(
        &self,
        transaction_id: &str,
        recorded: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        let transaction_id = parse_id(transaction_id)?;
        let statement = dated_now_if("recorded_at = $2");
        let touched = self
            .bounded(async |connection| {
                sqlx::query_scalar::<_, Uuid>(&statement)
                    .bind(transaction_id)
                    .bind(recorded)
                    .fetch_optional(connection)
                    .await
            })
            .await?;
        Ok(touched.is_some())
    }
}

async fn record_batch(mut connection: HeldConnection, batch: Vec<Job>) -> HeldConnection {
    // In key order: two batches holding the same two transactions (their
    // commands redelivered to two replicas) in opposite orders would
    // otherwise each wait on the other's first row, and one fail as a
    // deadlock.
    let mut ids: Vec<Uuid> = batch.iter().map(|job| job.transaction_id).collect();
    ids.sort_unstable();
    // One statement: the new records, and which transactions are settled.
    let result = connection
        .with(async |held| {
            sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>)>(&format!(
                "WITH inserted AS ( \
                   INSERT INTO send_intents (transaction_id) SELECT * FROM UNNEST($1::uuid[]) \
                   ON CONFLICT DO NOTHING RETURNING transaction_id, recorded_at) \
                 SELECT transaction_id, recorded_at FROM inserted \
                 UNION ALL \
                 SELECT id, NULL FROM transactions WHERE id = ANY($1) AND status IN {SETTLED}"
            ))
            .bind(&ids)
            .fetch_all(held)
            .await
        })
        .await;
    match result {
        Ok(rows) => {
            let mut first = std::collections::HashMap::new();
            let mut settled = std::collections::HashSet::new();
            for (id, recorded_at) in rows {
                match recorded_at {
                    Some(at) => {
                        first.insert(id, at);
                    }
                    None => {
                        settled.insert(id);
                    }
                }
            }
            // The same transaction twice in one batch (a redelivery racing
            // the first delivery): only the first job may send.
            for job in batch {
                let recorded = if settled.contains(&job.transaction_id) {
                    Recorded::Settled
                } else if let Some(at) = first.remove(&job.transaction_id) {
                    Recorded::First { at }
                } else {
                    Recorded::Before
                };
                let _ = job.answer.send(Ok(recorded));
            }
        }
        Err(error) => {
            let error = error.to_string();
            for job in batch {
                let _ = job.answer.send(Err(error.clone()));
            }
        }
    }
    connection
}

/// The statement that moves transaction `$1`'s last send to now when
/// `condition` holds of its record, the provider refused no send of it
/// ([`SendJournal::mark_refused`]) and the transaction is not settled,
/// returning its id when it did.
fn dated_now_if(condition: &str) -> String {
    format!(
        "UPDATE send_intents SET recorded_at = now() \
         WHERE transaction_id = $1 AND {condition} AND refused_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM transactions WHERE id = $1 AND status IN {SETTLED}) \
         RETURNING transaction_id"
    )
}

/// A transaction id as the journal keys it.
fn parse_id(transaction_id: &str) -> Result<Uuid, JournalError> {
    Uuid::parse_str(transaction_id)
        .map_err(|_| JournalError::BadTransactionId(transaction_id.to_string()))
}

/// `duration` in whole microseconds, as the statements' intervals take it.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
