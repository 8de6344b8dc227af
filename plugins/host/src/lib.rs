//! The plugin host: loads dialect plugins from shared libraries (`[[plugins]]` in the
//! config) and runs each as an adapter through the same contract as the built-in ones.
//! The ABI itself is `concord-plugin-abi`; this crate is its host side: the library
//! registry and safe calls ([`library`]), the sockets, TLS, timers and driver thread
//! ([`adapter`]), and the kernel calls ([`kernel_calls`]).

mod adapter;
mod kernel_calls;
mod library;

/// The plugin envelope, with its etcd v3 messages as the etcd adapter's own types.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
mod envelope {
    include!(concat!(env!("OUT_DIR"), "/concord.plugin.v1.rs"));
}

pub use adapter::PluginAdapter;
pub use library::{LoadedPlugin, PluginError, load};
