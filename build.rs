//! Compiles `proto/` with protox (no system `protoc`) and writes the descriptor
//! set that gRPC reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/keyward/v1/keyward.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=migrations");

    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("keyward_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Bad request bytes are the caller's bad input: INVALID_ARGUMENT.
        .codec_path("crate::transport::grpc::codec::WireCodec")
        .compile_fds(fds)?;
    Ok(())
}
