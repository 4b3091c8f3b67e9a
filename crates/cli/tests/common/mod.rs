//! Running the real `loketctl` binary in a test: with exactly the loket
//! variables a test gives (none inherited from the caller's environment),
//! and its output shown whole in an assertion's message.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::Output;

use anyhow::{Context, Result};

/// Runs `loketctl` with `args` and exactly the loket variables in `vars`.
pub async fn loketctl(vars: &[(&str, &str)], args: &[&str]) -> Result<Output> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_loketctl"));
        for name in [
            "LOKET_ADDR",
            "LOKET_API_KEY",
            "LOKET_DATABASE_URL",
            "LOKET_NATS_URL",
        ] {
            command.env_remove(name);
        }
        command.args(&args).envs(vars).output()
    })
    .await?
    .context("run loketctl")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both streams and the exit code, for an assertion's message.
pub fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}
