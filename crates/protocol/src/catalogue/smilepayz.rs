//! Smilepayz v2.0 codes (spec §5, §6): the 7-digit `responseCode` (HTTP status,
//! service code 90/91/92, then Smilepayz's own case code), the 2-digit `code`
//! field, and the order statuses `INIT`, `PROCESSING`, `SUCCESS`, `FAILED`,
//! `EXPIRED`. The table is `catalogue/smilepayz.toml`; response codes are
//! stored as `HTTPxxCC` with `ops` naming the services, and Smilepayz's reuse
//! of one code for different messages is expressed as `match` variants.
//!
//! A 2-digit `code` with a message is first matched against the variants of
//! the 7-digit rows of its HTTP class (`10` → 400, `14` → 403, `99` → 500, …),
//! so `("10", "Insufficient Balance")` reads like `4009103`; a message matching
//! variants of several case codes takes the most cautious. Unlisted 7-digit
//! codes are decoded from their HTTP status; unlisted codes and statuses are
//! `unknown`.

use std::sync::OnceLock;

use super::table::{Spec, Table};
use super::{
    service, structural, structural_response_code, Category, CodeOperation, ExplainError,
    Explanation, ResponseCode, Retry, WhoActs,
};
use crate::{Outcome, Provider};

pub(super) const OPERATIONS: &[CodeOperation] = &[
    CodeOperation::PayIn,
    CodeOperation::PayOut,
    CodeOperation::InquiryStatus,
    CodeOperation::Balance,
    CodeOperation::Callback,
];

const EXPECTED: &str = "Smilepayz codes are a 7-digit responseCode (HTTP + service + case, e.g. 4009103), a 2-digit code (e.g. 00, 10) or an order status (INIT, PROCESSING, SUCCESS, FAILED, EXPIRED)";

const STATUSES: [&str; 5] = ["INIT", "PROCESSING", "SUCCESS", "FAILED", "EXPIRED"];

/// True for a documented order status, in any case.
pub(super) fn is_status_word(code: &str) -> bool {
    STATUSES.iter().any(|s| s.eq_ignore_ascii_case(code))
}

fn is_digits(code: &str, len: usize) -> bool {
    code.len() == len && code.bytes().all(|b| b.is_ascii_digit())
}

/// A word that can be an order status (letters and `_`, upper case in the table).
fn is_word(code: &str) -> bool {
    (2..=24).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
}

fn key_ok(code: &str) -> bool {
    is_digits(code, 2)
        || (is_word(code) && code == code.to_ascii_uppercase())
        || (code.len() == 7
            && is_digits(&code[..3], 3)
            && &code[3..5] == "xx"
            && is_digits(&code[5..], 2))
}

/// The HTTP status a Smilepayz 2-digit `code` goes with (spec §6; 01 and
/// 15 ASSUMED), which is also the prefix of the reply's 7-digit
/// `responseCode` and, ASSUMED, the reply's HTTP status; `None` for a code
/// the spec does not map. The connector checks a reply's fields against
/// each other with it.
pub fn code_http(code: &str) -> Option<u16> {
    Some(match code {
        "00" => 200,
        "01" => 202,
        "10" | "16" => 400,
        "11" => 404,
        "12" => 401,
        "13" => 429,
        "14" => 403,
        "15" => 504,
        "20" => 502,
        "99" => 500,
        _ => return None,
    })
}

pub(super) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::load(&spec()))
}

pub(super) fn spec() -> Spec {
    Spec {
        provider: Provider::Smilepayz,
        operations: OPERATIONS,
        key_ok,
        data: include_str!("../../catalogue/smilepayz.toml"),
    }
}

pub(super) fn map_operation(op: CodeOperation) -> Option<CodeOperation> {
    match op {
        CodeOperation::StatusCheck => Some(CodeOperation::InquiryStatus),
        op if OPERATIONS.contains(&op) => Some(op),
        _ => None,
    }
}

pub(super) fn explain(
    code: &str,
    op: Option<CodeOperation>,
    message: &str,
) -> Result<Explanation, ExplainError> {
    let table = table();
    if let Some(rc) = ResponseCode::split(code) {
        if let Some(svc) = service(rc.service).filter(|s| s.provider == Provider::Smilepayz) {
            if let Some(choice) = table.lookup(&rc.key(), Some(svc.operation), message) {
                return Ok(table.explain_choice(&choice, code, Some(svc.operation)));
            }
        }
        return Ok(structural_response_code(
            Provider::Smilepayz,
            code,
            rc,
            op,
            message,
        ));
    }
    if is_digits(code, 2) {
        if let Some(http) = code_http(code) {
            if let Some(row) = table.find_variant(&format!("{http}xx"), op, message) {
                return Ok(table.explanation(row, code, op));
            }
        }
        if let Some(choice) = table.lookup(code, op, message) {
            return Ok(table.explain_choice(&choice, code, op));
        }
        return Ok(unlisted(
            code,
            op,
            format!("not in catalogue: Smilepayz code {code} is not documented"),
        ));
    }
    if is_word(code) {
        let status = code.to_ascii_uppercase();
        if let Some(choice) = table.lookup(&status, op, message) {
            return Ok(table.explain_choice(&choice, &status, op));
        }
        return Ok(unlisted(
            &status,
            op,
            format!("not in catalogue: order status {status} is not documented"),
        ));
    }
    Err(ExplainError::BadFormat {
        provider: Provider::Smilepayz,
        code: code.to_string(),
        expected: EXPECTED,
    })
}

fn unlisted(code: &str, op: Option<CodeOperation>, message: String) -> Explanation {
    structural(
        Provider::Smilepayz,
        code,
        op,
        message,
        Outcome::Unknown,
        Retry::QueryFirst,
        Category::System,
        WhoActs::Operations,
        "Unlisted value: treat the order as unknown, run inquiry-status by orderNo, and ask Smilepayz what it means.".to_string(),
    )
}
