//! The `loketctl find` binary against a fresh PostgreSQL database: a
//! reference that names a transaction prints it and exits 0; one that names
//! none exits 1 with the reason on stderr and nothing on stdout, as
//! `loketctl get` of an unknown id does, so a script can tell the two apart
//! by the exit code (with `--json` too).

mod common;

use anyhow::{Context, Result};
use common::{loketctl, shown};
use uuid::Uuid;

#[tokio::test]
async fn a_reference_nothing_matches_exits_1_like_an_unknown_id() -> Result<()> {
    let url = loket_test_support::postgres::fresh_database().await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
         provider_product_code, account, amount_minor, request_hash, provider_reference) \
         VALUES ($1, $2, 'find-me', 'prepaid_purchase', 'success', 'okebayar', 'TSEL10', 'S10', \
         '0812', 10500, '\\x00', $3)",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(format!("LKT{}", id.simple()))
    .execute(&pool)
    .await?;
    pool.close().await;

    let out = loketctl(&[("LOKET_DATABASE_URL", &url)], &["find", "find-me"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id.to_string()),
        "{}",
        shown(&out)
    );

    let out = loketctl(&[("LOKET_DATABASE_URL", &url)], &["find", "no-such-ref"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(out.stdout.is_empty(), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: not found: no transaction has the reference \"no-such-ref\""),
        "{}",
        shown(&out)
    );

    let out = loketctl(
        &[("LOKET_DATABASE_URL", &url)],
        &["--json", "find", "no-such-ref"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(out.stdout.is_empty(), "{}", shown(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)
        .with_context(|| format!("not a JSON error: {}", shown(&out)))?;
    assert_eq!(error["error"]["exit_code"], 1, "{error}");
    Ok(())
}
