//! The test harness. [`nats::NatsServer`] starts a private nats-server with
//! JetStream on a random port and a temporary store; [`postgres`] gives each
//! test a fresh, migrated database on a private PostgreSQL server (shared by
//! the tests of one run); [`app::TestApp`] starts the simulators and every
//! service in-process through the same `run` functions the binaries call, and
//! tears everything down on drop; [`logs`] captures every log line.
//!
//! Nothing here is mocked: tests talk gRPC to the real ingress, the bus is a
//! real nats-server, the database a real PostgreSQL, providers real HTTP.

pub mod app;
pub mod logs;
pub mod nats;
pub mod ports;
pub mod postgres;
pub mod smilepayz;
pub mod snapqr;

pub use app::{TestApp, TestOptions, CANARY_PIN};
