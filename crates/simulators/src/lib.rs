//! Provider simulators: faithful sandboxes of each provider's protocol, used
//! by tests, demos and load tests (no real provider is reachable from our
//! machines). This crate owns the simulators' HTTP servers, their ledgers
//! (the simulated provider's own record of what it did, so tests can compare
//! loket's final states against it), the scenario rules (OkeBayar: chosen by
//! the account number; SNAP QR CPM and Smilepayz: by the amount, or a
//! `SCENARIO=` / `SIM-NNN` marker; see SCENARIOS.md), request counting per
//! reference (to prove nothing was sent twice) and the callbacks and
//! notifies a provider sends.
//!
//! It must stay faithful to the specs under `shared/protocols/` and never
//! borrow loket's own decisions: it reuses only the providers' wire codecs,
//! signatures and settings types (`wire`, `sign`, `settings` of
//! `loket-okebayar`, `loket-snapqr` and `loket-smilepayz`, with SNAP's token
//! and notify signing), never the connectors' classification, so a connector
//! bug cannot hide behind a simulator that shares it. Pieces every provider's
//! simulator needs (server with connection kill switch, body limits, request
//! counting, callback sender, outage switch) live in [`common`]; each
//! provider has its own module ([`okebayar`], [`snapqr`], [`smilepayz`]).

pub mod common;
pub mod metrics;
pub mod okebayar;
pub mod service;
pub mod smilepayz;
pub mod snapqr;

pub use common::{CallbackLog, CallbackMethod, Outage, OutageState, OutageSwitch, RequestCounts};
pub use okebayar::{LedgerEntry, LedgerOperation, OkeBayarSim, OkeBayarSimSettings};
