//! loketctl against an in-process fake of the `Loket` gRPC service: the API
//! key travels as `x-api-key`, `list --all` follows page tokens, `watch`
//! prints every update, online and offline `explain` agree, errors reach the
//! terminal as `error: CODE: message` with a non-zero exit, and the
//! benchmark counts what it drives. The real ingress is exercised by the
//! workspace's end-to-end tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser as _;
use loket_cli::cli::{Cli, Command};
use loket_cli::{bench, client, commands};
use loket_protocol::catalogue;
use loket_protocol::pb::loket_server::{Loket, LoketServer};
use loket_protocol::pb::{self};
use loket_protocol::Provider;
use loket_runtime::Secret;
use tonic::{Request, Response, Status};

const KEY: &str = "lk_test_key";
/// A purchase the fake takes and never answers.
const SILENT_REF: &str = "SILENT";
/// A purchase the fake takes and then fails with INTERNAL, as a server
/// failing after it stored the transaction does.
const FAILING_REF: &str = "FAILING";
/// A provider's message that would retitle the terminal, clear the screen
/// and reverse the text after it, were it printed raw.
const HOSTILE_MESSAGE: &str = "Gagal\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}000 sukses";

#[derive(Default)]
struct Fake {
    keys_seen: Mutex<Vec<Option<String>>>,
    purchases: AtomicU64,
}

impl Fake {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let key = request
            .metadata()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.keys_seen.lock().unwrap().push(key.clone());
        if key.as_deref() == Some(KEY) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or unknown API key"))
        }
    }
}

fn transaction(id: &str, status: pb::TransactionStatus) -> pb::Transaction {
    pb::Transaction {
        id: id.into(),
        client_ref: format!("ref-{id}"),
        kind: pb::TransactionKind::PrepaidPurchase as i32,
        status: status as i32,
        product_code: "PULSA10".into(),
        provider: "okebayar".into(),
        account: "081200000001".into(),
        amount: Some(pb::Money {
            minor: 11_000,
            currency: "IDR".into(),
        }),
        provider_code: "000".into(),
        serial_number: "SN123".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Loket for Fake {
    async fn qr_pay(
        &self,
        request: Request<pb::QrPayRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        Ok(Response::new(pb::Transaction {
            id: "qr-1".into(),
            client_ref: r.client_ref,
            kind: pb::TransactionKind::QrPayment as i32,
            status: pb::TransactionStatus::Success as i32,
            product_code: if r.product_code.is_empty() {
                "QRCPM".into()
            } else {
                r.product_code
            },
            provider: "snapqr".into(),
            amount: r.amount,
            provider_code: "2006000".into(),
            ..Default::default()
        }))
    }

    async fn qr_query(
        &self,
        _: Request<pb::QrQueryRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn qr_cancel(
        &self,
        _: Request<pb::QrCancelRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn qr_refund(
        &self,
        request: Request<pb::QrRefundRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let amount = r.amount.as_ref().map_or(0, |m| m.minor);
        if amount > 10_000 {
            return Err(Status::failed_precondition(format!(
                "refund of IDR {amount} exceeds the refundable IDR 10000 of QR payment {}",
                r.transaction_id
            )));
        }
        Ok(Response::new(pb::Transaction {
            id: "rf-1".into(),
            client_ref: r.client_ref,
            kind: pb::TransactionKind::QrRefund as i32,
            status: pb::TransactionStatus::Pending as i32,
            product_code: "QRCPM".into(),
            provider: "snapqr".into(),
            amount: r.amount,
            original_id: r.transaction_id,
            ..Default::default()
        }))
    }

    async fn pay_in(
        &self,
        request: Request<pb::PayInRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        if r.method == "W_OVO" && r.payer.as_ref().is_none_or(|p| p.phone.is_empty()) {
            return Err(Status::invalid_argument(
                "payer.phone: required for method W_OVO",
            ));
        }
        Ok(Response::new(pb::Transaction {
            id: "in-1".into(),
            client_ref: r.client_ref,
            kind: pb::TransactionKind::PayIn as i32,
            status: pb::TransactionStatus::Pending as i32,
            product_code: "PAYIN".into(),
            provider: "smilepayz".into(),
            amount: r.amount,
            method: r.method.clone(),
            payment: Some(pb::PaymentInstructions {
                method: r.method,
                qr_string: "00020101021226670016ID.CO.QRIS.WWW".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1_738_300_000 + i64::from(r.expiry_seconds),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn pay_out(
        &self,
        _: Request<pb::PayOutRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn purchase(
        &self,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        if r.account.chars().any(|c| !c.is_ascii_digit()) {
            return Err(Status::invalid_argument("account: must be digits"));
        }
        if r.client_ref == SILENT_REF {
            // Takes the purchase and never answers.
            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
        }
        if r.client_ref == FAILING_REF {
            return Err(Status::internal("internal error"));
        }
        self.purchases.fetch_add(1, Ordering::Relaxed);
        let mut t = transaction("t-1", pb::TransactionStatus::Success);
        t.client_ref = r.client_ref;
        Ok(Response::new(t))
    }

    async fn inquire(
        &self,
        _: Request<pb::InquireRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("inquire"))
    }

    async fn pay_bill(
        &self,
        _: Request<pb::PayBillRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("pay"))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        self.check(&request)?;
        Ok(Response::new(pb::Balance {
            provider: request.into_inner().provider,
            balance: Some(pb::Money {
                minor: 1_234_567,
                currency: "IDR".into(),
            }),
            as_of: None,
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        self.check(&request)?;
        match request.into_inner().key {
            Some(pb::get_transaction_request::Key::ClientRef(r)) if r == "ref-t-9" => Ok(
                Response::new(transaction("t-9", pb::TransactionStatus::Pending)),
            ),
            Some(pb::get_transaction_request::Key::ClientRef(r)) if r == "ref-hostile" => {
                let mut t = transaction("t-h", pb::TransactionStatus::Failed);
                t.provider_message = HOSTILE_MESSAGE.into();
                Ok(Response::new(t))
            }
            _ => Err(Status::not_found("transaction")),
        }
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        self.check(&request)?;
        let (ids, next) = match request.into_inner().page_token.as_str() {
            "" => (vec!["a", "b"], "p2"),
            "p2" => (vec!["c", "d"], "p3"),
            "p3" => (vec!["e"], ""),
            other => return Err(Status::invalid_argument(format!("page_token: bad {other}"))),
        };
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: ids
                .into_iter()
                .map(|id| transaction(id, pb::TransactionStatus::Success))
                .collect(),
            next_page_token: next.into(),
        }))
    }

    type WatchTransactionsStream =
        tonic::codegen::tokio_stream::Iter<std::vec::IntoIter<Result<pb::Transaction, Status>>>;

    async fn watch_transactions(
        &self,
        request: Request<pb::WatchTransactionsRequest>,
    ) -> Result<Response<Self::WatchTransactionsStream>, Status> {
        self.check(&request)?;
        let updates = vec![
            Ok(transaction("w-1", pb::TransactionStatus::Pending)),
            Ok(transaction("w-1", pb::TransactionStatus::Success)),
        ];
        Ok(Response::new(tonic::codegen::tokio_stream::iter(updates)))
    }

    async fn explain_code(
        &self,
        request: Request<pb::ExplainCodeRequest>,
    ) -> Result<Response<pb::CodeExplanation>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let provider =
            Provider::parse(&r.provider).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let operation = if r.operation.is_empty() {
            None
        } else {
            Some(
                r.operation
                    .parse()
                    .map_err(|e: catalogue::UnknownOperation| {
                        Status::invalid_argument(e.to_string())
                    })?,
            )
        };
        let e = catalogue::explain(provider, &r.code, operation)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::CodeExplanation::from(&e)))
    }

    async fn list_codes(
        &self,
        request: Request<pb::ListCodesRequest>,
    ) -> Result<Response<pb::ListCodesResponse>, Status> {
        self.check(&request)?;
        let provider = Provider::parse(&request.into_inner().provider)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::ListCodesResponse {
            codes: catalogue::codes(provider)
                .iter()
                .map(pb::CodeExplanation::from)
                .collect(),
        }))
    }
}

async fn serve() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = incoming.local_addr().expect("addr");
    let service = LoketServer::from_arc(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .expect("serve");
    });
    (format!("http://{addr}"), fake)
}

fn parse(args: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("loketctl").chain(args.iter().copied()))
        .expect("valid")
        .command
}

#[tokio::test]
async fn api_key_is_sent_and_errors_keep_their_code() {
    let (addr, fake) = serve().await;
    let key = Secret::new(KEY);
    let mut client = client::connect(&addr, Some(&key)).await.expect("connect");
    let Command::Purchase(args) = parse(&[
        "purchase",
        "--ref",
        "R1",
        "--product",
        "PULSA10",
        "--account",
        "0812",
    ]) else {
        panic!()
    };
    let view = commands::purchase(&mut client, &args)
        .await
        .expect("purchase");
    assert_eq!(view.client_ref, "R1");
    assert_eq!(view.status, "success");
    assert_eq!(
        fake.keys_seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some(KEY)
    );

    let Command::Purchase(args) = parse(&[
        "purchase",
        "--ref",
        "R2",
        "--product",
        "PULSA10",
        "--account",
        "08x",
    ]) else {
        panic!()
    };
    let error = commands::purchase(&mut client, &args)
        .await
        .expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "INVALID_ARGUMENT: account: must be digits"
    );

    let mut anonymous = client::connect(&addr, None).await.expect("connect");
    let Command::Balance(args) = parse(&["balance", "okebayar"]) else {
        panic!()
    };
    let error = commands::balance(&mut anonymous, &args)
        .await
        .expect_err("no key");
    assert!(
        error.to_string().starts_with("UNAUTHENTICATED: "),
        "{error}"
    );
    let view = commands::balance(&mut client, &args)
        .await
        .expect("balance");
    assert_eq!(view.balance.expect("money").to_string(), "IDR 1,234,567");
}

#[tokio::test]
async fn list_all_follows_every_page_and_get_by_ref() {
    let (addr, _fake) = serve().await;
    let mut client = client::connect(&addr, Some(&Secret::new(KEY)))
        .await
        .expect("connect");
    let Command::List(args) = parse(&["list", "--all", "--limit", "2"]) else {
        panic!()
    };
    let all = commands::list(&mut client, &args).await.expect("list");
    let ids: Vec<&str> = all.transactions.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(all.next_page_token, None);

    let Command::List(args) = parse(&["list"]) else {
        panic!()
    };
    let page = commands::list(&mut client, &args).await.expect("one page");
    assert_eq!(page.transactions.len(), 2);
    assert_eq!(page.next_page_token.as_deref(), Some("p2"));

    let Command::Get(args) = parse(&["get", "--ref", "ref-t-9"]) else {
        panic!()
    };
    assert_eq!(
        commands::get(&mut client, &args).await.expect("get").id,
        "t-9"
    );
    let Command::Get(args) = parse(&["get", "nope"]) else {
        panic!()
    };
    assert!(commands::get(&mut client, &args)
        .await
        .unwrap_err()
        .to_string()
        .starts_with("NOT_FOUND"));
}

#[tokio::test]
async fn online_explain_and_codes_match_offline() {
    let (addr, _fake) = serve().await;
    let mut client = client::connect(&addr, Some(&Secret::new(KEY)))
        .await
        .expect("connect");
    for args in [
        vec!["explain", "okebayar", "208", "--operation", "purchase"],
        vec!["explain", "4046018"],
        vec!["explain", "doku", "5586"],
        vec!["explain", "okebayar", "999"],
    ] {
        let Command::Explain(args) = parse(&args) else {
            panic!()
        };
        let query = commands::explain_query(&args).expect("query");
        let online = commands::explain_online(&mut client, &query)
            .await
            .expect("online");
        let offline = commands::explain_offline(&query).expect("offline");
        assert_eq!(online, offline, "{query:?}");
    }
    let Command::Codes(args) = parse(&["codes", "smilepayz"]) else {
        panic!()
    };
    let online = commands::codes_online(&mut client, &args)
        .await
        .expect("online");
    let offline = commands::codes_offline(&args);
    assert_eq!(online, offline);
    assert!(!online.codes.is_empty());
}

#[tokio::test]
async fn watch_streams_every_update() {
    let (addr, _fake) = serve().await;
    let mut client = client::connect(&addr, Some(&Secret::new(KEY)))
        .await
        .expect("connect");
    let mut stream = commands::watch(&mut client, Some("w-1".into()))
        .await
        .expect("watch");
    let mut statuses = Vec::new();
    while let Some(t) = stream.message().await.expect("item") {
        statuses.push(loket_cli::output::status_name(t.status));
    }
    assert_eq!(statuses, ["pending", "success"]);
}

#[tokio::test]
async fn bench_drives_unique_purchases_and_reports() {
    let (addr, fake) = serve().await;
    let Command::Bench(args) = parse(&[
        "bench",
        "--concurrency",
        "4",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--connections",
        "2",
    ]) else {
        panic!()
    };
    let report = bench::run(
        &addr,
        Some(&Secret::new(KEY)),
        &args,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("bench");
    assert!(report.success > 0, "{report:?}");
    assert_eq!(report.completed, report.success);
    assert_eq!(report.calls, report.success);
    assert!(report.errors.is_empty());
    assert!(report.latency_us.p50.is_some() && report.latency_us.p999 >= report.latency_us.p50);
    assert!(report.elapsed_ms >= 300);
    assert!(report.completed_per_second > 0.0);
    // Warm-up and probe calls are driven but not counted.
    assert!(fake.purchases.load(Ordering::Relaxed) > report.calls);
    // Our own test process is not named loket*, so the CPU table may be
    // empty here; the parsing is unit-tested.
}

#[tokio::test]
async fn bench_refuses_to_start_when_the_first_purchase_fails() {
    let (addr, _fake) = serve().await;
    let Command::Bench(args) = parse(&["bench", "--duration", "1s", "--account", "bad"]) else {
        panic!()
    };
    let error = bench::run(
        &addr,
        Some(&Secret::new(KEY)),
        &args,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect_err("setup error");
    assert_eq!(
        error.to_string(),
        "INVALID_ARGUMENT: account: must be digits"
    );
}

/// The benchmark makes real purchases: an ingress on another machine is
/// refused before anything is sent, naming the flag that allows it (a
/// TEST-NET address, which nothing would answer, so a connection attempt
/// would show as a connect error instead).
#[tokio::test]
async fn bench_refuses_an_ingress_on_another_machine_unless_allowed() {
    let Command::Bench(args) = parse(&["bench", "--duration", "1s"]) else {
        panic!()
    };
    let error = bench::run(
        "http://192.0.2.1:50051",
        Some(&Secret::new(KEY)),
        &args,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, loket_cli::CliError::Usage(_)), "{error:?}");
    assert!(
        error.to_string().contains("--allow-remote-ingress"),
        "{error}"
    );
    let Command::Bench(allowed) = parse(&["bench", "--duration", "1s", "--allow-remote-ingress"])
    else {
        panic!()
    };
    // Allowed, it goes on to connect. 0.0.0.0 is not a loopback address, so
    // it needs the flag; Linux connects it here, where nothing listens on
    // port 1, so the refusal comes at once.
    let error = bench::run(
        "http://0.0.0.0:1",
        Some(&Secret::new(KEY)),
        &allowed,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect_err("nothing listens there");
    assert!(
        matches!(error, loket_cli::CliError::Connect { .. }),
        "{error:?}"
    );
}

/// Runs the `loketctl` binary against `addr` with the test's API key.
async fn loketctl(addr: &str, args: &[&str]) -> std::process::Output {
    let addr = addr.to_string();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loketctl"))
            .args(&args)
            .env("LOKET_ADDR", addr)
            .env("LOKET_API_KEY", KEY)
            .env_remove("LOKET_DATABASE_URL")
            .output()
            .expect("run loketctl")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn binary_prints_code_and_exits_non_zero() {
    let (addr, _fake) = serve().await;
    let refused = [
        "purchase",
        "--ref",
        "R",
        "--product",
        "PULSA10",
        "--account",
        "08x",
    ];
    let out = loketctl(&addr, &refused).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: INVALID_ARGUMENT: account: must be digits"
    );
    // A script that asked for JSON gets its error as JSON too.
    let out = loketctl(&addr, &[&["--json"][..], &refused].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(error["error"]["details"], "account: must be digits");
    assert_eq!(error["error"]["exit_code"], 1);
    assert_eq!(
        error["error"]["message"],
        "INVALID_ARGUMENT: account: must be digits"
    );

    let out = loketctl(
        &addr,
        &[
            "--json",
            "purchase",
            "--ref",
            "R",
            "--product",
            "PULSA10",
            "--account",
            "0812",
            "--wait",
            "2s",
        ],
    )
    .await;
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["status"], "success");
    assert_eq!(json["serial_number"], "SN123");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(KEY) && !String::from_utf8_lossy(&out.stderr).contains(KEY));

    let out = loketctl(
        &addr,
        &["--addr", "http://127.0.0.1:1", "balance", "okebayar"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("error: UNAVAILABLE: cannot connect to http://127.0.0.1:1"));
    let out = loketctl(
        &addr,
        &[
            "--json",
            "--addr",
            "http://127.0.0.1:1",
            "balance",
            "okebayar",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(error["error"]["exit_code"], 3);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("UNAVAILABLE: cannot connect to http://127.0.0.1:1"));

    let out = loketctl(&addr, &["explain", "12", "--offline"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell the provider"));
}

/// A purchase the server took but never answered is exit 4 ("look it up"),
/// not exit 1 (a refusal): a script reading 1 would buy again under a new
/// ref.
#[tokio::test]
async fn a_purchase_without_an_answer_exits_4_and_says_to_look_it_up() {
    let (addr, _fake) = serve().await;
    let out = loketctl(
        &addr,
        &[
            "purchase",
            "--ref",
            SILENT_REF,
            "--product",
            "PULSA10",
            "--account",
            "0812",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no answer in time") && stderr.contains("loketctl get --ref"),
        "{stderr}"
    );
}

/// A purchase that ends with a status other than a refusal made before
/// acting (here INTERNAL) may have been stored: exit 4, look it up, not
/// exit 1, which a script would read as "nothing happened".
#[tokio::test]
async fn a_purchase_ended_by_a_server_failure_exits_4_and_says_to_look_it_up() {
    let (addr, _fake) = serve().await;
    let out = loketctl(
        &addr,
        &[
            "--json",
            "purchase",
            "--ref",
            FAILING_REF,
            "--product",
            "PULSA10",
            "--account",
            "0812",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(error["error"]["code"], "INTERNAL", "{error}");
    assert_eq!(error["error"]["exit_code"], 4, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("loketctl get --ref")),
        "{error}"
    );
}

/// A watch the server ends (a restart or a drain) is exit 3 after the
/// updates it printed, so a script can tell it from Ctrl-C and watch again.
#[tokio::test]
async fn a_watch_the_server_ends_exits_3() {
    let (addr, _fake) = serve().await;
    let out = loketctl(&addr, &["watch"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the server closed the stream"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

/// Text from a provider reaches the terminal with its control characters
/// escaped (no escape sequence runs), and `--json` keeps it exact.
#[tokio::test]
async fn a_hostile_provider_text_cannot_drive_the_terminal() {
    let (addr, _fake) = serve().await;
    let out = loketctl(&addr, &["get", "--ref", "ref-hostile"]).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert!(
        text.contains(r"Gagal\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}000 sukses"),
        "{text}"
    );

    let out = loketctl(&addr, &["--json", "get", "--ref", "ref-hostile"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["provider_message"], HOSTILE_MESSAGE);
}

/// `baseline --help` shows where the NATS URL comes from, never its value:
/// it may carry the bus's password.
#[tokio::test]
async fn help_never_shows_the_nats_url_from_the_environment() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_loketctl"))
            .args(["baseline", "--help"])
            .env(
                "LOKET_NATS_URL",
                "nats://loket:CANARY-NATS-PW@10.0.0.9:4222",
            )
            .output()
            .expect("run loketctl")
    })
    .await
    .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("LOKET_NATS_URL"), "{help}");
    assert!(!help.contains("CANARY-NATS-PW"), "{help}");
}

#[tokio::test]
async fn qr_payments_refunds_and_pay_ins_round_trip() {
    let (addr, _fake) = serve().await;
    let mut client = client::connect(&addr, Some(&Secret::new(KEY)))
        .await
        .expect("connect");
    let Command::Qr(loket_cli::cli::QrCommand::Pay(args)) =
        parse(&["qr", "pay", "--ref", "Q1", "--amount", "10000"])
    else {
        panic!()
    };
    let paid = commands::qr_pay(&mut client, &args).await.expect("qr pay");
    assert_eq!((paid.kind, paid.status), ("qr_payment", "success"));
    assert_eq!(paid.product_code, "QRCPM");

    let Command::Qr(loket_cli::cli::QrCommand::Refund(args)) = parse(&[
        "qr", "refund", "--ref", "R1", "--txn", "qr-1", "--amount", "2500",
    ]) else {
        panic!()
    };
    let refund = commands::qr_refund(&mut client, &args)
        .await
        .expect("refund");
    assert_eq!(refund.original_id.as_deref(), Some("qr-1"));
    let text = loket_cli::output::render(loket_cli::output::Format::Text, &refund);
    assert!(text.contains("refund of       qr-1"), "{text}");
    let Command::Qr(loket_cli::cli::QrCommand::Refund(args)) = parse(&[
        "qr", "refund", "--ref", "R2", "--txn", "qr-1", "--amount", "20000",
    ]) else {
        panic!()
    };
    let error = commands::qr_refund(&mut client, &args)
        .await
        .expect_err("over-refund");
    assert!(
        error
            .to_string()
            .starts_with("FAILED_PRECONDITION: refund of IDR 20000 exceeds the refundable"),
        "{error}"
    );

    let Command::Payin(args) = parse(&[
        "payin", "--ref", "P1", "--amount", "150000", "--method", "W_OVO",
    ]) else {
        panic!()
    };
    let error = commands::pay_in(&mut client, &args)
        .await
        .expect_err("phone");
    assert_eq!(
        error.to_string(),
        "INVALID_ARGUMENT: payer.phone: required for method W_OVO"
    );
}

#[tokio::test]
async fn payin_prints_the_instructions_as_text_and_json() {
    let (addr, _fake) = serve().await;
    let args = vec![
        "payin", "--ref", "P1", "--amount", "150000", "--method", "QRIS", "--expiry", "1h",
    ];
    let out = loketctl(&addr, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "kind            pay_in",
        "status          PENDING",
        "method          QRIS",
        "pay with QR     00020101021226670016ID.CO.QRIS.WWW",
        "pay before      2025-01-31T06:06:40.000Z",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let out = loketctl(&addr, &json_args).await;
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "pay_in");
    assert_eq!(
        json["payment"]["qr_string"],
        "00020101021226670016ID.CO.QRIS.WWW"
    );
    assert_eq!(json["payment"]["expires_at"], "2025-01-31T06:06:40.000Z");
    assert!(json["payment"]["va_number"].is_null());
}

/// `loketctl list --all | head -1`: once the reader has gone, loketctl stops
/// quietly with status 141 (as if by SIGPIPE), no panic, no error line.
#[tokio::test]
async fn a_closed_output_pipe_ends_loketctl_quietly() {
    let (addr, _fake) = serve().await;
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loketctl"))
            .args(["list", "--all"])
            .env("LOKET_ADDR", addr)
            .env("LOKET_API_KEY", KEY)
            .stdout(writer)
            .output()
            .expect("run loketctl")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
