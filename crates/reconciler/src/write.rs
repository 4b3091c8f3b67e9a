//! The reconciler's SQL, each statement for many rows at once (arrays
//! through `UNNEST`), so a batch of events costs the same few round trips as
//! one event: lock the rows, claim the events, write the rows, append the
//! events and the exchanges.
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

/// The conditional update of every column the reconciler owns, for each
/// `(status the row must still have, the row to write)`. Any row whose
/// status moved meanwhile fails the whole write ([`ApplyError::Raced`]).
pub(crate) async fn update_rows(
    conn: &mut PgConnection,
    writes: &[(&str, &TransactionRow)],
) -> Result<(), ApplyError> {
    let Some((_, first)) = writes.first() else {
        return Ok(());
    };
    let ids: Vec<Uuid> = writes.iter().map(|(_, r)| r.id).collect();
    let expected: Vec<&str> = writes.iter().map(|(status, _)| *status).collect();
    let statuses: Vec<&str> = writes.iter().map(|(_, r)| r.status.as_str()).collect();
    let codes: Vec<Option<Cow<str>>> = writes
        .iter()
        .map(|(_, r)| r.provider_code.as_deref().map(text))
        .collect();
    let messages: Vec<Option<Cow<str>>> = writes
        .iter()
        .map(|(_, r)| r.provider_message.as_deref().map(text))
        .collect();
    let traces: Vec<Option<Cow<str>>> = writes
        .iter()
        .map(|(_, r)| r.provider_trace.as_deref().map(text))
        .collect();
    let serials: Vec<Option<Cow<str>>> = writes
        .iter()
        .map(|(_, r)| r.serial_number.as_deref().map(text))
        .collect();
    let amounts: Vec<Option<i64>> = writes
        .iter()
        .map(|(_, r)| r.provider_amount_minor)
        .collect();
    let mismatches: Vec<bool> = writes.iter().map(|(_, r)| r.amount_mismatch).collect();
    let bills: Vec<Option<Cow<Value>>> = writes
        .iter()
        .map(|(_, r)| r.bill.as_ref().map(json))
        .collect();
    let inquiry_data: Vec<Option<Cow<Value>>> = writes
        .iter()
        .map(|(_, r)| r.inquiry_data.as_ref().map(json))
        .collect();
    let expires: Vec<Option<DateTime<Utc>>> = writes.iter().map(|(_, r)| r.expires_at).collect();
    let next_checks: Vec<Option<DateTime<Utc>>> =
        writes.iter().map(|(_, r)| r.next_check_at).collect();
    let not_found: Vec<Option<DateTime<Utc>>> =
        writes.iter().map(|(_, r)| r.not_found_since).collect();
    let reasons: Vec<Option<Cow<str>>> = writes
        .iter()
        .map(|(_, r)| r.review_reason.as_deref().map(text))
        .collect();
    let updated: Vec<DateTime<Utc>> = writes.iter().map(|(_, r)| r.updated_at).collect();
    let finalized: Vec<Option<DateTime<Utc>>> =
        writes.iter().map(|(_, r)| r.finalized_at).collect();
    let payments: Vec<Option<Cow<Value>>> = writes
        .iter()
        .map(|(_, r)| r.payment.as_ref().map(json))
        .collect();
    let done = sqlx::query(
        "UPDATE transactions t SET status = u.status, provider_code = u.provider_code, \
           provider_message = u.provider_message, provider_trace = u.provider_trace, \
           serial_number = u.serial_number, provider_amount_minor = u.provider_amount_minor, \
           amount_mismatch = u.amount_mismatch, bill = u.bill, inquiry_data = u.inquiry_data, \
           expires_at = u.expires_at, next_check_at = u.next_check_at, not_found_since = u.not_found_since, \
           review_reason = u.review_reason, updated_at = u.updated_at, finalized_at = u.finalized_at, \
           payment = u.payment \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], \
           $8::bool[], $9::jsonb[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], \
           $14::text[], $15::timestamptz[], $16::timestamptz[], $17::jsonb[], $18::text[]) \
           AS u(id, status, provider_code, provider_message, provider_trace, serial_number, \
             provider_amount_minor, amount_mismatch, bill, inquiry_data, expires_at, next_check_at, \
             not_found_since, review_reason, updated_at, finalized_at, payment, expected_status) \
         WHERE t.id = u.id AND t.status = u.expected_status",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&codes)
    .bind(&messages)
    .bind(&traces)
    .bind(&serials)
    .bind(&amounts)
    .bind(&mismatches)
    .bind(bills.iter().map(|v| v.as_deref()).collect::<Vec<Option<&Value>>>())
    .bind(inquiry_data.iter().map(|v| v.as_deref()).collect::<Vec<Option<&Value>>>())
    .bind(&expires)
    .bind(&next_checks)
    .bind(&not_found)
    .bind(&reasons)
    .bind(&updated)
    .bind(&finalized)
    .bind(payments.iter().map(|v| v.as_deref()).collect::<Vec<Option<&Value>>>())
    .bind(&expected)
    .execute(conn)
    .await?;
    if done.rows_affected() != writes.len() as u64 {
        return Err(ApplyError::Raced(first.id));
    }
    Ok(())
}

/// Appends `(transaction, event)` records to the event log, in order.
/// The records may be owned or borrowed.
pub(crate) async fn insert_events<E: Borrow<EventRecord>>(
    conn: &mut PgConnection,
    events: &[(Uuid, E)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|(id, _)| *id).collect();
    let sources: Vec<&str> = events.iter().map(|(_, e)| e.borrow().source).collect();
    let from: Vec<Option<&str>> = events
        .iter()
        .map(|(_, e)| e.borrow().from_status.map(|s| s.as_str()))
        .collect();
    let to: Vec<Option<&str>> = events
        .iter()
        .map(|(_, e)| e.borrow().to_status.map(|s| s.as_str()))
        .collect();
    let codes: Vec<Option<Cow<str>>> = events
        .iter()
        .map(|(_, e)| e.borrow().provider_code.as_deref().map(text))
        .collect();
    let details: Vec<Cow<Value>> = events
        .iter()
        .map(|(_, e)| json(&e.borrow().detail))
        .collect();
    sqlx::query(
        "INSERT INTO transaction_events (transaction_id, source, from_status, to_status, provider_code, detail) \
         SELECT id, source, from_status, to_status, provider_code, detail \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[]) \
           WITH ORDINALITY AS e(id, source, from_status, to_status, provider_code, detail, position) \
         ORDER BY position",
    )
    .bind(&ids)
    .bind(&sources)
    .bind(&from)
    .bind(&to)
    .bind(&codes)
    .bind(details.iter().map(|v| &**v).collect::<Vec<&Value>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the (already masked) provider exchanges, each with its
/// transaction, in order.
pub(crate) async fn insert_exchanges(
    conn: &mut PgConnection,
    exchanges: &[(Uuid, &bus::Exchange)],
) -> Result<(), sqlx::Error> {
    if exchanges.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let ids: Vec<Uuid> = exchanges.iter().map(|(id, _)| *id).collect();
    let operations: Vec<Cow<str>> = exchanges.iter().map(|(_, e)| text(&e.operation)).collect();
    let urls: Vec<Cow<str>> = exchanges.iter().map(|(_, e)| text(&e.url)).collect();
    let requests: Vec<Cow<str>> = exchanges.iter().map(|(_, e)| text(&e.request)).collect();
    let responses: Vec<Cow<str>> = exchanges.iter().map(|(_, e)| text(&e.response)).collect();
    let statuses: Vec<Option<i32>> = exchanges
        .iter()
        .map(|(_, e)| (e.http_status != 0).then_some(e.http_status))
        .collect();
    let durations: Vec<i32> = exchanges
        .iter()
        .map(|(_, e)| i32::try_from(e.duration_ms).unwrap_or(i32::MAX))
        .collect();
    let errors: Vec<Option<Cow<str>>> = exchanges
        .iter()
        .map(|(_, e)| (!e.error.is_empty()).then(|| text(&e.error)))
        .collect();
    let ats: Vec<DateTime<Utc>> = exchanges
        .iter()
        .map(|(_, e)| e.at.as_ref().and_then(from_timestamp).unwrap_or(now))
        .collect();
    sqlx::query(
        "INSERT INTO provider_exchanges (transaction_id, operation, url, request, response, http_status, duration_ms, error, at) \
         SELECT id, operation, url, request, response, http_status, duration_ms, error, at \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[], \
           $8::text[], $9::timestamptz[]) \
           WITH ORDINALITY AS x(id, operation, url, request, response, http_status, duration_ms, error, at, position) \
         ORDER BY position",
    )
    .bind(&ids)
    .bind(&operations)
    .bind(&urls)
    .bind(&requests)
    .bind(&responses)
    .bind(&statuses)
    .bind(&durations)
    .bind(&errors)
    .bind(&ats)
    .execute(conn)
    .await?;
    Ok(())
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
    use serde_json::json as j;

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
