//! What every loket service shares and none should write twice: typed
//! configuration with masked secrets ([`config`]), logging and trace context
//! ([`telemetry`]), the admin port with liveness, readiness and Prometheus
//! metrics ([`admin`]), graceful shutdown ([`shutdown`]), the JetStream layout
//! ([`bus`]) and the Postgres pool with migrations ([`db`]).
//!
//! It owns no business rule: no state transition, no provider protocol.

pub mod admin;
pub mod bus;
pub mod config;
pub mod db;
pub mod shutdown;
pub mod telemetry;

pub use config::Secret;
pub use shutdown::Shutdown;
