//! Bad input to the streaming services that must be answered in-band, not by breaking
//! the stream: a keep-alive for an unknown lease, a watch with an empty range, a cancel
//! of an unknown watch id. After each, the same stream must keep working. Every
//! scenario runs on real etcd and on Concord.

use std::time::Duration;

use anyhow::Result;
use concord_compat_tests::check::revision;
use concord_compat_tests::streams::{
    EventView, KvView, RawKeepAlive, collect_events, expect_no_response, next_response,
};
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::WatchOptions;

async fn unknown_lease(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut raw, answer) = RawKeepAlive::open(&s.endpoint, 12345).await?;
    ensure_eq!((answer.id, answer.ttl), (12345, 0));
    for id in [0, -1, i64::MAX] {
        let answer = raw.keep_alive(id).await?;
        ensure_eq!((answer.id, answer.ttl), (id, 0), "keep-alive of {id}");
    }
    let lease = c.lease_grant(20, None).await?.id();
    let answer = raw.keep_alive(lease).await?;
    ensure_eq!(
        (answer.id, answer.ttl),
        (lease, 20),
        "the stream still works"
    );
    Ok(())
}

#[tokio::test]
async fn keep_alive_of_unknown_leases_answers_ttl_zero_in_band() -> Result<()> {
    on_each_backend(unknown_lease).await
}

async fn empty_range(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("ok", None).await?;
    for (key, end) in [("b", "a"), ("b", "b")] {
        watcher
            .watch(key, Some(WatchOptions::new().with_range(end)))
            .await?;
        let resp = next_response(&mut stream).await?;
        ensure_eq!(
            (
                resp.created(),
                resp.canceled(),
                resp.watch_id(),
                resp.cancel_reason()
            ),
            (true, true, -1, "mvcc: watcher range is empty"),
            "range [{key}, {end})"
        );
        ensure_eq!(revision(resp.header())?, 1);
    }
    // The stream goes on; the refusals took no id.
    watcher.watch("next", None).await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!(
        (resp.created(), resp.canceled(), resp.watch_id()),
        (true, false, 1)
    );
    c.put("ok", "1", None).await?;
    c.put("next", "2", None).await?;
    let got = collect_events(&mut stream, 2).await?;
    ensure_eq!(
        got.iter()
            .map(|d| (d.watch_id, d.event.clone()))
            .collect::<Vec<_>>(),
        vec![
            (0, EventView::put(KvView::put("ok", "1", 2, 2, 1))),
            (1, EventView::put(KvView::put("next", "2", 3, 3, 1))),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn watch_with_an_empty_range_is_created_and_canceled() -> Result<()> {
    on_each_backend(empty_range).await
}

async fn unknown_cancel(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("k", None).await?;
    for id in [77, -1, 1] {
        watcher.cancel_by_id(id).await?;
    }
    expect_no_response(&mut stream, Duration::from_millis(700)).await?;
    watcher.watch("j", None).await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!((resp.created(), resp.watch_id()), (true, 1));
    c.put("j", "v", None).await?;
    c.put("k", "v", None).await?;
    let got = collect_events(&mut stream, 2).await?;
    ensure_eq!(
        got.iter().map(|d| d.watch_id).collect::<Vec<_>>(),
        [1, 0],
        "both watches still work"
    );
    // A progress request on the same stream is answered too.
    watcher.request_progress().await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!((resp.watch_id(), revision(resp.header())?), (-1, 3));
    Ok(())
}

#[tokio::test]
async fn cancel_of_an_unknown_watch_gets_no_reply() -> Result<()> {
    on_each_backend(unknown_cancel).await
}
