//! Sends a signal to a child process by name (`kill -STOP <pid>`), for
//! tests that stop, pause or resume a process the way an operator or a
//! fault would.

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, …) to `child`.
pub fn send(child: &std::process::Child, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {}: {status}", child.id());
    Ok(())
}
