//! Differential runs: the same scripted session against real etcd and against the
//! backend under test, compared line by line.

use anyhow::{Result, bail};

use crate::diff;
use crate::server::{Backend, Server, backends};

/// Runs `session` on a fresh real etcd and on a fresh server of the backend under test
/// (Concord when it is selected, else etcd against itself), and fails with a diff if
/// the transcripts differ, keeping both in a temporary directory named after `name`.
/// Returns the reference transcript.
pub async fn compare_with_etcd<F>(name: &str, session: F) -> Result<String>
where
    F: AsyncFn(&Server) -> Result<String>,
{
    let subject = if backends()?.contains(&Backend::Concord) {
        Backend::Concord
    } else {
        Backend::Etcd
    };
    println!("{name}: comparing {subject} with real etcd");
    let mut reference = Server::start(Backend::Etcd).await?;
    let mut server = Server::start(subject).await?;
    let expected = session(&reference).await?;
    let actual = session(&server).await?;
    reference.ensure_running()?;
    server.ensure_running()?;
    if let Some(diff) = diff::lines(&expected, &actual) {
        let kept = tempfile::Builder::new()
            .prefix(&format!("compat-{name}-"))
            .tempdir()?
            .keep();
        std::fs::write(kept.join("etcd.txt"), &expected)?;
        std::fs::write(kept.join(format!("{subject}.txt")), &actual)?;
        bail!(
            "{subject} answered the {name} session differently from real etcd \
             (- etcd, + {subject}; full transcripts in {}):\n{diff}",
            kept.display()
        );
    }
    Ok(expected)
}
