use super::tests_support::{row, t0};
use super::*;
use crate::schedule::{Schedule, ScheduleSettings};
use chrono::Duration;
use loket_protocol::TransactionStatus as S;
use uuid::Uuid;

fn policy() -> Policy {
    Policy {
        schedule: Schedule::new(
            "okebayar",
            &ScheduleSettings {
                delays_ms: vec![300_000, 600_000],
                unknown_first_ms: 30_000,
                jitter_percent: 0,
            },
        )
        .unwrap(),
        not_found_grace: Duration::minutes(5),
    }
}

fn report(outcome: Outcome, code: &str) -> Report {
    Report {
        provider_code: Some(code.into()),
        ..Report::new("cmd:x:0", Source::Result, outcome)
    }
}

fn success(code: &str, sn: Option<&str>) -> Report {
    Report {
        serial_number: sn.map(Into::into),
        provider_trace: Some("TRACE-1".into()),
        provider_message: Some("Sukses".into()),
        ..report(Outcome::Success, code)
    }
}

/// Applies a sequence of reports, as the reconciler would (each plan's
/// `next` is the next locked row).
fn apply_all(
    start: TransactionRow,
    reports: &[Report],
    at: DateTime<Utc>,
) -> (TransactionRow, Vec<Plan>) {
    let mut current = start;
    let mut plans = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        let plan = plan(
            &current,
            report,
            at + Duration::seconds(i as i64),
            &policy(),
        )
        .unwrap();
        current = plan.next.clone();
        plans.push(plan);
    }
    (current, plans)
}

#[test]
fn success_moves_and_writes_every_provider_field() {
    let now = t0() + Duration::seconds(3);
    let report = Report {
        provider_amount_minor: Some(10_500),
        ..success("000", Some("SN-123"))
    };
    let plan = plan(&row(S::Received), &report, now, &policy()).unwrap();
    assert_eq!(plan.verdict, Verdict::Moved);
    assert_eq!((plan.from, plan.to), (S::Received, S::Success));
    assert!(plan.changed);
    let next = &plan.next;
    assert_eq!(next.status, "success");
    assert_eq!(next.provider_code.as_deref(), Some("000"));
    assert_eq!(next.provider_message.as_deref(), Some("Sukses"));
    assert_eq!(next.provider_trace.as_deref(), Some("TRACE-1"));
    assert_eq!(next.serial_number.as_deref(), Some("SN-123"));
    assert_eq!(next.provider_amount_minor, Some(10_500));
    assert!(!next.amount_mismatch);
    assert_eq!(next.finalized_at, Some(now));
    assert_eq!(next.updated_at, now);
    assert_eq!(next.next_check_at, None);
    assert!(plan.alert.is_none());
    assert_eq!(plan.event.source, "result");
    assert_eq!(plan.event.from_status, Some(S::Received));
    assert_eq!(plan.event.to_status, Some(S::Success));
    assert_eq!(plan.event.provider_code.as_deref(), Some("000"));
    assert_eq!(plan.event.detail["outcome"], "success");
    assert_eq!(plan.event.detail["event_id"], "cmd:x:0");
    assert_eq!(plan.event.detail["serial_number"], "SN-123");
}

#[test]
fn applying_the_same_report_twice_changes_nothing_the_second_time() {
    let first = plan(
        &row(S::Received),
        &success("000", Some("SN-1")),
        t0(),
        &policy(),
    )
    .unwrap();
    let again = plan(
        &first.next,
        &success("000", Some("SN-1")),
        t0() + Duration::minutes(1),
        &policy(),
    )
    .unwrap();
    assert_eq!(again.verdict, Verdict::Kept);
    assert!(!again.changed, "a duplicate must not write");
    assert_eq!(again.next.updated_at, first.next.updated_at);
    assert_eq!(again.next.finalized_at, first.next.finalized_at);
}

#[test]
fn out_of_order_pending_after_final_keeps_the_final_state_and_code() {
    let (last, plans) = apply_all(
        row(S::Received),
        &[
            success("000", Some("SN-9")),
            report(Outcome::Pending, "002"),
            report(Outcome::Unknown, ""),
        ],
        t0(),
    );
    assert_eq!(last.status, "success");
    assert_eq!(
        last.provider_code.as_deref(),
        Some("000"),
        "a late pending never erases the final code"
    );
    assert_eq!(last.serial_number.as_deref(), Some("SN-9"));
    assert_eq!(
        last.next_check_at, None,
        "no status check for a final transaction"
    );
    assert!(plans[1..]
        .iter()
        .all(|p| p.verdict == Verdict::Kept && !p.changed));
    // The late report is still logged.
    assert_eq!(plans[1].event.from_status, Some(S::Success));
    assert_eq!(plans[1].event.to_status, Some(S::Success));
}

#[test]
fn pending_then_final_overwrites_the_pending_code() {
    let (last, plans) = apply_all(
        row(S::Received),
        &[
            report(Outcome::Pending, "002"),
            success("000", Some("SN-2")),
        ],
        t0(),
    );
    assert_eq!(plans[0].to, S::Pending);
    assert_eq!(plans[0].next.provider_code.as_deref(), Some("002"));
    assert_eq!(last.status, "success");
    assert_eq!(last.provider_code.as_deref(), Some("000"));
}

#[test]
fn conflicting_finals_go_to_review_with_both_outcomes_named() {
    let failed = Report {
        provider_message: Some("Nomor salah".into()),
        ..report(Outcome::Failed, "204")
    };
    let (after_fail, _) = apply_all(row(S::Received), &[failed], t0());
    let finalized = after_fail.finalized_at;
    let now = t0() + Duration::minutes(2);
    let spoof = Report {
        event_id: "chk:x:3".into(),
        source: Source::StatusCheck,
        ..success("000", Some("SN-X"))
    };
    let plan = plan(&after_fail, &spoof, now, &policy()).unwrap();
    assert_eq!(plan.verdict, Verdict::Conflict);
    assert_eq!(plan.next.status, "needs_review");
    let reason = plan.next.review_reason.clone().unwrap();
    assert!(
        reason.contains("failed") && reason.contains("204"),
        "{reason}"
    );
    assert!(
        reason.contains("success") && reason.contains("000"),
        "{reason}"
    );
    assert_eq!(plan.alert.as_deref(), Some(reason.as_str()));
    // The recorded provider fields stay those of the first final report.
    assert_eq!(plan.next.provider_code.as_deref(), Some("204"));
    assert_eq!(plan.next.provider_message.as_deref(), Some("Nomor salah"));
    assert_eq!(plan.next.finalized_at, finalized);
    // The serial number the disbelieved report carried is kept: the
    // evidence an operator must not settle the case failed over unawares.
    assert_eq!(plan.next.serial_number.as_deref(), Some("SN-X"));
    let refused = plan_decision(&plan.next, &decision(S::Failed, None), SEEN, None, now).unwrap();
    assert_eq!(refused.verdict, Verdict::Refused);
    assert_eq!(
        refused.event.detail["refused"],
        Refusal::HoldsSerialNumber.to_string()
    );
    assert_eq!(plan.event.to_status, Some(S::NeedsReview));
    assert_eq!(plan.event.source, "status_check");
    // Once parked, further reports change nothing.
    let later = super::plan(&plan.next, &report(Outcome::Failed, "204"), now, &policy()).unwrap();
    assert_eq!(later.next.status, "needs_review");
    assert!(!later.changed);
}

#[test]
fn serial_number_arriving_later_is_filled_in_without_touching_the_status() {
    // OkeBayar 001: success without SN first, the SN arrives with a later report.
    let (after_first, _) = apply_all(row(S::Received), &[success("000", None)], t0());
    let finalized = after_first.finalized_at;
    let now = t0() + Duration::minutes(6);
    let later = Report {
        provider_message: Some("another message".into()),
        ..success("000", Some("SN-LATE"))
    };
    let plan = plan(&after_first, &later, now, &policy()).unwrap();
    assert_eq!(plan.verdict, Verdict::Kept);
    assert!(plan.changed);
    assert_eq!(plan.next.serial_number.as_deref(), Some("SN-LATE"));
    assert_eq!(plan.next.status, "success");
    assert_eq!(
        plan.next.finalized_at, finalized,
        "finalized_at is the first final report's"
    );
    assert_eq!(
        plan.next.provider_message.as_deref(),
        Some("Sukses"),
        "filled fields are never overwritten on keep"
    );
    assert_eq!(plan.next.updated_at, now);
}

#[test]
fn amount_mismatch_is_flagged_and_never_changes_the_status() {
    let charged_more = Report {
        provider_amount_minor: Some(11_000),
        ..success("000", Some("SN"))
    };
    let plan = plan(&row(S::Pending), &charged_more, t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "success");
    assert!(plan.next.amount_mismatch);
    assert_eq!(plan.next.provider_amount_minor, Some(11_000));
    assert_eq!(
        plan.amount_mismatch,
        Some(AmountMismatch {
            expected: 10_500,
            reported: Some(11_000)
        })
    );
    assert_eq!(
        plan.event.detail["amount_mismatch"]["expected_minor"],
        10_500
    );
    assert_eq!(
        plan.event.detail["amount_mismatch"]["reported_minor"],
        11_000
    );

    // A pending report with a different amount flags but stays pending.
    let pending = Report {
        provider_amount_minor: Some(9_000),
        ..report(Outcome::Pending, "002")
    };
    let plan = super::plan(&row(S::Received), &pending, t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "pending");
    assert!(plan.next.amount_mismatch);

    // An amount the connector could not read is flagged alike, and the
    // success still stands; a failure's is not compared.
    let unreadable = Report {
        provider_amount_unreadable: Some("money: amount 10500.5 is not whole rupiah".into()),
        ..success("000", Some("SN"))
    };
    let plan = super::plan(&row(S::Pending), &unreadable, t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "success");
    assert!(plan.next.amount_mismatch);
    assert_eq!(
        plan.amount_mismatch,
        Some(AmountMismatch {
            expected: 10_500,
            reported: None
        })
    );
    assert_eq!(
        plan.event.detail["amount_mismatch"]["reported_minor"]["unreadable"],
        "money: amount 10500.5 is not whole rupiah"
    );
    let refused = Report {
        provider_amount_unreadable: Some("harga: not a number".into()),
        ..report(Outcome::Failed, "204")
    };
    let plan = super::plan(&row(S::Received), &refused, t0(), &policy()).unwrap();
    assert!(!plan.next.amount_mismatch);

    // No expected amount (a bill inquiry): nothing to compare.
    let mut inquiry = row(S::Received);
    inquiry.amount_minor = None;
    let plan = super::plan(&inquiry, &report_with_amount(150_000), t0(), &policy()).unwrap();
    assert!(!plan.next.amount_mismatch);
    assert!(plan.amount_mismatch.is_none());
}

/// Rule 4: a report in which the provider contradicts itself (SNAP: a
/// duplicate saying an earlier attempt succeeded, a query reading failed)
/// decides nothing and parks the transaction for a person, with an alert; a
/// settled transaction is left to the usual rules.
#[test]
fn a_provider_contradicting_itself_parks_the_transaction_for_review() {
    let contradicting = Report {
        contradiction: Some(
            "4096001 says an earlier attempt succeeded, but the query reads 06 (failed)".into(),
        ),
        provider_code: Some("4096001".into()),
        ..report(Outcome::Unknown, "4096001")
    };
    for from in [S::Received, S::Unknown, S::Pending] {
        let plan = plan(&row(from), &contradicting, t0(), &policy()).unwrap();
        assert_eq!(plan.next.status, "needs_review", "{from}");
        assert_eq!(plan.verdict, Verdict::Conflict);
        assert!(
            plan.alert
                .as_deref()
                .is_some_and(|a| a.contains("contradicts itself")),
            "{:?}",
            plan.alert
        );
        assert!(plan
            .next
            .review_reason
            .as_deref()
            .is_some_and(|r| r.contains("reads 06")));
    }
    let plan = plan(&row(S::Success), &contradicting, t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "success");
    assert!(plan.alert.is_none());
}

#[test]
fn a_new_code_without_a_message_does_not_keep_the_old_message() {
    let mut pending = row(S::Pending);
    pending.provider_code = Some("2026000".into());
    pending.provider_message = Some("Request In Progress".into());
    let notify = Report {
        provider_message: None,
        ..success("00", None)
    };
    let plan = plan(&pending, &notify, t0(), &policy()).unwrap();
    assert_eq!(plan.next.provider_code.as_deref(), Some("00"));
    assert_eq!(plan.next.provider_message, None);
}

#[test]
fn a_failure_reporting_no_charge_is_not_an_amount_mismatch() {
    let failed = Report {
        provider_amount_minor: Some(0),
        ..report(Outcome::Failed, "204")
    };
    let plan = plan(&row(S::Received), &failed, t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "failed");
    assert!(!plan.next.amount_mismatch);
    assert!(plan.amount_mismatch.is_none());
}

/// An unknown report states no amount that moved. OkeBayar's `202`
/// and `240` (server faults, resolved by a status check) carry `harga` 0 for
/// a purchase that may never have happened; neither that nor an unreadable
/// amount on such a report is a mismatch.
#[test]
fn an_unknown_report_is_never_an_amount_mismatch() {
    let server_fault = Report {
        provider_amount_minor: Some(0),
        ..report(Outcome::Unknown, "202")
    };
    let unreadable = Report {
        provider_amount_unreadable: Some("harga: not a number".into()),
        ..report(Outcome::Unknown, "240")
    };
    for unknown in [server_fault, unreadable] {
        let plan = plan(&row(S::Received), &unknown, t0(), &policy()).unwrap();
        assert_eq!(plan.next.status, "unknown");
        assert!(!plan.next.amount_mismatch, "{unknown:?}");
        assert!(plan.amount_mismatch.is_none(), "{unknown:?}");
        assert!(plan.event.detail.get("amount_mismatch").is_none());
    }
}

/// A transaction that ends `failed` charged nothing, so a flag raised
/// on the way (a pending report's different amount) is cleared, by a
/// failing report as by an operator's decision, while the event that raised
/// it keeps its detail and the clearing event says why.
#[test]
fn a_transaction_that_ends_failed_is_no_longer_an_amount_mismatch() {
    let pending = Report {
        provider_amount_minor: Some(9_000),
        ..report(Outcome::Pending, "002")
    };
    let (_, plans) = apply_all(
        row(S::Received),
        &[pending, report(Outcome::Failed, "201")],
        t0(),
    );
    let (flagged, failed) = (&plans[0], &plans[1]);
    assert!(flagged.next.amount_mismatch);
    assert_eq!(
        flagged.event.detail["amount_mismatch"]["reported_minor"],
        9_000
    );
    assert_eq!(failed.next.status, "failed");
    assert!(!failed.next.amount_mismatch);
    assert!(failed.changed);
    assert!(failed.event.detail["amount_mismatch_cleared"]
        .as_str()
        .is_some_and(|why| why.contains("nothing was charged")));

    let mut flagged_in_review = parked(S::Success, None);
    flagged_in_review.amount_mismatch = true;
    let decided = plan_decision(
        &flagged_in_review,
        &decision(S::Failed, None),
        SEEN,
        None,
        t0(),
    )
    .unwrap();
    assert_eq!(decided.next.status, "failed");
    assert!(!decided.next.amount_mismatch);
    assert!(decided
        .event
        .detail
        .get("amount_mismatch_cleared")
        .is_some());
    let kept = plan_decision(
        &flagged_in_review,
        &decision(S::Success, None),
        SEEN,
        None,
        t0(),
    )
    .unwrap();
    assert!(kept.next.amount_mismatch, "a success keeps its flag");
}

fn report_with_amount(minor: i64) -> Report {
    Report {
        provider_amount_minor: Some(minor),
        ..success("000", None)
    }
}

#[test]
fn pending_and_unknown_get_a_first_check_once() {
    let now = t0();
    let pending = plan(
        &row(S::Received),
        &report(Outcome::Pending, "002"),
        now,
        &policy(),
    )
    .unwrap();
    assert_eq!(pending.next.next_check_at, Some(now + Duration::minutes(5)));
    let unknown = plan(
        &row(S::Received),
        &report(Outcome::Unknown, ""),
        now,
        &policy(),
    )
    .unwrap();
    assert_eq!(unknown.next.status, "unknown");
    assert_eq!(
        unknown.next.next_check_at,
        Some(now + Duration::seconds(30))
    );
    // Already scheduled (the scheduler set it when it published a check):
    // left alone.
    let mut scheduled = row(S::Unknown);
    let due = now + Duration::minutes(10);
    scheduled.next_check_at = Some(due);
    let plan = plan(&scheduled, &report(Outcome::Pending, "002"), now, &policy()).unwrap();
    assert_eq!(plan.next.status, "pending");
    assert_eq!(plan.next.next_check_at, Some(due));
}

#[test]
fn final_and_review_clear_the_check() {
    let mut pending = row(S::Pending);
    pending.next_check_at = Some(t0());
    let plan = plan(&pending, &report(Outcome::Failed, "201"), t0(), &policy()).unwrap();
    assert_eq!(plan.next.status, "failed");
    assert_eq!(plan.next.next_check_at, None);
}

fn not_found(event: &str) -> Report {
    Report {
        not_found: true,
        event_id: event.into(),
        source: Source::StatusCheck,
        ..Report::new(event, Source::StatusCheck, Outcome::Unknown)
    }
}

#[test]
fn not_found_within_grace_keeps_waiting_then_fails_after_it() {
    let start = t0();
    let first = plan(&row(S::Unknown), &not_found("chk:x:0"), start, &policy()).unwrap();
    assert_eq!(first.verdict, Verdict::NotFoundWaiting);
    assert_eq!(first.next.status, "unknown");
    assert_eq!(first.next.not_found_since, Some(start));
    assert!(first.next.next_check_at.is_some(), "still scheduled");

    let within = plan(
        &first.next,
        &not_found("chk:x:1"),
        start + Duration::minutes(5),
        &policy(),
    )
    .unwrap();
    assert_eq!(within.verdict, Verdict::NotFoundWaiting);
    assert_eq!(within.next.status, "unknown");
    assert_eq!(
        within.next.not_found_since,
        Some(start),
        "the clock starts at the first not-found"
    );

    let after = start + Duration::minutes(5) + Duration::seconds(1);
    let expired = plan(&within.next, &not_found("chk:x:2"), after, &policy()).unwrap();
    assert_eq!(expired.verdict, Verdict::NotFoundFailed);
    assert_eq!(expired.next.status, "failed");
    assert_eq!(expired.next.provider_code.as_deref(), Some(NOT_FOUND_CODE));
    assert!(expired
        .next
        .provider_message
        .as_deref()
        .unwrap()
        .contains("LKT0001"));
    assert_eq!(expired.next.finalized_at, Some(after));
    assert_eq!(expired.next.next_check_at, None);
    assert_eq!(expired.event.detail["not_found"], true);
}

#[test]
fn no_record_past_the_grace_fails_nothing_sent_within_the_grace_and_restarts_the_count() {
    let start = t0();
    let mut unknown = row(S::Unknown);
    unknown.not_found_since = Some(start);
    let after = start + Duration::minutes(6);
    let sent_lately = Report {
        sent_within_grace: true,
        ..not_found("chk:x:2")
    };
    let kept = plan(&unknown, &sent_lately, after, &policy()).unwrap();
    assert_eq!(kept.verdict, Verdict::NotFoundWaiting);
    assert_eq!(kept.next.status, "unknown");
    assert_eq!(kept.next.not_found_since, None, "counted afresh");
    assert!(kept.next.next_check_at.is_some(), "still scheduled");
    assert!(kept.event.detail["note"]
        .as_str()
        .unwrap()
        .contains("send was recorded within the grace"));

    // The next "no record" starts the count; the grace runs from it.
    let next = plan(&kept.next, &not_found("chk:x:3"), after, &policy()).unwrap();
    assert_eq!(next.verdict, Verdict::NotFoundWaiting);
    assert_eq!(next.next.not_found_since, Some(after));

    // A transaction the provider acknowledged as pending still goes to
    // review: a recent send does not make its lost record less alarming.
    let mut pending = row(S::Pending);
    pending.not_found_since = Some(start);
    let review = plan(&pending, &sent_lately, after, &policy()).unwrap();
    assert_eq!(review.verdict, Verdict::NotFoundReview);
}

#[test]
fn a_failure_for_no_record_carries_no_provider_explanation() {
    // Smilepayz's catalogue reads any upper-case word as an order status, so
    // loket's own NOT_FOUND used to be explained as an unlisted status,
    // "outcome unknown, do not repeat", next to `failed`.
    let start = t0();
    let first = plan(
        &pay_in_row(S::Unknown),
        &not_found("chk:x:0"),
        start,
        &policy(),
    )
    .unwrap();
    let after = start + Duration::minutes(5) + Duration::seconds(1);
    let failed = plan(&first.next, &not_found("chk:x:1"), after, &policy()).unwrap();
    assert_eq!(failed.next.status, "failed");
    assert_eq!(failed.next.provider_code.as_deref(), Some(NOT_FOUND_CODE));
    assert_eq!(failed.next.explanation(), None);

    let mut provider_failed = failed.next.clone();
    provider_failed.provider_code = Some("FAILED".into());
    assert!(
        provider_failed.explanation().is_some(),
        "a provider's own status word is still explained"
    );
}

#[test]
fn a_failure_for_no_record_goes_to_review_when_the_provider_turns_out_to_have_the_request() {
    let start = t0();
    let waiting = plan(&row(S::Unknown), &not_found("chk:x:0"), start, &policy()).unwrap();
    let failed = plan(
        &waiting.next,
        &not_found("chk:x:1"),
        start + Duration::minutes(6),
        &policy(),
    )
    .unwrap()
    .next;
    assert_eq!(failed.status, "failed");
    let later = start + Duration::minutes(7);

    // The provider holds it as pending, or a send's outcome is unknown:
    // money may move after all.
    let sent_unknown = Report {
        sent: true,
        ..report(Outcome::Unknown, "")
    };
    for late in [report(Outcome::Pending, "002"), sent_unknown] {
        let reviewed = plan(&failed, &late, later, &policy()).unwrap();
        assert_eq!(reviewed.verdict, Verdict::Conflict, "{late:?}");
        assert_eq!(reviewed.next.status, "needs_review");
        assert_eq!(reviewed.next.reviewed_from.as_deref(), Some("failed"));
        assert!(reviewed.alert.is_some());
    }

    // A check that could not tell sent nothing: the failure stands.
    let inconclusive = report(Outcome::Unknown, "");
    let kept = plan(&failed, &inconclusive, later, &policy()).unwrap();
    assert_eq!(kept.next.status, "failed");
    // Nor does a late pending move a failure the provider itself reported.
    let mut refused = row(S::Failed);
    refused.provider_code = Some("204".into());
    let kept = plan(&refused, &report(Outcome::Pending, "002"), later, &policy()).unwrap();
    assert_eq!(kept.next.status, "failed");
}

#[test]
fn a_late_answer_to_an_inquiry_loket_expired_is_kept_without_an_alert() {
    let mut inquiry = row(S::Unknown);
    inquiry.kind = "bill_inquiry".into();
    let (expired, _) = plan_expiry(&inquiry, t0(), Duration::minutes(10));
    assert_eq!(expired.status, "failed");
    let late = plan(
        &expired,
        &success("000", None),
        t0() + Duration::minutes(11),
        &policy(),
    )
    .unwrap();
    assert_eq!(late.verdict, Verdict::Kept);
    assert_eq!(late.next.status, "failed");
    assert!(late.alert.is_none());
    assert!(
        !late.changed,
        "nothing of the late answer is written to the row"
    );
    // A provider's own failure contradicted by success is still a conflict,
    // whatever its code: Smilepayz names a lapsed pay-in EXPIRED, and a payer
    // who pays it late must not go unnoticed.
    for code in ["204", EXPIRED_CODE] {
        let mut refused = row(S::Failed);
        refused.kind = "pay_in".into();
        refused.provider_code = Some(code.into());
        let conflict = plan(&refused, &success("SUCCESS", None), t0(), &policy()).unwrap();
        assert_eq!(conflict.verdict, Verdict::Conflict, "{code}");
        assert_eq!(conflict.next.status, "needs_review", "{code}");
        assert!(conflict.alert.is_some(), "{code}");
    }
}

#[test]
fn not_found_of_a_payment_that_can_still_happen_waits_for_its_expiry_plus_the_grace() {
    // A QR CPM payment sent with a 20-minute expiryTime: the issuer may still
    // record it until then (SNAP spec §2 step 4, status 07).
    let start = t0();
    let expiry = start + Duration::minutes(20);
    let mut qr = row(S::Unknown);
    qr.payment = Some(loket_store::payment_to_json(&pb::PaymentInstructions {
        method: "QRCPM".into(),
        qr_string: "CUSTOMER-QR".into(),
        expires_at: Some(loket_protocol::conversions::timestamp(expiry)),
        ..Default::default()
    }));
    let first = plan(&qr, &not_found("chk:q:0"), start, &policy()).unwrap();
    assert_eq!(first.verdict, Verdict::NotFoundWaiting);

    // Past the grace after the first not-found, but the QR has not expired.
    let later = plan(
        &first.next,
        &not_found("chk:q:1"),
        start + Duration::minutes(6),
        &policy(),
    )
    .unwrap();
    assert_eq!(later.verdict, Verdict::NotFoundWaiting);
    assert_eq!(later.next.status, "unknown");

    let at_deadline = expiry + Duration::minutes(5);
    let still = plan(&later.next, &not_found("chk:q:2"), at_deadline, &policy()).unwrap();
    assert_eq!(still.verdict, Verdict::NotFoundWaiting);

    let after = at_deadline + Duration::seconds(1);
    let failed = plan(&still.next, &not_found("chk:q:3"), after, &policy()).unwrap();
    assert_eq!(failed.verdict, Verdict::NotFoundFailed);
    assert_eq!(failed.next.status, "failed");
    let message = failed.next.provider_message.unwrap();
    assert!(message.contains("payment expired"), "{message}");

    // An expiry already past does not stretch the grace after the first
    // not-found.
    let mut old_qr = qr.clone();
    old_qr.payment = Some(loket_store::payment_to_json(&pb::PaymentInstructions {
        expires_at: Some(loket_protocol::conversions::timestamp(
            start - Duration::hours(1),
        )),
        ..Default::default()
    }));
    let first = plan(&old_qr, &not_found("chk:o:0"), start, &policy()).unwrap();
    let after_grace = start + Duration::minutes(5) + Duration::seconds(1);
    let failed = plan(&first.next, &not_found("chk:o:1"), after_grace, &policy()).unwrap();
    assert_eq!(failed.verdict, Verdict::NotFoundFailed);
}

#[test]
fn not_found_moves_received_to_unknown_and_a_later_sighting_resets_the_clock() {
    let first = plan(&row(S::Received), &not_found("chk:x:cb:1"), t0(), &policy()).unwrap();
    assert_eq!(first.next.status, "unknown");
    let found = plan(
        &first.next,
        &report(Outcome::Pending, "002"),
        t0() + Duration::minutes(1),
        &policy(),
    )
    .unwrap();
    assert_eq!(found.next.status, "pending");
    assert_eq!(found.next.not_found_since, None);
}

/// A status check that timed out (unknown, nothing sent, no provider
/// trace) shows nothing about our reference: the "no record" clock runs on
/// through it, and the next not-found past the grace fails the
/// transaction. It used to restart the clock, so a provider answering
/// every other check with a timeout kept it `unknown` for ever.
#[test]
fn an_inconclusive_check_between_two_not_founds_does_not_restart_the_clock() {
    let start = t0();
    let first = plan(&row(S::Unknown), &not_found("chk:x:0"), start, &policy()).unwrap();
    let timed_out = Report {
        detail: "timeout".into(),
        ..Report::new("chk:x:1", Source::StatusCheck, Outcome::Unknown)
    };
    let inconclusive = plan(
        &first.next,
        &timed_out,
        start + Duration::minutes(2),
        &policy(),
    )
    .unwrap();
    assert_eq!(inconclusive.next.not_found_since, Some(start));
    assert_eq!(inconclusive.next.status, "unknown");

    let after = start + Duration::minutes(5) + Duration::seconds(1);
    let failed = plan(&inconclusive.next, &not_found("chk:x:2"), after, &policy()).unwrap();
    assert_eq!(failed.verdict, Verdict::NotFoundFailed);
    assert_eq!(failed.next.status, "failed");
    assert_eq!(failed.next.provider_code.as_deref(), Some(NOT_FOUND_CODE));
}

/// Which reports restart the "no record" clock: those showing the provider
/// holds our reference (a status of its own, its own trace id for the
/// transaction) or may from now on (a request this delivery sent); never
/// an answer that shows none of that, with or without a generic code.
#[test]
fn the_no_record_clock_restarts_only_on_a_report_showing_the_provider_has_the_reference() {
    let mut waiting = row(S::Unknown);
    waiting.not_found_since = Some(t0());
    let later = t0() + Duration::minutes(1);
    let unknown = |change: fn(&mut Report)| {
        let mut report = Report::new("chk:x:1", Source::StatusCheck, Outcome::Unknown);
        change(&mut report);
        report
    };
    let restarting = [
        report(Outcome::Pending, "002"),
        success("000", Some("SN-1")),
        report(Outcome::Failed, "204"),
        unknown(|r| r.provider_trace = Some("PROVIDER-TRX-9".into())),
        unknown(|r| r.sent = true),
    ];
    for report in restarting {
        let planned = plan(&waiting, &report, later, &policy()).unwrap();
        assert_eq!(planned.next.not_found_since, None, "{report:?}");
    }
    let inconclusive = [
        unknown(|_| ()),
        unknown(|r| r.provider_code = Some("5001700".into())),
    ];
    for report in inconclusive {
        let planned = plan(&waiting, &report, later, &policy()).unwrap();
        assert_eq!(planned.next.not_found_since, Some(t0()), "{report:?}");
    }
}

#[test]
fn not_found_never_fails_a_transaction_the_provider_acknowledged_as_pending() {
    let mut pending = row(S::Pending);
    pending.not_found_since = Some(t0());
    let plan = plan(
        &pending,
        &not_found("chk:x:4"),
        t0() + Duration::hours(1),
        &policy(),
    )
    .unwrap();
    assert_eq!(plan.verdict, Verdict::NotFoundReview);
    assert_eq!(plan.next.status, "needs_review");
    assert!(plan.alert.is_some());
    assert!(plan
        .next
        .review_reason
        .as_deref()
        .unwrap()
        .contains("pending"));
}

#[test]
fn not_found_never_touches_a_settled_transaction() {
    for status in [S::Success, S::Failed, S::NeedsReview] {
        let mut settled = row(status);
        settled.not_found_since = None;
        let plan = plan(
            &settled,
            &not_found("chk:x:9"),
            t0() + Duration::days(3),
            &policy(),
        )
        .unwrap();
        assert_eq!(plan.next.status, status.as_str());
        assert!(!plan.changed, "{status}");
    }
}

#[test]
fn bill_and_inquiry_data_are_stored_with_the_bill_expiry() {
    let mut inquiry = row(S::Received);
    inquiry.kind = "bill_inquiry".into();
    inquiry.amount_minor = None;
    let expires = t0() + Duration::hours(2);
    let bill = pb::BillDetails {
        customer_name: "BUDI".into(),
        bill_amount: Some(pb::Money {
            minor: 150_000,
            currency: "IDR".into(),
        }),
        admin_fee: Some(pb::Money {
            minor: 2_500,
            currency: "IDR".into(),
        }),
        total_amount: Some(pb::Money {
            minor: 152_500,
            currency: "IDR".into(),
        }),
        expires_at: Some(loket_protocol::conversions::timestamp(expires)),
        extra: Default::default(),
    };
    let report = Report {
        bill: Some(bill.clone()),
        inquiry_data: [("inquirycode".to_string(), "INQ-77".to_string())].into(),
        ..success("000", None)
    };
    let plan = plan(&inquiry, &report, t0(), &policy()).unwrap();
    assert_eq!(plan.next.expires_at, Some(expires));
    assert_eq!(
        plan.next.inquiry_data,
        Some(json!({"inquirycode": "INQ-77"}))
    );
    let stored = loket_store::bill_from_json(plan.next.bill.as_ref().unwrap()).unwrap();
    assert_eq!(stored.customer_name, "BUDI");
    assert_eq!(stored.total_amount.unwrap().minor, 152_500);
}

#[test]
fn a_row_with_an_unreadable_status_is_an_error_not_a_guess() {
    let mut bad = row(S::Pending);
    bad.status = "weird".into();
    assert!(matches!(
        plan(&bad, &success("000", None), t0(), &policy()),
        Err(PlanError::BadStatus { .. })
    ));
}

#[test]
fn result_events_decode_into_reports() {
    let event = bus::ResultEvent {
        event_id: "chk:abc:2".into(),
        transaction_id: Uuid::nil().to_string(),
        provider: "okebayar".into(),
        outcome: pb::Outcome::Pending as i32,
        provider_code: " 002 ".into(),
        serial_number: String::new(),
        ..Default::default()
    };
    let report = Report::from_result(&event).unwrap();
    assert_eq!(report.source, Source::StatusCheck);
    assert_eq!(report.provider_code.as_deref(), Some("002"));
    assert_eq!(report.serial_number, None);
    let unspecified = bus::ResultEvent {
        outcome: 0,
        ..event.clone()
    };
    assert!(Report::from_result(&unspecified).is_err());
    let command = bus::ResultEvent {
        event_id: "cmd:abc:0".into(),
        ..event
    };
    assert_eq!(
        Report::from_result(&command).unwrap().source,
        Source::Result
    );
}

/// A negative provider amount in a result or a verified callback (an old
/// or broken connector) is taken as unreadable, flagged and deciding
/// nothing, never as an amount: written, it would break
/// `transactions_provider_amount_not_negative` on every delivery.
#[test]
fn a_negative_provider_amount_is_unreadable() {
    let negative = Some(pb::Money {
        minor: -500,
        currency: "IDR".into(),
    });
    let result = bus::ResultEvent {
        event_id: "cmd:abc:0".into(),
        outcome: pb::Outcome::Success as i32,
        provider_amount: negative.clone(),
        ..Default::default()
    };
    let callback = bus::CallbackEvent {
        event_id: "cb:1".into(),
        claimed_outcome: pb::Outcome::Success as i32,
        verified: true,
        provider_amount: negative,
        ..Default::default()
    };
    for report in [
        Report::from_result(&result).unwrap(),
        Report::from_verified_callback(&callback).unwrap(),
    ] {
        assert_eq!(report.provider_amount_minor, None);
        let why = report.provider_amount_unreadable.clone().unwrap();
        assert!(why.contains("-500"), "{why}");
        let planned = plan(&row(S::Pending), &report, t0(), &policy()).unwrap();
        assert_eq!(planned.next.status, "success");
        assert_eq!(planned.next.provider_amount_minor, None);
        assert!(planned.next.amount_mismatch);
    }
}

/// A report PostgreSQL refuses for good parks its transaction for review
/// with a reason naming the refusal, and writes none of the report's data;
/// a transaction already in review keeps its own reason.
#[test]
fn an_unwritable_report_parks_the_transaction_without_its_data() {
    let mut unknown = row(S::Unknown);
    unknown.next_check_at = Some(t0());
    let report = Report {
        provider_amount_minor: Some(-1),
        serial_number: Some("SN-1".into()),
        ..success("000", None)
    };
    let refusal = "integrity constraint violation 23514, constraint c";
    let parked = plan_unwritable(&unknown, &report, refusal, t0()).unwrap();
    assert_eq!(parked.verdict, Verdict::Unwritable);
    assert_eq!(parked.next.status, "needs_review");
    assert_eq!(parked.next.reviewed_from.as_deref(), Some("unknown"));
    assert_eq!(parked.next.next_check_at, None);
    let reason = parked.next.review_reason.clone().unwrap();
    assert!(
        reason.contains(refusal) && reason.contains("cmd:x:0"),
        "{reason}"
    );
    assert_eq!(parked.alert.as_deref(), Some(reason.as_str()));
    assert_eq!(parked.next.provider_amount_minor, None);
    assert_eq!(parked.next.serial_number, None);
    assert_eq!(parked.event.detail["refused"], refusal);

    let mut in_review = row(S::NeedsReview);
    in_review.review_reason = Some("earlier case".into());
    let kept = plan_unwritable(&in_review, &report, refusal, t0()).unwrap();
    assert!(!kept.changed);
    assert_eq!(kept.next.review_reason.as_deref(), Some("earlier case"));
    assert!(kept.alert.is_some());
}

/// Rule 4 holds for a report PostgreSQL refuses for good too: a final
/// transaction it does not contradict keeps its status (the event records
/// the refusal and the alert says the status stayed), while one it
/// contradicts is parked, as an ordinary contradicting report would park it.
#[test]
fn an_unwritable_report_leaves_a_final_transaction_it_does_not_contradict_as_it_is() {
    let refusal = "data exception 22008";
    for (status, outcome) in [
        (S::Success, Outcome::Success),
        (S::Success, Outcome::Pending),
        (S::Success, Outcome::Unknown),
        (S::Failed, Outcome::Failed),
        (S::Failed, Outcome::Unknown),
    ] {
        let settled = row(status);
        let kept = plan_unwritable(&settled, &report(outcome, "X"), refusal, t0()).unwrap();
        let case = format!("{status} with a {outcome} report");
        assert!(!kept.changed, "{case}");
        assert_eq!((kept.from, kept.to), (status, status), "{case}");
        assert_eq!(kept.next.status, status.as_str(), "{case}");
        assert_eq!(kept.next.review_reason, None, "{case}");
        assert_eq!(kept.event.to_status, Some(status), "{case}");
        assert_eq!(kept.event.detail["refused"], refusal, "{case}");
        let alert = kept.alert.unwrap_or_default();
        assert!(
            alert.contains(refusal) && alert.contains(&format!("stays {status}")),
            "{case}: {alert}"
        );
    }
    for (status, outcome) in [(S::Success, Outcome::Failed), (S::Failed, Outcome::Success)] {
        let settled = row(status);
        let parked = plan_unwritable(&settled, &report(outcome, "X"), refusal, t0()).unwrap();
        assert_eq!(
            parked.next.status, "needs_review",
            "{status} with {outcome}"
        );
        assert_eq!(parked.next.reviewed_from.as_deref(), Some(status.as_str()));
    }
}

#[test]
fn expiry_and_review_plans() {
    let mut inquiry = row(S::Unknown);
    inquiry.kind = "prepaid_inquiry".into();
    inquiry.next_check_at = Some(t0());
    let now = t0() + Duration::minutes(20);
    let (next, event) = plan_expiry(&inquiry, now, Duration::minutes(10));
    assert_eq!(next.status, "failed");
    assert_eq!(next.provider_code.as_deref(), Some(EXPIRED_CODE));
    assert_eq!(next.finalized_at, Some(now));
    assert_eq!(next.next_check_at, None);
    assert_eq!(event.from_status, Some(S::Unknown));
    assert_eq!(event.to_status, Some(S::Failed));

    let mut stuck = row(S::Pending);
    stuck.check_count = 7;
    let (next, event, reason) = plan_review(&stuck, now, Duration::hours(24));
    assert_eq!(next.status, "needs_review");
    assert_eq!(next.review_reason.as_deref(), Some(reason.as_str()));
    assert!(reason.contains("7 status checks"), "{reason}");
    assert_eq!(next.next_check_at, None);
    assert_eq!(next.finalized_at, None);
    assert_eq!(event.source, "review");
}

fn instructions(qr: &str, va: &str) -> pb::PaymentInstructions {
    pb::PaymentInstructions {
        method: if va.is_empty() { "QRIS" } else { "BCA" }.into(),
        qr_string: qr.into(),
        va_number: va.into(),
        payment_url: String::new(),
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_735_790_645,
            nanos: 0,
        }),
    }
}

fn pay_in_row(status: S) -> TransactionRow {
    let mut row = row(status);
    row.kind = "pay_in".into();
    row.provider = "smilepayz".into();
    row.method = "QRIS".into();
    row.amount_minor = Some(150_000);
    row
}

fn with_payment(outcome: Outcome, payment: Option<pb::PaymentInstructions>) -> Report {
    Report {
        payment,
        ..report(outcome, "2000000")
    }
}

#[test]
fn pay_in_instructions_are_stored_with_the_pending_result() {
    let plan = plan(
        &pay_in_row(S::Received),
        &with_payment(Outcome::Pending, Some(instructions("000201QR", ""))),
        t0(),
        &policy(),
    )
    .unwrap();
    assert_eq!(plan.to, S::Pending);
    assert!(plan.changed);
    let stored = loket_store::payment_from_json(plan.next.payment.as_ref().unwrap()).unwrap();
    assert_eq!(stored, instructions("000201QR", ""));
    assert_eq!(plan.next.to_pb().payment, Some(stored));
    assert_eq!(plan.event.detail["payment"]["qr_string"], "000201QR");
}

#[test]
fn stored_instructions_are_never_replaced_by_empty_ones() {
    let (start, _) = apply_all(
        pay_in_row(S::Received),
        &[with_payment(
            Outcome::Pending,
            Some(instructions("000201QR", "")),
        )],
        t0(),
    );
    let kept = start.payment.clone();
    // A status check without instructions, one with an all-empty message,
    // and the final success without any: the instructions stay.
    let empty = pb::PaymentInstructions::default();
    let event = bus::ResultEvent {
        event_id: "chk:x:1".into(),
        outcome: pb::Outcome::Pending as i32,
        payment: Some(empty.clone()),
        ..Default::default()
    };
    assert_eq!(Report::from_result(&event).unwrap().payment, None);
    let contentless = pb::PaymentInstructions {
        method: "QRIS".into(),
        ..empty
    };
    let (end, plans) = apply_all(
        start,
        &[
            with_payment(Outcome::Pending, None),
            with_payment(Outcome::Pending, Some(contentless)),
            with_payment(Outcome::Success, None),
        ],
        t0() + Duration::seconds(10),
    );
    assert_eq!(end.payment, kept);
    assert!(!plans[0].changed);
    assert!(
        !plans[1].changed,
        "contentless instructions never replace real ones"
    );
    assert_eq!(end.status, "success");
}

#[test]
fn instructions_change_only_when_the_status_moves() {
    let (start, _) = apply_all(
        pay_in_row(S::Received),
        &[with_payment(
            Outcome::Pending,
            Some(instructions("000201QR", "")),
        )],
        t0(),
    );
    // Same status: the first instructions stand.
    let planned = plan(
        &start,
        &with_payment(Outcome::Pending, Some(instructions("OTHER", ""))),
        t0() + Duration::seconds(5),
        &policy(),
    )
    .unwrap();
    assert!(!planned.changed);
    // A moving report carries the provider's latest ones.
    let planned = plan(
        &start,
        &with_payment(Outcome::Success, Some(instructions("", "8808123"))),
        t0() + Duration::seconds(6),
        &policy(),
    )
    .unwrap();
    let stored = loket_store::payment_from_json(planned.next.payment.as_ref().unwrap()).unwrap();
    assert_eq!(stored.va_number, "8808123");
    // A row without instructions takes any that say something.
    let planned = plan(
        &pay_in_row(S::Pending),
        &with_payment(
            Outcome::Pending,
            Some(pb::PaymentInstructions {
                method: "QRIS".into(),
                ..Default::default()
            }),
        ),
        t0(),
        &policy(),
    )
    .unwrap();
    assert!(planned.changed);
}

#[test]
fn reversals_settle_on_their_own_row() {
    // A cancel reaching success is planned like any transaction: nothing in
    // the plan refers to its original.
    let mut cancel = row(S::Pending);
    cancel.kind = "qr_cancel".into();
    cancel.provider = "snapqr".into();
    cancel.original_id = Some(Uuid::from_u128(7));
    let plan = plan(
        &cancel,
        &report(Outcome::Success, "2006200"),
        t0(),
        &policy(),
    )
    .unwrap();
    assert_eq!(plan.to, S::Success);
    assert_eq!(plan.next.original_id, Some(Uuid::from_u128(7)));
    assert_eq!(plan.next.payment, None);
}

fn decision(status: S, serial_number: Option<&str>) -> OperatorDecision {
    OperatorDecision {
        event_id: Uuid::from_u128(9),
        transaction_id: Uuid::nil(),
        status,
        reason: "provider confirmed by phone, ticket 42".into(),
        operator: "siti".into(),
        serial_number: serial_number.map(Into::into),
        void_serial_number: false,
        decided_at: t0(),
        seen_event: SEEN,
    }
}

/// The newest history event the decisions of these tests were taken on.
const SEEN: i64 = 17;

fn parked(from: S, serial_number: Option<&str>) -> TransactionRow {
    let mut parked = row(S::NeedsReview);
    parked.reviewed_from = Some(from.as_str().into());
    parked.review_reason = Some("conflicting final reports".into());
    parked.serial_number = serial_number.map(Into::into);
    parked.provider_code = Some("204".into());
    parked
}

#[test]
fn an_operator_settles_a_transaction_in_review_and_keeps_its_case() {
    let now = t0() + Duration::hours(3);
    let start = parked(S::Failed, None);
    let plan = plan_decision(
        &start,
        &decision(S::Success, Some("TOKEN-1")),
        SEEN,
        None,
        now,
    )
    .unwrap();
    assert_eq!(
        (plan.from, plan.to, plan.verdict),
        (S::NeedsReview, S::Success, Verdict::Settled)
    );
    assert!(plan.changed);
    assert_eq!(plan.next.status, "success");
    assert_eq!(plan.next.finalized_at, Some(now));
    assert_eq!(plan.next.updated_at, now);
    assert_eq!(plan.next.serial_number.as_deref(), Some("TOKEN-1"));
    // Nothing else moves: the case and the provider's fields stay.
    let mut expected = start.clone();
    expected.status = "success".into();
    expected.finalized_at = Some(now);
    expected.updated_at = now;
    expected.serial_number = Some("TOKEN-1".into());
    assert_eq!(format!("{:?}", plan.next), format!("{expected:?}"));
    assert_eq!(plan.event.source, "operator");
    let detail = &plan.event.detail;
    assert_eq!(detail["operator"], "siti");
    assert_eq!(detail["reason"], "provider confirmed by phone, ticket 42");
    assert_eq!(detail["event_id"], Uuid::from_u128(9).to_string());
    assert_eq!(detail["decided_at"], t0().to_rfc3339());
    assert_eq!(detail["serial_number"], "TOKEN-1");
    assert_eq!(detail["verdict"], "settled");

    // Failed over the provider's serial: refused, unless declared void;
    // then the row shows none and the event keeps it.
    let with_serial = parked(S::Success, Some("SN-1"));
    let plan = plan_decision(&with_serial, &decision(S::Failed, None), SEEN, None, now).unwrap();
    assert_eq!((plan.verdict, plan.to), (Verdict::Refused, S::NeedsReview));
    assert_eq!(plan.next.serial_number.as_deref(), Some("SN-1"));
    let void = OperatorDecision {
        void_serial_number: true,
        ..decision(S::Failed, None)
    };
    let plan = plan_decision(&with_serial, &void, SEEN, None, now).unwrap();
    assert_eq!((plan.verdict, plan.to), (Verdict::Settled, S::Failed));
    assert_eq!(plan.next.serial_number, None);
    assert_eq!(plan.event.detail["voided_serial_number"], "SN-1");
    let same = plan_decision(
        &with_serial,
        &decision(S::Success, Some("SN-1")),
        SEEN,
        None,
        now,
    )
    .unwrap();
    assert_eq!(same.verdict, Verdict::Settled);
}

#[test]
fn an_operator_decision_outside_review_or_against_a_serial_is_refused() {
    let now = t0() + Duration::hours(3);
    for status in S::ALL.into_iter().filter(|s| *s != S::NeedsReview) {
        let start = row(status);
        let plan = plan_decision(&start, &decision(S::Success, None), SEEN, None, now).unwrap();
        assert_eq!(
            (plan.verdict, plan.changed),
            (Verdict::Refused, false),
            "{status}"
        );
        assert_eq!(format!("{:?}", plan.next), format!("{start:?}"));
        assert_eq!(
            (plan.event.from_status, plan.event.to_status),
            (Some(status), Some(status))
        );
        assert_eq!(
            plan.event.detail["refused"],
            format!("not in needs_review (status {status})")
        );
    }
    let start = parked(S::Success, Some("SN-1"));
    let plan = plan_decision(&start, &decision(S::Success, Some("SN-2")), SEEN, None, now).unwrap();
    assert_eq!(
        (plan.verdict, plan.changed, plan.to),
        (Verdict::Refused, false, S::NeedsReview)
    );
    assert!(plan.event.detail["refused"]
        .as_str()
        .unwrap()
        .contains("serial number"));
    let held = Refusal::InquiryHeldBy {
        payment: Uuid::from_u128(3),
        status: "success".into(),
    };
    let plan = plan_decision(
        &parked(S::Failed, None),
        &decision(S::Success, None),
        SEEN,
        Some(held),
        now,
    )
    .unwrap();
    assert_eq!((plan.verdict, plan.changed), (Verdict::Refused, false));
}

/// A decision is about the case as the operator saw it: with an event added
/// to the history since (a provider's late report kept in review), it is
/// refused, and the refusal says why.
#[test]
fn a_decision_taken_before_the_newest_event_is_refused() {
    let now = t0() + Duration::hours(3);
    let start = parked(S::Pending, Some("SN-PROVIDER"));
    let plan = plan_decision(&start, &decision(S::Failed, None), SEEN + 1, None, now).unwrap();
    assert_eq!((plan.verdict, plan.changed), (Verdict::Refused, false));
    assert_eq!((plan.from, plan.to), (S::NeedsReview, S::NeedsReview));
    assert_eq!(format!("{:?}", plan.next), format!("{start:?}"));
    assert!(plan.event.detail["refused"]
        .as_str()
        .unwrap()
        .contains("history changed"));
    assert_eq!(plan.event.detail["seen_event"], SEEN);
}

/// The answer to the status check an unverified callback claiming `claim`
/// asked for.
fn callback_check(claim: Outcome, answer: Report) -> Report {
    Report {
        event_id: callback_check_id(Uuid::nil(), "cb-1"),
        claimed_by_callback: Some(claim),
        source: Source::StatusCheck,
        ..answer
    }
}

fn failed_with(code: &str) -> TransactionRow {
    let mut failed = row(S::Failed);
    failed.provider_code = Some(code.into());
    failed
}

#[test]
fn callback_check_ids_are_unique_and_recognised() {
    let first = callback_check_id(Uuid::nil(), "okebayar:LKT1:success");
    assert!(first.starts_with("chk:00000000-0000-0000-0000-000000000000:cb:okebayar:LKT1:success:"));
    assert_ne!(
        first,
        callback_check_id(Uuid::nil(), "okebayar:LKT1:success")
    );
    assert!(is_status_check_event(&first));
    assert_eq!(callback_of_check(&first), Some("okebayar:LKT1:success"));
    assert_eq!(
        callback_of_check(&format!("{first}:d2")),
        Some("okebayar:LKT1:success")
    );
    // Scheduled checks, commands, and a check asked before ids were unique.
    assert_eq!(
        callback_of_check("chk:00000000-0000-0000-0000-000000000000:3"),
        None
    );
    assert_eq!(
        callback_of_check("cmd:00000000-0000-0000-0000-000000000000:0"),
        None
    );
    assert_eq!(
        callback_of_check("chk:00000000-0000-0000-0000-000000000000:cb:okebayar:LKT1:success"),
        None
    );
}

#[test]
fn a_callback_claim_against_a_settled_transaction_its_check_cannot_settle_goes_to_review() {
    let unknown = report(Outcome::Unknown, "500");
    let pending = report(Outcome::Pending, "002");
    let cases = [
        // (row, claim, check answer, parked)
        (
            failed_with(NOT_FOUND_CODE),
            Outcome::Success,
            unknown.clone(),
            true,
        ),
        (
            failed_with(NOT_FOUND_CODE),
            Outcome::Success,
            not_found("x"),
            true,
        ),
        (failed_with("204"), Outcome::Success, unknown.clone(), true),
        (failed_with("204"), Outcome::Success, pending.clone(), true),
        (row(S::Success), Outcome::Failed, unknown.clone(), true),
        (row(S::Success), Outcome::Failed, not_found("x"), true),
        // A provider's own failure may leave no record (OkeBayar 203): no
        // record is no news, and a spoofed callback changes nothing.
        (failed_with("203"), Outcome::Success, not_found("x"), false),
        // The check answered: the usual rules decide.
        (
            failed_with("204"),
            Outcome::Success,
            report(Outcome::Failed, "204"),
            false,
        ),
        // The callback agreed with the transaction, or claimed nothing final.
        (failed_with("204"), Outcome::Failed, unknown.clone(), false),
        (row(S::Success), Outcome::Pending, unknown.clone(), false),
    ];
    for (n, (row, claim, answer, parked)) in cases.into_iter().enumerate() {
        let planned = plan(&row, &callback_check(claim, answer), t0(), &policy()).unwrap();
        let status = if parked {
            "needs_review"
        } else {
            row.status.as_str()
        };
        assert_eq!(planned.next.status, status, "case {n}");
        assert_eq!(planned.alert.is_some(), parked, "case {n}");
        if parked {
            let reason = planned.next.review_reason.unwrap_or_default();
            assert!(
                reason.starts_with(&format!(
                    "a callback claimed {claim} for this {}",
                    row.status
                )),
                "case {n}: {reason}"
            );
        }
    }
    // The same inconclusive answer to a check no callback asked for keeps
    // the settled transaction.
    let planned = plan(&failed_with(NOT_FOUND_CODE), &unknown, t0(), &policy()).unwrap();
    assert_eq!(planned.next.status, "failed");
}

#[test]
fn a_callback_asks_a_final_transaction_again_only_when_it_contradicts_it() {
    use Outcome as O;
    let failed = failed_with("204");
    for (row, claim) in [
        (row(S::Success), Some(O::Success)),
        (row(S::Success), Some(O::Pending)),
        (row(S::Success), None),
        (failed.clone(), Some(O::Failed)),
        (failed.clone(), Some(O::Unknown)),
        (failed.clone(), Some(O::Pending)),
        (failed_with(NOT_FOUND_CODE), Some(O::Failed)),
    ] {
        let why = callback_check_skipped(&row, claim, false);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains(&format!("already {}", row.status))),
            "{} with claim {claim:?}: {why:?}",
            row.status
        );
    }
    for (row, claim) in [
        (row(S::Success), Some(O::Failed)),
        (failed.clone(), Some(O::Success)),
        // Failed for no record, yet the provider calls back about it: it
        // holds the transaction after all, whatever it claims.
        (failed_with(NOT_FOUND_CODE), Some(O::Pending)),
        (failed_with(NOT_FOUND_CODE), Some(O::Unknown)),
        (failed_with(NOT_FOUND_CODE), None),
        (failed_with(NOT_FOUND_CODE), Some(O::Success)),
    ] {
        assert_eq!(
            callback_check_skipped(&row, claim, false),
            None,
            "{claim:?} claimed on {} ({:?}) is checked",
            row.status,
            row.provider_code
        );
    }
    for status in [S::Pending, S::Unknown, S::Received, S::NeedsReview] {
        assert_eq!(
            callback_check_skipped(&row(status), Some(O::Success), false),
            None
        );
    }
}

#[test]
fn a_claim_whose_check_is_unanswered_within_the_window_asks_for_no_second_check() {
    let why =
        callback_check_skipped(&row(S::Pending), Some(Outcome::Success), true).expect("skipped");
    assert!(why.contains("same claim (success)"), "{why}");
    // A contradiction of a final state is no exception: the first copy's
    // check is still to answer it.
    assert!(callback_check_skipped(&failed_with("204"), Some(Outcome::Success), true).is_some());
}

fn method_only(method: &str) -> Option<pb::PaymentInstructions> {
    Some(pb::PaymentInstructions {
        method: method.into(),
        ..Default::default()
    })
}

/// A pay-in on the provider's hosted page: created with the page's URL and
/// no method; the status check that finds it paid names the method the
/// payer chose there.
#[test]
fn a_method_reported_later_is_recorded_beside_the_stored_instructions_and_never_changed() {
    let hosted_page = pb::PaymentInstructions {
        method: String::new(),
        payment_url: "https://checkout.example/pay/T1".into(),
        ..instructions("", "")
    };
    let mut row = pay_in_row(S::Received);
    row.method = String::new();
    let (created, _) = apply_all(
        row,
        &[with_payment(Outcome::Pending, Some(hosted_page.clone()))],
        t0(),
    );
    let paid = plan(
        &created,
        &with_payment(Outcome::Success, method_only("QRIS")),
        t0() + Duration::seconds(10),
        &policy(),
    )
    .unwrap();
    assert_eq!((paid.to, paid.changed), (S::Success, true));
    let with_method = pb::PaymentInstructions {
        method: "QRIS".into(),
        ..hosted_page.clone()
    };
    assert_eq!(paid.next.to_pb().payment, Some(with_method.clone()));
    assert!(paid.event.detail.get("method_differs").is_none());

    // Told again, nothing changes; told another, the first stays and the
    // event records what was reported.
    let again = plan(
        &paid.next,
        &with_payment(Outcome::Success, method_only("QRIS")),
        t0() + Duration::seconds(20),
        &policy(),
    )
    .unwrap();
    assert!(!again.changed);
    assert!(again.event.detail.get("method_differs").is_none());
    let other = plan(
        &paid.next,
        &with_payment(Outcome::Success, method_only("W_DANA")),
        t0() + Duration::seconds(30),
        &policy(),
    )
    .unwrap();
    assert!(!other.changed);
    assert_eq!(other.next.payment, paid.next.payment);
    assert_eq!(
        other.event.detail["method_differs"],
        json!({ "recorded": "QRIS", "reported": "W_DANA" })
    );

    // A status check that moves nothing fills the method in as well.
    let still_pending = plan(
        &created,
        &with_payment(Outcome::Pending, method_only("QRIS")),
        t0() + Duration::seconds(10),
        &policy(),
    )
    .unwrap();
    assert_eq!(
        (still_pending.to, still_pending.changed),
        (S::Pending, true)
    );
    assert_eq!(still_pending.next.to_pb().payment, Some(with_method));

    // New instructions on a moving report replace the old ones, but not
    // their method.
    let (qr, _) = apply_all(
        pay_in_row(S::Received),
        &[with_payment(
            Outcome::Pending,
            Some(instructions("000201QR", "")),
        )],
        t0(),
    );
    let moved = plan(
        &qr,
        &with_payment(Outcome::Success, Some(instructions("", "8808123"))),
        t0() + Duration::seconds(10),
        &policy(),
    )
    .unwrap();
    let stored = moved.next.to_pb().payment.unwrap();
    assert_eq!(
        (stored.va_number.as_str(), stored.method.as_str()),
        ("8808123", "QRIS")
    );
    assert_eq!(
        moved.event.detail["method_differs"],
        json!({ "recorded": "QRIS", "reported": "BCA" })
    );
}

/// The row's time came from another clock (PostgreSQL's on insert, another
/// replica's) that reads later than ours: a change still stamps it later,
/// so waiting calls and watches, which order states by it, take the change.
#[test]
fn a_change_is_stamped_after_the_rows_own_time_whatever_our_clock_says() {
    let ahead = t0() + Duration::minutes(10);
    let mut received = row(S::Received);
    received.updated_at = ahead;
    let moved = plan(&received, &report(Outcome::Pending, "002"), t0(), &policy()).unwrap();
    assert_eq!(moved.next.status, "pending");
    assert!(moved.next.updated_at > ahead, "{:?}", moved.next.updated_at);

    let mut stale = row(S::Pending);
    stale.updated_at = ahead;
    let (parked, _, _) = plan_review(&stale, t0(), Duration::hours(24));
    assert!(parked.updated_at > ahead);

    // Our clock ahead: our time, as before.
    let later = ahead + Duration::minutes(1);
    let moved = plan(
        &received,
        &report(Outcome::Pending, "002"),
        later,
        &policy(),
    )
    .unwrap();
    assert_eq!(moved.next.updated_at, later);
}

fn qr_payment_row(status: S) -> TransactionRow {
    let mut row = row(status);
    row.kind = "qr_payment".into();
    row.provider = "snapqr".into();
    row.provider_code = Some("2006000".into());
    row.finalized_at = Some(t0());
    row
}

#[test]
fn a_cancel_of_ours_reported_against_a_successful_qr_payment_keeps_it() {
    let paid = qr_payment_row(S::Success);
    let cancelled = report(Outcome::Failed, QR_CANCELLED_STATUS);
    assert!(may_report_our_cancel(&paid, &cancelled));
    // Without a cancel of ours it contradicts the success.
    let contradiction = plan(&paid, &cancelled, t0(), &policy()).unwrap();
    assert_eq!(contradiction.verdict, Verdict::Conflict);

    let cancel_id = Uuid::from_u128(7);
    let ours = Report {
        cancelled_by_us: Some(cancel_id),
        ..cancelled.clone()
    };
    let kept = plan(&paid, &ours, t0(), &policy()).unwrap();
    assert_eq!(kept.verdict, Verdict::Kept);
    assert_eq!(kept.next.status, "success");
    assert_eq!(kept.next.provider_code.as_deref(), Some("2006000"));
    assert_eq!(kept.alert, None);
    assert_eq!(kept.event.detail["cancelled_by"], cancel_id.to_string());

    // Only a cancelled QR payment held as success can be ours: another
    // failure, another kind, or a payment not yet settled is planned as
    // usual.
    assert!(!may_report_our_cancel(
        &paid,
        &report(Outcome::Failed, "06")
    ));
    assert!(!may_report_our_cancel(&row(S::Success), &cancelled));
    assert!(!may_report_our_cancel(
        &qr_payment_row(S::Pending),
        &cancelled
    ));
}
