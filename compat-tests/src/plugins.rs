//! Loaded plugins in the compat tests: where the workspace's plugin libraries are built,
//! and a Concord started with a config file that loads some of them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::server::{Backend, Server, ServerOptions, concord_bin};

/// `lib<crate>.so`, built beside the `concord` binary under test (cdylib crates of the
/// workspace: `cargo build --release --workspace` builds them).
pub fn plugin_library(crate_name: &str) -> Result<PathBuf> {
    let bin = concord_bin()?;
    let dir = bin
        .parent()
        .context("the concord binary has no directory")?;
    let library = dir.join(format!("lib{}.so", crate_name.replace('-', "_")));
    ensure!(
        library.is_file(),
        "{} is missing: build it with `cargo build --release -p {crate_name}`",
        library.display()
    );
    Ok(library)
}

/// Concord with `config` (TOML text) as its config file, written into `dir`.
pub async fn concord_with_config(dir: &Path, config: &str) -> Result<Server> {
    let file = dir.join("concord.toml");
    std::fs::write(&file, config).with_context(|| format!("cannot write {}", file.display()))?;
    let options = ServerOptions {
        concord_env: vec![("CONCORD_CONFIG".into(), file.display().to_string())],
        ..Default::default()
    };
    Server::start_with(Backend::Concord, options).await
}

/// TOML for one `[[plugins]]` entry and its adapter section (`extra`: more keys).
pub fn plugin_section(name: &str, path: &Path, listen: &str, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = {name:?}\npath = {:?}\n\n[adapters.{name}]\nlisten = {listen:?}\n{extra}\n",
        path.display().to_string()
    )
}
