//! Rows for tests.

use chrono::{DateTime, TimeZone, Utc};
use loket_protocol::TransactionStatus as S;
use loket_store::TransactionRow;
use uuid::Uuid;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
}

pub fn row(status: S) -> TransactionRow {
    TransactionRow {
        id: Uuid::nil(),
        client_id: Uuid::nil(),
        client_ref: "c-1".into(),
        kind: "prepaid_purchase".into(),
        status: status.as_str().into(),
        provider: "okebayar".into(),
        product_code: "TSEL10".into(),
        provider_product_code: "S10".into(),
        account: "081234567890".into(),
        account2: String::new(),
        account3: String::new(),
        contact: String::new(),
        amount_minor: Some(10_500),
        currency: "IDR".into(),
        request_hash: vec![1, 2, 3],
        provider_reference: "LKT0001".into(),
        provider_trace: None,
        provider_code: None,
        provider_message: None,
        serial_number: None,
        provider_amount_minor: None,
        amount_mismatch: false,
        inquiry_id: None,
        bill: None,
        inquiry_data: None,
        expires_at: None,
        dispatched_at: Some(t0()),
        dispatch_count: 1,
        next_check_at: None,
        check_count: 0,
        not_found_since: None,
        review_reason: None,
        reviewed_from: None,
        created_at: t0(),
        updated_at: t0(),
        finalized_at: None,
        original_id: None,
        method: String::new(),
        details: None,
        payment: None,
    }
}
