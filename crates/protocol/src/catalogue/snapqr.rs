//! SNAP BI QR CPM codes (spec §5, §6): the 7-digit `responseCode` (HTTP status,
//! service code, case code) and the 2-digit `latestTransactionStatus`. The
//! table is `catalogue/snapqr.toml`; response codes are stored once per
//! (HTTP, case) as `HTTPxxCC`, with `ops` naming the services a row is limited
//! to (404xx18 is a failure for payment 60 but success for cancel 62 and refund
//! 80). The service code in the code decides the operation.
//!
//! Response codes not in the table are decoded from their HTTP status (see
//! `structural_response_code` in `mod.rs`); an unlisted status value is
//! `unknown`.

use std::sync::OnceLock;

use super::table::{Spec, Table};
use super::{
    service, structural, structural_response_code, Category, CodeOperation, ExplainError,
    Explanation, ResponseCode, Retry, WhoActs,
};
use crate::{Outcome, Provider};

pub(super) const OPERATIONS: &[CodeOperation] = &[
    CodeOperation::Token,
    CodeOperation::QrGenerate,
    CodeOperation::QrPayment,
    CodeOperation::QrQuery,
    CodeOperation::QrCancel,
    CodeOperation::QrRefund,
    CodeOperation::QrNotify,
];

const EXPECTED: &str =
    "SNAP codes are a 7-digit responseCode (HTTP + service + case, e.g. 4046018) or a 2-digit latestTransactionStatus (00-07)";
const EXPECTED_STATUS: &str = "SNAP latestTransactionStatus is 2 digits (00-07)";

fn is_digits(code: &str, len: usize) -> bool {
    code.len() == len && code.bytes().all(|b| b.is_ascii_digit())
}

/// `HTTPxxCC` or a 2-digit status.
fn key_ok(code: &str) -> bool {
    is_digits(code, 2)
        || (code.len() == 7
            && is_digits(&code[..3], 3)
            && &code[3..5] == "xx"
            && is_digits(&code[5..], 2))
}

pub(super) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::load(&spec()))
}

pub(super) fn spec() -> Spec {
    Spec {
        provider: Provider::SnapQr,
        operations: OPERATIONS,
        key_ok,
        data: include_str!("../../catalogue/snapqr.toml"),
    }
}

pub(super) fn map_operation(op: CodeOperation) -> Option<CodeOperation> {
    match op {
        CodeOperation::StatusCheck => Some(CodeOperation::QrQuery),
        CodeOperation::Callback => Some(CodeOperation::QrNotify),
        op if OPERATIONS.contains(&op) => Some(op),
        _ => None,
    }
}

pub(super) fn explain(code: &str, op: Option<CodeOperation>) -> Result<Explanation, ExplainError> {
    if is_digits(code, 2) {
        return status(code, op);
    }
    let Some(rc) = ResponseCode::split(code) else {
        return Err(ExplainError::BadFormat {
            provider: Provider::SnapQr,
            code: code.to_string(),
            expected: EXPECTED,
        });
    };
    let table = table();
    if let Some(svc) = service(rc.service).filter(|s| s.provider == Provider::SnapQr) {
        if let Some(choice) = table.lookup(&rc.key(), Some(svc.operation), "") {
            return Ok(table.explain_choice(&choice, code, Some(svc.operation)));
        }
    }
    Ok(structural_response_code(Provider::SnapQr, code, rc, op, ""))
}

pub(super) fn explain_status(code: &str) -> Result<Explanation, ExplainError> {
    if code.is_empty() {
        return Err(ExplainError::EmptyCode);
    }
    if !is_digits(code, 2) {
        return Err(ExplainError::BadFormat {
            provider: Provider::SnapQr,
            code: code.to_string(),
            expected: EXPECTED_STATUS,
        });
    }
    status(code, Some(CodeOperation::QrQuery))
}

fn status(code: &str, op: Option<CodeOperation>) -> Result<Explanation, ExplainError> {
    let table = table();
    if let Some(choice) = table.lookup(code, op, "") {
        return Ok(table.explain_choice(&choice, code, op));
    }
    Ok(structural(
        Provider::SnapQr,
        code,
        op,
        format!("not in catalogue: latestTransactionStatus {code} is not one of 00-07"),
        Outcome::Unknown,
        Retry::QueryFirst,
        Category::System,
        WhoActs::Operations,
        "Unlisted latestTransactionStatus: treat the payment as unknown, keep querying 61, and ask the issuer what the value means.".to_string(),
    ))
}
