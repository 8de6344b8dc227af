//! Where the etcd v2 API is served (Concord only): on the etcd client port beside
//! gRPC by default (as etcd does), on a port of its own when `adapters.etcd_v2.listen`
//! is set, and nowhere when disabled; gRPC keeps working on the client port throughout.

use anyhow::{Result, ensure};
use concord_compat_tests::v2::call;
use concord_compat_tests::{Backend, Server, ServerOptions, concord_skipped, free_port};

async fn concord_with(env: &[(&str, String)]) -> Result<Option<Server>> {
    if concord_skipped()? {
        return Ok(None);
    }
    let options = ServerOptions {
        concord_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    Ok(Some(Server::start_with(Backend::Concord, options).await?))
}

/// Whether an etcd v2 request on `endpoint` gets a v2 answer.
async fn serves_v2(endpoint: &str) -> bool {
    call(endpoint, "GET", "/v2/keys/", &[])
        .await
        .is_ok_and(|reply| reply.status == 200 && reply.header("x-etcd-index").is_some())
}

#[tokio::test]
async fn v2_shares_the_client_port_by_default() -> Result<()> {
    let Some(server) = concord_with(&[]).await? else {
        return Ok(());
    };
    ensure!(
        serves_v2(&server.endpoint()).await,
        "no v2 on the client port"
    );
    // gRPC on the same port (the server's readiness check used it, this checks again).
    let mut client = concord_compat_tests::connect(&server.endpoint()).await?;
    client.put("/shared", "yes", None).await?;
    let reply = call(&server.endpoint(), "GET", "/v2/keys/shared", &[]).await?;
    ensure!(reply.json()?["node"]["value"] == "yes", "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn v2_on_its_own_port_or_disabled() -> Result<()> {
    let port = free_port()?;
    let own = format!("127.0.0.1:{port}");
    let Some(server) = concord_with(&[("CONCORD_ADAPTERS__ETCD_V2__LISTEN", own.clone())]).await?
    else {
        return Ok(());
    };
    ensure!(serves_v2(&own).await, "no v2 on its own port {own}");
    ensure!(
        !serves_v2(&server.endpoint()).await,
        "v2 still on the client port"
    );
    drop(server);
    let Some(server) =
        concord_with(&[("CONCORD_ADAPTERS__ETCD_V2__ENABLED", "false".into())]).await?
    else {
        return Ok(());
    };
    ensure!(
        !serves_v2(&server.endpoint()).await,
        "a disabled v2 answers"
    );
    let mut client = concord_compat_tests::connect(&server.endpoint()).await?;
    client.put("/still", "grpc", None).await?;
    Ok(())
}
