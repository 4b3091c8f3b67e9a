//! OkeBayar H2H (`shared/protocols/okebayar.md`): the flat XML/JSON wire
//! format ([`wire`]), the MD5 signature ([`sign`]), status classification
//! through the code catalogue ([`codes`]), the connector ([`connector`]) and
//! callback parsing ([`callback`]).
//!
//! This crate knows OkeBayar and nothing else; the worker loop, the bus and
//! the database belong to `loket-connector`, the reconciler and the ingress.

pub mod sign;
pub mod wire;
