//! Command-line flags. Flags override the file and the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};

#[derive(Debug, Parser)]
#[command(
    name = "concord",
    version,
    about = "One consistent key-value service that speaks etcd v3, etcd v2 and ZooKeeper"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Subcommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Run a Concord node.
    Serve(ServeArgs),
    /// Create a new member's data dir from a snapshot file (`etcdctl snapshot save`).
    Restore(RestoreArgs),
    /// Write a CA, a server and a client certificate (PEM) for local TLS testing.
    Certs(CertsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Where to write ca.pem, server.pem, server-key.pem, client.pem, client-key.pem
    /// (created if missing; existing files are not overwritten).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Names and addresses the server certificate is valid for (its SANs).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The snapshot file to restore.
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    /// Config file (TOML) naming the data dir, as for `serve`.
    #[arg(long, value_name = "FILE", env = "CONCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The new data dir; it must not exist yet or be empty (`node.data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The member name the restored node will be started with (`node.name`).
    #[arg(long)]
    pub name: Option<String>,
}

impl RestoreArgs {
    /// The same settings sources as `serve`, for finding the data dir.
    pub fn as_serve_args(&self) -> ServeArgs {
        ServeArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            name: self.name.clone(),
            ..ServeArgs::default()
        }
    }
}

#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without it, built-in defaults apply.
    #[arg(long, value_name = "FILE", env = "CONCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where this node keeps its data (`node.data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the etcd client port (`adapters.etcd.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub etcd_listen: Option<SocketAddr>,
    /// Address of the ZooKeeper client port (`adapters.zookeeper.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub zk_listen: Option<SocketAddr>,
    /// This member's name (`node.name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}
