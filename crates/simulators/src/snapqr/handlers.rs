//! The SNAP services. Check order of every transaction call (answered with
//! the code in brackets, `ss` = the service; spec §6 answers a missing
//! mandatory field 400ss02 and a malformed one 400ss01): body readable
//! [400ss00] → Content-Type present [400ss02] and `application/json`
//! [400ss01] → X-TIMESTAMP, X-SIGNATURE, X-PARTNER-ID, X-EXTERNAL-ID and
//! CHANNEL-ID present [400ss02] → X-TIMESTAMP ISO-8601 [400ss01] and within
//! the window [401ss00] → bearer token present [401ss03], issued and not
//! expired [401ss01] → X-PARTNER-ID [401ss00] → X-SIGNATURE (HMAC over the
//! path as received) [401ss00] → CHANNEL-ID 5 digits [400ss01] →
//! X-EXTERNAL-ID numeric ≤ 36 [400ss01] and unused today (WIB) [409ss00] →
//! JSON body [400ss00] → the service, which checks its body fields: a
//! mandatory one missing [400ss02], a text longer than spec §5's `S<n>` or
//! an amount not in its `Amt` form [400ss01].

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use loket_snapqr::connector::format_timestamp;
use loket_snapqr::settings::{MERCHANT_ID_MAX, SUB_MERCHANT_ID_MAX};
use loket_snapqr::wire::Body;
use loket_snapqr::{sign, TimestampFormat};
use serde_json::{json, Map, Value};

use super::{IssuedQr, Ledger, PaymentEntry, RefundEntry, SnapCounts, SnapQrSim};
use crate::common::{header_str, lock, read_body, OutgoingCallback};
use crate::metrics as names;

use loket_protocol::wib;

/// The WIB (UTC+7) calendar day `at` falls on: the issuer's business day,
/// which bounds both an X-EXTERNAL-ID's uniqueness (spec §7) and the cancel
/// window (§2.6).
fn wib_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&wib()).date_naive()
}

/// Now as the issuer writes times: ISO-8601 in WIB, `2020-12-23T07:50:11+07:00`.
fn now_iso() -> String {
    format_timestamp(TimestampFormat::Offset, Utc::now())
}

/// A SNAP answer: HTTP status from the code's first three digits.
fn answer(code: &str, message: &str, fields: Value) -> Response {
    let status = code[..3]
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = Map::new();
    body.insert("responseCode".into(), json!(code));
    body.insert("responseMessage".into(), json!(message));
    if let Value::Object(extra) = fields {
        body.extend(extra);
    }
    metrics::counter!(names::REQUESTS_TOTAL, "provider" => "snapqr", "operation" => code[3..5].to_string(), "code" => code.to_string()).increment(1);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-timestamp"), &now_iso()),
        ],
        Value::Object(body).to_string(),
    )
        .into_response()
}

fn code(http: u16, service: u8, case: u8) -> String {
    format!("{http:03}{service:02}{case:02}")
}

fn fail(http: u16, service: u8, case: u8, message: &str) -> Response {
    answer(&code(http, service, case), message, Value::Null)
}

/// Spec §6 400xx02 "missing field": the mandatory header or body `field` is
/// absent (or blank).
fn missing(service: u8, field: &str) -> Response {
    fail(400, service, 2, &format!("Invalid Mandatory Field {field}"))
}

/// Spec §6 400xx01 "invalid format": `field` is there, but not in the form
/// spec §3 or §5 gives it.
fn bad_format(service: u8, field: &str) -> Response {
    fail(400, service, 1, &format!("Invalid Field Format {field}"))
}

/// Spec §3: every call, the token call included, is sent as
/// `Content-Type: application/json`. Parameters such as `; charset=utf-8`
/// leave the media type what it is, so they pass (ASSUMED).
fn content_type_refusal(headers: &HeaderMap, service: u8) -> Option<Response> {
    let Some(content_type) = header_str(headers, "Content-Type") else {
        return Some(missing(service, "Content-Type"));
    };
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    (!media_type.eq_ignore_ascii_case("application/json"))
        .then(|| bad_format(service, "Content-Type"))
}

/// Spec §6 `405xx00` "Requested Function Is Not Supported" ("fix path"):
/// the answer to a path the issuer serves nothing at (a wrong prefix or
/// version, a misspelt service), and to a service's path with a method
/// other than POST. The service code is the one the path's last segment
/// names (ASSUMED: a path naming none answers as the payment, 60).
pub(crate) async fn not_supported(uri: axum::http::Uri) -> Response {
    fail(
        405,
        service_named_by(uri.path()),
        0,
        "Requested Function Is Not Supported",
    )
}

/// The service code (spec §1) of the service `path` ends in.
fn service_named_by(path: &str) -> u8 {
    let last = path.rsplit('/').next().unwrap_or_default();
    match last.to_ascii_lowercase().as_str() {
        "b2b" => 73,
        "b2b2c" => 74,
        "qr-cpm-generate" => 59,
        "qr-cpm-query" => 61,
        "qr-cpm-cancel" => 62,
        "qr-cpm-notify" => 79,
        "qr-cpm-refund" => 80,
        _ => 60,
    }
}

/// An X-TIMESTAMP (spec §3: ISO-8601 with an offset; `Z` and fractional
/// seconds are accepted, as some providers send them); `None` when it is
/// not one.
fn parse_stamp(stamp: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

fn within_window(sim: &SnapQrSim, at: DateTime<Utc>) -> bool {
    (Utc::now() - at).num_seconds().unsigned_abs() <= sim.inner.settings.max_skew_secs
}

/// Counts a request under `reference` unless it has none or one longer
/// than the spec's 64 characters (refused by its service's checks): a
/// request must not make the simulator remember a key of any length.
fn count(sim: &SnapQrSim, reference: Option<&str>, bump: fn(&mut SnapCounts)) {
    let Some(reference) = reference.filter(|reference| reference.chars().count() <= 64) else {
        return;
    };
    let mut ledger = lock(&sim.inner.ledger);
    let counts = ledger.counts.get_or_insert_default(reference.into());
    bump(counts);
    counts.total += 1;
}

fn next_reference(sim: &SnapQrSim, prefix: &str) -> String {
    let n = sim
        .inner
        .sequence
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!(
        "{prefix}{}{n:08}",
        Utc::now().with_timezone(&wib()).format("%y%m%d")
    )
}

/// Service 73.
pub(crate) async fn token(State(sim): State<SnapQrSim>, request: Request) -> Response {
    sim.inner
        .token_requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let settings = &sim.inner.settings;
    let Ok(body) = read_body(
        body,
        settings.body_limit_bytes,
        Duration::from_millis(settings.body_read_timeout_ms),
    )
    .await
    else {
        return fail(400, 73, 0, "Bad Request");
    };
    if let Some(refusal) = content_type_refusal(&parts.headers, 73) {
        return refusal;
    }
    let stamped_at = match header_str(&parts.headers, "X-TIMESTAMP").map(parse_stamp) {
        Some(None) => return bad_format(73, "X-TIMESTAMP"),
        parsed => parsed.flatten(),
    };
    let checked = loket_snapqr::b2b_token::check_request(
        |name| header_str(&parts.headers, name),
        &body,
        &settings.client_key,
        sim.inner.partner_key.as_ref(),
        // The stamp it is handed is the X-TIMESTAMP just parsed.
        |_| stamped_at.is_some_and(|at| within_window(&sim, at)),
    );
    if let Err(refusal) = checked {
        return fail(refusal.http, 73, refusal.case, refusal.message);
    }
    let token: String = {
        use rand::Rng as _;
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(48)
            .map(char::from)
            .collect()
    };
    let ttl = settings.token_ttl_secs;
    {
        let now = Instant::now();
        let tokens = &mut lock(&sim.inner.ledger).tokens;
        tokens.retain(|_, expiry| now < *expiry);
        tokens.insert(token.clone(), now + Duration::from_secs(ttl));
    }
    answer(
        "2007300",
        "Successful",
        json!({ "accessToken": token, "tokenType": "Bearer", "expiresIn": ttl.to_string() }),
    )
}

/// A transaction call that passed every check.
struct Authed {
    headers: HeaderMap,
    body: Body,
    /// Its X-EXTERNAL-ID.
    external_id: String,
}

/// What a service counts its requests under ([`SnapCounts`]): the body
/// field naming the reference, and the counter.
struct Counted {
    reference: &'static str,
    bump: fn(&mut SnapCounts),
}

const GENERATES: Counted = Counted {
    reference: "partnerReferenceNo",
    bump: |c| c.generates += 1,
};
const PAYMENTS: Counted = Counted {
    reference: "partnerReferenceNo",
    bump: |c| c.payments += 1,
};
const QUERIES: Counted = Counted {
    reference: "originalPartnerReferenceNo",
    bump: |c| c.queries += 1,
};
const CANCELS: Counted = Counted {
    reference: "originalPartnerReferenceNo",
    bump: |c| c.cancels += 1,
};
const REFUNDS: Counted = Counted {
    reference: "partnerRefundNo",
    bump: |c| c.refunds += 1,
};

/// The request's body, shape and signature; once the signature holds, the
/// request is counted under its reference ([`Counted`]) before the replay
/// checks (timestamp window, X-EXTERNAL-ID used before), so a request sent
/// twice is counted twice even when its copy is refused. `Err` is the reply.
async fn authenticate(
    sim: &SnapQrSim,
    service: u8,
    counted: Counted,
    request: Request,
) -> Result<Authed, Response> {
    let (parts, body) = request.into_parts();
    let settings = &sim.inner.settings;
    let bytes = read_body(
        body,
        settings.body_limit_bytes,
        Duration::from_millis(settings.body_read_timeout_ms),
    )
    .await
    .map_err(|_| fail(400, service, 0, "Bad Request"))?;
    let headers = parts.headers;
    if let Some(refusal) = content_type_refusal(&headers, service) {
        return Err(refusal);
    }
    // Spec §3 marks these M. `Authorization` is M too, but a call without a
    // bearer token is answered below with §6's own case for it, 401ss03
    // "token not found", which tells the caller to fetch one (ASSUMED: the
    // more specific code wins over 400ss02). The error is the finished
    // reply, as everywhere here: boxing it buys nothing.
    #[allow(clippy::result_large_err)]
    let mandatory = |name: &str| header_str(&headers, name).ok_or_else(|| missing(service, name));
    let stamp = mandatory("X-TIMESTAMP")?;
    let signature = mandatory("X-SIGNATURE")?;
    let partner = mandatory("X-PARTNER-ID")?;
    let external = mandatory("X-EXTERNAL-ID")?;
    let channel = mandatory("CHANNEL-ID")?;
    let stamped_at = parse_stamp(stamp).ok_or_else(|| bad_format(service, "X-TIMESTAMP"))?;
    let token = header_str(&headers, "Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| fail(401, service, 3, "Token Not Found (B2B)"))?;
    let live = lock(&sim.inner.ledger)
        .tokens
        .get(token)
        .is_some_and(|expiry| Instant::now() < *expiry);
    if !live {
        return Err(fail(401, service, 1, "Invalid Token (B2B)"));
    }
    if partner != settings.client_key {
        return Err(fail(401, service, 0, "Unauthorized. Unknown partner"));
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let string_to_sign =
        sign::transaction_string_to_sign(parts.method.as_str(), &path, token, &bytes, stamp);
    if !sign::verify_hmac(settings.client_secret.expose(), &string_to_sign, signature) {
        return Err(fail(401, service, 0, "Unauthorized. Signature"));
    }
    let body = Body::parse(&bytes).map_err(|_| fail(400, service, 0, "Bad Request"))?;
    count(sim, body.str(counted.reference).as_deref(), counted.bump);
    if !within_window(sim, stamped_at) {
        return Err(fail(
            401,
            service,
            0,
            "Unauthorized. Timestamp outside the window",
        ));
    }
    if channel.len() != 5 || !channel.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_format(service, "CHANNEL-ID"));
    }
    if external.len() > 36 || !external.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_format(service, "X-EXTERNAL-ID"));
    }
    if lock(&sim.inner.ledger)
        .external_ids
        .insert((wib_day(Utc::now()), external.into()), ())
        .is_some()
    {
        return Err(fail(409, service, 0, "Conflict"));
    }
    let external_id = external.to_string();
    Ok(Authed {
        headers,
        body,
        external_id,
    })
}

/// The scenario of a payment: `SCENARIO=NNN` in the qrContent, else the
/// amount's last three digits.
fn scenario_of(qr_content: &str, amount: i64) -> u16 {
    if let Some(rest) = qr_content.split("SCENARIO=").nth(1) {
        if let Ok(n) = rest.chars().take(3).collect::<String>().parse::<u16>() {
            return n;
        }
    }
    (amount.rem_euclid(1000)) as u16
}

/// Scenario 102: a pending payment resolves to 00 once its time has come,
/// unless it moved on meanwhile (cancelled): a status only moves forward.
pub(crate) fn resolve_pending(entry: &mut PaymentEntry) {
    if let Some(at) = entry.resolve_at {
        if entry.status != "03" {
            entry.resolve_at = None;
        } else if Instant::now() >= at {
            entry.status = "00".into();
            entry.resolve_at = None;
        }
    }
}

fn status_desc(status: &str) -> &'static str {
    match status {
        "00" => "Success",
        "01" => "Initiated",
        "02" => "Paying",
        "03" => "Pending",
        "04" => "Refunded",
        "05" => "Canceled",
        "06" => "Failed",
        _ => "Not Found",
    }
}

/// Spec §5's `S<n>` bounds on one service's request fields: each field and
/// the most characters it may carry. `parent.child` names a field of the
/// object `parent` (60's `scannerInfo`). A field a service's row gives no
/// length for is not listed, even where another service's row gives one.
type TextLimits = [(&'static str, usize)];

const GENERATE_TEXT: &TextLimits = &[
    ("partnerReferenceNo", 64),
    ("userAccessToken", 64),
    ("merchantId", MERCHANT_ID_MAX),
    ("subMerchantId", SUB_MERCHANT_ID_MAX),
    ("partnerTrxDate", 25),
];

const PAYMENT_TEXT: &TextLimits = &[
    ("partnerReferenceNo", 64),
    ("qrContent", 512),
    ("merchantId", MERCHANT_ID_MAX),
    ("subMerchantId", SUB_MERCHANT_ID_MAX),
    ("title", 256),
    ("externalStoreId", 64),
    ("merchantName", 64),
    ("merchantLocation", 64),
    ("acquirerName", 64),
    ("terminalId", 32),
    ("scannerInfo.deviceId", 64),
    ("scannerInfo.deviceVersion", 128),
    ("scannerInfo.deviceModel", 128),
    ("scannerInfo.deviceIp", 64),
];

const QUERY_TEXT: &TextLimits = &[
    ("originalReferenceNo", 64),
    ("originalPartnerReferenceNo", 64),
    ("originalExternalId", 32),
];

const CANCEL_TEXT: &TextLimits = &[("reason", 256)];

const REFUND_TEXT: &TextLimits = &[("partnerRefundNo", 64), ("reason", 256)];

/// Refuses (400ss01, naming it) the first field of `limits` that is present
/// but is not a string of at most its length in characters (`S` is a
/// string). An absent or null field passes: whether one is mandatory is
/// each service's own check, made before this one.
#[allow(clippy::result_large_err)]
fn check_text(body: &Body, service: u8, limits: &TextLimits) -> Result<(), Response> {
    let fits = |value: Option<&Value>, max: usize| match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.chars().count() <= max,
        Some(_) => false,
    };
    for &(field, max) in limits {
        let fitting = match field.split_once('.') {
            None => fits(body.value(field), max),
            Some((parent, child)) => match body.value(parent) {
                None | Some(Value::Null) => true,
                Some(Value::Object(inner)) => fits(Body::lookup(inner, child), max),
                Some(_) => return Err(bad_format(service, parent)),
            },
        };
        if !fitting {
            return Err(bad_format(service, field));
        }
    }
    Ok(())
}

/// The `Amt` field `field` in whole rupiah, `None` when absent or null.
/// Spec §5: `{"value":"10000.00","currency":"IDR"}`, the value a string
/// (16,2) of at most 16 characters with exactly two decimals, so at most
/// `9999999999999.00`. Any other form is refused 400ss01, and so is a
/// fraction of a rupiah, which IDR does not use.
#[allow(clippy::result_large_err)]
fn amount_field(body: &Body, service: u8, field: &'static str) -> Result<Option<i64>, Response> {
    let refused = || bad_format(service, field);
    let parts = match body.value(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(parts)) => parts,
        Some(_) => return Err(refused()),
    };
    let (Some(Value::String(value)), Some(Value::String(currency))) = (
        Body::lookup(parts, "value"),
        Body::lookup(parts, "currency"),
    ) else {
        return Err(refused());
    };
    let two_decimals = value.len() <= 16
        && value.split_once('.').is_some_and(|(whole, cents)| {
            !whole.is_empty()
                && cents.len() == 2
                && whole
                    .bytes()
                    .chain(cents.bytes())
                    .all(|b| b.is_ascii_digit())
        });
    if !two_decimals {
        return Err(refused());
    }
    let amount = loket_snapqr::wire::Amount {
        value: value.clone(),
        currency: currency.clone(),
    };
    match amount.to_money() {
        Ok(money) => Ok(Some(money.minor)),
        Err(_) => Err(refused()),
    }
}

/// Service 59.
pub(crate) async fn generate(State(sim): State<SnapQrSim>, request: Request) -> Response {
    let authed = match authenticate(&sim, 59, GENERATES, request).await {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let reference = authed.body.str("partnerReferenceNo");
    let expected = sim.inner.settings.customer_token.expose();
    let customer = header_str(&authed.headers, "Authorization-Customer")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match customer {
        None => return fail(401, 59, 4, "Customer Token Not Found"),
        Some(token) if !expected.is_empty() && token != expected => {
            return fail(401, 59, 2, "Invalid Customer Token")
        }
        _ => {}
    }
    if authed.body.str("partnerTrxDate").is_none() {
        return missing(59, "partnerTrxDate");
    }
    if let Err(refusal) = check_text(&authed.body, 59, GENERATE_TEXT) {
        return refusal;
    }
    let scenario = authed
        .body
        .value("additionalInfo")
        .and_then(|v| v.get("scenario"))
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        });
    let (qr, expires) = issue_qr(&sim, scenario.as_deref());
    answer(
        "2005900",
        "Successful",
        json!({
            "referenceNo": next_reference(&sim, "G"),
            "partnerReferenceNo": reference.unwrap_or_default(),
            "qrContent": qr,
            "expiryTime": format_timestamp(TimestampFormat::Offset, expires),
        }),
    )
}

/// Issues a QR as 59 does and remembers it with its expiry (`qr_ttl_secs`
/// from now): `SIMQR-Q<yyMMdd><n>-EXP<epoch>`, then `-SCENARIO=NNN` when a
/// scenario is asked for (zero-padded to three characters).
pub(crate) fn issue_qr(sim: &SnapQrSim, scenario: Option<&str>) -> (String, DateTime<Utc>) {
    let expires_at = Utc::now() + chrono::Duration::seconds(sim.inner.settings.qr_ttl_secs as i64);
    let mut qr = format!(
        "SIMQR-{}-EXP{}",
        next_reference(sim, "Q"),
        expires_at.timestamp()
    );
    if let Some(scenario) = scenario {
        qr.push_str(&format!("-SCENARIO={scenario:0>3}"));
    }
    lock(&sim.inner.ledger).issued_qrs.insert(
        qr.as_str().into(),
        IssuedQr {
            expires_at,
            paid_by: None,
        },
    );
    (qr, expires_at)
}

/// When a payment the issuer carried out is notified (79), spec §8.4.
enum NotifyPlan {
    /// Never: only a query (61) shows the status.
    Never,
    /// Before the HTTP reply, with the status the ledger already has.
    BeforeReply,
    /// After `notify_delay_ms`: the ledger moves to `status` (unless a cancel
    /// made it final meanwhile), then the notify is delivered `deliveries`
    /// times.
    Later {
        status: &'static str,
        deliveries: usize,
    },
}

/// How a scenario's payment goes once the issuer has carried it out.
struct Settlement {
    /// latestTransactionStatus in the ledger when the reply is sent.
    status: &'static str,
    /// Answered 2026000 (in progress) rather than 2006000.
    in_progress: bool,
    notify: NotifyPlan,
}

/// Scenarios 101–109 (spec §8.4, §8.10); every other scenario that reaches
/// the ledger succeeds at once, without a notify.
fn settlement(scenario: u16) -> Settlement {
    let later = |status, deliveries| NotifyPlan::Later { status, deliveries };
    let (status, in_progress, notify) = match scenario {
        101 => ("01", true, later("00", 1)),
        102 => ("03", true, NotifyPlan::Never),
        103 => ("00", false, NotifyPlan::BeforeReply),
        104 => ("00", false, later("00", 2)),
        105 => ("01", true, later("06", 1)),
        106 => ("00", true, NotifyPlan::BeforeReply),
        107 => ("01", true, later("00", 2)),
        108 => ("01", true, later("05", 1)),
        // Succeeds as 000 does, plus a notify: the one message whose
        // lenient forms a signature covers.
        LENIENT_FORMS => ("00", false, later("00", 1)),
        _ => ("00", false, NotifyPlan::Never),
    };
    Settlement {
        status,
        in_progress,
        notify,
    }
}

/// Scenario 109 (spec §8.10): every message about the payment (60, 61, 62,
/// 80 replies and its notify 79) is written in the forms a lenient reader
/// must accept, see [`in_lenient_forms`].
const LENIENT_FORMS: u16 = 109;

/// The store scenario 109's messages name as `externalStoreID`: the
/// canonical messages name none, so the spelling needs a value to show.
const LENIENT_FORMS_STORE_ID: &str = "SIMSTORE01";

/// The `fields` of a message about `entry` as its issuer writes them:
/// canonical, or for scenario 109 [`in_lenient_forms`].
fn as_written(entry: &PaymentEntry, fields: Value) -> Value {
    if entry.scenario == LENIENT_FORMS {
        in_lenient_forms(fields)
    } else {
        fields
    }
}

/// Canonical fields rewritten into the spec §8.10 forms: amounts as
/// `{"Value":…,"Currency":…}`, `originalExternalId` with the leading space of
/// the 61 sample, the store as `externalStoreID`, and `"additionalInfo":null`.
fn in_lenient_forms(fields: Value) -> Value {
    let Value::Object(canonical) = fields else {
        return fields;
    };
    let mut lenient: Map<String, Value> = canonical
        .into_iter()
        .map(|(key, value)| {
            let key = match key.as_str() {
                "originalExternalId" => format!(" {key}"),
                _ => key,
            };
            // The only objects inside these messages are amounts.
            let value = match value {
                Value::Object(amount) => Value::Object(
                    amount
                        .into_iter()
                        .map(|(part, v)| (capitalised(&part), v))
                        .collect(),
                ),
                other => other,
            };
            (key, value)
        })
        .collect();
    lenient.insert("externalStoreID".into(), json!(LENIENT_FORMS_STORE_ID));
    lenient.insert("additionalInfo".into(), Value::Null);
    Value::Object(lenient)
}

/// `value` → `Value`.
fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// [`NotifyPlan::Later`] for `payment`, in its own task; nothing once the
/// simulator stops.
fn settle_later(sim: &SnapQrSim, payment: &PaymentEntry, status: &'static str, deliveries: usize) {
    let sim = sim.clone();
    let delay = Duration::from_millis(sim.inner.settings.notify_delay_ms);
    let (reference, reference_no) = (
        payment.partner_reference_no.clone(),
        payment.reference_no.clone(),
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = sim.inner.stop.wait() => {}
            _ = tokio::time::sleep(delay) => {
                let Some(settled) = settle(&sim, &reference, &reference_no, status) else {
                    return;
                };
                for _ in 0..deliveries {
                    send_notify(&sim, &settled).await;
                }
            }
        }
    });
}

/// Moves the payment `reference_no` to `status` if it is still pending (a
/// final status never changes, spec §7) and returns it as it then stands.
///
/// `None` when the ledger no longer holds that payment under `reference`:
/// forgotten, or replaced by a new payment under the same
/// partnerReferenceNo (reused after a cancel or a failure, spec §7
/// ASSUMED), which is matched by its own referenceNo so that a timer of the
/// old payment never settles or notifies the new one.
fn settle(
    sim: &SnapQrSim,
    reference: &str,
    reference_no: &str,
    status: &'static str,
) -> Option<PaymentEntry> {
    let mut ledger = lock(&sim.inner.ledger);
    let entry = ledger
        .payments
        .get_mut(reference)
        .filter(|entry| entry.reference_no == reference_no)?;
    let pending = matches!(entry.status.as_str(), "01" | "02" | "03");
    if pending {
        entry.status = status.into();
    }
    let settled = entry.clone();
    if pending && matches!(status, "05" | "06") {
        ledger.free_qr(&settled.qr_content, reference);
    }
    Some(settled)
}

fn payment_reply(entry: &PaymentEntry, code: &str, message: &str) -> Response {
    answer(
        code,
        message,
        as_written(
            entry,
            json!({
                "referenceNo": entry.reference_no,
                "partnerReferenceNo": entry.partner_reference_no,
                "transactionDate": format_timestamp(TimestampFormat::Offset, entry.created_at),
            }),
        ),
    )
}

/// A payment's (60) mandatory fields and bounds (spec §5), checked in
/// order: `partnerReferenceNo`, `qrContent`, `merchantId`, `expiryTime`
/// present, the text fields within their `S<n>` ([`PAYMENT_TEXT`]),
/// `expiryTime` readable, then `amount` (typed O, but the spec says to treat
/// it as M) and `feeAmount` in their `Amt` form. `Ok` is the reference, the
/// QR and the amount; `Err` the 400 reply.
// The error is the finished reply (built once, on a refusal): boxing buys
// nothing.
#[allow(clippy::result_large_err)]
fn payment_fields(body: &Body) -> Result<(String, String, i64), Response> {
    let reference = body
        .str("partnerReferenceNo")
        .ok_or_else(|| missing(60, "partnerReferenceNo"))?;
    let qr = body
        .str("qrContent")
        .ok_or_else(|| missing(60, "qrContent"))?;
    if body.str("merchantId").is_none() {
        return Err(missing(60, "merchantId"));
    }
    let expiry = body
        .str("expiryTime")
        .ok_or_else(|| missing(60, "expiryTime"))?;
    check_text(body, 60, PAYMENT_TEXT)?;
    // Spec §5 types expiryTime "Numeric/ISO" and samples "60" (Q3 is
    // open): seconds, or an ISO-8601 time.
    if !expiry.bytes().all(|b| b.is_ascii_digit()) && parse_stamp(&expiry).is_none() {
        return Err(bad_format(60, "expiryTime"));
    }
    let amount = amount_field(body, 60, "amount")?.ok_or_else(|| missing(60, "amount"))?;
    amount_field(body, 60, "feeAmount")?;
    Ok((reference, qr, amount))
}

/// Service 60: [`payment_fields`], then the merchant (spec §6: one the
/// issuer does not know is 4046008, "fix onboarding config") and an amount
/// of zero (4046013), then the ledger and the QR's scenario.
pub(crate) async fn payment(State(sim): State<SnapQrSim>, request: Request) -> Response {
    let authed = match authenticate(&sim, 60, PAYMENTS, request).await {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let body = &authed.body;
    let (reference, qr, amount) = match payment_fields(body) {
        Ok(fields) => fields,
        Err(refusal) => return refusal,
    };
    if body.str("merchantId").as_deref() != Some(sim.inner.settings.merchant_id.trim()) {
        return fail(404, 60, 8, "Invalid Merchant");
    }
    if amount == 0 {
        return fail(404, 60, 13, "Invalid Amount");
    }
    let scenario = scenario_of(&qr, amount);
    let failure = match scenario {
        301 => Some((403, 0, "Transaction Expired")),
        302 => Some((404, 11, "Invalid Card/Account/Customer")),
        303 => Some((403, 14, "Insufficient Funds")),
        304 => Some((403, 2, "Exceeds Transaction Amount Limit")),
        305 => Some((403, 5, "Do Not Honor")),
        306 => Some((403, 3, "Suspected Fraud")),
        307 => Some((404, 13, "Invalid Amount")),
        309 => Some((403, 19, "Merchant Blacklisted")),
        310 => Some((403, 1, "Feature Not Allowed")),
        _ => None,
    };
    let settlement = settlement(scenario);
    let status = if failure.is_some() {
        "06"
    } else {
        settlement.status
    };
    let reference_no = next_reference(&sim, "SNAP");
    // One critical section from the duplicate check to the ledger entry, so
    // two concurrent payments can never both use one reference or one QR.
    let entry = {
        let mut ledger = lock(&sim.inner.ledger);
        // The ledger decides duplicates first.
        if let Some(entry) = ledger.payments.get_mut(reference.as_str()) {
            resolve_pending(entry);
            match entry.status.as_str() {
                "00" | "04" => {
                    return payment_reply(entry, "4096001", "Duplicate partnerReferenceNo")
                }
                // ASSUMED (spec §7): a reference whose payment is still
                // pending executes nothing and answers as that payment did:
                // in progress, with its referenceNo.
                "01" | "02" | "03" => {
                    return payment_reply(entry, "2026000", "Request In Progress")
                }
                // ASSUMED (spec §7): a reference whose payment failed may
                // be used again; the failed payment is replaced below, once
                // the new one is recorded.
                _ => {}
            }
        }
        let Some(issued) = ledger.issued_qrs.get_mut(qr.as_str()) else {
            // ASSUMED (spec §8.6): a QR this issuer never generated (or has
            // forgotten) pays nothing.
            return fail(404, 60, 11, "Invalid Card/Account/Customer (unknown QR)");
        };
        if issued.expires_at < Utc::now() {
            return fail(403, 60, 0, "Transaction Expired");
        }
        if issued.paid_by.as_ref().is_some_and(|by| *by != reference) {
            return fail(
                404,
                60,
                11,
                "Invalid Card/Account/Customer (QR already used)",
            );
        }
        if scenario == 308 {
            return fail(429, 60, 0, "Too Many Requests");
        }
        if scenario == 203 {
            return (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response();
        }
        if status != "06" {
            issued.paid_by = Some(reference.clone());
        }
        let entry = PaymentEntry {
            partner_reference_no: reference.clone(),
            reference_no,
            external_id: authed.external_id,
            amount,
            qr_content: qr.clone(),
            status: status.into(),
            scenario,
            created_at: Utc::now(),
            refunded: 0,
            refunds: Default::default(),
            resolve_at: (scenario == 102).then(|| {
                Instant::now() + Duration::from_millis(sim.inner.settings.pending_resolve_ms)
            }),
        };
        // A reused reference's failed payment goes only now: a reuse
        // refused above (unknown, expired or used QR, 429, 502) did nothing,
        // so a query still answers the failed payment.
        ledger.payments.record(entry.clone());
        entry
    };
    if let Some((http, case, message)) = failure {
        return fail(http, 60, case, message);
    }
    match scenario {
        201 => {
            let wait = Duration::from_millis(sim.inner.settings.slow_reply_ms);
            tokio::select! {
                _ = sim.inner.stop.wait() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            payment_reply(&entry, "2006000", "Successful")
        }
        202 => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        204 => fail(504, 60, 0, "Timeout"),
        _ => {
            match settlement.notify {
                NotifyPlan::Never => {}
                NotifyPlan::BeforeReply => send_notify(&sim, &entry).await,
                NotifyPlan::Later { status, deliveries } => {
                    settle_later(&sim, &entry, status, deliveries)
                }
            }
            if settlement.in_progress {
                payment_reply(&entry, "2026000", "Request In Progress")
            } else {
                payment_reply(&entry, "2006000", "Successful")
            }
        }
    }
}

/// Sends notify (79) about `entry` as it stands, signed as `notify_mode`
/// says; each attempt gets its own headers ([`notify_headers`]).
pub(crate) async fn send_notify(sim: &SnapQrSim, entry: &PaymentEntry) {
    let Some(url) = sim.inner.settings.notify_url.clone() else {
        return;
    };
    let body = as_written(
        entry,
        json!({
            "originalPartnerReferenceNo": entry.partner_reference_no,
            "originalReferenceNo": entry.reference_no,
            "merchantId": sim.inner.settings.merchant_id.trim(),
            "amount": { "value": format!("{}.00", entry.amount), "currency": "IDR" },
            "latestTransactionStatus": entry.status,
            "transactionStatusDesc": status_desc(&entry.status),
        }),
    )
    .to_string();
    let path = reqwest::Url::parse(&url)
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        })
        .unwrap_or_else(|_| "/".into());
    // Mode B: a 401 may mean loket no longer knows our token (say, it
    // restarted with a key of its own); sign in again and resend once.
    for sign_in in 1..=2 {
        let Some(signer) = notify_signer(sim, &url).await else {
            return;
        };
        let attempt_headers = || notify_headers(sim, &signer, &path, body.as_bytes());
        let status = sim
            .inner
            .notifies
            .deliver_signed(
                OutgoingCallback {
                    reference: entry.partner_reference_no.clone(),
                    label: entry.status.clone(),
                    url: url.clone(),
                    method: crate::common::CallbackMethod::Post,
                    query: Vec::new(),
                    body: body.clone().into_bytes(),
                    content_type: "application/json",
                },
                &attempt_headers,
            )
            .await;
        let token_refused = status == Some(401) && matches!(signer, NotifySigner::LoketToken(_));
        if !token_refused || sign_in == 2 {
            return;
        }
        *sim.inner.notify_token.lock().await = None;
    }
}

/// What signs a notify (spec §4.3).
enum NotifySigner {
    /// Mode A: the issuer's RSA key.
    IssuerKey,
    /// Mode B: the access token loket granted, with the secret loket issued.
    LoketToken(String),
}

/// The signer `notify_mode` asks for; `None` when mode B gets no token (the
/// notify is then not sent; loket's queries still find the payment).
async fn notify_signer(sim: &SnapQrSim, url: &str) -> Option<NotifySigner> {
    match sim.inner.settings.notify_mode {
        loket_snapqr::NotifyMode::Rsa => Some(NotifySigner::IssuerKey),
        loket_snapqr::NotifyMode::Hmac => {
            notify_token(sim, url).await.map(NotifySigner::LoketToken)
        }
    }
}

/// The headers of one notify attempt, made when the attempt is (see
/// [`AttemptHeaders`](crate::common::AttemptHeaders)): X-TIMESTAMP now,
/// X-SIGNATURE over it (spec §4.3), a new X-EXTERNAL-ID (§7: every retry
/// uses a new one), X-PARTNER-ID (the mode's caller id) and CHANNEL-ID.
fn notify_headers(
    sim: &SnapQrSim,
    signer: &NotifySigner,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let settings = &sim.inner.settings;
    let stamp = now_iso();
    // Spec §3: X-PARTNER-ID is the caller's client id. In mode B the issuer
    // calls loket as loket's client, under the client key loket issued it
    // (the X-CLIENT-KEY its token request was granted for, §4.3). In mode A
    // it holds no id of loket's, so it names the partner the notify is for
    // by the client id loket holds at this issuer (ASSUMED: §4.3 is silent).
    let partner_id = match signer {
        NotifySigner::IssuerKey => &settings.client_key,
        NotifySigner::LoketToken(_) => &settings.notify_client_key,
    };
    let signed = match signer {
        NotifySigner::IssuerKey => {
            loket_snapqr::callback::sign_notify_rsa(&sim.inner.issuer_key, path, body, &stamp)
        }
        NotifySigner::LoketToken(token) => loket_snapqr::callback::sign_notify_hmac(
            settings.notify_client_secret.expose(),
            token,
            path,
            body,
            &stamp,
        ),
    };
    signed
        .into_iter()
        .filter(|(name, _)| name != "Content-Type")
        .chain([
            ("X-PARTNER-ID".to_string(), partner_id.clone()),
            ("X-EXTERNAL-ID".to_string(), next_external_id(sim)),
            ("CHANNEL-ID".to_string(), "95221".to_string()),
        ])
        .collect()
}

/// A numeric X-EXTERNAL-ID no other message of this issuer uses: the
/// millisecond, then the simulator's sequence (unique within a run, and the
/// millisecond across restarts).
fn next_external_id(sim: &SnapQrSim) -> String {
    let n = sim
        .inner
        .sequence
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{}{:08}", Utc::now().timestamp_millis(), n % 100_000_000)
}

/// Notify mode B: loket's access token, asked for at
/// `/{version}/access-token/b2b` on the notify URL's host with the issuer's
/// RSA signature over `clientKey|X-TIMESTAMP`, and kept until a minute
/// before its `expiresIn` runs out.
async fn notify_token(sim: &SnapQrSim, notify_url: &str) -> Option<String> {
    let mut cached = sim.inner.notify_token.lock().await;
    if let Some((token, expires)) = cached.as_ref() {
        if Instant::now() + Duration::from_secs(60) < *expires {
            return Some(token.clone());
        }
    }
    let settings = &sim.inner.settings;
    let mut url = reqwest::Url::parse(notify_url).ok()?;
    url.set_path(&format!("/{}/access-token/b2b", settings.version));
    url.set_query(None);
    let request = loket_snapqr::b2b_token::signed_request(
        &sim.inner.issuer_key,
        &settings.notify_client_key,
        &now_iso(),
    );
    let answer = super::token_request(sim.inner.notifies.client(), url.clone(), request)
        .send()
        .await;
    let granted = match answer {
        Ok(response) => response.bytes().await.ok().and_then(|bytes| {
            let body = Body::parse(&bytes).ok()?;
            let token = body.str("accessToken")?;
            let ttl = body.str("expiresIn")?.parse::<u64>().ok()?;
            Some((token, ttl))
        }),
        Err(_) => None,
    };
    let Some((token, ttl)) = granted else {
        tracing::warn!(%url, "snapqr simulator: loket granted no notify access token; notify not sent");
        return None;
    };
    *cached = Some((token.clone(), Instant::now() + Duration::from_secs(ttl)));
    Some(token)
}

/// Service 61.
pub(crate) async fn query(State(sim): State<SnapQrSim>, request: Request) -> Response {
    let authed = match authenticate(&sim, 61, QUERIES, request).await {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let reference = authed.body.str("originalPartnerReferenceNo");
    let reference_no = authed.body.str("originalReferenceNo");
    // ASSUMED (spec §5): every 61 field is optional, but a query must name
    // the payment by at least one reference.
    if reference.is_none() && reference_no.is_none() {
        return missing(61, "originalPartnerReferenceNo / originalReferenceNo");
    }
    if let Err(refusal) = check_text(&authed.body, 61, QUERY_TEXT) {
        return refusal;
    }
    let entry = {
        let mut ledger = lock(&sim.inner.ledger);
        let found = match &reference {
            Some(r) => ledger.payments.get_mut(r),
            None => reference_no
                .as_deref()
                .and_then(|r| ledger.payments.by_secondary_mut(r)),
        };
        found.map(|entry| {
            resolve_pending(entry);
            entry.clone()
        })
    };
    let Some(entry) = entry else {
        return fail(404, 61, 1, "Transaction Not Found");
    };
    // Spec §5: no amount in a 61 reply.
    answer(
        "2006100",
        "Successful",
        as_written(
            &entry,
            json!({
                "originalReferenceNo": entry.reference_no,
                "originalPartnerReferenceNo": entry.partner_reference_no,
                "originalExternalId": entry.external_id,
                "latestTransactionStatus": entry.status,
                "transactionStatusDesc": status_desc(&entry.status),
                "paidTime": format_timestamp(TimestampFormat::Offset, entry.created_at),
            }),
        ),
    )
}

/// Service 62.
pub(crate) async fn cancel(State(sim): State<SnapQrSim>, request: Request) -> Response {
    let authed = match authenticate(&sim, 62, CANCELS, request).await {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let reference = authed.body.str("originalPartnerReferenceNo");
    let Some(reference) = reference else {
        return missing(62, "originalPartnerReferenceNo");
    };
    if let Err(refusal) = check_text(&authed.body, 62, CANCEL_TEXT) {
        return refusal;
    }
    // A cancel voids the whole payment, so its amount is not compared with
    // the payment's; its form is still spec §5's.
    if let Err(refusal) = amount_field(&authed.body, 62, "amount") {
        return refusal;
    }
    let mut ledger = lock(&sim.inner.ledger);
    let Some(entry) = ledger.payments.get_mut(reference.as_str()) else {
        return fail(404, 62, 1, "Transaction Not Found");
    };
    resolve_pending(entry);
    // ASSUMED (spec §2.6 vs §7): §7 lets a final status change only 00 → 04,
    // but §2.6's cancel voids an unsettled same-day payment; so a 00 payment
    // becomes 05 on the day it was made, and after it must be refunded.
    match entry.status.as_str() {
        "05" => {}
        "00" if !cancel_window_open(entry.created_at, Utc::now()) => {
            return fail(
                405,
                62,
                1,
                "Requested Operation Is Not Allowed (cancel window closed)",
            )
        }
        "00" | "01" | "02" | "03" => entry.status = "05".into(),
        _ => return fail(404, 62, 0, "Invalid Transaction Status"),
    }
    let entry = entry.clone();
    ledger.free_qr(&entry.qr_content, &reference);
    answer(
        "2006200",
        "Successful",
        as_written(
            &entry,
            json!({
                "originalReferenceNo": entry.reference_no,
                "originalPartnerReferenceNo": entry.partner_reference_no,
                "cancelTime": now_iso(),
                "transactionDate": format_timestamp(TimestampFormat::Offset, entry.created_at),
            }),
        ),
    )
}

/// Spec §2.6: a cancel voids a *same-day* payment (§8.7: after the window,
/// 4056201). The window closes at the end of the WIB calendar day the
/// payment was made on (ASSUMED, Q6: the issuer settles per WIB business
/// day), so a payment made at 23:59:59 WIB is past it a second later.
fn cancel_window_open(paid_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    wib_day(now) == wib_day(paid_at)
}

/// The refund `refund_no` already made, with the payment it refunded,
/// whichever payment that was (spec §7: one partnerRefundNo per partner). A
/// number the index has forgotten is still known to the payment it refunded,
/// when that is `named_payment`.
fn earlier_refund<'a>(
    ledger: &'a Ledger,
    refund_no: &str,
    named_payment: &'a str,
) -> Option<(&'a PaymentEntry, &'a RefundEntry)> {
    let refunded_payment = ledger
        .payment_by_refund_no
        .get(refund_no)
        .map_or(named_payment, String::as_str);
    let payment = ledger.payments.get(refunded_payment)?;
    Some((payment, payment.refunds.get(refund_no)?))
}

/// Service 80.
pub(crate) async fn refund(State(sim): State<SnapQrSim>, request: Request) -> Response {
    let authed = match authenticate(&sim, 80, REFUNDS, request).await {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let body = &authed.body;
    let refund_no = body.str("partnerRefundNo");
    let Some(reference) = body.str("originalPartnerReferenceNo") else {
        return missing(80, "originalPartnerReferenceNo");
    };
    let Some(refund_no) = refund_no else {
        return missing(80, "partnerRefundNo");
    };
    if let Err(refusal) = check_text(body, 80, REFUND_TEXT) {
        return refusal;
    }
    let amount = match amount_field(body, 80, "refundAmount") {
        Ok(Some(amount)) if amount > 0 => amount,
        Ok(_) => return missing(80, "refundAmount"),
        Err(refusal) => return refusal,
    };
    let reply = |entry: &PaymentEntry, refund: &RefundEntry, code: &str, message: &str| {
        answer(
            code,
            message,
            as_written(
                entry,
                json!({
                    "originalPartnerReferenceNo": entry.partner_reference_no,
                    "originalReferenceNo": entry.reference_no,
                    "refundNo": refund.refund_no,
                    "partnerRefundNo": refund_no,
                    "refundAmount": { "value": format!("{}.00", refund.amount), "currency": "IDR" },
                    "refundTime": format_timestamp(TimestampFormat::Offset, refund.refunded_at),
                }),
            ),
        )
    };
    let mut ledger = lock(&sim.inner.ledger);
    // Spec §7 (ASSUMED there): a partnerRefundNo names one refund per
    // partner, whichever payment it is sent with, and is decided first, as
    // a partnerReferenceNo is. Sent again with its amount it answers 409xx01
    // with that refund: the idempotent re-send a refund's status check
    // relies on (SNAP has no refund query). With another amount, 404xx18.
    // Either way nothing more is refunded.
    if let Some((payment, earlier)) = earlier_refund(&ledger, &refund_no, &reference) {
        if earlier.amount == amount {
            return reply(payment, earlier, "4098001", "Duplicate partnerRefundNo");
        }
        return fail(404, 80, 18, "Inconsistent Request");
    }
    let Some(entry) = ledger.payments.get_mut(reference.as_str()) else {
        return fail(404, 80, 1, "Transaction Not Found");
    };
    resolve_pending(entry);
    if !matches!(entry.status.as_str(), "00" | "04") {
        return fail(404, 80, 0, "Invalid Transaction Status");
    }
    // Checked: an amount near i64::MAX must be refused, not wrap around.
    if entry
        .refunded
        .checked_add(amount)
        .is_none_or(|total| total > entry.amount)
    {
        return fail(
            404,
            80,
            13,
            "Invalid Amount (refunds exceed the paid amount)",
        );
    }
    let refund = RefundEntry {
        refund_no: format!("RF{}", entry.refunds.len() + 1) + &entry.reference_no,
        amount,
        refunded_at: Utc::now(),
    };
    entry.refunded += amount;
    entry.status = "04".into();
    entry.refunds.insert(refund_no.clone(), refund.clone());
    let entry = entry.clone();
    ledger
        .payment_by_refund_no
        .insert(refund_no.as_str().into(), reference);
    drop(ledger);
    reply(&entry, &refund, "2008000", "Successful")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::IndexedRecentMap;

    /// The response code and message of a refusal.
    async fn refusal(fields: &str) -> (String, String) {
        let body = Body::parse(format!("{{{fields}}}").as_bytes()).unwrap();
        let response = payment_fields(&body).expect_err("refused");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&bytes).unwrap();
        (
            reply["responseCode"].as_str().unwrap().to_string(),
            reply["responseMessage"].as_str().unwrap().to_string(),
        )
    }

    #[tokio::test]
    async fn a_payment_needs_its_mandatory_fields_within_their_lengths() {
        let base = r#""partnerReferenceNo":"P1","qrContent":"QR","merchantId":"M","amount":{"value":"10000.00","currency":"IDR"}"#;
        let complete = format!(r#"{base},"expiryTime":"2026-11-22T10:00:00+07:00""#);
        let body = Body::parse(format!("{{{complete}}}").as_bytes()).unwrap();
        assert_eq!(
            payment_fields(&body).ok(),
            Some(("P1".to_string(), "QR".to_string(), 10_000))
        );
        assert_eq!(
            refusal(base).await,
            (
                "4006002".into(),
                "Invalid Mandatory Field expiryTime".into()
            )
        );
        let long_reference = complete.replace("\"P1\"", &format!("\"{}\"", "P".repeat(65)));
        assert_eq!(
            refusal(&long_reference).await,
            (
                "4006001".into(),
                "Invalid Field Format partnerReferenceNo".into()
            )
        );
        let long_qr = complete.replace("\"QR\"", &format!("\"{}\"", "Q".repeat(513)));
        assert_eq!(
            refusal(&long_qr).await,
            ("4006001".into(), "Invalid Field Format qrContent".into())
        );
    }

    /// Spec §5: every field of 60 with an `S<n>` is held to it (those nested
    /// in `scannerInfo` too), `expiryTime` is seconds or an ISO-8601 time,
    /// and an amount is `Amt`: a string with two decimals, with its
    /// currency. A field at its length passes.
    #[tokio::test]
    async fn every_payment_field_is_held_to_its_spec_length_and_form() {
        let base = r#""partnerReferenceNo":"P1","qrContent":"QR","merchantId":"M","amount":{"value":"10000.00","currency":"IDR"}"#;
        let accepted = |extra: &str| {
            let body = Body::parse(format!("{{{base},{extra}}}").as_bytes()).unwrap();
            payment_fields(&body).is_ok()
        };
        let expiry = r#""expiryTime":"60""#;
        assert!(accepted(expiry), "seconds");
        assert!(accepted(r#""expiryTime":"2026-11-22T10:00:00+07:00""#));
        let at_length = format!(
            r#"{expiry},"title":"{}","terminalId":"{}","scannerInfo":{{"deviceModel":"{}"}},"feeAmount":{{"value":"500.00","currency":"IDR"}}"#,
            "t".repeat(256),
            "t".repeat(32),
            "d".repeat(128)
        );
        assert!(accepted(&at_length), "{at_length}");
        for (extra, field) in [
            (r#""expiryTime":"in an hour""#.to_string(), "expiryTime"),
            (
                format!(r#"{expiry},"title":"{}""#, "t".repeat(257)),
                "title",
            ),
            (
                format!(r#"{expiry},"terminalId":"{}""#, "t".repeat(33)),
                "terminalId",
            ),
            (
                format!(r#"{expiry},"merchantName":"{}""#, "m".repeat(65)),
                "merchantName",
            ),
            (
                format!(r#"{expiry},"subMerchantId":"{}""#, "s".repeat(33)),
                "subMerchantId",
            ),
            (
                format!(r#"{expiry},"externalStoreID":"{}""#, "s".repeat(65)),
                "externalStoreId",
            ),
            (
                format!(
                    r#"{expiry},"scannerInfo":{{"deviceModel":"{}"}}"#,
                    "d".repeat(129)
                ),
                "scannerInfo.deviceModel",
            ),
            (
                format!(r#"{expiry},"scannerInfo":"{}""#, "d"),
                "scannerInfo",
            ),
            (format!(r#"{expiry},"title":42"#), "title"),
            (
                format!(r#"{expiry},"feeAmount":{{"value":"500","currency":"IDR"}}"#),
                "feeAmount",
            ),
        ] {
            assert_eq!(
                refusal(&format!("{base},{extra}")).await,
                ("4006001".into(), format!("Invalid Field Format {field}")),
                "{extra}"
            );
        }
        let amount_in = |amount: &str| {
            format!(
                r#""partnerReferenceNo":"P1","qrContent":"QR","merchantId":"M",{expiry},"amount":{amount}"#
            )
        };
        for amount in [
            r#"{"value":"10000","currency":"IDR"}"#,
            r#"{"value":"10000.0","currency":"IDR"}"#,
            r#"{"value":10000.00,"currency":"IDR"}"#,
            r#"{"value":"10000.00"}"#,
            r#"{"value":"10000.00","currency":"USD"}"#,
            r#"{"value":"99999999999999.00","currency":"IDR"}"#,
            r#""10000.00""#,
        ] {
            assert_eq!(
                refusal(&amount_in(amount)).await,
                ("4006001".into(), "Invalid Field Format amount".into()),
                "{amount}"
            );
        }
        let longest = format!(
            "{{{}}}",
            amount_in(r#"{"value":"9999999999999.00","currency":"IDR"}"#)
        );
        assert_eq!(
            payment_fields(&Body::parse(longest.as_bytes()).unwrap())
                .map(|(_, _, amount)| amount)
                .ok(),
            Some(9_999_999_999_999)
        );
    }

    /// Spec §2.6: the cancel window is the payment's WIB (UTC+7) calendar
    /// day, neither a rolling 24 h nor the UTC day.
    #[test]
    fn the_cancel_window_closes_at_the_end_of_the_payments_wib_day() {
        let at = |stamp: &str| {
            DateTime::parse_from_rfc3339(stamp)
                .unwrap()
                .with_timezone(&Utc)
        };
        let open = |paid, now| cancel_window_open(at(paid), at(now));
        assert!(open(
            "2026-03-01T00:00:00+07:00",
            "2026-03-01T23:59:59+07:00"
        ));
        assert!(!open(
            "2026-03-01T23:59:59+07:00",
            "2026-03-02T00:00:00+07:00"
        ));
        // 16:00 and 18:00 UTC of one UTC day fall on two WIB days.
        assert!(!open("2026-03-01T16:00:00Z", "2026-03-01T18:00:00Z"));
        assert!(open("2026-03-01T18:00:00Z", "2026-03-02T16:59:59Z"));
    }

    fn payment(reference: &str, refund_nos: &[&str]) -> PaymentEntry {
        PaymentEntry {
            partner_reference_no: reference.into(),
            reference_no: format!("SNAP-{reference}"),
            external_id: "1".into(),
            amount: 10_000,
            qr_content: String::new(),
            status: "04".into(),
            scenario: 0,
            created_at: Utc::now(),
            refunded: refund_nos.len() as i64,
            refunds: refund_nos
                .iter()
                .map(|no| {
                    let refund = RefundEntry {
                        refund_no: format!("RF-{no}"),
                        amount: 1,
                        refunded_at: Utc::now(),
                    };
                    (no.to_string(), refund)
                })
                .collect(),
            resolve_at: None,
        }
    }

    /// The referenceNo index forgets in step with the payments: a payment
    /// forgotten is unknown by its referenceNo too, and one still remembered
    /// is found by it, also after a reused partnerReferenceNo replaced a
    /// payment (which frees a place without forgetting anything).
    #[test]
    fn the_reference_no_index_forgets_in_step_with_the_payments() {
        let mut payments = IndexedRecentMap::new(2, "snapqr", "payments", "payment_reference_nos");
        let found = |payments: &mut IndexedRecentMap<PaymentEntry>, reference_no: &str| {
            payments
                .by_secondary_mut(reference_no)
                .map(|entry| entry.partner_reference_no.clone())
        };
        payments.record(payment("A", &[]));
        payments.record(payment("B", &[]));
        let mut reused = payment("B", &[]);
        reused.reference_no = "SNAP-B-again".into();
        payments.record(reused);
        assert_eq!(found(&mut payments, "SNAP-A"), Some("A".to_string()));
        assert_eq!(found(&mut payments, "SNAP-B"), None, "the replaced payment");
        assert_eq!(found(&mut payments, "SNAP-B-again"), Some("B".to_string()));

        payments.record(payment("C", &[]));
        assert!(
            payments.get("A").is_none(),
            "the oldest payment is forgotten"
        );
        assert_eq!(found(&mut payments, "SNAP-A"), None);
        assert_eq!(found(&mut payments, "SNAP-B-again"), Some("B".to_string()));
        assert_eq!(found(&mut payments, "SNAP-C"), Some("C".to_string()));
    }

    #[test]
    fn a_refund_number_is_found_across_payments_and_after_the_index_forgot_it() {
        let mut ledger = Ledger::new(2);
        ledger.payments.record(payment("P", &["R1", "R2", "R3"]));
        ledger.payments.record(payment("Q", &[]));
        for refund_no in ["R1", "R2", "R3"] {
            ledger
                .payment_by_refund_no
                .insert(refund_no.into(), "P".into());
        }
        let found = |refund_no, named| {
            earlier_refund(&ledger, refund_no, named)
                .map(|(payment, refund)| (payment.partner_reference_no.clone(), refund.amount))
        };
        assert_eq!(
            found("R3", "Q"),
            Some(("P".to_string(), 1)),
            "across payments"
        );
        assert!(!ledger.payment_by_refund_no.contains_key("R1"));
        assert_eq!(
            found("R1", "P"),
            Some(("P".to_string(), 1)),
            "forgotten by the index"
        );
        assert_eq!(found("R1", "Q"), None);
        assert_eq!(found("R9", "P"), None);
    }
}
