//! `loketctl products load` against a real PostgreSQL: it says which
//! products it added, which it changed and which already read the same, so
//! an operator loading an unchanged file is not told it updated them all.

use loket_cli::admin::{load_products, upsert_products};
use loket_cli::products::parse_catalogue;
use loket_runtime::Secret;
use loket_test_support::postgres;
use std::path::Path;

#[tokio::test]
async fn loading_a_file_twice_changes_nothing_the_second_time() -> anyhow::Result<()> {
    let url = Secret::new(postgres::fresh_database().await?);
    let pool = loket_runtime::db::connect(&url, 1).await?;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/products.toml");
    let products = parse_catalogue(&std::fs::read_to_string(&file)?)?;
    // The migrations may seed some of them; start from none.
    sqlx::query("DELETE FROM products").execute(&pool).await?;

    let first = load_products(&pool, &file).await?;
    assert_eq!(first.inserted.len(), products.len(), "{first:?}");
    assert!(
        first.updated.is_empty() && first.unchanged.is_empty(),
        "{first:?}"
    );

    let stamp = |code: &str| {
        let pool = pool.clone();
        let code = code.to_string();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT updated_at FROM products WHERE code = $1",
            )
            .bind(code)
            .fetch_one(&pool)
            .await
        }
    };
    let code = products[0].code.clone();
    let loaded_at = stamp(&code).await?;

    let again = load_products(&pool, &file).await?;
    assert!(
        again.inserted.is_empty() && again.updated.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.unchanged.len(), products.len());
    assert_eq!(
        stamp(&code).await?,
        loaded_at,
        "an unchanged row keeps its time"
    );
    let text = loket_cli::output::Render::text(&again);
    assert!(
        text.starts_with(&format!(
            "{} product(s) loaded: 0 new, 0 updated, {} unchanged",
            products.len(),
            products.len()
        )),
        "{text}"
    );

    let mut repriced = products.clone();
    repriced[0].price = repriced[0].price.map(|price| price + 1);
    let changed = upsert_products(&pool, &repriced).await?;
    assert_eq!(changed.updated, vec![code.clone()], "{changed:?}");
    assert_eq!(changed.unchanged.len(), products.len() - 1);
    assert!(loket_cli::output::Render::text(&changed).contains(&format!("\nupdated: {code}")));
    Ok(())
}
