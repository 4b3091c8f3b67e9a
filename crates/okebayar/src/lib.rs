//! OkeBayar H2H (`shared/protocols/okebayar.md`): the flat XML/JSON wire
//! format ([`wire`]), the MD5 signature ([`sign`]), the settings and the
//! transaction codes ([`settings`]), status classification through the code
//! catalogue ([`codes`]), the connector that builds, sends and classifies
//! every operation ([`connector`]), callback parsing and acknowledgement
//! ([`callback`]), and the connector worker service ([`service::run`], binary
//! `loket-okebayar-connector`).
//!
//! This crate knows OkeBayar and nothing else; the worker loop, the bus and
//! the database belong to `loket-connector`, the reconciler and the ingress.
//! It must not keep its own code table (the catalogue is the one source), must
//! never turn an unclear answer into a failure, and must never let the PIN or
//! a signature reach a log, an error, a `Debug` output or a stored exchange.

pub mod callback;
pub mod codes;
pub mod connector;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod sign;
pub mod wire;

pub use callback::OkeBayarCallbacks;
pub use connector::OkeBayarConnector;
pub use service::{run, ConnectorSettings, Error};
pub use settings::{OkeBayarSettings, STATUS_NOT_FOUND_CODE_DEFAULT};
