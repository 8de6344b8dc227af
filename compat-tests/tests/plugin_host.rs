//! The plugin host (Concord only): a loaded plugin serves its own port beside the
//! built-in dialects; a plugin that panics is stopped alone (its connections and its
//! listener close, with a log line saying why) while etcd keeps serving; a library of
//! another ABI major version, a missing file and a library without the entry symbol are
//! each refused at load with their own message, and the node serves without them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::plugins::{concord_with_config, plugin_library, plugin_section};
use concord_compat_tests::{Server, concord_skipped, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Reads until `want` bytes have arrived (or the peer closes, or time runs out).
async fn read_exactly(stream: &mut TcpStream, want: usize) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 1024];
    while got.len() < want {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .context("no answer in time")??;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buffer[..n]);
    }
    Ok(got)
}

/// Whether the peer closes the connection (EOF or reset) within the wait.
async fn closed_by_peer(stream: &mut TcpStream) -> Result<bool> {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(true),
        Ok(Ok(_)) => Ok(false),
        Err(_) => bail!("the connection neither closed nor answered"),
    }
}

/// Waits (bounded) until the server's log contains `needle`.
async fn log_shows(server: &Server, needle: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if log.contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("log never showed {needle:?}; tail:\n{}", server.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn etcd_still_serves(server: &Server) -> Result<()> {
    let mut client = server.client().await?;
    client.put("/after", "still here", None).await?;
    let got = client.get("/after", None).await?;
    ensure!(
        got.kvs().first().map(|kv| kv.value()) == Some(b"still here".as_slice()),
        "etcd read back {got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_loaded_plugin_serves_and_a_panic_stops_only_it() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let echo = plugin_library("concord-test-plugin-echo")?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config = plugin_section("echo", &echo, &listen, "greeting = \"hello\"");
    let server = concord_with_config(dir.path(), &config).await?;
    log_shows(&server, "plugin loaded").await?;

    // The plugin greets (its own setting), echoes, and closes when asked to.
    let mut first = TcpStream::connect(&listen).await?;
    ensure!(
        read_exactly(&mut first, 6).await? == b"hello\n",
        "no greeting"
    );
    first.write_all(b"ping\n").await?;
    ensure!(read_exactly(&mut first, 5).await? == b"ping\n", "no echo");
    first.write_all(b"quit\n").await?;
    ensure!(closed_by_peer(&mut first).await?, "quit did not close");

    // Two connections at once; one makes the plugin panic: both close, the port closes.
    let mut bystander = TcpStream::connect(&listen).await?;
    ensure!(
        read_exactly(&mut bystander, 6).await? == b"hello\n",
        "no greeting"
    );
    let mut culprit = TcpStream::connect(&listen).await?;
    ensure!(
        read_exactly(&mut culprit, 6).await? == b"hello\n",
        "no greeting"
    );
    culprit.write_all(b"panic\n").await?;
    ensure!(
        closed_by_peer(&mut culprit).await?,
        "the panicking connection stayed open"
    );
    ensure!(
        closed_by_peer(&mut bystander).await?,
        "the other connection stayed open"
    );
    log_shows(
        &server,
        "plugin \"echo\" panicked: asked to panic; stopping the plugin",
    )
    .await?;
    log_shows(&server, "plugin stopped: its listener is closed").await?;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(&listen).await.is_ok() {
        ensure!(
            Instant::now() < deadline,
            "{listen} still accepts after the panic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    etcd_still_serves(&server).await
}

#[tokio::test]
async fn libraries_that_cannot_be_plugins_are_refused_at_load() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let wrong_abi = plugin_library("concord-test-plugin-wrong-abi")?;
    let missing = dir.path().join("libmissing.so");
    let no_entry = library_without_entry_symbol()?;
    let mut config = String::new();
    for (name, path) in [
        ("future", &wrong_abi),
        ("missing", &missing),
        ("plain", &no_entry),
    ] {
        let listen = format!("127.0.0.1:{}", free_port()?);
        config.push_str(&plugin_section(name, path, &listen, ""));
    }
    let server = concord_with_config(dir.path(), &config).await?;
    log_shows(
        &server,
        &format!(
            "plugin \"future\": {} speaks plugin ABI 2.0; this host speaks 1.0 (the major versions must match); serving without it",
            wrong_abi.display()
        ),
    )
    .await?;
    log_shows(
        &server,
        &format!(
            "plugin \"missing\": cannot load {}: No such file or directory",
            missing.display()
        ),
    )
    .await?;
    log_shows(
        &server,
        &format!(
            "plugin \"plain\": {} has no entry symbol `concord_plugin_entry`",
            no_entry.display()
        ),
    )
    .await?;
    etcd_still_serves(&server).await
}

/// A real shared library that is no plugin: the Rust toolchain's own `libstd-*.so`.
fn library_without_entry_symbol() -> Result<std::path::PathBuf> {
    let libdir = std::process::Command::new("rustc")
        .args(["--print", "target-libdir"])
        .output()
        .context("cannot run rustc")?;
    let lib = Path::new(String::from_utf8_lossy(&libdir.stdout).trim()).to_path_buf();
    std::fs::read_dir(&lib)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libstd-") && n.ends_with(".so"))
        })
        .with_context(|| format!("no libstd-*.so in {}", lib.display()))
}
