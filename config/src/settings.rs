//! The settings tree, its defaults, loading (file → environment → flags) and validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::cli::ServeArgs;
use crate::cluster::{ClusterSettings, InitialMember, peer_socket_addr};
use crate::plugins::{PluginAdapterSettings, PluginSettings, plugin_adapters};

/// A configuration that cannot be used, with the file (or source) and key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {source_name}: key `{key}`: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub node: NodeSettings,
    pub limits: Limits,
    pub raft: RaftSettings,
    pub cluster: ClusterSettings,
    pub adapters: Adapters,
    /// The metrics listener (etcd's `--listen-metrics-urls`).
    pub metrics: MetricsSettings,
    /// Named TLS profiles that listeners refer to.
    pub tls: BTreeMap<String, TlsProfile>,
    /// Shared libraries that provide more adapters.
    pub plugins: Vec<PluginSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    pub name: String,
    pub data_dir: PathBuf,
    /// URL other members use to reach this one (the peer port).
    pub peer_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// Storage size that raises the NOSPACE alarm.
    pub quota_backend_bytes: u64,
    /// Memory for tree nodes cached in front of the state database; 0: no cache.
    pub node_cache_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every_entries: u64,
    /// How often the leader replicates remaining lease TTLs.
    pub lease_checkpoint_interval_ms: u64,
}

// Not `deny_unknown_fields`: other sections are loaded adapters', checked in `validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Adapters {
    /// The etcd v3 gRPC API.
    pub etcd: AdapterSettings,
    /// The etcd v2 HTTP+JSON API.
    pub etcd_v2: EtcdV2Settings,
    /// The ZooKeeper client protocol.
    pub zookeeper: ZookeeperSettings,
    /// `[adapters.<name>]` of loaded plugins, by name.
    #[serde(flatten)]
    pub loaded: BTreeMap<String, figment::value::Value>,
}

/// `[adapters.etcd_v2]`: served on the etcd client port (as etcd does) unless given a
/// listener of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdV2Settings {
    pub enabled: bool,
    /// A port of its own; absent: the etcd client port (`adapters.etcd.listen`).
    pub listen: Option<SocketAddr>,
    /// The TLS profile of its own port (on the shared port, `adapters.etcd.tls` applies).
    pub tls: Option<String>,
}

impl Default for EtcdV2Settings {
    fn default() -> Self {
        EtcdV2Settings {
            enabled: true,
            listen: None,
            tls: None,
        }
    }
}

/// `[adapters.zookeeper]`: the listeners and the knobs ZooKeeper has in `zoo.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZookeeperSettings {
    pub enabled: bool,
    /// The plaintext client port (ZooKeeper: `clientPort`).
    pub listen: SocketAddr,
    /// Whether `listen` is served; `false` (with `secure_listen`) serves TLS only.
    pub plaintext: bool,
    /// The TLS client port (ZooKeeper: `secureClientPort`), served beside `listen`.
    pub secure_listen: Option<SocketAddr>,
    /// Name of the `[tls.<name>]` profile of `secure_listen` (required with it).
    pub tls: Option<String>,
    /// ZooKeeper's `tickTime`: the unit of the session timeout bounds below.
    pub tick_time_ms: u32,
    /// Shortest session timeout granted (ZooKeeper: `minSessionTimeout`, 2 ticks).
    pub min_session_timeout_ms: u32,
    /// Longest session timeout granted (ZooKeeper: `maxSessionTimeout`, 20 ticks).
    pub max_session_timeout_ms: u32,
    /// Largest frame a client may send (ZooKeeper: `jute.maxbuffer`, 0xfffff bytes).
    pub max_frame_bytes: usize,
    /// Four-letter words answered on the client port (ZooKeeper: `4lw.commands.whitelist`).
    pub four_letter_words: Vec<String>,
    /// Allow TTL nodes (ZooKeeper: `extendedTypesEnabled`).
    pub extended_types: bool,
    /// How often empty containers and expired TTL nodes are looked for
    /// (ZooKeeper: `znode.container.checkIntervalMs`).
    pub container_check_interval_ms: u64,
}

impl Default for ZookeeperSettings {
    fn default() -> Self {
        ZookeeperSettings {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 2181)),
            plaintext: true,
            secure_listen: None,
            tls: None,
            tick_time_ms: 2000,
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            max_frame_bytes: 0xfffff,
            four_letter_words: vec!["srvr".into()],
            extended_types: false,
            container_check_interval_ms: 60_000,
        }
    }
}

/// `[metrics]`: Prometheus `/metrics` and `/health` over HTTP/1.1 on a port of their own,
/// as etcd's `--listen-metrics-urls`. Off unless enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// Where it listens when enabled.
    pub listen: SocketAddr,
    /// Name of a `[tls.<name>]` profile; absent means plaintext.
    pub tls: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 2381)),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSettings {
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Name of a `[tls.<name>]` profile; absent means plaintext.
    #[serde(default)]
    pub tls: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProfile {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Oldest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: Option<String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            name: "default".into(),
            data_dir: PathBuf::from("concord-data"),
            peer_url: "http://127.0.0.1:2380".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            node_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_every_entries: 10_000,
            lease_checkpoint_interval_ms: 5_000,
        }
    }
}

impl Default for Adapters {
    fn default() -> Self {
        Adapters {
            etcd: AdapterSettings {
                enabled: true,
                listen: SocketAddr::from(([127, 0, 0, 1], 2379)),
                tls: None,
            },
            etcd_v2: EtcdV2Settings::default(),
            zookeeper: ZookeeperSettings::default(),
            loaded: BTreeMap::new(),
        }
    }
}

/// Flags as a figment provider: only the flags actually given.
fn flag_overrides(args: &ServeArgs) -> Figment {
    let mut figment = Figment::new();
    if let Some(dir) = &args.data_dir {
        figment = figment.merge(Serialized::default("node.data_dir", dir));
    }
    if let Some(name) = &args.name {
        figment = figment.merge(Serialized::default("node.name", name));
    }
    if let Some(addr) = &args.zk_listen {
        figment = figment.merge(Serialized::default(
            "adapters.zookeeper.listen",
            addr.to_string(),
        ));
    }
    if let Some(addr) = &args.etcd_listen {
        figment = figment.merge(Serialized::default(
            "adapters.etcd.listen",
            addr.to_string(),
        ));
    }
    figment
}

fn source_name(error: &figment::Error, args: &ServeArgs) -> String {
    match error.metadata.as_ref() {
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            _ => meta.name.to_string(),
        },
        None => args
            .config
            .as_ref()
            .map_or_else(|| "defaults".to_string(), |p| p.display().to_string()),
    }
}

impl Settings {
    /// Loads the file named by `args.config` (if any), then the environment, then flags,
    /// and validates the result.
    pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
        Self::load_with_env(args, Env::prefixed("CONCORD_").split("__"))
    }

    fn load_with_env(args: &ServeArgs, env: Env) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &args.config {
            if !path.is_file() {
                return Err(ConfigError {
                    source_name: path.display().to_string(),
                    key: "--config".into(),
                    message: "file not found".into(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // `CONCORD_CONFIG` names the file; it is not a setting.
        figment = figment
            .merge(env.ignore(&["config"]))
            .merge(flag_overrides(args));
        let settings: Settings = figment.extract().map_err(|e| ConfigError {
            source_name: source_name(&e, args),
            key: if e.path.is_empty() {
                "(top level)".to_string()
            } else {
                e.path.join(".")
            },
            message: e.kind.to_string(),
        })?;
        let origin = args
            .config
            .as_ref()
            .map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        settings.validate(&origin)?;
        Ok(settings)
    }

    /// Checks what types alone cannot: non-empty names, limits, TLS profiles and files.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            source_name: origin.to_string(),
            key: key.to_string(),
            message,
        };
        if self.node.name.trim().is_empty() {
            return Err(fail("node.name", "must not be empty".into()));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(fail("node.data_dir", "must not be empty".into()));
        }
        if self.limits.max_txn_ops == 0 {
            return Err(fail("limits.max_txn_ops", "must be at least 1".into()));
        }
        if self.limits.max_request_bytes < 1024 {
            return Err(fail(
                "limits.max_request_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.limits.quota_backend_bytes < 1024 * 1024 {
            return Err(fail(
                "limits.quota_backend_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            ));
        }
        if self.raft.lease_checkpoint_interval_ms < 100 {
            return Err(fail(
                "raft.lease_checkpoint_interval_ms",
                "must be at least 100".into(),
            ));
        }
        if self.raft.heartbeat_interval_ms == 0
            || self.raft.election_timeout_ms <= self.raft.heartbeat_interval_ms
        {
            return Err(fail(
                "raft.election_timeout_ms",
                "must be greater than raft.heartbeat_interval_ms (which must be > 0)".into(),
            ));
        }
        for (name, profile) in &self.tls {
            let files = [
                ("cert", Some(&profile.cert)),
                ("key", Some(&profile.key)),
                ("client_ca", profile.client_ca.as_ref()),
            ];
            for (field, path) in files {
                if let Some(path) = path {
                    check_readable(path).map_err(|m| fail(&format!("tls.{name}.{field}"), m))?;
                }
            }
        }
        let v2 = &self.adapters.etcd_v2;
        if v2.enabled && v2.listen.is_none() && !self.adapters.etcd.enabled {
            return Err(fail(
                "adapters.etcd_v2.listen",
                "must be set when adapters.etcd is disabled (v2 shares its port otherwise)".into(),
            ));
        }
        if v2.tls.is_some() && v2.listen.is_none() {
            return Err(fail(
                "adapters.etcd_v2.tls",
                "needs adapters.etcd_v2.listen (on the etcd client port, v2 is served with \
                 adapters.etcd.tls)"
                    .into(),
            ));
        }
        let zk = &self.adapters.zookeeper;
        if zk.min_session_timeout_ms == 0 || zk.min_session_timeout_ms > zk.max_session_timeout_ms {
            return Err(fail(
                "adapters.zookeeper.min_session_timeout_ms",
                "must be > 0 and at most adapters.zookeeper.max_session_timeout_ms".into(),
            ));
        }
        if zk.max_frame_bytes < 1024 {
            return Err(fail(
                "adapters.zookeeper.max_frame_bytes",
                "must be at least 1024".into(),
            ));
        }
        if zk.container_check_interval_ms < 10 {
            return Err(fail(
                "adapters.zookeeper.container_check_interval_ms",
                "must be at least 10".into(),
            ));
        }
        const KNOWN_WORDS: [&str; 9] = [
            "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "isro",
        ];
        if let Some(word) = zk
            .four_letter_words
            .iter()
            .find(|w| *w != "*" && !KNOWN_WORDS.contains(&w.as_str()))
        {
            return Err(fail(
                "adapters.zookeeper.four_letter_words",
                format!(
                    "unknown four-letter word {word:?} (known: {}, or \"*\")",
                    KNOWN_WORDS.join(", ")
                ),
            ));
        }
        match (zk.secure_listen, &zk.tls) {
            (Some(_), None) => {
                return Err(fail(
                    "adapters.zookeeper.tls",
                    "must name a TLS profile when adapters.zookeeper.secure_listen is set".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(fail(
                    "adapters.zookeeper.secure_listen",
                    "must be set when adapters.zookeeper.tls is (TLS is served on the secure \
                     port only; adapters.zookeeper.listen stays plaintext)"
                        .into(),
                ));
            }
            (Some(secure), Some(_)) if zk.plaintext && secure == zk.listen => {
                return Err(fail(
                    "adapters.zookeeper.secure_listen",
                    format!("{secure} is also adapters.zookeeper.listen"),
                ));
            }
            _ => {}
        }
        if zk.enabled && !zk.plaintext && zk.secure_listen.is_none() {
            return Err(fail(
                "adapters.zookeeper.plaintext",
                "false needs adapters.zookeeper.secure_listen (otherwise nothing is served)".into(),
            ));
        }
        let members = self
            .cluster_members()
            .map_err(|(key, message)| fail(key, message))?;
        let profile_refs = [
            ("adapters.etcd.tls", &self.adapters.etcd.tls),
            ("adapters.etcd_v2.tls", &v2.tls),
            ("adapters.zookeeper.tls", &zk.tls),
            ("cluster.peer_tls", &self.cluster.peer_tls),
            ("metrics.tls", &self.metrics.tls),
        ];
        for (key, reference) in profile_refs {
            if let Some(profile) = reference
                && !self.tls.contains_key(profile)
            {
                return Err(fail(
                    key,
                    format!("no TLS profile named {profile:?} ([tls.{profile}] is missing)"),
                ));
            }
        }
        self.check_peer_tls(&members)
            .map_err(|(key, message)| fail(key, message))?;
        for (name, profile) in &self.tls {
            if let Some(version) = &profile.min_version
                && version != "1.2"
                && version != "1.3"
            {
                return Err(fail(
                    &format!("tls.{name}.min_version"),
                    format!("unknown TLS version {version:?} (use \"1.2\" or \"1.3\")"),
                ));
            }
        }
        self.plugin_adapters()
            .map_err(|(key, message)| fail(&key, message))?;
        Ok(())
    }

    /// The members the cluster bootstraps with (this node alone when
    /// `cluster.initial_cluster` is empty); this node must be one of them, under its
    /// `node.name` and `node.peer_url`.
    pub fn cluster_members(&self) -> Result<Vec<InitialMember>, (&'static str, String)> {
        let key = "cluster.initial_cluster";
        let mut members = self.cluster.initial_members().map_err(|m| (key, m))?;
        if members.is_empty() {
            members.push(InitialMember {
                name: self.node.name.clone(),
                peer_url: self.node.peer_url.clone(),
            });
        }
        let Some(me) = members.iter().find(|m| m.name == self.node.name) else {
            return Err((
                key,
                format!("does not name this node ({:?}, node.name)", self.node.name),
            ));
        };
        if me.peer_url != self.node.peer_url {
            return Err((
                "node.peer_url",
                format!(
                    "is {:?} but cluster.initial_cluster gives {:?} for {:?}",
                    self.node.peer_url, me.peer_url, me.name
                ),
            ));
        }
        peer_socket_addr(&self.node.peer_url).map_err(|m| ("node.peer_url", m))?;
        Ok(members)
    }

    /// With `cluster.peer_tls`, the profile must verify peers (`client_ca`) and every
    /// peer URL must be `https://`; without it, every peer URL is `http://`. So no member
    /// silently speaks plaintext to one that expects TLS.
    fn check_peer_tls(&self, members: &[InitialMember]) -> Result<(), (&'static str, String)> {
        let profile = self.cluster.peer_tls.as_ref();
        if let Some(name) = profile
            && self.tls.get(name).is_some_and(|p| p.client_ca.is_none())
        {
            return Err((
                "cluster.peer_tls",
                format!(
                    "profile {name:?} has no client_ca: members verify each other's \
                     certificates with it (the peer port is mutual TLS)"
                ),
            ));
        }
        let scheme = if profile.is_some() {
            "https://"
        } else {
            "http://"
        };
        for member in members {
            if !member.peer_url.starts_with(scheme) {
                let key = if member.name == self.node.name {
                    "node.peer_url"
                } else {
                    "cluster.initial_cluster"
                };
                let why = if profile.is_some() {
                    "cluster.peer_tls is set"
                } else {
                    "cluster.peer_tls is not set (https:// peer URLs need a TLS profile)"
                };
                return Err((
                    key,
                    format!(
                        "peer URL {:?} must start with {scheme}: {why}",
                        member.peer_url
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where the peer port binds: `cluster.peer_listen`, else `node.peer_url`'s address
    /// when there are other members; `None` for a node alone without a peer port.
    pub fn peer_listen(&self) -> Option<SocketAddr> {
        if self.cluster.peer_listen.is_some() {
            return self.cluster.peer_listen;
        }
        let alone = self.cluster_members().is_ok_and(|m| m.len() == 1)
            && self.cluster.initial_cluster_state == crate::InitialClusterState::New;
        if alone {
            None
        } else {
            peer_socket_addr(&self.node.peer_url).ok()
        }
    }

    /// The adapters of loaded plugins, each with its section's host keys and the JSON of
    /// its own keys.
    pub fn plugin_adapters(&self) -> Result<Vec<PluginAdapterSettings>, (String, String)> {
        plugin_adapters(&self.plugins, &self.adapters.loaded, &|profile| {
            self.tls.contains_key(profile)
        })
    }
}

fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn args_for(file: &tempfile::NamedTempFile) -> ServeArgs {
        ServeArgs {
            config: Some(file.path().to_path_buf()),
            ..Default::default()
        }
    }

    fn no_env() -> Env {
        Env::prefixed("CONCORD_TEST_UNUSED_PREFIX_").split("__")
    }

    /// This crate's directory as `cargo test` gives it to the running test; the compile-time
    /// value goes stale when a shared target dir is reused from another checkout path.
    fn crate_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
    }

    #[test]
    fn shipped_example_parses_and_matches_defaults() {
        let example = crate_dir().join("concord.toml");
        let args = ServeArgs {
            config: Some(example),
            ..Default::default()
        };
        let settings = Settings::load_with_env(&args, no_env()).unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn lease_and_quota_limits_are_checked() {
        let file = write_config("[raft]\nlease_checkpoint_interval_ms = 5\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "raft.lease_checkpoint_interval_ms");
        let file = write_config("[limits]\nquota_backend_bytes = 10\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "limits.quota_backend_bytes");
    }

    #[test]
    fn cluster_members_must_include_this_node_and_derive_the_peer_port() {
        let cluster = |extra: &str| {
            format!(
                "[node]\nname = \"n2\"\npeer_url = \"http://127.0.0.2:2380\"\n{extra}\n\
                 [cluster]\ninitial_cluster = \"n1=http://127.0.0.1:2380,n2=http://127.0.0.2:2380\"\n"
            )
        };
        let file = write_config(&cluster(""));
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        assert_eq!(settings.cluster_members().unwrap().len(), 2);
        assert_eq!(settings.peer_listen(), "127.0.0.2:2380".parse().ok());
        let file = write_config(&cluster("").replace("n2=", "n9="));
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "cluster.initial_cluster");
        assert!(err.message.contains("does not name this node"), "{err}");
        let file = write_config(&cluster("").replace(
            "peer_url = \"http://127.0.0.2",
            "peer_url = \"http://127.0.0.3",
        ));
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "node.peer_url");
        // A node alone opens no peer port unless asked to.
        let alone = Settings::default();
        assert_eq!(alone.peer_listen(), None);
        let file = write_config("[cluster]\npeer_listen = \"127.0.0.1:7000\"\n");
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        assert_eq!(settings.peer_listen(), "127.0.0.1:7000".parse().ok());
    }

    #[test]
    fn peer_tls_needs_a_verifying_profile_and_https_peer_urls() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("any.pem");
        std::fs::write(&pem, "not checked here").unwrap();
        let config = |peer_tls: &str, client_ca: bool, scheme: &str| {
            let ca = if client_ca {
                format!("client_ca = {pem:?}\n")
            } else {
                String::new()
            };
            write_config(&format!(
                "[node]\nname = \"n1\"\npeer_url = \"{scheme}://127.0.0.1:2380\"\n\
                 [cluster]\ninitial_cluster = \"n1={scheme}://127.0.0.1:2380,\
                 n2=https://127.0.0.2:2380\"\n{peer_tls}\n\
                 [tls.peer]\ncert = {pem:?}\nkey = {pem:?}\n{ca}"
            ))
        };
        let load =
            |file: &tempfile::NamedTempFile| Settings::load_with_env(&args_for(file), no_env());
        let settings = load(&config("peer_tls = \"peer\"", true, "https")).unwrap();
        assert_eq!(settings.cluster.peer_tls.as_deref(), Some("peer"));

        let err = load(&config("peer_tls = \"peer\"", false, "https")).unwrap_err();
        assert_eq!(err.key, "cluster.peer_tls");
        assert!(err.message.contains("has no client_ca"), "{err}");
        let err = load(&config("peer_tls = \"nope\"", true, "https")).unwrap_err();
        assert_eq!(err.key, "cluster.peer_tls");
        assert!(
            err.message.contains("no TLS profile named \"nope\""),
            "{err}"
        );
        let err = load(&config("peer_tls = \"peer\"", true, "http")).unwrap_err();
        assert_eq!(err.key, "node.peer_url");
        assert!(err.message.contains("must start with https://"), "{err}");
        // Without peer TLS, another member's https:// URL is refused too.
        let err = load(&config("", true, "http")).unwrap_err();
        assert_eq!(err.key, "cluster.initial_cluster");
        assert!(err.message.contains("need a TLS profile"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let file = write_config("[node]\nnmae = \"x\"\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "node.nmae");
        assert!(err.message.contains("unknown field: found `nmae`"), "{err}");
        assert!(
            err.to_string().contains(&file.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn bad_address_and_bad_type_are_named() {
        let file = write_config("[adapters.etcd]\nlisten = \"localhost\"\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "adapters.etcd.listen");
        assert!(err.message.contains("invalid socket address"), "{err}");

        let file = write_config("[limits]\nmax_txn_ops = \"many\"\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "limits.max_txn_ops");
    }

    #[test]
    fn etcd_v2_shares_the_client_port_unless_given_one() {
        let file = write_config("[adapters.etcd_v2]\nlisten = \"127.0.0.1:4001\"\n");
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        assert_eq!(
            settings.adapters.etcd_v2.listen.map(|a| a.port()),
            Some(4001)
        );
        assert!(Settings::default().adapters.etcd_v2.listen.is_none());
        let file = write_config("[adapters.etcd]\nenabled = false\nlisten = \"127.0.0.1:2379\"\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "adapters.etcd_v2.listen");
        assert!(err.message.contains("adapters.etcd is disabled"), "{err}");
        // TLS of its own needs a port of its own.
        let file = write_config("[adapters.etcd_v2]\ntls = \"server\"\n");
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "adapters.etcd_v2.tls");
        assert!(
            err.message.contains("needs adapters.etcd_v2.listen"),
            "{err}"
        );
    }

    #[test]
    fn tls_min_version_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "").unwrap();
        let text = format!("[tls.server]\ncert = {pem:?}\nkey = {pem:?}\nmin_version = \"1.1\"\n");
        let file = write_config(&text);
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "tls.server.min_version");
        assert!(err.message.contains("\"1.2\" or \"1.3\""), "{err}");
    }

    #[test]
    fn zookeeper_secure_port_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "").unwrap();
        let profile = format!("[tls.zk]\ncert = {pem:?}\nkey = {pem:?}\n");
        let cases = [
            (
                "secure_listen = \"127.0.0.1:2281\"\n",
                "adapters.zookeeper.tls",
                "must name a TLS profile",
            ),
            (
                "tls = \"zk\"\n",
                "adapters.zookeeper.secure_listen",
                "must be set when",
            ),
            (
                "secure_listen = \"127.0.0.1:2281\"\ntls = \"nope\"\n",
                "adapters.zookeeper.tls",
                "no TLS profile named \"nope\"",
            ),
            (
                "secure_listen = \"127.0.0.1:2181\"\ntls = \"zk\"\n",
                "adapters.zookeeper.secure_listen",
                "is also adapters.zookeeper.listen",
            ),
            (
                "plaintext = false\n",
                "adapters.zookeeper.plaintext",
                "needs adapters.zookeeper.secure_listen",
            ),
        ];
        for (section, key, message) in cases {
            let file = write_config(&format!("{profile}[adapters.zookeeper]\n{section}"));
            let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
            assert_eq!(err.key, key, "{section}");
            assert!(err.message.contains(message), "{section}: {err}");
        }
        let file = write_config(&format!(
            "{profile}[adapters.zookeeper]\nplaintext = false\nsecure_listen = \"127.0.0.1:2181\"\ntls = \"zk\"\n"
        ));
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        assert_eq!(
            settings.adapters.zookeeper.secure_listen.map(|a| a.port()),
            Some(2181)
        );
    }

    #[test]
    fn metrics_listener_is_off_by_default_and_its_keys_are_checked() {
        let metrics = Settings::default().metrics;
        assert!(!metrics.enabled);
        assert_eq!(metrics.listen.to_string(), "127.0.0.1:2381");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "").unwrap();
        let file = write_config(&format!(
            "[tls.m]\ncert = {pem:?}\nkey = {pem:?}\n\
             [metrics]\nenabled = true\nlisten = \"127.0.0.1:9100\"\ntls = \"m\"\n"
        ));
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        assert!(settings.metrics.enabled);
        assert_eq!(settings.metrics.listen.port(), 9100);
        assert_eq!(settings.metrics.tls.as_deref(), Some("m"));
        let cases = [
            (
                "[metrics]\ntls = \"nope\"\n",
                "metrics.tls",
                "no TLS profile named \"nope\" ([tls.nope] is missing)",
            ),
            (
                "[metrics]\nport = 1\n",
                "metrics.port",
                "unknown field: found `port`",
            ),
            (
                "[metrics]\nlisten = \"localhost\"\n",
                "metrics.listen",
                "invalid socket address syntax",
            ),
        ];
        for (text, key, message) in cases {
            let file = write_config(text);
            let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn missing_tls_file_is_named() {
        let file = write_config(
            "[tls.server]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
        );
        let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
        assert_eq!(err.key, "tls.server.cert");
        assert!(err.message.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn precedence_is_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[node]\nname = \"from-file\"\ndata_dir = \"file-dir\"\n[limits]\nmax_txn_ops = 7\n")?;
            jail.set_env("CONCORD_NODE__NAME", "from-env");
            jail.set_env("CONCORD_LIMITS__MAX_TXN_OPS", "9");
            let args = ServeArgs {
                config: Some("c.toml".into()),
                ..Default::default()
            };
            let settings = Settings::load(&args).map_err(|e| e.to_string())?;
            assert_eq!(settings.node.name, "from-env");
            assert_eq!(settings.node.data_dir, PathBuf::from("file-dir"));
            assert_eq!(settings.limits.max_txn_ops, 9);
            let args = ServeArgs {
                config: Some("c.toml".into()),
                name: Some("from-flag".into()),
                etcd_listen: Some("127.0.0.1:1234".parse().map_err(|_| "addr")?),
                ..Default::default()
            };
            let settings = Settings::load(&args).map_err(|e| e.to_string())?;
            assert_eq!(settings.node.name, "from-flag");
            assert_eq!(settings.adapters.etcd.listen.port(), 1234);
            Ok(())
        });
    }

    #[test]
    fn plugin_adapters_take_their_host_keys_and_pass_on_the_rest() {
        let file = write_config(
            "[[plugins]]\nname = \"consul\"\npath = \"/opt/libconsul.so\"\n\n\
             [adapters.consul]\nlisten = \"127.0.0.1:8500\"\nkey_prefix = \"/kv/\"\nlimit = 3\n",
        );
        let settings = Settings::load_with_env(&args_for(&file), no_env()).unwrap();
        let adapters = settings.plugin_adapters().unwrap();
        assert_eq!(adapters.len(), 1);
        let consul = &adapters[0];
        assert_eq!(consul.name, "consul");
        assert_eq!(consul.path, std::path::PathBuf::from("/opt/libconsul.so"));
        assert!(consul.enabled);
        assert_eq!(consul.listen.to_string(), "127.0.0.1:8500");
        assert_eq!(consul.tls, None);
        assert_eq!(consul.settings_json, r#"{"key_prefix":"/kv/","limit":3}"#);
    }

    #[test]
    fn plugin_sections_are_checked() {
        let cases = [
            (
                "[adapters.nope]\nlisten = \"127.0.0.1:1\"\n",
                "adapters.nope",
                "no such adapter (built in: etcd, etcd_v2, zookeeper; a loaded one needs a [[plugins]] entry with name = \"nope\")",
            ),
            (
                "[[plugins]]\nname = \"x\"\npath = \"/x.so\"\n",
                "adapters.x",
                "missing: a plugin's adapter needs at least `listen`",
            ),
            (
                "[[plugins]]\nname = \"etcd\"\npath = \"/x.so\"\n",
                "plugins[0].name",
                "\"etcd\" is a built-in adapter",
            ),
            (
                "[[plugins]]\nname = \"x\"\npath = \"/x.so\"\n[adapters.x]\nlisten = \"nowhere\"\n",
                "adapters.x.listen",
                "invalid socket address syntax",
            ),
            (
                "[[plugins]]\nname = \"x\"\npath = \"/x.so\"\n[adapters.x]\nlisten = \"127.0.0.1:1\"\ntls = \"missing\"\n",
                "adapters.x.tls",
                "no TLS profile named \"missing\" ([tls.missing] is missing)",
            ),
            (
                "[[plugins]]\nname = \"x\"\npath = \"/x.so\"\nsize = 1\n",
                "plugins.0.size",
                "unknown field: found `size`",
            ),
        ];
        for (text, key, message) in cases {
            let file = write_config(text);
            let err = Settings::load_with_env(&args_for(&file), no_env()).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
    }
}
