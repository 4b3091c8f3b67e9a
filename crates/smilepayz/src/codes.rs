//! Smilepayz codes → outcomes, through the shared catalogue
//! (`loket_protocol::catalogue`, spec §6). No code table lives here; this
//! module only adds the connector-side rules the catalogue cannot know:
//!
//! - a reply without a readable code is [`Outcome::Unknown`] (rule 1);
//! - the message is passed along, because Smilepayz reuses one code for
//!   different meanings (`4009x01` invalid field vs duplicate order);
//! - a creation that the code accepts is **pending**, whatever the status
//!   says, a final-looking one (`SUCCESS`, `FAILED`, `EXPIRED`) included:
//!   only the inquiry or a confirmed callback decides (a pay-out
//!   `00 PROCESSING` only froze the funds);
//! - an inquiry that was itself rejected says nothing about the order
//!   (unknown), and "order not found" is recognised so the connector can
//!   report `not_found`;
//! - a reply whose `code` and `responseCode` disagree, or whose HTTP status
//!   is not the one its code goes with (spec §6 ASSUMES they are equal), is
//!   [`Outcome::Unknown`] whatever it claims ([`distrust`]).

use loket_connector::report::clip;
use loket_protocol::catalogue::{self, CodeOperation};
use loket_protocol::{Outcome, Provider};

use crate::wire::{OrderStatus, Reply};

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub outcome: Outcome,
    /// The code the outcome came from (responseCode, code or status word).
    pub code: Option<String>,
    /// The provider's message, else the catalogue's meaning.
    pub message: Option<String>,
    pub problem: Option<String>,
}

/// Explains `code` (+ message) for `op`; unexplainable → unknown.
pub fn explain(code: &str, op: CodeOperation, message: &str) -> Classification {
    match catalogue::explain_with_message(Provider::Smilepayz, code, Some(op), message) {
        Ok(e) => Classification {
            outcome: e.outcome,
            code: Some(code.to_string()),
            message: Some(message.to_string())
                .filter(|m| !m.is_empty())
                .or_else(|| Some(e.provider_message.clone()).filter(|m| !m.is_empty())),
            problem: (!e.in_catalogue).then(|| format!("code {code} not in the catalogue")),
        },
        Err(error) => Classification {
            outcome: Outcome::Unknown,
            code: Some(clip(code, 16).to_string()),
            message: Some(message.to_string()).filter(|m| !m.is_empty()),
            problem: Some(format!("code not understood: {error}")),
        },
    }
}

/// Why a reply received on `http_status` decides nothing, whatever its body
/// claims: its `code` and `responseCode` disagree ([`Reply::code_conflict`]),
/// or `http_status` is not the HTTP status its code goes with
/// ([`Reply::code_http`]: `responseCode`'s first three digits, else `code`
/// mapped by spec §6's table). A `00 SUCCESS` on HTTP 404 or a `00`
/// acceptance on HTTP 400 is no answer we can act on. `None` when the reply
/// is consistent, or names no code that maps to a status (classifying such a
/// reply is the catalogue's business: it reads an unmapped code as unknown).
pub fn distrust(reply: &Reply, http_status: u16) -> Option<String> {
    if let Some(conflict) = reply.code_conflict() {
        return Some(conflict);
    }
    let expected = reply.code_http()?;
    (expected != http_status).then(|| {
        let code = reply.classification_code().unwrap_or_default();
        format!("HTTP {http_status}, but code {code} goes with HTTP {expected}")
    })
}

/// The [`Outcome::Unknown`] of a reply [`distrust`] refuses.
fn distrusted(reply: &Reply, problem: String) -> Classification {
    Classification {
        outcome: Outcome::Unknown,
        code: reply.classification_code().map(|c| clip(c, 16).to_string()),
        message: reply.message.clone(),
        problem: Some(format!("{problem}: the reply decides nothing")),
    }
}

/// The outcome of a pay-in / pay-out creation reply.
pub fn classify_create(reply: &Reply, op: CodeOperation, http_status: u16) -> Classification {
    let message = reply.message.clone().unwrap_or_default();
    let Some(code) = reply.classification_code() else {
        return Classification {
            outcome: Outcome::Unknown,
            code: None,
            message: reply.message.clone(),
            problem: Some(format!(
                "HTTP {http_status} reply without code or responseCode"
            )),
        };
    };
    if let Some(problem) = distrust(reply, http_status) {
        // An acceptance on a 4xx, a refusal on a 200, a `00` with a 400
        // responseCode: the order may exist (funds frozen) as well as not.
        return distrusted(reply, problem);
    }
    let mut c = explain(code, op, &message);
    if matches!(c.outcome, Outcome::Success | Outcome::Pending) {
        // Accepted (spec §6: 20090/20091 00 is "order accepted"): pending
        // until the callback / inquiry says final, whatever `status` the
        // creation reply carries; it is never read as success or failure.
        c.outcome = Outcome::Pending;
    }
    if http_status >= 500 && c.outcome == Outcome::Failed {
        // Money-safety rule 1: a 5xx is never a failure, whatever its body
        // claims.
        c.outcome = Outcome::Unknown;
        c.problem = Some(format!("HTTP {http_status}: read as unknown"));
    }
    c
}

/// "(Pay) order not found" on an inquiry: spec §6's `5009x00` / `5009200`
/// (or the bare `99`) *and* a message naming the order. "No record" lets
/// the order be failed, or sent again, so nothing looser counts: not
/// another service's 500 ("Merchant not found", "Channel config not
/// found"), which may only mean the inquiry itself broke while a pay-out
/// was taken. A `code` that disagrees with the `responseCode` is no "not
/// found" either; the HTTP status (500, the code's own) is the caller's to
/// check with [`distrust`].
pub fn is_not_found(reply: &Reply) -> bool {
    let message = reply
        .message
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if reply.code_conflict().is_some() {
        return false;
    }
    let order_not_found_code = match reply.classification_code() {
        Some(code) if code.len() == 7 => matches!(code, "5009000" | "5009100" | "5009200"),
        Some(code) => code == "99",
        None => false,
    };
    order_not_found_code && message.contains("order not found")
}

/// The order's outcome from an inquiry reply: only a successful inquiry
/// reports anything, and then its `status` decides. The HTTP status is the
/// caller's to check first ([`distrust`]); fields that disagree are checked
/// here.
pub fn classify_inquiry(reply: &Reply, original: CodeOperation) -> Classification {
    let message = reply.message.clone().unwrap_or_default();
    if let Some(conflict) = reply.code_conflict() {
        return distrusted(reply, conflict);
    }
    if !reply.is_success() {
        let code = reply.classification_code().unwrap_or_default().to_string();
        return Classification {
            outcome: Outcome::Unknown,
            code: Some(code).filter(|c| !c.is_empty()),
            message: Some(message).filter(|m| !m.is_empty()),
            problem: Some("the inquiry was not answered; the order stays unknown".into()),
        };
    }
    let Some(status) = &reply.status else {
        return Classification {
            outcome: Outcome::Unknown,
            code: reply.classification_code().map(str::to_string),
            message: Some(message).filter(|m| !m.is_empty()),
            problem: Some("inquiry answered without a status".into()),
        };
    };
    // Only the five status words are statuses (spec §5): anything else,
    // a response code above all (`11` would read as a failure), is unknown.
    if let OrderStatus::Unknown(text) = status {
        return Classification {
            outcome: Outcome::Unknown,
            code: Some(clip(text, 16).to_string()).filter(|c| !c.is_empty()),
            message: Some(message).filter(|m| !m.is_empty()),
            problem: Some(format!(
                "inquiry status {:?} is none of INIT, PROCESSING, SUCCESS, FAILED, EXPIRED",
                clip(text, 16)
            )),
        };
    }
    let remark = reply.remark.clone().unwrap_or_default();
    explain(status.as_str(), original, &remark)
}

/// A callback's claimed status.
pub fn classify_callback(status: &str) -> Outcome {
    match OrderStatus::parse(status) {
        OrderStatus::Unknown(_) => Outcome::Unknown,
        known => explain(known.as_str(), CodeOperation::Callback, "").outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Reply {
        Reply::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn creation_replies() {
        let accepted = reply(
            r#"{"code":"00","responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
        );
        assert_eq!(
            classify_create(&accepted, CodeOperation::PayOut, 200).outcome,
            Outcome::Pending
        );
        let weird_success = reply(
            r#"{"code":"00","responseCode":"2009100","message":"Successful","status":"SUCCESS"}"#,
        );
        assert_eq!(
            classify_create(&weird_success, CodeOperation::PayOut, 200).outcome,
            Outcome::Pending
        );
        let init = reply(
            r#"{"code":"00","responseCode":"2009000","message":"Successful","status":"INIT"}"#,
        );
        assert_eq!(
            classify_create(&init, CodeOperation::PayIn, 200).outcome,
            Outcome::Pending
        );
        // An accepted order is pending whatever status the creation reply
        // claims: only the inquiry or a confirmed callback decides.
        for status in ["SUCCESS", "FAILED", "EXPIRED"] {
            let accepted = reply(&format!(
                r#"{{"code":"00","responseCode":"2009100","message":"Successful","status":"{status}"}}"#
            ));
            assert_eq!(
                classify_create(&accepted, CodeOperation::PayOut, 200).outcome,
                Outcome::Pending,
                "{status}"
            );
        }
        let insufficient =
            reply(r#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#);
        let c = classify_create(&insufficient, CodeOperation::PayOut, 400);
        assert_eq!(c.outcome, Outcome::Failed);
        assert_eq!(c.code.as_deref(), Some("4009103"));
        let duplicate =
            reply(r#"{"code":"10","responseCode":"4009101","message":"Duplicate payout order"}"#);
        assert_eq!(
            classify_create(&duplicate, CodeOperation::PayOut, 400).outcome,
            Outcome::Unknown
        );
        let invalid = reply(
            r#"{"code":"10","responseCode":"4009001","message":"Invalid Field Format [orderNo]"}"#,
        );
        assert_eq!(
            classify_create(&invalid, CodeOperation::PayIn, 400).outcome,
            Outcome::Failed
        );
        // RELIABILITY #16: a pay-in rejected with a case the catalogue does
        // not list may still have made an order: unknown, and an inquiry.
        let unlisted = reply(r#"{"code":"10","responseCode":"4009099","message":"Something new"}"#);
        let c = classify_create(&unlisted, CodeOperation::PayIn, 400);
        assert_eq!(c.outcome, Outcome::Unknown);
        assert!(c
            .problem
            .is_some_and(|p| p.contains("not in the catalogue")));
        let timeout = reply(
            r#"{"code":"20","responseCode":"5029100","message":"External error: channel timeout"}"#,
        );
        assert_eq!(
            classify_create(&timeout, CodeOperation::PayOut, 502).outcome,
            Outcome::Unknown
        );
        let nocode = reply(r#"{"message":"?"}"#);
        assert_eq!(
            classify_create(&nocode, CodeOperation::PayOut, 200).outcome,
            Outcome::Unknown
        );
    }

    #[test]
    fn inquiry_replies() {
        let ok = |status: &str| {
            reply(&format!(
                r#"{{"code":"00","responseCode":"2009200","message":"Successful","status":"{status}"}}"#
            ))
        };
        assert_eq!(
            classify_inquiry(&ok("SUCCESS"), CodeOperation::PayIn).outcome,
            Outcome::Success
        );
        assert_eq!(
            classify_inquiry(&ok("EXPIRED"), CodeOperation::PayIn).outcome,
            Outcome::Failed
        );
        assert_eq!(
            classify_inquiry(&ok("FAILED"), CodeOperation::PayOut).outcome,
            Outcome::Failed
        );
        assert_eq!(
            classify_inquiry(&ok("PROCESSING"), CodeOperation::PayOut).outcome,
            Outcome::Pending
        );
        assert_eq!(
            classify_inquiry(&ok("INIT"), CodeOperation::PayIn).outcome,
            Outcome::Pending
        );
        assert_eq!(
            classify_inquiry(&ok("REVERSED"), CodeOperation::PayIn).outcome,
            Outcome::Unknown
        );
        // A response code where the status word belongs is no status.
        for code in ["11", "12", "00", "4009103", "5029100"] {
            let c = classify_inquiry(&ok(code), CodeOperation::PayOut);
            assert_eq!(c.outcome, Outcome::Unknown, "{code}");
            assert!(c.problem.is_some(), "{code}");
            assert_eq!(classify_callback(code), Outcome::Unknown, "{code}");
        }
        let rejected =
            reply(r#"{"code":"13","responseCode":"4299200","message":"TOO_MANY_REQUESTS"}"#);
        assert_eq!(
            classify_inquiry(&rejected, CodeOperation::PayOut).outcome,
            Outcome::Unknown
        );
        let missing =
            reply(r#"{"code":"99","responseCode":"5009200","message":"Order not found"}"#);
        assert!(is_not_found(&missing));
        assert!(!is_not_found(&rejected));
        for body in [
            r#"{"code":"99","responseCode":"5009200","message":"Pay order not found"}"#,
            r#"{"code":"99","responseCode":"5009100","message":"Payout order not found"}"#,
            r#"{"code":"99","message":"Order not found"}"#,
        ] {
            assert!(is_not_found(&reply(body)), "{body}");
        }
        for body in [
            r#"{"code":"99","responseCode":"5009200","message":"Merchant not found"}"#,
            r#"{"code":"99","responseCode":"5009200","message":"Channel config not found"}"#,
            r#"{"code":"99","responseCode":"5007300","message":"Order not found"}"#,
            r#"{"code":"20","responseCode":"5029200","message":"Order not found"}"#,
        ] {
            assert!(!is_not_found(&reply(body)), "{body}");
        }
        assert_eq!(classify_callback("SUCCESS"), Outcome::Success);
        assert_eq!(classify_callback("expired"), Outcome::Failed);
    }

    /// `code` 00 says "accepted" (a pay-out's funds frozen), responseCode
    /// 4009103 says "refused": believing either could lose money (a pay-out
    /// marked refused and sent again under a new order, or a refused one
    /// awaited), so the reply decides nothing, on any HTTP status.
    #[test]
    fn a_creation_whose_code_and_response_code_disagree_is_unknown() {
        for (body, op) in [
            (
                r#"{"code":"00","responseCode":"4009103","message":"Insufficient Balance","status":"PROCESSING"}"#,
                CodeOperation::PayOut,
            ),
            (
                r#"{"code":"10","responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
                CodeOperation::PayOut,
            ),
            (
                r#"{"code":"00","responseCode":"4009001","message":"Invalid Field Format [orderNo]","status":"INIT"}"#,
                CodeOperation::PayIn,
            ),
            (
                r#"{"code":"10","responseCode":"2009000","message":"Successful","status":"INIT"}"#,
                CodeOperation::PayIn,
            ),
        ] {
            for http in [200, 400] {
                let c = classify_create(&reply(body), op, http);
                assert_eq!(c.outcome, Outcome::Unknown, "HTTP {http}: {body}");
                let problem = c.problem.unwrap_or_default();
                let r = reply(body);
                let (code, rc) = (r.code.unwrap(), r.response_code.unwrap());
                assert!(
                    problem.contains(&format!("code {code}")) && problem.contains(&rc),
                    "HTTP {http}: {problem}"
                );
            }
        }
        // A code the spec maps to no HTTP status confirms nothing either.
        let c = classify_create(
            &reply(r#"{"code":"42","responseCode":"4009103","message":"Insufficient Balance"}"#),
            CodeOperation::PayOut,
            400,
        );
        assert_eq!(c.outcome, Outcome::Unknown);
        assert!(c.problem.is_some_and(|p| p.contains("4009103")));
        // Agreeing fields still classify as before; a malformed responseCode
        // is not read, and `code` alone decides.
        let agreeing =
            reply(r#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#);
        assert_eq!(agreeing.code_conflict(), None);
        let malformed = reply(
            r#"{"code":"00","responseCode":"40091","message":"Successful","status":"PROCESSING"}"#,
        );
        assert_eq!(malformed.code_conflict(), None);
        assert_eq!(
            classify_create(&malformed, CodeOperation::PayOut, 200).outcome,
            Outcome::Pending
        );
    }

    /// Spec §6 ASSUMES the HTTP status is the code's: a reply that breaks
    /// it decides nothing, while a refusal on its own 4xx is still failed.
    #[test]
    fn a_creation_on_an_http_status_its_code_does_not_go_with_is_unknown() {
        for (http, body) in [
            (
                400,
                r#"{"code":"00","responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
            ),
            (
                400,
                r#"{"code":"00","message":"Successful","status":"PROCESSING"}"#,
            ),
            (
                404,
                r#"{"code":"00","responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
            ),
            (
                429,
                r#"{"responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
            ),
            (
                200,
                r#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#,
            ),
            (200, r#"{"code":"10","message":"Insufficient Balance"}"#),
            (
                401,
                r#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#,
            ),
            (
                404,
                r#"{"code":"14","responseCode":"4039101","message":"Do Not Honor"}"#,
            ),
        ] {
            let c = classify_create(&reply(body), CodeOperation::PayOut, http);
            assert_eq!(c.outcome, Outcome::Unknown, "HTTP {http}: {body}");
            let problem = c.problem.unwrap_or_default();
            assert!(
                problem.contains(&format!("HTTP {http}")) && problem.contains("goes with HTTP"),
                "HTTP {http}: {problem}"
            );
        }
        // The refusal on its own status is final, as before.
        for (http, body, op) in [
            (
                400,
                r#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#,
                CodeOperation::PayOut,
            ),
            (
                400,
                r#"{"code":"10","message":"Insufficient Balance"}"#,
                CodeOperation::PayOut,
            ),
            (
                403,
                r#"{"code":"14","responseCode":"4039101","message":"Do Not Honor"}"#,
                CodeOperation::PayOut,
            ),
            (
                404,
                r#"{"code":"11","responseCode":"4049002","message":"Partner :20001 Not Found"}"#,
                CodeOperation::PayIn,
            ),
            (
                401,
                r#"{"code":"12","responseCode":"4019000","message":"Unauthorized. [Signature]"}"#,
                CodeOperation::PayIn,
            ),
        ] {
            let c = classify_create(&reply(body), op, http);
            assert_eq!(c.outcome, Outcome::Failed, "HTTP {http}: {body}");
            assert_eq!(distrust(&reply(body), http), None, "HTTP {http}: {body}");
        }
        // And an acceptance on a 200 is pending.
        let accepted = reply(
            r#"{"code":"00","responseCode":"2009100","message":"Successful","status":"PROCESSING"}"#,
        );
        assert_eq!(distrust(&accepted, 200), None);
        assert_eq!(
            classify_create(&accepted, CodeOperation::PayOut, 200).outcome,
            Outcome::Pending
        );
    }

    #[test]
    fn an_inquiry_whose_code_and_response_code_disagree_is_unknown() {
        for body in [
            r#"{"code":"00","responseCode":"4009203","message":"Successful","status":"SUCCESS"}"#,
            r#"{"code":"10","responseCode":"2009200","message":"Successful","status":"SUCCESS"}"#,
            r#"{"code":"99","responseCode":"2009200","message":"Successful","status":"FAILED"}"#,
            r#"{"code":"00","responseCode":"5009200","message":"Successful","status":"FAILED"}"#,
        ] {
            let r = reply(body);
            assert!(!r.is_success(), "{body}");
            let c = classify_inquiry(&r, CodeOperation::PayOut);
            assert_eq!(c.outcome, Outcome::Unknown, "{body}");
            assert!(c.problem.is_some_and(|p| p.contains("disagree")), "{body}");
        }
        // "Order not found" under a code that says otherwise is not "not found".
        let r = reply(r#"{"code":"00","responseCode":"5009200","message":"Order not found"}"#);
        assert!(!is_not_found(&r));
        // The spec's own not-found reply (HTTP 500 = its prefix) still is.
        let r = reply(r#"{"code":"99","responseCode":"5009200","message":"Order not found"}"#);
        assert!(is_not_found(&r));
        assert_eq!(distrust(&r, 500), None);
        assert!(distrust(&r, 200).is_some());
    }
}
