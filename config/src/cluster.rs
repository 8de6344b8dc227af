//! `[cluster]`: who the members are at bootstrap, whether this node founds a cluster or
//! joins a running one, and where the peer port listens. The initial cluster is written
//! as etcd writes it (`--initial-cluster n1=http://10.0.0.1:2380,n2=...`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How a node with an empty data dir starts (etcd's `--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    /// Every member of `initial_cluster` bootstraps the cluster together.
    New,
    /// The cluster runs already; this node was added with MemberAdd and waits for its
    /// leader to replicate to it.
    Existing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `name=peer_url` pairs separated by commas; empty: this node alone.
    pub initial_cluster: String,
    pub initial_cluster_state: InitialClusterState,
    /// Member and cluster ids are derived from it, so two clusters bootstrapped from the
    /// same addresses with different tokens never mistake each other's members.
    pub initial_cluster_token: String,
    /// Where the peer port (Raft, snapshots, forwarded requests) binds. Unset: the host
    /// and port of `node.peer_url` when the cluster has other members, and no peer port
    /// for a node alone.
    pub peer_listen: Option<SocketAddr>,
    /// The TLS profile of the peer port. Peers then speak mutual TLS only: the profile's
    /// certificate serves and dials, its `client_ca` verifies the other members, and
    /// every peer URL is `https://`.
    pub peer_tls: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            initial_cluster: String::new(),
            initial_cluster_state: InitialClusterState::New,
            initial_cluster_token: "concord-cluster".into(),
            peer_listen: None,
            peer_tls: None,
        }
    }
}

/// One `name=peer_url` entry of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_url: String,
}

impl ClusterSettings {
    /// The initial members, in the order written; an error names the bad entry.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, String> {
        let mut members: Vec<InitialMember> = Vec::new();
        for entry in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((name, url)) = entry.split_once('=') else {
                return Err(format!("{entry:?} is not name=peer_url"));
            };
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty() {
                return Err(format!("{entry:?} has an empty name"));
            }
            peer_socket_addr(url)?;
            if members.iter().any(|m| m.name == name) {
                return Err(format!("member name {name:?} appears twice"));
            }
            if members.iter().any(|m| m.peer_url == url) {
                return Err(format!("peer URL {url:?} appears twice"));
            }
            members.push(InitialMember {
                name: name.to_string(),
                peer_url: url.to_string(),
            });
        }
        Ok(members)
    }
}

/// The socket address of an `http://host:port` or `https://host:port` peer URL (the
/// host must be an IP address: peers are dialled without a resolver).
pub fn peer_socket_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("peer URL {url:?} must start with http:// or https://"))?;
    rest.trim_end_matches('/')
        .parse()
        .map_err(|_| format!("peer URL {url:?} must be http://IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(initial: &str) -> ClusterSettings {
        ClusterSettings {
            initial_cluster: initial.into(),
            ..Default::default()
        }
    }

    #[test]
    fn initial_cluster_parses_etcd_syntax() {
        let members = with("n1=http://127.0.0.1:2380, n2=http://127.0.0.2:2380")
            .initial_members()
            .unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].name, "n2");
        assert_eq!(members[1].peer_url, "http://127.0.0.2:2380");
        assert!(with("").initial_members().unwrap().is_empty());
    }

    #[test]
    fn bad_initial_clusters_are_refused_with_the_entry() {
        for (text, needle) in [
            ("n1", "not name=peer_url"),
            ("=http://127.0.0.1:1", "empty name"),
            ("n1=127.0.0.1:1", "http://"),
            ("n1=http://host:1", "IP:PORT"),
            ("n1=http://127.0.0.1:1,n1=http://127.0.0.1:2", "twice"),
            ("n1=http://127.0.0.1:1,n2=http://127.0.0.1:1", "twice"),
        ] {
            let error = with(text).initial_members().unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
