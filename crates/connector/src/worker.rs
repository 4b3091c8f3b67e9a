//! The connector worker loop, the same for every provider.
//!
//! Replicas of one provider's connector share one durable pull consumer
//! (`connector-<provider>`), so each command goes to one replica at a time.
//! For each command the worker:
//!
//! 1. decodes and validates it (a poison message is terminated, not retried);
//! 2. for a money-moving operation, records the send in the [`SendJournal`]
//!    (Postgres) before anything is sent; if it was recorded before, or the
//!    command is redelivered (`delivered > 1`) or re-dispatched
//!    (`first_dispatch == false`), asks the provider for the status first and
//!    sends the operation only if the provider has no record of our reference
//!    (money-safety rule 2). A journal that cannot be written means no send:
//!    the command is left for redelivery. A command about a transaction
//!    created longer ago than the send horizon
//!    ([`loket_protocol::horizon`]) also asks first, and is not sent even
//!    when the provider has no record: its journal entry may have been
//!    pruned. After "no record", it sends again only once the journal's last
//!    send is older than the provider's [`Connector::resend_grace`], and never
//!    after the provider definitely refused it (a refusal often leaves no
//!    record: [`SendJournal::mark_refused`]); and a
//!    status check that itself sends again (a SNAP refund's) goes out at most
//!    once per its interval ([`Connector::status_check_resends`]);
//! 3. refuses to send a money-moving request once the message's ack deadline
//!    has passed (another replica may own it by now);
//! 4. publishes the result event durably (retrying while JetStream does
//!    not store it, the command kept its own meanwhile), then acks the
//!    command. The
//!    result's id is the command's message id, with `:d<n>` added on the
//!    n-th delivery: a redelivered command's check may have learned more
//!    than the first delivery's result, which must not be de-duplicated
//!    away, while retries of one publish still collapse.
//!
//! A crash anywhere before the ack means redelivery, and redelivery means a
//! status check: never a second money-moving request. That holds even when
//! nats-server itself restarts and forgets a delivery: the journal remembers.

use async_nats::jetstream::{self, consumer::pull, AckKind};
use chrono::Utc;
use futures::{FutureExt as _, StreamExt};
use loket_protocol::pb::bus;
use loket_protocol::{horizon, subjects, Operation, Outcome};
use loket_runtime::admin::Readiness;
use loket_runtime::bus as lbus;
use loket_runtime::telemetry;
use loket_runtime::{Shutdown, Vital};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::journal::{Recorded, SendJournal};
use crate::{Command, Connector, Report};

pub mod metric;

/// Test-only fault injection, named in configuration (`failpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failpoint {
    /// After a money-moving request got its reply and before the result is
    /// published: abort the process (what `kill -9` does).
    AbortAfterSend,
    /// Same place, but hang forever without acking (for in-process tests
    /// that then abort the task).
    HangAfterSend,
    /// After the result is published: hang without acking, as if the ack
    /// were lost, so the command is redelivered.
    HangAfterResult,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkerSettings {
    /// Commands processed at once by this replica.
    pub concurrency: usize,
    /// JetStream ack wait. Must exceed the provider HTTP timeout with margin:
    /// a command not acked by then is redelivered (and then starts with a
    /// status check).
    pub ack_wait_ms: u64,
    /// How often the provider's connectivity probe runs (OkeBayar: echo);
    /// 0 turns it off. Providers without a probe ignore it.
    pub probe_interval_ms: u64,
    pub failpoint: Option<Failpoint>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 64,
            ack_wait_ms: 120_000,
            probe_interval_ms: 60_000,
            failpoint: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Bus(#[from] lbus::BusError),
    #[error("consumer setup failed: {0}")]
    Consumer(String),
    #[error("the command stream ended before the worker was asked to stop")]
    StreamEnded,
    #[error(transparent)]
    VitalTask(#[from] loket_runtime::vital::VitalTaskFailed),
}

/// Runs the worker until `shutdown`, then drains in-flight commands.
pub async fn run<C: Connector>(
    connector: Arc<C>,
    settings: WorkerSettings,
    nats: async_nats::Client,
    journal: SendJournal,
    vital: Vital,
    shutdown: Shutdown,
    readiness: Readiness,
) -> Result<(), WorkerError> {
    let provider = connector.provider();
    let js = jetstream::new(nats.clone());
    lbus::ensure_streams(&js).await?;
    let stream = js
        .get_stream(subjects::COMMAND_STREAM)
        .await
        .map_err(|e| WorkerError::Consumer(e.to_string()))?;
    let consumer_name = subjects::connector_consumer(provider);
    let ack_wait = Duration::from_millis(settings.ack_wait_ms);
    let consumer = lbus::durable_pull_consumer(
        &stream,
        pull::Config {
            durable_name: Some(consumer_name.clone()),
            filter_subject: subjects::commands_of(provider),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: (settings.concurrency * 4).max(64) as i64,
            ..Default::default()
        },
    )
    .await?;

    // Subscribed before readiness turns true, so a ready connector answers
    // balance queries.
    let balance_requests = nats
        .queue_subscribe(
            subjects::balance_rpc(provider),
            subjects::connector_consumer(provider),
        )
        .await
        .map_err(|e| WorkerError::Consumer(format!("balance subscription: {e}")))?;
    lbus::confirm_subscriptions(&nats)
        .await
        .map_err(|e| WorkerError::Consumer(format!("balance subscription: {e}")))?;
    // Every task this worker starts belongs to it: when the worker's own
    // future is dropped (its process killed, or its task aborted in a test,
    // as `kill -9` would), they end with it, sends in flight included.
    let mut background = JoinSet::new();
    background.spawn(vital.guard(
        "balance server",
        serve_balance(
            connector.clone(),
            nats.clone(),
            balance_requests,
            shutdown.clone(),
        ),
    ));
    if settings.probe_interval_ms > 0 {
        background.spawn(vital.guard(
            "connectivity probe",
            probe_provider(
                connector.clone(),
                Duration::from_millis(settings.probe_interval_ms),
                shutdown.clone(),
            ),
        ));
    }
    let mut handlers = JoinSet::new();

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.concurrency.max(1))
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| WorkerError::Consumer(e.to_string()))?;
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let settings = Arc::new(settings);
    readiness.set(true);
    tracing::info!(%provider, consumer = %consumer_name, "connector worker started");

    // Messages arrive in batches and may wait in the pull buffer for a
    // permit while the server's ack timer runs: each is taken as handed out
    // no earlier than when the buffer was last found empty.
    let mut buffer_emptied = Instant::now();
    let mut stream_ended = false;
    loop {
        while handlers.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (message, handed_out_after) = match messages.next().now_or_never() {
            Some(buffered) => (buffered, buffer_emptied),
            None => {
                buffer_emptied = Instant::now();
                let next = tokio::select! {
                    _ = shutdown.wait() => break,
                    next = messages.next() => next,
                };
                (next, Instant::now())
            }
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(%error, "pull error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => {
                stream_ended = true;
                break;
            }
        };
        let connector = connector.clone();
        let js = js.clone();
        let settings = settings.clone();
        let journal = journal.clone();
        handlers.spawn(async move {
            handle(
                &*connector,
                &js,
                &journal,
                &settings,
                message,
                handed_out_after,
            )
            .await;
            drop(permit);
        });
    }

    readiness.set(false);
    // Drain: commands received but not started go back for another replica
    // at once; in-flight ones finish (each acks or is left for redelivery).
    let handed_back = lbus::hand_back_unstarted(&mut messages).await;
    drop(messages);
    tracing::info!(%provider, handed_back, "draining: unstarted commands handed back");
    let in_flight = async { while handlers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .is_err()
    {
        tracing::warn!(%provider, "commands still in flight after 30 s; they will be redelivered");
    }
    background.abort_all();
    tracing::info!(%provider, "connector worker stopped");
    if stream_ended && !shutdown.is_triggered() {
        return Err(WorkerError::StreamEnded);
    }
    vital.outcome().map_err(WorkerError::from)
}

async fn handle<C: Connector>(
    connector: &C,
    js: &jetstream::Context,
    journal: &SendJournal,
    settings: &WorkerSettings,
    message: jetstream::Message,
    handed_out_after: Instant,
) {
    let received = Instant::now();
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let delivery = Delivery {
        count: delivered,
        started: received,
        handed_out_after,
    };
    let event_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
        .or_else(|| {
            message
                .info()
                .ok()
                .map(|info| format!("seq:{}", info.stream_sequence))
        })
        .unwrap_or_default();

    let command = match bus::Command::decode(message.payload.clone())
        .map_err(|e| crate::CommandError::Decode(e.to_string()))
        .and_then(Command::try_from)
    {
        Ok(command) => command,
        Err(error) => {
            metrics::counter!(metric::POISON).increment(1);
            tracing::error!(%error, subject = %message.subject, "poison command terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    // A redelivered copy reports what its own status check learned, which
    // may be newer than the first delivery's result: its result gets an id
    // of its own, or JetStream would drop it as a duplicate of that one.
    let event_id = if delivered > 1 {
        format!("{event_id}:d{delivered}")
    } else {
        event_id
    };
    let span = tracing::info_span!(
        "command",
        transaction_id = %command.transaction_id,
        trace_id = tracing::field::Empty,
        operation = %command.operation,
        delivered,
    );
    let trace = telemetry::join(&span, lbus::trace_of(&message));
    async move {
        // Keep the message ours while the provider call runs: a progress
        // ack every third of the ack wait, polled in this task next to the
        // call. (The first tick is one period away: a timer due at once
        // would wake the runtime's driver for every command.)
        // Counted from when the server may have handed the message out: one
        // that waited in the pull buffer that long gets its first at once.
        let every = Duration::from_millis(settings.ack_wait_ms / 3).max(Duration::from_millis(200));
        let mut keep_ours = std::pin::pin!(async {
            let first = tokio::time::Instant::from_std(handed_out_after) + every;
            let mut ticker = tokio::time::interval_at(first, every);
            loop {
                ticker.tick().await;
                if message.ack_with(AckKind::Progress).await.is_err() {
                    break;
                }
            }
            std::future::pending::<std::convert::Infallible>().await
        });
        let decided = tokio::select! {
            biased;
            decided = decide_and_call(connector, journal, settings, &command, delivery) => decided,
            never = &mut keep_ours => match never {},
        };
        let (report, first_send) = match decided {
            Decided::Report { report, first_send } => (*report, first_send),
            // Not sent: the ack deadline nearly passed (the message may be
            // another replica's by now) or the send could not be recorded.
            // It comes back after the ack wait, with a status check first.
            Decided::Abandon => return,
            Decided::Later(after) => {
                if let Err(error) = message.ack_with(AckKind::Nak(Some(after))).await {
                    tracing::warn!(%error, "could not hand the command back; it returns after the ack wait");
                }
                return;
            }
        };
        if command.operation.moves_money() {
            failpoint_after_send(settings.failpoint).await;
        }
        metrics::counter!(metric::COMMANDS, "provider" => command.provider.as_str(), "operation" => command.operation.as_str(), "outcome" => report.outcome.as_str()).increment(1);
        tracing::info!(outcome = %report.outcome, code = report.provider_code.as_deref().unwrap_or(""), "provider answered");

        let operation = if command.operation == Operation::StatusCheck {
            command.original_operation
        } else {
            command.operation
        };
        // A money-moving command's result goes under the command's own id
        // only when it answers the transaction's first send. Any other
        // handling (its status check alone, or a send again after the
        // provider found no record of the first) may learn something newer
        // than, or contrary to, an earlier handling's result under that id,
        // as may a copy that resurfaced as a first delivery (a restarted
        // nats-server hands out a handled command as new, and then counts
        // its deliveries from one again): it gets an id of its own, or
        // JetStream and the reconciler would drop it as a duplicate, and a
        // success after a refusal would never reach review.
        let event_id = if command.operation.moves_money() && !(report.sent && first_send) {
            format!("{event_id}:c{}", uuid::Uuid::now_v7().simple())
        } else {
            event_id
        };
        let event = report.into_event(event_id.clone(), command.transaction_id.clone(), command.provider.as_str(), operation);
        let headers = lbus::headers(&format!("res:{event_id}"), &trace, &command.transaction_id);
        let subject = subjects::result(command.provider);
        // Until JetStream stores it, the command kept ours: a redelivery's
        // status check could not rebuild what only this answer carried (a
        // pay-in's QR string, a refusal's reason). At shutdown the drain
        // gives up on it, and the command is redelivered.
        tokio::select! {
            biased;
            () = lbus::publish_durable_until_stored(js, subject, headers, event.encode_to_vec()) => {}
            never = &mut keep_ours => match never {},
        }
        if settings.failpoint == Some(Failpoint::HangAfterResult) {
            tracing::warn!("failpoint hang_after_result: hanging without acking");
            std::future::pending::<()>().await;
        }
        // A plain ack (no round trip): the result is durable, so a lost ack
        // only causes a redelivery, which starts with a status check and
        // yields a de-duplicated result.
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, "ack failed after publishing the result");
        }
        metrics::histogram!(metric::HANDLE_SECONDS).record(received.elapsed().as_secs_f64());
    }
    .instrument(span)
    .await
}

/// What becomes of a command.
#[derive(Debug)]
enum Decided {
    /// Publish this report, then ack (boxed: a report is large, the other
    /// decisions are not). `first_send`: the report answers the
    /// transaction's first send (the journal had no earlier one).
    Report {
        report: Box<Report>,
        first_send: bool,
    },
    /// Neither publish nor ack: unsent, it comes back after the ack wait,
    /// with a status check first.
    Abandon,
    /// Unsent on purpose: an earlier send may still be on its way. Handed
    /// back to come again after this long, when a status check will either
    /// find that send or leave this one free to go.
    Later(Duration),
}

impl Decided {
    /// Publish `report`, which answers no first send.
    fn answered(report: Report) -> Decided {
        Decided::Report {
            report: Box::new(report),
            first_send: false,
        }
    }
}

/// What the worker knows of a command's delivery.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// JetStream's delivery count.
    count: i64,
    /// When its handling started.
    started: Instant,
    /// The server handed it out no earlier than this (it may have waited in
    /// the pull buffer since, its ack timer running).
    handed_out_after: Instant,
}

impl Delivery {
    /// Whether it waited in the buffer so long that its ack deadline may
    /// have passed: the server may have handed it to another worker too.
    fn held_past_the_ack_deadline(&self, ack_wait: Duration) -> bool {
        self.started - self.handed_out_after > surely_ours(ack_wait)
    }
}

/// How long after the server handed a message out (or after its last
/// progress ack) it is surely still this worker's: most of the ack wait,
/// leaving room for clocks and a slow ack.
fn surely_ours(ack_wait: Duration) -> Duration {
    ack_wait.mul_f64(0.8)
}

async fn decide_and_call<C: Connector>(
    connector: &C,
    journal: &SendJournal,
    settings: &WorkerSettings,
    command: &Command,
    delivery: Delivery,
) -> Decided {
    if command.operation == Operation::StatusCheck {
        let mut report = status_check(connector, journal, command).await;
        if report.not_found {
            hold_back_not_found(connector, journal, command, &mut report).await;
        }
        return Decided::answered(report);
    }
    if !command.operation.moves_money() {
        return Decided::answered(connector.execute(command).await);
    }
    // Taken before each journal write that dates a send: from then on other
    // workers treat a request as possibly on its way, for `longest_send`.
    let mut journal_recorded = Instant::now();
    let recorded = match journal.record(&command.transaction_id).await {
        Ok(recorded) => recorded,
        Err(error) => {
            tracing::error!(%error, "send not recorded, so not sent; command left for redelivery");
            return Decided::Abandon;
        }
    };
    let past_horizon = !horizon::may_send(command.transaction_created_at, Utc::now());
    let check_first = if recorded == Recorded::Settled {
        Some(metric::check_first::ALREADY_SETTLED)
    } else if past_horizon {
        Some(metric::check_first::PAST_HORIZON)
    } else if delivery.count > 1 {
        Some(metric::check_first::REDELIVERED)
    } else if delivery.held_past_the_ack_deadline(Duration::from_millis(settings.ack_wait_ms)) {
        Some(metric::check_first::HELD_PAST_ACK_DEADLINE)
    } else if !command.first_dispatch {
        Some(metric::check_first::RE_DISPATCHED)
    } else if recorded == Recorded::Before {
        Some(metric::check_first::ALREADY_RECORDED)
    } else {
        None
    };
    let mut exchanges = Vec::new();
    if let Some(reason) = check_first {
        metrics::counter!(metric::CHECK_FIRST, "provider" => command.provider.as_str(), "reason" => reason)
            .increment(1);
        tracing::info!(
            reason,
            "money-moving command that may have been sent before: status check first"
        );
        let check = status_check(connector, journal, &command.as_status_check()).await;
        let never_sent = recorded.is_first() && !past_horizon;
        if never_sent && !check.not_found && check.outcome == Outcome::Unknown {
            // The check could not tell (provider fault, timeout), but the
            // journal can: no send was ever allowed for this transaction, so
            // the request never left. Waiting would only leave it unsent, and
            // status checks alone would end it failed for "no record".
            tracing::info!(
                "status check inconclusive, and the journal shows no earlier send: sending"
            );
        } else if !check.not_found {
            return Decided::answered(check);
        }
        if recorded == Recorded::Settled {
            tracing::warn!(
                "provider has no record of our reference, and the transaction is settled: not sending"
            );
            return Decided::answered(check);
        }
        if past_horizon {
            // The journal may have been pruned, so its silence proves
            // nothing: the provider's "no record" stands as the answer.
            tracing::warn!(
                created_at = ?command.transaction_created_at,
                "provider has no record of our reference, and the transaction is past the send horizon: not sending"
            );
            return Decided::answered(check);
        }
        if recorded == Recorded::Before {
            // Never while the last send may still be on its way, whatever
            // the provider's own lag.
            let grace = in_flight_window(connector);
            journal_recorded = Instant::now();
            match journal.renew_if_older(&command.transaction_id, grace).await {
                Ok(true) => {}
                Ok(false) if refused_before(journal, &command.transaction_id).await => {
                    // The provider answered the last send with a refusal,
                    // whose result this command's earlier delivery never
                    // published (a crash, the bus down): nothing of it is on
                    // its way, and the provider's "no record" is the answer.
                    // Held back, it would come back every grace until the
                    // review limit, the transaction stuck `received`.
                    tracing::warn!(
                        "provider has no record of our reference, and refused our earlier send of it: reporting no record"
                    );
                    return Decided::answered(check);
                }
                Ok(false) => {
                    tracing::warn!(
                        grace_ms = grace.as_millis() as u64,
                        "provider has no record of our reference yet, but we sent it less than the resend grace ago (or it has settled since, or the provider refused it): not sending now; the command comes back after the grace"
                    );
                    return Decided::Later(grace);
                }
                Err(error) => {
                    tracing::error!(%error, "resend not recorded, so not sent; command left for redelivery");
                    return Decided::Abandon;
                }
            }
        }
        if check.not_found {
            tracing::info!("provider has no record of our reference; sending the original request");
        }
        exchanges = check.exchanges;
    }
    // Rule: never send once the ack deadline may have passed.
    let safe_window = surely_ours(Duration::from_millis(settings.ack_wait_ms));
    if delivery.started.elapsed() > safe_window {
        tracing::warn!("ack deadline nearly passed before sending; abandoning to the redelivery");
        return Decided::Abandon;
    }
    if let (Some(_), Recorded::First { at }) = (check_first, recorded) {
        // Recorded before the check, which may have taken a while: the
        // journal keeps when the request leaves, which is now, unless
        // another worker sent it again meanwhile or it has settled.
        journal_recorded = Instant::now();
        match journal.touch(&command.transaction_id, at).await {
            Ok(true) => {}
            Ok(false) => {
                let window = in_flight_window(connector);
                tracing::warn!(
                    "since this worker recorded its send, another sent it or the transaction settled: not sending; the command comes back once no send can be in flight"
                );
                return Decided::Later(window);
            }
            Err(error) => {
                tracing::error!(%error, "send time not renewed, so not sent; command left for redelivery");
                return Decided::Abandon;
            }
        }
    }
    if journal_recorded.elapsed() > SEND_START_MARGIN {
        // The journal dates the send before its statement ran; other workers
        // count the request's time on its way from there.
        let window = in_flight_window(connector);
        tracing::warn!(
            margin_ms = SEND_START_MARGIN.as_millis() as u64,
            "the send journal took longer than the send margin to record this send: not sending now; the command comes back once no send can be in flight"
        );
        return Decided::Later(window);
    }
    let sending = Command {
        first_send: recorded.is_first(),
        journal_recorded: Some(journal_recorded),
        ..command.clone()
    };
    let mut report = connector.execute(&sending).await;
    report.sent = !report.never_left;
    report.exchanges.splice(0..0, exchanges);
    if report.never_left && sending.first_send && report.outcome == Outcome::Unknown {
        // Nothing of it reached the provider (a connection refused, no
        // access token), and the journal holds no earlier send: no request
        // for this transaction was ever anywhere, so it failed, and the
        // journal's refusal mark below keeps it from leaving later. Left
        // unknown, only status checks would follow, and nothing would send
        // it: a QR cancel's check reads the payment, still in progress, so
        // the cancel would stay unknown until the payment settled and then
        // fail, never having been asked. A send again of an earlier one
        // that never left stays unknown: that earlier one may have arrived.
        tracing::warn!("the request never left, and no earlier send exists: failed");
        report.outcome = Outcome::Failed;
        crate::report::push_detail(
            &mut report.detail,
            "not sent: nothing reached the provider, and no earlier request was ever sent",
        );
    }
    if !sending.first_send && report.outcome == Outcome::Failed {
        // Sent again after the provider's check found no record of an
        // earlier send. It may have taken that one since, and refuse this
        // copy because of it (a duplicate it reads as inconsistent, a QR
        // already used, the funds the first took): the refusal decides
        // nothing, and a status check will tell.
        report.outcome = Outcome::Unknown;
        crate::report::push_detail(
            &mut report.detail,
            "refused when sent again: the earlier send may have been taken, so not failed",
        );
        // The provider's id of this refused copy names the copy, not the
        // transaction: as its trace, every later status check would ask
        // about the refusal (OkeBayar by `tracecode`, SNAP by
        // `originalReferenceNo`) and take it for the transaction's fate.
        if let Some(copy) = report.provider_trace.take() {
            crate::report::push_detail(
                &mut report.detail,
                &format!("the refused copy's provider reference: {copy}"),
            );
        }
    }
    if report.outcome == Outcome::Failed {
        // A definite refusal often leaves no record at the provider: were
        // this command redelivered before the reconciler applied the
        // refusal, its status check would find none, and the request would
        // go again (a pay-out refused for lack of balance, accepted once
        // the balance is topped up). The journal forbids that from now on,
        // so the mark is written before the refusal is reported, however
        // long the database takes to take it (the command stays ours
        // meanwhile, by its progress acks).
        if let Err(error) = journal
            .mark_refused_until_written(&command.transaction_id)
            .await
        {
            tracing::error!(%error, "the provider's refusal could not be marked in the send journal; a redelivery finding no record could send again");
        }
    }
    if report.outcome == Outcome::Unknown && report.detail.is_empty() {
        report.detail = "outcome unknown; a status check will resolve it".into();
    }
    Decided::Report {
        report: Box::new(report),
        first_send: sending.first_send,
    }
}

/// How long after its journal time a request must leave, at most: the
/// journal dates a send when its statement starts, and the request leaves
/// once it has returned. A send that could not leave within this is not
/// made (the command comes back); other workers count
/// [`in_flight_window`] from the journal time, which includes it.
pub const SEND_START_MARGIN: Duration = Duration::from_secs(2);

/// How long after its journal time a send may still be on its way, or not
/// yet visible at the provider: within it the worker never sends again, and
/// a status check's "no record" proves nothing.
fn in_flight_window<C: Connector>(connector: &C) -> Duration {
    connector.resend_grace().max(connector.longest_send()) + SEND_START_MARGIN
}

/// A status check found no record of the transaction: when the journal
/// shows a send less than the provider's grace or the longest send ago, that
/// request may still be on its way (or not yet visible), so "no record" is
/// not reported; the outcome stays unknown and a later check will tell.
/// Without this, a check racing a re-dispatched send could end the
/// transaction failed while its request was reaching the provider.
async fn hold_back_not_found<C: Connector>(
    connector: &C,
    journal: &SendJournal,
    command: &Command,
    report: &mut Report,
) {
    let window = in_flight_window(connector);
    let note = match journal.sent_within(&command.transaction_id, window).await {
        Ok(false) => return,
        Ok(true) => format!(
            "no record at the provider yet, but a send was recorded less than {} ms ago and may still be on its way",
            window.as_millis()
        ),
        Err(error) => {
            tracing::error!(%error, "send journal unavailable: a status check's \"no record\" is not reported");
            format!("no record at the provider, but the send journal could not be read ({error})")
        }
    };
    tracing::info!(%note, "status check: no record held back");
    report.not_found = false;
    report.add_detail(&note);
}

/// Whether the journal holds the provider's refusal of a send of
/// `transaction_id`; false when it cannot be read (the command then comes
/// back, as for a send too recent to repeat).
async fn refused_before(journal: &SendJournal, transaction_id: &str) -> bool {
    journal.refused(transaction_id).await.unwrap_or_else(|error| {
        tracing::error!(%error, "send journal unavailable: whether the provider refused the earlier send is not known");
        false
    })
}

/// A status check. One that sends the money-moving request again
/// ([`Connector::status_check_resends`]) goes to the provider only when the
/// journal's last send is older than its interval, renewing it in the same
/// statement; otherwise the outcome stays unknown and nothing is sent.
async fn status_check<C: Connector>(
    connector: &C,
    journal: &SendJournal,
    command: &Command,
) -> Report {
    let Some(interval) = connector.status_check_resends(command) else {
        return connector.check_status(command).await;
    };
    let journal_recorded = Instant::now();
    match journal
        .renew_if_older(&command.transaction_id, interval)
        .await
    {
        Ok(true) if journal_recorded.elapsed() > SEND_START_MARGIN => {
            tracing::warn!("the send journal took longer than the send margin to renew: the status check that would send again is not made now");
            Report::unknown(
                "not sent again: the send journal was slow to record it; a later status check will",
            )
        }
        Ok(true) => {
            let resending = Command {
                journal_recorded: Some(journal_recorded),
                ..command.clone()
            };
            connector.check_status(&resending).await
        }
        Ok(false) => {
            tracing::info!(
                interval_ms = interval.as_millis() as u64,
                "this status check would send the request again, and the last send is more recent than the interval: not now"
            );
            Report::unknown(format!(
                "not sent again: the last send was less than {} ms ago (or none is recorded); a later status check will",
                interval.as_millis()
            ))
        }
        Err(error) => {
            tracing::error!(%error, "send journal unavailable: the status check that would send again is not made");
            Report::unknown("send journal unavailable: not sent again")
        }
    }
}

/// Test-only fault injection between "the provider answered" and "the
/// result is published": the window in which a crash must not lead to a
/// second money-moving request.
async fn failpoint_after_send(failpoint: Option<Failpoint>) {
    match failpoint {
        Some(Failpoint::AbortAfterSend) => {
            tracing::warn!("failpoint abort_after_send: aborting the process");
            std::process::abort();
        }
        Some(Failpoint::HangAfterSend) => {
            tracing::warn!("failpoint hang_after_send: hanging without publishing or acking");
            std::future::pending::<()>().await;
        }
        Some(Failpoint::HangAfterResult) | None => {}
    }
}

/// Answers `loket.rpc.<provider>.balance` requests (core NATS, queue group).
async fn serve_balance<C: Connector>(
    connector: Arc<C>,
    nats: async_nats::Client,
    mut requests: async_nats::Subscriber,
    shutdown: Shutdown,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.wait() => return,
            request = requests.next() => match request { Some(r) => r, None => return },
        };
        let Some(reply_to) = request.reply.clone() else {
            continue;
        };
        let span = tracing::info_span!("balance", trace_id = tracing::field::Empty);
        telemetry::join(&span, lbus::trace_of(&request));
        async {
            let reply = match connector.balance().await {
                Ok(balance) => bus::BalanceReply {
                    balance: Some(balance.into()),
                    error: String::new(),
                    as_of: Some(loket_protocol::conversions::timestamp(chrono::Utc::now())),
                },
                Err(error) => {
                    tracing::warn!(%error, "provider balance query failed");
                    bus::BalanceReply {
                        balance: None,
                        error: error.to_string(),
                        as_of: None,
                    }
                }
            };
            if let Err(error) = nats.publish(reply_to, reply.encode_to_vec().into()).await {
                tracing::warn!(%error, "balance reply not sent");
            }
        }
        .instrument(span)
        .await;
    }
}

/// Runs the provider's connectivity probe every `every` until `shutdown` (a
/// provider without one only waits for it). The gauge says whether the
/// provider answered the last probe; a change either way is logged once, so
/// an operator sees an outage begin and end without waiting for traffic.
async fn probe_provider<C: Connector>(connector: Arc<C>, every: Duration, shutdown: Shutdown) {
    let provider = connector.provider();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable: Option<bool> = None;
    loop {
        let probed = tokio::select! {
            _ = shutdown.wait() => return,
            probed = async {
                ticker.tick().await;
                connector.probe().await
            } => probed,
        };
        let Some(probed) = probed else {
            return shutdown.wait().await;
        };
        if reachable.is_none() {
            metric::register_probes_at_zero(provider);
        }
        let now = probed.is_ok();
        metrics::gauge!(metric::PROVIDER_REACHABLE, "provider" => provider.as_str()).set(if now {
            1.0
        } else {
            0.0
        });
        metrics::counter!(metric::PROBES, "provider" => provider.as_str(), "result" => if now { metric::PROBE_OK } else { metric::PROBE_FAILED })
            .increment(1);
        match (probed, reachable) {
            (Err(error), None | Some(true)) => {
                tracing::warn!(%provider, %error, "provider unreachable: the connectivity probe failed")
            }
            (Ok(()), None) => tracing::info!(%provider, "provider reachable"),
            (Ok(()), Some(false)) => tracing::info!(%provider, "provider reachable again"),
            _ => {}
        }
        reachable = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loket_protocol::pb::bus;
    use loket_runtime::{db, Secret};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A provider for the worker's decisions. Its status check finds our
    /// reference (success) or has no record of it; `check_resends` makes the
    /// check one that sends again (SNAP refunds). It counts the requests
    /// that reach it.
    struct FakeProvider {
        found: bool,
        /// Its status check cannot tell (overrides `found`).
        inconclusive: bool,
        grace: Duration,
        longest_send: Duration,
        check_resends: Option<Duration>,
        /// How long its status check takes.
        check_takes: Duration,
        /// What it answers a money-moving request.
        answers: Outcome,
        /// Its money-moving requests never reach it (a connection refused).
        unreachable: bool,
        sent: AtomicUsize,
        /// Sends marked as the transaction's first ([`Command::first_send`]).
        first_sends: AtomicUsize,
        checks: AtomicUsize,
        /// [`Command::journal_recorded`] of every request that reached it.
        journal_times: std::sync::Mutex<Vec<Option<Instant>>>,
    }

    impl FakeProvider {
        fn new(found: bool, grace: Duration, check_resends: Option<Duration>) -> Self {
            FakeProvider {
                found,
                inconclusive: false,
                grace,
                longest_send: Duration::ZERO,
                check_resends,
                check_takes: Duration::ZERO,
                answers: Outcome::Pending,
                unreachable: false,
                sent: AtomicUsize::new(0),
                first_sends: AtomicUsize::new(0),
                checks: AtomicUsize::new(0),
                journal_times: Default::default(),
            }
        }

        /// One whose status checks cannot tell (a 5xx, a timeout).
        fn inconclusive(mut self) -> Self {
            self.inconclusive = true;
            self
        }

        /// One whose requests may take up to `longest_send`.
        fn sending_for(mut self, longest_send: Duration) -> Self {
            self.longest_send = longest_send;
            self
        }

        /// One that refuses every money-moving request (a definite failure).
        fn refusing(mut self) -> Self {
            self.answers = Outcome::Failed;
            self
        }

        /// One whose money-moving requests never leave (its port refuses
        /// connections); its status checks still answer.
        fn unreachable(mut self) -> Self {
            self.unreachable = true;
            self
        }

        /// One whose status checks take `check_takes`.
        fn checking_for(mut self, check_takes: Duration) -> Self {
            self.check_takes = check_takes;
            self
        }

        /// When the journal dated the last request that reached it.
        fn last_journal_time(&self) -> Option<Instant> {
            *self
                .journal_times
                .lock()
                .unwrap()
                .last()
                .expect("a request")
        }

        /// Requests that reached it: (money-moving sends, status checks).
        fn requests(&self) -> (usize, usize) {
            (
                self.sent.load(Ordering::SeqCst),
                self.checks.load(Ordering::SeqCst),
            )
        }
    }

    impl Connector for FakeProvider {
        fn provider(&self) -> loket_protocol::Provider {
            loket_protocol::Provider::Smilepayz
        }
        async fn execute(&self, command: &Command) -> Report {
            if self.unreachable {
                return Report::not_sent("connection refused");
            }
            let sent = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
            self.journal_times
                .lock()
                .unwrap()
                .push(command.journal_recorded);
            if command.first_send {
                self.first_sends.fetch_add(1, Ordering::SeqCst);
            }
            let mut report = Report::new(self.answers);
            report.provider_trace = Some(format!("provider-ref-{sent}"));
            report
        }
        async fn check_status(&self, command: &Command) -> Report {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.journal_times
                .lock()
                .unwrap()
                .push(command.journal_recorded);
            tokio::time::sleep(self.check_takes).await;
            if self.inconclusive {
                return Report::unknown("HTTP 503");
            }
            if self.found {
                return Report::new(Outcome::Success);
            }
            let mut report = Report::unknown("");
            report.not_found = true;
            report
        }
        fn longest_send(&self) -> Duration {
            self.longest_send
        }
        fn resend_grace(&self) -> Duration {
            self.grace
        }
        fn status_check_resends(&self, _command: &Command) -> Option<Duration> {
            self.check_resends
        }
        async fn balance(&self) -> Result<loket_protocol::Money, crate::ConnectorError> {
            Err(crate::ConnectorError::Unavailable(
                "not in this test".into(),
            ))
        }
    }

    /// What the worker decides for `command` on its `delivered`-th delivery.
    async fn decision(
        connector: &FakeProvider,
        journal: &SendJournal,
        command: &Command,
        delivered: i64,
    ) -> Decided {
        let now = Instant::now();
        let delivery = Delivery {
            count: delivered,
            started: now,
            handed_out_after: now,
        };
        decide_and_call(
            connector,
            journal,
            &WorkerSettings::default(),
            command,
            delivery,
        )
        .await
    }

    /// The report the worker publishes for `command` (a decision to publish).
    async fn decided(
        connector: &FakeProvider,
        journal: &SendJournal,
        command: &Command,
        delivered: i64,
    ) -> Report {
        match decision(connector, journal, command, delivered).await {
            Decided::Report { report, .. } => *report,
            other => panic!("nothing to publish: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_status_check_that_sends_again_is_made_at_most_once_per_interval() {
        let journal = journal().await;
        let refund = pay_out(&uuid::Uuid::now_v7().to_string());
        let check = refund.as_status_check();
        let minute = Some(Duration::from_secs(60));
        let patient = FakeProvider::new(true, Duration::ZERO, minute);
        // Nothing recorded (never sent): nothing is sent by a check either.
        let report = decided(&patient, &journal, &check, 1).await;
        assert_eq!(report.outcome, Outcome::Unknown);
        // Sent just now: within the interval the check sends nothing.
        journal.record(&refund.transaction_id).await.unwrap();
        let report = decided(&patient, &journal, &check, 1).await;
        assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
        assert_eq!(patient.requests(), (0, 0));
        // Past the interval (none here): one check goes out and renews the
        // journal, so within the interval of it no other does. The check
        // carries when the journal dated it, as a send does.
        let eager = FakeProvider::new(true, Duration::ZERO, Some(Duration::ZERO));
        let before = Instant::now();
        let report = decided(&eager, &journal, &check, 1).await;
        assert_eq!(
            (report.outcome, eager.requests()),
            (Outcome::Success, (0, 1))
        );
        assert!(eager
            .last_journal_time()
            .is_some_and(|at| at >= before && at <= Instant::now()));
        let report = decided(&patient, &journal, &check, 1).await;
        assert_eq!(report.outcome, Outcome::Unknown);
        assert_eq!(patient.requests(), (0, 0));
    }

    fn pay_out(transaction_id: &str) -> Command {
        Command::try_from(bus::Command {
            transaction_id: transaction_id.into(),
            provider: "smilepayz".into(),
            operation: bus::Operation::PayOut as i32,
            provider_reference: "R1".into(),
            first_dispatch: true,
            ..Default::default()
        })
        .expect("a valid command")
    }

    /// Moves `command`'s last recorded send `by` into the past.
    async fn sent_earlier(pool: &sqlx::PgPool, command: &Command, by: Duration) {
        sqlx::query(
            "UPDATE send_intents SET recorded_at = recorded_at - $2::int8 * interval '1 millisecond' \
             WHERE transaction_id = $1",
        )
        .bind(uuid::Uuid::parse_str(&command.transaction_id).unwrap())
        .bind(by.as_millis() as i64)
        .execute(pool)
        .await
        .unwrap();
    }

    async fn journal() -> SendJournal {
        journal_and_pool().await.0
    }

    async fn journal_and_pool() -> (SendJournal, sqlx::PgPool) {
        let url = loket_test_support::postgres::fresh_database()
            .await
            .expect("database");
        // Two batch slots and one connection for renewals, as in the service,
        // and one for the test's own statements.
        let pool = db::connect(&Secret::new(url), 4).await.expect("pool");
        (
            SendJournal::start(pool.clone(), &Vital::new(Shutdown::new())),
            pool,
        )
    }

    /// A pay-out of `client` the reconciler has already brought to `status`.
    async fn pay_out_in(pool: &sqlx::PgPool, client: uuid::Uuid, status: &str) -> Command {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
             provider_product_code, account, amount_minor, request_hash, provider_reference) \
             VALUES ($1, $2, $1::text, 'pay_out', $3, 'smilepayz', 'PAYOUT', 'BCA', '123', 10000, '\\x00', $4)",
        )
        .bind(id)
        .bind(client)
        .bind(status)
        .bind(format!("R{}", id.simple()))
        .execute(pool)
        .await
        .expect("transaction");
        pay_out(&id.to_string())
    }

    #[tokio::test]
    async fn a_command_that_resurfaces_for_a_settled_transaction_is_checked_and_never_sent() {
        let (journal, pool) = journal_and_pool().await;
        let client = loket_test_support::postgres::new_client(&pool)
            .await
            .expect("client");
        for status in ["failed", "success", "needs_review"] {
            // A first delivery, never recorded: it would be sent, were the
            // transaction not settled.
            let command = pay_out_in(&pool, client, status).await;
            let provider = FakeProvider::new(false, Duration::ZERO, None);
            let report = decided(&provider, &journal, &command, 1).await;
            assert_eq!(
                provider.requests(),
                (0, 1),
                "{status}: sent for a settled transaction"
            );
            assert!(
                report.not_found,
                "{status}: the check's answer goes to the reconciler"
            );
        }
        // Recorded and sent while unresolved, settled since: a redelivery
        // past every grace checks and sends nothing.
        let command = pay_out_in(&pool, client, "unknown").await;
        journal.record(&command.transaction_id).await.unwrap();
        sqlx::query("UPDATE transactions SET status = 'failed' WHERE id = $1::uuid")
            .bind(&command.transaction_id)
            .execute(&pool)
            .await
            .unwrap();
        let provider = FakeProvider::new(false, Duration::ZERO, None);
        decided(&provider, &journal, &command, 2).await;
        assert_eq!(provider.requests(), (0, 1));
    }

    #[tokio::test]
    async fn an_inconclusive_check_first_sends_only_what_the_journal_shows_was_never_sent() {
        let journal = journal().await;
        // Re-dispatched by the sweep (the ingress died before publishing):
        // never recorded, so never sent, whatever the check could not say.
        let mut command = pay_out(&uuid::Uuid::now_v7().to_string());
        command.first_dispatch = false;
        let faulty = FakeProvider::new(false, Duration::ZERO, None).inconclusive();
        let report = decided(&faulty, &journal, &command, 1).await;
        assert_eq!(faulty.requests(), (1, 1));
        assert_eq!(
            faulty.first_sends.load(Ordering::SeqCst),
            1,
            "the journal's first record: the provider may know no earlier send is ours"
        );
        assert_eq!(report.outcome, Outcome::Pending);
        // Recorded now: a later copy with an inconclusive check sends nothing.
        let report = decided(&faulty, &journal, &command, 2).await;
        assert_eq!(
            faulty.requests(),
            (1, 2),
            "sent again on an inconclusive check"
        );
        assert_eq!(report.outcome, Outcome::Unknown);
    }

    #[tokio::test]
    async fn no_record_at_the_provider_while_our_last_send_may_still_be_on_its_way_sends_nothing() {
        let (journal, pool) = journal_and_pool().await;
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        // One copy recorded its send just now and is waiting for the reply;
        // another (redelivered) finds no record at the provider yet. The
        // provider shows requests at once (no grace of its own), but a
        // request may take a minute.
        journal.record(&command.transaction_id).await.unwrap();
        let slow =
            FakeProvider::new(false, Duration::ZERO, None).sending_for(Duration::from_secs(60));
        let decided_now = decision(&slow, &journal, &command, 2).await;
        assert_eq!(
            slow.requests(),
            (0, 1),
            "sent while the first send may be in flight"
        );
        assert!(
            matches!(decided_now, Decided::Later(after) if after == Duration::from_secs(60) + SEND_START_MARGIN),
            "handed back until no send can be in flight: {decided_now:?}"
        );
        // Once no send can be in flight any more (here: past the margin), one
        // may.
        sent_earlier(&pool, &command, SEND_START_MARGIN).await;
        let quick = FakeProvider::new(false, Duration::ZERO, None);
        decided(&quick, &journal, &command, 2).await;
        assert_eq!(quick.requests(), (1, 1));
    }

    #[tokio::test]
    async fn no_record_at_the_provider_within_the_grace_of_our_last_send_sends_nothing() {
        let (journal, pool) = journal_and_pool().await;
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        // The first delivery recorded and sent it; then the worker died.
        assert!(journal
            .record(&command.transaction_id)
            .await
            .unwrap()
            .is_first());
        // Redelivered (delivery 2) to a provider with no record of it.
        let patient = FakeProvider::new(false, Duration::from_secs(60), None);
        let decided_now = decision(&patient, &journal, &command, 2).await;
        assert_eq!(patient.requests().0, 0, "sent again within the grace");
        // Within the grace no record proves nothing: nothing is published
        // (no "unknown" that only status checks would follow, never sending),
        // and the command comes back once the grace is over.
        assert!(
            matches!(decided_now, Decided::Later(after) if after == Duration::from_secs(60) + SEND_START_MARGIN),
            "{decided_now:?}"
        );

        // Past the grace (none here) "no record" allows one more send, and
        // that send renews the journal: within the grace of it, no third.
        sent_earlier(&pool, &command, SEND_START_MARGIN).await;
        let eager = FakeProvider::new(false, Duration::ZERO, None);
        let report = decided(&eager, &journal, &command, 2).await;
        assert_eq!((eager.requests().0, report.outcome), (1, Outcome::Pending));
        assert_eq!(
            eager.first_sends.load(Ordering::SeqCst),
            0,
            "a resend is never a first send"
        );
        let decided_now = decision(&patient, &journal, &command, 2).await;
        assert_eq!(
            patient.requests().0,
            0,
            "the resend renewed the journal's last send"
        );
        assert!(matches!(decided_now, Decided::Later(_)), "{decided_now:?}");
    }

    /// A request sent again after "no record" and refused is unknown: the
    /// provider may have taken the first send since, and refused the copy
    /// because of it. A first send's refusal is a failure.
    #[tokio::test]
    async fn a_refusal_of_a_request_sent_again_decides_nothing() {
        let (journal, pool) = journal_and_pool().await;
        let accepting = FakeProvider::new(false, Duration::ZERO, None);
        let refusing = FakeProvider::new(false, Duration::ZERO, None).refusing();
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        let before = Instant::now();
        let first = decided(&accepting, &journal, &command, 1).await;
        assert_eq!(first.outcome, Outcome::Pending, "{first:?}");
        assert!(
            accepting
                .last_journal_time()
                .is_some_and(|at| at >= before && at <= Instant::now()),
            "a send carries when its journal entry was written"
        );
        sent_earlier(&pool, &command, SEND_START_MARGIN).await;
        let again = decided(&refusing, &journal, &command, 2).await;
        assert_eq!(refusing.requests(), (1, 1));
        assert_eq!(again.outcome, Outcome::Unknown, "{again:?}");
        assert!(
            again.detail.contains("refused when sent again"),
            "{}",
            again.detail
        );
        // The provider's id of the refused copy is no id of the transaction:
        // status checks that sent it would read the refusal, not the first
        // send. It stays in the detail only.
        assert_eq!(first.provider_trace.as_deref(), Some("provider-ref-1"));
        assert_eq!(again.provider_trace, None, "{again:?}");
        assert!(
            again
                .detail
                .contains("the refused copy's provider reference: provider-ref-1"),
            "{}",
            again.detail
        );
    }

    /// A request the provider definitely refused is never sent again: a
    /// redelivery before the reconciler applied the refusal finds no record
    /// (a refusal often leaves none, Smilepayz creates no order), yet
    /// sends nothing, however long ago the refused send was. It reports the
    /// "no record" at once, whenever the refusal was, instead of coming
    /// back: the refusal's own result may never have been published (a
    /// crash before it), and nothing else would end the transaction before
    /// the review limit.
    #[tokio::test]
    async fn a_request_the_provider_refused_is_never_sent_again() {
        for refused_ago in [Duration::ZERO, Duration::from_secs(3600)] {
            let (journal, pool) = journal_and_pool().await;
            let refusing = FakeProvider::new(false, Duration::ZERO, None).refusing();
            let command = pay_out(&uuid::Uuid::now_v7().to_string());
            let first = decided(&refusing, &journal, &command, 1).await;
            assert_eq!(first.outcome, Outcome::Failed, "{first:?}");
            sent_earlier(&pool, &command, refused_ago).await;
            let accepting = FakeProvider::new(false, Duration::ZERO, None);
            let again = decided(&accepting, &journal, &command, 2).await;
            assert_eq!(accepting.requests(), (0, 1), "checked, never sent");
            assert!(again.not_found, "{refused_ago:?}: {again:?}");
            assert_eq!(again.outcome, Outcome::Unknown, "{again:?}");
            assert!(!again.sent, "{again:?}");
        }
    }

    /// A first send that never left (a connection refused, no token) fails
    /// at once, and the journal keeps it from ever leaving later; a send
    /// again that never left decides nothing, as its earlier send may have
    /// arrived.
    #[tokio::test]
    async fn a_request_that_never_left_fails_only_when_no_earlier_send_exists() {
        let journal = journal().await;
        let down = FakeProvider::new(false, Duration::ZERO, None).unreachable();
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        let report = decided(&down, &journal, &command, 1).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        assert!(!report.sent, "nothing left: {report:?}");
        assert!(
            report.detail.starts_with("connection refused; not sent"),
            "{}",
            report.detail
        );
        // Back up, finding no record of it: still nothing is sent, and the
        // "no record" is the answer.
        let up = FakeProvider::new(false, Duration::ZERO, None);
        let again = decided(&up, &journal, &command, 2).await;
        assert!(again.not_found, "{again:?}");
        assert_eq!(up.requests(), (0, 1));

        // Sent before, then again after "no record": that copy never left.
        let (journal, pool) = journal_and_pool().await;
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        journal.record(&command.transaction_id).await.unwrap();
        sent_earlier(&pool, &command, Duration::from_secs(60)).await;
        let report = decided(&down, &journal, &command, 2).await;
        assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
        assert!(!report.sent, "{report:?}");
    }

    /// A first delivery that waited in the pull buffer past most of the
    /// ack wait may have been handed to another worker as well: it starts
    /// with a status check, as a redelivery does.
    #[tokio::test]
    async fn a_command_held_in_the_buffer_past_the_ack_deadline_is_checked_first() {
        let journal = journal().await;
        let settings = WorkerSettings::default();
        let ack_wait = Duration::from_millis(settings.ack_wait_ms);
        let found = FakeProvider::new(true, Duration::ZERO, None);
        let now = Instant::now();
        let held = Delivery {
            count: 1,
            started: now,
            handed_out_after: now - ack_wait,
        };
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        let decided_now = decide_and_call(&found, &journal, &settings, &command, held).await;
        assert!(
            matches!(decided_now, Decided::Report { .. }),
            "{decided_now:?}"
        );
        assert_eq!(found.requests(), (0, 1), "sent without a check");
        // Taken from the buffer soon after it arrived: sent at once.
        let fresh = Delivery {
            handed_out_after: now - ack_wait / 4,
            ..held
        };
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        decide_and_call(&found, &journal, &settings, &command, fresh).await;
        assert_eq!(found.requests(), (1, 1));
    }

    /// Two copies of a re-dispatched command (the sweep's repeats): the
    /// first records the send, and its status check is slow; the second,
    /// once the first's record is past the in-flight window, finds no record
    /// and sends. The first must not send as well when its check returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_recorded_before_a_slow_check_is_not_made_if_another_worker_sent_it_meanwhile() {
        let journal = journal().await;
        let mut command = pay_out(&uuid::Uuid::now_v7().to_string());
        command.first_dispatch = false; // re-dispatched: check first
        let slow_check =
            FakeProvider::new(false, Duration::ZERO, None).checking_for(Duration::from_millis(400));
        let other = {
            let journal = journal.clone();
            let id = command.transaction_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                journal.renew_if_older(&id, Duration::ZERO).await.unwrap()
            })
        };
        let decided_now = decision(&slow_check, &journal, &command, 1).await;
        assert!(other.await.unwrap(), "the other worker's send was allowed");
        assert_eq!(slow_check.requests(), (0, 1), "sent as well");
        assert!(
            matches!(decided_now, Decided::Later(_)),
            "handed back until no send can be in flight: {decided_now:?}"
        );
    }

    /// A journal write that takes longer than the send margin (a slow
    /// PostgreSQL: here a row lock held elsewhere) leaves the request unsent:
    /// other workers count its time on the way from the journal's time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_whose_journal_write_outlasts_the_send_margin_is_not_made() {
        let (journal, pool) = journal_and_pool().await;
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        journal.record(&command.transaction_id).await.unwrap();
        sent_earlier(&pool, &command, SEND_START_MARGIN).await;
        let mut blocker = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM send_intents WHERE transaction_id = $1 FOR UPDATE")
            .bind(uuid::Uuid::parse_str(&command.transaction_id).unwrap())
            .execute(&mut *blocker)
            .await
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(SEND_START_MARGIN + Duration::from_millis(500)).await;
            blocker.rollback().await.unwrap();
        });
        // Redelivered to a provider with no record, past every grace (none
        // here): the resend is allowed, but its renewal waits on the lock.
        let quick = FakeProvider::new(false, Duration::ZERO, None);
        let decided_now = decision(&quick, &journal, &command, 2).await;
        release.await.unwrap();
        assert_eq!(quick.requests(), (0, 1), "sent after a slow journal write");
        assert!(
            matches!(decided_now, Decided::Later(after) if after >= SEND_START_MARGIN),
            "{decided_now:?}"
        );
    }

    #[tokio::test]
    async fn a_status_check_finding_no_record_soon_after_a_send_does_not_report_it() {
        let (journal, pool) = journal_and_pool().await;
        let command = pay_out(&uuid::Uuid::now_v7().to_string());
        let check = command.as_status_check();
        let lagging = FakeProvider::new(false, Duration::from_secs(60), None);
        // Never sent: "no record" is the answer.
        let report = decided(&lagging, &journal, &check, 1).await;
        assert!(report.not_found, "{report:?}");
        assert!(!report.sent);

        // Sent just now (a re-dispatch racing a scheduled check): the
        // request may still be on its way, so the check proves nothing.
        journal.record(&command.transaction_id).await.unwrap();
        let report = decided(&lagging, &journal, &check, 1).await;
        assert!(!report.not_found, "{report:?}");
        assert_eq!(report.outcome, Outcome::Unknown);
        assert!(
            report.detail.contains("may still be on its way"),
            "{report:?}"
        );
        let slow =
            FakeProvider::new(false, Duration::ZERO, None).sending_for(Duration::from_secs(60));
        assert!(!decided(&slow, &journal, &check, 1).await.not_found);

        // Once no send can be on its way any more (here: past the margin).
        sent_earlier(&pool, &command, SEND_START_MARGIN).await;
        let quick = FakeProvider::new(false, Duration::ZERO, None);
        assert!(decided(&quick, &journal, &check, 1).await.not_found);
        assert_eq!(
            lagging.requests().0 + slow.requests().0 + quick.requests().0,
            0
        );
    }

    #[tokio::test]
    async fn a_send_after_a_slow_check_first_is_journaled_when_it_leaves() {
        let (journal, pool) = journal_and_pool().await;
        let mut command = pay_out(&uuid::Uuid::now_v7().to_string());
        command.first_dispatch = false; // re-dispatched: check first
        let slow_check =
            FakeProvider::new(false, Duration::ZERO, None).checking_for(Duration::from_millis(300));
        let before: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let started = Instant::now();
        let report = decided(&slow_check, &journal, &command, 1).await;
        assert_eq!(slow_check.requests(), (1, 1));
        assert!(report.sent, "{report:?}");
        // The connector is told the same: its send window opens after the
        // check, not before it.
        let dated = slow_check.last_journal_time().expect("a dated send");
        assert!(
            dated - started >= Duration::from_millis(300),
            "the send is dated {:?} after the start, before the check ended",
            dated - started
        );
        let recorded: chrono::DateTime<Utc> =
            sqlx::query_scalar("SELECT recorded_at FROM send_intents WHERE transaction_id = $1")
                .bind(uuid::Uuid::parse_str(&command.transaction_id).unwrap())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            recorded - before >= chrono::Duration::milliseconds(300),
            "the journal keeps the time before the check ({before} → {recorded})"
        );
    }
}
