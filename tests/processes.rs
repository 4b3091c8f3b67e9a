//! RELIABILITY's process faults against the real processes: every service
//! runs from its built binary as `make run` runs it ([`Deployment`]), and a
//! test kills one with `kill -9` (at a failpoint, or at any moment under
//! load) or pauses it with SIGSTOP, starts it again, and then checks the
//! four invariants for every transaction against its provider's
//! simulator's ledger ([`Deployment::assert_four_invariants`]). The
//! connector faults and the loads cover the three providers loket has
//! connectors for: OkeBayar purchases, SNAP QR CPM payments and Smilepayz
//! pay-outs.
//!
//! The binaries are the ones `make test` builds before it runs the tests
//! (`cargo nextest run --workspace`); a test run with `-p loket-e2e` alone
//! uses whatever binaries the last workspace build left.

mod common;

use std::time::Duration;

use common::{
    eventually, order_counting_errors, purchase, purchase_until_answered,
    received_while_the_publish_hangs, scenario, Order, OK_ACCOUNT,
};
use loket_protocol::{pb, Provider};
use loket_test_support::deployment::{Deployment, Part};

/// How many money-moving requests and status checks (OkeBayar status
/// checks, SNAP queries, Smilepayz inquiries) `provider` received under
/// `reference`, with all its counts as a failure shows them.
async fn sent_and_checked(
    deployment: &Deployment,
    provider: Provider,
    reference: &str,
) -> (usize, usize, String) {
    match provider {
        Provider::OkeBayar => {
            let counts = deployment.sim_requests(reference).await;
            (counts.money(), counts.status_checks, format!("{counts:?}"))
        }
        Provider::SnapQr => {
            let counts = deployment.snapqr_requests(reference).await;
            (counts.payments, counts.queries, format!("{counts:?}"))
        }
        Provider::Smilepayz => {
            let counts = deployment.smilepayz_requests(reference).await;
            (counts.money(), counts.status_checks, format!("{counts:?}"))
        }
        Provider::Doku => unreachable!("no DOKU connector"),
    }
}

/// `provider` received one money-moving request under `reference` and at
/// least one status check: the command handed out again was checked, not
/// sent again.
async fn checked_not_sent_again(deployment: &Deployment, provider: Provider, reference: &str) {
    let (sent, checked, counts) = sent_and_checked(deployment, provider, reference).await;
    assert_eq!(sent, 1, "{provider} {reference}: {counts}");
    assert!(
        checked >= 1,
        "{provider} {reference} checked first: {counts}"
    );
}

/// RELIABILITY #1: the ingress inserted a purchase and was killed (`kill
/// -9`) before publishing its command (a failpoint holds the publish right
/// there; the client is answered `received` within its deadline all the
/// same). The reconciler's sweep dispatches the purchase; the client,
/// asking again with its `client_ref` once a new ingress runs, gets the
/// original transaction; the provider saw one purchase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_killed_between_insert_and_publish_loses_nothing() {
    let mut deployment =
        Deployment::start(&[(Part::Ingress, "LOKET_FAILPOINT", "hang_before_publish")]).await;
    let mut client = deployment.client().await;
    let id = received_while_the_publish_hangs(&mut client, "killed-ingress").await;
    let ingress = deployment.only(Part::Ingress);
    deployment.kill9(ingress);
    deployment.start_process(Part::Ingress, &[]).await;

    let again = purchase_until_answered(&mut client, "killed-ingress", OK_ACCOUNT).await;
    assert_eq!(again.id, id.to_string(), "the original transaction");
    let statuses = deployment
        .assert_four_invariants(1, Duration::from_secs(30))
        .await;
    assert_eq!(statuses[&id], "success");
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT source FROM transaction_events WHERE transaction_id = $1")
            .bind(id)
            .fetch_all(&deployment.pool)
            .await
            .unwrap();
    assert!(
        sources.iter().any(|source| source == "sweep"),
        "dispatched by the sweep: {sources:?}"
    );
}

/// RELIABILITY #2, for each provider: every connector process aborts
/// itself (what `kill -9` does) after its provider answered a money-moving
/// request (an OkeBayar purchase, a SNAP QR payment, a Smilepayz pay-out)
/// and before publishing the result or acking the command. Each restarted
/// connector gets its command again and begins with a status check: one
/// request each, and the success each provider holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_killed_after_sending_check_and_never_send_again() {
    let abort_after_send = |part| (part, "LOKET_WORKER__FAILPOINT", "abort_after_send");
    let mut deployment = Deployment::start(&Part::CONNECTORS.map(abort_after_send)).await;
    let connectors = Part::CONNECTORS.map(|part| deployment.only(part));
    let mut client = deployment.client().await;
    let orders = [
        (Provider::OkeBayar, Order::Purchase(OK_ACCOUNT.into())),
        (Provider::SnapQr, Order::QrPayment(10_000)),
        (Provider::Smilepayz, Order::PayOut(100_000)),
    ];
    let mut references = Vec::new();
    for (provider, order) in &orders {
        let client_ref = format!("aborted-{provider}-connector");
        let (txn, _) = order_counting_errors(&mut client, &client_ref, order).await;
        references.push((*provider, txn.provider_reference));
    }
    for ((part, connector), (provider, reference)) in Part::CONNECTORS
        .into_iter()
        .zip(connectors)
        .zip(&references)
    {
        let exit = deployment
            .until_exited(connector, Duration::from_secs(20))
            .await;
        assert!(!exit.success(), "{part:?} aborted: {exit}");
        // The abort came after the send: the provider has the request, and
        // nothing has checked it yet.
        let (sent, checked, counts) = sent_and_checked(&deployment, *provider, reference).await;
        assert_eq!(
            (sent, checked),
            (1, 0),
            "{provider} {reference} before the restart: {counts}"
        );
        deployment.start_process(part, &[]).await;
    }

    let statuses = deployment
        .assert_four_invariants(orders.len(), Duration::from_secs(30))
        .await;
    assert!(
        statuses.values().all(|status| status == "success"),
        "{statuses:?}"
    );
    for (provider, reference) in &references {
        checked_not_sent_again(&deployment, *provider, reference).await;
    }
}

/// RELIABILITY #2 when the provider refused: a Smilepayz pay-out above the
/// balance is refused (`4009103`, no order made) and its connector aborts
/// before publishing the refusal. The redelivered command's inquiry finds
/// no order; the send journal holds the refusal, so the connector reports
/// the "no record" (it neither sends again nor waits for a send that is not
/// on its way), and the pay-out ends `failed` once the no-record grace has
/// passed: one pay-out request, no transaction left `received`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_lost_with_its_connector_ends_failed_and_is_never_sent_again() {
    let mut deployment = Deployment::start(&[(
        Part::SmilepayzConnector,
        "LOKET_WORKER__FAILPOINT",
        "abort_after_send",
    )])
    .await;
    deployment.set_smilepayz_payout_balance(0).await;
    let connector = deployment.only(Part::SmilepayzConnector);
    let mut client = deployment.client().await;
    let (txn, _) =
        order_counting_errors(&mut client, "refused-then-aborted", &Order::PayOut(100_000)).await;
    let exit = deployment
        .until_exited(connector, Duration::from_secs(20))
        .await;
    assert!(!exit.success(), "aborted after the refusal: {exit}");
    deployment
        .start_process(Part::SmilepayzConnector, &[])
        .await;

    let statuses = deployment
        .assert_four_invariants(1, Duration::from_secs(40))
        .await;
    assert_eq!(statuses[&txn.id.parse().unwrap()], "failed", "{statuses:?}");
    checked_not_sent_again(&deployment, Provider::Smilepayz, &txn.provider_reference).await;
}

/// RELIABILITY #3: the connector published a purchase's result and was
/// killed (`kill -9`) before acking the command (a failpoint holds it
/// there). The restarted connector checks the status and publishes a
/// second result; the reconciler applies the two as one transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_killed_before_its_ack_is_one_transition() {
    let mut deployment = Deployment::start(&[(
        Part::OkeBayarConnector,
        "LOKET_WORKER__FAILPOINT",
        "hang_after_result",
    )])
    .await;
    let mut client = deployment.client().await;
    let txn = purchase_until_answered(&mut client, "unacked", OK_ACCOUNT).await;
    let id: uuid::Uuid = txn.id.parse().unwrap();
    eventually("the first result applied", Duration::from_secs(20), || {
        let deployment = &deployment;
        async move { deployment.events_from(id, "result").await == 1 }
    })
    .await;
    let connector = deployment.only(Part::OkeBayarConnector);
    deployment.kill9(connector);
    deployment.start_process(Part::OkeBayarConnector, &[]).await;
    eventually("the second result applied", Duration::from_secs(30), || {
        let deployment = &deployment;
        async move { deployment.events_from(id, "result").await == 2 }
    })
    .await;

    deployment
        .assert_four_invariants(1, Duration::from_secs(10))
        .await;
    checked_not_sent_again(&deployment, Provider::OkeBayar, &txn.provider_reference).await;
}

/// How many callbacks (SNAP notifies) `provider`'s simulator sent about
/// `reference` were answered as it expects, how many HTTP attempts it
/// made, and its whole log as a failure shows it.
async fn callbacks_answered(
    deployment: &Deployment,
    provider: Provider,
    reference: &str,
) -> (usize, usize, String) {
    match provider {
        Provider::OkeBayar => {
            let log = deployment.sim_callbacks(reference).await;
            (log.acknowledged, log.attempts, format!("{log:?}"))
        }
        Provider::SnapQr => {
            let log = deployment.snapqr_notifies(reference).await;
            (log.acknowledged, log.attempts, format!("{log:?}"))
        }
        Provider::Smilepayz => {
            let log = deployment.smilepayz_callbacks(reference).await;
            (log.acknowledged, log.attempts.len(), format!("{log:?}"))
        }
        Provider::Doku => unreachable!("no DOKU simulator"),
    }
}

/// RELIABILITY #4, for each provider: the callback receiver made a
/// provider's callback durable and was killed (`kill -9`) before answering
/// it (a failpoint holds it there): an OkeBayar callback, a signed SNAP
/// notify and a signed Smilepayz callback. Each simulator, unanswered,
/// sends its callback again to the restarted receiver, which answers it;
/// each retry is a duplicate on the bus, so each transaction's log shows
/// its callback once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_receiver_killed_before_answering_is_one_callback_of_each_provider() {
    let retries_ms: Vec<String> = (0..20).map(|n| (n * 1_000).to_string()).collect();
    let smilepayz_schedule = format!("[{}]", retries_ms.join(", "));
    let mut deployment = Deployment::start(&[
        (Part::Callback, "LOKET_FAILPOINT", "hang_after_publish"),
        // The simulators keep trying while the receiver is restarted.
        (
            Part::Simulator,
            "LOKET_OKEBAYAR__CALLBACK_MAX_ATTEMPTS",
            "20",
        ),
        (Part::Simulator, "LOKET_SNAPQR__NOTIFY_MAX_ATTEMPTS", "20"),
        (Part::Simulator, "LOKET_SNAPQR__NOTIFY_TIMEOUT_MS", "1000"),
        (
            Part::Simulator,
            "LOKET_SMILEPAYZ__CALLBACK_SCHEDULE_MS",
            &smilepayz_schedule,
        ),
    ])
    .await;
    let mut client = deployment.client().await;
    // OkeBayar `907`: success at once, and one late `000` callback; SNAP
    // `101`: pending, then a notify of success; Smilepayz `000`: a pay-out
    // that succeeds and is called back.
    let orders = [
        (Provider::OkeBayar, Order::Purchase(scenario("907"))),
        (Provider::SnapQr, Order::QrPayment(10_101)),
        (Provider::Smilepayz, Order::PayOut(100_000)),
    ];
    let mut made = Vec::new();
    for (provider, order) in &orders {
        let client_ref = format!("unanswered-{provider}");
        let (txn, _) = order_counting_errors(&mut client, &client_ref, order).await;
        let id: uuid::Uuid = txn.id.parse().unwrap();
        made.push((*provider, id, txn.provider_reference));
    }
    // Durable before the answer: applied although never answered.
    for (provider, id, reference) in &made {
        eventually(
            &format!("the unanswered {provider} callback applied"),
            Duration::from_secs(20),
            || {
                let (deployment, id) = (&deployment, *id);
                async move { deployment.events_from(id, "callback").await == 1 }
            },
        )
        .await;
        let (answered, _, log) = callbacks_answered(&deployment, *provider, reference).await;
        assert_eq!(answered, 0, "{provider}: {log}");
    }

    let receiver = deployment.only(Part::Callback);
    deployment.kill9(receiver);
    deployment.start_process(Part::Callback, &[]).await;
    for (provider, _, reference) in &made {
        eventually(
            &format!("the {provider} retry answered by the restarted receiver"),
            Duration::from_secs(30),
            || {
                let (deployment, provider) = (&deployment, *provider);
                let reference = reference.clone();
                async move { callbacks_answered(deployment, provider, &reference).await.0 == 1 }
            },
        )
        .await;
    }

    deployment
        .assert_four_invariants(made.len(), Duration::from_secs(10))
        .await;
    // Time for a second copy, had the bus taken one, to be applied.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (provider, id, reference) in &made {
        let (_, attempts, log) = callbacks_answered(&deployment, *provider, reference).await;
        assert!(attempts >= 2, "{provider} retried: {log}");
        assert_eq!(
            deployment.events_from(*id, "callback").await,
            1,
            "the {provider} retry was a duplicate: {log}"
        );
    }
}

/// RELIABILITY #24 with every service running, for each provider: each
/// connector is paused (SIGSTOP) while a money-moving request it sent (an
/// OkeBayar purchase, a SNAP QR payment, a Smilepayz pay-out) is at the
/// provider, past its ack deadline. A second connector of each gets the
/// command and checks the status first; resumed (SIGCONT), the first ones
/// finish late. One request each, one transition into `success` each.
///
/// The providers answer these after 6 s (OkeBayar `901`, SNAP `201`,
/// Smilepayz `011`: done at once, answered late) and the connectors wait
/// 4 s for them (their ack wait 9 s), so no result can be published before
/// the pause, which the test checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_paused_past_their_ack_deadline_cause_no_second_request() {
    const ACK_WAIT_MS: u64 = 9_000;
    let patient = |timeout_key| [(timeout_key, "4000"), ("LOKET_WORKER__ACK_WAIT_MS", "9000")];
    let connectors = [
        (
            Provider::OkeBayar,
            Part::OkeBayarConnector,
            patient("LOKET_OKEBAYAR__TIMEOUT_MS"),
        ),
        (
            Provider::SnapQr,
            Part::SnapQrConnector,
            patient("LOKET_SNAPQR__TIMEOUT_MS"),
        ),
        (
            Provider::Smilepayz,
            Part::SmilepayzConnector,
            patient("LOKET_SMILEPAYZ__TIMEOUT_MS"),
        ),
    ];
    let mut settings = vec![
        (Part::Simulator, "LOKET_OKEBAYAR__SLOW_REPLY_MS", "6000"),
        (Part::Simulator, "LOKET_SNAPQR__SLOW_REPLY_MS", "6000"),
        (Part::Simulator, "LOKET_SMILEPAYZ__SLOW_REPLY_MS", "6000"),
    ];
    for (_, part, patient) in &connectors {
        settings.extend(patient.map(|(name, value)| (*part, name, value)));
    }
    let mut deployment = Deployment::start(&settings).await;
    let paused = connectors.map(|(_, part, _)| deployment.only(part));
    let mut client = deployment.client().await;
    let orders = [
        Order::Purchase(scenario("901")),
        Order::QrPayment(10_201),
        Order::PayOut(100_011),
    ];
    let mut sent = Vec::new();
    for ((provider, ..), order) in connectors.iter().zip(&orders) {
        let client_ref = format!("paused-{provider}");
        let (txn, _) = order_counting_errors(&mut client, &client_ref, order).await;
        sent.push((*provider, txn));
    }
    // Each connector is paused as soon as its request is seen at its
    // provider, well within its 4 s wait for the answer.
    for ((provider, txn), connector) in sent.iter().zip(paused) {
        eventually(
            &format!("the {provider} request sent"),
            Duration::from_secs(20),
            || {
                let (deployment, provider) = (&deployment, *provider);
                let reference = txn.provider_reference.clone();
                async move { sent_and_checked(deployment, provider, &reference).await.0 == 1 }
            },
        )
        .await;
        deployment.pause(connector, true);
    }
    for (provider, txn) in &sent {
        let id: uuid::Uuid = txn.id.parse().unwrap();
        assert_eq!(
            deployment.events_from(id, "result").await,
            0,
            "the {provider} connector was paused before its provider answered"
        );
    }
    for (_, part, patient) in &connectors {
        deployment.start_process(*part, patient).await;
    }
    for (provider, txn) in &sent {
        eventually(
            &format!("the second {provider} connector checked the status"),
            Duration::from_millis(ACK_WAIT_MS * 4),
            || {
                let (deployment, provider) = (&deployment, *provider);
                let reference = txn.provider_reference.clone();
                async move { sent_and_checked(deployment, provider, &reference).await.1 >= 1 }
            },
        )
        .await;
    }
    for connector in paused {
        deployment.pause(connector, false);
    }

    deployment
        .assert_four_invariants(sent.len(), Duration::from_secs(30))
        .await;
    // The resumed connectors' late results (whatever they say) are applied
    // after the success, and change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (provider, txn) in &sent {
        checked_not_sent_again(&deployment, *provider, &txn.provider_reference).await;
        let id: uuid::Uuid = txn.id.parse().unwrap();
        assert_eq!(
            deployment.transitions_into(id, "success").await,
            1,
            "{provider}"
        );
    }
}

/// What the loads below ask for, in turn:
/// - OkeBayar purchases: immediate success, success called back after
///   `001`, pending then callbacks, an answer after the connector's timeout,
///   and a definite failure (`204`);
/// - SNAP QR payments: success; pending, then a notify of success; pending,
///   then a notify of failure (`105`); an answer after the connector's
///   timeout though the payment was made (`201`);
/// - Smilepayz pay-outs: success; failure (`002`); success called back
///   twice; a 502 though the pay-out was accepted, which succeeds (`010`).
fn load_orders() -> Vec<Order> {
    let purchases = ["", "001", "002", "901", "204"].map(|suffix| {
        Order::Purchase(if suffix.is_empty() {
            OK_ACCOUNT.to_string()
        } else {
            scenario(suffix)
        })
    });
    let qr_payments = [0, 101, 105, 201].map(|scenario| Order::QrPayment(10_000 + scenario));
    let pay_outs = [0, 2, 5, 10].map(|scenario| Order::PayOut(100_000 + scenario));
    purchases
        .into_iter()
        .chain(qr_payments)
        .chain(pay_outs)
        .collect()
}

/// The final status `order` of [`load_orders`] must end in.
fn expected_status(order: &Order) -> &'static str {
    let fails = match order {
        Order::Purchase(account) => account.ends_with("204"),
        Order::QrPayment(amount) => amount % 1000 == 105,
        Order::PayOut(amount) => amount % 1000 == 2,
    };
    if fails {
        "failed"
    } else {
        "success"
    }
}

/// A request a load made: its `client_ref`, what it asked for, the
/// transaction its first answer named, and how many calls met an error
/// before that answer.
struct Bought {
    client_ref: String,
    order: Order,
    id: String,
    errors: usize,
}

/// Six clients, each making about eight requests a second from
/// [`load_orders`] in turn (a call that meets an error is made again with
/// the same `client_ref` until answered), until [`Load::finish`].
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    buyers: tokio::task::JoinSet<Vec<Bought>>,
}

impl Load {
    async fn start(deployment: &Deployment) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let orders = load_orders();
        let mut buyers = tokio::task::JoinSet::new();
        for buyer in 0..6 {
            let mut client = deployment.client().await;
            let stop = stop.clone();
            let orders = orders.clone();
            buyers.spawn(async move {
                let mut bought = Vec::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let client_ref = format!("load-{buyer}-{n}");
                    let order = orders[(buyer + n) % orders.len()].clone();
                    let (first, errors) =
                        order_counting_errors(&mut client, &client_ref, &order).await;
                    bought.push(Bought {
                        client_ref,
                        order,
                        id: first.id,
                        errors,
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                bought
            });
        }
        Load { stop, buyers }
    }

    /// Runs `fault` on `deployment` 700 ms into a load, lets the load go on
    /// for 1.5 s after it, and stops it: what was bought.
    async fn around(
        deployment: &mut Deployment,
        fault: impl AsyncFnOnce(&mut Deployment),
    ) -> Vec<Bought> {
        let load = Load::start(deployment).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        fault(deployment).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        load.finish().await
    }

    /// Stops buying; what was bought.
    async fn finish(mut self) -> Vec<Bought> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut bought = Vec::new();
        while let Some(each) = self.buyers.join_next().await {
            bought.extend(each.expect("a buyer"));
        }
        bought
    }
}

/// After a fault under [`Load`]: every process still runs (none gave up
/// and exited), a purchase made now settles while its client waits, each
/// `client_ref` asked for again returns the transaction its first answer
/// named, and the four invariants hold, each request ending in its
/// [`expected_status`].
async fn the_load_kept_the_four_invariants(deployment: &mut Deployment, bought: &[Bought]) {
    for part in Part::ALL {
        assert_eq!(deployment.running(part).len(), 1, "{part:?} still runs");
    }
    let mut client = deployment.client().await;
    let after = client
        .purchase(purchase("after-the-fault", "PULSA10", OK_ACCOUNT, 20_000))
        .await
        .expect("a purchase after the fault")
        .into_inner();
    assert_eq!(after.status(), pb::TransactionStatus::Success, "{after:?}");
    for each in bought {
        let (again, _) = order_counting_errors(&mut client, &each.client_ref, &each.order).await;
        assert_eq!(
            again.id, each.id,
            "{}: the original transaction",
            each.client_ref
        );
    }
    let statuses = deployment
        .assert_four_invariants(bought.len() + 1, Duration::from_secs(90))
        .await;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for each in bought {
        let status = &statuses[&each.id.parse::<uuid::Uuid>().unwrap()];
        assert_eq!(
            status,
            expected_status(&each.order),
            "{} made for {:?}",
            each.id,
            each.order
        );
        let kind = match each.order {
            Order::Purchase(_) => "purchase",
            Order::QrPayment(_) => "QR payment",
            Order::PayOut(_) => "pay-out",
        };
        *outcomes.entry(format!("{kind} {status}")).or_default() += 1;
    }
    let errors: usize = bought.iter().map(|each| each.errors).sum();
    eprintln!("outcomes after the fault: {outcomes:?}; calls answered with an error: {errors}");
}

/// RELIABILITY #5 and #1–#4 unprepared, under [`Load`]: the reconciler,
/// each of the three connectors, the callback receiver and the ingress are
/// each killed (`kill -9`) at an arbitrary moment, twice in turn, and
/// started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_at_any_moment_under_load_keep_the_four_invariants() {
    let mut deployment = Deployment::start(&[]).await;
    let bought = Load::around(&mut deployment, async |deployment: &mut Deployment| {
        for part in [
            Part::Reconciler,
            Part::OkeBayarConnector,
            Part::Callback,
            Part::SnapQrConnector,
            Part::Ingress,
            Part::SmilepayzConnector,
        ]
        .iter()
        .cycle()
        .take(12)
        {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let victim = deployment.only(*part);
            deployment.kill9(victim);
            deployment.start_process(*part, &[]).await;
        }
    })
    .await;
    the_load_kept_the_four_invariants(&mut deployment, &bought).await;
}

/// RELIABILITY #6, under [`Load`]: nats-server is stopped as an operator
/// stops it (SIGTERM) and started again 3 s later; then it is killed
/// (`kill -9`) and stays down for 10 s, longer than the ingress's publish
/// timeout and the connector's and reconciler's ack waits, and starts again
/// on the same store. Every process rides both out and reconnects by
/// itself; what the ingress accepted meanwhile is dispatched once the bus
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_stopped_then_long_down_under_load_is_ridden_out_by_every_process() {
    let mut deployment = Deployment::start(&[]).await;
    let bought = Load::around(&mut deployment, async |deployment: &mut Deployment| {
        let nats = &mut deployment.nats;
        nats.stop_gracefully()
            .expect("nats-server stops on SIGTERM");
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.start_again().expect("nats-server starts again");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        nats.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        nats.start_again().expect("nats-server starts again");
    })
    .await;
    the_load_kept_the_four_invariants(&mut deployment, &bought).await;
}

/// RELIABILITY #7, under [`Load`]: PostgreSQL crashes (`pg_ctl stop -m
/// immediate`: open transactions lost, every connection cut), stays down
/// for 5 s and starts again on the same data. Calls meanwhile fail rather
/// than half-do anything; every process gets new connections by itself; no
/// row is partial; every `client_ref` asked again returns the original; the
/// four invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_load_leaves_no_partial_rows_and_charges_once() {
    let mut deployment = Deployment::start_on_private_postgres(&[]).await;
    let bought = Load::around(&mut deployment, async |deployment: &mut Deployment| {
        let postgres = deployment
            .private_postgres
            .as_ref()
            .expect("its own server");
        postgres.crash().expect("PostgreSQL stops");
        tokio::time::sleep(Duration::from_secs(5)).await;
        postgres.start_again().expect("PostgreSQL starts again");
    })
    .await;
    assert!(
        bought.iter().any(|each| each.errors > 0),
        "the crash was felt: some purchase met an error while PostgreSQL was down"
    );
    the_load_kept_the_four_invariants(&mut deployment, &bought).await;
}
