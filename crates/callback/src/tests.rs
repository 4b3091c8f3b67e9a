use super::*;
use axum::body::Body;
use loket_connector::{CallbackError, ParsedCallback};
use loket_protocol::Outcome;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A provider whose callbacks are `ref=<r>;code=<c>` in the query or body;
/// `ref=` missing is malformed.
struct TestParser;

impl CallbackParser for TestParser {
    fn provider(&self) -> Provider {
        Provider::OkeBayar
    }

    fn parse(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        let text = match &request.query {
            Some(query) => query.clone(),
            None => String::from_utf8_lossy(&request.body).to_string(),
        };
        let field = |name: &str| {
            text.split([';', '&'])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        let reference =
            field("ref").ok_or_else(|| CallbackError::Malformed("ref is missing".into()))?;
        let code = field("code").unwrap_or_default();
        Ok(ParsedCallback {
            provider_reference: reference.clone(),
            provider_trace: "T1".into(),
            provider_code: code.clone(),
            serial_number: String::new(),
            claimed_outcome: if code == "000" {
                Outcome::Success
            } else {
                Outcome::Pending
            },
            verified: false,
            provider_amount: None,
            provider_amount_unreadable: None,
            raw_masked: text.replace("pin=1234", "pin=***"),
            dedupe_key: format!("{reference}:{code}"),
        })
    }

    fn acknowledge(&self, _request: &CallbackRequest, parsed: &ParsedCallback) -> CallbackReply {
        CallbackReply {
            status: 200,
            content_type: "text/plain",
            body: format!("OK {}", parsed.provider_reference),
        }
    }

    fn reject(&self, _request: &CallbackRequest, _error: &CallbackError) -> CallbackReply {
        CallbackReply {
            status: 400,
            content_type: "text/plain",
            body: "NO".into(),
        }
    }
}

#[derive(Default)]
struct MemorySink {
    fail: bool,
    published: Mutex<Vec<(String, String, bus::CallbackEvent)>>,
}

impl EventSink for MemorySink {
    fn publish(
        &self,
        subject: String,
        msg_id: String,
        _trace: TraceContext,
        event: bus::CallbackEvent,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.fail {
                return Err("stream unavailable".into());
            }
            self.published
                .lock()
                .unwrap()
                .push((subject, msg_id, event));
            Ok(())
        })
    }
}

fn settings() -> Settings {
    Settings {
        body_limit_bytes: 1024,
        ..Settings::default()
    }
}

fn app_with(settings: &Settings, sink: Arc<MemorySink>) -> Router {
    router(AppState::new(settings, vec![Arc::new(TestParser)], sink).unwrap())
}

fn from(ip: &str) -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40_000))
}

async fn send(app: Router, request: http::Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

use tower::ServiceExt as _;

#[tokio::test]
async fn an_accepted_callback_is_published_durably_before_the_acknowledgement() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    let mut request = http::Request::post("/callback/okebayar")
        .body(Body::from("ref=LKT1;code=000;pin=1234"))
        .unwrap();
    request.extensions_mut().insert(from("10.1.2.3"));
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "OK LKT1");
    let published = sink.published.lock().unwrap();
    assert_eq!(published.len(), 1);
    let (subject, msg_id, event) = &published[0];
    assert_eq!(subject, "loket.evt.okebayar.callback");
    assert_eq!(msg_id, "cb:okebayar:LKT1:000");
    assert_eq!(
        &event.event_id, msg_id,
        "the event id is the de-duplication id"
    );
    assert_eq!(event.provider, "okebayar");
    assert_eq!(event.provider_reference, "LKT1");
    assert_eq!(event.provider_code, "000");
    assert!(!event.verified);
    assert_eq!(
        event.claimed_outcome,
        loket_protocol::pb::Outcome::Success as i32
    );
    assert_eq!(event.source_ip, "10.1.2.3");
    assert_eq!(event.raw, "ref=LKT1;code=000;pin=***");
    assert!(event.received_at.is_some());
}

#[tokio::test]
async fn get_callbacks_use_the_query_string() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    let request = http::Request::get("/callback/okebayar?ref=LKT2&code=002")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(app, request).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK LKT2"));
    assert_eq!(sink.published.lock().unwrap()[0].2.provider_code, "002");
}

#[tokio::test]
async fn a_publish_failure_answers_503_so_the_provider_retries() {
    let sink = Arc::new(MemorySink {
        fail: true,
        ..MemorySink::default()
    });
    let app = app_with(&settings(), sink.clone());
    let request = http::Request::post("/callback/okebayar")
        .body(Body::from("ref=LKT1;code=000"))
        .unwrap();
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !body.contains("OK"),
        "never acknowledged before it is durable"
    );
}

#[tokio::test]
async fn a_malformed_callback_gets_the_providers_reject_answer_and_is_not_published() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    let request = http::Request::post("/callback/okebayar")
        .body(Body::from("<!DOCTYPE x [<!ENTITY a 'b'>]>"))
        .unwrap();
    let (status, body) = send(app, request).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "NO"));
    assert!(sink.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_providers_are_not_found() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    for path in ["/callback/nobody", "/callback/doku"] {
        let request = http::Request::post(path).body(Body::from("ref=1")).unwrap();
        assert_eq!(
            send(app.clone(), request).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_allow_list_refuses_other_sources_before_parsing() {
    let mut settings = settings();
    settings.allowed_ips.insert(
        "okebayar".into(),
        vec!["127.0.0.1".into(), "10.0.0.0/8".into()],
    );
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings, sink.clone());
    for (ip, expected) in [
        (Some("10.9.8.7"), StatusCode::OK),
        (Some("127.0.0.1"), StatusCode::OK),
        (Some("192.168.1.1"), StatusCode::FORBIDDEN),
        (None, StatusCode::FORBIDDEN),
    ] {
        let mut request = http::Request::post("/callback/okebayar")
            .body(Body::from("ref=A;code=000"))
            .unwrap();
        if let Some(ip) = ip {
            request.extensions_mut().insert(from(ip));
        }
        assert_eq!(send(app.clone(), request).await.0, expected, "{ip:?}");
    }
    assert_eq!(sink.published.lock().unwrap().len(), 2);
}

#[test]
fn bad_allow_list_entries_are_configuration_errors_naming_the_key() {
    let mut settings = settings();
    settings
        .allowed_ips
        .insert("okebayar".into(), vec!["10.0.0.0/40".into()]);
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("allowed_ips.okebayar"), "{error}");
    let mut settings = Settings::default();
    settings.allowed_ips.insert("nobody".into(), vec![]);
    assert!(settings
        .validate()
        .unwrap_err()
        .to_string()
        .contains("allowed_ips.nobody"));
}

/// Two keys naming one provider (a configured range under one spelling, an
/// empty list under another, as a base file and an override may) are a
/// configuration error naming both: neither may silently win, which could
/// open the provider to every source.
#[test]
fn two_allow_lists_for_one_provider_are_a_configuration_error() {
    let mut settings = Settings::default();
    settings
        .allowed_ips
        .insert("OkeBayar".into(), vec!["203.0.113.0/24".into()]);
    settings.allowed_ips.insert("okebayar".into(), vec![]);
    assert_eq!(
        settings.validate().unwrap_err().to_string(),
        "configuration error: allowed_ips.OkeBayar and allowed_ips.okebayar both name okebayar: \
         keep one list for it"
    );
}

#[tokio::test]
async fn a_10_mb_body_is_refused_with_413_before_it_is_read() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    let big = vec![b'a'; 10 * 1024 * 1024];
    let request = http::Request::post("/callback/okebayar")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    assert_eq!(send(app, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(sink.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_endless_chunked_body_is_refused_after_at_most_the_limit() {
    let sink = Arc::new(MemorySink::default());
    let app = app_with(&settings(), sink.clone());
    let polled = Arc::new(AtomicUsize::new(0));
    let counter = polled.clone();
    // No Content-Length, never ends.
    let endless = futures::stream::repeat_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 100]))
    });
    let request = http::Request::post("/callback/okebayar")
        .body(Body::from_stream(endless))
        .unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), send(app, request))
        .await
        .expect("refused promptly, not read forever");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // 1024-byte limit, 100-byte chunks: 11 chunks read, a little slack.
    assert!(
        polled.load(Ordering::SeqCst) <= 12,
        "read {} chunks",
        polled.load(Ordering::SeqCst)
    );
    assert!(sink.published.lock().unwrap().is_empty());
}

/// A body that stops arriving (a slow or stalled sender) is given up after
/// the request timeout, with the provider's own "retry later" answer (here
/// the plain one; SNAP's is 500 `5007901`), and nothing is published.
#[tokio::test]
async fn a_stalled_body_gets_the_providers_retry_later_answer_after_the_request_timeout() {
    let sink = Arc::new(MemorySink::default());
    let settings = Settings {
        request_timeout_ms: 300,
        ..settings()
    };
    let app = app_with(&settings, sink.clone());
    let first =
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ref=S1;code="))]);
    let stalled = futures::StreamExt::chain(first, futures::stream::pending());
    let request = http::Request::post("/callback/okebayar")
        .header(header::CONTENT_LENGTH, 100)
        .body(Body::from_stream(stalled))
        .unwrap();
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), send(app, request))
        .await
        .expect("answered, not held open");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable, retry later\n"
        )
    );
    assert!(sink.published.lock().unwrap().is_empty());
}

/// A real accept loop: its address, what it published, its stop, its task.
type RunningServer = (
    SocketAddr,
    Arc<MemorySink>,
    Shutdown,
    tokio::task::JoinHandle<()>,
);

/// Starts the real accept loop on a random port.
async fn start_server(limits: server::Limits) -> RunningServer {
    start_server_with(&settings(), limits).await
}

async fn start_server_with(settings: &Settings, limits: server::Limits) -> RunningServer {
    let sink = Arc::new(MemorySink::default());
    let state = AppState::new(settings, vec![Arc::new(TestParser)], sink.clone()).unwrap();
    let admit = state.source_filter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(server::serve(
        listener,
        router(state),
        limits,
        admit,
        shutdown.clone(),
    ));
    (addr, sink, shutdown, task)
}

#[tokio::test]
async fn a_source_no_allow_list_admits_takes_no_connection_slot() {
    let mut settings = settings();
    settings
        .allowed_ips
        .insert("okebayar".into(), vec!["127.0.0.2/32".into()]);
    let one_slot = server::Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(5),
        ..limits()
    };
    let (addr, sink, shutdown, task) = start_server_with(&settings, one_slot).await;

    // A host no provider calls from: closed at once, holding nothing.
    let mut stranger = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), stranger.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a stranger's connection stays open: {read:?}"
    );
    // The provider's own address still gets the one slot.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let answer = callback_over_the_wire(socket.connect(addr).await.unwrap(), "W2").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(sink.published.lock().unwrap()[0].2.source_ip, "127.0.0.2");
    drop(stranger);

    stop_server(shutdown, task).await;
}

/// A connection from `source` (a loopback address of its own).
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn one_source_cannot_take_the_connections_others_need() {
    // No allow-list for the provider (OkeBayar publishes no ranges): any
    // host is admitted, but only so many connections each.
    let per_source = server::Limits {
        max_connections: 8,
        max_connections_per_source: 2,
        header_read_timeout: Duration::from_secs(5),
        ..limits()
    };
    let (addr, sink, shutdown, task) = start_server_with(&settings(), per_source).await;
    // Idle connections from one host: two are held, the third is closed.
    let _held = [
        connect_from("127.0.0.3", addr).await,
        connect_from("127.0.0.3", addr).await,
    ];
    let mut third = connect_from("127.0.0.3", addr).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a third connection from one source stays open: {read:?}"
    );
    // Another source is served meanwhile.
    let answer = callback_over_the_wire(connect_from("127.0.0.2", addr).await, "P1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(sink.published.lock().unwrap().len(), 1);
    stop_server(shutdown, task).await;
}

/// RELIABILITY #19: half-open connections from many hosts fill every slot;
/// while they do, a new connection is closed at once (the provider retries),
/// and within the header read timeout each is reaped, after which normal
/// traffic is served again.
#[tokio::test]
async fn half_open_connections_from_many_sources_are_reaped_and_traffic_resumes() {
    let (addr, sink, shutdown, task) = start_server(server::Limits {
        max_connections: 8,
        max_connections_per_source: 2,
        ..limits()
    })
    .await;
    let mut half_open = Vec::new();
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        for _ in 0..2 {
            let mut stream = connect_from(source, addr).await;
            stream.write_all(b"POST /callback/okeb").await.unwrap();
            half_open.push(stream);
        }
    }
    // Every slot taken: a request now finds its connection closed.
    let refused = callback_over_the_wire(connect_from("127.0.0.2", addr).await, "R0").await;
    assert_eq!(refused, "", "served while every slot was held");
    // Each half-open connection is closed by the header read timeout.
    let started = Instant::now();
    for stream in &mut half_open {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(read.is_ok(), "a half-open connection was not reaped");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let answer = callback_over_the_wire(connect_from("127.0.0.2", addr).await, "R1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(sink.published.lock().unwrap().len(), 1, "only R1 was taken");
    stop_server(shutdown, task).await;
}

/// A complete OkeBayar GET callback about `reference` on `stream`, and the
/// whole answer.
async fn callback_over_the_wire(mut stream: tokio::net::TcpStream, reference: &str) -> String {
    let request = format!(
        "GET /callback/okebayar?ref={reference}&code=000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_all(&mut stream).await
}

async fn stop_server(shutdown: Shutdown, task: tokio::task::JoinHandle<()>) {
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

fn limits() -> server::Limits {
    server::Limits {
        header_read_timeout: Duration::from_millis(300),
        stalled_write_timeout: Duration::from_millis(300),
        max_connections: 8,
        max_connections_per_source: 8,
        max_header_bytes: 16 * 1024,
        drain_grace: Duration::from_secs(2),
    }
}

async fn read_all(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn over_the_wire_callbacks_carry_the_peer_address_and_half_open_clients_are_reaped() {
    let (addr, sink, shutdown, task) = start_server(limits()).await;

    // A normal request over TCP.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = callback_over_the_wire(stream, "W1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(sink.published.lock().unwrap()[0].2.source_ip, "127.0.0.1");

    // A slow client: half a request line, then silence. The header read
    // timeout closes it.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /callback/okeb").await.unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was not reaped");
    assert!(started.elapsed() < Duration::from_secs(3));

    // An endless chunked body over the wire: 413, memory bounded.
    let mut chunked = tokio::net::TcpStream::connect(addr).await.unwrap();
    chunked
        .write_all(
            b"POST /callback/okebayar HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 512, "y".repeat(512));
        for _ in 0..100_000 {
            if chunked.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            let mut peek = [0u8; 64];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), chunked.read(&mut peek)).await
            {
                if n > 0 {
                    return String::from_utf8_lossy(&peek[..n]).to_string();
                }
            }
        }
        String::new()
    });
    let answer = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    stop_server(shutdown, task).await;
}

/// The production registry, with OkeBayar's real parser: an unsigned GET
/// callback becomes an unverified event; hostile XML is refused unpublished.
#[tokio::test]
async fn the_okebayar_parser_is_wired_in() {
    let sink = Arc::new(MemorySink::default());
    let app = router(
        AppState::new(
            &Settings::default(),
            parsers(&Settings::default()).unwrap(),
            sink.clone(),
        )
        .unwrap(),
    );
    let request = http::Request::get(
        "/callback/okebayar?referencecode=LKT77&status=000&tracecode=1234567890123456&serialnumber=SN77",
    )
    .body(Body::empty())
    .unwrap();
    let (status, body) = send(app.clone(), request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("LKT77"), "{body}");
    {
        let published = sink.published.lock().unwrap();
        assert_eq!(published.len(), 1);
        let (_, msg_id, event) = &published[0];
        assert!(msg_id.starts_with("cb:okebayar:"), "{msg_id}");
        assert!(!event.verified, "OkeBayar callbacks are unsigned");
        assert_eq!(event.provider_reference, "LKT77");
        assert_eq!(event.serial_number, "SN77");
    }
    // The external entity names a file holding a canary: were it ever
    // expanded, the canary would show in the reply or an event.
    let canary = "XXE-CANARY-8830";
    let file = std::env::temp_dir().join(format!("loket-xxe-receiver-{}", std::process::id()));
    std::fs::write(&file, canary).unwrap();
    let hostile = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file://{}\">]>\
         <r><referencecode>&x;</referencecode><status>000</status></r>",
        file.display()
    );
    let request = http::Request::post("/callback/okebayar")
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from(hostile))
        .unwrap();
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.contains(canary), "{body}");
    assert_eq!(
        sink.published.lock().unwrap().len(),
        1,
        "the hostile callback was not published"
    );
    std::fs::remove_file(&file).unwrap();
}

/// Guards against our OkeBayar PIN reaching the bus (and so the event log)
/// when a callback echoes it outside the fields the parser masks by name:
/// the receiver is given the connector's `okebayar.userid` and
/// `okebayar.userpin`, and the PIN in `info`, alone and glued to the userid
/// (a numeric PIN glued to the userid's digits is not found alone), is
/// masked in a GET, an XML and a JSON callback.
#[tokio::test]
async fn the_okebayar_pin_a_callback_echoes_is_not_published() {
    for (userid, pin) in [("loket-test", "CANARY-PIN-7731"), ("pcu00001", "80461739")] {
        let settings = Settings {
            okebayar: loket_okebayar::callback::CallbackSettings {
                userid: userid.into(),
                userpin: loket_runtime::Secret::new(pin),
            },
            ..Settings::default()
        };
        let sink = Arc::new(MemorySink::default());
        let app =
            router(AppState::new(&settings, parsers(&settings).unwrap(), sink.clone()).unwrap());
        let info = format!("PIN {pin}, signed {userid}{pin}");
        let requests = [
            http::Request::get(format!(
                "/callback/okebayar?referencecode=LKT88&status=000&info={}",
                info.replace(' ', "+")
            ))
            .body(Body::empty())
            .unwrap(),
            http::Request::post("/callback/okebayar")
                .header(header::CONTENT_TYPE, "application/xml")
                .body(Body::from(format!(
                    "<transaction-status><referencecode>LKT88</referencecode>\
                     <status>002</status><info>{info}</info></transaction-status>"
                )))
                .unwrap(),
            http::Request::post("/callback/okebayar")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    r#"{{"referencecode":"LKT88","status":"204","info":"{info}"}}"#
                )))
                .unwrap(),
        ];
        for request in requests {
            let (status, body) = send(app.clone(), request).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(!body.contains(pin), "{body}");
        }
        let published = sink.published.lock().unwrap();
        assert_eq!(published.len(), 3);
        for (_, msg_id, event) in published.iter() {
            assert!(event.raw.contains("***"), "{}", event.raw);
            assert!(!event.raw.contains(pin), "{}", event.raw);
            assert!(!format!("{msg_id} {event:?}").contains(pin), "{event:?}");
        }
    }
}

/// The receiver's OkeBayar account is both keys or neither: one without the
/// other is a configuration error naming the missing key, never the PIN.
#[test]
fn an_okebayar_pin_without_its_userid_or_the_reverse_is_a_configuration_error() {
    use loket_okebayar::callback::CallbackSettings;
    let pin = "CANARY-PIN-7731";
    for (okebayar, missing) in [
        (
            CallbackSettings {
                userid: " ".into(),
                userpin: loket_runtime::Secret::new(pin),
            },
            "okebayar.userid",
        ),
        (
            CallbackSettings {
                userid: "loket-test".into(),
                userpin: loket_runtime::Secret::default(),
            },
            "okebayar.userpin",
        ),
    ] {
        let settings = Settings {
            okebayar,
            ..Settings::default()
        };
        for error in [
            settings.validate().unwrap_err(),
            parsers(&settings).err().unwrap(),
        ] {
            let message = error.to_string();
            assert!(message.contains(missing), "{message}");
            assert!(!message.contains(pin), "{message}");
        }
    }
    // Neither (the receiver warns at start), or both: fine.
    for okebayar in [
        CallbackSettings::default(),
        CallbackSettings {
            userid: "loket-test".into(),
            userpin: loket_runtime::Secret::new(pin),
        },
    ] {
        let settings = Settings {
            okebayar,
            ..Settings::default()
        };
        settings.validate().unwrap();
        parsers(&settings).unwrap();
    }
}

/// SNAP notify mode B over HTTP: the issuer gets a token from our
/// `/v1.0/access-token/b2b` (signed with its RSA key), then its notify signed
/// with that token and our secret is accepted and published verified; a
/// notify with a token we never granted is refused and not published. In
/// mode A the token endpoint does not exist.
#[tokio::test]
async fn snap_mode_b_issuers_get_a_token_from_us_and_sign_notifies_with_it() {
    use loket_snapqr::{sign, NotifyMode};
    let (issuer_pem, issuer_public) = sign::generate_key_pair();
    let issuer = sign::load_private_key(&issuer_pem).unwrap();
    let settings = Settings {
        snapqr: loket_snapqr::NotifySettings {
            mode: NotifyMode::Hmac,
            issuer_public_key: loket_runtime::Secret::new(issuer_public.clone()),
            client_secret: loket_runtime::Secret::new("issued-secret"),
            issuer_client_key: "ISSUER-1".into(),
            merchant_id: "M1".into(),
            ..loket_snapqr::NotifySettings::default()
        },
        ..Settings::default()
    };
    let sink = Arc::new(MemorySink::default());
    let app = router(AppState::new(&settings, parsers(&settings).unwrap(), sink.clone()).unwrap());
    let stamp = loket_protocol::wib::timestamp(chrono::Utc::now());
    let token_request = |signed: loket_snapqr::b2b_token::SignedRequest| {
        let mut request = http::Request::post("/v1.0/access-token/b2b")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in &signed.headers {
            request = request.header(*name, value);
        }
        request.body(Body::from(signed.body)).unwrap()
    };
    let signed_by_issuer = || loket_snapqr::b2b_token::signed_request(&issuer, "ISSUER-1", &stamp);
    let response = app
        .clone()
        .oneshot(token_request(signed_by_issuer()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("X-TIMESTAMP"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let granted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(granted["responseCode"], "2007300");
    let token = granted["accessToken"].as_str().unwrap().to_string();

    let (stranger_pem, _) = sign::generate_key_pair();
    let stranger = sign::load_private_key(&stranger_pem).unwrap();
    let signed_by_stranger = loket_snapqr::b2b_token::signed_request(&stranger, "ISSUER-1", &stamp);
    let (status, body) = send(app.clone(), token_request(signed_by_stranger)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("4017300") && !body.contains("accessToken"),
        "{body}"
    );

    let notify_body = r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{"value":"10000.00","currency":"IDR"},"latestTransactionStatus":"00"}"#;
    let path = "/v1.0/qr/qr-cpm-notify";
    let notify = |token: &str| {
        let mut request = http::Request::post(path);
        for (name, value) in loket_snapqr::callback::sign_notify_hmac(
            "issued-secret",
            token,
            path,
            notify_body.as_bytes(),
            &stamp,
        ) {
            request = request.header(name, value);
        }
        request.body(Body::from(notify_body)).unwrap()
    };
    let (status, body) = send(app.clone(), notify("made-up-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(sink.published.lock().unwrap().is_empty());
    let (status, body) = send(app, notify(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("2007900"), "{body}");
    {
        let published = sink.published.lock().unwrap();
        assert_eq!(published.len(), 1);
        assert!(published[0].2.verified);
    }

    let mode_a = Settings {
        snapqr: loket_snapqr::NotifySettings {
            issuer_public_key: loket_runtime::Secret::new(issuer_public),
            merchant_id: "M1".into(),
            ..loket_snapqr::NotifySettings::default()
        },
        ..Settings::default()
    };
    let app = router(
        AppState::new(
            &mode_a,
            parsers(&mode_a).unwrap(),
            Arc::new(MemorySink::default()),
        )
        .unwrap(),
    );
    let (status, _) = send(app, token_request(signed_by_issuer())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A refusal the receiver decides on its own (source, size, not durable)
/// reaches a SNAP issuer in SNAP's JSON form with `X-TIMESTAMP`, never as
/// plain text; nothing refused is published.
#[tokio::test]
async fn snap_issuers_get_the_receivers_refusals_in_snap_form() {
    use loket_snapqr::sign;
    let (issuer_pem, issuer_public) = sign::generate_key_pair();
    let issuer = sign::load_private_key(&issuer_pem).unwrap();
    let mut settings = Settings {
        body_limit_bytes: 1024,
        snapqr: loket_snapqr::NotifySettings {
            issuer_public_key: loket_runtime::Secret::new(issuer_public),
            merchant_id: "M1".into(),
            ..loket_snapqr::NotifySettings::default()
        },
        ..Settings::default()
    };
    settings
        .allowed_ips
        .insert("snapqr".into(), vec!["10.0.0.0/8".into()]);
    let app = |fail: bool| {
        let sink = Arc::new(MemorySink {
            fail,
            ..MemorySink::default()
        });
        let state = AppState::new(&settings, parsers(&settings).unwrap(), sink.clone()).unwrap();
        (router(state), sink)
    };
    let path = "/v1.0/qr/qr-cpm-notify";
    let stamp = loket_protocol::wib::timestamp(chrono::Utc::now());
    let notify = |body: String, source: &str| {
        let mut request = http::Request::post(path);
        for (name, value) in
            loket_snapqr::callback::sign_notify_rsa(&issuer, path, body.as_bytes(), &stamp)
        {
            request = request.header(name, value);
        }
        let mut request = request.body(Body::from(body)).unwrap();
        request.extensions_mut().insert(from(source));
        request
    };
    let good = r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{"value":"10000.00","currency":"IDR"},"latestTransactionStatus":"00"}"#.to_string();
    let padded = format!(
        r#"{{"additionalInfo":"{}","latestTransactionStatus":"00"}}"#,
        "x".repeat(2048)
    );
    for (fail, body, source, status, code) in [
        (
            false,
            good.clone(),
            "192.168.1.1",
            StatusCode::UNAUTHORIZED,
            "4017900",
        ),
        (
            false,
            padded,
            "10.1.2.3",
            StatusCode::BAD_REQUEST,
            "4007900",
        ),
        (
            true,
            good.clone(),
            "10.1.2.3",
            StatusCode::INTERNAL_SERVER_ERROR,
            "5007901",
        ),
        (false, good, "10.1.2.3", StatusCode::OK, "2007900"),
    ] {
        let (app, sink) = app(fail);
        let response = app.oneshot(notify(body, source)).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json",
            "{code}"
        );
        assert!(response.headers().contains_key("X-TIMESTAMP"), "{code}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["responseCode"], code, "{answer}");
        assert!(answer["responseMessage"].is_string(), "{answer}");
        let published = sink.published.lock().unwrap().len();
        assert_eq!(published, usize::from(code == "2007900"), "{code}");
    }
}
