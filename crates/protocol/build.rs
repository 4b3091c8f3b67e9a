//! Compiles `proto/` with protox (pure Rust, no system protoc) and tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = [
        "loket/v1/common.proto",
        "loket/v1/api.proto",
        "loket/v1/bus.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={proto_root}/{file}");
    }
    let descriptors = protox::compile(files, [proto_root])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // What gRPC reflection shows any caller of the client port: the API and
    // what it imports, not the bus's messages (commands, results, operator
    // decisions), which are internal.
    let mut api = descriptors.clone();
    api.file.retain(|file| file.name() != "loket/v1/bus.proto");
    std::fs::write(
        out_dir.join("loket_api_descriptor.bin"),
        prost::Message::encode_to_vec(&api),
    )?;
    // The messages and the server, whose requests decode with our codec
    // (bad protobuf is the caller's INVALID_ARGUMENT) ...
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .codec_path("crate::codec::RequestCodec")
        .compile_fds(descriptors.clone())?;
    // ... and the client alone, over those same messages, with prost's.
    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .extern_path(".loket.v1", "crate::pb::loket::v1")
        .out_dir(&client_dir)
        .compile_fds(descriptors)?;
    Ok(())
}
