//! What the `loketctl` binary prints about its own flags: a flag the
//! environment can give (`--nats-url`, `LOKET_NATS_URL`) is not shown on
//! the usage line as one to type, and when neither gives it the error names
//! both, as bad usage (exit code 2), before anything connects.

mod common;

use common::{loketctl, shown};

#[tokio::test]
async fn a_flag_the_environment_gives_is_optional_in_the_usage_yet_named_when_missing(
) -> anyhow::Result<()> {
    let out = loketctl(&[], &["review", "settle", "--help"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let usage = help
        .lines()
        .find(|line| line.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line: {help}"));
    assert!(usage.contains("[OPTIONS]"), "{usage}");
    assert!(!usage.contains("--nats-url"), "{usage}");
    // The help still says where the value comes from.
    assert!(help.contains("--nats-url"), "{help}");
    assert!(help.contains("LOKET_NATS_URL"), "{help}");

    let out = loketctl(
        &[],
        &[
            "review",
            "settle",
            "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
            "--seen-event",
            "12",
            "--status",
            "failed",
            "--reason",
            "ticket 4711",
            "--operator",
            "siti",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: review settle needs NATS: set LOKET_NATS_URL (or --nats-url)",
        "{}",
        shown(&out)
    );
    Ok(())
}
