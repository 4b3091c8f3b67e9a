//! The reconciler's SQL, each statement for many rows at once (arrays
//! through `UNNEST`), so a batch of events costs the same few round trips as
//! one event: lock the rows, claim the events, then [`write`] the rows, the
//! events and the exchanges in one statement.
//!
//! Provider text reaches these statements (replies, callbacks, messages),
//! and PostgreSQL's `text` and `jsonb` cannot hold U+0000: every string is
//! written with U+0000 replaced by U+FFFD ([`text`], [`json`]), so a hostile
//! reply cannot make an event impossible to apply.

use crate::apply::ApplyError;
use crate::plan::EventRecord;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb::bus;
use loket_protocol::Outcome;
use loket_store::{TransactionRow, COLUMNS};
use serde_json::Value;
use sqlx::PgConnection;
use std::borrow::{Borrow, Cow};
use std::collections::HashSet;
use std::sync::LazyLock;
use uuid::Uuid;

static LOCK_BY_IDS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE")
});

/// Locks the transactions `ids` (those that exist) in id order, so batches
/// running at once cannot deadlock on each other.
pub(crate) async fn lock_by_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&LOCK_BY_IDS_SQL)
        .bind(ids)
        .fetch_all(conn)
        .await
        .inspect_err(|error| {
            loket_runtime::db::warn_on_lock_timeout(error, "lock transactions by id", &ids)
        })
}

/// Records the events as applied (`event_ids[i]` about `transaction_ids[i]`)
/// and returns the ids that were not yet: the others were applied before.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    event_ids: &[&str],
    transaction_ids: &[Option<Uuid>],
) -> Result<HashSet<String>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO applied_events (event_id, transaction_id) \
         SELECT * FROM UNNEST($1::text[], $2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(event_ids)
    .bind(transaction_ids)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// The final outcome the unverified callback `callback_event_id` claimed
/// about `transaction_id`, from the callback's record in its event log.
pub(crate) async fn callback_claim(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    callback_event_id: &str,
) -> Result<Option<Outcome>, sqlx::Error> {
    let claimed: Option<String> = sqlx::query_scalar(
        "SELECT detail->>'claimed_outcome' FROM transaction_events \
         WHERE transaction_id = $1 AND source = 'callback' AND detail->>'event_id' = $2 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(transaction_id)
    .bind(callback_event_id)
    .fetch_optional(conn)
    .await?
    .flatten();
    Ok(claimed.as_deref().and_then(Outcome::parse))
}

/// Whether an unverified callback claiming `claimed` (as its event records
/// it) asked for a status check of `transaction_id` less than `within_secs`
/// ago, by the database's clock (which stamped the event), that has not
/// been answered yet: no later event records a report under the check's id
/// ([`crate::plan::callback_check_id`]).
pub(crate) async fn same_claim_check_unanswered_within(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    claimed: &str,
    within_secs: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM transaction_events asked \
         WHERE asked.transaction_id = $1 AND asked.source = 'callback' \
         AND asked.detail->>'action' = 'status_check' \
         AND asked.detail->>'claimed_outcome' = $2 \
         AND asked.at > now() - make_interval(secs => $3) \
         AND NOT EXISTS (SELECT 1 FROM transaction_events answer \
           WHERE answer.transaction_id = $1 AND answer.id > asked.id \
           AND starts_with(answer.detail->>'event_id', \
             'chk:' || $1::text || ':cb:' || (asked.detail->>'event_id') || ':')))",
    )
    .bind(transaction_id)
    .bind(claimed)
    .bind(within_secs as f64)
    .fetch_one(conn)
    .await
}

/// Closes the send journal to `transaction_id` before it fails for "no
/// record at the provider", unless a send of it was recorded less than
/// `grace` ago; returns whether it closed. Closed is the connector's own
/// mark of a refused send (`send_intents.refused_at`, which its journal
/// statements require to be unset before any send), and a transaction
/// never recorded gets a closed record, which its first send then finds.
///
/// Run in the database transaction that writes the failure, so it and the
/// connector's journal statements take the record's row lock in turn: a
/// send the journal allowed first is seen here (and the transaction stays
/// `unknown`), and one asked for afterwards is refused. Without it a
/// command redelivered while the failure was being written could send the
/// request again after the client was told it failed.
pub(crate) async fn close_sends_for_no_record(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    grace: chrono::Duration,
) -> Result<bool, sqlx::Error> {
    let grace_secs = grace.num_milliseconds() as f64 / 1000.0;
    let closed = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO send_intents (transaction_id, refused_at) VALUES ($1, now()) \
         ON CONFLICT (transaction_id) DO UPDATE \
         SET refused_at = coalesce(send_intents.refused_at, excluded.refused_at) \
         WHERE send_intents.recorded_at <= now() - make_interval(secs => $2) \
         RETURNING transaction_id",
    )
    .bind(transaction_id)
    .bind(grace_secs)
    .fetch_optional(conn)
    .await?;
    Ok(closed.is_some())
}

/// A cancel loket sent for the QR payment `payment_id` that has not failed
/// (one still undecided may be what the provider's report shows), if any.
pub(crate) async fn live_cancel_of(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM transactions \
         WHERE original_id = $1 AND kind = 'qr_cancel' AND status <> 'failed' \
         ORDER BY created_at LIMIT 1",
    )
    .bind(payment_id)
    .fetch_optional(conn)
    .await
}

/// Everything a batch writes, in one statement (three data-modifying parts
/// of one `WITH`, so one round trip instead of three):
/// - `rows`: the conditional update of every column the reconciler owns, for
///   each `(status the row must still have, the row to write)`. Any row
///   whose status moved meanwhile fails the whole write
///   ([`ApplyError::Raced`]); the caller's database transaction then rolls
///   the rest back;
/// - `events`: `(transaction, event)` records appended to the event log, in
///   order (owned or borrowed);
/// - `exchanges`: the (already masked) provider exchanges, each with its
///   transaction, in order.
pub(crate) async fn write<E: Borrow<EventRecord>>(
    conn: &mut PgConnection,
    rows: &[(&str, &TransactionRow)],
    events: &[(Uuid, E)],
    exchanges: &[(Uuid, &bus::Exchange)],
) -> Result<(), ApplyError> {
    if rows.is_empty() && events.is_empty() && exchanges.is_empty() {
        return Ok(());
    }
    let row_columns = RowColumns::of(rows);
    let event_columns = EventColumns::of(events);
    let exchange_columns = ExchangeColumns::of(exchanges);
    let query = sqlx::query_scalar::<_, i64>(&WRITE_SQL);
    let query = exchange_columns.bind(event_columns.bind(row_columns.bind(query)));
    let updated = query.fetch_one(conn).await?;
    if updated != rows.len() as i64 {
        let first = rows.first().map(|(_, row)| row.id).unwrap_or_default();
        return Err(ApplyError::Raced(first));
    }
    Ok(())
}

static WRITE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH updated AS ({}), logged AS ({}), stored AS ({}) SELECT count(*) FROM updated",
        RowColumns::SQL,
        EventColumns::SQL,
        ExchangeColumns::SQL
    )
});

/// The combined statement, parameters bound one part after another.
type PgScalarQuery<'q> =
    sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments>;

/// The columns of the rows to update, one array each ($1–$19).
struct RowColumns<'a> {
    ids: Vec<Uuid>,
    statuses: Vec<&'a str>,
    codes: Vec<Option<Cow<'a, str>>>,
    messages: Vec<Option<Cow<'a, str>>>,
    traces: Vec<Option<Cow<'a, str>>>,
    serials: Vec<Option<Cow<'a, str>>>,
    amounts: Vec<Option<i64>>,
    mismatches: Vec<bool>,
    bills: Vec<Option<Cow<'a, Value>>>,
    inquiry_data: Vec<Option<Cow<'a, Value>>>,
    expires: Vec<Option<DateTime<Utc>>>,
    next_checks: Vec<Option<DateTime<Utc>>>,
    not_found: Vec<Option<DateTime<Utc>>>,
    reasons: Vec<Option<Cow<'a, str>>>,
    reviewed_from: Vec<Option<Cow<'a, str>>>,
    updated: Vec<DateTime<Utc>>,
    finalized: Vec<Option<DateTime<Utc>>>,
    payments: Vec<Option<Cow<'a, Value>>>,
    expected: Vec<&'a str>,
}

impl<'a> RowColumns<'a> {
    const SQL: &'static str = "UPDATE transactions t SET status = u.status, provider_code = u.provider_code, \
           provider_message = u.provider_message, provider_trace = u.provider_trace, \
           serial_number = u.serial_number, provider_amount_minor = u.provider_amount_minor, \
           amount_mismatch = u.amount_mismatch, bill = u.bill, inquiry_data = u.inquiry_data, \
           expires_at = u.expires_at, next_check_at = u.next_check_at, not_found_since = u.not_found_since, \
           review_reason = u.review_reason, reviewed_from = u.reviewed_from, updated_at = u.updated_at, finalized_at = u.finalized_at, \
           payment = u.payment \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], \
           $8::bool[], $9::jsonb[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], \
           $14::text[], $15::timestamptz[], $16::timestamptz[], $17::jsonb[], $18::text[], $19::text[]) \
           AS u(id, status, provider_code, provider_message, provider_trace, serial_number, \
             provider_amount_minor, amount_mismatch, bill, inquiry_data, expires_at, next_check_at, \
             not_found_since, review_reason, updated_at, finalized_at, payment, expected_status, reviewed_from) \
         WHERE t.id = u.id AND t.status = u.expected_status \
         RETURNING t.id";

    fn of(writes: &'a [(&'a str, &'a TransactionRow)]) -> Self {
        let column = |f: fn(&'a TransactionRow) -> Option<&'a str>| {
            writes
                .iter()
                .map(|(_, r)| f(r).map(text))
                .collect::<Vec<_>>()
        };
        let json_column = |f: fn(&'a TransactionRow) -> Option<&'a Value>| {
            writes
                .iter()
                .map(|(_, r)| f(r).map(json))
                .collect::<Vec<_>>()
        };
        RowColumns {
            ids: writes.iter().map(|(_, r)| r.id).collect(),
            statuses: writes.iter().map(|(_, r)| r.status.as_str()).collect(),
            codes: column(|r| r.provider_code.as_deref()),
            messages: column(|r| r.provider_message.as_deref()),
            traces: column(|r| r.provider_trace.as_deref()),
            serials: column(|r| r.serial_number.as_deref()),
            amounts: writes
                .iter()
                .map(|(_, r)| r.provider_amount_minor)
                .collect(),
            mismatches: writes.iter().map(|(_, r)| r.amount_mismatch).collect(),
            bills: json_column(|r| r.bill.as_ref()),
            inquiry_data: json_column(|r| r.inquiry_data.as_ref()),
            expires: writes.iter().map(|(_, r)| r.expires_at).collect(),
            next_checks: writes.iter().map(|(_, r)| r.next_check_at).collect(),
            not_found: writes.iter().map(|(_, r)| r.not_found_since).collect(),
            reasons: column(|r| r.review_reason.as_deref()),
            reviewed_from: column(|r| r.reviewed_from.as_deref()),
            updated: writes.iter().map(|(_, r)| r.updated_at).collect(),
            finalized: writes.iter().map(|(_, r)| r.finalized_at).collect(),
            payments: json_column(|r| r.payment.as_ref()),
            expected: writes.iter().map(|(status, _)| *status).collect(),
        }
    }

    fn bind<'q>(&'q self, query: PgScalarQuery<'q>) -> PgScalarQuery<'q> {
        let jsons = |values: &'q [Option<Cow<'a, Value>>]| {
            values
                .iter()
                .map(|v| v.as_deref())
                .collect::<Vec<Option<&'q Value>>>()
        };
        query
            .bind(&self.ids)
            .bind(&self.statuses)
            .bind(&self.codes)
            .bind(&self.messages)
            .bind(&self.traces)
            .bind(&self.serials)
            .bind(&self.amounts)
            .bind(&self.mismatches)
            .bind(jsons(&self.bills))
            .bind(jsons(&self.inquiry_data))
            .bind(&self.expires)
            .bind(&self.next_checks)
            .bind(&self.not_found)
            .bind(&self.reasons)
            .bind(&self.updated)
            .bind(&self.finalized)
            .bind(jsons(&self.payments))
            .bind(&self.expected)
            .bind(&self.reviewed_from)
    }
}

/// The columns of the events to append, one array each ($20–$25).
struct EventColumns<'a> {
    ids: Vec<Uuid>,
    sources: Vec<&'a str>,
    from: Vec<Option<&'a str>>,
    to: Vec<Option<&'a str>>,
    codes: Vec<Option<Cow<'a, str>>>,
    details: Vec<Cow<'a, Value>>,
}

impl<'a> EventColumns<'a> {
    const SQL: &'static str = "INSERT INTO transaction_events \
           (transaction_id, source, from_status, to_status, provider_code, detail) \
         SELECT id, source, from_status, to_status, provider_code, detail \
         FROM UNNEST($20::uuid[], $21::text[], $22::text[], $23::text[], $24::text[], $25::jsonb[]) \
           WITH ORDINALITY AS e(id, source, from_status, to_status, provider_code, detail, position) \
         ORDER BY position";

    fn of<E: Borrow<EventRecord>>(events: &'a [(Uuid, E)]) -> Self {
        EventColumns {
            ids: events.iter().map(|(id, _)| *id).collect(),
            sources: events.iter().map(|(_, e)| e.borrow().source).collect(),
            from: events
                .iter()
                .map(|(_, e)| e.borrow().from_status.map(|s| s.as_str()))
                .collect(),
            to: events
                .iter()
                .map(|(_, e)| e.borrow().to_status.map(|s| s.as_str()))
                .collect(),
            codes: events
                .iter()
                .map(|(_, e)| e.borrow().provider_code.as_deref().map(text))
                .collect(),
            details: events
                .iter()
                .map(|(_, e)| json(&e.borrow().detail))
                .collect(),
        }
    }

    fn bind<'q>(&'q self, query: PgScalarQuery<'q>) -> PgScalarQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.sources)
            .bind(&self.from)
            .bind(&self.to)
            .bind(&self.codes)
            .bind(self.details.iter().map(|v| &**v).collect::<Vec<&Value>>())
    }
}

/// The columns of the provider exchanges to store, one array each
/// ($26–$34).
struct ExchangeColumns<'a> {
    ids: Vec<Uuid>,
    operations: Vec<Cow<'a, str>>,
    urls: Vec<Cow<'a, str>>,
    requests: Vec<Cow<'a, str>>,
    responses: Vec<Cow<'a, str>>,
    statuses: Vec<Option<i32>>,
    durations: Vec<i32>,
    errors: Vec<Option<Cow<'a, str>>>,
    ats: Vec<DateTime<Utc>>,
}

impl<'a> ExchangeColumns<'a> {
    const SQL: &'static str = "INSERT INTO provider_exchanges \
           (transaction_id, operation, url, request, response, http_status, duration_ms, error, at) \
         SELECT id, operation, url, request, response, http_status, duration_ms, error, at \
         FROM UNNEST($26::uuid[], $27::text[], $28::text[], $29::text[], $30::text[], $31::int4[], \
           $32::int4[], $33::text[], $34::timestamptz[]) \
           WITH ORDINALITY AS x(id, operation, url, request, response, http_status, duration_ms, error, at, position) \
         ORDER BY position";

    fn of(exchanges: &'a [(Uuid, &'a bus::Exchange)]) -> Self {
        let now = Utc::now();
        ExchangeColumns {
            ids: exchanges.iter().map(|(id, _)| *id).collect(),
            operations: exchanges.iter().map(|(_, e)| text(&e.operation)).collect(),
            urls: exchanges.iter().map(|(_, e)| text(&e.url)).collect(),
            requests: exchanges.iter().map(|(_, e)| text(&e.request)).collect(),
            responses: exchanges.iter().map(|(_, e)| text(&e.response)).collect(),
            statuses: exchanges
                .iter()
                .map(|(_, e)| (e.http_status != 0).then_some(e.http_status))
                .collect(),
            durations: exchanges
                .iter()
                .map(|(_, e)| i32::try_from(e.duration_ms).unwrap_or(i32::MAX))
                .collect(),
            errors: exchanges
                .iter()
                .map(|(_, e)| (!e.error.is_empty()).then(|| text(&e.error)))
                .collect(),
            ats: exchanges
                .iter()
                .map(|(_, e)| e.at.as_ref().and_then(from_timestamp).unwrap_or(now))
                .collect(),
        }
    }

    fn bind<'q>(&'q self, query: PgScalarQuery<'q>) -> PgScalarQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.operations)
            .bind(&self.urls)
            .bind(&self.requests)
            .bind(&self.responses)
            .bind(&self.statuses)
            .bind(&self.durations)
            .bind(&self.errors)
            .bind(&self.ats)
    }
}

/// `value` as PostgreSQL can store it: U+0000 replaced by U+FFFD.
pub(crate) fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// `value` as `jsonb` can store it: U+0000 replaced by U+FFFD in every
/// string and key.
pub(crate) fn json(value: &Value) -> Cow<'_, Value> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (text(k).into_owned(), clean(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(value) {
        Cow::Owned(clean(value))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests_support::row;
    use loket_protocol::TransactionStatus as S;
    use serde_json::json as j;

    /// A database with one `received` purchase (returned).
    async fn database_with_a_purchase() -> anyhow::Result<(sqlx::PgPool, TransactionRow)> {
        let url = loket_test_support::postgres::fresh_database().await?;
        let pool = loket_runtime::db::connect(&loket_runtime::Secret::new(url), 2).await?;
        let mut purchase = row(S::Received);
        purchase.id = Uuid::now_v7();
        purchase.client_id = loket_test_support::postgres::new_client(&pool).await?;
        sqlx::query(
            "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
             provider_product_code, account, amount_minor, request_hash, provider_reference) \
             VALUES ($1, $2, 'c-1', 'prepaid_purchase', 'received', 'okebayar', 'TSEL10', 'S10', \
             '081234567890', 10500, '\\x01', $3)",
        )
        .bind(purchase.id)
        .bind(purchase.client_id)
        .bind(purchase.id.simple().to_string())
        .execute(&pool)
        .await?;
        Ok((pool, purchase))
    }

    fn event(to: S, n: i64) -> EventRecord {
        EventRecord {
            source: "result",
            from_status: Some(S::Received),
            to_status: Some(to),
            provider_code: Some("00\0".into()),
            detail: j!({ "n": n }),
        }
    }

    fn exchange() -> bus::Exchange {
        bus::Exchange {
            operation: "purchase".into(),
            url: "http://sim/".into(),
            request: "<pin>****</pin>".into(),
            response: "<status>00</status>".into(),
            http_status: 200,
            duration_ms: 3,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn one_statement_writes_the_row_its_events_in_order_and_its_exchanges(
    ) -> anyhow::Result<()> {
        let (pool, before) = database_with_a_purchase().await?;
        let mut next = before.clone();
        next.status = S::Success.as_str().into();
        next.serial_number = Some("SN\0-1".into());
        let mut tx = pool.begin().await?;
        write(
            &mut tx,
            &[("received", &next)],
            &[
                (before.id, event(S::Pending, 1)),
                (before.id, event(S::Success, 2)),
            ],
            &[(before.id, &exchange())],
        )
        .await?;
        tx.commit().await?;
        let (status, serial): (String, String) =
            sqlx::query_as("SELECT status, serial_number FROM transactions WHERE id = $1")
                .bind(before.id)
                .fetch_one(&pool)
                .await?;
        assert_eq!(
            (status.as_str(), serial.as_str()),
            ("success", "SN\u{FFFD}-1")
        );
        let logged: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT to_status, (detail->>'n')::int8, provider_code FROM transaction_events \
             WHERE transaction_id = $1 ORDER BY id",
        )
        .bind(before.id)
        .fetch_all(&pool)
        .await?;
        assert_eq!(
            logged,
            vec![
                ("pending".into(), 1, "00\u{FFFD}".into()),
                ("success".into(), 2, "00\u{FFFD}".into())
            ]
        );
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM provider_exchanges WHERE transaction_id = $1")
                .bind(before.id)
                .fetch_one(&pool)
                .await?;
        assert_eq!(stored, 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_row_whose_status_moved_fails_the_whole_write() -> anyhow::Result<()> {
        let (pool, before) = database_with_a_purchase().await?;
        let mut next = before.clone();
        next.status = S::Success.as_str().into();
        let mut tx = pool.begin().await?;
        // The write expects `pending`; the row is still `received`.
        let outcome = write(
            &mut tx,
            &[("pending", &next)],
            &[(before.id, event(S::Success, 1))],
            &[(before.id, &exchange())],
        )
        .await;
        assert!(
            matches!(outcome, Err(ApplyError::Raced(id)) if id == before.id),
            "{outcome:?}"
        );
        drop(tx);
        let written: (String, i64, i64) = sqlx::query_as(
            "SELECT status, (SELECT count(*) FROM transaction_events), \
             (SELECT count(*) FROM provider_exchanges) FROM transactions WHERE id = $1",
        )
        .bind(before.id)
        .fetch_one(&pool)
        .await?;
        assert_eq!(
            written,
            ("received".into(), 0, 0),
            "nothing of the batch stays"
        );
        Ok(())
    }

    #[test]
    fn nul_is_replaced_in_text_and_in_every_json_string_and_key() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        let clean = j!({"k": ["x", 1, {"n": null}]});
        assert!(matches!(json(&clean), Cow::Borrowed(_)));
        let dirty = j!({"k\0": ["x\0", 1, {"n": "\0"}], "ok": true});
        assert_eq!(
            json(&dirty).into_owned(),
            j!({"k\u{FFFD}": ["x\u{FFFD}", 1, {"n": "\u{FFFD}"}], "ok": true})
        );
    }
}
