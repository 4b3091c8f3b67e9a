//! The tonic `Loket` service. Each method authenticates, validates into a
//! [`crate::validate`] type, and runs one flow of [`Inner`]; errors go through
//! [`crate::errors::to_status`] and every call is counted and timed.

use futures::StreamExt as _;
use loket_protocol::pb::{self, loket_server::Loket};
use loket_protocol::{subjects, ProductKind, Provider, TransactionKind, TransactionStatus};
use loket_runtime::db::BoundedPool;
use loket_runtime::telemetry::{self, TraceContext};
use loket_runtime::Shutdown;
use loket_store::{bill_from_json, TransactionRow};
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::{Authenticator, ClientId};
use crate::dispatch::{Dispatcher, Publishing};
use crate::errors::{to_status, ApiError};
use crate::explain;
use crate::group_insert::GroupInsert;
use crate::idempotency::{self, Replay, RequestParams};
use crate::metrics;
use crate::products::{Product, Products};
use crate::queries::{self, Inserted, Linked, LinkedInsert, NewTransaction};
use crate::validate::{
    self, ClientRef, Cursor, InquireInput, ListQuery, PayBillInput, PayInInput, PayOutInput,
    PurchaseInput, QrCancelInput, QrPayInput, QrQueryInput, QrRefundInput, TransactionKey,
};
use crate::waiters::{self, is_ready, is_settled, updated_at, WaitEnd, WaitGuard, Waiters};
use crate::watch_slots::WatchSlots;

/// What every flow needs; shared by all calls.
pub struct Inner {
    pub db: BoundedPool,
    pub group_insert: GroupInsert,
    pub nats: async_nats::Client,
    /// Shared with open watch streams, which re-check their key.
    pub auth: Arc<Authenticator>,
    pub products: Arc<Products>,
    pub waiters: Arc<Waiters>,
    pub dispatcher: Dispatcher,
    pub shutdown: Shutdown,
    pub balance_timeout: Duration,
    pub watch_slots: WatchSlots,
    /// Counts the moments the ingress's bus connection may have let updates
    /// pass by ([`loket_runtime::bus::connect_observed`]): a watch open
    /// across one ends, so its client re-reads instead of missing a state.
    pub bus_gaps: tokio::sync::watch::Receiver<u64>,
}

/// One mutating call: the caller, its reference and parameters, and how
/// long it may wait.
#[derive(Clone, Copy)]
struct Mutation<'a> {
    client: ClientId,
    client_ref: &'a ClientRef,
    params: &'a RequestParams,
    wait: Duration,
}

/// Updates a watch stream holds for a client that reads slower than they
/// come; one slot is kept for the error that closes a watch that fell behind.
const WATCH_BUFFER: usize = 256;

/// Why a watch open across a bus gap ends ([`Inner::bus_gaps`]).
const WATCH_GAP_MESSAGE: &str =
    "the ingress's connection to the message bus was interrupted or fell \
     behind, so this watch may have missed updates: read the current state (GetTransaction or \
     ListTransactions) and watch again";

/// Why a watch ends when its ingress drains (a restart or a scale-down).
const WATCH_DRAIN_MESSAGE: &str = "this ingress is shutting down: read the current state \
     (GetTransaction or ListTransactions) and watch again";

/// The tonic service (cheap to clone).
#[derive(Clone)]
pub struct LoketService {
    inner: Arc<Inner>,
}

impl LoketService {
    pub fn new(inner: Inner) -> Self {
        LoketService {
            inner: Arc::new(inner),
        }
    }
}

/// `QrQuery` asks the issuer about a payment at most once per window of this
/// length: calls in one window share one status check (one message id, which
/// JetStream's duplicate window absorbs across ingress replicas), so a client
/// polling in a loop cannot flood the issuer.
pub const QR_QUERY_WINDOW: Duration = Duration::from_secs(2);

/// The message id of `QrQuery`'s status check of `id` at `now`: the same
/// for every call in one [`QR_QUERY_WINDOW`].
fn qr_query_msg_id(id: Uuid, now: chrono::DateTime<chrono::Utc>) -> String {
    let window = now.timestamp_millis() / QR_QUERY_WINDOW.as_millis() as i64;
    format!("chk:{id}:q:{window}")
}

/// How long a wait that reached its deadline may spend re-reading its
/// transaction (well inside the margin left before the client's deadline).
const REREAD_LIMIT: Duration = Duration::from_millis(50);

/// How often a wait that saw a bus gap looks whether the bus is back.
const BUS_BACK_POLL: Duration = Duration::from_millis(50);

/// Per-call facts taken from the request metadata before the body is used.
struct CallContext {
    started: Instant,
    trace: TraceContext,
    /// The client's deadline (`grpc-timeout`), from `started`.
    deadline: Option<Duration>,
    span: tracing::Span,
}

impl CallContext {
    fn new(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> Self {
        let traceparent = metadata
            .get(subjects::TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok());
        let deadline = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let span = tracing::info_span!(
            "rpc",
            method,
            trace_id = tracing::field::Empty,
            transaction_id = tracing::field::Empty,
        );
        let trace = telemetry::join(&span, traceparent.and_then(TraceContext::parse));
        CallContext {
            started: Instant::now(),
            trace,
            deadline,
            span,
        }
    }

    fn record_transaction(&self, id: Uuid) {
        self.span
            .record("transaction_id", tracing::field::display(id));
    }

    /// How long, from the call's start, the service may work on it so that
    /// its answer still reaches the client: a little less than the client's
    /// deadline, if it set one.
    fn answer_budget(&self) -> Option<Duration> {
        self.deadline.map(|deadline| {
            let margin = (deadline / 10).min(Duration::from_millis(200));
            deadline.saturating_sub(margin)
        })
    }

    /// `limit`, or less when the client's deadline comes first: how long a
    /// step begun now may take.
    fn within_budget(&self, limit: Duration) -> Duration {
        match self.answer_budget() {
            Some(budget) => limit.min(budget.saturating_sub(self.started.elapsed())),
            None => limit,
        }
    }

    /// When a wait of `wait` must end: the asked wait, or a little before
    /// the client's own deadline so the answer still reaches it.
    fn wait_deadline(&self, wait: Duration) -> Instant {
        self.started + self.answer_budget().map_or(wait, |budget| wait.min(budget))
    }
}

/// Parses a `grpc-timeout` value (`<up to 8 digits><H|M|S|m|u|n>`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The call's answer, and its metric. Inside the call's span: an internal
/// error is logged here, with the call's transaction and trace ids.
fn finish<T>(
    method: &'static str,
    ctx: &CallContext,
    result: Result<T, ApiError>,
) -> Result<Response<T>, Status> {
    let started = ctx.started;
    let _in_call = ctx.span.enter();
    match result {
        Ok(value) => {
            metrics::record(method, tonic::Code::Ok, started.into_std());
            Ok(Response::new(value))
        }
        Err(error) => {
            let status = to_status(&error);
            metrics::record(method, status.code(), started.into_std());
            Err(status)
        }
    }
}

fn respond(row: &TransactionRow) -> pb::Transaction {
    let mut transaction = row.to_pb();
    explain::enrich(&mut transaction);
    transaction
}

/// Why no connector will ever answer a balance query for `provider`, or
/// `None` when one does (OkeBayar, Smilepayz). Asking the bus anyway would
/// end in "no responders" or a timeout, which reads as a transient outage
/// (`UNAVAILABLE`, "try again") when retrying can never help.
fn no_balance_service(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::OkeBayar | Provider::Smilepayz => None,
        Provider::SnapQr => Some("SNAP QR CPM defines no balance service"),
        Provider::Doku => {
            Some("loket has no DOKU connector (only DOKU's code catalogue is built in)")
        }
    }
}

fn not_found_inquiry(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("inquiry {id} not found"))
}

/// When an inquiry stops being payable: the column, else the bill's own expiry.
fn inquiry_expiry(inquiry: &TransactionRow) -> Option<chrono::DateTime<chrono::Utc>> {
    inquiry.expires_at.or_else(|| {
        inquiry
            .bill
            .as_ref()
            .and_then(bill_from_json)
            .and_then(|bill| bill.expires_at)
            .and_then(|at| loket_protocol::conversions::from_timestamp(&at))
    })
}

/// The checks every inquiry a purchase or payment builds on must pass.
fn check_inquiry(inquiry: &TransactionRow, kind: TransactionKind) -> Result<(), ApiError> {
    let id = inquiry.id;
    if inquiry.kind() != Some(kind) {
        let what = match kind {
            TransactionKind::BillInquiry => "a bill inquiry",
            _ => "a PLN prepaid inquiry",
        };
        return Err(ApiError::FailedPrecondition(format!(
            "transaction {id} is not {what}"
        )));
    }
    if inquiry.status() != Some(TransactionStatus::Success) {
        return Err(ApiError::FailedPrecondition(format!(
            "inquiry {id} is not successful (status {})",
            inquiry.status
        )));
    }
    // ASSUMED: an inquiry whose expiry is not known is accepted; the
    // provider refuses an expired one itself (OkeBayar 403).
    if let Some(expires_at) = inquiry_expiry(inquiry) {
        if expires_at <= chrono::Utc::now() {
            return Err(ApiError::FailedPrecondition(format!(
                "inquiry {id} expired at {}",
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
    }
    Ok(())
}

fn not_a_qr_payment(original: &TransactionRow) -> Option<ApiError> {
    (original.kind() != Some(TransactionKind::QrPayment)).then(|| {
        ApiError::FailedPrecondition(format!(
            "transaction {} is not a QR payment (kind {})",
            original.id, original.kind
        ))
    })
}

fn live_of(linked: &[Linked], kind: TransactionKind) -> Option<&Linked> {
    linked.iter().find(|l| l.kind == kind.as_str())
}

/// A QR payment may be voided unless it failed, or already has a live
/// cancel or refund (a void after a refund would return more than was paid).
pub fn check_cancel(original: &TransactionRow, linked: &[Linked]) -> Result<(), ApiError> {
    if let Some(error) = not_a_qr_payment(original) {
        return Err(error);
    }
    let id = original.id;
    if original.status() == Some(TransactionStatus::Failed) {
        return Err(ApiError::FailedPrecondition(format!(
            "QR payment {id} failed: there is nothing to cancel"
        )));
    }
    if let Some(cancel) = live_of(linked, TransactionKind::QrCancel) {
        return Err(ApiError::FailedPrecondition(format!(
            "QR payment {id} already has cancel {} (status {})",
            cancel.id, cancel.status
        )));
    }
    if let Some(refund) = live_of(linked, TransactionKind::QrRefund) {
        return Err(ApiError::FailedPrecondition(format!(
            "QR payment {id} has refund {} (status {}): a cancel would return more than was paid; refund the rest instead",
            refund.id, refund.status
        )));
    }
    Ok(())
}

/// Refunds never exceed what was paid: the payment must be successful and
/// not voided, and `amount` plus every refund of it that has not failed
/// (pending and unknown ones count: they may still succeed) must not exceed
/// its amount.
pub fn check_refund(
    original: &TransactionRow,
    linked: &[Linked],
    amount: loket_protocol::Money,
) -> Result<(), ApiError> {
    if let Some(error) = not_a_qr_payment(original) {
        return Err(error);
    }
    let id = original.id;
    if original.status() != Some(TransactionStatus::Success) {
        return Err(ApiError::FailedPrecondition(format!(
            "QR payment {id} is not successful (status {}): only a successful payment can be refunded",
            original.status
        )));
    }
    if let Some(cancel) = live_of(linked, TransactionKind::QrCancel) {
        return Err(ApiError::FailedPrecondition(format!(
            "QR payment {id} has cancel {} (status {}): nothing is left to refund",
            cancel.id, cancel.status
        )));
    }
    let paid = original_amount(original)?;
    if paid.currency != amount.currency {
        return Err(ApiError::FailedPrecondition(format!(
            "refund currency {} differs from the payment's {}",
            amount.currency.code(),
            paid.currency.code()
        )));
    }
    let refunded: i64 = linked
        .iter()
        .filter(|l| l.kind == TransactionKind::QrRefund.as_str())
        .map(|l| l.amount_minor.unwrap_or(0))
        .sum();
    let refundable = loket_protocol::Money {
        minor: (paid.minor - refunded).max(0),
        currency: paid.currency,
    };
    if amount.minor > refundable.minor {
        return Err(ApiError::FailedPrecondition(format!(
            "refund of {amount} exceeds the refundable {refundable} of QR payment {id} (paid {paid}, refunds not failed {})",
            loket_protocol::Money {
                minor: refunded,
                currency: paid.currency
            }
        )));
    }
    Ok(())
}

/// What a QR payment took, which bounds its refunds and its cancel: the
/// amount asked, or less when the issuer reported taking less (an amount
/// mismatch, flagged and never decided automatically).
fn original_amount(original: &TransactionRow) -> Result<loket_protocol::Money, ApiError> {
    let asked = original
        .amount_minor
        .ok_or_else(|| ApiError::Internal(format!("QR payment {} has no amount", original.id)))?;
    let minor = match original.provider_amount_minor {
        Some(taken) if taken < asked => taken.max(0),
        _ => asked,
    };
    let currency = loket_protocol::Currency::parse(&original.currency).map_err(|_| {
        ApiError::Internal(format!(
            "QR payment {} has currency {:?}",
            original.id, original.currency
        ))
    })?;
    Ok(loket_protocol::Money { minor, currency })
}

/// A cancel or refund of `original`: its provider and product, linked by
/// `original_id`, with the original's references in `details` for the
/// connector (SNAP `originalPartnerReferenceNo` / `originalReferenceNo`).
pub fn linked_transaction(
    mut new: NewTransaction,
    original: &TransactionRow,
    kind: TransactionKind,
    amount: loket_protocol::Money,
) -> Result<NewTransaction, ApiError> {
    new.kind = kind;
    new.provider = original.provider().ok_or_else(|| {
        ApiError::Internal(format!(
            "QR payment {} has unknown provider {}",
            original.id, original.provider
        ))
    })?;
    new.product_code = original.product_code.clone();
    new.provider_product_code = original.provider_product_code.clone();
    new.account = original.account.clone();
    new.method = original.method.clone();
    new.amount = Some(amount);
    new.original_id = Some(original.id);
    let mut details = match new.details.take() {
        Some(serde_json::Value::Object(details)) => details,
        _ => serde_json::Map::new(),
    };
    details.insert(
        loket_store::ORIGINAL_REFERENCE.into(),
        serde_json::Value::String(original.provider_reference.clone()),
    );
    if let Some(trace) = original.provider_trace.as_ref().filter(|t| !t.is_empty()) {
        details.insert(
            loket_store::ORIGINAL_PROVIDER_TRACE.into(),
            serde_json::Value::String(trace.clone()),
        );
    }
    new.details = Some(serde_json::Value::Object(details));
    Ok(new)
}

impl Inner {
    fn new_transaction(
        &self,
        client: ClientId,
        client_ref: &ClientRef,
        params: &RequestParams,
    ) -> NewTransaction {
        let id = Uuid::now_v7();
        NewTransaction {
            id,
            client_id: client.0,
            client_ref: client_ref.as_str().to_string(),
            kind: TransactionKind::PrepaidPurchase,
            provider: Provider::OkeBayar,
            product_code: String::new(),
            provider_product_code: String::new(),
            account: String::new(),
            account2: String::new(),
            account3: String::new(),
            contact: String::new(),
            amount: None,
            request_hash: params.hash(),
            provider_reference: queries::provider_reference(id),
            inquiry_id: None,
            inquiry_data: None,
            original_id: None,
            method: String::new(),
            details: params.details_json(),
        }
    }

    /// A new transaction of `kind` routed by `product` (provider and codes).
    fn new_product_transaction(
        &self,
        client: ClientId,
        client_ref: &ClientRef,
        params: &RequestParams,
        kind: TransactionKind,
        product: &Product,
    ) -> NewTransaction {
        let mut new = self.new_transaction(client, client_ref, params);
        new.kind = kind;
        new.provider = product.provider;
        new.product_code = product.code.clone();
        new.provider_product_code = product.provider_product_code.clone();
        new
    }

    /// A refused call may still be a replay of one that succeeded earlier
    /// (product since deactivated, inquiry since expired): same `client_ref`
    /// and parameters return the transaction, different ones conflict.
    async fn replay_or(
        &self,
        ctx: &CallContext,
        client: ClientId,
        client_ref: &ClientRef,
        params: &RequestParams,
        wait: Duration,
        error: ApiError,
    ) -> Result<pb::Transaction, ApiError> {
        if !matches!(
            error,
            ApiError::NotFound(_) | ApiError::FailedPrecondition(_)
        ) {
            return Err(error);
        }
        match queries::by_client_ref(&self.db, client.0, client_ref.as_str()).await? {
            Some(existing) => {
                self.replay(ctx, client, client_ref, params, existing, wait)
                    .await
            }
            None => Err(error),
        }
    }

    async fn replay(
        &self,
        ctx: &CallContext,
        client: ClientId,
        client_ref: &ClientRef,
        params: &RequestParams,
        existing: TransactionRow,
        wait: Duration,
    ) -> Result<pb::Transaction, ApiError> {
        match idempotency::compare(client_ref.as_str(), params, &existing) {
            Replay::Same => {
                ::metrics::counter!(metrics::IDEMPOTENT_REPLAYS).increment(1);
                ctx.record_transaction(existing.id);
                self.existing_with_wait(ctx, client, existing, wait).await
            }
            Replay::Conflict(message) => Err(ApiError::AlreadyExists(message)),
        }
    }

    /// Returns an existing transaction, waiting for it to settle if asked:
    /// registers first, then re-reads, so no update can slip between.
    async fn existing_with_wait(
        &self,
        ctx: &CallContext,
        client: ClientId,
        row: TransactionRow,
        wait: Duration,
    ) -> Result<pb::Transaction, ApiError> {
        let current = row.to_pb();
        if wait.is_zero() || is_ready(&current) {
            return Ok(respond(&row));
        }
        let guard = self.waiters.register(client.0, row.id);
        let row = queries::by_id(&self.db, client.0, row.id)
            .await?
            .unwrap_or(row);
        Ok(self.wait_for(ctx, guard, &row, wait).await)
    }

    /// Waits from `row` until its transaction is ready or the wait ends. At
    /// the deadline it reads the row once more: an update lost on its way
    /// (the reconciler's publish, this service's subscription) must not leave
    /// the caller with a stale state that Postgres has moved past.
    async fn wait_for(
        &self,
        ctx: &CallContext,
        mut guard: WaitGuard,
        row: &TransactionRow,
        wait: Duration,
    ) -> pb::Transaction {
        let current = row.to_pb();
        let mut transaction = if is_ready(&current) {
            current
        } else {
            self.wait_out(&mut guard, row, current, ctx.wait_deadline(wait), is_ready)
                .await
        };
        explain::enrich(&mut transaction);
        transaction
    }

    /// Waits with `guard` from `current` (of `row`) until `done` holds, the
    /// `deadline` passes or the service drains. Updates reach a waiting call
    /// on a plain subscription, so one published while the ingress is off
    /// the bus (or dropped as a slow consumer's) never arrives: after such a
    /// gap the row is read again once the bus is back, and at the deadline
    /// once more, rather than leaving the caller waiting out its deadline
    /// for a state Postgres already holds.
    async fn wait_out(
        &self,
        guard: &mut WaitGuard,
        row: &TransactionRow,
        mut current: pb::Transaction,
        deadline: Instant,
        done: impl Fn(&pb::Transaction) -> bool,
    ) -> pb::Transaction {
        let mut bus_gaps = self.bus_gaps.clone();
        bus_gaps.mark_unchanged();
        loop {
            tokio::select! {
                (seen, end) = guard.until(current.clone(), deadline, &self.shutdown, &done) => {
                    return match end {
                        WaitEnd::Deadline => self.reread(row, seen).await,
                        WaitEnd::Settled | WaitEnd::Shutdown => seen,
                    };
                }
                Ok(()) = bus_gaps.changed() => {
                    tracing::info!("the bus connection may have lost updates: the transaction is read again once it is back");
                    self.bus_back_by(deadline).await;
                    current = self.reread(row, current).await;
                }
            }
        }
    }

    /// Returns once the bus connection is up again, or at `deadline`.
    async fn bus_back_by(&self, deadline: Instant) {
        while self.nats.connection_state() != async_nats::connection::State::Connected
            && Instant::now() < deadline
        {
            tokio::time::sleep(BUS_BACK_POLL).await;
        }
    }

    /// `seen`, or the row as Postgres holds it now when that is newer; a
    /// read that fails or takes longer than [`REREAD_LIMIT`] keeps `seen`.
    async fn reread(&self, row: &TransactionRow, seen: pb::Transaction) -> pb::Transaction {
        let read = tokio::time::timeout(
            REREAD_LIMIT,
            queries::by_id(&self.db, row.client_id, row.id),
        )
        .await;
        match read {
            Ok(Ok(Some(now))) => {
                let now = now.to_pb();
                if waiters::supersedes(&seen, &now) {
                    now
                } else {
                    seen
                }
            }
            Ok(Ok(None)) => seen,
            Ok(Err(error)) => {
                tracing::warn!(%error, "re-reading the transaction at the end of the wait failed");
                seen
            }
            Err(_) => seen,
        }
    }

    /// Inserts `new` (or finds the client's transaction with its
    /// `client_ref`), dispatches it if this call created it, and waits.
    async fn create(
        &self,
        ctx: &CallContext,
        client: ClientId,
        client_ref: &ClientRef,
        params: &RequestParams,
        new: NewTransaction,
        wait: Duration,
    ) -> Result<pb::Transaction, ApiError> {
        // Registered before the insert: no update for this id can be missed.
        let guard = (!wait.is_zero()).then(|| self.waiters.register(client.0, new.id));
        let event = serde_json::json!({
            "trace_id": ctx.trace.trace_id(),
            "client_ref": new.client_ref,
        });
        let inquiry_id = new.inquiry_id;
        let (db, group_insert) = (self.db.clone(), self.group_insert.clone());
        let (inserted, publishing) = self
            .insert_then_dispatch(
                ctx,
                async move { queries::insert(&db, &group_insert, &new, event).await },
                |inserted| match inserted {
                    Inserted::Created(row) => Some(row),
                    _ => None,
                },
            )
            .await?;
        match (inserted, publishing) {
            (Inserted::Created(row), Some(publishing)) => {
                Ok(self.created(ctx, &row, publishing, guard, wait).await)
            }
            (Inserted::Created(_), None) => unreachable!("a created transaction is dispatched"),
            (Inserted::Existing(row), _) => {
                drop(guard);
                self.replay(ctx, client, client_ref, params, *row, wait)
                    .await
            }
            (Inserted::InquiryAlreadyPaid(Some(payment)), _) => {
                Err(ApiError::AlreadyExists(format!(
                    "inquiry {} already has a payment {payment}",
                    inquiry_id.unwrap_or_default()
                )))
            }
            (Inserted::InquiryAlreadyPaid(None), _) => Err(ApiError::Unavailable(format!(
                "inquiry {}: the payment that held it failed while this one was being recorded; \
                 nothing was created, call again to pay it",
                inquiry_id.unwrap_or_default()
            ))),
        }
    }

    /// Runs `insert`, and the first dispatch of the transaction it
    /// `created`, in a task of their own. The insert, once queued, commits
    /// whatever becomes of this call; were the call given up meanwhile (the
    /// client's deadline, the client gone), its transaction would wait for
    /// the sweep's grace to be dispatched, and a retry with its client_ref
    /// only replays it.
    async fn insert_then_dispatch<T: Send + 'static>(
        &self,
        ctx: &CallContext,
        insert: impl std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
        created: fn(&T) -> Option<&TransactionRow>,
    ) -> Result<(T, Option<Publishing>), ApiError> {
        let (dispatcher, trace, span) = (self.dispatcher.clone(), ctx.trace, ctx.span.clone());
        let inserting = tokio::spawn(
            async move {
                let inserted = insert.await?;
                let publishing =
                    created(&inserted).map(|row| accepted(row, &span, &dispatcher, trace));
                Ok::<_, sqlx::Error>((inserted, publishing))
            }
            .instrument(ctx.span.clone()),
        );
        Ok(inserting
            .await
            .map_err(|error| ApiError::Internal(format!("insert task: {error}")))??)
    }

    /// What follows an insert this call won, its first command being
    /// published: answer once the publish is acknowledged (waiting for the
    /// transaction if asked), or sooner if the client's deadline says so.
    async fn created(
        &self,
        ctx: &CallContext,
        row: &TransactionRow,
        publishing: Publishing,
        guard: Option<WaitGuard>,
        wait: Duration,
    ) -> pb::Transaction {
        publishing
            .answer_within(ctx.within_budget(self.dispatcher.publish_timeout()))
            .await;
        match guard {
            Some(guard) => {
                let transaction = self.wait_for(ctx, guard, row, wait).await;
                if is_settled(&transaction) {
                    self.dispatcher.settled(row.id);
                }
                transaction
            }
            None => respond(row),
        }
    }

    /// Creates a transaction of `kind` for the active product `code` of
    /// `product_kind`, `fill` adding the request's own fields. A refused
    /// product may still be a replay of a call that succeeded earlier.
    async fn create_for_product(
        &self,
        ctx: &CallContext,
        call: Mutation<'_>,
        code: &validate::ProductCode,
        product_kind: ProductKind,
        kind: TransactionKind,
        fill: impl FnOnce(&mut NewTransaction),
    ) -> Result<pb::Transaction, ApiError> {
        let found = self.products.get(code.as_str()).await.and_then(|product| {
            product.require(product_kind)?;
            Ok(product)
        });
        let product = match found {
            Ok(product) => product,
            Err(error) => {
                return self
                    .replay_or(
                        ctx,
                        call.client,
                        call.client_ref,
                        call.params,
                        call.wait,
                        error,
                    )
                    .await
            }
        };
        let mut new =
            self.new_product_transaction(call.client, call.client_ref, call.params, kind, &product);
        fill(&mut new);
        self.create(
            ctx,
            call.client,
            call.client_ref,
            call.params,
            new,
            call.wait,
        )
        .await
    }

    async fn qr_pay(
        &self,
        ctx: &CallContext,
        request: Request<pb::QrPayRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = QrPayInput::try_from(request.get_ref())?;
        let params = RequestParams::qr_pay(&input);
        let call = Mutation {
            client,
            client_ref: &input.client_ref,
            params: &params,
            wait: input.wait,
        };
        self.create_for_product(
            ctx,
            call,
            &input.product_code,
            ProductKind::QrCpm,
            TransactionKind::QrPayment,
            |new| {
                // ASSUMED: a QR payment has no customer account loket knows
                // of; the column is NOT NULL, so it stays empty (the QR
                // content, when given, is in `details`).
                new.amount = Some(input.amount);
            },
        )
        .await
    }

    /// `QrQuery`: asks the issuer about the caller's QR payment now (a status
    /// check, service 61) and answers with its state — at once, or after the
    /// first update that follows (within `wait_ms`). A settled payment is
    /// returned at once without asking.
    async fn qr_query(
        &self,
        ctx: &CallContext,
        request: Request<pb::QrQueryRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = QrQueryInput::try_from(request.get_ref())?;
        let id = input.transaction_id;
        let not_found = || ApiError::NotFound(format!("transaction {id} not found"));
        let row = queries::by_id(&self.db, client.0, id)
            .await?
            .ok_or_else(not_found)?;
        ctx.record_transaction(id);
        if row.kind() != Some(TransactionKind::QrPayment) {
            return Err(ApiError::FailedPrecondition(format!(
                "transaction {id} is not a QR payment (kind {})",
                row.kind
            )));
        }
        if is_settled(&row.to_pb()) {
            return Ok(respond(&row));
        }
        // Registered (after the ownership check) before the re-read and the
        // check: no update that follows can be missed.
        let guard = (!input.wait.is_zero()).then(|| self.waiters.register(client.0, id));
        let row = queries::by_id(&self.db, client.0, id)
            .await?
            .ok_or_else(not_found)?;
        let current = row.to_pb();
        if is_settled(&current) {
            return Ok(respond(&row));
        }
        // The check is published from a task of its own: its answer comes
        // by the update the wait below watches, and the state read above
        // answers the call at its deadline, however long the bus takes to
        // acknowledge the check (up to `publish_timeout_ms`).
        let msg_id = qr_query_msg_id(id, chrono::Utc::now());
        let (dispatcher, checked, trace) = (self.dispatcher.clone(), row.clone(), ctx.trace);
        tokio::spawn(
            async move { dispatcher.publish_check(&checked, &msg_id, &trace).await }
                .in_current_span(),
        );
        let Some(mut guard) = guard else {
            return Ok(respond(&row));
        };
        let since = updated_at(&current);
        let mut transaction = self
            .wait_out(
                &mut guard,
                &row,
                current,
                ctx.wait_deadline(input.wait),
                |t| is_settled(t) || updated_at(t) > since,
            )
            .await;
        explain::enrich(&mut transaction);
        Ok(transaction)
    }

    /// Inserts a cancel or refund of the caller's QR payment (see
    /// [`queries::insert_linked`]), dispatches it and answers; the insert
    /// and dispatch run on if the call is given up, as a new transaction's
    /// do ([`Self::insert_then_dispatch`]).
    async fn create_linked(
        &self,
        ctx: &CallContext,
        call: Mutation<'_>,
        original_id: Uuid,
        build: impl FnOnce(NewTransaction, &TransactionRow, &[Linked]) -> Result<NewTransaction, ApiError>
            + Send
            + 'static,
    ) -> Result<pb::Transaction, ApiError> {
        let Mutation {
            client,
            client_ref,
            params,
            wait,
        } = call;
        let template = self.new_transaction(client, client_ref, params);
        let guard = (!wait.is_zero()).then(|| self.waiters.register(client.0, template.id));
        let event = serde_json::json!({
            "trace_id": ctx.trace.trace_id(),
            "client_ref": client_ref.as_str(),
            "original_id": original_id.to_string(),
        });
        let (db, client_id, reference) =
            (self.db.clone(), client.0, client_ref.as_str().to_owned());
        let (outcome, publishing) = self
            .insert_then_dispatch(
                ctx,
                async move {
                    queries::insert_linked(
                        &db,
                        client_id,
                        original_id,
                        &reference,
                        event,
                        |original, linked| build(template, original, linked),
                    )
                    .await
                },
                |outcome| match outcome {
                    LinkedInsert::Created(row) => Some(row),
                    _ => None,
                },
            )
            .await?;
        match (outcome, publishing) {
            (LinkedInsert::Created(row), Some(publishing)) => {
                Ok(self.created(ctx, &row, publishing, guard, wait).await)
            }
            (LinkedInsert::Created(_), None) => {
                unreachable!("a created transaction is dispatched")
            }
            (LinkedInsert::Existing(row), _) => {
                drop(guard);
                self.replay(ctx, client, client_ref, params, *row, wait)
                    .await
            }
            (LinkedInsert::OriginalNotFound, _) => Err(ApiError::NotFound(format!(
                "transaction {original_id} not found"
            ))),
            (LinkedInsert::Refused(error), _) => Err(error),
        }
    }

    async fn qr_cancel(
        &self,
        ctx: &CallContext,
        request: Request<pb::QrCancelRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = QrCancelInput::try_from(request.get_ref())?;
        let params = RequestParams::qr_cancel(&input);
        self.create_linked(
            ctx,
            Mutation {
                client,
                client_ref: &input.client_ref,
                params: &params,
                wait: input.wait,
            },
            input.transaction_id,
            |template, original, linked| {
                check_cancel(original, linked)?;
                let amount = original_amount(original)?;
                linked_transaction(template, original, TransactionKind::QrCancel, amount)
            },
        )
        .await
    }

    async fn qr_refund(
        &self,
        ctx: &CallContext,
        request: Request<pb::QrRefundRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = QrRefundInput::try_from(request.get_ref())?;
        let params = RequestParams::qr_refund(&input);
        let amount = input.amount;
        self.create_linked(
            ctx,
            Mutation {
                client,
                client_ref: &input.client_ref,
                params: &params,
                wait: input.wait,
            },
            input.transaction_id,
            move |template, original, linked| {
                check_refund(original, linked, amount)?;
                linked_transaction(template, original, TransactionKind::QrRefund, amount)
            },
        )
        .await
    }

    async fn pay_in(
        &self,
        ctx: &CallContext,
        request: Request<pb::PayInRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = PayInInput::try_from(request.get_ref())?;
        let params = RequestParams::pay_in(&input);
        let call = Mutation {
            client,
            client_ref: &input.client_ref,
            params: &params,
            wait: input.wait,
        };
        self.create_for_product(
            ctx,
            call,
            &input.product_code,
            ProductKind::PayIn,
            TransactionKind::PayIn,
            |new| {
                new.amount = Some(input.amount);
                // The payer is in `details`; a pay-in has no account of ours
                // to name (the column stays empty, as for a QR payment).
                new.method = input.method.clone();
            },
        )
        .await
    }

    async fn pay_out(
        &self,
        ctx: &CallContext,
        request: Request<pb::PayOutRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = PayOutInput::try_from(request.get_ref())?;
        let params = RequestParams::pay_out(&input);
        let call = Mutation {
            client,
            client_ref: &input.client_ref,
            params: &params,
            wait: input.wait,
        };
        self.create_for_product(
            ctx,
            call,
            &input.product_code,
            ProductKind::PayOut,
            TransactionKind::PayOut,
            |new| {
                new.amount = Some(input.amount);
                new.method = input.method.clone();
                new.account = input.account.clone();
            },
        )
        .await
    }

    async fn purchase(
        &self,
        ctx: &CallContext,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = PurchaseInput::try_from(request.get_ref())?;
        let params = RequestParams::purchase(&input);
        let product = match self
            .products
            .get(input.product_code.as_str())
            .await
            .and_then(|product| {
                product.purchase_kind()?;
                product.purchase_price()?;
                if input.inquiry_id.is_some() && product.kind != ProductKind::PlnPrepaid {
                    return Err(validate::ValidationError::new(
                        "inquiry_id",
                        format!(
                            "product {} has no inquiry: inquiry_id applies to PLN prepaid products only",
                            product.code
                        ),
                    )
                    .into());
                }
                Ok(product)
            }) {
            Ok(product) => product,
            Err(error) => {
                return self
                    .replay_or(ctx, client, &input.client_ref, &params, input.wait, error)
                    .await
            }
        };
        let mut new = self.new_product_transaction(
            client,
            &input.client_ref,
            &params,
            TransactionKind::PrepaidPurchase,
            &product,
        );
        new.account = input.account.clone();
        new.amount = Some(product.purchase_price()?);
        if let Some(inquiry_id) = input.inquiry_id {
            let (inquiry, existing) = queries::inquiry_and_replay(
                &self.db,
                client.0,
                inquiry_id,
                input.client_ref.as_str(),
            )
            .await?;
            if let Some(existing) = existing {
                return self
                    .replay(
                        ctx,
                        client,
                        &input.client_ref,
                        &params,
                        existing,
                        input.wait,
                    )
                    .await;
            }
            let inquiry = inquiry.ok_or_else(|| not_found_inquiry(inquiry_id))?;
            check_inquiry(&inquiry, TransactionKind::PrepaidInquiry)?;
            if inquiry.product_code != product.code || inquiry.account != input.account {
                return Err(ApiError::FailedPrecondition(format!(
                    "inquiry {inquiry_id} was for product {} and account {}, not product {} and account {}",
                    inquiry.product_code, inquiry.account, product.code, input.account
                )));
            }
            new.inquiry_id = Some(inquiry_id);
            new.inquiry_data = inquiry.inquiry_data.clone();
        }
        self.create(ctx, client, &input.client_ref, &params, new, input.wait)
            .await
    }

    async fn inquire(
        &self,
        ctx: &CallContext,
        request: Request<pb::InquireRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = InquireInput::try_from(request.get_ref())?;
        let params = RequestParams::inquire(&input);
        let routed = self
            .products
            .get(input.product_code.as_str())
            .await
            .and_then(|product| {
                let kind = product.inquiry_kind()?;
                input.check_for_product(product.inquiry_fields())?;
                Ok((product, kind))
            });
        let (product, kind) = match routed {
            Ok(found) => found,
            Err(error) => {
                return self
                    .replay_or(ctx, client, &input.client_ref, &params, input.wait, error)
                    .await
            }
        };
        let mut new =
            self.new_product_transaction(client, &input.client_ref, &params, kind, &product);
        new.account = input.account.clone();
        new.account2 = input.account2.clone();
        new.account3 = input.account3.clone();
        new.contact = input.contact.clone();
        self.create(ctx, client, &input.client_ref, &params, new, input.wait)
            .await
    }

    async fn pay_bill(
        &self,
        ctx: &CallContext,
        request: Request<pb::PayBillRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let input = PayBillInput::try_from(request.get_ref())?;
        let params = RequestParams::pay_bill(&input);
        let (inquiry, existing) = queries::inquiry_and_replay(
            &self.db,
            client.0,
            input.inquiry_id,
            input.client_ref.as_str(),
        )
        .await?;
        if let Some(existing) = existing {
            return self
                .replay(
                    ctx,
                    client,
                    &input.client_ref,
                    &params,
                    existing,
                    input.wait,
                )
                .await;
        }
        let inquiry = inquiry.ok_or_else(|| not_found_inquiry(input.inquiry_id))?;
        check_inquiry(&inquiry, TransactionKind::BillInquiry)?;
        // A product an operator took off sale after its inquiry (its biller
        // misbehaving, say) is not paid either.
        self.products.get(&inquiry.product_code).await?;
        let total = inquiry
            .bill
            .as_ref()
            .and_then(bill_from_json)
            .and_then(|bill| bill.total_amount)
            .ok_or_else(|| {
                ApiError::FailedPrecondition(format!(
                    "inquiry {} has no bill total to pay",
                    inquiry.id
                ))
            })?;
        if total.minor != input.amount.minor
            || (!total.currency.is_empty() && total.currency != input.amount.currency.code())
        {
            return Err(ApiError::FailedPrecondition(format!(
                "amount {} does not match the bill total {} {} of inquiry {}",
                input.amount, total.currency, total.minor, inquiry.id
            )));
        }
        let provider = inquiry.provider().ok_or_else(|| {
            ApiError::Internal(format!(
                "inquiry {} has unknown provider {}",
                inquiry.id, inquiry.provider
            ))
        })?;
        let mut new = self.new_transaction(client, &input.client_ref, &params);
        new.kind = TransactionKind::BillPayment;
        new.provider = provider;
        new.product_code = inquiry.product_code;
        new.provider_product_code = inquiry.provider_product_code;
        new.account = inquiry.account;
        new.account2 = inquiry.account2;
        new.account3 = inquiry.account3;
        new.contact = inquiry.contact;
        new.amount = Some(input.amount);
        new.inquiry_id = Some(input.inquiry_id);
        new.inquiry_data = inquiry.inquiry_data;
        self.create(ctx, client, &input.client_ref, &params, new, input.wait)
            .await
    }

    async fn get_transaction(
        &self,
        ctx: &CallContext,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<pb::Transaction, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let key = TransactionKey::try_from(request.get_ref())?;
        let (row, name) = match &key {
            TransactionKey::Id(id) => (
                queries::by_id(&self.db, client.0, *id).await?,
                id.to_string(),
            ),
            TransactionKey::ClientRef(client_ref) => (
                queries::by_client_ref(&self.db, client.0, client_ref.as_str()).await?,
                format!("with client_ref {client_ref}"),
            ),
        };
        let row = row.ok_or_else(|| ApiError::NotFound(format!("transaction {name} not found")))?;
        ctx.record_transaction(row.id);
        Ok(respond(&row))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<pb::ListTransactionsResponse, ApiError> {
        let client = self.auth.authenticate(request.metadata()).await?;
        let query = ListQuery::try_from(request.get_ref())?;
        let (rows, more) = queries::list(&self.db, client.0, &query).await?;
        let next_page_token = match rows.last() {
            Some(last) if more => Cursor {
                created_at: last.created_at,
                id: last.id,
                filters: Some(query.filters()),
            }
            .encode(),
            _ => String::new(),
        };
        Ok(pb::ListTransactionsResponse {
            transactions: rows.iter().map(respond).collect(),
            next_page_token,
        })
    }

    async fn get_balance(
        &self,
        ctx: &CallContext,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<pb::Balance, ApiError> {
        self.auth.authenticate(request.metadata()).await?;
        let provider = validate::provider(&request.get_ref().provider)?;
        if let Some(why) = no_balance_service(provider) {
            return Err(ApiError::Unimplemented(format!(
                "no {provider} balance can be asked for: {why}"
            )));
        }
        let timeout = ctx.within_budget(self.balance_timeout);
        let query = pb::bus::BalanceQuery {
            provider: provider.as_str().to_string(),
        };
        let request = async_nats::client::Request::new()
            .headers(loket_runtime::bus::trace_headers(&ctx.trace))
            .payload(query.encode_to_vec().into())
            .timeout(Some(timeout));
        let answered = self.ask_balance(provider, request).await;
        if let Err(error) = &answered {
            tracing::warn!(%provider, %error, "balance query failed");
        }
        answered
    }

    /// Sends a balance query to `provider`'s connectors and reads the reply.
    async fn ask_balance(
        &self,
        provider: Provider,
        request: async_nats::client::Request,
    ) -> Result<pb::Balance, ApiError> {
        let reply = self
            .nats
            .send_request(subjects::balance_rpc(provider), request)
            .await
            .map_err(|error| {
                use async_nats::RequestErrorKind;
                match error.kind() {
                    RequestErrorKind::NoResponders => ApiError::Unavailable(format!(
                        "no {provider} connector is answering balance queries"
                    )),
                    RequestErrorKind::TimedOut => {
                        ApiError::Unavailable(format!("the {provider} balance query timed out"))
                    }
                    _ => {
                        tracing::warn!(%error, "balance request failed on the bus");
                        ApiError::Unavailable("bus unavailable, try again".into())
                    }
                }
            })?;
        let reply = pb::bus::BalanceReply::decode(reply.payload.as_ref())
            .map_err(|error| ApiError::Internal(format!("undecodable balance reply: {error}")))?;
        if !reply.error.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "{provider} balance unavailable: {}",
                validate::shortened(&reply.error, 200)
            )));
        }
        let balance = reply
            .balance
            .ok_or_else(|| ApiError::Unavailable(format!("{provider} returned no balance")))?;
        Ok(pb::Balance {
            provider: provider.as_str().to_string(),
            balance: Some(balance),
            as_of: reply.as_of,
        })
    }

    async fn watch(
        &self,
        ctx: &CallContext,
        request: Request<pb::WatchTransactionsRequest>,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<pb::Transaction, Status>>, ApiError>
    {
        let credential = self.auth.credential(request.metadata()).await?;
        let client = credential.client;
        let only = validate::watch(request.get_ref())?;
        // Held by the stream's task: freed when the watch ends, whichever way.
        let slot = self.watch_slots.take(client)?;
        // Seen before subscribing: any later gap (a reconnect, a slow
        // consumer) may hide an update from this watch.
        let mut bus_gaps = self.bus_gaps.clone();
        bus_gaps.mark_unchanged();
        let subject = subjects::update(&client.0.to_string());
        // Subscribe first (confirmed by the server), then read the current
        // state: nothing slips between.
        let bus_unavailable = |error: String| {
            tracing::warn!(%error, "watch subscription failed");
            ApiError::Unavailable("bus unavailable, try again".into())
        };
        let mut updates = self
            .nats
            .subscribe(subject)
            .await
            .map_err(|error| bus_unavailable(error.to_string()))?;
        loket_runtime::bus::confirm_subscriptions(&self.nats)
            .await
            .map_err(|error| bus_unavailable(error.to_string()))?;
        let first = match only {
            Some(id) => {
                ctx.record_transaction(id);
                let row = queries::by_id(&self.db, client.0, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("transaction {id} not found")))?;
                // Not yet enriched: admitted as the reconciler publishes it.
                Some(row.to_pb())
            }
            None => None,
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let shutdown = self.shutdown.clone();
        let span = ctx.span.clone();
        let auth = Arc::clone(&self.auth);
        // The key was just checked: the first re-check is one interval away.
        let every = auth.recheck_interval();
        let mut recheck = tokio::time::interval_at(Instant::now() + every, every);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(
            async move {
                let _slot = slot;
                let mut last_sent = waiters::LastSent::default();
                if let Some(mut first) = first {
                    last_sent.admit(&first);
                    explain::enrich(&mut first);
                    if sender.send(Ok(first)).await.is_err() {
                        return;
                    }
                }
                // Why the watch ends, sent as its last message (none when the
                // client left). A drain ends it UNAVAILABLE, as gRPC clients
                // expect of a server going away: watch again, elsewhere or
                // once it is back.
                let closing = loop {
                    tokio::select! {
                        _ = shutdown.wait() => {
                            break Some(Status::unavailable(WATCH_DRAIN_MESSAGE));
                        }
                        _ = sender.closed() => break None,
                        // Updates published while the ingress was off the bus
                        // (or dropped as a slow consumer's) never reach this
                        // subscription: going on would skip them unseen. (An
                        // error here means the connection is gone for good.)
                        _ = bus_gaps.changed() => {
                            tracing::warn!("watch ended: the bus connection may have lost updates");
                            break Some(Status::unavailable(WATCH_GAP_MESSAGE));
                        }
                        // A key disabled while the watch is open (revoked
                        // after a leak) must stop the stream, not only new
                        // calls.
                        _ = recheck.tick() => {
                            if let Err(error) = auth.recheck(&credential).await {
                                tracing::info!(%error, "watch ended: its key no longer authenticates");
                                break Some(to_status(&error));
                            }
                        }
                        message = updates.next() => {
                            let Some(message) = message else {
                                // The bus connection is closed for good.
                                break Some(Status::unavailable(WATCH_GAP_MESSAGE));
                            };
                            // A watch of one transaction skips the client's
                            // other updates by their header, undecoded.
                            if only.is_some_and(|id| {
                                waiters::addressee(&message.subject, message.headers.as_ref())
                                    .map(|(_, transaction)| transaction)
                                    != Some(id)
                            }) {
                                continue;
                            }
                            let mut update = match pb::Transaction::decode(message.payload.as_ref()) {
                                Ok(update) => update,
                                Err(error) => {
                                    tracing::warn!(%error, "undecodable transaction update");
                                    continue;
                                }
                            };
                            if !last_sent.admit(&update) {
                                continue;
                            }
                            explain::enrich(&mut update);
                            // Never wait on a client that does not read: the
                            // subscription behind would overflow and drop
                            // updates unseen. A client this far behind is told
                            // so in the last slot, and the watch ends.
                            if sender.capacity() <= 1 {
                                tracing::warn!("watch fell behind its client; closed");
                                break Some(Status::resource_exhausted(format!(
                                    "this watch fell {} updates behind and is closed: read the current state (ListTransactions) and watch again",
                                    WATCH_BUFFER - 1
                                )));
                            }
                            if sender.try_send(Ok(update)).is_err() {
                                break None;
                            }
                        }
                    }
                };
                // Every `Ok` was sent with a slot to spare: this one fits.
                if let Some(status) = closing {
                    let _ = sender.try_send(Err(status));
                }
                let _ = updates.unsubscribe().await;
            }
            .instrument(span),
        );
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }
}

#[tonic::async_trait]
impl Loket for LoketService {
    async fn purchase(
        &self,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("Purchase", request.metadata());
        let result = self
            .inner
            .purchase(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("Purchase", &ctx, result)
    }

    async fn inquire(
        &self,
        request: Request<pb::InquireRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("Inquire", request.metadata());
        let result = self
            .inner
            .inquire(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("Inquire", &ctx, result)
    }

    async fn pay_bill(
        &self,
        request: Request<pb::PayBillRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("PayBill", request.metadata());
        let result = self
            .inner
            .pay_bill(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("PayBill", &ctx, result)
    }

    async fn qr_pay(
        &self,
        request: Request<pb::QrPayRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("QrPay", request.metadata());
        let result = self
            .inner
            .qr_pay(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("QrPay", &ctx, result)
    }

    async fn qr_query(
        &self,
        request: Request<pb::QrQueryRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("QrQuery", request.metadata());
        let result = self
            .inner
            .qr_query(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("QrQuery", &ctx, result)
    }

    async fn qr_cancel(
        &self,
        request: Request<pb::QrCancelRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("QrCancel", request.metadata());
        let result = self
            .inner
            .qr_cancel(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("QrCancel", &ctx, result)
    }

    async fn qr_refund(
        &self,
        request: Request<pb::QrRefundRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("QrRefund", request.metadata());
        let result = self
            .inner
            .qr_refund(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("QrRefund", &ctx, result)
    }

    async fn pay_in(
        &self,
        request: Request<pb::PayInRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("PayIn", request.metadata());
        let result = self
            .inner
            .pay_in(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("PayIn", &ctx, result)
    }

    async fn pay_out(
        &self,
        request: Request<pb::PayOutRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("PayOut", request.metadata());
        let result = self
            .inner
            .pay_out(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("PayOut", &ctx, result)
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let ctx = CallContext::new("GetBalance", request.metadata());
        let result = self
            .inner
            .get_balance(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("GetBalance", &ctx, result)
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ctx = CallContext::new("GetTransaction", request.metadata());
        let result = self
            .inner
            .get_transaction(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("GetTransaction", &ctx, result)
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let ctx = CallContext::new("ListTransactions", request.metadata());
        let result = self
            .inner
            .list_transactions(request)
            .instrument(ctx.span.clone())
            .await;
        finish("ListTransactions", &ctx, result)
    }

    type WatchTransactionsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::Transaction, Status>>;

    async fn watch_transactions(
        &self,
        request: Request<pb::WatchTransactionsRequest>,
    ) -> Result<Response<Self::WatchTransactionsStream>, Status> {
        let ctx = CallContext::new("WatchTransactions", request.metadata());
        let result = self
            .inner
            .watch(&ctx, request)
            .instrument(ctx.span.clone())
            .await;
        finish("WatchTransactions", &ctx, result)
    }

    async fn explain_code(
        &self,
        request: Request<pb::ExplainCodeRequest>,
    ) -> Result<Response<pb::CodeExplanation>, Status> {
        let ctx = CallContext::new("ExplainCode", request.metadata());
        let result = async {
            self.inner.auth.authenticate(request.metadata()).await?;
            explain::explain_code(request.get_ref())
        }
        .instrument(ctx.span.clone())
        .await;
        finish("ExplainCode", &ctx, result)
    }

    async fn list_codes(
        &self,
        request: Request<pb::ListCodesRequest>,
    ) -> Result<Response<pb::ListCodesResponse>, Status> {
        let ctx = CallContext::new("ListCodes", request.metadata());
        let result = async {
            self.inner.auth.authenticate(request.metadata()).await?;
            explain::list_codes(request.get_ref())
        }
        .instrument(ctx.span.clone())
        .await;
        finish("ListCodes", &ctx, result)
    }
}

/// A transaction this call created: logged and counted under the call's
/// span, and its first command's publish started.
fn accepted(
    row: &TransactionRow,
    span: &tracing::Span,
    dispatcher: &Dispatcher,
    trace: TraceContext,
) -> Publishing {
    span.record("transaction_id", tracing::field::display(row.id));
    let kind = row.kind().map(TransactionKind::as_str).unwrap_or("unknown");
    ::metrics::counter!(metrics::TRANSACTIONS_CREATED, "kind" => kind).increment(1);
    tracing::info!(
        kind,
        provider = %row.provider,
        product = %row.product_code,
        original_id = ?row.original_id,
        "transaction accepted"
    );
    dispatcher.start(row, trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn inquiry_checks_name_the_problem() {
        let mut inquiry =
            crate::idempotency::tests_support::row_of_kind(TransactionKind::BillInquiry);
        inquiry.status = "pending".into();
        let error = check_inquiry(&inquiry, TransactionKind::BillInquiry).unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m.contains("not successful")),
            "{error:?}"
        );
        inquiry.status = "success".into();
        inquiry.expires_at = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
        let error = check_inquiry(&inquiry, TransactionKind::BillInquiry).unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m.contains("expired")),
            "{error:?}"
        );
        inquiry.expires_at = Some(chrono::Utc::now() + chrono::Duration::minutes(10));
        assert!(check_inquiry(&inquiry, TransactionKind::BillInquiry).is_ok());
        let error = check_inquiry(&inquiry, TransactionKind::PrepaidInquiry).unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m.contains("not a PLN prepaid inquiry")),
            "{error:?}"
        );
    }

    fn qr_payment(status: &str, amount: i64) -> TransactionRow {
        let mut row = crate::idempotency::tests_support::row_of_kind(TransactionKind::QrPayment);
        row.status = status.into();
        row.provider = "snapqr".into();
        row.product_code = "QRCPM".into();
        row.account = String::new();
        row.amount_minor = Some(amount);
        row.provider_reference = "0191aaaabbbbccccddddeeeeffff0000".into();
        row.provider_trace = Some("ISSUER-REF-9".into());
        row
    }

    fn linked(kind: TransactionKind, status: &str, amount: i64) -> Linked {
        Linked {
            id: Uuid::now_v7(),
            kind: kind.as_str().into(),
            status: status.into(),
            amount_minor: Some(amount),
        }
    }

    fn precondition(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::FailedPrecondition(message)) => message,
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
    }

    #[test]
    fn refunds_never_exceed_what_was_paid() {
        use loket_protocol::Money;
        let paid = qr_payment("success", 10_000);
        assert!(check_refund(&paid, &[], Money::idr(10_000)).is_ok());
        let earlier = [
            linked(TransactionKind::QrRefund, "success", 4_000),
            linked(TransactionKind::QrRefund, "pending", 3_000),
        ];
        assert!(check_refund(&paid, &earlier, Money::idr(3_000)).is_ok());
        let message = precondition(check_refund(&paid, &earlier, Money::idr(3_001)));
        assert!(
            message.starts_with("refund of IDR 3001 exceeds the refundable IDR 3000"),
            "{message}"
        );
        assert!(message.contains("paid IDR 10000"), "{message}");
        // Not successful (yet, or ever): nothing to refund.
        for status in ["received", "pending", "unknown", "failed", "needs_review"] {
            let message = precondition(check_refund(
                &qr_payment(status, 10_000),
                &[],
                Money::idr(1),
            ));
            assert!(message.contains("not successful"), "{status}: {message}");
        }
        // A live cancel voids the whole payment.
        let message = precondition(check_refund(
            &paid,
            &[linked(TransactionKind::QrCancel, "unknown", 10_000)],
            Money::idr(1),
        ));
        assert!(message.contains("nothing is left to refund"), "{message}");
        // Only QR payments are refunded.
        let mut purchase = paid.clone();
        purchase.kind = "prepaid_purchase".into();
        assert!(precondition(check_refund(&purchase, &[], Money::idr(1)))
            .contains("is not a QR payment"));
    }

    #[test]
    fn a_refund_is_bounded_by_what_the_issuer_took_when_it_took_less() {
        use loket_protocol::Money;
        let mut short = qr_payment("success", 100_000);
        short.provider_amount_minor = Some(10_000);
        short.amount_mismatch = true;
        assert!(check_refund(&short, &[], Money::idr(10_000)).is_ok());
        let message = precondition(check_refund(&short, &[], Money::idr(10_001)));
        assert!(message.contains("paid IDR 10000"), "{message}");
        assert_eq!(original_amount(&short).unwrap(), Money::idr(10_000));
        // Reported more than asked: the refund stays bounded by the ask.
        let mut over = qr_payment("success", 10_000);
        over.provider_amount_minor = Some(50_000);
        assert!(precondition(check_refund(&over, &[], Money::idr(10_001)))
            .contains("exceeds the refundable IDR 10000"));
    }

    #[test]
    fn cancels_need_a_live_payment_without_other_reversals() {
        assert!(check_cancel(&qr_payment("success", 10_000), &[]).is_ok());
        assert!(check_cancel(&qr_payment("unknown", 10_000), &[]).is_ok());
        let message = precondition(check_cancel(&qr_payment("failed", 10_000), &[]));
        assert!(
            message.contains("failed: there is nothing to cancel"),
            "{message}"
        );
        let message = precondition(check_cancel(
            &qr_payment("success", 10_000),
            &[linked(TransactionKind::QrCancel, "pending", 10_000)],
        ));
        assert!(message.contains("already has cancel"), "{message}");
        let message = precondition(check_cancel(
            &qr_payment("success", 10_000),
            &[linked(TransactionKind::QrRefund, "success", 1_000)],
        ));
        assert!(message.contains("refund the rest instead"), "{message}");
    }

    #[test]
    fn a_reversal_carries_the_original_references() {
        let original = qr_payment("success", 10_000);
        let template = NewTransaction {
            id: Uuid::now_v7(),
            client_id: original.client_id,
            client_ref: "refund-1".into(),
            kind: TransactionKind::PrepaidPurchase,
            provider: Provider::OkeBayar,
            product_code: String::new(),
            provider_product_code: String::new(),
            account: String::new(),
            account2: String::new(),
            account3: String::new(),
            contact: String::new(),
            amount: None,
            request_hash: vec![1],
            provider_reference: "ffff".into(),
            inquiry_id: None,
            inquiry_data: None,
            original_id: None,
            method: String::new(),
            details: Some(serde_json::json!({"reason": "damaged"})),
        };
        let new = linked_transaction(
            template,
            &original,
            TransactionKind::QrRefund,
            loket_protocol::Money::idr(2_500),
        )
        .unwrap();
        assert_eq!(new.kind, TransactionKind::QrRefund);
        assert_eq!(new.provider, Provider::SnapQr);
        assert_eq!(new.product_code, "QRCPM");
        assert_eq!(new.original_id, Some(original.id));
        assert_eq!(new.amount, Some(loket_protocol::Money::idr(2_500)));
        assert_eq!(new.provider_reference, "ffff", "its own reference");
        assert_eq!(
            new.details,
            Some(serde_json::json!({
                "reason": "damaged",
                "original_reference": "0191aaaabbbbccccddddeeeeffff0000",
                "original_provider_trace": "ISSUER-REF-9",
            }))
        );
    }
}
