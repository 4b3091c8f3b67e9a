//! `POST /`: read a bounded body, decode it, check names, source IP and
//! credentials, dispatch on `transactioncode`, and answer in the request's
//! format, possibly broken the way the account's scenario says.
//!
//! Check order (each answered with the code in brackets): undecodable body
//! [206] → an XML root other than `<transaction>` (spec §1) [206] →
//! upper-case name, the root's and containers' included [206] → source IP
//! [212] → `userid` [213] → a `referencecode` missing, not alphanumeric
//! (spec §1; surrounding spaces included, see [`is_well_formed_reference`])
//! or longer than the callback receiver takes ([`MAX_REFERENCE_LEN`])
//! [206] → `userpin` [207] → `signature` [211] → unknown `transactioncode`
//! [241]. The spec lists both 207 (userid/pin/signature) and 211 (invalid
//! signature): a wrong PIN answers 207, a signature that does not verify,
//! or is not written in lower case as spec §2 has it, answers 211.
//!
//! A request is counted under its `referencecode` only once it passed these
//! checks up to the signature; every request counts in the total.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use loket_okebayar::callback::MAX_REFERENCE_LEN;
use loket_okebayar::sign;
use loket_okebayar::wire::{decode, format_time, wib, Fields, Format, REQUEST_ROOT};
use loket_protocol::product::{bpjs_months, is_bpjs_product_code};

use super::callbacks::{self, CallbackContext};
use super::ledger::{
    parse_idr, CommitOutcome, Committed, Inquiry, LedgerEntry, LedgerOperation, MoneyAttempt,
    PaymentData,
};
use super::reply::Reply;
use super::scenarios::{AmountStyle, ExpiryStyle, Fault, Plan, Scenario, Step};
use super::{OkeBayarSim, OkeBayarSimSettings};
use crate::common::{error_page, read_body, ConnInfo, RequestKind};
use crate::metrics as names;

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Purchase,
    PrepaidInquiry,
    BillInquiry,
    Payment,
    StatusCheck,
    Balance,
    Echo,
    Unknown,
}

impl Operation {
    fn of(fields: &Fields, settings: &OkeBayarSimSettings) -> Operation {
        let code = fields.non_empty("transactioncode").unwrap_or("");
        let is = |name: &str| code.eq_ignore_ascii_case(name);
        let is_one_of = |names: &[String]| names.iter().any(|name| is(name));
        if is("OkeBayar-prabayar") {
            match fields.non_empty("querycode") {
                Some(q) if q.eq_ignore_ascii_case("inquiry") => Operation::PrepaidInquiry,
                _ => Operation::Purchase,
            }
        } else if is("OkeBayar-inquiry") {
            if fields.non_empty("inquirycode").is_some() {
                Operation::Payment
            } else {
                Operation::BillInquiry
            }
        } else if is_one_of(&settings.payment_transactioncodes) {
            Operation::Payment
        } else if is("OkeBayar-cek-status") {
            Operation::StatusCheck
        } else if is("OkeBayar-cek-balance") {
            Operation::Balance
        } else if is_one_of(&settings.echo_transactioncodes) {
            Operation::Echo
        } else {
            Operation::Unknown
        }
    }

    fn kind(self) -> RequestKind {
        match self {
            Operation::Purchase => RequestKind::Purchase,
            Operation::Payment => RequestKind::Payment,
            Operation::PrepaidInquiry | Operation::BillInquiry => RequestKind::Inquiry,
            Operation::StatusCheck => RequestKind::StatusCheck,
            Operation::Balance | Operation::Echo | Operation::Unknown => RequestKind::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Operation::Purchase => "purchase",
            Operation::PrepaidInquiry => "prepaid_inquiry",
            Operation::BillInquiry => "bill_inquiry",
            Operation::Payment => "payment",
            Operation::StatusCheck => "status_check",
            Operation::Balance => "balance",
            Operation::Echo => "echo",
            Operation::Unknown => "unknown",
        }
    }

    /// The status field of this operation's reply.
    fn status_style(self) -> StatusStyle {
        match self {
            Operation::Purchase | Operation::PrepaidInquiry | Operation::StatusCheck => {
                StatusStyle::Transaction
            }
            Operation::BillInquiry | Operation::Payment | Operation::Balance => {
                StatusStyle::Response
            }
            Operation::Echo | Operation::Unknown => StatusStyle::Both,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusStyle {
    /// `transactionstatus` + `transactiontime` + `info`.
    Transaction,
    /// `responsecode` + `responsestatus` + `responsetime`.
    Response,
    /// Both, when the operation is not known.
    Both,
}

/// The short text OkeBayar-like replies carry with a code.
fn message(code: &str) -> &'static str {
    match code {
        "000" => "SUKSES",
        "001" => "SUKSES, SN BELUM TERSEDIA",
        "002" => "TRANSAKSI SEDANG DIPROSES",
        "003" => "TRANSAKSI DIANTRIKAN ULANG",
        "200" => "PRODUK SEDANG GANGGUAN",
        "201" => "GANGGUAN BILLER",
        "202" => "GANGGUAN SERVER",
        "203" => "SALDO DEPOSIT TIDAK CUKUP",
        "204" => "NOMOR TUJUAN SALAH",
        "205" => "KODE PRODUK SALAH",
        "206" => "FORMAT REQUEST SALAH",
        "207" => "USERID ATAU PIN SALAH",
        "208" => "TRANSAKSI DUPLIKAT",
        "211" => "SIGNATURE TIDAK VALID",
        "212" => "IP TIDAK TERDAFTAR",
        "213" => "USERID TIDAK VALID",
        "241" => "TRANSACTIONCODE TIDAK DIKENAL",
        "400" => "TAGIHAN TIDAK DITEMUKAN",
        "401" => "TAGIHAN SUDAH TERBAYAR",
        "402" => "DATA PEMBAYARAN TIDAK SESUAI INQUIRY",
        "403" => "INQUIRY KADALUARSA",
        "404" => "ID PELANGGAN SALAH",
        "405" => "BELUM INQUIRY",
        "500" => "NOMOR DIBLOKIR",
        _ => "GAGAL",
    }
}

/// One request, decoded and identified.
struct Ctx {
    sim: OkeBayarSim,
    format: Format,
    fields: Fields,
    op: Operation,
    reference: String,
    tracecode: String,
    now: DateTime<Utc>,
}

impl Ctx {
    fn field(&self, name: &str) -> String {
        self.fields.get(name).unwrap_or("").trim().to_string()
    }
}

/// What to answer and how.
struct Answer {
    code: String,
    reply: Reply,
    fault: Fault,
    steps: Vec<Step>,
    callback_before_reply: bool,
    callback: Option<CallbackContext>,
}

impl Answer {
    fn plain(code: &str, reply: Reply) -> Answer {
        Answer {
            code: code.to_string(),
            reply,
            fault: Fault::None,
            steps: Vec::new(),
            callback_before_reply: false,
            callback: None,
        }
    }
}

pub(crate) async fn transaction(State(sim): State<OkeBayarSim>, request: Request) -> Response {
    let conn = ConnInfo::of(&request);
    let settings = &sim.inner.settings;
    let body = match read_body(
        request.into_body(),
        settings.body_limit_bytes,
        Duration::from_millis(settings.body_read_timeout_ms),
    )
    .await
    {
        Ok(body) => body,
        Err(error) => {
            sim.inner.requests.record(None, RequestKind::Other);
            count("unreadable", &error.status().as_u16().to_string());
            return (error.status(), error.to_string()).into_response();
        }
    };
    let format = Format::sniff(&body);
    let fields = match decode(format, &body) {
        Ok(fields) => fields,
        Err(error) => {
            tracing::debug!(%error, "undecodable OkeBayar request");
            sim.inner.requests.record(None, RequestKind::Other);
            let ctx = Ctx {
                tracecode: sim.inner.ledger.next_tracecode(),
                sim: sim.clone(),
                format,
                fields: Fields::new(),
                op: Operation::Unknown,
                reference: String::new(),
                now: Utc::now(),
            };
            return respond(&ctx, refusal(&ctx, "206"), conn).await;
        }
    };
    let op = Operation::of(&fields, settings);
    // As sent: the signature covers the value as sent, and a reference with
    // spaces around it is malformed, not another way to write a good one.
    let reference = fields.get("referencecode").unwrap_or_default().to_string();
    let ctx = Ctx {
        tracecode: sim.inner.ledger.next_tracecode(),
        sim: sim.clone(),
        format,
        op,
        reference,
        now: Utc::now(),
        fields,
    };
    let checked = check(&ctx, conn.as_ref());
    // Counted under its referencecode only once the checks passed: whoever
    // reaches the port must not make the simulator remember references
    // (their counts, their text) by sending requests it refuses.
    let counted_reference = checked.is_ok().then_some(ctx.reference.as_str());
    sim.inner.requests.record(counted_reference, op.kind());
    let outage = sim.inner.outage.current();
    if let Some(outage) = outage {
        if !(outage.after_commit && op.kind().moves_money()) {
            if op.kind().moves_money() {
                sim.inner.requests.turn_away(counted_reference);
            }
            count(op.label(), "outage");
            return error_page(
                StatusCode::from_u16(outage.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            );
        }
    }
    let mut answer = match checked {
        Err(code) => refusal(&ctx, code),
        Ok(()) => match op {
            Operation::Purchase => purchase(&ctx),
            Operation::PrepaidInquiry => prepaid_inquiry(&ctx),
            Operation::BillInquiry => bill_inquiry(&ctx),
            Operation::Payment => payment(&ctx),
            Operation::StatusCheck => status_check(&ctx),
            Operation::Balance => balance(&ctx),
            Operation::Echo => echo(&ctx),
            Operation::Unknown => refusal(&ctx, "241"),
        },
    };
    if let Some(outage) = outage {
        // An outage "after commit": the work above is done, its answer lost.
        answer.fault = Fault::ErrorPage(outage.status);
    }
    respond(&ctx, answer, conn).await
}

/// Names, source, credentials and signature.
fn check(ctx: &Ctx, conn: Option<&ConnInfo>) -> Result<(), &'static str> {
    let settings = &ctx.sim.inner.settings;
    if let Some(root) = ctx.fields.root().filter(|root| *root != REQUEST_ROOT) {
        tracing::debug!(root, "request root is not <transaction>");
        return Err("206");
    }
    if let Some(name) = ctx.fields.first_non_lowercase_name() {
        tracing::debug!(name, "request tag not in lower case");
        return Err("206");
    }
    // Without connection info (router served by someone else) the source
    // cannot be known; the allow-list then does not apply.
    if let Some(conn) = conn {
        if !settings.allowed_ips.allows(Some(conn.peer.ip())) {
            return Err("212");
        }
    }
    if ctx.fields.get("userid").map(str::trim) != Some(settings.userid.as_str()) {
        return Err("213");
    }
    if !is_well_formed_reference(&ctx.reference) {
        return Err("206");
    }
    if ctx.fields.get("userpin") != Some(settings.userpin.expose()) {
        return Err("207");
    }
    let signature = ctx.fields.get("signature").unwrap_or("");
    if !sign::verify(
        &settings.userid,
        settings.userpin.expose(),
        &ctx.reference,
        signature,
    ) {
        return Err("211");
    }
    Ok(())
}

/// Spec §1: a `referencecode` is the partner's alphanumeric, UUID-like ID:
/// letters, digits and (ASSUMED, a UUID's) hyphens, nothing else, not even
/// spaces around it; and no longer than loket's callback receiver takes
/// ([`MAX_REFERENCE_LEN`]), so that every callback about it can be received.
fn is_well_formed_reference(reference: &str) -> bool {
    !reference.is_empty()
        && reference.len() <= MAX_REFERENCE_LEN
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A reply refusing the request with `code` in the operation's style.
fn refusal(ctx: &Ctx, code: &str) -> Answer {
    let time = format_time(ctx.now);
    let mut reply = Reply::new().text("tracecode", &ctx.tracecode);
    let style = ctx.op.status_style();
    if matches!(style, StatusStyle::Transaction | StatusStyle::Both) {
        reply = reply
            .text("transactionstatus", code)
            .text("transactiontime", &time);
    }
    if matches!(style, StatusStyle::Response | StatusStyle::Both) {
        reply = reply
            .text("responsecode", code)
            .text("responsestatus", message(code))
            .text("responsetime", &time);
    }
    for name in ["productcode", "accnumber", "accnumber1", "userid"] {
        if let Some(value) = ctx.fields.get(name) {
            reply = reply.text(name, value.trim());
        }
    }
    if style != StatusStyle::Response {
        reply = reply.text("info", message(code));
    }
    Answer::plain(code, reply.text("referencecode", &ctx.reference))
}

fn scenario_of(ctx: &Ctx, account: &str) -> Scenario {
    Scenario::for_account(&ctx.sim.inner.settings.scenario_prefix, account)
}

/// The `<transaction-status>` reply of a purchase or a status check;
/// `balance` is the deposit left: after this purchase for its own reply
/// (as committed, whatever other purchases did since), now for a check.
fn transaction_reply(
    ctx: &Ctx,
    entry: &LedgerEntry,
    code: &str,
    balance: i64,
    style: AmountStyle,
) -> Reply {
    let serial = if code == "000" {
        entry.serial_number.as_str()
    } else {
        ""
    };
    Reply::new()
        .text("tracecode", &ctx.tracecode)
        .text("transactionstatus", code)
        .text("transactiontime", format_time(entry.transaction_time))
        .text("serialnumber", serial)
        .amount("harga", entry.charged(), style)
        .amount("balance", balance, style)
        .text("productcode", &entry.productcode)
        .text("accnumber", &entry.accnumber)
        .text("userid", &ctx.sim.inner.settings.userid)
        .text("info", message(code))
        .text("referencecode", &entry.reference)
}

fn duplicate(ctx: &Ctx, original: &LedgerEntry) -> Answer {
    tracing::info!(reference = %ctx.reference, original_code = %original.code, "reused referencecode: 208");
    refusal(ctx, "208")
}

/// The plan's steps and callback context for an executed money request.
fn executed(ctx: &Ctx, code: &str, reply: Reply, plan: Plan, style: AmountStyle) -> Answer {
    Answer {
        code: code.to_string(),
        reply,
        fault: plan.fault,
        steps: plan.steps,
        callback_before_reply: plan.callback_before_reply,
        callback: Some(CallbackContext {
            reference: ctx.reference.clone(),
            format: ctx.format,
            style,
        }),
    }
}

/// A money-moving request lost on its way (scenario `912`): counted as
/// received but never taken in, nothing recorded, and the connection reset
/// without a reply.
fn lost(ctx: &Ctx) -> Answer {
    tracing::info!(reference = %ctx.reference, "scenario: request lost on its way; nothing recorded");
    ctx.sim.inner.requests.turn_away(Some(&ctx.reference));
    Answer {
        fault: Fault::Reset,
        ..Answer::plain("", Reply::new())
    }
}

fn purchase(ctx: &Ctx) -> Answer {
    let settings = &ctx.sim.inner.settings;
    let productcode = ctx.field("productcode");
    let accnumber = ctx.field("accnumber");
    if productcode.is_empty() || accnumber.is_empty() {
        return refusal(ctx, "206");
    }
    let scenario = scenario_of(ctx, &accnumber);
    if scenario == Scenario::LostRequest {
        return lost(ctx);
    }
    let plan = scenario.plan();
    let style = scenario.amount_style();
    let mut forced_failure = scenario.immediate_failure(false);
    let mut inquirycode = None;
    if forced_failure.is_none() && settings.check_payment_refs {
        match pln_inquiry_named(ctx, &productcode, &accnumber) {
            Ok(found) => inquirycode = found,
            Err(code) => forced_failure = Some(code),
        }
    }
    let committed = ctx.sim.inner.ledger.commit(MoneyAttempt {
        reference: ctx.reference.clone(),
        operation: LedgerOperation::Purchase,
        amount: settings.price_of(&productcode),
        productcode,
        accnumber,
        tracecode: ctx.tracecode.clone(),
        at: ctx.now,
        inquirycode,
        forced_failure,
        payment: None,
        initial_code: plan.initial,
        serial_number: ctx.sim.inner.ledger.next_serial(),
        allow_reuse_after_failure: settings.allow_reuse_after_failure,
    });
    let with_refs = |mut reply: Reply| {
        // PLN token purchase after an inquiry: the refs come back verbatim.
        for name in ["ref1", "ref2", "ref3"] {
            if let Some(value) = ctx.fields.get(name) {
                reply = reply.text(name, value.trim());
            }
        }
        reply
    };
    match committed.outcome {
        CommitOutcome::Duplicate => duplicate(ctx, &committed.entry),
        CommitOutcome::Refused(code) => Answer::plain(
            code,
            with_refs(transaction_reply(
                ctx,
                &committed.entry,
                code,
                committed.balance,
                style,
            )),
        ),
        CommitOutcome::Executed => {
            let code = plan.reply_code;
            let reply = with_refs(transaction_reply(
                ctx,
                &committed.entry,
                code,
                committed.balance,
                style,
            ));
            executed(ctx, code, reply, plan, style)
        }
    }
}

/// The PLN prepaid inquiry a purchase's `ref1..3` name, copied verbatim
/// from the inquiry's reply (spec §4, §5.B); `Ok(None)` when the purchase
/// carries no refs (a purchase without an inquiry). The simulator's `ref1`
/// is its inquiry handle. The spec gives no codes for this, so they are
/// those of a bill payment, in a bill payment's order (**ASSUMED**): `405`
/// when it issued no such inquiry, `403` past the inquiry's expiry, `402`
/// when a ref, the product or the account differs.
fn pln_inquiry_named(
    ctx: &Ctx,
    productcode: &str,
    accnumber: &str,
) -> Result<Option<String>, &'static str> {
    let [ref1, ref2, ref3] =
        ["ref1", "ref2", "ref3"].map(|name| ctx.fields.get(name).unwrap_or_default());
    if [ref1, ref2, ref3]
        .iter()
        .all(|value| value.trim().is_empty())
    {
        return Ok(None);
    }
    let Some(inquiry) = ctx.sim.inner.ledger.inquiry(ref1.trim()) else {
        return Err("405");
    };
    if ctx.now > inquiry.expires_at {
        return Err("403");
    }
    let same_refs = ref1 == inquiry.ref1 && ref2 == inquiry.ref2 && ref3 == inquiry.ref3;
    let same_customer = productcode.eq_ignore_ascii_case(&inquiry.productcode)
        && accnumber.trim() == inquiry.account.trim();
    if !same_refs || !same_customer {
        return Err("402");
    }
    Ok(Some(inquiry.inquirycode))
}

/// `at` plus `ms`, saturating (a huge configured TTL never panics).
fn later(at: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::Duration::try_milliseconds)
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn format_expiry(at: DateTime<Utc>, style: ExpiryStyle) -> String {
    let local = at.with_timezone(&wib());
    match style {
        ExpiryStyle::Full => format_time(at),
        ExpiryStyle::TwelveDigits => local.format("%y%m%d%I%M%S").to_string(),
        ExpiryStyle::Dashed => local.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    }
}

/// Records an inquiry's outcome `code` in the ledger under the request's
/// reference, with its handle `inquiry` when it succeeded. `Err` is the
/// `208` answer when the reference belongs to a money-moving entry or to an
/// inquiry that succeeded.
fn record_inquiry(
    ctx: &Ctx,
    operation: LedgerOperation,
    code: &str,
    productcode: &str,
    account: &str,
    inquiry: Option<Inquiry>,
) -> Result<(), Answer> {
    let entry = LedgerEntry {
        reference: ctx.reference.clone(),
        operation,
        code: code.to_string(),
        serial_number: String::new(),
        amount: 0,
        debited: false,
        tracecode: ctx.tracecode.clone(),
        productcode: productcode.to_string(),
        accnumber: account.to_string(),
        transaction_time: ctx.now,
        inquirycode: inquiry.as_ref().map(|i| i.inquirycode.clone()),
        bill: None,
        history: vec![code.to_string()],
        executions: 1,
    };
    ctx.sim
        .inner
        .ledger
        .record_inquiry(entry, inquiry)
        .map_err(|original| duplicate(ctx, &original))
}

/// PLN prepaid inquiry (`OkeBayar-prabayar` + `querycode=inquiry`): the
/// reply carries the upper-case `PLN_*` fields and `ref1..3`.
fn prepaid_inquiry(ctx: &Ctx) -> Answer {
    let settings = &ctx.sim.inner.settings;
    let productcode = ctx.field("productcode");
    let accnumber = ctx.field("accnumber");
    if productcode.is_empty() || accnumber.is_empty() {
        return refusal(ctx, "206");
    }
    let scenario = scenario_of(ctx, &accnumber);
    if let Some(code) = scenario.immediate_failure(true) {
        if let Err(answer) = record_inquiry(
            ctx,
            LedgerOperation::PrepaidInquiry,
            code,
            &productcode,
            &accnumber,
            None,
        ) {
            return answer;
        }
        return refusal(ctx, code);
    }
    let inquirycode = format!("INQ{}", ctx.tracecode);
    let expires = later(ctx.now, settings.inquiry_ttl_secs.saturating_mul(1000));
    // The purchase omits the inquirycode and copies the refs (spec §4):
    // `ref1` names the inquiry.
    let ref1 = inquirycode.clone();
    let ref2 = format!("PLN{}", ctx.tracecode);
    let ref3 = String::new();
    let inquiry = Inquiry {
        inquirycode: inquirycode.clone(),
        reference: ctx.reference.clone(),
        productcode: productcode.clone(),
        account: accnumber.clone(),
        account2: String::new(),
        nominal: 0,
        adminfee: 0,
        shown_expiry: expires,
        expires_at: expires,
        ref1: ref1.clone(),
        ref2: ref2.clone(),
        ref3: ref3.clone(),
        months: None,
    };
    if let Err(answer) = record_inquiry(
        ctx,
        LedgerOperation::PrepaidInquiry,
        "000",
        &productcode,
        &accnumber,
        Some(inquiry),
    ) {
        return answer;
    }
    let digits: String = accnumber.chars().filter(char::is_ascii_digit).collect();
    let id_pelanggan = format!("5{:0>11}", &digits[digits.len().saturating_sub(11)..]);
    let reply = Reply::new()
        .text("tracecode", &ctx.tracecode)
        .text("transactionstatus", "000")
        .text("transactiontime", format_time(ctx.now))
        .text("productcode", &productcode)
        .text("accnumber", &accnumber)
        .text("accnumber1", &accnumber)
        .text("accnumber2", "")
        .text("accnumber3", "")
        .text("inquirycode", &inquirycode)
        .text(
            "inquiryexpired",
            format_expiry(expires, scenario.expiry_style()),
        )
        .text("PLN_IDPELANGGAN", &id_pelanggan)
        .text("PLN_NOMETER", &accnumber)
        .text("PLN_NAMAPELANGGAN", SUBSCRIBER_NAME)
        .text("PLN_TARIFDAYA", "R1/1300")
        .text("PLN_TARIF", "R1")
        .text("PLN_KATEGORIDAYA", "1300")
        .text("PLN_NOREFPLN", format!("0SIM{}", ctx.tracecode))
        .text("PLN_NOREFVENDOR", format!("V{}", ctx.tracecode))
        .text("PLN_KODEDISTRIBUSI", "51")
        .text("PLN_UPJ", "51101")
        .text("PLN_UPJPHONE", "123")
        .text("PLN_KWHLIMIT", "0")
        .text("PLN_TOKENUNSOLD1", "")
        .text("PLN_TOKENUNSOLD2", "")
        .text("ref1", ref1)
        .text("ref2", ref2)
        .text("ref3", ref3)
        .text("serialnumber", "")
        .text("userid", &settings.userid)
        .text("referencecode", &ctx.reference);
    Answer::plain("000", reply)
}

/// The fields a bill inquiry and a bill payment reply share; `bill_paid`
/// is the inquiry's bill's `paymentstatus`.
fn bill_reply(
    ctx: &Ctx,
    code: &str,
    inquiry: Option<&Inquiry>,
    bill_paid: bool,
    style: AmountStyle,
    expiry: ExpiryStyle,
) -> Reply {
    let time = format_time(ctx.now);
    let mut reply = Reply::new()
        .text("tracecode", &ctx.tracecode)
        .text(
            "inquirycode",
            inquiry.map_or("", |i| i.inquirycode.as_str()),
        )
        .text(
            "Inquiryexpired",
            inquiry.map_or(String::new(), |i| format_expiry(i.shown_expiry, expiry)),
        )
        .text("responsecode", code)
        .text("responsestatus", message(code))
        .text("responsetime", time)
        .text("referencecode", &ctx.reference)
        .text("accnumber1", ctx.field("accnumber1"))
        .text("accnumber2", ctx.field("accnumber2"))
        .text("accnumber3", ctx.field("accnumber3"))
        .text("contactnumber", ctx.field("contactnumber"));
    if let Some(inquiry) = inquiry {
        reply = reply
            .amount("nominal", inquiry.nominal, style)
            .amount("adminfee", inquiry.adminfee, style)
            .text("ref1", &inquiry.ref1)
            .text("ref2", &inquiry.ref2)
            .text("ref3", &inquiry.ref3)
            .group(
                "additionaldata",
                additional_data(inquiry, bill_paid, ctx.now),
            );
    }
    reply
}

/// The name every simulated bill is in.
const SUBSCRIBER_NAME: &str = "PELANGGAN SIMULASI";

/// A bill's `additionaldata` block (spec §4, "per product"). PLN postpaid
/// (a product code starting `PLN`, ASSUMED) carries every field the spec
/// lists, in its order, its one bill as bill 1 (this month, WIB). The spec
/// lists no fields for the other products, so they carry the few every bill
/// has (ASSUMED): whose it is, how many months, whether paid.
fn additional_data(
    inquiry: &Inquiry,
    bill_paid: bool,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let paid = if bill_paid { "1" } else { "0" };
    let months = inquiry.months.unwrap_or(1).to_string();
    let fields: Vec<(&str, String)> = if inquiry.productcode.starts_with("PLN") {
        let month = now.with_timezone(&wib()).format("%Y%m").to_string();
        let nominal = inquiry.nominal.to_string();
        let meter = |reading: u32| format!("{reading:08}");
        vec![
            ("caid", "SIM".into()),
            ("subscriberid", inquiry.account.clone()),
            ("billingstatus", "1".into()),
            ("paymentstatus", paid.into()),
            ("totalmonthoutstanding", months),
            ("swreferenceid", inquiry.ref2.clone()),
            ("subscribername", SUBSCRIBER_NAME.into()),
            ("serviceunit", "51101".into()),
            ("serviceunitphone", "123".into()),
            ("subscribersegmentation", "R1".into()),
            ("subscribercategory", "000001300".into()),
            ("totaladmincharge", inquiry.adminfee.to_string()),
            ("blth1", month.clone()),
            ("duedate1", format!("{month}20")),
            ("meterreaddate1", format!("{month}01")),
            ("RPTAG1", nominal.clone()),
            // `D`: a disincentive, here of nothing.
            ("incentive1", "D0000000000".into()),
            ("valuaddedtax1", "0".into()),
            ("penaltyfee1", "0".into()),
            ("SLALWBP1", meter(12_345)),
            ("SAHLWBP1", meter(12_500)),
            ("SLAWBP1", meter(0)),
            ("SAHWBP1", meter(0)),
            ("SLAKVARH1", meter(0)),
            ("SAHKVARH1", meter(0)),
            ("alamat", "JL SIMULASI NO 1".into()),
            ("plnnpwp", String::new()),
            ("subscribernpwp", String::new()),
            ("totalrptag", nominal),
            ("info", String::new()),
        ]
    } else {
        vec![
            ("subscriberid", inquiry.account.clone()),
            ("subscribername", SUBSCRIBER_NAME.into()),
            ("totalmonthoutstanding", months),
            ("paymentstatus", paid.into()),
        ]
    };
    fields
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The `productcode` and `accnumber1` (the customer) of a bill inquiry or
/// payment, or the `206` answer when either is blank or the `accnumber2` tag
/// is missing: spec §4, "tag must be present even if empty" (a payment
/// carries the inquiry's fields).
fn bill_request(ctx: &Ctx) -> Result<(String, String), Answer> {
    let productcode = ctx.field("productcode");
    let account = ctx.field("accnumber1");
    if productcode.is_empty() || account.is_empty() || ctx.fields.get("accnumber2").is_none() {
        return Err(refusal(ctx, "206"));
    }
    Ok((productcode, account))
}

fn bill_inquiry(ctx: &Ctx) -> Answer {
    let settings = &ctx.sim.inner.settings;
    let (productcode, account) = match bill_request(ctx) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    // A BPJS bill is the months asked for (spec §4); without them, or with a
    // number outside 1–12, the request is malformed: `206` (ASSUMED, no code
    // of the table names a missing or bad period).
    let months = if is_bpjs_product_code(&productcode) {
        match bpjs_months(&ctx.field("accnumber3")) {
            Some(months) => Some(months),
            None => return refusal(ctx, "206"),
        }
    } else {
        None
    };
    let scenario = scenario_of(ctx, &account);
    let style = scenario.amount_style();
    let expiry = scenario.expiry_style();
    let refused = |code: &str| match record_inquiry(
        ctx,
        LedgerOperation::BillInquiry,
        code,
        &productcode,
        &account,
        None,
    ) {
        Ok(()) => Answer::plain(code, bill_reply(ctx, code, None, false, style, expiry)),
        Err(answer) => answer,
    };
    if let Some(code) = scenario.immediate_failure(true) {
        return refused(code);
    }
    let shown = later(ctx.now, settings.inquiry_ttl_secs.saturating_mul(1000));
    let enforced = if scenario == Scenario::BillExpiresEarly {
        later(ctx.now, settings.short_inquiry_ttl_ms)
    } else {
        shown
    };
    let inquiry = Inquiry {
        inquirycode: format!("INQ{}", ctx.tracecode),
        reference: ctx.reference.clone(),
        productcode: productcode.clone(),
        account: account.clone(),
        account2: ctx.field("accnumber2"),
        nominal: settings
            .bill_nominal
            .saturating_mul(i64::from(months.unwrap_or(1))),
        adminfee: settings.bill_adminfee,
        shown_expiry: shown,
        expires_at: enforced,
        ref1: ctx.field("ref1"),
        ref2: format!("SW{}", ctx.tracecode),
        ref3: format!("B{}", ctx.tracecode),
        months,
    };
    if ctx.sim.inner.ledger.is_paid(&inquiry.bill()) {
        // Spec §7 `401` "already paid": the biller sells a bill once, so
        // nothing is due and no handle is issued.
        return refused("401");
    }
    if let Err(answer) = record_inquiry(
        ctx,
        LedgerOperation::BillInquiry,
        "000",
        &productcode,
        &account,
        Some(inquiry.clone()),
    ) {
        return answer;
    }
    Answer::plain(
        "000",
        bill_reply(ctx, "000", Some(&inquiry), false, style, expiry),
    )
}

fn payment(ctx: &Ctx) -> Answer {
    let settings = &ctx.sim.inner.settings;
    let (productcode, account) = match bill_request(ctx) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let scenario = scenario_of(ctx, &account);
    if scenario == Scenario::LostRequest {
        return lost(ctx);
    }
    let plan = scenario.plan();
    let style = scenario.amount_style();
    let inquirycode = ctx.fields.non_empty("inquirycode").map(str::to_string);
    let forced = scenario.forced_payment_failure();
    // A mismatch here is "payment data ≠ inquiry" (402), which the ledger
    // answers after its own checks (no inquiry, paid, expired).
    let mut refs_match = true;
    if settings.check_payment_refs {
        if let Some(inquiry) = inquirycode
            .as_deref()
            .and_then(|c| ctx.sim.inner.ledger.inquiry(c))
        {
            // ref2/ref3 must come back verbatim (spec §4).
            let verbatim = |name| ctx.fields.get(name).unwrap_or_default();
            let same_refs = verbatim("ref2") == inquiry.ref2 && verbatim("ref3") == inquiry.ref3;
            // BPJS (spec §4): the same period, and the payer's phone in
            // accnumber2.
            let same_period = inquiry.months.is_none()
                || (bpjs_months(&ctx.field("accnumber3")) == inquiry.months
                    && !ctx.field("accnumber2").is_empty());
            // Any other bill: accnumber2 names it with accnumber1 (PSTN:
            // the number under the area code), so it is the inquiry's.
            let same_account2 = inquiry.months.is_some()
                || ctx.field("accnumber2").trim() == inquiry.account2.trim();
            refs_match = same_refs && same_period && same_account2;
        }
    }
    let committed: Committed = ctx.sim.inner.ledger.commit(MoneyAttempt {
        reference: ctx.reference.clone(),
        operation: LedgerOperation::Payment,
        productcode,
        accnumber: account,
        amount: 0,
        tracecode: ctx.tracecode.clone(),
        at: ctx.now,
        inquirycode,
        forced_failure: forced,
        payment: Some(PaymentData {
            nominal: ctx.fields.get("nominal").and_then(parse_idr),
            adminfee: ctx.fields.get("adminfee").and_then(parse_idr),
            refs_match,
        }),
        initial_code: plan.initial,
        serial_number: ctx.sim.inner.ledger.next_serial(),
        allow_reuse_after_failure: settings.allow_reuse_after_failure,
    });
    let expiry = scenario.expiry_style();
    let finish = |code: &str| {
        let month = ctx.now.with_timezone(&wib()).format("%Y%m").to_string();
        let inquiry = committed.inquiry.as_ref();
        bill_reply(ctx, code, inquiry, committed.bill_paid, style, expiry)
            .text(
                "billingperiod",
                if code == "000" { month } else { String::new() },
            )
            .text("Info", message(code))
    };
    match committed.outcome {
        CommitOutcome::Duplicate => duplicate(ctx, &committed.entry),
        CommitOutcome::Refused(code) => Answer::plain(code, finish(code)),
        CommitOutcome::Executed => {
            let code = plan.reply_code;
            let reply = finish(code);
            executed(ctx, code, reply, plan, style)
        }
    }
}

fn status_check(ctx: &Ctx) -> Answer {
    let settings = &ctx.sim.inner.settings;
    match ctx.sim.ledger_state(&ctx.reference) {
        Some(entry) => {
            let style = scenario_of(ctx, &entry.accnumber).amount_style();
            let code = entry.code.clone();
            // The reply is about the original, but its tracecode is this
            // hit's: new on every hit (spec §1).
            Answer::plain(
                &code,
                transaction_reply(ctx, &entry, &code, ctx.sim.balance(), style),
            )
        }
        None => {
            let code = settings.not_found_code.as_str();
            let reply = Reply::new()
                .text("tracecode", &ctx.tracecode)
                .text("transactionstatus", code)
                .text("transactiontime", format_time(ctx.now))
                .text("serialnumber", "")
                .text("userid", &settings.userid)
                .text("info", "TRANSAKSI TIDAK DITEMUKAN")
                .text("referencecode", &ctx.reference);
            Answer::plain(code, reply)
        }
    }
}

fn balance(ctx: &Ctx) -> Answer {
    let reply = Reply::new()
        .text("tracecode", &ctx.tracecode)
        .text("responsecode", "000")
        .text("responsestatus", message("000"))
        .text("responsetime", format_time(ctx.now))
        .text("referencecode", &ctx.reference)
        .amount("balance", ctx.sim.balance(), AmountStyle::Plain);
    Answer::plain("000", reply)
}

fn echo(ctx: &Ctx) -> Answer {
    let reply = Reply::new()
        .text("userid", &ctx.sim.inner.settings.userid)
        .text("referencecode", &ctx.reference)
        .text("message", ctx.field("message"));
    Answer::plain("000", reply)
}

fn count(operation: &'static str, code: &str) {
    metrics::counter!(
        names::REQUESTS_TOTAL,
        "provider" => "okebayar",
        "operation" => operation,
        "code" => code.to_string()
    )
    .increment(1);
}

/// Runs the answer's asynchronous steps and writes the reply, broken the
/// way the scenario says.
async fn respond(ctx: &Ctx, answer: Answer, conn: Option<ConnInfo>) -> Response {
    let sim = &ctx.sim;
    if let Some(callback) = answer.callback.clone() {
        if !answer.steps.is_empty() {
            if answer.callback_before_reply {
                callbacks::run_steps(sim.clone(), callback, answer.steps.clone()).await;
            } else {
                tokio::spawn(callbacks::run_steps(
                    sim.clone(),
                    callback,
                    answer.steps.clone(),
                ));
            }
        }
    }
    let label = if answer.fault == Fault::None {
        answer.code.as_str()
    } else {
        "fault"
    };
    count(ctx.op.label(), label);
    let body = answer
        .reply
        .encode_as(ctx.format, sim.inner.settings.doc_literal_xml);
    let content_type = ctx.format.content_type();
    match answer.fault {
        Fault::None => ok(content_type, body),
        Fault::Slow => {
            let wait = Duration::from_millis(sim.inner.settings.slow_reply_ms);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = sim.inner.stop.wait() => {}
            }
            ok(content_type, body)
        }
        Fault::Reset => {
            tracing::info!(reference = %ctx.reference, "scenario: resetting the connection after commit");
            match conn {
                Some(conn) => conn.abort(),
                None => {
                    // Not served through `serve`: fail the body instead.
                    let stream = futures::stream::once(async {
                        Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "simulated reset",
                        ))
                    });
                    return Response::new(Body::from_stream(stream));
                }
            }
            ok(content_type, body)
        }
        Fault::Truncated => {
            let cut = body.len() / 2;
            ok(content_type, body[..cut].to_vec())
        }
        Fault::ErrorPage(status) => {
            error_page(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        }
    }
}

fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
