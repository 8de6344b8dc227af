//! Snapshots: saving one with `etcdctl snapshot save`, and starting a new server whose
//! data directory was restored from it.
//!
//! Restoring is each backend's own offline command:
//!
//! * etcd: `etcdctl snapshot restore FILE --data-dir DIR --name NAME
//!   --initial-cluster NAME=PEERURL --initial-advertise-peer-urls PEERURL`;
//! * Concord: `concord restore --snapshot FILE --data-dir DIR --name NAME`.
//!
//! Either way the data directory is `dir/data`, which is where [`Server::start_in`]
//! looks, so the restored server is then started with it.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::etcdctl::{ETCDCTL_BIN, ETCDCTL_TIMEOUT};
use crate::server::{Backend, MEMBER_NAME, Server, concord_command, free_port};

/// Runs `etcdctl snapshot save FILE` against `endpoint`; fails unless it exits 0.
pub async fn save_snapshot(endpoint: &str, file: &Path) -> Result<()> {
    let file = file.to_str().context("snapshot path is not UTF-8")?;
    let out = crate::etcdctl(endpoint, &["snapshot", "save", file], None).await?;
    if !out.success() {
        bail!("etcdctl snapshot save failed: {out:?}");
    }
    Ok(())
}

/// Writes a data directory at `dir/data` restored from `snapshot` with `backend`'s own
/// restore command (see the module doc).
pub async fn restore_data_dir(backend: Backend, snapshot: &Path, dir: &Path) -> Result<()> {
    let data_dir = dir.join("data");
    let mut command = match backend {
        Backend::Etcd => {
            // The peer URL is only recorded in the membership; a single member never
            // dials it, so any free port will do.
            let peer_url = format!("http://127.0.0.1:{}", free_port()?);
            let mut command = Command::new(ETCDCTL_BIN);
            command
                .env("ETCDCTL_API", "3")
                .arg("snapshot")
                .arg("restore")
                .arg(snapshot)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--name")
                .arg(MEMBER_NAME)
                .arg("--initial-cluster")
                .arg(format!("{MEMBER_NAME}={peer_url}"))
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url);
            command
        }
        Backend::Concord => {
            let mut command = Command::from(concord_command()?);
            command
                .arg("restore")
                .arg("--snapshot")
                .arg(snapshot)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--name")
                .arg(MEMBER_NAME);
            command
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(ETCDCTL_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{backend} restore did not finish within {ETCDCTL_TIMEOUT:?}"))?
        .with_context(|| format!("cannot run {backend}'s restore: {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{backend} restore failed ({}): stdout {:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Restores `snapshot` into `dir/data` with `backend`'s restore command, then starts a
/// server of `backend` on it (fresh ports; `dir` is left in place when it is dropped).
pub async fn restore_from(backend: Backend, snapshot: &Path, dir: &Path) -> Result<Server> {
    restore_data_dir(backend, snapshot, dir).await?;
    Server::start_in(backend, dir)
        .await
        .with_context(|| format!("{backend} did not start on the restored data"))
}
