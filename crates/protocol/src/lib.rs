//! loket's shared protocol: the generated protobuf types of the gRPC API and of
//! every bus message (`proto/` is the one schema source), the NATS subject
//! names, exact money, the unified outcome taxonomy, provider identities,
//! the transaction state machine and what an operator's decision on a
//! transaction in review may be.
//!
//! This crate does no I/O and holds no policy that needs a clock or a network:
//! everything here is a pure value or a pure function, so every service and
//! every test agrees on what a state, an outcome or a subject is.

pub mod catalogue;
pub mod codec;
pub mod conversions;
pub mod horizon;
pub mod money;
pub mod operation;
pub mod outcome;
pub mod pb;
pub mod product;
pub mod provider;
pub mod review;
pub mod state;
pub mod subjects;
pub mod text;
pub mod wib;

pub use money::{Currency, Money, MoneyError};
pub use operation::{Operation, TransactionKind};
pub use outcome::Outcome;
pub use product::ProductKind;
pub use provider::Provider;
pub use state::{Decision, TransactionStatus};
pub use wib::wib;
