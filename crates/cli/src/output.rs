//! Everything loketctl prints. Each result type is turned into one view (a
//! plain serde struct with a stable shape) and that view is rendered either
//! as JSON for scripts or as text for people, so the two outputs can never
//! disagree.
//!
//! JSON shape rules: field names are snake_case and never removed; a value
//! the server did not send is `null` (not an empty string); money is
//! `{"minor": 10500, "currency": "IDR"}` (integers, never floats); times are
//! RFC 3339 in UTC; enums are lower-case words (`success`, `bill_inquiry`).

use std::fmt::Write as _;

use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb;
use loket_protocol::{Outcome, TransactionKind, TransactionStatus};
use serde::Serialize;

/// How to print: text for people or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Renders one view in the chosen format. JSON is pretty for single results;
/// streams use [`render_line`].
pub fn render<T: Serialize + Render>(format: Format, value: &T) -> String {
    match format {
        Format::Json => {
            serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
        Format::Text => printable(&value.text()),
    }
}

/// Renders one item of a stream: one compact JSON object per line, or the
/// view's one-line text form.
pub fn render_line<T: Serialize + Render>(format: Format, value: &T) -> String {
    match format {
        Format::Json => {
            serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
        Format::Text => printable(&value.line()),
    }
}

/// `text` safe for an operator's terminal: control characters other than
/// line breaks and tabs, and the Unicode controls that reorder text, are
/// shown as `\u{..}` escapes. Texts loket prints come partly from providers
/// (`provider_message`, a serial number, a bill's customer name), and a
/// hostile reply could otherwise clear the screen, retitle the window or
/// make one code read as another. JSON output needs no such care: its
/// encoder escapes control characters, and a script reads the exact text.
pub fn printable(text: &str) -> String {
    let hidden = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hidden) {
        return text.to_string();
    }
    text.chars()
        .fold(String::with_capacity(text.len() + 16), |mut out, c| {
            if hidden(c) {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            } else {
                out.push(c);
            }
            out
        })
}

/// The text forms of a view.
pub trait Render {
    fn text(&self) -> String;
    /// A one-line summary; defaults to the full text.
    fn line(&self) -> String {
        self.text()
    }
}

// ---------------------------------------------------------------------------
// Money and small helpers

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoneyView {
    pub minor: i64,
    pub currency: String,
}

impl MoneyView {
    pub fn from_pb(money: Option<&pb::Money>) -> Option<MoneyView> {
        money.map(|m| MoneyView {
            minor: m.minor,
            currency: if m.currency.is_empty() {
                "IDR".to_string()
            } else {
                m.currency.clone()
            },
        })
    }
}

impl std::fmt::Display for MoneyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_money(self.minor, &self.currency))
    }
}

/// `IDR 10,500`. Rupiah have no minor unit in loket (`minor` is whole
/// rupiah); other currencies are shown with two decimals.
pub fn format_money(minor: i64, currency: &str) -> String {
    let currency = if currency.is_empty() { "IDR" } else { currency };
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if currency.eq_ignore_ascii_case("IDR") {
        format!("{currency} {sign}{}", group_thousands(magnitude))
    } else {
        format!(
            "{currency} {sign}{}.{:02}",
            group_thousands(magnitude / 100),
            magnitude % 100
        )
    }
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn non_empty(text: &str) -> Option<String> {
    if text.is_empty() {
        None
    } else {
        Some(text.to_string())
    }
}

fn time(at: Option<&prost_types::Timestamp>) -> Option<String> {
    at.and_then(from_timestamp).as_ref().map(millis)
}

/// A time as loketctl prints times everywhere: RFC 3339 in UTC to the
/// millisecond.
pub(crate) fn millis(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The name of a `TransactionStatus` value as loket writes it everywhere
/// (`"unspecified"` for a value it does not know).
pub fn status_name(value: i32) -> &'static str {
    pb::TransactionStatus::try_from(value)
        .ok()
        .and_then(|status| TransactionStatus::try_from(status).ok())
        .map_or("unspecified", TransactionStatus::as_str)
}

/// The name of a `TransactionKind` value (`"unspecified"` if unknown).
pub fn kind_name(value: i32) -> &'static str {
    TransactionKind::ALL
        .into_iter()
        .find(|kind| pb::TransactionKind::from(*kind) as i32 == value)
        .map_or("unspecified", TransactionKind::as_str)
}

/// The name of an `Outcome` value (`"unspecified"` if unknown).
pub fn outcome_name(value: i32) -> &'static str {
    pb::Outcome::try_from(value)
        .ok()
        .and_then(|outcome| Outcome::try_from(outcome).ok())
        .map_or("unspecified", Outcome::as_str)
}

/// The status as a person should read it: what it means for the money.
fn status_banner(status: &str) -> String {
    let note = match status {
        "success" => "final: done",
        "failed" => "final: nothing was charged",
        "pending" => "in progress at the provider",
        "unknown" => "outcome not known yet: being checked, do NOT retry",
        "received" => "accepted; no answer from the provider yet",
        "needs_review" => "parked for an operator: do NOT retry",
        _ => "",
    };
    if note.is_empty() {
        status.to_ascii_uppercase()
    } else {
        format!("{} ({note})", status.to_ascii_uppercase())
    }
}

/// Aligned `label value` lines.
pub(crate) struct Lines(String);

impl Lines {
    pub(crate) fn new() -> Self {
        Lines(String::new())
    }
    pub(crate) fn add(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{label:<15} {value}");
    }
    pub(crate) fn opt(&mut self, label: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.add(label, value);
        }
    }
    pub(crate) fn finish(self) -> String {
        self.0.trim_end().to_string()
    }
}

// ---------------------------------------------------------------------------
// Transactions

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillView {
    pub customer_name: Option<String>,
    pub bill_amount: Option<MoneyView>,
    pub admin_fee: Option<MoneyView>,
    pub total_amount: Option<MoneyView>,
    pub expires_at: Option<String>,
    pub extra: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionView {
    pub id: String,
    pub client_ref: String,
    pub kind: &'static str,
    pub status: &'static str,
    /// `success` or `failed`: will never change.
    pub is_final: bool,
    pub product_code: String,
    pub provider: String,
    pub account: String,
    pub amount: Option<MoneyView>,
    pub provider_reference: Option<String>,
    pub provider_trace: Option<String>,
    pub provider_code: Option<String>,
    pub provider_message: Option<String>,
    pub serial_number: Option<String>,
    pub inquiry_id: Option<String>,
    pub bill: Option<BillView>,
    pub explanation: Option<ExplanationView>,
    pub amount_mismatch: bool,
    pub provider_amount: Option<MoneyView>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Cancels and refunds: the payment they act on.
    pub original_id: Option<String>,
    /// Pay-in / pay-out method (QRIS, BCA, W_DANA...): the one the client
    /// asked for, else (the server fills it in) the one the provider
    /// reported the payer chose; `null` while neither is known (a pay-in on
    /// the provider's hosted page, not paid yet).
    pub method: Option<String>,
    /// Pay-ins: what the payer needs, once the provider reported it.
    pub payment: Option<PaymentView>,
}

/// How a payer pays a pay-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentView {
    pub method: Option<String>,
    pub qr_string: Option<String>,
    pub va_number: Option<String>,
    pub payment_url: Option<String>,
    pub expires_at: Option<String>,
}

impl PaymentView {
    pub fn from_pb(p: &pb::PaymentInstructions) -> Self {
        PaymentView {
            method: non_empty(&p.method),
            qr_string: non_empty(&p.qr_string),
            va_number: non_empty(&p.va_number),
            payment_url: non_empty(&p.payment_url),
            expires_at: time(p.expires_at.as_ref()),
        }
    }

    fn has_instructions(&self) -> bool {
        self.qr_string.is_some() || self.va_number.is_some() || self.payment_url.is_some()
    }
}

impl TransactionView {
    pub fn from_pb(t: &pb::Transaction) -> Self {
        let status = status_name(t.status);
        TransactionView {
            id: t.id.clone(),
            client_ref: t.client_ref.clone(),
            kind: kind_name(t.kind),
            status,
            is_final: matches!(status, "success" | "failed"),
            product_code: t.product_code.clone(),
            provider: t.provider.clone(),
            account: t.account.clone(),
            amount: MoneyView::from_pb(t.amount.as_ref()),
            provider_reference: non_empty(&t.provider_reference),
            provider_trace: non_empty(&t.provider_trace),
            provider_code: non_empty(&t.provider_code),
            provider_message: non_empty(&t.provider_message),
            serial_number: non_empty(&t.serial_number),
            inquiry_id: non_empty(&t.inquiry_id),
            bill: t.bill.as_ref().map(|b| BillView {
                customer_name: non_empty(&b.customer_name),
                bill_amount: MoneyView::from_pb(b.bill_amount.as_ref()),
                admin_fee: MoneyView::from_pb(b.admin_fee.as_ref()),
                total_amount: MoneyView::from_pb(b.total_amount.as_ref()),
                expires_at: time(b.expires_at.as_ref()),
                extra: b
                    .extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            explanation: t.explanation.as_ref().map(ExplanationView::from_pb),
            amount_mismatch: t.amount_mismatch,
            provider_amount: MoneyView::from_pb(t.provider_amount.as_ref()),
            created_at: time(t.created_at.as_ref()),
            updated_at: time(t.updated_at.as_ref()),
            original_id: non_empty(&t.original_id),
            method: non_empty(&t.method),
            payment: t.payment.as_ref().map(PaymentView::from_pb),
        }
    }

    /// What a successful inquiry is for, with its id in place: the id to
    /// give `--inquiry` is the transaction's own.
    fn next_step(&self) -> Option<String> {
        if self.status != "success" {
            return None;
        }
        match self.kind {
            "bill_inquiry" => {
                let total = self
                    .bill
                    .as_ref()
                    .and_then(|bill| bill.total_amount.as_ref())
                    .map_or("<total to pay>".to_string(), |total| {
                        total.minor.to_string()
                    });
                Some(format!(
                    "pay it: loketctl pay --ref <new ref> --inquiry {} --amount {total}",
                    self.id
                ))
            }
            "prepaid_inquiry" => Some(format!(
                "buy it: loketctl purchase --ref <new ref> --product {} --account {} --inquiry {}",
                self.product_code, self.account, self.id
            )),
            _ => None,
        }
    }

    fn token_label(&self) -> &'static str {
        if self.product_code.starts_with("PLN") && self.kind == "prepaid_purchase" {
            "token"
        } else {
            "serial number"
        }
    }
}

impl Render for TransactionView {
    fn text(&self) -> String {
        let mut out = Lines::new();
        out.add("transaction", &self.id);
        out.add("client ref", &self.client_ref);
        out.add("kind", self.kind);
        out.add("status", status_banner(self.status));
        out.add(
            "product",
            format!("{} ({})", self.product_code, self.provider),
        );
        if !self.account.is_empty() {
            out.add("account", &self.account);
        }
        out.opt("amount", self.amount.as_ref());
        if let Some(original) = &self.original_id {
            let label = match self.kind {
                "qr_refund" => "refund of",
                "qr_cancel" => "cancel of",
                _ => "original",
            };
            out.add(label, original);
        }
        match &self.method {
            Some(method) => out.add("method", method),
            // Said in words rather than left out: a missing line reads as
            // a fault, not as "the payer chose on the provider's page".
            None if self.kind == "pay_in" => out.add(
                "method",
                "unknown (the payer picks it on the provider's payment page)",
            ),
            None => {}
        }
        match &self.payment {
            Some(payment) if payment.has_instructions() => {
                out.opt("pay with QR", payment.qr_string.as_ref());
                out.opt("VA number", payment.va_number.as_ref());
                out.opt("payment page", payment.payment_url.as_ref());
                if !self.is_final {
                    // A deadline only while there is still something to pay.
                    out.opt("pay before", payment.expires_at.as_ref());
                }
            }
            _ if self.kind == "pay_in" && !self.is_final => out.add(
                "instructions",
                format!(
                    "not reported yet: run `loketctl get {}` (or pass --wait)",
                    self.id
                ),
            ),
            _ => {}
        }
        if self.amount_mismatch {
            out.add(
                "AMOUNT MISMATCH",
                format!(
                    "provider reports {} (expected {})",
                    self.provider_amount
                        .as_ref()
                        .map_or("?".into(), ToString::to_string),
                    self.amount.as_ref().map_or("?".into(), ToString::to_string)
                ),
            );
        }
        out.opt(self.token_label(), self.serial_number.as_ref());
        if let Some(code) = &self.provider_code {
            let meaning = self.provider_message.clone().or_else(|| {
                self.explanation
                    .as_ref()
                    .and_then(|e| e.provider_message.clone())
            });
            match meaning {
                Some(meaning) => out.add("provider code", format!("{code}: {meaning}")),
                None => out.add("provider code", code),
            }
        }
        if let Some(e) = &self.explanation {
            out.add("outcome", format!("{} ({})", e.outcome, e.category));
            out.add("who acts", &e.who_acts);
            out.opt("action", e.operator_action.as_ref());
            out.opt("tell merchant", e.merchant_message_en.as_ref());
        }
        if let Some(bill) = &self.bill {
            out.opt("customer", bill.customer_name.as_ref());
            out.opt("bill amount", bill.bill_amount.as_ref());
            out.opt("admin fee", bill.admin_fee.as_ref());
            out.opt("total to pay", bill.total_amount.as_ref());
            out.opt("pay before", bill.expires_at.as_ref());
            for (key, value) in &bill.extra {
                out.add(&format!("  {}", key.to_ascii_lowercase()), value);
            }
        }
        if let Some(next) = self.next_step() {
            out.add("next", next);
        }
        out.opt("inquiry", self.inquiry_id.as_ref());
        out.opt("our reference", self.provider_reference.as_ref());
        out.opt("provider trace", self.provider_trace.as_ref());
        out.opt("created", self.created_at.as_ref());
        out.opt("updated", self.updated_at.as_ref());
        out.finish()
    }

    /// `2025-01-31T10:00:00.000Z  <id>  success  PULSA10  0812…  IDR 10,500  000`
    fn line(&self) -> String {
        let mut line = format!(
            "{}  {}  {:<12}  {:<14}  {:<10}  {}",
            self.updated_at
                .as_deref()
                .or(self.created_at.as_deref())
                .unwrap_or("-"),
            self.id,
            self.status,
            self.kind,
            self.product_code,
            self.account,
        );
        if let Some(amount) = &self.amount {
            let _ = write!(line, "  {amount}");
        }
        if let Some(code) = &self.provider_code {
            let _ = write!(line, "  code {code}");
        }
        if let Some(sn) = &self.serial_number {
            let _ = write!(line, "  sn {sn}");
        }
        let _ = write!(line, "  ref {}", self.client_ref);
        line
    }
}

/// A page (or all pages) of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionListView {
    pub transactions: Vec<TransactionView>,
    /// Present when more pages exist and were not fetched.
    pub next_page_token: Option<String>,
}

impl Render for TransactionListView {
    fn text(&self) -> String {
        let mut out = String::new();
        if self.transactions.is_empty() {
            out.push_str("no transactions");
        }
        let mut table = Table::new(&[
            "CREATED", "ID", "STATUS", "KIND", "PRODUCT", "ACCOUNT", "AMOUNT", "CODE", "REF",
        ]);
        for t in &self.transactions {
            table.row(vec![
                t.created_at.clone().unwrap_or_default(),
                t.id.clone(),
                t.status.to_string(),
                t.kind.to_string(),
                t.product_code.clone(),
                t.account.clone(),
                t.amount
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                t.provider_code.clone().unwrap_or_default(),
                t.client_ref.clone(),
            ]);
        }
        if !self.transactions.is_empty() {
            out.push_str(&table.finish());
        }
        if let Some(token) = &self.next_page_token {
            let _ = write!(out, "\nmore: --page-token {token} (or --all)");
        }
        out
    }
}

/// A simple left-aligned text table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn finish(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.trim_end().to_string()
    }
}

// ---------------------------------------------------------------------------
// Balance

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceView {
    pub provider: String,
    pub balance: Option<MoneyView>,
    pub as_of: Option<String>,
}

impl BalanceView {
    pub fn from_pb(b: &pb::Balance) -> Self {
        BalanceView {
            provider: b.provider.clone(),
            balance: MoneyView::from_pb(b.balance.as_ref()),
            as_of: time(b.as_of.as_ref()),
        }
    }
}

impl Render for BalanceView {
    fn text(&self) -> String {
        let mut out = Lines::new();
        out.add("provider", &self.provider);
        out.add(
            "deposit balance",
            self.balance
                .as_ref()
                .map_or("(not reported)".into(), ToString::to_string),
        );
        out.opt("as of", self.as_of.as_ref());
        out.finish()
    }
}

// ---------------------------------------------------------------------------
// Code explanations

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplanationView {
    pub provider: String,
    pub code: String,
    pub operation: Option<String>,
    pub provider_message: Option<String>,
    pub outcome: &'static str,
    pub retry: Option<String>,
    pub retry_safe: bool,
    pub category: String,
    pub who_acts: String,
    pub operator_action: Option<String>,
    pub merchant_message_en: Option<String>,
    pub merchant_message_id: Option<String>,
    pub in_catalogue: bool,
    /// The operations this same answer applies to.
    pub operations: Vec<String>,
}

impl ExplanationView {
    /// From the library's answer (`--offline`): the same shape as the server's.
    pub fn from_library(e: &loket_protocol::catalogue::Explanation) -> Self {
        ExplanationView::from_pb(&pb::CodeExplanation::from(e))
    }

    pub fn from_pb(e: &pb::CodeExplanation) -> Self {
        ExplanationView {
            provider: e.provider.clone(),
            code: e.code.clone(),
            operation: non_empty(&e.operation),
            provider_message: non_empty(&e.provider_message),
            outcome: outcome_name(e.outcome),
            retry: non_empty(&e.retry),
            retry_safe: e.retry_safe,
            category: e.category.clone(),
            who_acts: e.who_acts.clone(),
            operator_action: non_empty(&e.operator_action),
            merchant_message_en: non_empty(&e.merchant_message_en),
            merchant_message_id: non_empty(&e.merchant_message_id),
            in_catalogue: e.in_catalogue,
            operations: e.operations.clone(),
        }
    }

    fn outcome_text(&self) -> String {
        let note = match self.outcome {
            "success" => "the provider did it",
            "failed" => "final failure: no money moved",
            "pending" => "still in progress: wait for the final answer",
            "unknown" => "NOT a failure: money may have moved, check status before anything else",
            _ => "",
        };
        format!("{} ({note})", self.outcome)
    }

    fn retry_text(&self) -> String {
        let retry = self.retry.as_deref().unwrap_or("");
        let plain = match retry {
            "not_applicable" => "nothing to retry",
            "yes" => "safe to try again now",
            "after_fix" => "safe once the problem is fixed",
            "later" => "safe after waiting",
            "query_first" => "check status first; retry only if it shows nothing happened",
            "no" => "never resubmit",
            "" if self.retry_safe => "safe",
            "" => "not safe",
            other => other,
        };
        if retry.is_empty() {
            plain.to_string()
        } else {
            format!("{retry}: {plain}")
        }
    }
}

impl Render for ExplanationView {
    fn text(&self) -> String {
        let mut out = Lines::new();
        let heading = match &self.operation {
            Some(op) => format!("{} {} (operation {op})", self.provider, self.code),
            None => format!("{} {}", self.provider, self.code),
        };
        out.add("code", heading);
        out.opt("meaning", self.provider_message.as_ref());
        if !self.operations.is_empty() {
            out.add("same answer for", self.operations.join(", "));
        }
        out.add("outcome", self.outcome_text());
        out.add("retry", self.retry_text());
        out.add("category", &self.category);
        out.add("who acts", &self.who_acts);
        out.opt("action", self.operator_action.as_ref());
        out.opt("tell merchant", self.merchant_message_en.as_ref());
        out.opt("  (Indonesian)", self.merchant_message_id.as_ref());
        if !self.in_catalogue {
            out.add(
                "NOTE",
                "not in the catalogue: answer derived from the code's structure, confirm with the provider",
            );
        }
        out.finish()
    }
}

/// A provider's whole table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeListView {
    pub provider: String,
    pub codes: Vec<ExplanationView>,
}

impl Render for CodeListView {
    fn text(&self) -> String {
        // A code can have one row per group of operations (OkeBayar 208 is a
        // failed inquiry but an unknown purchase), so show the operations
        // when known.
        let with_ops = self.codes.iter().any(|c| !c.operations.is_empty());
        let every_op: std::collections::BTreeSet<&str> = self
            .codes
            .iter()
            .flat_map(|c| c.operations.iter().map(String::as_str))
            .collect();
        let mut header = vec!["CODE", "OUTCOME", "RETRY", "WHO ACTS"];
        if with_ops {
            header.push("OPERATIONS");
        }
        header.push("MEANING");
        let mut table = Table::new(&header);
        for c in &self.codes {
            let mut row = vec![
                c.code.clone(),
                c.outcome.to_string(),
                c.retry.clone().unwrap_or_else(|| {
                    if c.retry_safe {
                        "safe".into()
                    } else {
                        "no".into()
                    }
                }),
                c.who_acts.clone(),
            ];
            if with_ops {
                let ops: std::collections::BTreeSet<&str> =
                    c.operations.iter().map(String::as_str).collect();
                row.push(if ops == every_op {
                    "all".to_string()
                } else {
                    c.operations.join(",")
                });
            }
            row.push(c.provider_message.clone().unwrap_or_default());
            table.row(row);
        }
        let mut out = format!(
            "{} codes of {}\n{}",
            self.codes.len(),
            self.provider,
            table.finish()
        );
        if !with_ops && has_repeated_codes(&self.codes) {
            out.push_str(
                "\nsome codes mean different things per operation: \
                 `loketctl explain <provider> <code> --operation <op>` (or `codes --offline`) tells them apart",
            );
        }
        out
    }
}

fn has_repeated_codes(codes: &[ExplanationView]) -> bool {
    let mut seen = std::collections::HashSet::new();
    codes.iter().any(|c| !seen.insert(c.code.as_str()))
}

// ---------------------------------------------------------------------------
// Admin results

/// A new client. The only place an API key is ever printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedClientView {
    pub id: String,
    pub name: String,
    pub api_key: String,
    pub note: &'static str,
}

pub const KEY_SHOWN_ONCE: &str =
    "store this key now: it is shown only once and cannot be recovered (loket keeps only its SHA-256)";

impl Render for CreatedClientView {
    fn text(&self) -> String {
        let mut out = Lines::new();
        out.add("client", &self.name);
        out.add("id", &self.id);
        out.add("api key", &self.api_key);
        out.add("NOTE", self.note);
        out.finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientListView {
    pub clients: Vec<ClientView>,
}

impl Render for ClientListView {
    fn text(&self) -> String {
        if self.clients.is_empty() {
            return "no clients".into();
        }
        let mut table = Table::new(&["NAME", "ID", "CREATED", "STATE"]);
        for c in &self.clients {
            table.row(vec![
                c.name.clone(),
                c.id.clone(),
                c.created_at.clone(),
                if c.disabled { "disabled" } else { "active" }.into(),
            ]);
        }
        table.finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductView {
    pub code: String,
    pub provider: String,
    pub provider_product_code: String,
    pub kind: String,
    pub price: Option<MoneyView>,
    pub description: String,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductListView {
    pub products: Vec<ProductView>,
}

impl Render for ProductListView {
    fn text(&self) -> String {
        if self.products.is_empty() {
            return "no products".into();
        }
        let mut table = Table::new(&[
            "CODE",
            "PROVIDER",
            "PROVIDER CODE",
            "KIND",
            "PRICE",
            "STATE",
            "DESCRIPTION",
        ]);
        for p in &self.products {
            table.row(vec![
                p.code.clone(),
                p.provider.clone(),
                p.provider_product_code.clone(),
                p.kind.clone(),
                p.price.as_ref().map_or("-".into(), ToString::to_string),
                if p.active { "active" } else { "inactive" }.into(),
                p.description.clone(),
            ]);
        }
        table.finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductsLoadedView {
    pub inserted: Vec<String>,
    pub updated: Vec<String>,
    /// Products in the file whose row already said the same.
    pub unchanged: Vec<String>,
    /// Products in the table but not in the file: left unchanged.
    pub untouched: Vec<String>,
}

impl Render for ProductsLoadedView {
    fn text(&self) -> String {
        let mut out = format!(
            "{} product(s) loaded: {} new, {} updated, {} unchanged",
            self.inserted.len() + self.updated.len() + self.unchanged.len(),
            self.inserted.len(),
            self.updated.len(),
            self.unchanged.len()
        );
        if !self.inserted.is_empty() {
            let _ = write!(out, "\nnew: {}", self.inserted.join(", "));
        }
        if !self.updated.is_empty() {
            let _ = write!(out, "\nupdated: {}", self.updated.join(", "));
        }
        if !self.untouched.is_empty() {
            let _ = write!(
                out,
                "\nnot in the file, left unchanged: {}",
                self.untouched.join(", ")
            );
        }
        out
    }
}

/// A one-line confirmation (`migrate`, `client disable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoneView {
    pub ok: bool,
    pub message: String,
}

impl Render for DoneView {
    fn text(&self) -> String {
        self.message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idr(minor: i64) -> Option<pb::Money> {
        Some(pb::Money {
            minor,
            currency: "IDR".into(),
        })
    }

    fn sample() -> pb::Transaction {
        pb::Transaction {
            id: "0191d3a0-0000-7000-8000-000000000001".into(),
            client_ref: "R1".into(),
            kind: pb::TransactionKind::BillInquiry as i32,
            status: pb::TransactionStatus::Success as i32,
            product_code: "PLNPOST".into(),
            provider: "okebayar".into(),
            account: "512345678901".into(),
            amount: None,
            provider_reference: "lk-abc".into(),
            provider_trace: "".into(),
            provider_code: "000".into(),
            provider_message: "Success".into(),
            serial_number: "".into(),
            bill: Some(pb::BillDetails {
                customer_name: "BUDI".into(),
                bill_amount: idr(50_000),
                admin_fee: idr(2_500),
                total_amount: idr(52_500),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1_738_300_000,
                    nanos: 0,
                }),
                extra: [("TARIF".to_string(), "R1".to_string())].into(),
            }),
            inquiry_id: "".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_738_299_000,
                nanos: 5_000_000,
            }),
            updated_at: None,
            explanation: None,
            amount_mismatch: false,
            provider_amount: None,
            ..Default::default()
        }
    }

    #[test]
    fn enum_values_are_named_as_loket_names_them_elsewhere() {
        assert_eq!(
            status_name(pb::TransactionStatus::NeedsReview as i32),
            "needs_review"
        );
        assert_eq!(
            status_name(pb::TransactionStatus::Unspecified as i32),
            "unspecified"
        );
        assert_eq!(
            kind_name(pb::TransactionKind::BillPayment as i32),
            "bill_payment"
        );
        assert_eq!(kind_name(pb::TransactionKind::PayOut as i32), "pay_out");
        assert_eq!(outcome_name(pb::Outcome::Unknown as i32), "unknown");
        for unknown in [-1, 99] {
            assert_eq!(status_name(unknown), "unspecified");
            assert_eq!(kind_name(unknown), "unspecified");
            assert_eq!(outcome_name(unknown), "unspecified");
        }
    }

    #[test]
    fn money_is_grouped_by_thousands() {
        assert_eq!(format_money(0, "IDR"), "IDR 0");
        assert_eq!(format_money(999, "IDR"), "IDR 999");
        assert_eq!(format_money(1_000, "IDR"), "IDR 1,000");
        assert_eq!(format_money(10_000, "IDR"), "IDR 10,000");
        assert_eq!(format_money(123_456_789, ""), "IDR 123,456,789");
        assert_eq!(format_money(-1_500, "IDR"), "IDR -1,500");
        assert_eq!(
            format_money(i64::MIN, "IDR"),
            "IDR -9,223,372,036,854,775,808"
        );
        assert_eq!(format_money(123_456, "USD"), "USD 1,234.56");
    }

    #[test]
    fn transaction_json_shape_is_stable() {
        let view = TransactionView::from_pb(&sample());
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &view)).expect("json");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "client_ref",
                "kind",
                "status",
                "is_final",
                "product_code",
                "provider",
                "account",
                "amount",
                "provider_reference",
                "provider_trace",
                "provider_code",
                "provider_message",
                "serial_number",
                "inquiry_id",
                "bill",
                "explanation",
                "amount_mismatch",
                "provider_amount",
                "created_at",
                "updated_at",
                "original_id",
                "method",
                "payment",
            ]
        );
        assert_eq!(json["status"], "success");
        assert_eq!(json["kind"], "bill_inquiry");
        assert_eq!(json["is_final"], true);
        assert!(json["amount"].is_null());
        assert!(
            json["provider_trace"].is_null(),
            "empty strings become null"
        );
        assert_eq!(json["bill"]["total_amount"]["minor"].as_i64(), Some(52_500));
        assert_eq!(json["bill"]["total_amount"]["currency"], "IDR");
        assert_eq!(json["bill"]["expires_at"], "2025-01-31T05:06:40.000Z");
        assert_eq!(json["bill"]["extra"]["TARIF"], "R1");
        assert_eq!(json["created_at"], "2025-01-31T04:50:00.005Z");
    }

    #[test]
    fn transaction_text_shows_what_support_needs() {
        let mut t = sample();
        t.explanation = Some(pb::CodeExplanation {
            provider: "okebayar".into(),
            code: "000".into(),
            outcome: pb::Outcome::Success as i32,
            category: "success".into(),
            who_acts: "none".into(),
            operator_action: "Nothing to do.".into(),
            ..Default::default()
        });
        let text = render(Format::Text, &TransactionView::from_pb(&t));
        for needle in [
            "transaction     0191d3a0",
            "status          SUCCESS (final: done)",
            "product         PLNPOST (okebayar)",
            "provider code   000: Success",
            "action          Nothing to do.",
            "customer        BUDI",
            "bill amount     IDR 50,000",
            "admin fee       IDR 2,500",
            "total to pay    IDR 52,500",
            "pay before      2025-01-31T05:06:40.000Z",
            "next            pay it: loketctl pay --ref <new ref> \
             --inquiry 0191d3a0-0000-7000-8000-000000000001 --amount 52500",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }

        // A PLN token inquiry names the purchase it backs; a failed
        // inquiry backs nothing.
        t.kind = pb::TransactionKind::PrepaidInquiry as i32;
        t.product_code = "PLN20".into();
        let text = render(Format::Text, &TransactionView::from_pb(&t));
        assert!(
            text.contains(
                "next            buy it: loketctl purchase --ref <new ref> --product PLN20 \
                 --account 512345678901 --inquiry 0191d3a0-0000-7000-8000-000000000001"
            ),
            "{text}"
        );
        t.status = pb::TransactionStatus::Failed as i32;
        let text = render(Format::Text, &TransactionView::from_pb(&t));
        assert!(!text.contains("next "), "{text}");
    }

    #[test]
    fn pay_in_instructions_and_reversal_links_are_shown() {
        let pay_in = pb::Transaction {
            id: "0191d3a0-0000-7000-8000-00000000000a".into(),
            client_ref: "IN-1".into(),
            kind: pb::TransactionKind::PayIn as i32,
            status: pb::TransactionStatus::Pending as i32,
            product_code: "PAYIN".into(),
            provider: "smilepayz".into(),
            amount: idr(150_000),
            method: "BCA".into(),
            payment: Some(pb::PaymentInstructions {
                method: "BCA".into(),
                va_number: "8808123456789".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1_738_300_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = TransactionView::from_pb(&pay_in);
        let text = view.text();
        for needle in [
            "kind            pay_in",
            "method          BCA",
            "VA number       8808123456789",
            "pay before      2025-01-31T05:06:40.000Z",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("account"), "no empty account line:\n{text}");
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["payment"]["va_number"], "8808123456789");
        assert!(json["payment"]["qr_string"].is_null());
        assert!(json["original_id"].is_null());

        let mut paid = pay_in.clone();
        paid.status = pb::TransactionStatus::Success as i32;
        let text = TransactionView::from_pb(&paid).text();
        assert!(text.contains("VA number       8808123456789"), "{text}");
        assert!(
            !text.contains("pay before"),
            "no deadline once paid:\n{text}"
        );

        let mut waiting = pay_in.clone();
        waiting.payment = None;
        let text = TransactionView::from_pb(&waiting).text();
        assert!(text.contains("instructions    not reported yet"), "{text}");

        // Paid on the provider's hosted page: the client named no method.
        let mut hosted = paid.clone();
        hosted.method = String::new();
        hosted.payment = Some(pb::PaymentInstructions {
            payment_url: "https://checkout.example/pay/T1".into(),
            ..Default::default()
        });
        let view = TransactionView::from_pb(&hosted);
        let text = view.text();
        assert!(
            text.contains(
                "method          unknown (the payer picks it on the provider's payment page)"
            ),
            "{text}"
        );
        assert!(serde_json::to_value(&view).unwrap()["method"].is_null());
        // Once the provider reports the method it was paid with, it shows.
        hosted.method = "QRIS".into();
        let view = TransactionView::from_pb(&hosted);
        assert!(
            view.text().contains("method          QRIS"),
            "{}",
            view.text()
        );
        assert_eq!(serde_json::to_value(&view).unwrap()["method"], "QRIS");

        let refund = pb::Transaction {
            id: "r-1".into(),
            kind: pb::TransactionKind::QrRefund as i32,
            status: pb::TransactionStatus::Success as i32,
            product_code: "QRCPM".into(),
            provider: "snapqr".into(),
            amount: idr(2_500),
            original_id: "0191d3a0-0000-7000-8000-00000000000b".into(),
            ..Default::default()
        };
        let view = TransactionView::from_pb(&refund);
        assert!(
            view.text()
                .contains("refund of       0191d3a0-0000-7000-8000-00000000000b"),
            "{}",
            view.text()
        );
        assert_eq!(
            serde_json::to_value(&view).expect("json")["original_id"],
            "0191d3a0-0000-7000-8000-00000000000b"
        );
    }

    #[test]
    fn unknown_status_warns_against_retry() {
        let mut t = sample();
        t.status = pb::TransactionStatus::Unknown as i32;
        t.bill = None;
        t.kind = pb::TransactionKind::PrepaidPurchase as i32;
        t.amount = idr(10_500);
        let view = TransactionView::from_pb(&t);
        assert!(!view.is_final);
        let text = view.text();
        assert!(
            text.contains("UNKNOWN (outcome not known yet: being checked, do NOT retry)"),
            "{text}"
        );
        assert!(text.contains("amount          IDR 10,500"));
        let line = view.line();
        assert!(
            line.contains("unknown") && line.contains("IDR 10,500") && line.contains("ref R1"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let json_line = render_line(Format::Json, &view);
        assert!(!json_line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json_line).expect("json")["status"],
            "unknown"
        );
    }

    /// A `received` record cannot tell whether the command already
    /// reached the provider (it may be in the connector's call, and the
    /// provider may have counted it), so the banner must not claim it was not
    /// sent: a purchase and a QR payment alike.
    #[test]
    fn received_status_does_not_claim_the_request_was_not_sent() {
        for kind in [
            pb::TransactionKind::PrepaidPurchase,
            pb::TransactionKind::QrPayment,
        ] {
            let mut t = sample();
            t.status = pb::TransactionStatus::Received as i32;
            t.kind = kind as i32;
            t.bill = None;
            t.provider_code = String::new();
            let text = TransactionView::from_pb(&t).text();
            assert!(
                text.contains("RECEIVED (accepted; no answer from the provider yet)"),
                "{text}"
            );
            assert!(!text.contains("not yet sent"), "{text}");
        }
    }
    #[test]
    fn explanation_json_and_text() {
        let pb_view = pb::CodeExplanation {
            provider: "okebayar".into(),
            code: "208".into(),
            operation: "purchase".into(),
            provider_message: "Reference code already used".into(),
            outcome: pb::Outcome::Unknown as i32,
            retry_safe: false,
            category: "duplicate".into(),
            who_acts: "operations".into(),
            operator_action: "Check status of the original.".into(),
            merchant_message_en: "Being checked.".into(),
            merchant_message_id: "Sedang dicek.".into(),
            in_catalogue: false,
            retry: "query_first".into(),
            operations: vec!["purchase".into()],
        };
        let view = ExplanationView::from_pb(&pb_view);
        let json: serde_json::Value = serde_json::to_value(&view).expect("json");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "provider",
                "code",
                "operation",
                "provider_message",
                "outcome",
                "retry",
                "retry_safe",
                "category",
                "who_acts",
                "operator_action",
                "merchant_message_en",
                "merchant_message_id",
                "in_catalogue",
                "operations",
            ]
        );
        assert_eq!(json["outcome"], "unknown");
        let text = view.text();
        assert!(text.contains("okebayar 208 (operation purchase)"), "{text}");
        assert!(text.contains("NOT a failure"), "{text}");
        assert!(text.contains("query_first: check status first"), "{text}");
        assert!(text.contains("Sedang dicek."), "{text}");
        assert!(text.contains("not in the catalogue"), "{text}");
    }

    #[test]
    fn created_client_prints_key_and_note() {
        let view = CreatedClientView {
            id: "id1".into(),
            name: "pos".into(),
            api_key: "lk_xyz".into(),
            note: KEY_SHOWN_ONCE,
        };
        let text = view.text();
        assert!(text.contains("lk_xyz") && text.contains("shown only once"));
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &view)).expect("json");
        assert_eq!(json["api_key"], "lk_xyz");
    }

    #[test]
    fn code_list_shows_operations_compactly() {
        let row = |code: &str, outcome: &'static str, ops: &[&str]| ExplanationView {
            provider: "okebayar".into(),
            code: code.into(),
            operation: None,
            provider_message: Some("m".into()),
            outcome,
            retry: Some("no".into()),
            retry_safe: false,
            category: "system".into(),
            who_acts: "operations".into(),
            operator_action: None,
            merchant_message_en: None,
            merchant_message_id: None,
            in_catalogue: true,
            operations: ops.iter().map(ToString::to_string).collect(),
        };
        let offline = CodeListView {
            provider: "okebayar".into(),
            codes: vec![
                row("000", "success", &["purchase", "bill_inquiry"]),
                row("208", "failed", &["bill_inquiry"]),
                row("208", "unknown", &["purchase"]),
            ],
        };
        let text = offline.text();
        assert!(text.contains("OPERATIONS"), "{text}");
        assert!(
            text.contains("000   success  no     operations  all "),
            "{text}"
        );
        assert!(
            text.contains("208   unknown  no     operations  purchase "),
            "{text}"
        );

        let mut online = offline.clone();
        online.codes.iter_mut().for_each(|c| c.operations.clear());
        let text = online.text();
        assert!(!text.contains("OPERATIONS"), "{text}");
        assert!(text.contains("--operation <op>"), "{text}");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["A", "LONG HEADER", "C"]);
        table.row(vec!["xxxx".into(), "y".into(), "z".into()]);
        assert_eq!(table.finish(), "A     LONG HEADER  C\nxxxx  y            z");
    }

    #[test]
    fn list_view_hints_next_page() {
        let view = TransactionListView {
            transactions: vec![TransactionView::from_pb(&sample())],
            next_page_token: Some("tok".into()),
        };
        let text = view.text();
        assert!(text.starts_with("CREATED"), "{text}");
        assert!(
            text.ends_with("more: --page-token tok (or --all)"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&view).expect("json");
        assert_eq!(json["next_page_token"], "tok");
        assert_eq!(
            json["transactions"][0]["id"],
            "0191d3a0-0000-7000-8000-000000000001"
        );
    }
}
