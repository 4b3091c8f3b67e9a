//! OkeBayar's 3-digit status codes (`transactionstatus`, `responsecode`,
//! callback `status`; spec §7). The table is `catalogue/okebayar.toml`.
//!
//! Codes not in the table follow OkeBayar's own finality rule: a code starting
//! with `0` or `1` is non-final (pending), any other is a final failure by
//! rule (alert, and check the status before any refund).

use std::sync::OnceLock;

use super::table::{Spec, Table};
use super::{structural, Category, CodeOperation, ExplainError, Explanation, Retry, WhoActs};
use crate::{Outcome, Provider};

pub(super) const OPERATIONS: &[CodeOperation] = &[
    CodeOperation::Purchase,
    CodeOperation::PrepaidInquiry,
    CodeOperation::BillInquiry,
    CodeOperation::BillPayment,
    CodeOperation::StatusCheck,
    CodeOperation::Balance,
    CodeOperation::Callback,
];

const EXPECTED: &str = "OkeBayar codes are 3 digits";

fn key_ok(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::load(&spec()))
}

pub(super) fn spec() -> Spec {
    Spec {
        provider: Provider::OkeBayar,
        operations: OPERATIONS,
        key_ok,
        data: include_str!("../../catalogue/okebayar.toml"),
    }
}

pub(super) fn map_operation(op: CodeOperation) -> Option<CodeOperation> {
    OPERATIONS.contains(&op).then_some(op)
}

pub(super) fn explain(code: &str, op: Option<CodeOperation>) -> Result<Explanation, ExplainError> {
    if !key_ok(code) {
        return Err(ExplainError::BadFormat {
            provider: Provider::OkeBayar,
            code: code.to_string(),
            expected: EXPECTED,
        });
    }
    let table = table();
    if let Some(choice) = table.lookup(code, op, "") {
        return Ok(table.explain_choice(&choice, code, op));
    }
    Ok(if code.starts_with('0') || code.starts_with('1') {
        structural(
            Provider::OkeBayar,
            code,
            op,
            format!("not in catalogue: {code} is non-final by OkeBayar's rule (0xx/1xx)"),
            Outcome::Pending,
            Retry::No,
            Category::System,
            WhoActs::Operations,
            "Non-final by OkeBayar's rule (codes starting with 0 or 1): keep polling the status; do not resubmit; alert if it persists and ask OkeBayar what the code means.".to_string(),
        )
    } else {
        structural(
            Provider::OkeBayar,
            code,
            op,
            format!("not in catalogue: {code} is a final failure by OkeBayar's rule (not 0xx/1xx)"),
            Outcome::Failed,
            Retry::No,
            Category::System,
            WhoActs::Operations,
            "Final failure by OkeBayar's rule (codes not starting with 0 or 1). Alert; run a status check before any refund; ask OkeBayar what the code means.".to_string(),
        )
    })
}
