//! Command-line flags shared by the benchmark tools (`bench`, `watch_bench`, `zk_bench`): every flag
//! takes a value (`--seconds 10`), counts are positive, backends are a comma-separated
//! list.

use anyhow::{Context, Result, bail};

use crate::server::Backend;

/// The `(flag, value)` pairs of `args`, in order.
pub fn pairs(mut args: impl Iterator<Item = String>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    while let Some(flag) = args.next() {
        if !flag.starts_with("--") {
            bail!("unexpected argument {flag:?}: flags look like --name value");
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        out.push((flag, value));
    }
    Ok(out)
}

/// A count of at least 1.
pub fn count(flag: &str, value: &str) -> Result<usize> {
    let n: usize = value
        .parse()
        .with_context(|| format!("{flag}: {value:?} is not a number"))?;
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(n)
}

/// `etcd`, `concord` or both, comma-separated.
pub fn backends(flag: &str, value: &str) -> Result<Vec<Backend>> {
    value
        .split(',')
        .map(|name| Backend::parse(name.trim()).with_context(|| flag.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_in_pairs_and_values_are_checked() {
        let args = ["--seconds", "3", "--backends", "concord,etcd"].map(String::from);
        let parsed = pairs(args.into_iter()).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(count("--seconds", &parsed[0].1).unwrap(), 3);
        assert_eq!(
            backends("--backends", &parsed[1].1).unwrap(),
            vec![Backend::Concord, Backend::Etcd]
        );
        assert!(count("--clients", "0").is_err());
        assert!(count("--clients", "many").is_err());
        assert!(backends("--backends", "zookeeper").is_err());
        assert!(pairs(["--seconds"].map(String::from).into_iter()).is_err());
        assert!(pairs(["seconds", "3"].map(String::from).into_iter()).is_err());
    }
}
