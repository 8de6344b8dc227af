//! Compiles the plugin envelope (`proto/concord_plugin.proto`) and the etcd v3 messages it
//! carries (declared once, in `protocols/etcd-v3/proto`) into prost messages; no
//! services, no system protoc.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../../protocols/etcd-v3/proto");
    let fds = protox::compile(
        ["concord_plugin.proto"],
        ["proto", "../../protocols/etcd-v3/proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
