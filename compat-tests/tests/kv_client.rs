//! The KV service through the `etcd-client` crate: range options, put and delete
//! options, transactions (every compare target, nesting, the duplicate-key rule),
//! compaction, future revisions and response headers.
//!
//! Every scenario runs on a fresh real etcd and a fresh Concord (select with
//! `CONCORD_COMPAT_BACKENDS=etcd` or `=concord`), so each expectation is checked
//! against the reference as well as against the server under test.

use anyhow::{Context, Result, bail};
use concord_compat_tests::check::{expect_status, keys, pairs, revision};
use concord_compat_tests::fixture::{SORT_PUTS, SORTED_ASCENDING, sorted_keys};
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, DeleteResponse, GetOptions, GetResponse, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const DUPLICATE: &str = "etcdserver: duplicate key given in txn request";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const NO_KEY: &str = "etcdserver: key is not provided";

/// The current revision, read with a plain get.
async fn current_revision(client: &mut Client) -> Result<i64> {
    revision(client.get("any", None).await?.header())
}

/// The value of `key`, or `None` if it does not exist.
async fn value_of(client: &mut Client, key: &str) -> Result<Option<String>> {
    let resp = client.get(key, None).await?;
    Ok(pairs(resp.kvs()).into_iter().next().map(|(_, v)| v))
}

/// Puts each (key, value) in order, one revision each.
async fn put_all(client: &mut Client, kvs: &[(&str, &str)]) -> Result<()> {
    for (key, value) in kvs {
        client.put(*key, *value, None).await?;
    }
    Ok(())
}

/// Owned (key, value) pairs, to compare with [`pairs`].
fn owned(kvs: &[(&str, &str)]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A get of `key` at revision `rev`.
async fn get_at(c: &mut Client, key: &str, rev: i64) -> Result<GetResponse, etcd_client::Error> {
    c.get(key, Some(GetOptions::new().with_revision(rev))).await
}

fn get_response(op: &TxnOpResponse) -> Result<&GetResponse> {
    match op {
        TxnOpResponse::Get(get) => Ok(get),
        other => bail!("expected a range response, got {other:?}"),
    }
}

fn delete_response(op: &TxnOpResponse) -> Result<&DeleteResponse> {
    match op {
        TxnOpResponse::Delete(del) => Ok(del),
        other => bail!("expected a delete response, got {other:?}"),
    }
}

fn txn_response(op: &TxnOpResponse) -> Result<&TxnResponse> {
    match op {
        TxnOpResponse::Txn(txn) => Ok(txn),
        other => bail!("expected a txn response, got {other:?}"),
    }
}

/// A one-letter summary of the kinds of a txn's responses: P, G, D or T.
fn kinds(resp: &TxnResponse) -> String {
    resp.op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Put(_) => 'P',
            TxnOpResponse::Get(_) => 'G',
            TxnOpResponse::Delete(_) => 'D',
            TxnOpResponse::Txn(_) => 'T',
        })
        .collect()
}

async fn headers_and_revisions(s: Session) -> Result<()> {
    let mut c = s.client;
    let first = c.get("k", None).await?;
    let header = first.header().context("no header")?;
    ensure_eq!(header.revision(), 1, "an empty store is at revision 1");
    ensure_eq!(header.cluster_id() != 0, true, "cluster_id is set");
    ensure_eq!(header.member_id() != 0, true, "member_id is set");
    ensure_eq!(header.raft_term() >= 1, true, "raft_term is set");
    ensure_eq!(first.count(), 0);
    ensure_eq!(first.more(), false);

    let put = c.put("a", "1", None).await?;
    ensure_eq!(revision(put.header())?, 2, "a put is one revision");
    let put = c.put("a", "1", None).await?;
    ensure_eq!(
        revision(put.header())?,
        3,
        "the same value again is a new revision"
    );
    let got = c.get("a", None).await?;
    let kv = got.kvs().first().context("a is missing")?;
    ensure_eq!(
        (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ),
        (2, 3, 2, 0)
    );

    let del = c.delete("missing", None).await?;
    ensure_eq!(del.deleted(), 0);
    ensure_eq!(
        revision(del.header())?,
        3,
        "deleting a missing key does not bump the revision"
    );
    ensure_eq!(current_revision(&mut c).await?, 3);

    let del = c.delete("a", None).await?;
    ensure_eq!((del.deleted(), revision(del.header())?), (1, 4));
    ensure_eq!(c.get("a", None).await?.count(), 0);
    let put = c.put("a", "again", None).await?;
    ensure_eq!(revision(put.header())?, 5);
    let kv = c
        .get("a", None)
        .await?
        .take_kvs()
        .pop()
        .context("a is missing")?;
    ensure_eq!(
        (kv.create_revision(), kv.version()),
        (5, 1),
        "a re-created key starts over"
    );

    let txn = Txn::new().and_then([
        TxnOp::put("x", "1", None),
        TxnOp::put("y", "2", None),
        TxnOp::delete("a", None),
    ]);
    let resp = c.txn(txn).await?;
    ensure_eq!(
        revision(resp.header())?,
        6,
        "a txn is one revision for all its writes"
    );
    for key in ["x", "y"] {
        let kv = c
            .get(key, None)
            .await?
            .take_kvs()
            .pop()
            .context("missing")?;
        ensure_eq!(kv.mod_revision(), 6, "{key}'s mod_revision");
    }

    let read_only = Txn::new().and_then([TxnOp::get("x", None), TxnOp::get("y", None)]);
    ensure_eq!(
        revision(c.txn(read_only).await?.header())?,
        6,
        "a read-only txn"
    );
    let no_change = Txn::new().and_then([TxnOp::delete("missing", None)]);
    ensure_eq!(
        revision(c.txn(no_change).await?.header())?,
        6,
        "a txn that changes nothing"
    );
    ensure_eq!(current_revision(&mut c).await?, 6);
    Ok(())
}

#[tokio::test]
async fn response_headers_and_revisions() -> Result<()> {
    on_each_backend(headers_and_revisions).await
}

/// [`SORT_PUTS`] (see its table of versions and revisions), then `other`; the store
/// ends at revision 12.
async fn sort_fixture(c: &mut Client) -> Result<()> {
    put_all(c, SORT_PUTS).await?;
    c.put("other", "o", None).await?;
    ensure_eq!(current_revision(c).await?, 12);
    Ok(())
}

/// etcd-client's sort target for etcdctl's `--sort-by` name.
fn sort_target(name: &str) -> Result<SortTarget> {
    Ok(match name {
        "KEY" => SortTarget::Key,
        "VERSION" => SortTarget::Version,
        "CREATE" => SortTarget::Create,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        other => bail!("no sort target {other}"),
    })
}

async fn range_options(s: Session) -> Result<()> {
    let mut c = s.client;
    sort_fixture(&mut c).await?;
    let prefix = || GetOptions::new().with_prefix();

    let all = c.get("key/", Some(prefix())).await?;
    ensure_eq!(keys(all.kvs()), ["key/a", "key/b", "key/c", "key/d"]);
    ensure_eq!((all.count(), all.more()), (4, false));

    let range = c
        .get("key/a", Some(GetOptions::new().with_range("key/c")))
        .await?;
    ensure_eq!(keys(range.kvs()), ["key/a", "key/b"], "[key/a, key/c)");
    let from = c
        .get("key/c", Some(GetOptions::new().with_from_key()))
        .await?;
    ensure_eq!(keys(from.kvs()), ["key/c", "key/d", "other"], "from key/c");
    let every = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    ensure_eq!(every.count(), 5, "all keys");

    let limited = c.get("key/", Some(prefix().with_limit(2))).await?;
    ensure_eq!(keys(limited.kvs()), ["key/a", "key/b"]);
    ensure_eq!(
        (limited.count(), limited.more()),
        (4, true),
        "count is the whole range"
    );
    let exact = c.get("key/", Some(prefix().with_limit(4))).await?;
    ensure_eq!(
        (exact.kvs().len(), exact.more()),
        (4, false),
        "a limit equal to the count"
    );

    let counted = c.get("key/", Some(prefix().with_count_only())).await?;
    ensure_eq!((counted.kvs().len(), counted.count()), (0, 4), "count_only");
    let keys_only = c.get("key/", Some(prefix().with_keys_only())).await?;
    ensure_eq!(
        pairs(keys_only.kvs()),
        owned(&[("key/a", ""), ("key/b", ""), ("key/c", ""), ("key/d", "")]),
        "keys_only"
    );
    let kv = &keys_only.kvs()[1];
    ensure_eq!(
        (kv.version(), kv.create_revision(), kv.mod_revision()),
        (4, 5, 10),
        "keys_only keeps metadata"
    );

    let serializable = c.get("key/", Some(prefix().with_serializable())).await?;
    ensure_eq!(
        pairs(serializable.kvs()),
        pairs(all.kvs()),
        "serializable read"
    );

    let at_7 = c.get("key/", Some(prefix().with_revision(7))).await?;
    ensure_eq!(
        pairs(at_7.kvs()),
        owned(&[
            ("key/a", "v3"),
            ("key/b", "x"),
            ("key/c", "x"),
            ("key/d", "v2")
        ]),
        "at revision 7"
    );
    ensure_eq!(
        revision(at_7.header())?,
        12,
        "the header has the current revision"
    );
    let at_3 = c
        .get("key/b", Some(GetOptions::new().with_revision(3)))
        .await?;
    ensure_eq!(at_3.count(), 0, "key/b did not exist at revision 3");
    let b_at_8 = c
        .get("key/b", Some(GetOptions::new().with_revision(8)))
        .await?;
    let kv = b_at_8.kvs().first().context("key/b at 8")?;
    ensure_eq!(
        (kv.version(), kv.mod_revision()),
        (2, 8),
        "key/b as of revision 8"
    );

    for (name, _) in SORTED_ASCENDING {
        let target = sort_target(name)?;
        for (order, descending) in [(SortOrder::Ascend, false), (SortOrder::Descend, true)] {
            let resp = c
                .get("key/", Some(prefix().with_sort(target, order)))
                .await?;
            ensure_eq!(
                keys(resp.kvs()),
                sorted_keys(name, descending),
                "sort by {name} {order:?}"
            );
        }
    }
    // A target other than KEY with order NONE sorts ascending.
    for name in ["VERSION", "VALUE"] {
        let none = prefix().with_sort(sort_target(name)?, SortOrder::None);
        let resp = c.get("key/", Some(none)).await?;
        ensure_eq!(
            keys(resp.kvs()),
            sorted_keys(name, false),
            "sort by {name} NONE"
        );
    }
    let top = c
        .get(
            "key/",
            Some(
                prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await?;
    ensure_eq!(keys(top.kvs()), ["key/c", "key/b"], "sort, then limit");
    ensure_eq!((top.count(), top.more()), (4, true));

    let filters = [
        (
            prefix().with_min_mod_revision(7),
            vec!["key/b", "key/c", "key/d"],
            "min_mod_revision 7",
        ),
        (
            prefix().with_max_mod_revision(7),
            vec!["key/a", "key/d"],
            "max_mod_revision 7",
        ),
        (
            prefix().with_min_create_revision(4),
            vec!["key/b", "key/d"],
            "min_create_revision 4",
        ),
        (
            prefix().with_max_create_revision(3),
            vec!["key/a", "key/c"],
            "max_create_revision 3",
        ),
        (
            prefix().with_min_mod_revision(4).with_max_mod_revision(10),
            vec!["key/b", "key/d"],
            "mod_revision in [4, 10]",
        ),
    ];
    for (options, expected, what) in filters {
        let resp = c.get("key/", Some(options)).await?;
        ensure_eq!(keys(resp.kvs()), expected, "{what}");
        ensure_eq!(
            resp.count(),
            4,
            "{what}: count is taken before the revision filters"
        );
    }
    Ok(())
}

#[tokio::test]
async fn range_with_every_option() -> Result<()> {
    on_each_backend(range_options).await
}

async fn put_options(s: Session) -> Result<()> {
    let mut c = s.client;
    let first = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await?;
    ensure_eq!(first.prev_key().is_none(), true, "no prev_kv for a new key");
    let second = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await?;
    let prev = second.prev_key().context("prev_kv missing")?;
    ensure_eq!(
        (
            prev.key(),
            prev.value(),
            prev.version(),
            prev.create_revision(),
            prev.mod_revision()
        ),
        (&b"k"[..], &b"v1"[..], 1, 2, 2),
        "prev_kv"
    );
    let plain = c.put("k", "v3", None).await?;
    ensure_eq!(
        plain.prev_key().is_none(),
        true,
        "prev_kv only when asked for"
    );

    c.put("k", "", Some(PutOptions::new().with_ignore_value()))
        .await?;
    let kv = c
        .get("k", None)
        .await?
        .take_kvs()
        .pop()
        .context("k missing")?;
    ensure_eq!(
        (kv.value(), kv.version(), kv.mod_revision()),
        (&b"v3"[..], 4, 5),
        "ignore_value"
    );
    c.put("k", "v4", Some(PutOptions::new().with_ignore_lease()))
        .await?;
    ensure_eq!(
        value_of(&mut c, "k").await?.as_deref(),
        Some("v4"),
        "ignore_lease"
    );

    let cases = [
        (
            "missing",
            "",
            PutOptions::new().with_ignore_value(),
            KEY_NOT_FOUND,
        ),
        (
            "missing",
            "v",
            PutOptions::new().with_ignore_lease(),
            KEY_NOT_FOUND,
        ),
        (
            "k",
            "v",
            PutOptions::new().with_ignore_value(),
            "etcdserver: value is provided",
        ),
        (
            "k",
            "v",
            PutOptions::new().with_ignore_lease().with_lease(1),
            "etcdserver: lease is provided",
        ),
        ("", "v", PutOptions::new(), NO_KEY),
    ];
    for (key, value, options, message) in cases {
        let result = c.put(key, value, Some(options)).await;
        expect_status(result, Code::InvalidArgument, message)
            .with_context(|| format!("put {key:?}"))?;
    }
    ensure_eq!(
        current_revision(&mut c).await?,
        6,
        "failed puts do not bump the revision"
    );
    ensure_eq!(value_of(&mut c, "missing").await?, None);
    Ok(())
}

#[tokio::test]
async fn put_with_prev_kv_ignore_value_and_ignore_lease() -> Result<()> {
    on_each_backend(put_options).await
}

async fn put_unknown_lease(s: Session) -> Result<()> {
    let mut c = s.client;
    let result = c
        .put("k", "v", Some(PutOptions::new().with_lease(0x1234)))
        .await;
    expect_status(
        result,
        Code::NotFound,
        "etcdserver: requested lease not found",
    )?;
    ensure_eq!(current_revision(&mut c).await?, 1);
    Ok(())
}

#[tokio::test]
async fn put_with_an_unknown_lease_is_not_found() -> Result<()> {
    on_each_backend(put_unknown_lease).await
}

async fn delete_options(s: Session) -> Result<()> {
    let mut c = s.client;
    put_all(
        &mut c,
        &[("p/a", "1"), ("p/b", "2"), ("p/c", "3"), ("q", "4")],
    )
    .await?;

    let ranged = c
        .delete(
            "p/a",
            Some(DeleteOptions::new().with_range("p/c").with_prev_key()),
        )
        .await?;
    ensure_eq!(ranged.deleted(), 2);
    ensure_eq!(
        pairs(ranged.prev_kvs()),
        owned(&[("p/a", "1"), ("p/b", "2")]),
        "prev_kvs"
    );
    let prev = &ranged.prev_kvs()[1];
    ensure_eq!(
        (prev.create_revision(), prev.mod_revision(), prev.version()),
        (3, 3, 1)
    );
    ensure_eq!(
        revision(ranged.header())?,
        6,
        "one revision for the whole range"
    );

    let prefixed = c
        .delete("p/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    ensure_eq!(
        (prefixed.deleted(), prefixed.prev_kvs().len()),
        (1, 0),
        "prefix, no prev_kv"
    );
    ensure_eq!(revision(prefixed.header())?, 7);

    let missing = c
        .delete("p/a", Some(DeleteOptions::new().with_prev_key()))
        .await?;
    ensure_eq!((missing.deleted(), missing.prev_kvs().len()), (0, 0));
    ensure_eq!(
        revision(missing.header())?,
        7,
        "nothing deleted, no new revision"
    );

    let from = c
        .delete("p", Some(DeleteOptions::new().with_from_key()))
        .await?;
    ensure_eq!(
        (from.deleted(), revision(from.header())?),
        (1, 8),
        "from key p"
    );
    expect_status(c.delete("", None).await, Code::InvalidArgument, NO_KEY)?;
    let left = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    ensure_eq!(left.count(), 0);
    Ok(())
}

#[tokio::test]
async fn delete_with_ranges_and_prev_kv() -> Result<()> {
    on_each_backend(delete_options).await
}

async fn txn_compares(s: Session) -> Result<()> {
    let mut c = s.client;
    // c/a: create 2, mod 2, version 1, value "1"; c/b: create 3, mod 4, version 2, value "3".
    put_all(&mut c, &[("c/a", "1"), ("c/b", "2"), ("c/b", "3")]).await?;
    use CompareOp::{Equal, Greater, Less, NotEqual};
    let cases = [
        (vec![Compare::value("c/a", Equal, "1")], true),
        (vec![Compare::value("c/a", NotEqual, "1")], false),
        (vec![Compare::value("c/a", Greater, "0")], true),
        (vec![Compare::value("c/a", Less, "0")], false),
        (vec![Compare::value("c/a", Less, "10")], true),
        (vec![Compare::value("c/a", Less, "1")], false),
        (vec![Compare::value("missing", Equal, "")], false),
        (vec![Compare::value("missing", NotEqual, "x")], false),
        (vec![Compare::version("c/b", Equal, 2)], true),
        (vec![Compare::version("c/b", Greater, 1)], true),
        (vec![Compare::version("c/b", Less, 2)], false),
        (vec![Compare::version("c/b", NotEqual, 2)], false),
        (vec![Compare::version("missing", Equal, 0)], true),
        (vec![Compare::create_revision("c/b", Equal, 3)], true),
        (vec![Compare::create_revision("c/a", Less, 3)], true),
        (vec![Compare::create_revision("missing", Equal, 0)], true),
        (vec![Compare::mod_revision("c/b", Equal, 4)], true),
        (vec![Compare::mod_revision("c/b", Greater, 4)], false),
        (vec![Compare::mod_revision("missing", Less, 1)], true),
        (vec![Compare::lease("c/a", Equal, 0)], true),
        (vec![Compare::lease("c/a", NotEqual, 0)], false),
        (vec![Compare::lease("missing", Equal, 0)], true),
        (vec![Compare::version("c/", Greater, 0).with_prefix()], true),
        (vec![Compare::version("c/", Equal, 1).with_prefix()], false),
        (
            vec![Compare::mod_revision("c/a", Less, 5).with_range("c/c")],
            true,
        ),
        (
            vec![
                Compare::value("c/a", Equal, "1"),
                Compare::version("c/b", Equal, 2),
            ],
            true,
        ),
        (
            vec![
                Compare::value("c/a", Equal, "1"),
                Compare::version("c/b", Equal, 1),
            ],
            false,
        ),
        (vec![], true),
    ];
    for (compares, expected) in cases {
        let what = format!("{compares:?}");
        let resp = c.txn(Txn::new().when(compares)).await?;
        ensure_eq!(resp.succeeded(), expected, "{what}");
    }
    ensure_eq!(
        current_revision(&mut c).await?,
        4,
        "compare-only txns write nothing"
    );

    let branches = |value: &str| {
        Txn::new()
            .when([Compare::value("c/a", Equal, value)])
            .and_then([
                TxnOp::put("c/x", "then", Some(PutOptions::new().with_prev_key())),
                TxnOp::get("c/x", None),
                TxnOp::delete("c/b", Some(DeleteOptions::new().with_prev_key())),
            ])
            .or_else([
                TxnOp::put("c/x", "else", None),
                TxnOp::get("c/", Some(GetOptions::new().with_prefix())),
            ])
    };
    let then = c.txn(branches("1")).await?;
    ensure_eq!((then.succeeded(), kinds(&then)), (true, "PGD".to_string()));
    ensure_eq!(revision(then.header())?, 5);
    let ops = then.op_responses();
    let got = get_response(&ops[1])?;
    ensure_eq!(
        pairs(got.kvs()),
        owned(&[("c/x", "then")]),
        "a get sees the txn's own put"
    );
    ensure_eq!(got.kvs()[0].mod_revision(), 5);
    let del = delete_response(&ops[2])?;
    ensure_eq!(
        (del.deleted(), pairs(del.prev_kvs())),
        (1, owned(&[("c/b", "3")]))
    );
    let otherwise = c.txn(branches("no")).await?;
    ensure_eq!(
        (otherwise.succeeded(), kinds(&otherwise)),
        (false, "PG".to_string())
    );
    ensure_eq!(revision(otherwise.header())?, 6);
    let listed = get_response(&otherwise.op_responses()[1])?.clone();
    ensure_eq!(pairs(listed.kvs()), owned(&[("c/a", "1"), ("c/x", "else")]));
    Ok(())
}

#[tokio::test]
async fn txn_compares_every_target_and_runs_the_right_branch() -> Result<()> {
    on_each_backend(txn_compares).await
}

async fn nested_txn(s: Session) -> Result<()> {
    let mut c = s.client;
    c.put("n/flag", "on", None).await?;
    let inner = |flag: &str| {
        Txn::new()
            .when([Compare::value("n/flag", CompareOp::Equal, flag)])
            .and_then([TxnOp::put("n/inner", "then", None)])
            .or_else([
                TxnOp::put("n/inner", "else", None),
                TxnOp::get("n/flag", None),
            ])
    };
    let outer = Txn::new()
        .when([Compare::version("n/flag", CompareOp::Equal, 1)])
        .and_then([TxnOp::txn(inner("on")), TxnOp::put("n/outer", "then", None)])
        .or_else([TxnOp::put("n/outer", "else", None)]);
    let resp = c.txn(outer).await?;
    ensure_eq!((resp.succeeded(), kinds(&resp)), (true, "TP".to_string()));
    ensure_eq!(
        revision(resp.header())?,
        3,
        "nested writes share one revision"
    );
    let nested = txn_response(&resp.op_responses()[0])?.clone();
    ensure_eq!(
        (nested.succeeded(), kinds(&nested)),
        (true, "P".to_string())
    );
    ensure_eq!(value_of(&mut c, "n/inner").await?.as_deref(), Some("then"));
    ensure_eq!(value_of(&mut c, "n/outer").await?.as_deref(), Some("then"));

    let outer = Txn::new().and_then([TxnOp::txn(inner("off"))]);
    let resp = c.txn(outer).await?;
    ensure_eq!((resp.succeeded(), kinds(&resp)), (true, "T".to_string()));
    let nested = txn_response(&resp.op_responses()[0])?.clone();
    ensure_eq!(
        (nested.succeeded(), kinds(&nested)),
        (false, "PG".to_string())
    );
    ensure_eq!(revision(resp.header())?, 4);
    ensure_eq!(value_of(&mut c, "n/inner").await?.as_deref(), Some("else"));
    Ok(())
}

#[tokio::test]
async fn nested_txn_runs_its_own_branch() -> Result<()> {
    on_each_backend(nested_txn).await
}

async fn duplicate_keys(s: Session) -> Result<()> {
    let mut c = s.client;
    c.put("d/a", "0", None).await?;
    let prefix = || Some(DeleteOptions::new().with_prefix());
    let put = |k: &str| TxnOp::put(k, "1", None);
    let nested = |then: Vec<TxnOp>, otherwise: Vec<TxnOp>| {
        TxnOp::txn(Txn::new().and_then(then).or_else(otherwise))
    };
    let rejected = [
        ("put twice", vec![put("d/a"), put("d/a")]),
        (
            "put then delete",
            vec![put("d/a"), TxnOp::delete("d/a", None)],
        ),
        (
            "delete then put",
            vec![TxnOp::delete("d/a", None), put("d/a")],
        ),
        (
            "put inside a deleted range",
            vec![put("d/b"), TxnOp::delete("d/", prefix())],
        ),
        (
            "put in a nested txn",
            vec![put("d/a"), nested(vec![put("d/a")], vec![])],
        ),
        (
            "delete in a nested txn",
            vec![
                put("d/a"),
                nested(vec![], vec![TxnOp::delete("d/", prefix())]),
            ],
        ),
    ];
    for (what, ops) in rejected {
        let result = c.txn(Txn::new().and_then(ops)).await;
        expect_status(result, Code::InvalidArgument, DUPLICATE).context(what)?;
    }
    ensure_eq!(
        current_revision(&mut c).await?,
        2,
        "rejected txns write nothing"
    );

    let allowed = [
        (
            "delete twice",
            vec![TxnOp::delete("d/a", None), TxnOp::delete("d/a", None)],
        ),
        (
            "overlapping deletes",
            vec![TxnOp::delete("d/a", None), TxnOp::delete("d/", prefix())],
        ),
        (
            "both branches of a nested txn",
            vec![nested(vec![put("d/x")], vec![put("d/x")])],
        ),
        ("get and put", vec![TxnOp::get("d/y", None), put("d/y")]),
    ];
    for (what, ops) in allowed {
        c.txn(Txn::new().and_then(ops)).await.context(what)?;
    }
    // The then- and else-branches of the outer txn are checked separately.
    c.txn(Txn::new().and_then([put("d/z")]).or_else([put("d/z")]))
        .await?;
    Ok(())
}

#[tokio::test]
async fn duplicate_keys_in_txn_are_rejected() -> Result<()> {
    on_each_backend(duplicate_keys).await
}

async fn compaction(s: Session) -> Result<()> {
    let mut c = s.client;
    for i in 1..=5 {
        c.put("a", format!("v{i}"), None).await?; // revisions 2..=6
    }
    let compacted = c.compact(4, None).await?;
    ensure_eq!(
        revision(compacted.header())?,
        6,
        "compact answers with the current revision"
    );

    for (rev, message) in [(3, COMPACTED), (1, COMPACTED), (7, FUTURE), (100, FUTURE)] {
        let result = get_at(&mut c, "a", rev).await;
        expect_status(result, Code::OutOfRange, message)
            .with_context(|| format!("get at {rev}"))?;
    }
    let at_4 = get_at(&mut c, "a", 4).await?;
    ensure_eq!(
        pairs(at_4.kvs()),
        owned(&[("a", "v3")]),
        "at the compact revision"
    );
    let at_6 = get_at(&mut c, "a", 6).await?;
    ensure_eq!(
        pairs(at_6.kvs()),
        owned(&[("a", "v5")]),
        "at the current revision"
    );

    let in_txn = Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(2)))]);
    expect_status(c.txn(in_txn).await, Code::OutOfRange, COMPACTED).context("txn get at 2")?;

    expect_status(c.compact(4, None).await, Code::OutOfRange, COMPACTED)
        .context("compact 4 again")?;
    expect_status(c.compact(3, None).await, Code::OutOfRange, COMPACTED).context("compact 3")?;
    expect_status(c.compact(7, None).await, Code::OutOfRange, FUTURE).context("compact 7")?;
    c.compact(6, None)
        .await
        .context("compact to the current revision")?;
    expect_status(get_at(&mut c, "a", 5).await, Code::OutOfRange, COMPACTED).context("get at 5")?;
    ensure_eq!(
        current_revision(&mut c).await?,
        6,
        "compaction is not a write"
    );
    Ok(())
}

#[tokio::test]
async fn compaction_and_future_revisions() -> Result<()> {
    on_each_backend(compaction).await
}
