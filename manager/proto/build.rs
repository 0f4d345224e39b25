//! Compiles `proto/strata/v1/strata.proto` and `proto/strata/exec/v1/executor.proto` with a pure-Rust protobuf
//! compiler (protox), so a clean machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["strata/v1/strata.proto", "strata/exec/v1/executor.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
