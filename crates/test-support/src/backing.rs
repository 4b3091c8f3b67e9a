//! What a service's own integration tests run against when they start the
//! service themselves (no [`crate::app::TestApp`]): a private nats-server with
//! loket's streams, a fresh migrated database with a pool on it, and one API
//! client for the transactions they insert to belong to.

use async_nats::jetstream;
use loket_runtime::Secret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::nats::NatsServer;

pub struct Backing {
    pub nats_server: NatsServer,
    pub database_url: String,
    pub pool: PgPool,
    /// A connection of the test's own, named `connection_name`.
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub client_id: Uuid,
}

impl Backing {
    /// Starts it all; the pool holds up to `pool_size` connections.
    pub async fn start(pool_size: u32, connection_name: &str) -> anyhow::Result<Backing> {
        let nats_server = NatsServer::start()?;
        let database_url = crate::postgres::fresh_database().await?;
        let pool =
            loket_runtime::db::connect(&Secret::new(database_url.clone()), pool_size).await?;
        let nats = loket_runtime::bus::connect(&nats_server.url(), connection_name).await?;
        let js = jetstream::new(nats.clone());
        loket_runtime::bus::ensure_streams(&js).await?;
        let client_id = crate::postgres::new_client(&pool).await?;
        Ok(Backing {
            nats_server,
            database_url,
            pool,
            nats,
            js,
            client_id,
        })
    }
}
