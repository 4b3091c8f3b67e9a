//! The reconciler's `/metrics` right after it started, before any event or
//! due work: every counter is already there at zero (the labelled ones with
//! each label value known up front), so a dashboard or an alert on them has
//! a series from the start. Runs against a private nats-server and
//! PostgreSQL (from `loket-test-support`).

use anyhow::{Context, Result};
use loket_reconciler::{metric, Settings};
use loket_runtime::{Secret, Shutdown};
use loket_test_support::backing::Backing;
use std::time::Duration;

#[tokio::test]
async fn every_counter_reads_zero_right_after_start() -> Result<()> {
    let env = Backing::start(2, "reconciler-metrics-test").await?;
    let mut settings = Settings::default();
    settings.common.nats_url = env.nats_server.url();
    settings.common.database_url = Secret::new(env.database_url.clone());
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin_addr = admin.local_addr()?;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(loket_reconciler::run(
        settings,
        loket_reconciler::Listeners { admin },
        shutdown.clone(),
    ));
    loket_test_support::admin::wait_ready(admin_addr).await;

    let series = [
        metric::POISON.to_string(),
        metric::DUPLICATES.to_string(),
        metric::APPLY_ERRORS.to_string(),
        metric::TICK_ERRORS.to_string(),
        metric::UPDATE_PUBLISH_ERRORS.to_string(),
        metric::UPDATES_REPUBLISHED.to_string(),
        format!(r#"{}{{kind="result",verdict="changed"}}"#, metric::EVENTS),
        format!(
            r#"{}{{kind="callback",verdict="check_requested"}}"#,
            metric::EVENTS
        ),
        format!(r#"{}{{kind="decision"}}"#, metric::UNKNOWN_TRANSACTIONS),
        format!(r#"{}{{provider="okebayar"}}"#, metric::CONFLICTS),
        format!(r#"{}{{provider="smilepayz"}}"#, metric::AMOUNT_MISMATCHES),
        format!(r#"{}{{provider="okebayar"}}"#, metric::INQUIRIES_EXPIRED),
        format!(r#"{}{{reason="schedule"}}"#, metric::STATUS_CHECKS),
        format!(r#"{}{{reason="no_result"}}"#, metric::REDISPATCHED),
        format!(r#"{}{{verdict="refused"}}"#, metric::OPERATOR_DECISIONS),
        format!(r#"{}{{reason="unresolved"}}"#, metric::NEEDS_REVIEW),
        format!(r#"{}{{reason="not_found_review"}}"#, metric::NEEDS_REVIEW),
        format!(r#"{}{{reason="unwritable"}}"#, metric::NEEDS_REVIEW),
        format!(r#"{}{{status="success"}}"#, metric::REPORTS_DROPPED),
        format!(r#"{}{{status="needs_review"}}"#, metric::REPORTS_DROPPED),
        format!(r#"{}{{table="applied_events"}}"#, metric::PRUNED),
    ];
    loket_test_support::admin::assert_series_at(admin_addr, &series, "0").await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .context("the reconciler did not stop within 15 s")???;
    Ok(())
}
