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
