//! The simulator's record of truth: the most recent referencecodes it has
//! seen, the most recent inquiries it issued, the bills paid most recently,
//! and the deposit balance. Every decision that must be atomic (duplicate
//! detection, payment checks, debit, insert) happens under one lock, so
//! concurrent duplicates cannot both execute, nor two payments of one bill.
//! A forgotten referencecode is unknown again: a status check answers the
//! not-found code and a purchase under it executes as new; a forgotten paid
//! bill can be paid again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{lock, RecentMap};
use crate::okebayar::scenarios::UNRECORDED_FAILURES;

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOperation {
    Purchase,
    Payment,
    PrepaidInquiry,
    BillInquiry,
}

impl LedgerOperation {
    pub fn moves_money(self) -> bool {
        matches!(self, LedgerOperation::Purchase | LedgerOperation::Payment)
    }
}

/// Final by the spec's rule (§6): `000`, or a code not starting with `0`/`1`.
pub fn is_final_code(code: &str) -> bool {
    code == "000" || !(code.starts_with('0') || code.starts_with('1'))
}

/// The state the simulator decided for one referencecode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub reference: String,
    pub operation: LedgerOperation,
    /// The current status code (`transactionstatus`/`responsecode`).
    pub code: String,
    /// Empty until the transaction succeeded with an SN.
    pub serial_number: String,
    /// Whole rupiah: `harga` of a purchase, `nominal + adminfee` of a
    /// payment, 0 for inquiries.
    pub amount: i64,
    /// Whether `amount` is currently taken from the deposit.
    pub debited: bool,
    /// The tracecode of the hit that created this entry.
    pub tracecode: String,
    pub productcode: String,
    pub accnumber: String,
    pub transaction_time: DateTime<Utc>,
    /// The inquiry a bill payment, or a PLN prepaid purchase after an
    /// inquiry, was made against.
    pub inquirycode: Option<String>,
    /// The bill a bill payment was for, when its inquiry was found. A
    /// payment that was taken keeps it paid unless it settles as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<BillKey>,
    /// Every code this entry has had, oldest first.
    pub history: Vec<String>,
    /// How many requests executed under this reference (more than one only
    /// when a failed reference was reused).
    pub executions: u32,
}

impl LedgerEntry {
    pub fn is_final(&self) -> bool {
        is_final_code(&self.code)
    }

    /// What `harga` reports: spec §4 calls it the amount "debited from
    /// deposit", so it is the amount while that is taken or once the
    /// transaction succeeded, and 0 for a failure (never debited, or
    /// refunded when it failed after pending).
    pub fn charged(&self) -> i64 {
        if self.debited || self.code == "000" {
            self.amount
        } else {
            0
        }
    }

    /// A money-moving entry a resend may not reuse (`208`): pending,
    /// succeeded, or failed unless `allow_reuse_after_failure`.
    fn blocks_reuse(&self, allow_reuse_after_failure: bool) -> bool {
        self.operation.moves_money()
            && (!self.is_final() || self.code == "000" || !allow_reuse_after_failure)
    }
}

/// What identifies one bill at the biller, which sells it once (spec §7
/// `401` "already paid"): the product, the customer's account(s) and, for a
/// product billed per period (BPJS: the months in `accnumber3`), the
/// period, each period being a bill of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BillKey {
    /// Upper case: product codes compare without case.
    pub productcode: String,
    /// `accnumber1`, then `accnumber2` where it names the customer (PSTN:
    /// the number under the area code); empty for a bill with a period,
    /// whose `accnumber2` is the payer's phone (spec §4), not the customer.
    pub accounts: [String; 2],
    /// `accnumber3`; empty for a bill without periods.
    pub period: String,
}

/// An inquiry handle the simulator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    pub inquirycode: String,
    pub reference: String,
    pub productcode: String,
    pub account: String,
    /// A bill inquiry's `accnumber2` (PSTN: the number under the area code
    /// in `account`); empty for a PLN prepaid inquiry.
    pub account2: String,
    pub nominal: i64,
    pub adminfee: i64,
    /// The expiry written in the reply.
    pub shown_expiry: DateTime<Utc>,
    /// The expiry the simulator enforces (earlier for scenario `403`).
    pub expires_at: DateTime<Utc>,
    pub ref1: String,
    pub ref2: String,
    pub ref3: String,
    /// BPJS: the months asked for (`accnumber3`, 1–12), each billed
    /// `bill_nominal`; `None` for other bills.
    pub months: Option<u8>,
}

impl Inquiry {
    /// The bill a bill inquiry is about (its fields are stored trimmed).
    pub fn bill(&self) -> BillKey {
        let customer_number = if self.months.is_none() {
            self.account2.as_str()
        } else {
            ""
        };
        BillKey {
            productcode: self.productcode.to_ascii_uppercase(),
            accounts: [self.account.clone(), customer_number.into()],
            period: self
                .months
                .map(|months| months.to_string())
                .unwrap_or_default(),
        }
    }
}

/// A bill payment's data, checked against its inquiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentData {
    pub nominal: Option<i64>,
    pub adminfee: Option<i64>,
    /// Whether the rest of the payment's data matches its inquiry
    /// (`ref2`/`ref3` verbatim, a BPJS period and payer's phone), as the
    /// handler found it; `false` answers `402` like a changed amount.
    pub refs_match: bool,
}

/// A money-moving request that passed authentication.
#[derive(Debug, Clone)]
pub struct MoneyAttempt {
    pub reference: String,
    pub operation: LedgerOperation,
    pub productcode: String,
    pub accnumber: String,
    /// `harga` for purchases; ignored for payments (taken from the inquiry).
    pub amount: i64,
    pub tracecode: String,
    pub at: DateTime<Utc>,
    /// A bill payment's inquiry (checked here), or the PLN inquiry a
    /// prepaid purchase's refs named (checked by the handler).
    pub inquirycode: Option<String>,
    /// A failure the scenario imposes before any debit.
    pub forced_failure: Option<&'static str>,
    /// `Some` for bill payments.
    pub payment: Option<PaymentData>,
    /// The ledger's code when executed (`000`, `001`, `002`, `003`).
    pub initial_code: &'static str,
    /// Used when `initial_code` is `000`.
    pub serial_number: String,
    pub allow_reuse_after_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Debited and recorded with the attempt's initial code.
    Executed,
    /// Recorded as failed with this code; nothing debited.
    Refused(&'static str),
    /// The reference is already live: nothing changed (`208`).
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub outcome: CommitOutcome,
    /// The entry after the commit (the original one for a duplicate).
    pub entry: LedgerEntry,
    /// The payment's inquiry, when it was found.
    pub inquiry: Option<Inquiry>,
    /// Whether that inquiry's bill is paid after the commit (by this
    /// payment or an earlier one).
    pub bill_paid: bool,
    /// The deposit after the commit.
    pub balance: i64,
}

#[derive(Debug)]
struct Inner {
    /// By referencecode.
    entries: RecentMap<Arc<str>, LedgerEntry>,
    /// By inquirycode.
    inquiries: RecentMap<Arc<str>, Inquiry>,
    /// Bills paid, each with the reference of the payment that paid it.
    /// Set when a payment is taken (pending or succeeded), removed when that
    /// payment settles as a failure.
    paid_bills: RecentMap<BillKey, Arc<str>>,
    balance: i64,
}

#[derive(Debug)]
pub struct Ledger {
    inner: Mutex<Inner>,
    sequence: AtomicU64,
}

impl Ledger {
    /// A ledger holding `balance` that remembers the `remembered` most
    /// recent referencecodes and, separately, inquiries and paid bills.
    pub fn new(balance: i64, remembered: usize) -> Self {
        // Tracecodes are 16 digits (spec §9), unique within one run and
        // unlikely to repeat across runs.
        let seed = (Utc::now().timestamp().rem_euclid(1_000_000_000) as u64) * 1_000_000;
        Ledger {
            inner: Mutex::new(Inner {
                entries: RecentMap::new(remembered, "okebayar", "ledger"),
                inquiries: RecentMap::new(remembered, "okebayar", "inquiries"),
                paid_bills: RecentMap::new(remembered, "okebayar", "paid_bills"),
                balance,
            }),
            sequence: AtomicU64::new(seed),
        }
    }

    /// A new 16-digit tracecode (every hit gets one).
    pub fn next_tracecode(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) % 10_000_000_000_000_000;
        format!("{n:016}")
    }

    /// A 20-digit serial number (a PLN token has 20 digits; pulsa SNs are
    /// shorter in real life, any unique string does).
    pub fn next_serial(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{:020}", n.wrapping_mul(7_919) % 100_000_000_000_000_000)
    }

    pub fn balance(&self) -> i64 {
        lock(&self.inner).balance
    }

    pub fn set_balance(&self, idr: i64) {
        lock(&self.inner).balance = idr;
    }

    pub fn get(&self, reference: &str) -> Option<LedgerEntry> {
        lock(&self.inner).entries.get(reference).cloned()
    }

    pub fn inquiry(&self, inquirycode: &str) -> Option<Inquiry> {
        lock(&self.inner).inquiries.get(inquirycode).cloned()
    }

    /// Whether `bill` is paid. A new inquiry for it is refused on this
    /// answer; the payment of any handle is checked again in
    /// [`commit`](Self::commit), under the same lock as its debit.
    pub fn is_paid(&self, bill: &BillKey) -> bool {
        lock(&self.inner).paid_bills.contains_key(bill)
    }

    /// Records an inquiry's outcome (and its handle when it succeeded).
    /// Returns `Err(original)` (`208`, spec §8.3: a referencecode resent
    /// while its original succeeded) when the reference belongs to a
    /// money-moving entry or to an inquiry that succeeded; one that failed
    /// may be sent again (ASSUMED: the spec leaves a failed one's reuse
    /// open, and an inquiry that failed holds nothing).
    pub fn record_inquiry(
        &self,
        entry: LedgerEntry,
        inquiry: Option<Inquiry>,
    ) -> Result<(), Box<LedgerEntry>> {
        let mut inner = lock(&self.inner);
        if let Some(existing) = inner.entries.get(entry.reference.as_str()) {
            if existing.operation.moves_money() || existing.code == "000" {
                return Err(Box::new(existing.clone()));
            }
        }
        if UNRECORDED_FAILURES.contains(&entry.code.as_str()) {
            // A server fault: the request never reached the ledger.
            return Ok(());
        }
        if let Some(inquiry) = inquiry {
            inner
                .inquiries
                .insert(inquiry.inquirycode.as_str().into(), inquiry);
        }
        inner.entries.insert(entry.reference.as_str().into(), entry);
        Ok(())
    }

    /// Checks, debits and records a purchase or payment atomically.
    pub fn commit(&self, attempt: MoneyAttempt) -> Committed {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if let Some(existing) = inner.entries.get(attempt.reference.as_str()) {
            if existing.blocks_reuse(attempt.allow_reuse_after_failure) {
                return Committed {
                    outcome: CommitOutcome::Duplicate,
                    entry: existing.clone(),
                    inquiry: None,
                    bill_paid: false,
                    balance: inner.balance,
                };
            }
        }
        let executions = inner
            .entries
            .get(attempt.reference.as_str())
            .filter(|e| e.operation.moves_money())
            .map_or(0, |e| e.executions);

        let mut amount = attempt.amount;
        let mut inquiry = None;
        let refusal = 'checks: {
            if let Some(payment) = &attempt.payment {
                let found = attempt
                    .inquirycode
                    .as_deref()
                    .and_then(|code| inner.inquiries.get(code));
                let Some(found) = found else {
                    break 'checks Some("405");
                };
                inquiry = Some(found.clone());
                amount = found.nominal + found.adminfee;
                if inner.paid_bills.contains_key(&found.bill()) {
                    break 'checks Some("401");
                }
                if let Some(code) = attempt.forced_failure {
                    break 'checks Some(code);
                }
                // An expired inquiry answers 403 even when the payment's
                // data differs from it too (ASSUMED: the spec gives no
                // precedence, but lists 403 before 402 in §5.C and §8.5,
                // and re-inquiring, 403's remedy, cures both).
                if attempt.at > found.expires_at {
                    break 'checks Some("403");
                }
                let same_amounts = payment.nominal == Some(found.nominal)
                    && payment.adminfee == Some(found.adminfee);
                let same_bill = attempt.productcode.eq_ignore_ascii_case(&found.productcode)
                    && attempt.accnumber.trim() == found.account.trim();
                if !same_amounts || !same_bill || !payment.refs_match {
                    break 'checks Some("402");
                }
            } else if let Some(code) = attempt.forced_failure {
                break 'checks Some(code);
            }
            if inner.balance < amount {
                break 'checks Some("203");
            }
            None
        };

        let (code, debited, serial_number) = match refusal {
            Some(code) => (code, false, String::new()),
            None => {
                inner.balance -= amount;
                let sn = if attempt.initial_code == "000" {
                    attempt.serial_number.clone()
                } else {
                    String::new()
                };
                (attempt.initial_code, true, sn)
            }
        };
        let bill = inquiry.as_ref().map(Inquiry::bill);
        if let Some(bill) = bill.as_ref().filter(|_| refusal.is_none()) {
            inner
                .paid_bills
                .insert(bill.clone(), attempt.reference.as_str().into());
        }
        let bill_paid = bill
            .as_ref()
            .is_some_and(|bill| inner.paid_bills.contains_key(bill));
        let entry = LedgerEntry {
            reference: attempt.reference.clone(),
            operation: attempt.operation,
            code: code.to_string(),
            serial_number,
            amount,
            debited,
            tracecode: attempt.tracecode,
            productcode: attempt.productcode,
            accnumber: attempt.accnumber,
            transaction_time: attempt.at,
            inquirycode: attempt.inquirycode,
            bill,
            history: vec![code.to_string()],
            executions: executions + 1,
        };
        if !refusal.is_some_and(|code| UNRECORDED_FAILURES.contains(&code)) {
            inner
                .entries
                .insert(attempt.reference.into(), entry.clone());
        }
        Committed {
            outcome: match refusal {
                Some(code) => CommitOutcome::Refused(code),
                None => CommitOutcome::Executed,
            },
            entry,
            inquiry,
            bill_paid,
            balance: inner.balance,
        }
    }

    /// Moves a pending entry to `code`. A final entry never changes (returns
    /// `None`). A final failure refunds the deposit, and the bill a payment
    /// paid is due again.
    pub fn settle(
        &self,
        reference: &str,
        code: &str,
        serial_number: impl FnOnce() -> String,
    ) -> Option<LedgerEntry> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let entry = inner.entries.get_mut(reference)?;
        if entry.is_final() {
            return None;
        }
        entry.code = code.to_string();
        entry.history.push(code.to_string());
        if code == "000" && entry.serial_number.is_empty() {
            entry.serial_number = serial_number();
        }
        if is_final_code(code) && code != "000" && entry.debited {
            inner.balance += entry.amount;
            entry.debited = false;
            if let Some(bill) = &entry.bill {
                let paid_by_this = inner
                    .paid_bills
                    .get(bill)
                    .is_some_and(|payment| **payment == *reference);
                if paid_by_this {
                    inner.paid_bills.remove(bill);
                }
            }
        }
        Some(entry.clone())
    }
}

/// Parses an amount the way OkeBayar writes it (`150000`, `150000.00`,
/// `150000.0`) into whole rupiah; fractions of a rupiah are refused.
pub fn parse_idr(text: &str) -> Option<i64> {
    let text = text.trim();
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() > 15 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inquiry's entry under `reference`, answered `000`.
    fn ledger_entry(reference: &str, operation: LedgerOperation) -> LedgerEntry {
        LedgerEntry {
            reference: reference.into(),
            operation,
            code: "000".into(),
            serial_number: String::new(),
            amount: 0,
            debited: false,
            tracecode: "1".into(),
            productcode: "PLNPOST".into(),
            accnumber: "531234567890".into(),
            transaction_time: Utc::now(),
            inquirycode: None,
            bill: None,
            history: vec!["000".into()],
            executions: 1,
        }
    }

    fn purchase(reference: &str, amount: i64) -> MoneyAttempt {
        MoneyAttempt {
            reference: reference.into(),
            operation: LedgerOperation::Purchase,
            productcode: "S10".into(),
            accnumber: "081234567890".into(),
            amount,
            tracecode: "1".into(),
            at: Utc::now(),
            inquirycode: None,
            forced_failure: None,
            payment: None,
            initial_code: "000",
            serial_number: "SN1".into(),
            allow_reuse_after_failure: true,
        }
    }

    #[test]
    fn duplicate_never_debits_twice() {
        let ledger = Ledger::new(25_000, 100);
        assert_eq!(
            ledger.commit(purchase("A", 10_000)).outcome,
            CommitOutcome::Executed
        );
        let again = ledger.commit(purchase("A", 10_000));
        assert_eq!(again.outcome, CommitOutcome::Duplicate);
        assert_eq!(ledger.balance(), 15_000);
        assert_eq!(ledger.get("A").unwrap().executions, 1);
    }

    #[test]
    fn insufficient_deposit_is_203_and_a_failed_reference_may_be_reused() {
        let ledger = Ledger::new(5_000, 100);
        let first = ledger.commit(purchase("B", 10_000));
        assert_eq!(first.outcome, CommitOutcome::Refused("203"));
        assert_eq!(ledger.balance(), 5_000);
        ledger.set_balance(20_000);
        let second = ledger.commit(purchase("B", 10_000));
        assert_eq!(second.outcome, CommitOutcome::Executed);
        assert_eq!(second.entry.executions, 2);
        let mut strict = purchase("C", 1);
        strict.allow_reuse_after_failure = false;
        strict.forced_failure = Some("204");
        assert_eq!(
            ledger.commit(strict.clone()).outcome,
            CommitOutcome::Refused("204")
        );
        assert_eq!(ledger.commit(strict).outcome, CommitOutcome::Duplicate);
    }

    #[test]
    fn an_inquiry_answered_with_a_server_fault_leaves_no_entry() {
        let ledger = Ledger::new(50_000, 100);
        for code in UNRECORDED_FAILURES {
            let mut inquiry = ledger_entry(code, LedgerOperation::BillInquiry);
            inquiry.code = code.to_string();
            ledger.record_inquiry(inquiry, None).unwrap();
            assert!(ledger.get(code).is_none(), "{code} recorded");
        }
        let answered = ledger_entry("ok", LedgerOperation::BillInquiry);
        ledger.record_inquiry(answered, None).unwrap();
        assert!(ledger.get("ok").is_some());
    }

    #[test]
    fn a_server_fault_leaves_no_entry_and_the_reference_is_new_again() {
        let ledger = Ledger::new(50_000, 100);
        for code in UNRECORDED_FAILURES {
            let mut faulted = purchase(code, 10_000);
            faulted.allow_reuse_after_failure = false;
            faulted.forced_failure = Some(code);
            assert_eq!(
                ledger.commit(faulted.clone()).outcome,
                CommitOutcome::Refused(code)
            );
            assert!(ledger.get(code).is_none(), "{code} recorded");
            faulted.forced_failure = None;
            assert_eq!(ledger.commit(faulted).outcome, CommitOutcome::Executed);
        }
        assert_eq!(ledger.balance(), 30_000);
    }

    #[test]
    fn settle_refunds_a_final_failure_and_never_changes_a_final_entry() {
        let ledger = Ledger::new(10_000, 100);
        let mut pending = purchase("P", 4_000);
        pending.initial_code = "002";
        ledger.commit(pending);
        assert_eq!(ledger.balance(), 6_000);
        let failed = ledger.settle("P", "201", || "x".into()).unwrap();
        assert!(!failed.debited);
        assert_eq!(ledger.balance(), 10_000);
        assert!(ledger.settle("P", "000", || "x".into()).is_none());
        assert_eq!(ledger.get("P").unwrap().history, ["002", "201"]);
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_idr("150000"), Some(150_000));
        assert_eq!(parse_idr("150000.00"), Some(150_000));
        assert_eq!(parse_idr(" 2500.0 "), Some(2_500));
        for bad in ["", "-1", "1.5", "1e3", "abc", ".0", "9999999999999999"] {
            assert_eq!(parse_idr(bad), None, "{bad}");
        }
    }
}
