//! What every loket service shares and none should write twice: typed
//! configuration with masked secrets ([`config`]), logging and trace context
//! ([`telemetry`]), the admin port with liveness, readiness and Prometheus
//! metrics ([`admin`]), graceful shutdown ([`shutdown`]), the JetStream layout
//! ([`bus`]) and the Postgres pool with migrations ([`db`]).
//!
//! It owns no business rule: no state transition, no provider protocol.
//!
//! It also chooses the memory allocator of every loket binary (they all link
//! this crate): mimalloc. The services allocate and free many small buffers
//! per message (protobuf, HTTP, JSON, SQL arguments); under load glibc's
//! malloc was about a fifth of their CPU time in `perf`.

pub mod admin;
pub mod bus;
pub mod config;
pub mod db;
pub mod shutdown;
pub mod telemetry;

pub use config::Secret;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use shutdown::Shutdown;
