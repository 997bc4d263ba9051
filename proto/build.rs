//! Compiles `proto/berth/v1/*.proto` with protox (pure Rust, no system `protoc`).

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "berth/v1/common.proto",
    "berth/v1/cluster.proto",
    "berth/v1/scheduler.proto",
    "berth/v1/cloud.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();
    // NB: compile_fds does not write the descriptor set; reflection needs it.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("berth_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
