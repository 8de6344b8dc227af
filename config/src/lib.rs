//! Concord's configuration: one TOML file, overridden by `CONCORD_` environment variables
//! (nested keys split on `__`), overridden by command-line flags. This crate owns figment
//! and clap and hands out validated plain structs; nothing else imports them.

mod cli;
mod cluster;
mod plugins;
mod settings;

pub use cli::{CertsArgs, Cli, RestoreArgs, ServeArgs, Subcommand};
pub use cluster::{ClusterSettings, InitialClusterState, InitialMember, peer_socket_addr};
pub use plugins::{BUILT_IN_ADAPTERS, PluginAdapterSettings, PluginSettings};
pub use settings::{
    AdapterSettings, Adapters, ConfigError, Limits, MetricsSettings, NodeSettings, RaftSettings,
    Settings, TlsProfile,
};
