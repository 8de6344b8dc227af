//! The example plugin, Consul's KV HTTP API (`plugins/consul-kv`), loaded from its shared
//! library by a Concord started with a config naming it (Concord only; there is no
//! Consul server on Debian to compare with): the py-consul client's session (CRUD,
//! flags, recurse, keys, check-and-set, blocking queries), one namespace with etcd and
//! ZooKeeper, a blocking query woken by an etcd Put, bad requests, and mutual TLS done
//! by the host for the plugin's port.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use concord_compat_tests::plugins::{concord_with_config, plugin_library, plugin_section};
use concord_compat_tests::python::session;
use concord_compat_tests::tls::make_certificates;
use concord_compat_tests::{Server, concord_skipped, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zookeeper_client as zk;

const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

struct Consul {
    server: Server,
    endpoint: String,
    _dir: tempfile::TempDir,
}

async fn concord_with_consul() -> Result<Option<Consul>> {
    if concord_skipped()? {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let library = plugin_library("concord-consul-kv")?;
    let endpoint = format!("127.0.0.1:{}", free_port()?);
    let config = plugin_section("consul", &library, &endpoint, "");
    let server = concord_with_config(dir.path(), &config).await?;
    Ok(Some(Consul {
        server,
        endpoint,
        _dir: dir,
    }))
}

/// One HTTP/1.1 answer: status, lower-case headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn index(&self) -> Result<i64> {
        self.header("x-consul-index")
            .context("no X-Consul-Index")?
            .parse()
            .context("X-Consul-Index is not a number")
    }

    fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request (with `Connection: close`) and reads the whole answer.
async fn http(endpoint: &str, method: &str, target: &str, body: &[u8]) -> Result<Answer> {
    let exchange = async {
        let mut stream = TcpStream::connect(endpoint).await?;
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        // A server may answer (413) and close before the whole body is sent, as Consul
        // does: the answer is what counts.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {target}: no answer in time"))??;
    parse_answer(&raw).with_context(|| format!("{method} {target}"))
}

fn parse_answer(raw: &[u8]) -> Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// The value of the single entry of a Consul GET answer, decoded from base64.
fn entry_value(answer: &Answer) -> Result<String> {
    let entries = answer.json()?;
    let encoded = entries[0]["Value"]
        .as_str()
        .with_context(|| format!("no Value in {entries}"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .with_context(|| format!("not base64: {encoded}"))?;
    Ok(String::from_utf8_lossy(&decoded).into_owned())
}

#[tokio::test]
async fn py_consul_session() -> Result<()> {
    let Some(consul) = concord_with_consul().await? else {
        return Ok(());
    };
    let (host, port) = consul
        .endpoint
        .split_once(':')
        .context("endpoint without a port")?;
    let transcript = session(
        "consul_session.py",
        &[host.to_string(), port.to_string()],
        &[],
        Duration::from_secs(120),
        "Concord (consul plugin)",
    )
    .await?;
    ensure!(
        transcript.contains("checks passed"),
        "session did not finish:\n{transcript}"
    );
    Ok(())
}

#[tokio::test]
async fn consul_keys_are_etcd_and_zookeeper_keys() -> Result<()> {
    let Some(consul) = concord_with_consul().await? else {
        return Ok(());
    };
    let put = http(&consul.endpoint, "PUT", "/v1/kv/app/db", b"primary").await?;
    ensure!(put.status == 200 && put.body == b"true", "{put:?}");

    let mut etcd = consul.server.client().await?;
    let got = etcd.get("/app/db", None).await?;
    ensure!(
        got.kvs().first().map(|kv| kv.value()) == Some(b"primary".as_slice()),
        "etcd sees {got:?}"
    );
    let zk = tokio::time::timeout(
        ANSWER_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&consul.server.zk_endpoint()),
    )
    .await
    .context("ZooKeeper connect timed out")??;
    let (data, _) = tokio::time::timeout(ANSWER_TIMEOUT, zk.get_data("/app/db"))
        .await
        .context("getData timed out")??;
    ensure!(data == b"primary", "ZooKeeper sees {data:?}");

    // And the other way: what etcd writes, Consul lists.
    etcd.put("/app/cache", "warm", None).await?;
    let listed = http(&consul.endpoint, "GET", "/v1/kv/app/?keys", b"").await?;
    ensure!(
        listed.json()? == serde_json::json!(["app/cache", "app/db"]),
        "{listed:?}"
    );
    let raw = http(&consul.endpoint, "GET", "/v1/kv/app/cache?raw", b"").await?;
    ensure!(raw.status == 200 && raw.body == b"warm", "{raw:?}");

    // Deleted through Consul: gone for etcd too.
    let deleted = http(&consul.endpoint, "DELETE", "/v1/kv/app/db", b"").await?;
    ensure!(deleted.body == b"true", "{deleted:?}");
    ensure!(
        etcd.get("/app/db", None).await?.kvs().is_empty(),
        "etcd still has /app/db"
    );
    Ok(())
}

#[tokio::test]
async fn a_blocking_query_is_woken_by_an_etcd_put() -> Result<()> {
    let Some(consul) = concord_with_consul().await? else {
        return Ok(());
    };
    http(&consul.endpoint, "PUT", "/v1/kv/svc/leader", b"node-1").await?;
    let first = http(&consul.endpoint, "GET", "/v1/kv/svc/leader", b"").await?;
    let index = first.index()?;
    ensure!(entry_value(&first)? == "node-1", "{first:?}");

    let endpoint = consul.endpoint.clone();
    let blocked = tokio::spawn(async move {
        http(
            &endpoint,
            "GET",
            &format!("/v1/kv/svc/leader?index={index}&wait=60s"),
            b"",
        )
        .await
    });
    // The query is still waiting: nothing has changed after `index`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !blocked.is_finished(),
        "the blocking query answered before any change"
    );
    // An unrelated key does not wake it.
    let mut etcd = consul.server.client().await?;
    etcd.put("/svc/other", "x", None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !blocked.is_finished(),
        "an unrelated key woke the blocking query"
    );

    etcd.put("/svc/leader", "node-2", None).await?;
    let woken = tokio::time::timeout(ANSWER_TIMEOUT, blocked)
        .await
        .context("the blocking query was not woken by the etcd Put")???;
    ensure!(woken.status == 200, "{woken:?}");
    ensure!(entry_value(&woken)? == "node-2", "{woken:?}");
    ensure!(woken.index()? > index, "index did not move: {woken:?}");
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_consuls_errors_and_change_nothing() -> Result<()> {
    let Some(consul) = concord_with_consul().await? else {
        return Ok(());
    };
    let cases: [(&str, &str, &[u8], u16); 5] = [
        ("PUT", "/v1/kv/k?cas=abc", b"v", 400),
        ("PUT", "/v1/kv/k?flags=-1", b"v", 400),
        ("GET", "/v1/kv/k?index=1&wait=forever", b"", 400),
        ("PATCH", "/v1/kv/k", b"v", 405),
        ("PUT", "/v1/kv/", b"v", 400),
    ];
    for (method, target, body, status) in cases {
        let answer = http(&consul.endpoint, method, target, body).await?;
        ensure!(answer.status == status, "{method} {target}: {answer:?}");
    }
    let big = vec![b'x'; 512 * 1024 + 1];
    let answer = http(&consul.endpoint, "PUT", "/v1/kv/k", &big).await?;
    ensure!(answer.status == 413, "{answer:?}");
    ensure!(
        String::from_utf8_lossy(&answer.body).contains("Value exceeds 524288 byte limit"),
        "{answer:?}"
    );
    // Garbage instead of HTTP: 400, and the connection is closed.
    let mut stream = TcpStream::connect(&consul.endpoint).await?;
    stream.write_all(b"\x00\x01 not http\r\n\r\n").await?;
    let mut raw = Vec::new();
    tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .context("garbage: the connection stayed open")??;
    let answer = parse_answer(&raw)?;
    ensure!(answer.status == 400, "garbage: {answer:?}");

    // Nothing was written by any of them.
    let missing = http(&consul.endpoint, "GET", "/v1/kv/k", b"").await?;
    if missing.status != 404 {
        bail!("k exists after refused requests: {missing:?}");
    }
    let mut etcd = consul.server.client().await?;
    ensure!(
        etcd.get("/k", None).await?.kvs().is_empty(),
        "/k was written"
    );
    Ok(())
}

/// curl against `url` with `args`, bounded; (exit code, stdout).
async fn curl(args: &[&str], url: &str) -> Result<(i32, String)> {
    let output = tokio::time::timeout(
        ANSWER_TIMEOUT,
        tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("curl did not finish")?
    .context("cannot run curl")?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn the_host_does_mutual_tls_for_a_plugin() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let library = plugin_library("concord-consul-kv")?;
    let endpoint = format!("127.0.0.1:{}", free_port()?);
    let config = format!(
        "[tls.consul]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\n{}",
        file("server.pem"),
        file("server-key.pem"),
        file("ca.pem"),
        plugin_section("consul", &library, &endpoint, "tls = \"consul\"")
    );
    let server = concord_with_config(dir.path(), &config).await?;
    let url = format!("https://{endpoint}/v1/kv/secure");
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client-key.pem"));
    let trusted = ["--cacert", &ca, "--cert", &cert, "--key", &key];

    let put = [&trusted[..], &["-X", "PUT", "--data-binary", "sealed"]].concat();
    let (code, body) = curl(&put, &url).await?;
    ensure!(
        code == 0 && body == "true",
        "PUT over mutual TLS: {code} {body}"
    );
    let (code, body) = curl(
        &[&trusted[..], &["-o", "-"]].concat(),
        &format!("{url}?raw"),
    )
    .await?;
    ensure!(
        code == 0 && body == "sealed",
        "GET over mutual TLS: {code} {body}"
    );

    // No client certificate, or plaintext: refused, logged, nothing served.
    let (code, _) = curl(&["--cacert", &ca], &url).await?;
    ensure!(code != 0, "served without a client certificate");
    let (code, body) = curl(&[], &format!("http://{endpoint}/v1/kv/secure")).await?;
    ensure!(
        code != 0 && body.is_empty(),
        "served plaintext: {code} {body}"
    );
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    ensure!(
        log.contains("TLS handshake refused on a plugin's port"),
        "no refusal logged:\n{}",
        server.log_tail()
    );
    Ok(())
}
