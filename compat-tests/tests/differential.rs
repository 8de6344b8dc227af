//! Differential test: one scripted etcdctl session runs against a fresh real etcd and a
//! fresh Concord, and the two transcripts (stdout, stderr and exit code of every step)
//! must be identical once [`Normalizer`] has replaced what legitimately differs (ids,
//! Raft terms and indexes, versions, sizes, ports, log timestamps). Revisions are not
//! normalised: both servers start empty, so they must agree exactly.
//!
//! With `CONCORD_COMPAT_BACKENDS=etcd` the session runs against two real etcds instead,
//! which checks that the normalisation hides nothing but server identity.

use std::fmt::Write as _;

use anyhow::Result;
use concord_compat_tests::fixture::{SORT_PUTS, SORTED_ASCENDING};
use concord_compat_tests::normalize::Normalizer;
use concord_compat_tests::transcripts::compare_with_etcd;
use concord_compat_tests::{Server, etcdctl};

/// One etcdctl invocation and what it reads on stdin.
#[derive(Debug)]
struct Step {
    args: Vec<String>,
    stdin: Option<&'static str>,
}

fn run(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: None,
    }
}

fn feed(args: &[&str], stdin: &'static str) -> Step {
    Step {
        stdin: Some(stdin),
        ..run(args)
    }
}

/// The session. Both servers start empty (revision 1).
fn script() -> Vec<Step> {
    let mut steps = vec![
        // Puts and plain gets.
        run(&["put", "a", "1"]),
        run(&["put", "b", "2"]),
        run(&["put", "c", "3"]),
        run(&["put", "a", "11"]),
        run(&["put", "b", "22", "--prev-kv"]),
        run(&["put", "b", "222", "--prev-kv", "-w", "json"]),
        run(&["get", "a"]),
        run(&["get", "a", "-w", "json"]),
        run(&["get", "a", "-w", "fields"]),
        run(&["get", "a", "--print-value-only"]),
        run(&["get", "a", "--consistency=s"]),
        run(&["get", "a", "--hex"]),
        run(&["get", "missing"]),
        run(&["get", "missing", "-w", "json"]),
        // Ranges.
        run(&["get", "", "--prefix"]),
        run(&["get", "", "--from-key"]),
        run(&["get", "a", "c"]),
        run(&["get", "b", "--from-key"]),
        run(&["get", "a", "--rev=2"]),
        run(&["get", "a", "--rev=1"]),
        run(&["get", "", "--prefix", "--rev=3", "-w", "json"]),
        run(&["get", "", "--prefix", "--limit=2"]),
        run(&["get", "", "--prefix", "--limit=2", "-w", "json"]),
        run(&["get", "", "--prefix", "--keys-only"]),
        run(&["get", "", "--prefix", "--keys-only", "-w", "json"]),
        run(&["get", "", "--prefix", "--consistency=s", "-w", "json"]),
        run(&["get", "c", "a"]),
    ];
    // Sorting: values, versions, create and mod revisions all order the keys differently.
    steps.extend(SORT_PUTS.iter().map(|(k, v)| run(&["put", k, v])));
    for (target, _) in SORTED_ASCENDING {
        for order in ["ASCEND", "DESCEND"] {
            let (sort, order) = (format!("--sort-by={target}"), format!("--order={order}"));
            steps.push(run(&["get", "key/", "--prefix", &sort, &order]));
        }
    }
    steps.extend([
        run(&["get", "key/", "--prefix", "--sort-by=MODIFY"]),
        run(&["get", "key/", "--prefix", "--order=DESCEND"]),
        run(&["get", "key/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit=2", "-w", "json"]),
        run(&["get", "key/", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--keys-only", "--limit=3"]),
    // Put options and errors.
    run(&["put", "", "x"]),
    run(&["get", ""]),
    run(&["get", "a", "--rev=1000"]),
    run(&["get", "a", "--rev=1000", "-w", "json"]),
    run(&["put", "missing", "--ignore-value"]),
    run(&["put", "a", "--ignore-value"]),
    run(&["put", "a", "111", "--ignore-lease"]),
    run(&["get", "a", "-w", "json"]),
    // Deletes.
    run(&["del", "nothing"]),
    run(&["get", "a", "-w", "json"]),
    run(&["del", "b", "--prev-kv"]),
    run(&["del", "key/a", "key/c", "--prev-kv", "-w", "json"]),
    run(&["del", "key/", "--prefix"]),
    run(&["del", "key/", "--prefix"]),
    run(&["del", ""]),
    // Transactions, interactive form on stdin: compares, blank, then-ops, blank,
    // else-ops, blank.
    feed(
        &["txn"],
        "value(\"a\") = \"111\"\nmod(\"a\") > \"0\"\n\nput t yes\nget a\n\nput t no\n\n",
    ),
    feed(
        &["txn"],
        "value(\"a\") = \"2\"\n\nput t yes\n\nput t no\nget t\ndel c\n\n",
    ),
    feed(
        &["txn"],
        "create(\"zz\") = \"0\"\nversion(\"a\") = \"4\"\nmod(\"t\") < \"1000\"\ncreate(\"a\") = \"2\"\n\nput zz new\ndel t\n\n\n",
    ),
    feed(&["txn"], "value(\"nope\") != \"x\"\n\n\nput nope set\n\n"),
    feed(
        &["txn"],
        "version(\"zz\") > \"1\"\n\nput zz big\n\nput zz small\n\n",
    ),
    feed(
        &["txn", "-w", "json"],
        "value(\"a\") = \"111\"\n\nput t yes\nget a\ndel nope --prev-kv\n\n\n",
    ),
    feed(
        &["txn", "-w", "json"],
        "value(\"a\") = \"0\"\n\n\nget zz\n\n",
    ),
    feed(&["txn"], "\nput d 1\nput d 2\n\n\n"),
    feed(&["txn"], "value(\"a\") =\n\n\n\n"),
    feed(&["txn"], "\nput \"\" x\n\n\n"),
    run(&["get", "", "--prefix", "-w", "json"]),
    // Compaction.
    run(&["compaction", "5"]),
    run(&["get", "a", "--rev=4"]),
    run(&["get", "a", "--rev=5"]),
    run(&["get", "", "--prefix", "--rev=5", "-w", "json"]),
    run(&["compaction", "5"]),
    run(&["compaction", "3"]),
    run(&["compaction", "10000"]),
    run(&["compaction", "8"]),
    run(&["get", "a", "--rev=7"]),
    run(&["get", "", "--prefix", "-w", "json"]),
    // The cluster.
    run(&["endpoint", "status"]),
    run(&["endpoint", "status", "-w", "json"]),
    run(&["endpoint", "status", "-w", "fields"]),
    run(&["member", "list"]),
    run(&["member", "list", "-w", "json"]),
    run(&["member", "list", "-w", "fields"]),
    ]);
    steps
}

/// `arg` as a shell would need it: quoted when empty or when it has spaces or quotes.
fn quote(arg: &str) -> String {
    if arg.is_empty() || arg.contains([' ', '"', '\'']) {
        format!("{arg:?}")
    } else {
        arg.to_string()
    }
}

/// Runs [`script`] against `server`; returns its normalised transcript. Every line is
/// tagged with its step number so that a diff line says which step it belongs to.
async fn transcript(server: &Server) -> Result<String> {
    let normalizer = Normalizer::new(server.client_port(), server.peer_port())?;
    let mut out = String::new();
    for (i, step) in script().iter().enumerate() {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let result = etcdctl(&server.endpoint(), &args, step.stdin).await?;
        let command: Vec<String> = step.args.iter().map(|arg| quote(arg)).collect();
        writeln!(out, "#{i:03} $ etcdctl {}", command.join(" "))?;
        for line in step.stdin.unwrap_or("").lines() {
            writeln!(out, "#{i:03} < {line}")?;
        }
        writeln!(out, "#{i:03} exit {}", result.code)?;
        for (stream, text) in [("out", &result.stdout), ("err", &result.stderr)] {
            for line in normalizer.apply(text).lines() {
                writeln!(out, "#{i:03} {stream}| {line}")?;
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn etcdctl_session_matches_real_etcd() -> Result<()> {
    let expected = compare_with_etcd("differential", transcript).await?;
    println!(
        "{} steps, {} transcript lines",
        script().len(),
        expected.lines().count()
    );
    Ok(())
}
