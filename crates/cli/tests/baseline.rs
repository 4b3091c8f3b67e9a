//! `loketctl baseline` against a real nats-server and PostgreSQL: every item
//! goes INSERT → JetStream → UPDATE, and the run leaves nothing behind.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use loket_cli::baseline::{self, SCHEMA, STREAM};
use loket_cli::cli::BaselineArgs;
use loket_runtime::Secret;
use loket_test_support::{nats::NatsServer, postgres};

#[tokio::test]
async fn the_bare_pipeline_updates_every_row_it_inserts_and_cleans_up() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = Secret::new(postgres::fresh_database().await?);
    let args = BaselineArgs {
        concurrency: 4,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        nats_url: nats.url(),
    };
    let report = baseline::run(
        Some(&url),
        &nats.url(),
        &args,
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    assert!(report.completed > 0, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.every_row_updated, "{report:?}");
    assert!(report.latency_us.p50.is_some());
    assert!(report.completed_per_second > 0.0);
    assert!(report.cpu_ms_per_item.is_some(), "{report:?}");

    // Its schema and stream are gone; loket's own tables are untouched.
    let pool = loket_runtime::db::connect(&url, 1).await?;
    let schema: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
            .bind(SCHEMA)
            .fetch_optional(&pool)
            .await?;
    assert_eq!(schema, None);
    let transactions: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await?;
    assert_eq!(transactions, 0);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    assert!(
        js.get_stream(STREAM).await.is_err(),
        "the stream is deleted"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_database_it_says_what_to_set() {
    let args = BaselineArgs {
        concurrency: 1,
        duration: Duration::from_millis(10),
        warmup: Duration::ZERO,
        nats_url: "nats://127.0.0.1:1".into(),
    };
    let error = baseline::run(
        None,
        &args.nats_url,
        &args,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("LOKET_DATABASE_URL"), "{error}");
}
