//! OkeBayar's 3-digit status codes (`transactionstatus`, `responsecode`,
//! callback `status`; spec §7). The table is `catalogue/okebayar.toml`.
//!
//! Codes not in the table: a code starting with `0` or `1` is non-final
//! (pending), by OkeBayar's own finality rule. Any other is a final failure
//! by that rule, but loket does not fail a transaction on a code it does
//! not know (RELIABILITY #16, money-safety rule 1; the spec's own action is
//! "cek-status before refund"): it is `unknown`, checked by status, and an
//! unresolved one reaches `needs_review`.

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
            format!("not in catalogue: {code} (a final failure by OkeBayar's rule, not trusted unknown)"),
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::System,
            WhoActs::Operations,
            "Not in the catalogue. OkeBayar's rule makes a code not starting with 0 or 1 a final failure, but loket fails nothing on a code it does not know: it checks the status, and a transaction still unresolved reaches needs_review. Ask OkeBayar what the code means, then add it to the catalogue.".to_string(),
        )
    })
}
