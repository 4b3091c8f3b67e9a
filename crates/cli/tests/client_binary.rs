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

    // A key that could not be shown (here a full disk) is of no use to
    // anyone: the client is not created, and its name stays free.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
    let database_url = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loketctl"))
            .args(["client", "create", "lost-key"])
            .env("LOKET_DATABASE_URL", database_url)
            .stdout(full)
            .output()
    })
    .await??;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(stderr(&out).contains("standard output"), "{}", shown(&out));
    let out = loketctl(&db, &["client", "create", "lost-key"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));

    // A name the command refuses before asking the database is bad usage.
    let out = loketctl(&db, &["client", "create", "bad name!"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    Ok(())
}
