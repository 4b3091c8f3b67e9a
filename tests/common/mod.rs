//! Request builders shared by the end-to-end tests.
#![allow(dead_code)]

use loket_protocol::pb;

/// An account the OkeBayar simulator treats as scenario `suffix`
/// (see crates/simulators/SCENARIOS.md).
pub fn scenario(suffix: &str) -> String {
    format!("089900000{suffix}")
}

/// Any other account: immediate success.
pub const OK_ACCOUNT: &str = "081234567890";

pub fn purchase(
    client_ref: &str,
    product: &str,
    account: &str,
    wait_ms: u32,
) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        client_ref: client_ref.into(),
        product_code: product.into(),
        account: account.into(),
        inquiry_id: String::new(),
        wait_ms,
    }
}

/// A purchase the ingress accepted (whatever its outcome).
pub async fn bought(
    client: &mut loket_test_support::app::Client,
    request: pb::PurchaseRequest,
) -> pb::Transaction {
    client.purchase(request).await.unwrap().into_inner()
}

/// `transaction`, which must have ended `success`.
pub fn successful(transaction: pb::Transaction) -> pb::Transaction {
    assert_eq!(
        transaction.status(),
        pb::TransactionStatus::Success,
        "{transaction:?}"
    );
    transaction
}

pub fn inquire(client_ref: &str, product: &str, account: &str, wait_ms: u32) -> pb::InquireRequest {
    pb::InquireRequest {
        client_ref: client_ref.into(),
        product_code: product.into(),
        account: account.into(),
        wait_ms,
        ..Default::default()
    }
}

pub fn pay(client_ref: &str, inquiry_id: &str, amount: i64, wait_ms: u32) -> pb::PayBillRequest {
    pb::PayBillRequest {
        client_ref: client_ref.into(),
        inquiry_id: inquiry_id.into(),
        amount: Some(pb::Money {
            minor: amount,
            currency: "IDR".into(),
        }),
        wait_ms,
    }
}

pub fn by_id(id: &str) -> pb::GetTransactionRequest {
    pb::GetTransactionRequest {
        key: Some(pb::get_transaction_request::Key::Id(id.into())),
    }
}

pub fn idr(minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        minor,
        currency: "IDR".into(),
    })
}

pub fn qr_pay(client_ref: &str, amount: i64, wait_ms: u32) -> pb::QrPayRequest {
    pb::QrPayRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        wait_ms,
        ..Default::default()
    }
}

/// A Smilepayz pay-out to a BCA account (the simulator's scenario is the
/// amount modulo 1000).
pub fn pay_out(client_ref: &str, amount: i64, wait_ms: u32) -> pb::PayOutRequest {
    pb::PayOutRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        method: "BCA".into(),
        account: "1234567890".into(),
        receiver_name: "Budi".into(),
        wait_ms,
        ..Default::default()
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
