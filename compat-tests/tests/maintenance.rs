//! The Maintenance service: `etcdctl snapshot save` (and `snapshot status` on etcd's own
//! file format), a new node
//! restored from the snapshot (etcd's `etcdctl snapshot restore`, Concord's
//! `concord restore`) holding the same keys, Hash and HashKV, Status fields, the alarm
//! list and Defragment. Every scenario runs on real etcd and on Concord.

use anyhow::{Context, Result, ensure};
use concord_compat_tests::check::revision;
use concord_compat_tests::restore::{restore_from, save_snapshot};
use concord_compat_tests::streams::KvView;
use concord_compat_tests::{
    Backend, Etcdctl, Server, ServerOptions, Session, ensure_eq, on_each_backend,
};
use etcd_client::{AlarmAction, AlarmType, Client, GetOptions};
use serde_json::Value;

async fn write_some(c: &mut Client) -> Result<i64> {
    for (k, v) in [("s/a", "1"), ("s/b", "2"), ("s/a", "3"), ("s/c", "4")] {
        c.put(k, v, None).await?;
    }
    c.delete("s/c", None).await?;
    let last = c.put("s/d", "5", None).await?;
    revision(last.header())
}

async fn all_kvs(c: &mut Client) -> Result<Vec<KvView>> {
    let resp = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    Ok(resp.kvs().iter().map(KvView::of).collect())
}

async fn snapshot_save_status_restore(s: Session) -> Result<()> {
    let mut c = s.client;
    let rev = write_some(&mut c).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("snap.db");
    save_snapshot(&s.endpoint, &file).await?;
    // Both end the file with the SHA-256 trailer `etcdctl snapshot save` checks for.
    let size = std::fs::metadata(&file)?.len();
    ensure_eq!(size % 512, 32, "snapshot size {size}");
    if s.backend == Backend::Etcd {
        // `snapshot status` opens the file as etcd's bbolt database; Concord's snapshot
        // file has its own layout (ARCHITECTURE.md, "Snapshots"), read by
        // `concord restore`.
        let ctl = Etcdctl::new(&s.endpoint);
        let path = file.to_str().context("path is not UTF-8")?;
        let out = ctl.run(&["snapshot", "status", path, "-w", "json"]).await?;
        ensure!(out.success(), "snapshot status failed: {out:?}");
        let status: Value = serde_json::from_str(&out.stdout)?;
        ensure_eq!(status["revision"].as_i64(), Some(rev), "{status}");
        ensure!(status["totalKey"].as_i64() > Some(0), "{status}");
        ensure!(status["hash"].as_u64().is_some(), "{status}");
    }

    // The etcd-client snapshot stream gives the same number of bytes.
    let mut stream = c.snapshot().await?;
    let mut bytes = 0usize;
    let mut last_remaining = None;
    for _ in 0..100_000 {
        let Some(chunk) = stream.message().await? else {
            break;
        };
        bytes += chunk.blob().len();
        last_remaining = Some(chunk.remaining_bytes());
    }
    ensure_eq!(
        last_remaining,
        Some(0),
        "the last chunk has nothing remaining"
    );
    ensure!(bytes > 0);

    let expected = all_kvs(&mut c).await?;
    let restored_dir = dir.path().join("restored");
    std::fs::create_dir_all(&restored_dir)?;
    let restored = restore_from(s.backend, &file, &restored_dir).await?;
    let mut r = restored.client().await?;
    ensure_eq!(
        all_kvs(&mut r).await?,
        expected,
        "the restored node has the same keys"
    );
    ensure_eq!(revision(r.get("x", None).await?.header())?, rev);
    r.put("s/e", "6", None).await?;
    ensure_eq!(
        revision(r.get("x", None).await?.header())?,
        rev + 1,
        "and goes on from there"
    );
    drop(restored);
    Ok(())
}

#[tokio::test]
async fn snapshot_save_status_and_restore() -> Result<()> {
    on_each_backend(snapshot_save_status_restore).await
}

async fn hashes(s: Session) -> Result<()> {
    let mut c = s.client;
    let rev = write_some(&mut c).await?;
    let h1 = c.hash_kv(0).await?;
    let h2 = c.hash_kv(0).await?;
    ensure_eq!(h1.hash(), h2.hash(), "HashKV is stable");
    ensure_eq!(revision(h1.header())?, rev);
    let at = c.hash_kv(rev).await?.hash();
    ensure_eq!(at, h1.hash(), "HashKV at the current revision");
    let hash = c.hash().await?.hash();
    ensure_eq!(c.hash().await?.hash(), hash, "Hash is stable");

    // A second fresh server with the same writes has the same HashKV.
    let twin = Server::start(s.backend).await?;
    let mut t = twin.client().await?;
    ensure_eq!(write_some(&mut t).await?, rev);
    ensure_eq!(
        t.hash_kv(rev).await?.hash(),
        h1.hash(),
        "same writes, same HashKV"
    );

    c.put("s/z", "new", None).await?;
    ensure!(
        c.hash_kv(0).await?.hash() != h1.hash(),
        "a write changes HashKV"
    );
    ensure_eq!(
        c.hash_kv(rev).await?.hash(),
        h1.hash(),
        "HashKV at an old revision is unchanged"
    );
    drop(twin);
    Ok(())
}

#[tokio::test]
async fn hash_kv_is_stable_and_equal_for_equal_writes() -> Result<()> {
    on_each_backend(hashes).await
}

async fn status_alarm_defrag(s: Session) -> Result<()> {
    let mut c = s.client;
    write_some(&mut c).await?;
    let status = c.status().await?;
    ensure!(
        status.version().starts_with("3."),
        "version {:?}",
        status.version()
    );
    let member = status.header().context("no header")?.member_id();
    ensure_eq!(status.leader(), member, "a single member leads");
    ensure!(
        status.raft_index() > 0 && status.raft_term() > 0,
        "{status:?}"
    );
    ensure!(status.raft_applied_index() > 0, "{status:?}");
    ensure!(status.db_size() > 0, "{status:?}");
    ensure_eq!(status.errors().len(), 0);
    ensure_eq!(status.is_learner(), false);

    let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    ensure_eq!(alarms.alarms().len(), 0, "no alarms");

    c.defragment().await?;
    ensure_eq!(all_kvs(&mut c).await?.len(), 3, "defragment keeps the data");
    Ok(())
}

#[tokio::test]
async fn status_alarms_and_defragment() -> Result<()> {
    on_each_backend(status_alarm_defrag).await
}

/// Past the storage quota the server raises NOSPACE and refuses puts (deletes and reads
/// still work); compaction, defragmentation and a disarm make it writable again.
async fn quota(backend: Backend) -> Result<()> {
    const QUOTA: u64 = 2 * 1024 * 1024;
    let server =
        Server::start_with(backend, ServerOptions::default().quota_backend_bytes(QUOTA)).await?;
    let mut c = server.client().await?;
    let value = "v".repeat(64 * 1024);
    let mut refused = None;
    for i in 0..400 {
        // The alarm is raised shortly after the quota is passed; keep writing until then.
        match c.put(format!("big/{i:04}"), value.as_str(), None).await {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.context("no put was refused past the quota")?;
    let status = concord_compat_tests::check::grpc_status::<()>(Err(refused))?;
    ensure_eq!(status.code(), tonic::Code::ResourceExhausted);
    ensure_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    ensure_eq!(
        alarms
            .alarms()
            .iter()
            .map(|a| a.alarm())
            .collect::<Vec<_>>(),
        vec![AlarmType::Nospace]
    );
    ensure!(
        c.get("big/0000", None).await?.count() == 1,
        "reads still work"
    );
    let deleted = c
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    ensure!(deleted.deleted() > 0, "deletes still work");
    let rev = revision(deleted.header())?;
    c.compact(rev, None).await?;
    c.defragment().await?;
    let member = alarms.alarms()[0].member_id();
    c.alarm(
        AlarmAction::Deactivate,
        AlarmType::Nospace,
        Some({
            let mut options = etcd_client::AlarmOptions::new();
            options.with_member(member);
            options
        }),
    )
    .await?;
    let after = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    ensure!(
        after.alarms().is_empty(),
        "{} alarm(s) left",
        after.alarms().len()
    );
    c.put("small", "ok", None).await?;
    Ok(())
}

#[tokio::test]
async fn quota_raises_nospace_and_disarm_after_defrag_restores_writes() -> Result<()> {
    let mut failures = Vec::new();
    for backend in concord_compat_tests::backends()? {
        if let Err(e) = quota(backend).await {
            failures.push(format!("on {backend}: {e:#}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
