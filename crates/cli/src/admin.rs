//! The commands that work on the database directly: migrations, clients and
//! their API keys, and the product catalogue. The database URL is a
//! [`Secret`]: no message here ever repeats it.

use loket_runtime::Secret;
use sqlx::{PgPool, Row as _};

use crate::keys::{validate_client_name, ApiKey};
use crate::output::{
    ClientListView, ClientView, CreatedClientView, DoneView, MoneyView, ProductListView,
    ProductView, ProductsLoadedView, KEY_SHOWN_ONCE,
};
use crate::products::Product;
use crate::setting::required;
use crate::CliError;

/// Connects with a small pool (the CLI runs one statement at a time).
pub async fn connect(url: Option<&Secret>) -> Result<PgPool, CliError> {
    let url = required(
        url,
        "this command needs the database",
        "LOKET_DATABASE_URL",
        "--database-url",
    )?;
    Ok(loket_runtime::db::connect(url, 2).await?)
}

pub async fn migrate(pool: &PgPool) -> Result<DoneView, CliError> {
    loket_runtime::db::migrate(pool).await?;
    Ok(DoneView {
        ok: true,
        message: "migrations applied".into(),
    })
}

/// Creates a client with a new random key. The key exists nowhere but in
/// the view, so `show` shows it before the client is committed: if showing
/// fails (a full disk, a closed pipe), nothing is created and the name
/// stays free for another try.
pub async fn create_client(
    pool: &PgPool,
    name: &str,
    show: impl FnOnce(&CreatedClientView) -> Result<(), CliError>,
) -> Result<CreatedClientView, CliError> {
    validate_client_name(name).map_err(CliError::Usage)?;
    let key = ApiKey::generate();
    let id = uuid::Uuid::new_v4();
    let mut transaction = pool.begin().await?;
    let result = sqlx::query("INSERT INTO clients (id, name, api_key_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(key.hash().as_slice())
        .execute(&mut *transaction)
        .await;
    match result {
        Ok(_) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            return Err(if error.constraint().is_some_and(|c| c.contains("name")) {
                // The command line is right; what is stored refuses it.
                CliError::Refused(format!("client {name:?} already exists"))
            } else {
                // A 256-bit collision is not going to happen; say so plainly if it does.
                CliError::Query("generated key collided with an existing one; run again".into())
            });
        }
        Err(error) => return Err(error.into()),
    }
    let created = CreatedClientView {
        id: id.to_string(),
        name: name.to_string(),
        api_key: key.expose().to_string(),
        note: KEY_SHOWN_ONCE,
    };
    show(&created)?;
    transaction.commit().await?;
    Ok(created)
}

pub async fn list_clients(pool: &PgPool) -> Result<ClientListView, CliError> {
    let rows = sqlx::query("SELECT id, name, created_at, disabled FROM clients ORDER BY name")
        .fetch_all(pool)
        .await?;
    let clients = rows
        .iter()
        .map(|row| {
            Ok(ClientView {
                id: row.try_get::<uuid::Uuid, _>("id")?.to_string(),
                name: row.try_get("name")?,
                created_at: row
                    .try_get::<chrono::DateTime<chrono::Utc>, _>("created_at")?
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                disabled: row.try_get("disabled")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(ClientListView { clients })
}

/// Disables (or re-enables) a client by name.
pub async fn set_client_disabled(
    pool: &PgPool,
    name: &str,
    disabled: bool,
) -> Result<DoneView, CliError> {
    let done = sqlx::query("UPDATE clients SET disabled = $2 WHERE name = $1")
        .bind(name)
        .bind(disabled)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(CliError::NotFound(format!("client {name:?}")));
    }
    Ok(DoneView {
        ok: true,
        message: format!(
            "client {name} {}",
            if disabled {
                "disabled: each ingress refuses its API key once its cached lookup \
                 expires (AUTH_CACHE_TTL_MS, 10 s by default)"
            } else {
                "enabled"
            }
        ),
    })
}

/// Reads and validates a whole catalogue file; needs no database.
pub fn read_catalogue(path: &std::path::Path) -> Result<Vec<Product>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(crate::products::parse_catalogue(&text)?)
}

/// Validates the whole file, then upserts every entry in one transaction:
/// either the whole file is loaded or nothing is.
pub async fn load_products(
    pool: &PgPool,
    path: &std::path::Path,
) -> Result<ProductsLoadedView, CliError> {
    upsert_products(pool, &read_catalogue(path)?).await
}

pub async fn upsert_products(
    pool: &PgPool,
    products: &[Product],
) -> Result<ProductsLoadedView, CliError> {
    let mut tx = pool.begin().await?;
    let mut inserted = Vec::new();
    let mut updated = Vec::new();
    let mut unchanged = Vec::new();
    for p in products {
        // `xmax = 0` is true only for a row this statement inserted; a row
        // the file leaves as it is returns nothing.
        let row = sqlx::query(
            "INSERT INTO products (code, provider, provider_product_code, kind, price_minor, currency, description, active)
             VALUES ($1, $2, $3, $4, $5, 'IDR', $6, $7)
             ON CONFLICT (code) DO UPDATE SET
                 provider = EXCLUDED.provider,
                 provider_product_code = EXCLUDED.provider_product_code,
                 kind = EXCLUDED.kind,
                 price_minor = EXCLUDED.price_minor,
                 currency = EXCLUDED.currency,
                 description = EXCLUDED.description,
                 active = EXCLUDED.active,
                 updated_at = now()
             WHERE (products.provider, products.provider_product_code, products.kind,
                    products.price_minor, products.currency, products.description, products.active)
                 IS DISTINCT FROM
                   (EXCLUDED.provider, EXCLUDED.provider_product_code, EXCLUDED.kind,
                    EXCLUDED.price_minor, EXCLUDED.currency, EXCLUDED.description, EXCLUDED.active)
             RETURNING (xmax = 0) AS inserted",
        )
        .bind(&p.code)
        .bind(p.provider.as_str())
        .bind(&p.provider_product_code)
        .bind(p.kind.as_str())
        .bind(p.price)
        .bind(&p.description)
        .bind(p.active)
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) if row.try_get::<bool, _>("inserted")? => inserted.push(p.code.clone()),
            Some(_) => updated.push(p.code.clone()),
            None => unchanged.push(p.code.clone()),
        }
    }
    let codes: Vec<String> = products.iter().map(|p| p.code.clone()).collect();
    let untouched: Vec<String> =
        sqlx::query_scalar("SELECT code FROM products WHERE NOT (code = ANY($1)) ORDER BY code")
            .bind(&codes)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(ProductsLoadedView {
        inserted,
        updated,
        unchanged,
        untouched,
    })
}

pub async fn list_products(pool: &PgPool) -> Result<ProductListView, CliError> {
    let rows = sqlx::query(
        "SELECT code, provider, provider_product_code, kind, price_minor, currency, description, active
         FROM products ORDER BY code",
    )
    .fetch_all(pool)
    .await?;
    let products = rows
        .iter()
        .map(|row| {
            let currency: String = row.try_get("currency")?;
            Ok(ProductView {
                code: row.try_get("code")?,
                provider: row.try_get("provider")?,
                provider_product_code: row.try_get("provider_product_code")?,
                kind: row.try_get("kind")?,
                price: row
                    .try_get::<Option<i64>, _>("price_minor")?
                    .map(|minor| MoneyView { minor, currency }),
                description: row.try_get("description")?,
                active: row.try_get("active")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(ProductListView { products })
}
