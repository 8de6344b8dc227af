//! The Watch service through the `etcd-client` crate and `etcdctl watch`: history replay
//! from an old revision (event types, keys, values, revisions, the bare DELETE kv),
//! prev_kv, the NOPUT and NODELETE filters, prefix and range watches, compacted and
//! future start revisions, many watches on one stream (client-chosen and server-chosen
//! ids, the duplicate-id refusal, revision order across them under concurrent writes),
//! progress requests and cancellation.
//!
//! Every scenario runs on a fresh real etcd and a fresh Concord (select with
//! `CONCORD_COMPAT_BACKENDS`), so each expectation is also checked against etcd.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::background::Background;
use concord_compat_tests::check::revision;
use concord_compat_tests::streams::{
    Delivered, EventView, KvView, collect_events, expect_no_response, next_response,
};
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::{Client, GetOptions, Txn, TxnOp, WatchFilterType, WatchOptions};

/// How long a watch must stay silent when nothing it watches has happened.
const SILENCE: Duration = Duration::from_millis(700);
/// How long etcdctl may take to print one line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

async fn current_revision(c: &mut Client) -> Result<i64> {
    revision(c.get("any", None).await?.header())
}

fn events(delivered: &[Delivered]) -> Vec<EventView> {
    delivered.iter().map(|d| d.event.clone()).collect()
}

/// On an empty store: puts and deletes under `w/` at revisions 2 to 7, the last one a
/// txn that writes two keys in one revision.
async fn write_history(c: &mut Client) -> Result<()> {
    c.put("w/a", "1", None).await?; // 2
    c.put("w/b", "2", None).await?; // 3
    c.put("w/a", "3", None).await?; // 4
    c.delete("w/a", None).await?; // 5
    c.put("other", "x", None).await?; // 6
    c.txn(Txn::new().and_then([TxnOp::put("w/c", "4", None), TxnOp::put("w/b", "5", None)]))
        .await?; // 7
    ensure_eq!(current_revision(c).await?, 7);
    Ok(())
}

/// The events [`write_history`] leaves under `w/`, in order.
fn history_events() -> Vec<EventView> {
    vec![
        EventView::put(KvView::put("w/a", "1", 2, 2, 1)),
        EventView::put(KvView::put("w/b", "2", 3, 3, 1)),
        EventView::put(KvView::put("w/a", "3", 2, 4, 2)),
        EventView::delete("w/a", 5),
        EventView::put(KvView::put("w/c", "4", 7, 7, 1)),
        EventView::put(KvView::put("w/b", "5", 3, 7, 2)),
    ]
}

async fn history_replay(s: Session) -> Result<()> {
    let mut c = s.client;
    write_history(&mut c).await?;
    let options = WatchOptions::new().with_prefix().with_start_revision(2);
    let (watcher, mut stream) = c.watch("w/", Some(options)).await?;
    ensure_eq!(watcher.watch_id(), 0, "the first watch on a stream is id 0");
    let got = collect_events(&mut stream, 6).await?;
    ensure_eq!(events(&got), history_events());
    for d in &got {
        ensure_eq!(d.watch_id, 0);
        let last = d.event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        ensure!(
            d.header_revision >= last,
            "a response's header revision is at least its events' revision: {d:?}"
        );
    }
    expect_no_response(&mut stream, SILENCE).await?;

    // Live events: one response per revision, whose header is that revision; a txn's
    // writes arrive together.
    let put = c.put("w/d", "6", None).await?;
    ensure_eq!(revision(put.header())?, 8);
    let resp = next_response(&mut stream).await?;
    ensure_eq!(revision(resp.header())?, 8);
    ensure_eq!(
        resp.events().iter().map(EventView::of).collect::<Vec<_>>(),
        vec![EventView::put(KvView::put("w/d", "6", 8, 8, 1))]
    );
    c.txn(Txn::new().and_then([
        TxnOp::delete("w/d", None),
        TxnOp::put("w/e", "7", None),
        TxnOp::put("elsewhere", "8", None),
    ]))
    .await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!(revision(resp.header())?, 9);
    ensure_eq!(
        resp.events().iter().map(EventView::of).collect::<Vec<_>>(),
        vec![
            EventView::delete("w/d", 9),
            EventView::put(KvView::put("w/e", "7", 9, 9, 1)),
        ]
    );
    // Deleting a missing key writes nothing, so no event.
    c.delete("w/zzz", None).await?;
    expect_no_response(&mut stream, SILENCE).await
}

#[tokio::test]
async fn watch_from_an_old_revision_replays_every_event_in_order() -> Result<()> {
    on_each_backend(history_replay).await
}

async fn prev_kv(s: Session) -> Result<()> {
    let mut c = s.client;
    c.put("k", "1", None).await?; // 2
    c.put("k", "2", None).await?; // 3
    c.delete("k", None).await?; // 4
    let options = WatchOptions::new().with_prev_key().with_start_revision(2);
    let (_watcher, mut stream) = c.watch("k", Some(options)).await?;
    let got = collect_events(&mut stream, 3).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::put(KvView::put("k", "1", 2, 2, 1)),
            EventView::put(KvView::put("k", "2", 2, 3, 2))
                .with_prev(KvView::put("k", "1", 2, 2, 1)),
            EventView::delete("k", 4).with_prev(KvView::put("k", "2", 2, 3, 2)),
        ],
        "prev_kv is omitted on a create event"
    );
    // Live, too.
    c.put("k", "3", None).await?; // 5: a create again
    c.put("k", "4", None).await?; // 6
    let got = collect_events(&mut stream, 2).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::put(KvView::put("k", "3", 5, 5, 1)),
            EventView::put(KvView::put("k", "4", 5, 6, 2))
                .with_prev(KvView::put("k", "3", 5, 5, 1)),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn watch_with_prev_kv() -> Result<()> {
    on_each_backend(prev_kv).await
}

async fn filters(s: Session) -> Result<()> {
    let mut c = s.client;
    let no_put = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    let (_w1, mut deletes) = c.watch("f/", Some(no_put)).await?;
    let no_delete = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoDelete]);
    let (_w2, mut puts) = c.watch("f/", Some(no_delete)).await?;
    c.put("f/a", "1", None).await?; // 2
    c.put("f/b", "2", None).await?; // 3
    c.delete("f/a", None).await?; // 4
    c.put("f/a", "3", None).await?; // 5
    c.delete("f/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await?; // 6

    let got = collect_events(&mut deletes, 3).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::delete("f/a", 4),
            EventView::delete("f/a", 6),
            EventView::delete("f/b", 6),
        ],
        "NOPUT leaves only deletes"
    );
    let got = collect_events(&mut puts, 3).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::put(KvView::put("f/a", "1", 2, 2, 1)),
            EventView::put(KvView::put("f/b", "2", 3, 3, 1)),
            EventView::put(KvView::put("f/a", "3", 5, 5, 1)),
        ],
        "NODELETE leaves only puts"
    );
    expect_no_response(&mut deletes, SILENCE).await?;
    expect_no_response(&mut puts, Duration::from_millis(100)).await?;

    // Both filters: nothing at all.
    let both = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]);
    let (_w3, mut nothing) = c.watch("f/", Some(both)).await?;
    c.put("f/x", "1", None).await?;
    c.delete("f/x", None).await?;
    expect_no_response(&mut nothing, SILENCE).await
}

#[tokio::test]
async fn watch_filters_noput_and_nodelete() -> Result<()> {
    on_each_backend(filters).await
}

async fn prefix_and_range(s: Session) -> Result<()> {
    let mut c = s.client;
    let (_w1, mut prefix) = c
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let (_w2, mut range) = c
        .watch("b", Some(WatchOptions::new().with_range("d")))
        .await?;
    let (_w3, mut single) = c.watch("p", None).await?;
    let (_w4, mut from_key) = c
        .watch("c", Some(WatchOptions::new().with_from_key()))
        .await?;
    for (i, key) in ["p/a", "p", "p0", "p/b/c", "o", "b", "c/x", "d", "a"]
        .iter()
        .enumerate()
    {
        c.put(*key, format!("{i}"), None).await?; // revisions 2..=10
    }
    let keys = |got: &[Delivered]| -> Vec<String> {
        got.iter()
            .filter_map(|d| d.event.kv.as_ref().map(|kv| kv.key.clone()))
            .collect()
    };
    let got = collect_events(&mut prefix, 2).await?;
    ensure_eq!(keys(&got), ["p/a", "p/b/c"], "prefix p/");
    let got = collect_events(&mut range, 2).await?;
    ensure_eq!(keys(&got), ["b", "c/x"], "range [b, d)");
    let got = collect_events(&mut single, 1).await?;
    ensure_eq!(keys(&got), ["p"], "single key p");
    let got = collect_events(&mut from_key, 7).await?;
    ensure_eq!(
        keys(&got),
        ["p/a", "p", "p0", "p/b/c", "o", "c/x", "d"],
        "from key c"
    );
    for stream in [&mut prefix, &mut range, &mut single, &mut from_key] {
        expect_no_response(stream, Duration::from_millis(300)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn prefix_range_single_and_from_key_watches() -> Result<()> {
    on_each_backend(prefix_and_range).await
}

async fn compacted_start(s: Session) -> Result<()> {
    let mut c = s.client;
    for i in 0..4 {
        c.put("k", format!("{i}"), None).await?; // 2..=5
    }
    c.compact(4, None).await?;
    // A first watch opens the stream; the compacted one is the second, so that its
    // created reply can be read as it is.
    let (mut watcher, mut stream) = c.watch("unrelated", None).await?;
    watcher
        .watch("k", Some(WatchOptions::new().with_start_revision(2)))
        .await?;
    let created = next_response(&mut stream).await?;
    ensure_eq!(
        (
            created.created(),
            created.canceled(),
            created.watch_id(),
            created.compact_revision(),
            created.cancel_reason(),
            created.events().len()
        ),
        (true, false, 1, 0, "", 0),
        "first a plain created reply: {created:?}"
    );
    ensure_eq!(revision(created.header())?, 5);
    let canceled = next_response(&mut stream).await?;
    ensure_eq!(
        (
            canceled.created(),
            canceled.canceled(),
            canceled.watch_id(),
            canceled.compact_revision(),
            canceled.events().len()
        ),
        (false, true, 1, 4, 0),
        "then canceled with the compact revision: {canceled:?}"
    );
    ensure_eq!(
        revision(canceled.header())?,
        0,
        "etcd sends the compaction cancel with header revision 0"
    );
    ensure_eq!(
        canceled.cancel_reason(),
        "",
        "etcd 3.4 gives no cancel reason for a compacted watch"
    );

    // At the compact revision itself the watch is fine and replays from there.
    watcher
        .watch("k", Some(WatchOptions::new().with_start_revision(4)))
        .await?;
    let created = next_response(&mut stream).await?;
    ensure_eq!((created.created(), created.watch_id()), (true, 2));
    let got = collect_events(&mut stream, 2).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::put(KvView::put("k", "2", 2, 4, 3)),
            EventView::put(KvView::put("k", "3", 2, 5, 4)),
        ]
    );
    ensure_eq!(got[0].watch_id, 2);
    Ok(())
}

#[tokio::test]
async fn watch_at_a_compacted_revision_is_canceled_with_compact_revision() -> Result<()> {
    on_each_backend(compacted_start).await
}

async fn future_start(s: Session) -> Result<()> {
    let mut c = s.client;
    c.put("k", "0", None).await?; // 2
    let options = WatchOptions::new().with_start_revision(5);
    let (_watcher, mut stream) = c.watch("k", Some(options)).await?;
    c.put("k", "1", None).await?; // 3
    c.put("k", "2", None).await?; // 4
    expect_no_response(&mut stream, SILENCE)
        .await
        .context("events before the start revision")?;
    c.put("k", "3", None).await?; // 5
    c.put("k", "4", None).await?; // 6
    let got = collect_events(&mut stream, 2).await?;
    ensure_eq!(
        events(&got),
        vec![
            EventView::put(KvView::put("k", "3", 2, 5, 4)),
            EventView::put(KvView::put("k", "4", 2, 6, 5)),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn watch_at_a_future_revision_waits_until_it_is_reached() -> Result<()> {
    on_each_backend(future_start).await
}

async fn many_watches(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("m/0", None).await?;
    ensure_eq!(watcher.watch_id(), 0);
    // A client-chosen id; it does not move the server's counter.
    watcher
        .watch("m/1", Some(WatchOptions::new().with_watch_id(2)))
        .await?;
    let created = next_response(&mut stream).await?;
    ensure_eq!(
        (created.created(), created.canceled(), created.watch_id()),
        (true, false, 2)
    );
    // The server's next id is 1, then 3 (2 is taken).
    for (key, expected) in [("m/2", 1), ("m/3", 3)] {
        watcher.watch(key, None).await?;
        let created = next_response(&mut stream).await?;
        ensure_eq!(
            (created.created(), created.canceled(), created.watch_id()),
            (true, false, expected),
            "server-chosen id for {key}"
        );
    }
    // A duplicate id is refused.
    watcher
        .watch("m/dup", Some(WatchOptions::new().with_watch_id(2)))
        .await?;
    let refused = next_response(&mut stream).await?;
    ensure_eq!(
        (
            refused.created(),
            refused.canceled(),
            refused.watch_id(),
            refused.cancel_reason()
        ),
        (
            true,
            true,
            -1,
            "mvcc: duplicate watch ID provided on the WatchStream"
        )
    );
    // Many more on the same stream.
    for i in 4..20 {
        watcher.watch(format!("m/{i}"), None).await?;
        let created = next_response(&mut stream).await?;
        ensure_eq!((created.created(), created.watch_id()), (true, i));
    }
    // Each put reaches exactly its key's watch.
    let ids: [(usize, i64); 5] = [(0, 0), (1, 2), (2, 1), (3, 3), (19, 19)];
    for (key, _) in ids {
        c.put(format!("m/{key}"), "v", None).await?;
    }
    let got = collect_events(&mut stream, ids.len()).await?;
    let seen: Vec<(String, i64)> = got
        .iter()
        .map(|d| {
            (
                d.event
                    .kv
                    .as_ref()
                    .map(|kv| kv.key.clone())
                    .unwrap_or_default(),
                d.watch_id,
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = ids.iter().map(|(k, id)| (format!("m/{k}"), *id)).collect();
    ensure_eq!(seen, expected);
    c.put("m/dup", "v", None).await?; // the refused duplicate watches nothing
    expect_no_response(&mut stream, SILENCE).await
}

#[tokio::test]
async fn many_watches_on_one_stream_with_chosen_and_server_ids() -> Result<()> {
    on_each_backend(many_watches).await
}

/// Watches on one stream, one key each, while several clients put to those keys at
/// once (so the server applies many revisions back to back): the stream carries every
/// event once, in revision order across all its watches, each on its key's watch.
async fn one_stream_in_revision_order(s: Session) -> Result<()> {
    const WATCHES: usize = 8;
    const WRITERS: usize = 4;
    const PUTS_EACH: usize = 25;
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("o/0", None).await?;
    for i in 1..WATCHES {
        watcher.watch(format!("o/{i}"), None).await?;
        let created = next_response(&mut stream).await?;
        ensure_eq!((created.created(), created.watch_id()), (true, i as i64));
    }
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let mut writer = c.clone();
        writers.spawn(async move {
            for n in 0..PUTS_EACH {
                writer
                    .put(format!("o/{}", (w + n) % WATCHES), format!("{w}-{n}"), None)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("writer task")??;
    }
    let got = collect_events(&mut stream, WRITERS * PUTS_EACH).await?;
    let mut last_revision = 0;
    for d in &got {
        let kv = d.event.kv.as_ref().context("a put event has its kv")?;
        ensure!(
            kv.mod_revision > last_revision,
            "revision {} ({}, watch {}) after revision {last_revision} on one stream",
            kv.mod_revision,
            kv.key,
            d.watch_id
        );
        last_revision = kv.mod_revision;
        ensure_eq!(
            kv.key,
            format!("o/{}", d.watch_id),
            "event on its key's watch"
        );
    }
    expect_no_response(&mut stream, SILENCE).await
}

#[tokio::test]
async fn watches_of_one_stream_receive_concurrent_writes_in_revision_order() -> Result<()> {
    on_each_backend(one_stream_in_revision_order).await
}

async fn progress(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("k", None).await?;
    c.put("other", "1", None).await?; // 2
    c.put("other", "2", None).await?; // 3
    expect_no_response(&mut stream, Duration::from_millis(300)).await?;
    watcher.request_progress().await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!(
        (
            resp.watch_id(),
            resp.created(),
            resp.canceled(),
            resp.compact_revision(),
            resp.events().len()
        ),
        (-1, false, false, 0, 0),
        "a progress reply is for no watch in particular: {resp:?}"
    );
    ensure_eq!(revision(resp.header())?, 3, "with the current revision");
    // The stream is still watching.
    c.put("k", "v", None).await?; // 4
    let got = collect_events(&mut stream, 1).await?;
    ensure_eq!(
        events(&got),
        vec![EventView::put(KvView::put("k", "v", 4, 4, 1))]
    );
    Ok(())
}

#[tokio::test]
async fn progress_request_answers_with_the_current_revision() -> Result<()> {
    on_each_backend(progress).await
}

async fn cancel(s: Session) -> Result<()> {
    let mut c = s.client;
    let (mut watcher, mut stream) = c.watch("k", None).await?;
    watcher.watch("j", None).await?;
    ensure_eq!(next_response(&mut stream).await?.watch_id(), 1);
    c.put("k", "1", None).await?; // 2
    ensure_eq!(collect_events(&mut stream, 1).await?[0].watch_id, 0);
    watcher.cancel().await?;
    let resp = next_response(&mut stream).await?;
    ensure_eq!(
        (
            resp.watch_id(),
            resp.created(),
            resp.canceled(),
            resp.cancel_reason(),
            resp.events().len()
        ),
        (0, false, true, "", 0),
        "a cancel is confirmed: {resp:?}"
    );
    ensure_eq!(revision(resp.header())?, 2);
    c.put("k", "2", None).await?; // 3: nobody watches k now
    c.put("j", "1", None).await?; // 4
    let got = collect_events(&mut stream, 1).await?;
    ensure_eq!(
        (
            got[0].watch_id,
            got[0].event.kv.as_ref().map(|kv| kv.key.as_str())
        ),
        (1, Some("j")),
        "only the remaining watch reports"
    );
    expect_no_response(&mut stream, SILENCE).await
}

#[tokio::test]
async fn cancel_stops_one_watch_and_is_confirmed() -> Result<()> {
    on_each_backend(cancel).await
}

/// The lines etcdctl's simple format prints for an event: type, key, value.
fn simple(kind: &str, key: &str, value: &str) -> Vec<String> {
    vec![kind.to_string(), key.to_string(), value.to_string()]
}

async fn etcdctl_watch(s: Session) -> Result<()> {
    let mut c = s.client;
    write_history(&mut c).await?;
    let mut watch = Background::etcdctl(&s.endpoint, &["watch", "--rev=2", "w/", "--prefix"])?;
    let mut expected = Vec::new();
    for (kind, key, value) in [
        ("PUT", "w/a", "1"),
        ("PUT", "w/b", "2"),
        ("PUT", "w/a", "3"),
        ("DELETE", "w/a", ""),
        ("PUT", "w/c", "4"),
        ("PUT", "w/b", "5"),
    ] {
        expected.extend(simple(kind, key, value));
    }
    let got = watch.next_lines(expected.len(), LINE_TIMEOUT).await?;
    ensure_eq!(got, expected, "the history");
    c.put("w/live", "x", None).await?;
    let got = watch.next_lines(3, LINE_TIMEOUT).await?;
    ensure_eq!(got, simple("PUT", "w/live", "x"), "a live event");
    c.put("elsewhere", "y", None).await?;
    watch.expect_silence(SILENCE).await?;
    watch.kill().await?;

    // --prev-kv prints the previous value after the event.
    let mut watch = Background::etcdctl(&s.endpoint, &["watch", "--rev=4", "w/a", "--prev-kv"])?;
    let got = watch.next_lines(7, LINE_TIMEOUT).await?;
    ensure_eq!(
        got,
        ["PUT", "w/a", "1", "w/a", "3", "DELETE", "w/a"],
        "prev value then event"
    );
    watch.kill().await?;

    // A compacted start revision ends the command.
    c.compact(5, None).await?;
    let mut watch = Background::etcdctl(&s.endpoint, &["watch", "--rev=2", "w/", "--prefix"])?;
    let code = watch.wait_exit(LINE_TIMEOUT).await?;
    ensure_eq!(code, Some(5), "stderr: {}", watch.stderr());
    ensure_eq!(
        watch.stderr(),
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n\
         Error: watch is canceled by the server\n"
    );
    watch.expect_silence(Duration::from_millis(100)).await?;
    Ok(())
}

#[tokio::test]
async fn etcdctl_watch_from_a_revision() -> Result<()> {
    on_each_backend(etcdctl_watch).await
}

/// 100 puts in one txn reach a watcher as 100 events of one revision, in key order.
async fn big_txn(s: Session) -> Result<()> {
    let mut c = s.client;
    let (_watcher, mut stream) = c
        .watch("big/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let ops: Vec<TxnOp> = (0..100)
        .map(|i| TxnOp::put(format!("big/{i:03}"), "v", None))
        .collect();
    let txn = c.txn(Txn::new().and_then(ops)).await?;
    let rev = revision(txn.header())?;
    let got = collect_events(&mut stream, 100).await?;
    for (i, d) in got.iter().enumerate() {
        let kv = d.event.kv.as_ref().context("no kv")?;
        ensure_eq!(
            (
                d.event.kind,
                kv.key.as_str(),
                kv.mod_revision,
                d.header_revision
            ),
            ("PUT", format!("big/{i:03}").as_str(), rev, rev)
        );
    }
    let all = c
        .get(
            "big/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    ensure_eq!(all.count(), 100);
    Ok(())
}

#[tokio::test]
async fn a_txn_of_many_puts_is_one_revision_of_events() -> Result<()> {
    on_each_backend(big_txn).await
}

/// A revision whose events (with previous values) exceed the request size limit comes
/// in several responses when the watch asked for fragments, in one otherwise.
async fn fragments(s: Session) -> Result<()> {
    const KEYS: usize = 5;
    let mut c = s.client;
    let value = |fill: char| fill.to_string().repeat(280 * 1024);
    for i in 0..KEYS {
        c.put(format!("frag/{i}"), value('a'), None).await?;
    }
    let ops: Vec<TxnOp> = (0..KEYS)
        .map(|i| TxnOp::put(format!("frag/{i}"), value('b'), None))
        .collect();
    let rev = revision(c.txn(Txn::new().and_then(ops)).await?.header())?;
    for (fragment, expect_split) in [(true, true), (false, false)] {
        let mut options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(rev);
        if fragment {
            options = options.with_fragment();
        }
        let (_watcher, mut stream) = c.watch("frag/", Some(options)).await?;
        let mut sizes = Vec::new();
        for _ in 0..20 {
            if sizes.iter().sum::<usize>() >= KEYS {
                break;
            }
            let resp = next_response(&mut stream).await?;
            if !resp.events().is_empty() {
                ensure_eq!(
                    revision(resp.header())?,
                    rev,
                    "fragments share the revision"
                );
                sizes.push(resp.events().len());
            }
        }
        ensure_eq!(sizes.iter().sum::<usize>(), KEYS, "{sizes:?}");
        ensure_eq!(
            sizes.len() > 1,
            expect_split,
            "fragment={fragment}: {sizes:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn large_revisions_are_fragmented_only_when_asked() -> Result<()> {
    on_each_backend(fragments).await
}
