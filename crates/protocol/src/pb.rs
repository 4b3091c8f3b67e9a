//! Generated protobuf types. Domain values (money, outcomes, times) convert
//! to and from them in [`crate::conversions`]; whole messages are built where
//! their data lives (`loket-store` builds a transaction's API view and bus
//! command from its row).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod loket {
    pub mod v1 {
        tonic::include_proto!("loket.v1");
        // The client, generated apart so that only the server decodes with
        // `crate::codec::RequestCodec` (see build.rs).
        include!(concat!(env!("OUT_DIR"), "/client/loket.v1.rs"));
        pub mod bus {
            tonic::include_proto!("loket.v1.bus");
        }
    }
}

pub use loket::v1::*;

/// The encoded file descriptor set of the gRPC API (`api.proto` and what it
/// imports; not `bus.proto`), for gRPC reflection.
pub const API_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/loket_api_descriptor.bin"));
