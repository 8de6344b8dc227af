//! Compiles the plugin envelope for the host side, with its etcd v3 messages mapped onto
//! the etcd adapter's generated types, so kernel calls convert with its `convert` module.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=../abi/proto");
    let fds = protox::compile(
        ["concord_plugin.proto"],
        ["../abi/proto", "../../protocols/etcd-v3/proto"],
    )?;
    let mut config = tonic_prost_build::configure()
        .build_client(false)
        .build_server(false);
    for package in ["etcdserverpb", "mvccpb", "authpb"] {
        config = config.extern_path(
            format!(".{package}"),
            format!("::concord_etcd_v3::pb::{package}"),
        );
    }
    config.compile_fds(fds)?;
    Ok(())
}
