//! The ingress's SQL. Every read is scoped to the calling client; the insert
//! path is one statement (transaction row and its `ingress` event together,
//! atomically) and so one database round trip. Every piece of work is
//! bounded in time ([`BoundedPool`]): on a database gone silent a call fails
//! `UNAVAILABLE` instead of waiting for ever with a connection taken.

use loket_protocol::Money;
use loket_runtime::db::BoundedPool;
use loket_store::{TransactionRow, COLUMNS};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::sync::LazyLock;
use uuid::Uuid;

use crate::errors::ApiError;
use crate::group_insert::GroupInsert;
use crate::validate::ListQuery;

/// The name of the partial unique index allowing one live payment per inquiry.
pub const ONE_LIVE_PAYMENT: &str = "one_live_payment_per_inquiry";

/// A transaction about to be inserted (status `received`).
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub id: Uuid,
    pub client_id: Uuid,
    pub client_ref: String,
    pub kind: loket_protocol::TransactionKind,
    pub provider: loket_protocol::Provider,
    pub product_code: String,
    pub provider_product_code: String,
    pub account: String,
    pub account2: String,
    pub account3: String,
    pub contact: String,
    pub amount: Option<Money>,
    pub request_hash: Vec<u8>,
    pub provider_reference: String,
    pub inquiry_id: Option<Uuid>,
    pub inquiry_data: Option<serde_json::Value>,
    /// Cancels and refunds: the payment they act on.
    pub original_id: Option<Uuid>,
    pub method: String,
    /// The Command's `details` (non-secret provider parameters).
    pub details: Option<serde_json::Value>,
}

/// Our reference on every provider call: the id's 32 lowercase hex digits
/// (alphanumeric and at most 32 characters, so every provider accepts it).
pub fn provider_reference(id: Uuid) -> String {
    id.simple().to_string()
}

#[derive(Debug)]
pub enum Inserted {
    /// This call created the row (and must dispatch it).
    Created(Box<TransactionRow>),
    /// The client already has a transaction with this `client_ref`.
    Existing(Box<TransactionRow>),
    /// The inquiry had a live payment under another `client_ref` when the
    /// insert ran: this one, or `None` when that payment has failed since
    /// (the inquiry can be paid again).
    InquiryAlreadyPaid(Option<Uuid>),
}

static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS ( \
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::text[], \
             $14::bytea[], $15::text[], $16::uuid[], $17::jsonb[], $18::uuid[], $19::text[], $20::jsonb[], \
             $21::jsonb[]) WITH ORDINALITY \
             AS i(id, client_id, client_ref, kind, provider, product_code, provider_product_code, account, \
               account2, account3, contact, amount_minor, currency, request_hash, provider_reference, \
               inquiry_id, inquiry_data, original_id, method, details, event, position) \
         ), inserted AS ( \
           INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
             provider_product_code, account, account2, account3, contact, amount_minor, currency, request_hash, \
             provider_reference, inquiry_id, inquiry_data, original_id, method, details) \
           SELECT id, client_id, client_ref, kind, 'received', provider, product_code, provider_product_code, \
             account, account2, account3, contact, amount_minor, currency, request_hash, provider_reference, \
             inquiry_id, inquiry_data, original_id, method, details \
           FROM input ORDER BY client_id, client_ref, position \
           ON CONFLICT (client_id, client_ref) DO NOTHING \
           RETURNING {COLUMNS} \
         ), event AS ( \
           INSERT INTO transaction_events (transaction_id, source, to_status, detail) \
           SELECT inserted.id, 'ingress', 'received', input.event \
           FROM inserted JOIN input ON input.id = inserted.id ORDER BY input.position \
         ) \
         SELECT * FROM inserted"
    )
});

static BY_CLIENT_REF_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM transactions WHERE client_id = $1 AND client_ref = $2")
});

static BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM transactions WHERE client_id = $1 AND id = $2")
});

/// Inserts each `(new, event)` unless its client already used its
/// `client_ref` (earlier, or earlier in `rows`), with its `ingress` event,
/// in one statement; returns the rows inserted. Rows go in by their key, not
/// in arrival order: two batches holding the same two new keys in opposite
/// orders (a client's retries through two replicas) would otherwise each
/// wait on the other's first row, and one fail as a deadlock.
pub async fn insert_rows(
    executor: impl sqlx::PgExecutor<'_>,
    rows: &[(&NewTransaction, &serde_json::Value)],
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    // One array per column, in the order of the statement's parameters.
    macro_rules! column {
        ($ty:ty, |$n:ident| $value:expr) => {
            rows.iter().map(|($n, _)| $value).collect::<Vec<$ty>>()
        };
    }
    sqlx::query_as::<_, TransactionRow>(&INSERT_SQL)
        .bind(column!(Uuid, |n| n.id))
        .bind(column!(Uuid, |n| n.client_id))
        .bind(column!(&str, |n| n.client_ref.as_str()))
        .bind(column!(&str, |n| n.kind.as_str()))
        .bind(column!(&str, |n| n.provider.as_str()))
        .bind(column!(&str, |n| n.product_code.as_str()))
        .bind(column!(&str, |n| n.provider_product_code.as_str()))
        .bind(column!(&str, |n| n.account.as_str()))
        .bind(column!(&str, |n| n.account2.as_str()))
        .bind(column!(&str, |n| n.account3.as_str()))
        .bind(column!(&str, |n| n.contact.as_str()))
        .bind(column!(Option<i64>, |n| n.amount.map(|m| m.minor)))
        .bind(column!(&str, |n| n
            .amount
            .map(|m| m.currency.code())
            .unwrap_or("IDR")))
        .bind(column!(&[u8], |n| n.request_hash.as_slice()))
        .bind(column!(&str, |n| n.provider_reference.as_str()))
        .bind(column!(Option<Uuid>, |n| n.inquiry_id))
        .bind(column!(Option<&serde_json::Value>, |n| n
            .inquiry_data
            .as_ref()))
        .bind(column!(Option<Uuid>, |n| n.original_id))
        .bind(column!(&str, |n| n.method.as_str()))
        .bind(column!(Option<&serde_json::Value>, |n| n.details.as_ref()))
        .bind(
            rows.iter()
                .map(|(_, event)| *event)
                .collect::<Vec<&serde_json::Value>>(),
        )
        .fetch_all(executor)
        .await
}

/// Inserts `new` unless the client already used its `client_ref`, with its
/// `ingress` event: the row, or `None` when the `client_ref` was taken.
pub(crate) async fn insert_row(
    executor: impl sqlx::PgExecutor<'_>,
    new: &NewTransaction,
    event: &serde_json::Value,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    Ok(insert_rows(executor, &[(new, event)]).await?.pop())
}

pub async fn insert(
    db: &BoundedPool,
    group: &GroupInsert,
    new: &NewTransaction,
    event: serde_json::Value,
) -> Result<Inserted, sqlx::Error> {
    let result = group.insert(new.clone(), event).await;
    match result {
        Ok(Some(row)) => Ok(Inserted::Created(Box::new(row))),
        Ok(None) => match by_client_ref(db, new.client_id, &new.client_ref).await? {
            // This call's own row: a batch that failed after its commit
            // (the connection lost before the answer) had inserted it, and
            // the row's retry found it. Still this call's to dispatch.
            Some(row) if row.id == new.id => Ok(Inserted::Created(Box::new(row))),
            Some(row) => Ok(Inserted::Existing(Box::new(row))),
            // The conflicting row vanished (rows are never deleted): treat
            // as a transient database problem.
            None => Err(sqlx::Error::RowNotFound),
        },
        Err(sqlx::Error::Database(error)) if error.constraint() == Some(ONE_LIVE_PAYMENT) => {
            // A concurrent identical call may have won both unique indexes.
            if let Some(row) = by_client_ref(db, new.client_id, &new.client_ref).await? {
                return Ok(Inserted::Existing(Box::new(row)));
            }
            let inquiry = new.inquiry_id.unwrap_or_default();
            let payment: Option<Uuid> = db
                .run(async |connection| {
                    sqlx::query_scalar(
                        // The index's own predicate (migration 0008): the
                        // payment that holds the inquiry.
                        "SELECT id FROM transactions WHERE inquiry_id = $1 AND kind = 'bill_payment' AND status <> 'failed' \
                         AND NOT (status = 'needs_review' AND reviewed_from IS NOT DISTINCT FROM 'failed') \
                         ORDER BY created_at DESC LIMIT 1",
                    )
                    .bind(inquiry)
                    .fetch_optional(connection)
                    .await
                })
                .await?;
            Ok(Inserted::InquiryAlreadyPaid(payment))
        }
        Err(error) => Err(error),
    }
}

pub async fn by_client_ref(
    db: &BoundedPool,
    client_id: Uuid,
    client_ref: &str,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    db.run(async |connection| by_client_ref_on(connection, client_id, client_ref).await)
        .await
}

async fn by_client_ref_on(
    connection: &mut PgConnection,
    client_id: Uuid,
    client_ref: &str,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&BY_CLIENT_REF_SQL)
        .bind(client_id)
        .bind(client_ref)
        .fetch_optional(connection)
        .await
}

pub async fn by_id(
    db: &BoundedPool,
    client_id: Uuid,
    id: Uuid,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    db.run(async |connection| {
        sqlx::query_as::<_, TransactionRow>(&BY_ID_SQL)
            .bind(client_id)
            .bind(id)
            .fetch_optional(connection)
            .await
    })
    .await
}

static INQUIRY_AND_REPLAY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM transactions WHERE client_id = $1 AND (id = $2 OR client_ref = $3)"
    )
});

/// In one round trip: the caller's inquiry `inquiry_id` and the caller's
/// existing transaction with `client_ref`, if any.
pub async fn inquiry_and_replay(
    db: &BoundedPool,
    client_id: Uuid,
    inquiry_id: Uuid,
    client_ref: &str,
) -> Result<(Option<TransactionRow>, Option<TransactionRow>), sqlx::Error> {
    let rows = db
        .run(async |connection| {
            sqlx::query_as::<_, TransactionRow>(&INQUIRY_AND_REPLAY_SQL)
                .bind(client_id)
                .bind(inquiry_id)
                .bind(client_ref)
                .fetch_all(connection)
                .await
        })
        .await?;
    let mut inquiry = None;
    let mut existing = None;
    for row in rows {
        if row.client_ref == client_ref {
            existing = Some(row.clone());
        }
        if row.id == inquiry_id {
            inquiry = Some(row);
        }
    }
    Ok((inquiry, existing))
}

/// A cancel or refund already recorded against a payment, and not failed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Linked {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub amount_minor: Option<i64>,
}

/// What [`insert_linked`] did.
#[derive(Debug)]
pub enum LinkedInsert {
    /// This call created the cancel/refund (and must dispatch it).
    Created(Box<TransactionRow>),
    /// The client already has a transaction with this `client_ref`.
    Existing(Box<TransactionRow>),
    /// The caller has no transaction with the original's id.
    OriginalNotFound,
    /// The checks refused it; nothing was inserted.
    Refused(ApiError),
}

static LOCK_ORIGINAL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM transactions WHERE client_id = $1 AND id = $2 FOR UPDATE")
});

/// Inserts a transaction acting on the caller's transaction `original_id`
/// (a cancel or refund) in ONE database transaction: the original row is
/// locked (`SELECT … FOR UPDATE`), so concurrent cancels and refunds of one
/// payment are decided one after the other, each seeing the ones committed
/// before it; `build` gets the original and its live (not failed) linked
/// transactions, and returns the row to insert or the refusal.
///
/// A `client_ref` the caller already used is returned as
/// [`LinkedInsert::Existing`] before any check, so a replay still answers
/// after the original has changed.
pub async fn insert_linked<F>(
    db: &BoundedPool,
    client_id: Uuid,
    original_id: Uuid,
    client_ref: &str,
    event: serde_json::Value,
    build: F,
) -> Result<LinkedInsert, sqlx::Error>
where
    F: FnOnce(&TransactionRow, &[Linked]) -> Result<NewTransaction, ApiError>,
{
    db.run(async |connection| {
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        let original = sqlx::query_as::<_, TransactionRow>(&LOCK_ORIGINAL_SQL)
            .bind(client_id)
            .bind(original_id)
            .fetch_optional(&mut *tx)
            .await?;
        let existing = sqlx::query_as::<_, TransactionRow>(&BY_CLIENT_REF_SQL)
            .bind(client_id)
            .bind(client_ref)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(existing) = existing {
            tx.rollback().await?;
            return Ok(LinkedInsert::Existing(Box::new(existing)));
        }
        let Some(original) = original else {
            tx.rollback().await?;
            return Ok(LinkedInsert::OriginalNotFound);
        };
        let linked: Vec<Linked> = sqlx::query_as(
            "SELECT id, kind, status, amount_minor FROM transactions \
             WHERE original_id = $1 AND status <> 'failed' ORDER BY created_at, id",
        )
        .bind(original_id)
        .fetch_all(&mut *tx)
        .await?;
        let new = match build(&original, &linked) {
            Ok(new) => new,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(LinkedInsert::Refused(refusal));
            }
        };
        match insert_row(&mut *tx, &new, &event).await? {
            Some(row) => {
                tx.commit().await?;
                Ok(LinkedInsert::Created(Box::new(row)))
            }
            None => {
                // A concurrent call with the same client_ref won the insert.
                tx.rollback().await?;
                match by_client_ref_on(connection, client_id, client_ref).await? {
                    Some(row) => Ok(LinkedInsert::Existing(Box::new(row))),
                    None => Err(sqlx::Error::RowNotFound),
                }
            }
        }
    })
    .await
}

/// One page of the caller's transactions, newest first, plus whether more
/// follow (fetches `page_size + 1`).
pub async fn list(
    db: &BoundedPool,
    client_id: Uuid,
    query: &ListQuery,
) -> Result<(Vec<TransactionRow>, bool), sqlx::Error> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM transactions WHERE client_id = "
    ));
    sql.push_bind(client_id);
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(provider) = query.provider {
        sql.push(" AND provider = ").push_bind(provider.as_str());
    }
    if let Some(product) = &query.product_code {
        sql.push(" AND product_code = ")
            .push_bind(product.as_str().to_string());
    }
    if let Some(from) = query.created_from {
        sql.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = query.created_to {
        sql.push(" AND created_at < ").push_bind(to);
    }
    if let Some(after) = query.after {
        sql.push(" AND (created_at, id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(query.page_size) + 1);
    let mut rows = db
        .run(async |connection| {
            sql.build_query_as::<TransactionRow>()
                .fetch_all(connection)
                .await
        })
        .await?;
    let more = rows.len() > query.page_size as usize;
    rows.truncate(query.page_size as usize);
    Ok((rows, more))
}

/// Records first dispatches, many at once, of the transactions still
/// unresolved (the sweep and the review read the mark only on those).
///
/// Rows are locked in id order, the order the reconciler locks a batch in:
/// locking them in the order a scan happens to meet them could deadlock
/// with a reconciler batch holding some of the same rows (PostgreSQL would
/// then abort one side after `deadlock_timeout`, a one-second stall).
pub async fn mark_dispatched(db: &BoundedPool, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let result = db
        .run(async |connection| {
            sqlx::query(
                "UPDATE transactions t SET dispatched_at = now(), dispatch_count = 1 \
         FROM (SELECT id FROM transactions \
               WHERE id = ANY($1) AND dispatched_at IS NULL \
                 AND status IN ('received', 'pending', 'unknown') \
               ORDER BY id FOR UPDATE) locked \
         WHERE t.id = locked.id",
            )
            .bind(ids)
            .execute(connection)
            .await
        })
        .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_reference_is_32_lowercase_hex() {
        let id = Uuid::now_v7();
        let reference = provider_reference(id);
        assert_eq!(reference.len(), 32);
        assert!(reference
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(reference, id.to_string().replace('-', ""));
    }
}
