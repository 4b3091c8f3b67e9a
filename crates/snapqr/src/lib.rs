//! SNAP BI QR CPM (`shared/protocols/snap-qr-cpm.md`), the issuer side of a
//! customer-presented QR payment: signatures ([`sign`]: RSA token signature,
//! HMAC-SHA512 transaction signature, notify signatures, exact-byte minify),
//! the shared single-flight B2B token cache ([`token`]), the JSON bodies and
//! their lenient reading ([`wire`]), the connector that generates (59), pays
//! (60), queries (61), cancels (62) and refunds (80) and classifies every
//! answer through `loket_protocol::catalogue` ([`connector`]), notify (79)
//! verification and acknowledgement ([`callback`], [`callback_parser`]), the
//! B2B token grant as its granting side checks it, for the simulator and for
//! the tokens we grant issuers in notify mode B ([`b2b_token`]), and the
//! connector worker service ([`service::run`], binary
//! `loket-snapqr-connector`).
//!
//! This crate knows SNAP QR CPM and nothing else; the worker loop, the bus and
//! the database belong to `loket-connector`, the reconciler and the ingress.
//! It must not keep its own code table, must never turn an unclear answer
//! into a failure nor resend a payment blindly (409xx00 and timeouts are
//! resolved by query 61), and must never let the client secret, the private
//! key, an access token, a customer token or a signature reach a log, an
//! error, a `Debug` output or a stored exchange.

pub mod b2b_token;
pub mod callback;
pub mod connector;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod sign;
pub mod token;
pub mod wire;

pub use callback::{callback_parser, SnapQrCallbacks, NOTIFY_PATH};
pub use connector::SnapQrConnector;
pub use service::{run, ConnectorSettings, Error};
pub use settings::{NotifyMode, NotifySettings, SnapQrSettings, TimestampFormat};
