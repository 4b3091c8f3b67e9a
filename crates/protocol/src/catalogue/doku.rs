//! DOKU Biller's 4-character `XXYY` response codes (spec §4). The table is
//! `catalogue/doku.toml`; its operations are `bill_inquiry`, `bill_payment` and
//! `advice` (purchase and prepaid inquiry map onto payment and inquiry; status
//! check and callback onto advice, whose reply carries the payment's status).
//!
//! Codes not in the table are decoded by prefix — `U0`/`U1` user error, `IT`
//! partner integration, `SY` DOKU switching, `UE` not yet mapped — and, per
//! the spec's "UExx / unlisted" row, are `failed` on an inquiry and `unknown`
//! (send advice) on a payment, an advice or an unknown operation.

use std::sync::OnceLock;

use super::table::{Spec, Table};
use super::{structural, Category, CodeOperation, ExplainError, Explanation, Retry, WhoActs};
use crate::{Outcome, Provider};

pub(super) const OPERATIONS: &[CodeOperation] = &[
    CodeOperation::BillInquiry,
    CodeOperation::BillPayment,
    CodeOperation::Advice,
];

const EXPECTED: &str = "DOKU codes are 4 letters or digits (XXYY, e.g. 0000, 5586, IT04)";

fn key_ok(code: &str) -> bool {
    code.len() == 4
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

pub(super) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::load(&spec()))
}

pub(super) fn spec() -> Spec {
    Spec {
        provider: Provider::Doku,
        operations: OPERATIONS,
        key_ok,
        data: include_str!("../../catalogue/doku.toml"),
    }
}

pub(super) fn map_operation(op: CodeOperation) -> Option<CodeOperation> {
    match op {
        CodeOperation::BillInquiry | CodeOperation::PrepaidInquiry => {
            Some(CodeOperation::BillInquiry)
        }
        CodeOperation::BillPayment | CodeOperation::Purchase => Some(CodeOperation::BillPayment),
        CodeOperation::Advice | CodeOperation::StatusCheck | CodeOperation::Callback => {
            Some(CodeOperation::Advice)
        }
        _ => None,
    }
}

pub(super) fn explain(code: &str, op: Option<CodeOperation>) -> Result<Explanation, ExplainError> {
    if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ExplainError::BadFormat {
            provider: Provider::Doku,
            code: code.to_string(),
            expected: EXPECTED,
        });
    }
    let code = code.to_ascii_uppercase();
    let table = table();
    if let Some(choice) = table.lookup(&code, op, "") {
        return Ok(table.explain_choice(&choice, &code, op));
    }
    let (category, class) = match &code[..2] {
        "U0" | "U1" => (Category::UserInput, "user error (U0/U1)"),
        "IT" => (Category::Integration, "partner-integration error (IT)"),
        "SY" => (Category::ProviderOutage, "DOKU switching error (SY)"),
        "UE" => (Category::System, "code DOKU has not mapped yet (UE)"),
        _ => (Category::System, "code with an unrecognised prefix"),
    };
    let message = format!("not in catalogue: {code}, a {class}");
    Ok(if op == Some(CodeOperation::BillInquiry) {
        structural(
            Provider::Doku,
            &code,
            op,
            message,
            Outcome::Failed,
            Retry::No,
            category,
            WhoActs::Operations,
            format!("{code} is not in the catalogue ({class}); on an inquiry it means the inquiry failed and nothing was paid. Alert and ask DOKU what {code} means."),
        )
    } else {
        structural(
            Provider::Doku,
            &code,
            op,
            message,
            Outcome::Unknown,
            Retry::QueryFirst,
            category,
            WhoActs::Operations,
            format!("{code} is not in the catalogue ({class}): the payment may have gone through. Send advice for the payment's final status; never pay again; ask DOKU what {code} means."),
        )
    })
}
