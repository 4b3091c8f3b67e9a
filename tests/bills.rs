//! End-to-end: postpaid bill inquiry and payment, and the provider's
//! refusals mapped to clear outcomes.

mod common;

use common::*;
use loket_protocol::pb;
use loket_test_support::TestApp;
use std::time::Duration;

/// A successful inquiry of `request`.
async fn inquired(
    client: &mut loket_test_support::app::Client,
    request: pb::InquireRequest,
) -> pb::Transaction {
    successful(
        client
            .inquire(request)
            .await
            .expect("inquiry accepted")
            .into_inner(),
    )
}

/// A successful postpaid (PLNPOST) inquiry of `account`.
async fn successful_inquiry(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
    account: &str,
) -> pb::Transaction {
    inquired(client, inquire(client_ref, "PLNPOST", account, 10_000)).await
}

/// A successful payment of `inquiry`'s total.
async fn paid(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
    inquiry: &pb::Transaction,
) -> pb::Transaction {
    let request = pay(client_ref, &inquiry.id, total(inquiry), 10_000);
    successful(
        client
            .pay_bill(request)
            .await
            .expect("payment accepted")
            .into_inner(),
    )
}

/// The client has no transaction: the refused requests left nothing behind.
async fn assert_nothing_left_behind(client: &mut loket_test_support::app::Client) {
    let listed = client
        .list_transactions(pb::ListTransactionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .transactions;
    assert!(
        listed.is_empty(),
        "a refused inquiry leaves nothing behind: {listed:?}"
    );
}

fn total(inquiry: &pb::Transaction) -> i64 {
    inquiry
        .bill
        .as_ref()
        .and_then(|b| b.total_amount.as_ref())
        .map(|m| m.minor)
        .expect("a total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postpaid_inquiry_then_payment_succeeds() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let inquiry = successful_inquiry(&mut client, "bill-inq-1", "531234567890").await;
    let bill = inquiry.bill.clone().unwrap();
    assert!(!bill.customer_name.is_empty());
    let nominal = bill.bill_amount.as_ref().unwrap().minor;
    let fee = bill.admin_fee.as_ref().unwrap().minor;
    assert_eq!(total(&inquiry), nominal + fee, "due = nominal + admin fee");

    let payment = paid(&mut client, "bill-pay-1", &inquiry).await;
    assert_eq!(payment.inquiry_id, inquiry.id);
    assert_eq!(app.sim.money_requests_for(&payment.provider_reference), 1);

    // A second payment of the same bill under another client_ref is refused.
    let again = client
        .pay_bill(pay("bill-pay-2", &inquiry.id, total(&inquiry), 0))
        .await
        .expect_err("the bill is already being paid");
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_inquiry_and_changed_amount_are_mapped_provider_errors() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;

    // 403: the provider's inquiry expired before the payment.
    let expiring = successful_inquiry(&mut client, "inq-403", &scenario("403")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = client
        .pay_bill(pay("pay-403", &expiring.id, total(&expiring), 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.status(), pb::TransactionStatus::Failed, "{late:?}");
    assert_eq!(late.provider_code, "403");
    let meaning = late.explanation.expect("explained");
    assert!(
        meaning.operator_action.to_lowercase().contains("inquir"),
        "{meaning:?}"
    );

    // 402: the provider says the payment differs from its inquiry.
    let changed = successful_inquiry(&mut client, "inq-402", &scenario("402")).await;
    let refused = client
        .pay_bill(pay("pay-402", &changed.id, total(&changed), 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.status(),
        pb::TransactionStatus::Failed,
        "{refused:?}"
    );
    assert_eq!(refused.provider_code, "402");
    let meaning = refused.explanation.expect("explained");
    assert_eq!(meaning.code, "402");
    assert_eq!(meaning.outcome, pb::Outcome::Failed as i32, "{meaning:?}");

    // 401: paid elsewhere between inquiry and payment. Our first send ever,
    // so it cannot be our own earlier payment: failed at once, "already paid".
    let paid_elsewhere = successful_inquiry(&mut client, "inq-401", &scenario("401")).await;
    let already = client
        .pay_bill(pay(
            "pay-401",
            &paid_elsewhere.id,
            total(&paid_elsewhere),
            10_000,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        already.status(),
        pb::TransactionStatus::Failed,
        "{already:?}"
    );
    assert_eq!(already.provider_code, "401");
    assert_eq!(app.sim.money_requests_for(&already.provider_reference), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_amount_must_equal_the_inquiry_total() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let inquiry = successful_inquiry(&mut client, "inq-amount", "531234567891").await;
    let error = client
        .pay_bill(pay("pay-wrong-amount", &inquiry.id, total(&inquiry) - 1, 0))
        .await
        .expect_err("a different amount is refused before reaching the provider");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(
        error.message().contains(&total(&inquiry).to_string()),
        "names the bill total: {}",
        error.message()
    );
}

/// BPJS (OkeBayar spec §4): the inquiry names the months (`account3`); its
/// payment carries the same months and the payer's phone, which loket takes
/// from the inquiry's contact. The simulator refuses a BPJS payment without
/// them (402), so the payment's success shows they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bpjs_bill_is_paid_with_the_payers_phone_and_the_inquired_months() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let bpjs = |client_ref: &str, contact: &str| pb::InquireRequest {
        account3: "3".into(),
        contact: contact.into(),
        ..inquire(client_ref, "BPJS", "8888801234567890", 10_000)
    };
    let refused = client
        .inquire(bpjs("bpjs-mail", "payer@example.com"))
        .await
        .expect_err("no phone to pay with");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("contact") && refused.message().contains("phone"),
        "{}",
        refused.message()
    );
    assert_nothing_left_behind(&mut client).await;

    let inquiry = inquired(&mut client, bpjs("bpjs-inq", "081299990000")).await;
    let payment = paid(&mut client, "bpjs-pay", &inquiry).await;
    assert_eq!(app.sim.money_requests_for(&payment.provider_reference), 1);
}

/// A phone line (OkeBayar spec §4, PSTN) is inquired by its area code, here
/// Jakarta's 3-digit `021`, and its number under it, and paid; the simulator
/// bills the line those two name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_line_is_inquired_by_its_area_code_and_number_and_paid() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let inquiry = inquired(
        &mut client,
        pb::InquireRequest {
            account2: "5550001".into(),
            ..inquire("pstn-inq", "TELKOM", "021", 10_000)
        },
    )
    .await;
    assert_eq!(inquiry.account, "021");
    let payment = paid(&mut client, "pstn-pay", &inquiry).await;
    assert_eq!(app.sim.money_requests_for(&payment.provider_reference), 1);
}

/// A field the product does not take is refused naming it, and leaves
/// nothing behind: a PLN prepaid inquiry's request carries the meter number
/// alone, and a BPJS bill's payer phone goes in `contact`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inquiry_field_the_product_does_not_take_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let refusals = [
        pb::InquireRequest {
            contact: "081299990000".into(),
            ..inquire("pln-contact", "PLN20", "512345678901", 0)
        },
        pb::InquireRequest {
            account2: "081299990000".into(),
            account3: "3".into(),
            contact: "081299990000".into(),
            ..inquire("bpjs-line", "BPJS", "8888801234567890", 0)
        },
    ];
    for (request, field) in refusals.into_iter().zip(["contact", "account2"]) {
        let refused = client
            .inquire(request)
            .await
            .expect_err("a field the product does not take");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "{}",
            refused.message()
        );
    }
    assert_nothing_left_behind(&mut client).await;
}
