//! The real `etcdctl` (3.4, API v3) against the server: exact output of put/get with
//! every range and sort flag, `-w json` and `-w fields`, del, the interactive `txn` read
//! from stdin, compaction, `endpoint status` and `member list`.
//!
//! Every scenario runs on real etcd as well as on Concord, so the expected outputs are
//! etcd's. (etcdctl 3.4 has no `--count-only`; counts are checked through `-w json`.)

use anyhow::{Context, Result, ensure};
use concord_compat_tests::fixture::{SORT_PUTS, SORTED_ASCENDING, sorted_keys};
use concord_compat_tests::{Etcdctl, Session, ensure_eq, on_each_backend};
use serde_json::Value;

const COMPACTED: &str = "Error: etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "Error: etcdserver: mvcc: required revision is a future revision";

/// Runs etcdctl, requires exit 0 and returns stdout.
async fn ok(ctl: &Etcdctl, args: &[&str]) -> Result<String> {
    let out = ctl.run(args).await?;
    ensure!(out.success(), "etcdctl {args:?} failed: {out:?}");
    Ok(out.stdout)
}

/// Runs etcdctl, requires exit 1 and returns the `Error: ...` line.
async fn fails(ctl: &Etcdctl, args: &[&str]) -> Result<String> {
    let out = ctl.run(args).await?;
    ensure!(
        out.code == 1,
        "etcdctl {args:?} should have failed: {out:?}"
    );
    Ok(out.error_line().to_string())
}

/// Runs etcdctl with `-w json` and parses its output.
async fn json(ctl: &Etcdctl, args: &[&str]) -> Result<Value> {
    let args: Vec<&str> = args.iter().copied().chain(["-w", "json"]).collect();
    let out = ok(ctl, &args).await?;
    serde_json::from_str(&out).with_context(|| format!("etcdctl {args:?} printed {out:?}"))
}

/// Runs the interactive `txn` with `script` on stdin; returns stdout.
async fn txn(ctl: &Etcdctl, script: &str) -> Result<String> {
    let out = ctl.run_with_stdin(&["txn"], script).await?;
    ensure!(out.success(), "txn {script:?} failed: {out:?}");
    Ok(out.stdout)
}

/// The non-empty lines of `--keys-only` output (which prints an empty line per value).
fn key_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.is_empty()).collect()
}

async fn put_get(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "11")] {
        ensure_eq!(ok(&ctl, &["put", k, v]).await?, "OK\n", "put {k} {v}");
    }
    ensure_eq!(
        ok(&ctl, &["put", "b", "22", "--prev-kv"]).await?,
        "OK\nb\n2\n"
    );
    ensure_eq!(ok(&ctl, &["get", "a"]).await?, "a\n11\n");
    ensure_eq!(ok(&ctl, &["get", "a", "--print-value-only"]).await?, "11\n");
    ensure_eq!(ok(&ctl, &["get", "a", "--consistency=s"]).await?, "a\n11\n");
    ensure_eq!(ok(&ctl, &["get", "missing"]).await?, "");
    ensure_eq!(
        ok(&ctl, &["get", "", "--prefix"]).await?,
        "a\n11\nb\n22\nc\n3\n"
    );
    ensure_eq!(
        ok(&ctl, &["get", "a", "c"]).await?,
        "a\n11\nb\n22\n",
        "range [a, c)"
    );
    ensure_eq!(
        ok(&ctl, &["get", "b", "--from-key"]).await?,
        "b\n22\nc\n3\n"
    );
    ensure_eq!(ok(&ctl, &["get", "a", "--rev=2"]).await?, "a\n1\n");
    ensure_eq!(
        ok(&ctl, &["get", "a", "--rev=1"]).await?,
        "",
        "before a existed"
    );
    ensure_eq!(
        ok(&ctl, &["get", "", "--prefix", "--limit=2"]).await?,
        "a\n11\nb\n22\n"
    );
    ensure_eq!(
        ok(&ctl, &["get", "", "--prefix", "--keys-only"]).await?,
        "a\n\nb\n\nc\n\n"
    );
    ensure_eq!(
        ok(&ctl, &["get", "a", "--hex"]).await?,
        "\\x61\n\\x31\\x31\n"
    );

    let got = json(&ctl, &["get", "a"]).await?;
    ensure_eq!(got["header"]["revision"], 6);
    ensure_eq!(
        got["kvs"],
        serde_json::json!([{"key": "YQ==", "create_revision": 2, "mod_revision": 5, "version": 2, "value": "MTE="}])
    );
    ensure_eq!(got["count"], 1);
    ensure_eq!(got.get("more"), None, "false is omitted");
    let page = json(&ctl, &["get", "", "--prefix", "--limit=1"]).await?;
    ensure_eq!(
        (&page["more"], &page["count"]),
        (&Value::Bool(true), &Value::from(3))
    );

    let fields = ok(&ctl, &["get", "a", "-w", "fields"]).await?;
    let server_specific = ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "];
    let stable: Vec<&str> = fields
        .lines()
        .filter(|line| !server_specific.iter().any(|k| line.starts_with(k)))
        .collect();
    ensure_eq!(
        stable,
        [
            "\"Revision\" : 6",
            "\"Key\" : \"a\"",
            "\"CreateRevision\" : 2",
            "\"ModRevision\" : 5",
            "\"Version\" : 2",
            "\"Value\" : \"11\"",
            "\"Lease\" : 0",
            "\"More\" : false",
            "\"Count\" : 1",
        ]
    );
    ensure_eq!(fields.lines().count(), stable.len() + server_specific.len());

    ensure_eq!(
        fails(&ctl, &["put", "", "x"]).await?,
        "Error: etcdserver: key is not provided"
    );
    ensure_eq!(
        fails(&ctl, &["get", ""]).await?,
        "Error: etcdserver: key is not provided"
    );
    ensure_eq!(fails(&ctl, &["get", "a", "--rev=100"]).await?, FUTURE);
    ensure_eq!(
        fails(&ctl, &["put", "missing", "--ignore-value"]).await?,
        "Error: etcdserver: key not found"
    );
    ensure_eq!(ok(&ctl, &["put", "a", "--ignore-value"]).await?, "OK\n");
    ensure_eq!(
        ok(&ctl, &["get", "a"]).await?,
        "a\n11\n",
        "ignore-value keeps the value"
    );
    Ok(())
}

#[tokio::test]
async fn put_and_get_with_range_flags() -> Result<()> {
    on_each_backend(put_get).await
}

async fn sort_by(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    for (k, v) in SORT_PUTS {
        ok(&ctl, &["put", k, v]).await?;
    }
    for (target, _) in SORTED_ASCENDING {
        for (order, descending) in [("ASCEND", false), ("DESCEND", true)] {
            let sort = format!("--sort-by={target}");
            let order_flag = format!("--order={order}");
            let out = ok(
                &ctl,
                &["get", "key/", "--prefix", "--keys-only", &sort, &order_flag],
            )
            .await?;
            ensure_eq!(
                key_lines(&out),
                sorted_keys(target, descending),
                "{target} {order}"
            );
        }
    }
    let out = ok(
        &ctl,
        &["get", "key/", "--prefix", "--keys-only", "--sort-by=MODIFY"],
    )
    .await?;
    ensure_eq!(
        key_lines(&out),
        sorted_keys("MODIFY", false),
        "ascending by default"
    );
    let out = ok(
        &ctl,
        &["get", "key/", "--prefix", "--keys-only", "--order=DESCEND"],
    )
    .await?;
    ensure_eq!(
        key_lines(&out),
        sorted_keys("KEY", true),
        "by key by default"
    );
    let top = json(
        &ctl,
        &[
            "get",
            "key/",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
            "--limit=2",
        ],
    )
    .await?;
    ensure_eq!(top["kvs"][0]["key"], "a2V5L2M=", "key/c first");
    ensure_eq!(top["kvs"][1]["key"], "a2V5L2E=", "key/a second");
    ensure_eq!(
        (&top["more"], &top["count"]),
        (&Value::Bool(true), &Value::from(4))
    );
    Ok(())
}

#[tokio::test]
async fn get_with_every_sort_target_and_order() -> Result<()> {
    on_each_backend(sort_by).await
}

async fn delete(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    for (k, v) in [("p/a", "1"), ("p/b", "2"), ("p/c", "3"), ("q", "4")] {
        ok(&ctl, &["put", k, v]).await?;
    }
    ensure_eq!(ok(&ctl, &["del", "p/a", "--prev-kv"]).await?, "1\np/a\n1\n");
    ensure_eq!(ok(&ctl, &["del", "p/", "--prefix"]).await?, "2\n");
    ensure_eq!(ok(&ctl, &["del", "p/a"]).await?, "0\n");
    let after = json(&ctl, &["get", "q"]).await?;
    ensure_eq!(
        after["header"]["revision"],
        7,
        "deleting nothing does not bump the revision"
    );
    ensure_eq!(
        ok(&ctl, &["del", "p", "--from-key", "--prev-kv"]).await?,
        "1\nq\n4\n"
    );
    ensure_eq!(ok(&ctl, &["get", "", "--prefix"]).await?, "");
    Ok(())
}

#[tokio::test]
async fn del_with_prev_kv_prefix_and_from_key() -> Result<()> {
    on_each_backend(delete).await
}

async fn interactive_txn(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    ok(&ctl, &["put", "a", "1"]).await?; // revision 2
    ok(&ctl, &["put", "b", "2"]).await?; // revision 3

    let success = "value(\"a\") = \"1\"\nmod(\"a\") > \"0\"\n\nput b yes\nget a\n\nput b no\n\n";
    ensure_eq!(txn(&ctl, success).await?, "SUCCESS\n\nOK\n\na\n1\n");
    ensure_eq!(
        ok(&ctl, &["get", "b", "--print-value-only"]).await?,
        "yes\n"
    );

    let failure = "value(\"a\") = \"2\"\n\nput b yes\n\nput b no\nget b\ndel c\n\n";
    ensure_eq!(txn(&ctl, failure).await?, "FAILURE\n\nOK\n\nb\nno\n\n0\n");

    let compares = "create(\"zz\") = \"0\"\nversion(\"a\") = \"1\"\nmod(\"b\") < \"100\"\ncreate(\"a\") = \"2\"\n\nput zz new\ndel b\n\n\n";
    ensure_eq!(txn(&ctl, compares).await?, "SUCCESS\n\nOK\n\n1\n");
    let missing_value = "value(\"nope\") != \"x\"\n\n\nput nope set\n\n";
    ensure_eq!(
        txn(&ctl, missing_value).await?,
        "FAILURE\n\nOK\n",
        "value on a missing key is false"
    );
    let greater = "version(\"zz\") > \"1\"\n\nput zz big\n\nput zz small\n\n";
    ensure_eq!(txn(&ctl, greater).await?, "FAILURE\n\nOK\n");
    ensure_eq!(
        ok(&ctl, &["get", "zz", "--print-value-only"]).await?,
        "small\n"
    );

    let out = ctl.run_with_stdin(&["txn", "-w", "json"], success).await?;
    let resp: Value = serde_json::from_str(&out.stdout)?;
    ensure_eq!(resp["succeeded"], true);
    ensure_eq!(resp["header"]["revision"], 9, "one revision per txn");
    ensure_eq!(
        resp["responses"][0]["Response"]["ResponsePut"]["header"]["revision"],
        9
    );
    ensure_eq!(
        resp["responses"][1]["Response"]["ResponseRange"]["count"],
        1
    );

    let duplicate = "\nput d 1\nput d 2\n\n\n";
    let out = ctl.run_with_stdin(&["txn"], duplicate).await?;
    ensure_eq!(out.code, 1);
    ensure_eq!(
        out.error_line(),
        "Error: etcdserver: duplicate key given in txn request"
    );
    Ok(())
}

#[tokio::test]
async fn txn_from_stdin_runs_the_right_branch() -> Result<()> {
    on_each_backend(interactive_txn).await
}

async fn compaction(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    for i in 1..=5 {
        ok(&ctl, &["put", "x", &format!("v{i}")]).await?; // revisions 2..=6
    }
    ensure_eq!(
        ok(&ctl, &["compaction", "4"]).await?,
        "compacted revision 4\n"
    );
    ensure_eq!(fails(&ctl, &["get", "x", "--rev=3"]).await?, COMPACTED);
    ensure_eq!(ok(&ctl, &["get", "x", "--rev=4"]).await?, "x\nv3\n");
    ensure_eq!(fails(&ctl, &["compaction", "4"]).await?, COMPACTED);
    ensure_eq!(fails(&ctl, &["compaction", "2"]).await?, COMPACTED);
    ensure_eq!(fails(&ctl, &["compaction", "7"]).await?, FUTURE);
    ensure_eq!(ok(&ctl, &["get", "x"]).await?, "x\nv5\n");
    Ok(())
}

#[tokio::test]
async fn compaction_then_reading_below_it_fails() -> Result<()> {
    on_each_backend(compaction).await
}

async fn cluster_info(s: Session) -> Result<()> {
    let ctl = Etcdctl::new(&s.endpoint);
    ok(&ctl, &["put", "k", "v"]).await?;

    let members = ok(&ctl, &["member", "list"]).await?;
    let fields: Vec<&str> = members.trim_end().split(", ").collect();
    ensure_eq!(fields.len(), 6, "one member: {members:?}");
    let id = fields[0];
    ensure!(
        u64::from_str_radix(id, 16).is_ok_and(|id| id != 0),
        "member id {id:?}"
    );
    let peer = format!("http://127.0.0.1:{}", s.peer_port);
    let client = format!("http://{}", s.endpoint);
    ensure_eq!(
        fields[1..],
        ["started", "compat", peer.as_str(), client.as_str(), "false"]
    );

    let status = ok(&ctl, &["endpoint", "status"]).await?;
    let fields: Vec<&str> = status.trim_end_matches('\n').split(", ").collect();
    ensure_eq!(fields.len(), 10, "{status:?}");
    ensure_eq!(
        (fields[0], fields[1]),
        (s.endpoint.as_str(), id),
        "endpoint and member id"
    );
    ensure!(fields[2].starts_with("3."), "version {:?}", fields[2]);
    ensure_eq!(
        (fields[4], fields[5]),
        ("true", "false"),
        "leader, not a learner"
    );
    ensure_eq!(fields[9], "", "no errors");

    let json_status = json(&ctl, &["endpoint", "status"]).await?;
    let st = &json_status[0]["Status"];
    ensure_eq!(st["header"]["revision"], 2);
    ensure_eq!(
        st["leader"],
        st["header"]["member_id"],
        "a single member leads"
    );
    ensure_eq!(json_status[0]["Endpoint"], s.endpoint.as_str());
    let json_members = json(&ctl, &["member", "list"]).await?;
    let member = &json_members["members"][0];
    ensure_eq!(member["ID"], st["header"]["member_id"]);
    ensure_eq!(member["name"], "compat");
    ensure_eq!(member["clientURLs"], serde_json::json!([client]));
    ensure_eq!(
        json_members["header"].get("revision"),
        None,
        "member list has no revision"
    );
    Ok(())
}

#[tokio::test]
async fn endpoint_status_and_member_list() -> Result<()> {
    on_each_backend(cluster_info).await
}
