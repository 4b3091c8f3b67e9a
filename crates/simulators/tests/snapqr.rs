//! The SNAP QR CPM simulator driven over real HTTP with raw signed calls
//! (the connector's own tests against it are in `loket-snapqr`): the
//! merchant a payment names, the amount it debits, a wrong path or method,
//! missing and malformed headers, request fields beyond their spec lengths,
//! a settle timer that outlives its payment's partnerReferenceNo, a refused
//! reuse of a failed payment's reference, the same-day cancel window, a
//! resent refund, notify retries and the notify's X-PARTNER-ID in each mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use loket_runtime::{Secret, Shutdown};
use loket_simulators::snapqr::{PaymentEntry, SnapQrSim, SnapQrSimSettings};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const CLIENT: &str = "sim-partner";
const SECRET: &str = "sim-secret-0001";
const MERCHANT: &str = "M0001";

struct Harness {
    sim: SnapQrSim,
    url: String,
    http: reqwest::Client,
    token: String,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn stamp() -> String {
    loket_protocol::wib::timestamp(chrono::Utc::now())
}

/// Starts a simulator onboarding [`MERCHANT`], with `tune` applied to its
/// settings, and takes an access token from it.
async fn start(tune: impl FnOnce(&mut SnapQrSimSettings)) -> Harness {
    let (private_pem, public_pem) = loket_snapqr::sign::generate_key_pair();
    let mut settings = SnapQrSimSettings {
        client_key: CLIENT.into(),
        client_secret: Secret::new(SECRET),
        partner_public_key: Secret::new(public_pem),
        merchant_id: MERCHANT.into(),
        ..SnapQrSimSettings::default()
    };
    tune(&mut settings);
    let sim = SnapQrSim::new(settings).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let served = sim.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move { served.serve(listener, stop).await });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let key = loket_snapqr::sign::load_private_key(&private_pem).unwrap();
    let request = loket_snapqr::b2b_token::signed_request(&key, CLIENT, &stamp());
    let token_url = format!("{url}{}", sim.path("access-token/b2b"));
    let reply: Value = loket_simulators::snapqr::token_request(&http, token_url, request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["responseCode"], "2007300", "{reply}");
    Harness {
        token: reply["accessToken"].as_str().unwrap().to_string(),
        sim,
        url,
        http,
        shutdown,
    }
}

/// A fresh X-EXTERNAL-ID (unique per day).
fn external_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}{:08}",
        chrono::Utc::now().timestamp_millis(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The headers of one call, by name.
type Headers = Vec<(&'static str, String)>;

impl Harness {
    /// A signed call of `service` (e.g. `qr/qr-cpm-payment`): the HTTP status
    /// and the JSON reply.
    async fn call(&self, service: &str, body: &Value) -> (u16, Value) {
        self.call_with(service, body, |_| {}).await
    }

    /// [`call`](Self::call) with its headers (signed as they stood) changed
    /// by `edit` before sending.
    async fn call_with(
        &self,
        service: &str,
        body: &Value,
        edit: impl FnOnce(&mut Headers),
    ) -> (u16, Value) {
        let path = self.sim.path(service);
        let bytes = serde_json::to_vec(body).unwrap();
        let ts = stamp();
        let to_sign =
            loket_snapqr::sign::transaction_string_to_sign("POST", &path, &self.token, &bytes, &ts);
        let mut headers: Headers = vec![
            ("Content-Type", "application/json".into()),
            ("Authorization", format!("Bearer {}", self.token)),
            ("X-TIMESTAMP", ts),
            (
                "X-SIGNATURE",
                loket_snapqr::sign::hmac_signature(SECRET, &to_sign),
            ),
            ("X-PARTNER-ID", CLIENT.into()),
            ("X-EXTERNAL-ID", external_id()),
            ("CHANNEL-ID", "95221".into()),
        ];
        edit(&mut headers);
        let reply = headers
            .into_iter()
            .fold(
                self.http.post(format!("{}{path}", self.url)),
                |request, (name, value)| request.header(name, value),
            )
            .body(bytes)
            .send()
            .await
            .unwrap();
        (reply.status().as_u16(), reply.json().await.unwrap())
    }

    /// A refund (80) of `amount` from `reference` under `refund_no`: the
    /// JSON reply.
    async fn refund(&self, reference: &str, refund_no: &str, amount: &str) -> Value {
        let body = json!({
            "originalPartnerReferenceNo": reference,
            "merchantId": MERCHANT,
            "partnerRefundNo": refund_no,
            "refundAmount": {"value": amount, "currency": "IDR"},
        });
        self.call("qr/qr-cpm-refund", &body).await.1
    }

    /// Pays `qr` under `reference` for `merchant`: the HTTP status and the
    /// responseCode.
    async fn pay(&self, reference: &str, qr: &str, merchant: &str, amount: &str) -> (u16, String) {
        let (status, reply) = self
            .call(
                "qr/qr-cpm-payment",
                &json!({
                    "partnerReferenceNo": reference,
                    "qrContent": qr,
                    "amount": {"value": amount, "currency": "IDR"},
                    "merchantId": merchant,
                    "expiryTime": stamp(),
                }),
            )
            .await;
        (status, reply["responseCode"].as_str().unwrap().to_string())
    }

    /// A query (61) of `reference`: the JSON reply.
    async fn query(&self, reference: &str) -> Value {
        let body = json!({"originalPartnerReferenceNo": reference, "merchantId": MERCHANT});
        self.call("qr/qr-cpm-query", &body).await.1
    }

    /// The ledger entry of `reference` once it is no longer pending (`01`).
    async fn settled(&self, reference: &str) -> PaymentEntry {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entry = self.sim.ledger_state(reference).unwrap();
            if entry.status != "01" {
                return entry;
            }
            assert!(Instant::now() < deadline, "still pending: {entry:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Spec §6 (404xx08 "Invalid Merchant", "fix onboarding config"): the
/// issuer pays only the merchant it onboarded, so a connector configured
/// with another merchantId fails here as it would in production. Neither
/// the payment nor the QR is taken.
#[tokio::test]
async fn a_payment_for_a_merchant_the_issuer_does_not_know_is_4046008() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    assert_eq!(
        h.pay("MERCHANT0001", &qr, "SOMEONE-ELSE", "10000.00").await,
        (404, "4046008".to_string())
    );
    assert!(h.sim.ledger_state("MERCHANT0001").is_none());
    assert_eq!(
        h.pay("MERCHANT0002", &qr, MERCHANT, "10000.00").await,
        (200, "2006000".to_string()),
        "the QR is still unpaid"
    );
}

/// Spec §6 (405xx00 "not supported", "fix path"): a path the issuer serves
/// nothing at, or a service's path with another method than POST, answers
/// the standard's JSON error naming the service the path names, not an
/// empty 404 a connector could only read as "unknown". Nothing is taken.
#[tokio::test]
async fn a_wrong_path_or_method_is_405xx00_not_supported() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    let body = json!({
        "partnerReferenceNo": "ROUTE0001",
        "qrContent": qr,
        "amount": {"value": "10000.00", "currency": "IDR"},
        "merchantId": MERCHANT,
        "expiryTime": stamp(),
    });
    let (status, reply) = h.call("qr/qr-cpm-paymnt", &body).await;
    assert_eq!(
        (status, &reply["responseCode"]),
        (405, &json!("4056000")),
        "{reply}"
    );
    assert!(h.sim.ledger_state("ROUTE0001").is_none());
    for (method, path, code) in [
        ("GET", h.sim.path("qr/qr-cpm-query"), "4056100"),
        (
            "POST",
            "/gateway/v1.0/qr/qr-cpm-refund".to_string(),
            "4058000",
        ),
    ] {
        let response = h
            .http
            .request(method.parse().unwrap(), format!("{}{path}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["responseCode"], code, "{method} {path}: {reply}");
    }
    assert_eq!(
        h.pay("ROUTE0001", &qr, MERCHANT, "10000.00").await,
        (200, "2006000".to_string()),
        "the QR is still unpaid"
    );
}

/// A payment sent again as it was (its X-EXTERNAL-ID included: a blind
/// retry) is refused `4096000`, and still counted: the counts exist to show
/// whether loket sent a request twice, and this is that case.
#[tokio::test]
async fn a_payment_replayed_with_its_external_id_is_refused_409_and_counted() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    let body = json!({
        "partnerReferenceNo": "REPLAY0001",
        "qrContent": qr,
        "amount": {"value": "10000.00", "currency": "IDR"},
        "merchantId": MERCHANT,
        "expiryTime": stamp(),
    });
    let external = external_id();
    let same_external = |headers: &mut Headers| {
        for (name, value) in headers.iter_mut() {
            if *name == "X-EXTERNAL-ID" {
                *value = external.clone();
            }
        }
    };
    let (status, reply) = h.call_with("qr/qr-cpm-payment", &body, same_external).await;
    assert_eq!(
        (status, &reply["responseCode"]),
        (200, &json!("2006000")),
        "{reply}"
    );
    let (status, reply) = h.call_with("qr/qr-cpm-payment", &body, same_external).await;
    assert_eq!(
        (status, &reply["responseCode"]),
        (409, &json!("4096000")),
        "{reply}"
    );
    assert_eq!(h.sim.requests_for("REPLAY0001").payments, 2);
}

/// Spec §6 (404xx13 "Invalid Amount"): a payment of nothing debits nothing
/// and is refused.
#[tokio::test]
async fn a_payment_of_zero_is_4046013() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    assert_eq!(
        h.pay("ZERO0001", &qr, MERCHANT, "0.00").await,
        (404, "4046013".to_string())
    );
    assert!(h.sim.ledger_state("ZERO0001").is_none());
}

/// A cancelled payment's partnerReferenceNo may be used again (spec §7,
/// ASSUMED): the first payment's settle timer must then neither settle nor
/// notify the new payment under it. Scenario 105's timer (→ `06`) fires
/// first, while the new scenario-101 payment is still pending; the new
/// payment must still end `00`, with its own notify only.
#[tokio::test]
async fn an_old_settle_timer_leaves_a_new_payment_under_a_reused_reference_alone() {
    let h = start(|settings| {
        settings.notify_delay_ms = 500;
        // Nobody listens: each notify is logged (its label is the status it
        // carries) and fails at once.
        settings.notify_url = Some("http://127.0.0.1:9/callback/snapqr".into());
        settings.notify_max_attempts = 1;
    })
    .await;
    let reference = "REUSED0001";
    let first_qr = h.sim.issue_qr(Some(105));
    assert_eq!(
        h.pay(reference, &first_qr, MERCHANT, "10000.00").await,
        (202, "2026000".to_string())
    );
    let (_, cancelled) = h
        .call(
            "qr/qr-cpm-cancel",
            &json!({"originalPartnerReferenceNo": reference, "merchantId": MERCHANT}),
        )
        .await;
    assert_eq!(cancelled["responseCode"], "2006200", "{cancelled}");
    let second_qr = h.sim.issue_qr(Some(101));
    assert_eq!(
        h.pay(reference, &second_qr, MERCHANT, "10000.00").await,
        (202, "2026000".to_string())
    );

    let entry = h.settled(reference).await;
    assert_eq!(
        (entry.qr_content.as_str(), entry.status.as_str()),
        (second_qr.as_str(), "00"),
        "{entry:?}"
    );
    // Give a stray notify of the old timer time to be logged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.sim.notifies_for(reference).labels, ["00"]);
}

/// Spec §7 (ASSUMED there): a partnerReferenceNo whose payment failed may
/// be used again, but only a payment the issuer records replaces the failed
/// one. A reuse refused before anything is done (here an unknown QR,
/// `4046011`; scenario 308's 429 and 203's 502 are refused at the same
/// point) leaves the failed payment where it was: a query keeps answering
/// `06`, not `4046101` (not found) for a payment refused a moment ago.
#[tokio::test]
async fn a_refused_reuse_of_a_failed_reference_keeps_the_failed_payment() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(Some(303));
    assert_eq!(
        h.pay("FAILEDREF0001", &qr, MERCHANT, "10000.00").await,
        (403, "4036014".to_string())
    );
    assert_eq!(
        h.query("FAILEDREF0001").await["latestTransactionStatus"],
        "06"
    );

    assert_eq!(
        h.pay(
            "FAILEDREF0001",
            "NOT-A-QR-THIS-ISSUER-MADE",
            MERCHANT,
            "10000.00"
        )
        .await,
        (404, "4046011".to_string())
    );
    let after = h.query("FAILEDREF0001").await;
    assert_eq!(
        (
            after["responseCode"].as_str(),
            after["latestTransactionStatus"].as_str()
        ),
        (Some("2006100"), Some("06")),
        "the failed payment's record vanished after a refused reuse: {after}"
    );
}

/// Spec §2.6 and §8.7: a cancel (62) voids a *same-day* payment; after the
/// window it answers `4056201` and the payment must be refunded (80). The
/// day is the WIB calendar day: a payment made at 23:59:59 WIB yesterday is
/// past the window however few seconds ago that was, and stays `00`.
#[tokio::test]
async fn a_payment_of_the_previous_wib_day_is_no_longer_cancelled_4056201() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    assert_eq!(
        h.pay("OVERNIGHT0001", &qr, MERCHANT, "10000.00").await,
        (200, "2006000".to_string())
    );
    let now = Utc::now().with_timezone(&loket_protocol::wib());
    let todays_midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(loket_protocol::wib())
        .unwrap();
    let to_one_second_before_midnight = now - todays_midnight + chrono::Duration::seconds(1);
    assert!(h
        .sim
        .age_payment("OVERNIGHT0001", to_one_second_before_midnight));

    let (status, reply) = h
        .call(
            "qr/qr-cpm-cancel",
            &json!({"originalPartnerReferenceNo": "OVERNIGHT0001", "merchantId": MERCHANT}),
        )
        .await;
    assert_eq!(
        (status, reply["responseCode"].as_str().unwrap()),
        (405, "4056201"),
        "{reply}"
    );
    assert_eq!(h.sim.ledger_state("OVERNIGHT0001").unwrap().status, "00");
}

/// Spec §7: "X-EXTERNAL-ID = one message … every retry uses a new value";
/// §4.3: the notify signature covers X-TIMESTAMP, which the receiver holds
/// to a window of minutes. So a notify retry is stamped, signed and
/// numbered when it is made: a retry that replayed the first attempt's
/// headers would arrive with a timestamp as old as the retry delay (stale
/// once issuers retry minutes later) and a reused message id.
#[tokio::test]
async fn notify_retries_are_stamped_signed_and_numbered_afresh() {
    /// What loket's receiver saw of one notify attempt.
    #[derive(Debug, Clone)]
    struct Attempt {
        received_at: DateTime<Utc>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    }
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let recorded = attempts.clone();
    let receiver = axum::Router::new().route(
        "/v1.0/qr/qr-cpm-notify",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let mut attempts = recorded.lock().unwrap();
                attempts.push(Attempt {
                    received_at: Utc::now(),
                    headers,
                    body,
                });
                // The receiver is down for the first attempt only.
                if attempts.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    axum::Json(json!({"responseCode": "2007900", "responseMessage": "Successful"}))
                        .into_response()
                }
            }
        }),
    );
    let base = loket_simulators::common::serve_stub(receiver)
        .await
        .unwrap();
    let h = start(|settings| {
        settings.notify_url = Some(format!("{base}/v1.0/qr/qr-cpm-notify"));
        settings.notify_delay_ms = 50;
        settings.notify_max_attempts = 2;
        settings.notify_retry_ms = 2_500;
    })
    .await;
    let qr = h.sim.issue_qr(Some(101));
    assert_eq!(
        h.pay("NOTIFYRETRY0001", &qr, MERCHANT, "10000.00").await,
        (202, "2026000".to_string())
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while attempts.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no notify retry arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let attempts = attempts.lock().unwrap().clone();
    let header =
        |attempt: &Attempt, name: &str| attempt.headers[name].to_str().unwrap().to_string();
    let stamp = |attempt: &Attempt| {
        DateTime::parse_from_rfc3339(&header(attempt, "X-TIMESTAMP"))
            .unwrap()
            .with_timezone(&Utc)
    };
    let (first, retry) = (&attempts[0], &attempts[1]);
    assert_ne!(
        header(first, "X-EXTERNAL-ID"),
        header(retry, "X-EXTERNAL-ID"),
        "the retry reused the first attempt's message id"
    );
    assert!(
        retry.received_at - stamp(retry) < chrono::Duration::seconds(2),
        "the retry's X-TIMESTAMP {} was already stale when it arrived at {}",
        header(retry, "X-TIMESTAMP"),
        retry.received_at
    );
    let issuer_key = loket_snapqr::sign::load_public_key(h.sim.issuer_public_key_pem()).unwrap();
    let verifies = |attempt: &Attempt| {
        loket_snapqr::sign::rsa_verify(
            &issuer_key,
            &loket_snapqr::sign::notify_string_to_sign(
                "POST",
                "/v1.0/qr/qr-cpm-notify",
                &attempt.body,
                &header(attempt, "X-TIMESTAMP"),
            ),
            &header(attempt, "X-SIGNATURE"),
        )
    };
    assert!(
        verifies(first) && verifies(retry),
        "each attempt's signature covers its own timestamp"
    );
}

/// Spec §6: `400xx02` is a missing mandatory field, `400xx01` one in an
/// invalid format. Every mandatory header of spec §3 answers the first when
/// it is left out and the second when it is there but malformed; a call
/// without a bearer token gets §6's own "token not found", `401xx03`.
#[tokio::test]
async fn a_missing_header_is_400ss02_and_a_malformed_one_400ss01() {
    let h = start(|_| {}).await;
    let query = json!({"originalPartnerReferenceNo": "HEADERS0001", "merchantId": MERCHANT});
    let answer = |reply: (u16, Value)| {
        (
            reply.0,
            reply.1["responseCode"].as_str().unwrap().to_string(),
            reply.1["responseMessage"].as_str().unwrap().to_string(),
        )
    };
    for name in [
        "Content-Type",
        "X-TIMESTAMP",
        "X-SIGNATURE",
        "X-PARTNER-ID",
        "X-EXTERNAL-ID",
        "CHANNEL-ID",
    ] {
        let reply = h
            .call_with("qr/qr-cpm-query", &query, |headers| {
                headers.retain(|(header, _)| *header != name)
            })
            .await;
        assert_eq!(
            answer(reply),
            (
                400,
                "4006102".to_string(),
                format!("Invalid Mandatory Field {name}")
            ),
            "without {name}"
        );
    }
    for (name, malformed) in [
        ("Content-Type", "text/plain"),
        ("X-TIMESTAMP", "23/12/2020 07:50:11"),
        ("CHANNEL-ID", "9522"),
        ("X-EXTERNAL-ID", "EXT-0001"),
    ] {
        let reply = h
            .call_with("qr/qr-cpm-query", &query, |headers| {
                for (header, value) in headers.iter_mut() {
                    if *header == name {
                        *value = malformed.to_string();
                    }
                }
            })
            .await;
        assert_eq!(
            answer(reply),
            (
                400,
                "4006101".to_string(),
                format!("Invalid Field Format {name}")
            ),
            "{name}: {malformed}"
        );
    }
    let without_token = h
        .call_with("qr/qr-cpm-query", &query, |headers| {
            headers.retain(|(header, _)| *header != "Authorization")
        })
        .await;
    assert_eq!(
        (without_token.0, &without_token.1["responseCode"]),
        (401, &json!("4016103"))
    );
    // A media type parameter leaves the call JSON: it reaches the ledger,
    // which does not know the reference.
    let with_charset = h
        .call_with("qr/qr-cpm-query", &query, |headers| {
            headers[0].1 = "application/json; charset=utf-8".into()
        })
        .await;
    assert_eq!(
        with_charset.1["responseCode"], "4046101",
        "{}",
        with_charset.1
    );

    // The token call's own headers (spec §3) are held to the same rule.
    let (private_pem, _) = loket_snapqr::sign::generate_key_pair();
    let key = loket_snapqr::sign::load_private_key(&private_pem).unwrap();
    let token_url = format!("{}{}", h.url, h.sim.path("access-token/b2b"));
    let token_reply = |content_type: Option<&'static str>, stamp: String| {
        let signed = loket_snapqr::b2b_token::signed_request(&key, CLIENT, &stamp);
        let request = signed
            .headers
            .into_iter()
            .fold(h.http.post(&token_url), |request, (name, value)| {
                request.header(name, value)
            });
        let request = match content_type {
            Some(content_type) => request.header("Content-Type", content_type),
            None => request,
        };
        async move {
            let reply: Value = request
                .body(signed.body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reply["responseCode"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(token_reply(None, stamp()).await, "4007302");
    assert_eq!(
        token_reply(Some("application/json"), "2020-12-23 07:50:11".into()).await,
        "4007301"
    );
}

/// Spec §5 gives each text field of a request its `S<n>` length, and an
/// amount its `Amt` form (`"10000.00"`, two decimals, with its currency):
/// a field beyond either is `400ss01` naming it, on every service, and
/// nothing is done. A field at its length is accepted.
#[tokio::test]
async fn request_fields_beyond_their_spec_length_or_form_are_400ss01() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    assert_eq!(
        h.pay("LENGTHS0001", &qr, MERCHANT, "10000.00").await,
        (200, "2006000".to_string())
    );
    let refund = |refund_no: String, reason: String, amount: &str| {
        json!({
            "originalPartnerReferenceNo": "LENGTHS0001",
            "merchantId": MERCHANT,
            "partnerRefundNo": refund_no,
            "refundAmount": {"value": amount, "currency": "IDR"},
            "reason": reason,
        })
    };
    let generate = |trx_date: &str| json!({"partnerReferenceNo": "LENGTHS0002", "merchantId": MERCHANT, "partnerTrxDate": trx_date});
    let cases = [
        (
            "qr/qr-cpm-refund",
            refund("R".repeat(65), "wrong item".into(), "1000.00"),
            "4008001",
            "partnerRefundNo",
        ),
        (
            "qr/qr-cpm-refund",
            refund("LENGTHS-R1".into(), "x".repeat(257), "1000.00"),
            "4008001",
            "reason",
        ),
        (
            "qr/qr-cpm-refund",
            refund("LENGTHS-R1".into(), "wrong item".into(), "1000"),
            "4008001",
            "refundAmount",
        ),
        (
            "qr/qr-cpm-cancel",
            json!({"originalPartnerReferenceNo": "LENGTHS0001", "reason": "x".repeat(257)}),
            "4006201",
            "reason",
        ),
        (
            "qr/qr-cpm-cancel",
            json!({"originalPartnerReferenceNo": "LENGTHS0001", "amount": {"value": "10000.0", "currency": "IDR"}}),
            "4006201",
            "amount",
        ),
        (
            "qr/qr-cpm-query",
            json!({"originalPartnerReferenceNo": "LENGTHS0001", "originalExternalId": "1".repeat(33)}),
            "4006101",
            "originalExternalId",
        ),
        (
            "qr/qr-cpm-query",
            json!({"originalReferenceNo": "S".repeat(65)}),
            "4006101",
            "originalReferenceNo",
        ),
        (
            "qr/qr-cpm-generate",
            generate("2020-12-23T07:50:11.000+07:00"),
            "4005901",
            "partnerTrxDate",
        ),
    ];
    for (service, body, code, field) in cases {
        let (status, reply) = h
            .call_with(service, &body, |headers| {
                headers.push(("Authorization-Customer", "Bearer customer".into()))
            })
            .await;
        assert_eq!(
            (
                status,
                reply["responseCode"].as_str(),
                reply["responseMessage"].as_str()
            ),
            (
                400,
                Some(code),
                Some(format!("Invalid Field Format {field}").as_str())
            ),
            "{service} {body}"
        );
    }
    let entry = h.sim.ledger_state("LENGTHS0001").unwrap();
    assert_eq!(
        (entry.status.as_str(), entry.refunded),
        ("00", 0),
        "{entry:?}"
    );

    // At their lengths, the same fields pass.
    let reply = h
        .call(
            "qr/qr-cpm-refund",
            &refund("R".repeat(64), "x".repeat(256), "1000.00"),
        )
        .await
        .1;
    assert_eq!(reply["responseCode"], "2008000", "{reply}");
    let (_, reply) = h
        .call_with(
            "qr/qr-cpm-generate",
            &generate("2020-12-23T07:50:11+07:00"),
            |headers| headers.push(("Authorization-Customer", "Bearer customer".into())),
        )
        .await;
    assert_eq!(reply["responseCode"], "2005900", "{reply}");
}

/// Spec §7: a partnerRefundNo sent again is answered with the refund it
/// made (`4098001`, ASSUMED there), not a new one: its `refundTime` (§5, M)
/// is the time of that refund, not of the re-send.
#[tokio::test]
async fn a_resent_refund_reports_the_original_refund_time() {
    let h = start(|_| {}).await;
    let qr = h.sim.issue_qr(None);
    assert_eq!(
        h.pay("RESENT0001", &qr, MERCHANT, "10000.00").await,
        (200, "2006000".to_string())
    );
    let first = h.refund("RESENT0001", "RESENT-R1", "4000.00").await;
    assert_eq!(first["responseCode"], "2008000", "{first}");
    // refundTime is written to the second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = h.refund("RESENT0001", "RESENT-R1", "4000.00").await;
    assert_eq!(again["responseCode"], "4098001", "{again}");
    assert_eq!(
        (&again["refundNo"], &again["refundTime"]),
        (&first["refundNo"], &first["refundTime"]),
        "the re-send reported another refund"
    );
    assert_eq!(h.sim.ledger_state("RESENT0001").unwrap().refunded, 4_000);
}

/// Spec §3: X-PARTNER-ID is the caller's client id. A mode-B notify (§4.3)
/// is a call the issuer makes as loket's client, under the client key loket
/// issued it (the one its token was granted for), so that is the id it
/// carries; in mode A the issuer holds no id of loket's and names loket's
/// own client id at the issuer (ASSUMED).
#[tokio::test]
async fn a_notify_names_the_callers_client_id_in_each_mode() {
    const ISSUER_AT_LOKET: &str = "issuer-at-loket";
    const NOTIFY_SECRET: &str = "notify-secret-0001";
    const GRANTED: &str = "granted-by-loket";
    for (mode, expected) in [
        (loket_snapqr::NotifyMode::Rsa, CLIENT),
        (loket_snapqr::NotifyMode::Hmac, ISSUER_AT_LOKET),
    ] {
        let notifies: Arc<Mutex<Vec<(HeaderMap, axum::body::Bytes)>>> = Arc::default();
        let recorded = notifies.clone();
        let receiver = axum::Router::new()
            .route(
                "/v1.0/access-token/b2b",
                axum::routing::post(|| async {
                    axum::Json(json!({
                        "responseCode": "2007300",
                        "responseMessage": "Successful",
                        "accessToken": GRANTED,
                        "tokenType": "Bearer",
                        "expiresIn": "900",
                    }))
                }),
            )
            .route(
                "/v1.0/qr/qr-cpm-notify",
                axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                    recorded.lock().unwrap().push((headers, body));
                    async {
                        axum::Json(
                            json!({"responseCode": "2007900", "responseMessage": "Successful"}),
                        )
                    }
                }),
            );
        let base = loket_simulators::common::serve_stub(receiver)
            .await
            .unwrap();
        let h = start(|settings| {
            settings.notify_url = Some(format!("{base}/v1.0/qr/qr-cpm-notify"));
            settings.notify_delay_ms = 50;
            settings.notify_mode = mode;
            settings.notify_client_key = ISSUER_AT_LOKET.into();
            settings.notify_client_secret = Secret::new(NOTIFY_SECRET);
        })
        .await;
        let qr = h.sim.issue_qr(Some(101));
        assert_eq!(
            h.pay("PARTNERID0001", &qr, MERCHANT, "10000.00").await,
            (202, "2026000".to_string())
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while notifies.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{mode:?}: no notify arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (headers, body) = notifies.lock().unwrap()[0].clone();
        let header = |name: &str| headers[name].to_str().unwrap().to_string();
        assert_eq!(header("X-PARTNER-ID"), expected, "{mode:?}");
        if mode == loket_snapqr::NotifyMode::Hmac {
            // Signed as a call to loket with loket's token and secret.
            let to_sign = loket_snapqr::sign::transaction_string_to_sign(
                "POST",
                "/v1.0/qr/qr-cpm-notify",
                GRANTED,
                &body,
                &header("X-TIMESTAMP"),
            );
            assert!(loket_snapqr::sign::verify_hmac(
                NOTIFY_SECRET,
                &to_sign,
                &header("X-SIGNATURE")
            ));
        }
    }
}
