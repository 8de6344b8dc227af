//! Python client sessions: a script in `compat-tests/python/` run with `python3`,
//! bounded in time, its standard output the transcript.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::zookeeper::run_bounded;

/// This crate's directory as `cargo test` gives it to the running test; the compile-time
/// value goes stale when a shared target dir is reused from another checkout path.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
}

/// Runs `python/<script> ARGS` with `env`, for at most `timeout`, and returns what it
/// printed; a failure names `against` (the server it ran against) and shows both
/// streams.
pub async fn session(
    script: &str,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    against: &str,
) -> Result<String> {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(crate_dir().join("python").join(script))
        .args(args)
        .envs(env.iter().copied());
    let output = run_bounded(command, None, timeout)
        .await
        .context("cannot run python3 (scripts/install-deps.sh --test installs the clients)")?;
    if !output.status.success() {
        bail!(
            "{script} against {against} failed ({}):\n{}\n{}",
            output.status,
            output.stdout,
            output.stderr
        );
    }
    Ok(output.stdout)
}
