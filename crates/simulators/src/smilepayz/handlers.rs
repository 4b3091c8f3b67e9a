//! The four Smilepayz endpoints. Every request goes through [`admit`] (body,
//! IP allow-list, mandatory headers, timestamp shape and window, partner,
//! signature, rate limit) before the operation's own rules; only a request
//! that got past the signature is counted under its orderNo. Replies carry
//! `code`, `responseCode` (HTTP + service + case) and `message`, with the
//! HTTP status equal to the responseCode's prefix (spec §6, ASSUMED).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use loket_smilepayz::settings::{EXPIRY_SECONDS_DEFAULT, EXPIRY_SECONDS_MAX, URL_MAX_CHARS};
use loket_smilepayz::sign;
use loket_smilepayz::wire::{self, text};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::scenarios::Scenario;
use super::{callbacks, qris, Ledger, Order, RememberedOrder, SmilepayzSim, Timer, TradeType};
use crate::common::{header_str, lock, read_body, ConnInfo, RequestKind};

/// Service codes (spec §1); balance has none documented (ASSUMED 93).
const SVC_PAY_IN: &str = "90";
const SVC_PAY_OUT: &str = "91";
const SVC_INQUIRY: &str = "92";
const SVC_BALANCE: &str = "93";

fn two_digit(http: u16) -> &'static str {
    match http {
        200 => "00",
        202 => "01",
        400 => "10",
        404 => "11",
        401 => "12",
        429 => "13",
        403 => "14",
        504 => "15",
        502 => "20",
        _ => "99",
    }
}

/// A reply: `fields` come after `code`, `responseCode`, `message`.
fn reply(http: u16, svc: &str, case: &str, message: &str, fields: Value) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), json!(two_digit(http)));
    body.insert("responseCode".into(), json!(format!("{http}{svc}{case}")));
    body.insert("message".into(), json!(message));
    if let Value::Object(extra) = fields {
        body.extend(extra);
    }
    let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ts = sign::timestamp(sign::TimestampStyle::Wib, Utc::now());
    (
        status,
        [
            ("content-type", wire::CONTENT_TYPE_JSON.to_string()),
            (wire::HEADER_TIMESTAMP, ts),
        ],
        Value::Object(body).to_string(),
    )
        .into_response()
}

fn error(http: u16, svc: &str, case: &str, message: &str) -> Response {
    reply(http, svc, case, message, json!({}))
}

/// Spec §6 `4049x01 Invalid Routing` ("failed; fix the path"): the answer to
/// a path Smilepayz has no endpoint at, and to an endpoint's path with a
/// method other than POST (§1: every call is a POST; the table has no other
/// code for a wrong method, ASSUMED). Routing comes before every check of
/// [`admit`], so the request is counted under no orderNo.
pub(crate) async fn invalid_routing(State(sim): State<SmilepayzSim>, uri: Uri) -> Response {
    sim.inner.requests.record(None, RequestKind::Other);
    error(404, service_named_by(uri.path()), "01", "Invalid Routing")
}

/// The service code for a reply about `path` that reached no endpoint
/// (ASSUMED: spec §6's `x` names the service, which only the path's words
/// can tell): balance, pay-out, inquiry, else pay-in.
fn service_named_by(path: &str) -> &'static str {
    let path = path.to_ascii_lowercase();
    let names = |words: &[&str]| words.iter().any(|word| path.contains(word));
    if names(&["balance"]) {
        SVC_BALANCE
    } else if names(&["pay-out", "payout", "disbursement"]) {
        SVC_PAY_OUT
    } else if names(&["inquiry", "status"]) {
        SVC_INQUIRY
    } else {
        SVC_PAY_IN
    }
}

/// 400xx01 "Invalid Field Format [field]" (spec §6: "fix the field named in
/// `[…]`").
fn invalid_field_format(svc: &str, field: &str) -> Response {
    error(400, svc, "01", &format!("Invalid Field Format [{field}]"))
}

/// The spec's `S<n>` maximum lengths (§5), in characters, of the request
/// fields it gives one for.
const PAY_IN_MAX_CHARS: [(&str, usize); 4] = [
    ("purpose", 64),
    ("productDetail", 128),
    ("redirectUrl", URL_MAX_CHARS),
    ("callbackUrl", URL_MAX_CHARS),
];
const PAY_OUT_MAX_CHARS: [(&str, usize); 2] = [("paymentMethod", 6), ("cashAccount", 32)];
const INQUIRY_MAX_CHARS: [(&str, usize); 2] = [("orderNo", ORDER_NO_MAX_CHARS), ("tradeNo", 32)];
/// `orderNo` is S32 in every request (spec §5).
const ORDER_NO_MAX_CHARS: usize = 32;

/// The first field of `limits` present in `value` and longer than its
/// limit.
fn over_long_field(value: &Value, limits: &[(&'static str, usize)]) -> Option<&'static str> {
    limits
        .iter()
        .find(|(field, max_chars)| {
            text(value, field).is_some_and(|t| t.chars().count() > *max_chars)
        })
        .map(|(field, _)| *field)
}

/// The method the simulated customer picks on the hosted checkout page of a
/// pay-in created without `paymentMethod`. ASSUMED: spec §5 makes the
/// callback's `paymentMethod` mandatory but says nothing of a hosted order;
/// such an order is `INIT`, "awaiting method", until its customer has chosen
/// one on the page, so once final it reports the method chosen there.
const HOSTED_PAGE_METHOD: &str = "QRIS";

/// The `X-TIMESTAMP` shapes of spec §3, `yyyy-MM-ddTHH:mm:ss±HH:mm` and
/// `yyyy-MM-ddTHH:mm:ssZ`: `0` is any digit, `+` is `+` or `-`.
const X_TIMESTAMP_SHAPES: [&str; 2] = ["0000-00-00T00:00:00+00:00", "0000-00-00T00:00:00Z"];

/// True when `ts` has one of [`X_TIMESTAMP_SHAPES`] exactly: RFC 3339 also
/// allows fractional seconds, a lower-case `t`/`z` or a space, which the
/// spec's format does not.
fn has_x_timestamp_shape(ts: &str) -> bool {
    X_TIMESTAMP_SHAPES.iter().any(|shape| {
        ts.len() == shape.len()
            && ts.bytes().zip(shape.bytes()).all(|(got, want)| match want {
                b'0' => got.is_ascii_digit(),
                b'+' => got == b'+' || got == b'-',
                _ => got == want,
            })
    })
}

/// The refusal of a request without `Content-Type: application/json`,
/// mandatory (spec §3). Missing, it is refused like every missing mandatory
/// header (400xx02); another media type is a field in the wrong format
/// (400xx01). Parameters such as `; charset=UTF-8` do not change the media
/// type.
fn content_type_refusal(headers: &HeaderMap, svc: &str) -> Option<Response> {
    let Some(content_type) = header_str(headers, CONTENT_TYPE.as_str()) else {
        return Some(error(
            400,
            svc,
            "02",
            "Invalid Mandatory Field [Content-Type]",
        ));
    };
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    (!media_type.eq_ignore_ascii_case(wire::CONTENT_TYPE_JSON))
        .then(|| invalid_field_format(svc, "Content-Type"))
}

/// Everything checked before the operation; `Err` is the reply.
///
/// The request is counted once [`authenticate`] is done with it, under its
/// orderNo only when it passed and the orderNo is within S32: whoever
/// reaches the port must not make the simulator remember order numbers
/// (their counts, their text) by sending requests it refuses. The timestamp
/// window and the rate limit come after: a signed request sent again too
/// late, or one turned away, was still sent by the partner, and counts.
async fn admit(
    sim: &SmilepayzSim,
    request: Request,
    svc: &str,
    kind: RequestKind,
) -> Result<(Value, Option<ConnInfo>), Response> {
    let authenticated = authenticate(sim, request, svc).await;
    let order_no = authenticated
        .as_ref()
        .ok()
        .and_then(|signed| sent_string(&signed.body, "orderNo").ok().flatten())
        .filter(|order_no| order_no.chars().count() <= ORDER_NO_MAX_CHARS)
        .map(str::to_string);
    sim.inner.requests.record(order_no.as_deref(), kind);
    let signed = authenticated?;
    if !sign::within_window(
        signed.stamped_at,
        Utc::now(),
        sim.inner.settings.max_skew_seconds,
    ) {
        return Err(invalid_field_format(svc, "X-TIMESTAMP expired"));
    }
    let limit = sim.inner.settings.rate_limit_per_second;
    if limit > 0 {
        let second = Utc::now().timestamp();
        let mut rate = lock(&sim.inner.rate);
        if rate.0 != second {
            *rate = (second, 0);
        }
        rate.1 += 1;
        if rate.1 > limit {
            return Err(error(429, svc, "00", "TOO_MANY_REQUESTS"));
        }
    }
    Ok((signed.body, signed.conn))
}

/// A request whose signature holds ([`authenticate`]).
struct Signed {
    body: Value,
    conn: Option<ConnInfo>,
    /// Its X-TIMESTAMP, not yet held to the window.
    stamped_at: DateTime<Utc>,
}

/// The body (a JSON object), IP allow-list, mandatory headers, timestamp
/// shape, partner and signature; `Err` is the reply. The timestamp's window
/// is [`admit`]'s.
async fn authenticate(sim: &SmilepayzSim, request: Request, svc: &str) -> Result<Signed, Response> {
    let settings = &sim.inner.settings;
    let conn = ConnInfo::of(&request);
    let (parts, body) = request.into_parts();
    let body = read_body(
        Body::new(body),
        settings.body_limit_bytes,
        Duration::from_millis(settings.body_read_timeout_ms),
    )
    .await
    .map_err(|e| invalid_field_format(svc, &format!("body: {e}")))?;
    let value: Option<Value> = serde_json::from_slice(&body).ok().filter(Value::is_object);

    if !settings
        .allowed_ips
        .allows(conn.as_ref().map(|c| c.peer.ip()))
    {
        return Err(error(
            403,
            svc,
            "03",
            "Merchant Blacklisted [IP not whitelisted]",
        ));
    }
    let headers = &parts.headers;
    if let Some(refusal) = content_type_refusal(headers, svc) {
        return Err(refusal);
    }
    let ts = header_str(headers, wire::HEADER_TIMESTAMP)
        .ok_or_else(|| error(400, svc, "02", "Invalid Mandatory Field [X-TIMESTAMP]"))?;
    let signature = header_str(headers, wire::HEADER_SIGNATURE)
        .ok_or_else(|| error(400, svc, "02", "Invalid Mandatory Field [X-SIGNATURE]"))?;
    let partner = header_str(headers, wire::HEADER_PARTNER_ID)
        .ok_or_else(|| error(400, svc, "02", "Invalid Mandatory Field [X-PARTNER-ID]"))?;
    let value = value.ok_or_else(|| invalid_field_format(svc, "body"))?;
    // Stale, unreadable or not in the spec's shape: a 400, not a 401 (spec
    // §8.2).
    let stamped_at = Some(ts)
        .filter(|ts| has_x_timestamp_shape(ts))
        .and_then(sign::parse_timestamp)
        .ok_or_else(|| invalid_field_format(svc, wire::HEADER_TIMESTAMP))?;
    // Spec §3 and §8.1: X-PARTNER-ID must be the body's merchantId (4009001),
    // checked before the partner is looked up.
    if let Some(merchant) = value.get("merchant") {
        if sent_string(merchant, "merchantId") != Ok(Some(partner)) {
            return Err(invalid_field_format(
                svc,
                "X-PARTNER-ID != merchant.merchantId",
            ));
        }
    }
    if partner != settings.merchant_id {
        return Err(error(
            404,
            svc,
            "02",
            &format!("Partner :{partner} Not Found"),
        ));
    }
    let key = sim
        .inner
        .merchant_key
        .as_ref()
        .ok_or_else(|| error(401, svc, "00", "Unauthorized. [Signature]"))?;
    if !sign::verify_request(key, ts, settings.merchant_secret.expose(), &body, signature) {
        return Err(error(401, svc, "00", "Unauthorized. [Signature]"));
    }
    Ok(Signed {
        body: value,
        conn,
        stamped_at,
    })
}

fn order_no_ok(sim: &SmilepayzSim, order_no: &str) -> bool {
    if sim.inner.settings.allow_order_no_separators {
        (6..=ORDER_NO_MAX_CHARS).contains(&order_no.len())
            && order_no
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    } else {
        wire::is_valid_order_no(order_no)
    }
}

/// An identifier or code field (`orderNo`, `tradeNo`, `merchantId`,
/// `currency`) exactly as the client sent it: a JSON string, not trimmed,
/// as the spec's `S<n>` fields are (the connector's own reader, [`text`],
/// is lenient with what Smilepayz sends back; the simulator must not be
/// with what it is sent). `Ok(None)`: absent, null or empty; `Err`: a value
/// of another type, an invalid format.
fn sent_string<'a>(value: &'a Value, key: &str) -> Result<Option<&'a str>, ()> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// The largest amount taken (ASSUMED for pay-ins: the spec leaves their
/// per-method limits open, Q6; pay-outs have their own, lower one): IDR
/// 999,999,999,999, so balances never overflow.
const AMOUNT_MAX: i64 = 999_999_999_999;

/// `money`: IDR, a whole positive number, at most [`AMOUNT_MAX`].
fn amount_of(money: &Value) -> Result<i64, &'static str> {
    if sent_string(money, "currency") != Ok(Some("IDR")) {
        return Err("Unsupported currency");
    }
    match money.get("amount") {
        Some(Value::Number(n)) => {
            let text = n.to_string();
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err("Invalid amount");
            }
            text.parse::<i64>()
                .ok()
                .filter(|a| (1..=AMOUNT_MAX).contains(a))
                .ok_or("Invalid amount")
        }
        _ => Err("Invalid amount"),
    }
}

/// The fields pay-in and pay-out both require, checked in the spec's order
/// (§5): `merchant`, `orderNo` and its format, `purpose`, the operation's
/// own `max_chars`, then `money`. `Ok` is the orderNo and the amount; `Err`
/// the reply.
// The error is the finished reply (built once, on a refusal): boxing buys
// nothing.
#[allow(clippy::result_large_err)]
fn order_fields(
    sim: &SmilepayzSim,
    value: &Value,
    svc: &str,
    max_chars: &[(&'static str, usize)],
) -> Result<(String, i64), Response> {
    if value.get("merchant").is_none() {
        return Err(error(400, svc, "02", "Invalid Mandatory Field [merchant]"));
    }
    let order_no = sent_string(value, "orderNo")
        .map_err(|()| invalid_field_format(svc, "orderNo"))?
        .ok_or_else(|| error(400, svc, "02", "Invalid Mandatory Field [orderNo]"))?;
    if !order_no_ok(sim, order_no) {
        return Err(invalid_field_format(svc, "orderNo"));
    }
    let order_no = order_no.to_string();
    if text(value, "purpose").is_none() {
        return Err(error(400, svc, "02", "Invalid Mandatory Field [purpose]"));
    }
    if let Some(field) = over_long_field(value, max_chars) {
        return Err(invalid_field_format(svc, field));
    }
    let Some(money) = value.get("money") else {
        return Err(error(400, svc, "02", "Invalid Mandatory Field [money]"));
    };
    let amount = amount_of(money).map_err(|message| error(400, svc, "01", message))?;
    Ok((order_no, amount))
}

/// The reply of a scenario that refuses an order before creating it: rate
/// limited (429xx00) or no active channel (403xx04).
fn scenario_refusal(scenario: Scenario, svc: &str) -> Option<Response> {
    match scenario {
        Scenario::RateLimited => Some(error(429, svc, "00", "TOO_MANY_REQUESTS")),
        Scenario::ChannelDisabled => Some(no_active_channel(svc)),
        _ => None,
    }
}

/// `403xx04`: the merchant has no active channel for what it asked.
fn no_active_channel(svc: &str) -> Response {
    error(
        403,
        svc,
        "04",
        "Insufficient configuration: no active channel",
    )
}

fn money_json(amount: i64) -> Value {
    json!({ "currency": "IDR", "amount": amount })
}

fn local_time() -> String {
    let wib = loket_protocol::wib();
    Utc::now()
        .with_timezone(&wib)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn iso_time() -> String {
    sign::timestamp(sign::TimestampStyle::Wib, Utc::now())
}

pub(crate) async fn pay_in(State(sim): State<SmilepayzSim>, request: Request) -> Response {
    let svc = SVC_PAY_IN;
    let (value, _conn) = match admit(&sim, request, svc, RequestKind::Purchase).await {
        Ok(ok) => ok,
        Err(reply) => return reply,
    };
    let (order_no, amount) = match order_fields(&sim, &value, svc, &PAY_IN_MAX_CHARS) {
        Ok(fields) => fields,
        Err(reply) => return reply,
    };
    let method = text(&value, "paymentMethod").unwrap_or_default();
    let payer = value.get("payer").cloned().unwrap_or(Value::Null);
    let payer_name = text(&payer, "name").unwrap_or_default();
    if !method.is_empty() && !sim.inner.settings.pay_in_methods.contains(&method) {
        return no_active_channel(svc);
    }
    if method == "W_OVO" && text(&payer, "phone").is_none() {
        return error(400, svc, "02", "Invalid Mandatory Field [payer.phone]");
    }
    // The default only when absent: a string, a fraction or a negative
    // number is a malformed field, not a request for the default.
    let expiry_seconds = match value.get("expiryPeriod") {
        None | Some(Value::Null) => Some(EXPIRY_SECONDS_DEFAULT),
        Some(period) => period.as_u64(),
    };
    let Some(expiry_seconds) =
        expiry_seconds.filter(|secs| (1..=EXPIRY_SECONDS_MAX).contains(secs))
    else {
        return invalid_field_format(svc, "expiryPeriod");
    };
    let scenario = Scenario::select(amount, &payer_name);
    if let Some(refusal) = scenario_refusal(scenario, svc) {
        return refusal;
    }
    let callback_url =
        text(&value, "callbackUrl").or_else(|| sim.inner.settings.callback_url.clone());
    let trade_no = sim.next_trade_no(TradeType::PayIn);
    let status = if method.is_empty() {
        "INIT"
    } else {
        "PROCESSING"
    };
    let (first_attempt, _first_request_in_flight) = {
        let mut ledger = lock(&sim.inner.ledger);
        if ledger.in_flight.contains(&order_no) {
            return error(429, svc, "00", "TOO_MANY_REQUESTS");
        }
        if let Some(existing) = ledger.orders.get(order_no.as_str()) {
            // Spec §8.8: an operation on an expired order is 4039000.
            if existing.order.status == "EXPIRED" {
                return error(403, svc, "00", "Transaction Expired");
            }
            return error(400, svc, "01", "Duplicate pay order");
        }
        let created_at = Utc::now();
        let order = Order {
            order_no: order_no.clone(),
            trade_no: trade_no.clone(),
            trade_type: TradeType::PayIn,
            amount,
            payment_method: method.clone(),
            cash_account: String::new(),
            payer_name,
            status: status.into(),
            scenario,
            created_at,
            settled_at: None,
            callback_url,
            frozen: false,
            expires_at: Some(created_at + chrono::Duration::seconds(expiry_seconds as i64)),
        };
        enter_order(&sim, &mut ledger, order)
    };
    let channel = match method.as_str() {
        "" => {
            json!({ "paymentUrl": format!("https://sandbox-checkout.smilepayz.example/pay/{trade_no}") })
        }
        "QRIS" => {
            json!({ "paymentMethod": "QRIS", "qrString": qris::qris_string(&trade_no, amount, &sim.inner.settings.merchant_name) })
        }
        m if m.starts_with("W_") => {
            json!({ "paymentMethod": m, "paymentUrl": format!("https://sandbox-wallet.smilepayz.example/{m}/{trade_no}") })
        }
        m => {
            json!({ "paymentMethod": m, "vaNumber": format!("8808{}", &trade_no[trade_no.len() - 10..]) })
        }
    };
    reply_after_first_callback(scenario, first_attempt).await;
    if scenario == Scenario::CreatedButSystemError {
        return error(500, svc, "00", "System error");
    }
    reply(
        200,
        svc,
        "00",
        "Successful",
        json!({
            "orderNo": order_no,
            "tradeNo": trade_no,
            "merchant": merchant_json(&sim),
            "transactionTime": iso_time(),
            "money": money_json(amount),
            "status": status,
            "channel": channel,
        }),
    )
}

/// The account the simulated merchant's money is held in (ASSUMED: the spec
/// gives no format).
const MERCHANT_ACCOUNT_NO: &str = "SIM0000000001";

/// The merchant as a pay-in or pay-out response gives it: as requested, plus
/// its `accountNo` (spec §5, "responses add `accountNo`").
fn merchant_json(sim: &SmilepayzSim) -> serde_json::Value {
    let settings = &sim.inner.settings;
    json!({
        "merchantId": settings.merchant_id,
        "merchantName": settings.merchant_name,
        "accountNo": MERCHANT_ACCOUNT_NO,
    })
}

pub(crate) async fn pay_out(State(sim): State<SmilepayzSim>, request: Request) -> Response {
    let svc = SVC_PAY_OUT;
    let (value, conn) = match admit(&sim, request, svc, RequestKind::Payment).await {
        Ok(ok) => ok,
        Err(reply) => return reply,
    };
    let (order_no, amount) = match order_fields(&sim, &value, svc, &PAY_OUT_MAX_CHARS) {
        Ok(fields) => fields,
        Err(reply) => return reply,
    };
    if !(10_000..=999_999_999).contains(&amount) {
        return error(400, svc, "01", "Invalid amount");
    }
    let Some(method) = text(&value, "paymentMethod") else {
        return error(400, svc, "02", "Invalid Mandatory Field [paymentMethod]");
    };
    let Some(account) = text(&value, "cashAccount") else {
        return error(400, svc, "02", "Invalid Mandatory Field [cashAccount]");
    };
    let receiver = value.get("receiver").cloned().unwrap_or(Value::Null);
    let receiver_name = text(&receiver, "name").unwrap_or_default();
    let scenario = Scenario::select(amount, &receiver_name);
    if let Some(refusal) = scenario_refusal(scenario, svc) {
        return refusal;
    }
    let callback_url =
        text(&value, "callbackUrl").or_else(|| sim.inner.settings.callback_url.clone());
    let trade_no = sim.next_trade_no(TradeType::PayOut);
    let (first_attempt, _first_request_in_flight) = {
        let mut ledger = lock(&sim.inner.ledger);
        if ledger.in_flight.contains(&order_no) {
            return error(429, svc, "00", "TOO_MANY_REQUESTS");
        }
        // Pay-outs never expire (no expiryPeriod), and 4039000 is a pay-in
        // code: a pay-out reusing any orderNo, an expired pay-in's too, is a
        // duplicate (one namespace, ASSUMED: see `Ledger::orders`).
        if ledger.orders.contains_key(&order_no) {
            return error(400, svc, "01", "Duplicate payout order");
        }
        if ledger.balances.payout_available < amount {
            return error(400, svc, "03", "Insufficient Balance");
        }
        ledger.balances.payout_available -= amount;
        ledger.balances.payout_frozen += amount;
        let order = Order {
            order_no: order_no.clone(),
            trade_no: trade_no.clone(),
            trade_type: TradeType::PayOut,
            amount,
            payment_method: method.clone(),
            cash_account: account.clone(),
            payer_name: receiver_name.clone(),
            status: "PROCESSING".into(),
            scenario,
            created_at: Utc::now(),
            settled_at: None,
            callback_url,
            frozen: true,
            expires_at: None,
        };
        enter_order(&sim, &mut ledger, order)
    };
    reply_after_first_callback(scenario, first_attempt).await;
    match scenario {
        Scenario::TimeoutAfterAccept => {
            return error(502, svc, "00", "External error: channel timeout")
        }
        Scenario::CreatedButSystemError => return error(500, svc, "00", "System error"),
        Scenario::SlowReply => {
            let wait = Duration::from_millis(sim.inner.settings.slow_reply_ms);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = sim.inner.stop.wait() => {}
            }
        }
        Scenario::ResetAfterAccept => {
            if let Some(conn) = conn {
                conn.abort();
            }
        }
        _ => {}
    }
    reply(
        200,
        svc,
        "00",
        "Successful",
        json!({
            "orderNo": order_no,
            "tradeNo": trade_no,
            "merchant": merchant_json(&sim),
            "disbursementTime": iso_time(),
            "money": money_json(amount),
            "status": "PROCESSING",
            "channel": { "paymentMethod": method, "cashAccount": account, "accountName": if receiver_name.is_empty() { "SIMULATED HOLDER".to_string() } else { receiver_name } },
        }),
    )
}

pub(crate) async fn inquiry_status(State(sim): State<SmilepayzSim>, request: Request) -> Response {
    let svc = SVC_INQUIRY;
    let (value, _conn) = match admit(&sim, request, svc, RequestKind::StatusCheck).await {
        Ok(ok) => ok,
        Err(reply) => return reply,
    };
    let trade_type = match value.get("tradeType").and_then(Value::as_u64) {
        Some(1) => TradeType::PayIn,
        Some(2) => TradeType::PayOut,
        _ => return invalid_field_format(svc, "tradeType"),
    };
    if let Some(field) = over_long_field(&value, &INQUIRY_MAX_CHARS) {
        return invalid_field_format(svc, field);
    }
    let (order_no, trade_no) = match (
        sent_string(&value, "orderNo"),
        sent_string(&value, "tradeNo"),
    ) {
        (Ok(order_no), Ok(trade_no)) => {
            (order_no.map(str::to_string), trade_no.map(str::to_string))
        }
        (Err(()), _) => return invalid_field_format(svc, "orderNo"),
        (_, Err(())) => return invalid_field_format(svc, "tradeNo"),
    };
    if order_no.is_none() && trade_no.is_none() {
        return error(400, svc, "02", "Invalid Mandatory Field [orderNo]");
    }
    let matches = |o: &Order| {
        o.trade_type == trade_type
            && order_no.as_ref().is_none_or(|n| &o.order_no == n)
            && trade_no.as_ref().is_none_or(|t| &o.trade_no == t)
    };
    let order = {
        let ledger = lock(&sim.inner.ledger);
        // Orders are kept by orderNo and indexed by tradeNo: no scan under
        // the ledger's lock.
        let found = match &order_no {
            Some(order_no) => ledger.orders.get(order_no),
            None => trade_no
                .as_deref()
                .and_then(|trade_no| ledger.orders.by_secondary(trade_no)),
        };
        found
            .map(|kept| &kept.order)
            .filter(|o| matches(o))
            .cloned()
    };
    let Some(order) = order else {
        return error(500, svc, "00", "Order not found");
    };
    let race = Duration::from_millis(sim.inner.settings.inquiry_race_ms);
    let age = (Utc::now() - order.created_at).to_std().unwrap_or_default();
    if age < race {
        return error(500, svc, "00", "Order not found");
    }
    // Spec §5: the inquiry reply names the order by tradeNo only.
    let mut fields = json!({
        "tradeNo": order.trade_no,
        "tradeType": trade_type.code(),
        "paymentMethod": order.payment_method,
        "money": money_json(order.amount),
        "status": order.status,
        "remark": remark(&order),
    });
    if order.payment_method.is_empty() {
        // A hosted-page pay-in still INIT is awaiting its method (spec §5):
        // it has none to report, rather than a method named "" (ASSUMED).
        if let Value::Object(map) = &mut fields {
            map.remove("paymentMethod");
        }
    }
    reply(200, svc, "00", "Successful", fields)
}

fn remark(order: &Order) -> &'static str {
    match order.status.as_str() {
        "EXPIRED" => "Order expired",
        "FAILED" => "Transaction failed",
        "SUCCESS" => "Transaction success",
        _ => "",
    }
}

pub(crate) async fn inquiry_balance(State(sim): State<SmilepayzSim>, request: Request) -> Response {
    let svc = SVC_BALANCE;
    if let Err(reply) = admit(&sim, request, svc, RequestKind::Other).await {
        return reply;
    }
    let balances = sim.balances();
    reply(
        200,
        svc,
        "00",
        "Successful",
        json!({
            "merchantId": sim.inner.settings.merchant_id,
            "balance": {
                "payIn": { "currency": "IDR", "available": balances.payin_available, "frozen": 0 },
                "payOut": { "currency": "IDR", "available": balances.payout_available, "frozen": balances.payout_frozen },
            }
        }),
    )
}

/// Marks an orderNo's first request as still being processed, from the
/// order's creation until its handler ends (the reply is made, or the
/// client went away and the handler was dropped). Meanwhile a request for
/// the same orderNo is a concurrent duplicate: 429xx00 (spec §7).
struct FirstRequestInFlight {
    sim: SmilepayzSim,
    order_no: String,
}

impl Drop for FirstRequestInFlight {
    fn drop(&mut self) {
        lock(&self.sim.inner.ledger)
            .in_flight
            .remove(&self.order_no);
    }
}

/// Enters a new order in the (locked) ledger with its first request in
/// flight, and starts its timer: after the settlement's delay the order
/// takes its status ([`Order::settlement`]; `None`: no timer). Returns word
/// of the first callback attempt ([`reply_after_first_callback`]) and the
/// in-flight mark, to keep until the reply.
fn enter_order(
    sim: &SmilepayzSim,
    ledger: &mut Ledger,
    order: Order,
) -> (oneshot::Receiver<()>, FirstRequestInFlight) {
    let settle_delay = Duration::from_millis(sim.inner.settings.settle_delay_ms);
    let (first_attempt_done, first_attempt) = oneshot::channel();
    // Started under the ledger's lock and remembered with the order, so the
    // order cannot be forgotten before its timer is tied to it (see
    // `RememberedOrder`).
    let timer = order.settlement(settle_delay).map(|(after, status)| {
        let sim = sim.clone();
        let order_no = order.order_no.clone();
        let trade_no = order.trade_no.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = sim.inner.stop.wait() => return,
            }
            settle(&sim, &order_no, &trade_no, status, first_attempt_done).await;
        });
        Timer(task.abort_handle())
    });
    ledger.in_flight.insert(order.order_no.clone());
    let in_flight = FirstRequestInFlight {
        sim: sim.clone(),
        order_no: order.order_no.clone(),
    };
    ledger.orders.record(RememberedOrder {
        order,
        _timer: timer,
    });
    (first_attempt, in_flight)
}

/// For 006 the callback arrives before the create reply (spec §8.11): waits
/// for its first attempt only, and the retries go on in the background like
/// every callback's.
async fn reply_after_first_callback(scenario: Scenario, first_attempt: oneshot::Receiver<()>) {
    if scenario == Scenario::CallbackFirst {
        // An error only says no attempt will be made (no callback URL, the
        // order forgotten, or the simulator stopping): reply anyway.
        let _ = first_attempt.await;
    }
}

/// Moves the order to `status` if it is still pending, moves the balances,
/// and sends the callback(s); `first_attempt_done` hears when the first
/// callback attempt is over (dropped unheard when none is made).
async fn settle(
    sim: &SmilepayzSim,
    order_no: &str,
    trade_no: &str,
    status: &'static str,
    first_attempt_done: oneshot::Sender<()>,
) {
    let (order, claimed) = {
        let mut ledger = lock(&sim.inner.ledger);
        let Ledger {
            orders, balances, ..
        } = &mut *ledger;
        // The order is gone, or its orderNo taken by a newer order, when it
        // was forgotten while this timer was already waking: its end (see
        // `RememberedOrder`) comes too late to stop it.
        let Some(RememberedOrder { order, .. }) = orders.get_mut(order_no) else {
            return;
        };
        if order.trade_no != trade_no {
            return;
        }
        if order.status != "INIT" && order.status != "PROCESSING" {
            return;
        }
        let pay_in = order.trade_type == TradeType::PayIn;
        order.status = status.to_string();
        order.settled_at = Some(Utc::now());
        if pay_in {
            if status != "EXPIRED" && order.payment_method.is_empty() {
                // A hosted-page order paid, or failed, with the method its
                // customer chose on the page; one that expired unpaid had
                // none chosen.
                order.payment_method = HOSTED_PAGE_METHOD.into();
            }
            if status == "SUCCESS" {
                balances.payin_available += order.amount;
            }
        } else if order.frozen {
            order.frozen = false;
            balances.payout_frozen -= order.amount;
            if status != "SUCCESS" {
                balances.payout_available += order.amount;
            }
        }
        let claimed = if order.scenario == Scenario::SpoofSuccess {
            "SUCCESS"
        } else {
            status
        };
        (order.clone(), claimed.to_string())
    };
    let Some(url) = order.callback_url.clone() else {
        return;
    };
    let body = wire::CallbackBody {
        order_no: order.order_no.clone(),
        trade_no: order.trade_no.clone(),
        merchant_id: sim.inner.settings.merchant_id.clone(),
        merchant_name: sim.inner.settings.merchant_name.clone(),
        payment_method: order.payment_method.clone(),
        status: claimed,
        money: wire::WireMoney {
            currency: "IDR".into(),
            amount: serde_json::Number::from(order.amount),
        },
        transaction_time: local_time(),
        payer: None,
    };
    let times = if order.scenario == Scenario::DoubleCallback {
        2
    } else {
        1
    };
    let attempt_headers = callbacks::platform_signed(
        &sim.inner.platform_key,
        sim.inner.settings.callback_timestamp_style,
        &body,
    );
    let mut first_attempt_done = Some(first_attempt_done);
    for _ in 0..times {
        let deliver =
            sim.inner
                .callbacks
                .deliver(&url, &body, &attempt_headers, first_attempt_done.take());
        tokio::select! {
            _ = deliver => {}
            _ = sim.inner.stop.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::smilepayz::SmilepayzSimSettings;

    /// Enters a QRIS pay-in of scenario 000 under `order_no`, as a handler
    /// does, and ends its first request.
    fn enter_pay_in(sim: &SmilepayzSim, order_no: &str) {
        let created_at = Utc::now();
        let order = Order {
            order_no: order_no.into(),
            trade_no: sim.next_trade_no(TradeType::PayIn),
            trade_type: TradeType::PayIn,
            amount: 150_000,
            payment_method: "QRIS".into(),
            cash_account: String::new(),
            payer_name: String::new(),
            status: "PROCESSING".into(),
            scenario: Scenario::Normal,
            created_at,
            settled_at: None,
            callback_url: None,
            frozen: false,
            expires_at: Some(created_at + chrono::Duration::days(1)),
        };
        // The in-flight mark takes the ledger's lock when dropped: out of
        // the block that holds it.
        let (_first_attempt, _in_flight) = {
            let mut ledger = lock(&sim.inner.ledger);
            enter_order(sim, &mut ledger, order)
        };
    }

    /// Every timer holds a handle on the simulator until it ends: the
    /// simulator's reference count tells how many timers are still alive.
    #[tokio::test]
    async fn forgetting_an_order_ends_its_timer_and_frees_what_it_held() {
        let sim = SmilepayzSim::remembering(
            SmilepayzSimSettings {
                // Both orders' timers would sleep an hour.
                settle_delay_ms: 3_600_000,
                ..Default::default()
            },
            1,
        );
        enter_pay_in(&sim, "ORDER000001");
        assert_eq!(Arc::strong_count(&sim.inner), 2, "the sim and one timer");
        enter_pay_in(&sim, "ORDER000002");
        assert!(sim.order("ORDER000001").is_none(), "forgotten");
        assert!(sim.order("ORDER000002").is_some(), "remembered");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&sim.inner) > 2 {
            assert!(
                Instant::now() < deadline,
                "the forgotten order's timer is still alive: {} handles on the simulator",
                Arc::strong_count(&sim.inner)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The remembered order's timer is left running.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(Arc::strong_count(&sim.inner), 2, "the sim and one timer");
    }
}
