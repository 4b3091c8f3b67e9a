//! The harness itself works: a private nats-server with JetStream and a
//! fresh migrated database.

use loket_test_support::{nats::NatsServer, postgres};

#[tokio::test]
async fn private_nats_and_postgres_start_and_serve() {
    let nats = NatsServer::start().expect("nats-server starts");
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    loket_runtime::bus::ensure_streams(&js)
        .await
        .expect("streams");
    assert!(js
        .get_stream(loket_protocol::subjects::COMMAND_STREAM)
        .await
        .is_ok());

    let url = postgres::fresh_database().await.expect("database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'transactions'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}

/// A database a newer build migrated further (a version this build does not
/// know): the services still start on it, as in a rolling deploy or a
/// rollback; an applied migration whose text changed is still refused.
#[tokio::test]
async fn migrate_accepts_a_database_migrated_further_by_a_newer_build() {
    let url = postgres::fresh_database().await.expect("database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer build', TRUE, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    loket_runtime::db::migrate(&pool)
        .await
        .expect("a newer build's migration does not stop an older build");

    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    let refused = loket_runtime::db::migrate(&pool)
        .await
        .expect_err("a changed migration is refused");
    assert!(refused.to_string().contains("migration 1"), "{refused}");
}
