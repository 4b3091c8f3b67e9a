//! The `loketctl` binary's `review` subcommands against a private
//! nats-server and PostgreSQL (from `loket-test-support`), with the
//! reconciler run in-process where a decision must be applied: `review list`
//! shows a parked transaction as text and as JSON; `review settle` publishes
//! the decision, waits for the reconciler and prints the new state, after
//! which the transaction has left review; a transaction not in review is
//! refused with exit code 1 and nothing reaches the bus; without a
//! reconciler the wait ends with exit code 4 and the row untouched, as does
//! a publish JetStream never confirms; an unreachable NATS is exit code 3, named without its credentials; a status
//! an operator cannot decide is clap's exit code 2. The library functions
//! behind these are covered end to end by the workspace's `tests/review.rs`;
//! here it is the binary: its arguments, environment, output and exit codes.

mod common;

use common::{loketctl, shown, stderr, stdout};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use loket_protocol::pb::bus;
use loket_protocol::subjects;
use loket_reconciler::Settings;
use loket_runtime::{Secret, Shutdown};
use loket_test_support::backing::Backing;
use prost::Message as _;
use uuid::Uuid;

const REASON: &str = "OkeBayar confirmed by phone: never charged, ticket 4711";

/// A private nats-server with loket's streams and a fresh, migrated
/// database with one client.
struct Env(Backing);

impl std::ops::Deref for Env {
    type Target = Backing;

    fn deref(&self) -> &Backing {
        &self.0
    }
}

async fn env() -> Result<Env> {
    Ok(Env(Backing::start(4, "review-binary-test").await?))
}

impl Env {
    /// Runs `loketctl args` with this environment's database and NATS in
    /// `LOKET_DATABASE_URL` and `LOKET_NATS_URL`.
    async fn loketctl(&self, args: &[&str]) -> Result<Output> {
        self.loketctl_with_nats(&self.nats_server.url(), args).await
    }

    /// Runs `loketctl args` with this environment's database and `nats_url`.
    async fn loketctl_with_nats(&self, nats_url: &str, args: &[&str]) -> Result<Output> {
        loketctl(
            &[
                ("LOKET_DATABASE_URL", self.database_url.as_str()),
                ("LOKET_NATS_URL", nats_url),
            ],
            args,
        )
        .await
    }

    /// Inserts a transaction as the ingress would, with `status`; returns
    /// its id.
    async fn insert(&self, status: &str) -> Result<Uuid> {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
             provider_product_code, account, amount_minor, request_hash, provider_reference, \
             dispatched_at, dispatch_count, provider_code, finalized_at) \
             VALUES ($1, $2, $3, 'prepaid_purchase', $4, 'okebayar', 'TSEL10', 'S10', '0812', 10500, \
             '\\x00', $5, now(), 1, '000', now() - interval '1 hour')",
        )
        .bind(id)
        .bind(self.client_id)
        .bind(id.to_string())
        .bind(status)
        .bind(format!("LKT{}", id.simple()))
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// A transaction parked in review, as the reconciler parks a success
    /// contradicted by a failure, with the event that parked it.
    async fn parked(&self) -> Result<Uuid> {
        let id = self.insert("needs_review").await?;
        sqlx::query(
            "UPDATE transactions SET reviewed_from = 'success', \
             review_reason = 'conflicting final reports' WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.add_event(id, "needs_review").await?;
        Ok(id)
    }

    /// Adds a `result` event to `id`'s history, as a provider's report
    /// kept in review would; returns its id.
    async fn add_event(&self, id: Uuid, to_status: &str) -> Result<String> {
        let event: i64 = sqlx::query_scalar(
            "INSERT INTO transaction_events (transaction_id, source, from_status, to_status) \
             VALUES ($1, 'result', 'success', $2) RETURNING id",
        )
        .bind(id)
        .bind(to_status)
        .fetch_one(&self.pool)
        .await?;
        Ok(event.to_string())
    }

    /// The newest event of `id`'s history, as `--seen-event` takes it.
    async fn newest_event(&self, id: Uuid) -> Result<String> {
        Ok(loket_store::newest_event(&self.pool, id, i64::MAX)
            .await?
            .to_string())
    }

    async fn status_of(&self, id: Uuid) -> Result<String> {
        Ok(
            sqlx::query_scalar("SELECT status FROM transactions WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The operator rows of `id`'s history: (from, to, operator, refused).
    async fn operator_events(
        &self,
        id: Uuid,
    ) -> Result<
        Vec<(
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        )>,
    > {
        Ok(sqlx::query_as(
            "SELECT from_status, to_status, detail->>'operator', detail->>'refused' \
             FROM transaction_events WHERE transaction_id = $1 AND source = 'operator' ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many messages were ever stored on the event stream (its last
    /// sequence: the stream is a work queue, so what the reconciler acked
    /// is gone, but the sequence stays).
    async fn events_published(&self) -> Result<u64> {
        let mut stream = self.js.get_stream(subjects::EVENT_STREAM).await?;
        Ok(stream.info().await?.state.last_sequence)
    }

    /// The reconciler, in-process, on this environment.
    async fn start_reconciler(
        &self,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<Result<(), loket_reconciler::Error>>> {
        let mut settings = Settings::default();
        settings.common.nats_url = self.nats_server.url();
        settings.common.database_url = Secret::new(self.database_url.clone());
        settings.tick_ms = 100;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok(tokio::spawn(loket_reconciler::run(
            settings,
            loket_reconciler::Listeners { admin },
            shutdown,
        )))
    }
}

/// Stops the reconciler `task` and checks that it ended cleanly.
async fn stop(
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), loket_reconciler::Error>>,
) -> Result<()> {
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .context("the reconciler did not stop within 15 s")???;
    Ok(())
}

/// `review settle <id> --seen-event <seen> --status <status>` with the
/// usual reason and operator, and `extra` flags.
fn settle_args<'a>(id: &'a str, seen: &'a str, status: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "review",
        "settle",
        id,
        "--seen-event",
        seen,
        "--status",
        status,
        "--reason",
        REASON,
        "--operator",
        "siti",
    ];
    args.extend_from_slice(extra);
    args
}

/// The ids `loketctl --json review list` prints.
async fn listed_ids(env: &Env) -> Result<Vec<String>> {
    let out = env.loketctl(&["--json", "review", "list"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("review list --json is not JSON: {}", shown(&out)))?;
    json["transactions"]
        .as_array()
        .with_context(|| format!("no transactions array: {json}"))?
        .iter()
        .map(|t| {
            t["id"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("an id: {t}"))
        })
        .collect()
}

/// `review list` shows the parked transaction and not a settled one, as a
/// table (with the client's name, where it was parked from and why) and,
/// with the global `--json` before the subcommand, as JSON; exit 0 both
/// times.
#[tokio::test]
async fn review_list_shows_a_parked_transaction_as_text_and_json() -> Result<()> {
    let env = env().await?;
    let parked = env.parked().await?;
    let done = env.insert("success").await?;

    let out = env.loketctl(&["review", "list"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header = lines.next().context("a header")?;
    for column in ["UPDATED", "ID", "EVENT", "CLIENT", "FROM", "REASON"] {
        assert!(header.contains(column), "{text}");
    }
    let newest = env.newest_event(parked).await?;
    let row = lines
        .find(|line| line.contains(&parked.to_string()))
        .with_context(|| format!("{parked} is not listed:\n{text}"))?;
    for cell in [
        format!("#{newest}").as_str(),
        "test",
        "prepaid_purchase",
        "okebayar",
        "success",
        "conflicting final reports",
    ] {
        assert!(row.contains(cell), "{cell:?} not in {row:?}");
    }
    assert!(!text.contains(&done.to_string()), "{text}");
    assert!(stderr(&out).is_empty(), "{}", shown(&out));

    let out = env.loketctl(&["--json", "review", "list"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", shown(&out)))?;
    let transactions = json["transactions"].as_array().context("an array")?;
    assert_eq!(transactions.len(), 1, "{json}");
    let listed = &transactions[0];
    assert_eq!(listed["id"], parked.to_string().as_str(), "{json}");
    assert_eq!(listed["client"], "test", "{json}");
    assert_eq!(listed["newest_event"].to_string(), newest, "{json}");
    assert_eq!(json["more"], false, "{json}");

    // `find` numbers the history and names the event to decide on.
    let out = env.loketctl(&["find", &parked.to_string()]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "decide on       the history up to #{newest} (review settle --seen-event {newest})"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("\n  #{newest:<6} ")), "{text}");
    assert_eq!(listed["reviewed_from"], "success", "{json}");
    assert_eq!(
        listed["review_reason"], "conflicting final reports",
        "{json}"
    );

    // A queue longer than the limit says so: the longest waiting are shown,
    // and the rest are not silently out of sight.
    let newer = env.parked().await?;
    let out = env
        .loketctl(&["--json", "review", "list", "--limit", "1"])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        json["transactions"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    assert_eq!(
        json["transactions"][0]["id"],
        parked.to_string().as_str(),
        "{json}"
    );
    assert_eq!(json["more"], true, "{json}");
    let out = env.loketctl(&["review", "list", "--limit", "1"]).await?;
    let text = stdout(&out);
    assert!(!text.contains(&newer.to_string()), "{text}");
    assert!(
        text.trim_end().ends_with(
            "1 shown; more wait in review (the longest waiting come first): raise --limit"
        ),
        "{text}"
    );
    let out = env
        .loketctl(&["--json", "review", "list", "--limit", "2"])
        .await?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        json["transactions"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
    assert_eq!(json["more"], false, "{json}");
    Ok(())
}

/// With the reconciler running, `review settle <id> --status failed` exits
/// 0 once the decision is applied and prints it (the new status, who
/// decided, the history's operator line, and no advice from the provider
/// code it was settled against); the row is `failed` in
/// PostgreSQL, the operator event is logged once, and `review list` no
/// longer shows the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_settle_is_applied_by_the_reconciler_and_leaves_review() -> Result<()> {
    let env = env().await?;
    let parked = env.parked().await?;
    let id = parked.to_string();
    assert_eq!(listed_ids(&env).await?, vec![id.clone()]);
    let shutdown = Shutdown::new();
    let reconciler = env.start_reconciler(shutdown.clone()).await?;

    let seen = env.newest_event(parked).await?;
    let out = env
        .loketctl(&settle_args(&id, &seen, "failed", &[]))
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("settled         {id} as failed by siti (event ")),
        "{text}"
    );
    let status_line = text
        .lines()
        .find(|line| line.starts_with("status "))
        .with_context(|| format!("no status line:\n{text}"))?;
    assert!(status_line.contains("FAILED"), "{status_line:?}");
    assert!(text.contains("needs_review -> failed"), "{text}");
    assert!(text.contains(&format!("by siti: {REASON}")), "{text}");
    // The row keeps the provider's last code, 000 (success): its advice
    // ("tell merchant: the transaction was successful") contradicts the
    // decision and is not printed.
    assert!(!text.contains("tell merchant"), "{text}");
    assert!(!text.contains("successful"), "{text}");

    assert_eq!(env.status_of(parked).await?, "failed");
    assert_eq!(
        env.operator_events(parked).await?,
        vec![(
            Some("needs_review".into()),
            Some("failed".into()),
            Some("siti".into()),
            None
        )]
    );
    assert_eq!(listed_ids(&env).await?, Vec::<String>::new());
    let out = env.loketctl(&["review", "list"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert_eq!(stdout(&out).trim(), "no transaction is in needs_review");

    stop(shutdown, reconciler).await
}

/// Settling a transaction that is not in review exits 1 with the reason on
/// stderr, and publishes nothing: the event stream stays empty, and after a
/// later decision (the positive marker) the reconciler has applied, the
/// refused transaction has no operator event and is unchanged. An unknown
/// id is exit 1 too, named as not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_settle_refuses_a_transaction_not_in_review_and_publishes_nothing() -> Result<()> {
    let env = env().await?;
    let done = env.insert("success").await?;
    let parked = env.parked().await?;
    let shutdown = Shutdown::new();
    let reconciler = env.start_reconciler(shutdown.clone()).await?;

    let out = env
        .loketctl(&settle_args(&done.to_string(), "1", "failed", &[]))
        .await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: transaction {done}: not in needs_review (status success)")
    );
    assert!(stdout(&out).is_empty(), "{}", shown(&out));
    // The publish is awaited before the binary exits: had it published, the
    // sequence would show it now.
    assert_eq!(env.events_published().await?, 0, "nothing on the bus");

    let unknown = Uuid::new_v4();
    let out = env
        .loketctl(&settle_args(&unknown.to_string(), "1", "failed", &[]))
        .await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: not found: transaction {unknown}")
    );
    assert_eq!(env.events_published().await?, 0, "nothing on the bus");

    // A decision taken before the newest event (a provider's report came in
    // since): refused at once, naming why, and nothing published.
    let seen = env.newest_event(parked).await?;
    let newest = env.add_event(parked, "needs_review").await?;
    let out = env
        .loketctl(&settle_args(&parked.to_string(), &seen, "failed", &[]))
        .await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stderr(&out).contains(&format!(
            "its history changed since the decision was taken on it (decided on event {seen}, \
             the newest is {newest})"
        )),
        "{}",
        shown(&out)
    );
    assert_eq!(env.events_published().await?, 0, "nothing on the bus");

    // A decision the reconciler applies, published after the refused ones
    // (and printed as JSON: `--json` is global, so it may follow the
    // subcommand's flags).
    let out = env
        .loketctl(&settle_args(
            &parked.to_string(),
            &newest,
            "failed",
            &["--json"],
        ))
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", shown(&out)))?;
    assert_eq!(json["decision"], "failed", "{json}");
    assert_eq!(json["operator"], "siti", "{json}");
    assert_eq!(
        json["transaction"]["id"],
        parked.to_string().as_str(),
        "{json}"
    );
    assert_eq!(json["transaction"]["status"], "failed", "{json}");
    assert_eq!(env.events_published().await?, 1);
    assert_eq!(env.operator_events(parked).await?.len(), 1);
    assert_eq!(env.operator_events(done).await?, vec![]);
    assert_eq!(env.status_of(done).await?, "success");

    stop(shutdown, reconciler).await
}

/// With no reconciler running, `review settle --wait 1s` publishes the
/// decision (it is on the event stream, as given) but exits 4 after about
/// a second, saying the reconciler did not apply it; the row is still in
/// review.
#[tokio::test]
async fn review_settle_without_a_reconciler_times_out_with_exit_4() -> Result<()> {
    let env = env().await?;
    let parked = env.parked().await?;
    let id = parked.to_string();

    let seen = env.newest_event(parked).await?;
    let started = Instant::now();
    let out = env
        .loketctl(&settle_args(&id, &seen, "failed", &["--wait", "1s"]))
        .await?;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
    let error = stderr(&out);
    assert!(
        error.starts_with(&format!("error: the decision on transaction {id} (event ")),
        "{error}"
    );
    assert!(
        error.contains("is on the bus, but the reconciler did not apply it within 1000 ms"),
        "{error}"
    );
    assert!(stdout(&out).is_empty(), "{}", shown(&out));
    assert!(took >= Duration::from_secs(1), "waited {took:?}");
    assert!(took < Duration::from_secs(8), "waited {took:?}");

    assert_eq!(env.status_of(parked).await?, "needs_review");
    assert_eq!(env.operator_events(parked).await?, vec![]);
    // The decision waits on the bus for a reconciler.
    let stream = env.js.get_stream(subjects::EVENT_STREAM).await?;
    let message = stream
        .get_last_raw_message_by_subject(subjects::operator_decision())
        .await
        .context("the decision is on the event stream")?;
    let decision = bus::OperatorDecision::decode(message.payload.as_ref())?;
    assert_eq!(decision.transaction_id, id);
    assert_eq!(
        decision.status(),
        loket_protocol::pb::TransactionStatus::Failed
    );
    assert_eq!(
        (decision.operator.as_str(), decision.reason.as_str()),
        ("siti", REASON)
    );
    assert!(
        error.contains(&format!("(event {})", decision.event_id)),
        "{error}"
    );
    assert_eq!(env.events_published().await?, 1);
    Ok(())
}

/// A NATS URL nothing listens on is exit 3, and stderr names the server it
/// could not reach without the password in the URL; the row is untouched.
#[tokio::test]
async fn review_settle_with_nats_unreachable_exits_3() -> Result<()> {
    let env = env().await?;
    let parked = env.parked().await?;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let nats_url = format!("nats://loket:hunter2@127.0.0.1:{port}");

    let seen = env.newest_event(parked).await?;
    let out = env
        .loketctl_with_nats(
            &nats_url,
            &settle_args(&parked.to_string(), &seen, "failed", &[]),
        )
        .await?;
    assert_eq!(out.status.code(), Some(3), "{}", shown(&out));
    let error = stderr(&out);
    assert!(
        error.starts_with(&format!(
            "error: cannot connect to NATS at nats://***@127.0.0.1:{port}: "
        )),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "the password is shown: {error}");
    assert!(stdout(&out).is_empty(), "{}", shown(&out));
    assert_eq!(env.status_of(parked).await?, "needs_review");
    assert_eq!(env.events_published().await?, 0);
    Ok(())
}

/// A NATS that takes the decision but has no stream to store it (JetStream
/// never confirms the publish) is exit 4, "look it up": a publish whose
/// confirmation is lost may have been stored, and the reconciler would then
/// apply it. The row is untouched.
#[tokio::test]
async fn review_settle_unconfirmed_by_jetstream_exits_4() -> Result<()> {
    let env = env().await?;
    let parked = env.parked().await?;
    let bare = loket_test_support::nats::NatsServer::start()?;

    let seen = env.newest_event(parked).await?;
    let out = env
        .loketctl_with_nats(
            &bare.url(),
            &settle_args(&parked.to_string(), &seen, "failed", &[]),
        )
        .await?;
    assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
    let error = stderr(&out);
    assert!(
        error.contains("was sent, but JetStream did not confirm storing it"),
        "{error}"
    );
    assert!(
        error.contains(&format!("`loketctl find {parked}`")),
        "{error}"
    );
    assert!(stdout(&out).is_empty(), "{}", shown(&out));
    assert_eq!(env.status_of(parked).await?, "needs_review");
    Ok(())
}

/// A status an operator cannot decide (`pending`) is refused by the
/// argument parser: exit 2, stderr naming `--status` and what it takes,
/// before any database or NATS is needed (none is given).
#[tokio::test]
async fn review_settle_with_a_bad_status_exits_2() -> Result<()> {
    let id = Uuid::new_v4().to_string();
    let mut args = settle_args(&id, "1", "pending", &[]);
    args.extend(["--nats-url", "nats://127.0.0.1:1"]);
    let out = loketctl(&[], &args).await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    let error = stderr(&out);
    assert!(
        error.starts_with(
            "error: invalid value 'pending' for '--status <STATUS>': \
             \"pending\": an operator settles a transaction as success or failed"
        ),
        "{error}"
    );
    assert!(stdout(&out).is_empty(), "{}", shown(&out));
    Ok(())
}
