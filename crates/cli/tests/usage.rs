//! What the `loketctl` binary prints about its own flags: a flag the
//! environment can give (`--nats-url`, `LOKET_NATS_URL`, `--api-key`,
//! `LOKET_API_KEY`) is not shown on the usage line as one to type, not even
//! after an error when the environment gave it, and when neither gives it
//! the error names both, as bad usage (exit code 2), before anything
//! connects. With `--json` a usage error is one JSON object, as every other
//! error is.

mod common;

use common::{loketctl, shown, stderr, stdout};

/// A `review settle` with every flag but `--operator` and the settings the
/// environment can give.
const SETTLE_WITHOUT_OPERATOR: &[&str] = &[
    "review",
    "settle",
    "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
    "--seen-event",
    "12",
    "--status",
    "failed",
    "--reason",
    "ticket 4711",
];

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
        &[SETTLE_WITHOUT_OPERATOR, &["--operator", "siti"]].concat(),
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

/// A usage error a script made, with `--json`: one JSON object on stderr in
/// the shape of every other error, code `USAGE`, exit code 2; nothing on
/// stdout. Help stays clap's text.
#[tokio::test]
async fn a_usage_error_under_json_is_one_json_object() -> anyhow::Result<()> {
    for args in [
        &["--json", "purchase", "--ref", "e1", "--product", "PULSA10"][..],
        &["purchase", "--ref", "e1", "--product", "PULSA10", "--json"],
        &["--json", "purchase", "--ref", "e1", "--bogus"],
        &["--json", "list", "--status", "done"],
        &["--json", "qr"],
    ] {
        let out = loketctl(&[], args).await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", shown(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", shown(&out));
        let error: serde_json::Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|_| panic!("{args:?}: not one JSON object: {}", shown(&out)));
        assert_eq!(error["error"]["exit_code"], 2, "{args:?}: {error}");
        assert_eq!(error["error"]["code"], "USAGE", "{args:?}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.starts_with("error:") && !message.contains("Usage:"),
            "{args:?}: {error}"
        );
    }
    let out = loketctl(
        &[],
        &["--json", "purchase", "--ref", "e1", "--product", "P"],
    )
    .await?;
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)?;
    assert_eq!(
        error["error"]["message"],
        "the following required arguments were not provided:\n  --account <ACCOUNT>"
    );

    let out = loketctl(&[], &["--json", "purchase", "--help"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(
        stdout(&out).contains("Usage: loketctl purchase"),
        "{}",
        shown(&out)
    );
    Ok(())
}

/// The usage line after a missing flag is the command's own, not one that
/// lists the flags the environment or a default gave as if they were to be
/// typed.
#[tokio::test]
async fn the_usage_line_does_not_list_flags_the_environment_gave() -> anyhow::Result<()> {
    let out = loketctl(
        &[
            ("LOKET_API_KEY", "lk_test"),
            ("LOKET_ADDR", "http://127.0.0.1:1"),
        ],
        &["purchase", "--ref", "e1", "--product", "PULSA10"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    let text = stderr(&out);
    assert!(text.contains("--account"), "{}", shown(&out));
    assert!(!text.contains("--api-key"), "{}", shown(&out));
    assert!(!text.contains("--addr"), "{}", shown(&out));
    assert!(
        text.contains(
            "Usage: loketctl purchase [OPTIONS] --ref <CLIENT_REF> --product <PRODUCT> --account <ACCOUNT>"
        ),
        "{}",
        shown(&out)
    );

    // A flag with a default (`--wait`), and the database and NATS from
    // the environment.
    let out = loketctl(
        &[
            ("LOKET_DATABASE_URL", "postgres://127.0.0.1:1/x"),
            ("LOKET_NATS_URL", "nats://127.0.0.1:1"),
        ],
        SETTLE_WITHOUT_OPERATOR,
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    let text = stderr(&out);
    assert!(text.contains("--operator"), "{}", shown(&out));
    for given in ["--wait", "--nats-url", "--database-url"] {
        assert!(!text.contains(given), "{given}: {}", shown(&out));
    }
    Ok(())
}

/// A command that calls the ingress with no API key says so before it
/// connects (bad usage, exit code 2), not the server's UNAUTHENTICATED; a
/// command that needs no server needs no key.
#[tokio::test]
async fn a_missing_api_key_is_named_before_connecting() -> anyhow::Result<()> {
    // Nothing listens on port 1: a connection attempt is exit code 3.
    let addr = ("LOKET_ADDR", "http://127.0.0.1:1");
    let purchase = [
        "purchase",
        "--ref",
        "e1",
        "--product",
        "PULSA10",
        "--account",
        "0812",
    ];
    for vars in [&[addr][..], &[addr, ("LOKET_API_KEY", "")]] {
        for args in [
            &purchase[..],
            &["balance", "okebayar"],
            &["explain", "okebayar", "208"],
        ] {
            let out = loketctl(vars, args).await?;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", shown(&out));
            assert_eq!(
                stderr(&out).trim(),
                "error: no API key: set LOKET_API_KEY (or --api-key)",
                "{args:?}: {}",
                shown(&out)
            );
        }
    }
    let out = loketctl(&[addr], &[&["--json"][..], &purchase].concat()).await?;
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)?;
    assert_eq!(
        error["error"]["message"],
        "no API key: set LOKET_API_KEY (or --api-key)"
    );

    let out = loketctl(&[addr], &["explain", "okebayar", "208", "--offline"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));

    // With a key it goes on to connect; the refusal names each cause once.
    let out = loketctl(&[addr, ("LOKET_API_KEY", "lk_test")], &purchase).await?;
    assert_eq!(out.status.code(), Some(3), "{}", shown(&out));
    let text = stderr(&out);
    assert!(text.contains("cannot connect"), "{}", shown(&out));
    assert!(
        text.matches("tcp connect error").count() <= 1,
        "{}",
        shown(&out)
    );
    Ok(())
}
