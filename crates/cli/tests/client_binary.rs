//! `loketctl client create` against a fresh PostgreSQL database: a name
//! already taken is refused with exit code 1 (what is stored refuses it),
//! not 2, which says the command line was wrong; a bad name is exit code 2.

mod common;

use anyhow::{Context, Result};
use common::{loketctl, shown, stderr, stdout};

#[tokio::test]
async fn a_client_name_already_taken_is_refused_with_exit_code_1() -> Result<()> {
    let url = loket_test_support::postgres::fresh_database().await?;
    let db = [("LOKET_DATABASE_URL", url.as_str())];

    let out = loketctl(&db, &["client", "create", "shop-backend"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(stdout(&out).contains("shop-backend"), "{}", shown(&out));

    let out = loketctl(&db, &["client", "create", "shop-backend"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(out.stdout.is_empty(), "{}", shown(&out));
    assert_eq!(
        stderr(&out).trim(),
        "error: client \"shop-backend\" already exists",
        "{}",
        shown(&out)
    );

    let out = loketctl(&db, &["--json", "client", "create", "shop-backend"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)
        .with_context(|| format!("not a JSON error: {}", shown(&out)))?;
    assert_eq!(error["error"]["exit_code"], 1, "{error}");
    assert_eq!(
        error["error"]["message"],
        "client \"shop-backend\" already exists"
    );

    // A name the command refuses before asking the database is bad usage.
    let out = loketctl(&db, &["client", "create", "bad name!"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    Ok(())
}
