//! Generated protobuf types. Domain code converts to and from these in
//! [`crate::conversions`]; nothing else should build them field by field.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod loket {
    pub mod v1 {
        tonic::include_proto!("loket.v1");
        pub mod bus {
            tonic::include_proto!("loket.v1.bus");
        }
    }
}

pub use loket::v1::*;

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/loket_descriptor.bin"));
