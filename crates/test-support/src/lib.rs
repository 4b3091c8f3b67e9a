//! The test harness. [`nats::NatsServer`] starts a private nats-server with
//! JetStream on a random port and a temporary store; [`postgres`] gives each
//! test a fresh, migrated database on a private PostgreSQL server (shared by
//! the tests of one run); [`app::TestApp`] starts the simulators and every
//! service in-process through the same `run` functions the binaries call, and
//! tears everything down on drop (failing the test if a service ended by
//! itself), and [`backing::Backing`] gives a service's own tests the bus and
//! the database without it; [`deployment::Deployment`] runs every service as
//! its own process, from the built binaries, for tests that `kill -9` or
//! pause one; [`logs`] captures every log line; [`leaks`] looks for every
//! canary secret in them, in the database, in error messages, on the bus and
//! in PostgreSQL's log.
//!
//! `nats`, `postgres`, `backing`, `logs`, `masking`, `ports` and `signal` are
//! always available; `app`, `deployment`, `leaks` and the provider fixtures
//! need the `app` feature (they depend on every service, so a service's own
//! tests use the harness without it).
//!
//! Nothing here is mocked: tests talk gRPC to the real ingress, the bus is a
//! real nats-server, the database a real PostgreSQL, providers real HTTP.

pub mod admin;
#[cfg(feature = "app")]
pub mod app;
pub mod backing;
#[cfg(feature = "app")]
pub mod deployment;
#[cfg(feature = "app")]
pub mod leaks;
pub mod logs;
pub mod masking;
pub mod nats;
pub mod ports;
pub mod postgres;
#[cfg(feature = "app")]
mod service;
pub mod signal;
#[cfg(feature = "app")]
pub mod smilepayz;
#[cfg(feature = "app")]
pub mod snapqr;

#[cfg(feature = "app")]
pub use app::{TestApp, TestOptions, CANARY_NUMERIC_PIN, CANARY_PIN};
#[cfg(feature = "app")]
pub use loket_callback::Failpoint as CallbackFailpoint;
#[cfg(feature = "app")]
pub use loket_ingress::dispatch::Failpoint as IngressFailpoint;
