//! Metric names of the simulators (one place, so dashboards and code agree).

/// Requests received, labelled `provider`, `operation` and `code` (the
/// status code answered, or `fault` for a reply the scenario broke).
pub const REQUESTS_TOTAL: &str = "loket_sim_requests_total";
/// Callback HTTP attempts, labelled `provider` and `result` (`ok`/`error`).
pub const CALLBACK_ATTEMPTS_TOTAL: &str = "loket_sim_callback_attempts_total";
/// Keys a simulator forgot to stay within `remembered_references`, labelled
/// `provider` and `record` (which memory: `ledger`, `inquiries`, `orders`,
/// `payments`, `issued_qrs`, `external_ids`, `requests`, `callbacks`). One
/// forgotten purchase usually counts once in each record that held it.
pub const FORGOTTEN_REFERENCES_TOTAL: &str = "loket_sim_forgotten_references_total";
/// Connections a simulator's port closed at accept because it held
/// `max_connections`, labelled `reason` (`full`), summed over the process's
/// simulators.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "loket_sim_connections_refused_total";
/// Open connections to the simulators' ports, summed over the process's
/// simulators.
pub const CONNECTIONS_OPEN: &str = "loket_sim_connections_open";
