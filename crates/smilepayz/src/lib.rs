//! Smilepayz v2.0 (`shared/protocols/smilepayz.md`): SHA256withRSA request
//! signing and callback verification ([`sign`]), the pay-in / pay-out /
//! inquiry-status / balance bodies ([`wire`]), settings ([`settings`]),
//! classification through the code catalogue ([`codes`]), the connector
//! ([`connector`]), callback parsing and acknowledgement ([`callback`],
//! [`callback_parser`], path `/callback/smilepayz`), and the connector
//! worker service ([`service::run`], binary `loket-smilepayz-connector`).
//!
//! This crate knows Smilepayz and nothing else. It must not keep its own
//! code table (the catalogue is the one source), must never read a timeout,
//! a 5xx, a duplicate order or an unparseable reply as a failure, must never
//! read a pay-out's `00 PROCESSING` as success, must never let a callback's
//! unsigned body decide a final state (callbacks are `verified = false`) or
//! name a pay-in's method (only an inquiry does), and must never let the
//! merchant secret, a private key or a signature reach a log, an error, a
//! `Debug` output or a stored exchange.

pub mod callback;
pub mod codes;
pub mod connector;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod sign;
pub mod wire;

pub use callback::{callback_parser, SmilepayzCallbacks, CALLBACK_PATH};
pub use connector::SmilepayzConnector;
pub use service::{run, ConnectorSettings, Error};
pub use settings::{CallbackSettings, InvalidSetting, SmilepayzSettings};
pub use sign::{CallbackRecipe, TimestampStyle};
