//! Loaded dialects in the config: `[[plugins]]` names a shared library and the adapter
//! it provides; `[adapters.<name>]` configures it like a built-in adapter. The host's own
//! keys there (`enabled`, `listen`, `tls`) are read here; every other key is the plugin's
//! and is handed to it as one JSON object.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::value::Value;
use serde::{Deserialize, Serialize};

/// The built-in adapters' section names, which a plugin may not take.
pub const BUILT_IN_ADAPTERS: [&str; 3] = ["etcd", "etcd_v2", "zookeeper"];

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// The adapter name: its section is `[adapters.<name>]`.
    pub name: String,
    /// The shared library (`.so`) to load.
    pub path: PathBuf,
}

/// A loaded dialect's adapter, ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginAdapterSettings {
    pub name: String,
    pub path: PathBuf,
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Name of a `[tls.<name>]` profile; absent means plaintext.
    pub tls: Option<String>,
    /// The plugin's own keys, as a JSON object.
    pub settings_json: String,
}

#[derive(Debug, Deserialize)]
struct HostKeys {
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    listen: SocketAddr,
    #[serde(default)]
    tls: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// What is wrong with a plugin's config, as (key, message).
pub(crate) type Fault = (String, String);

/// Pairs each `[[plugins]]` entry with its `[adapters.<name>]` section, and refuses
/// sections that name no adapter.
pub(crate) fn plugin_adapters(
    plugins: &[PluginSettings],
    sections: &BTreeMap<String, Value>,
    tls_profiles: &dyn Fn(&str) -> bool,
) -> Result<Vec<PluginAdapterSettings>, Fault> {
    for name in sections.keys() {
        if !plugins.iter().any(|p| &p.name == name) {
            return Err((
                format!("adapters.{name}"),
                format!(
                    "no such adapter (built in: {}; a loaded one needs a [[plugins]] entry with name = {name:?})",
                    BUILT_IN_ADAPTERS.join(", ")
                ),
            ));
        }
    }
    let mut adapters = Vec::new();
    for (index, plugin) in plugins.iter().enumerate() {
        let key = |field: &str| format!("plugins[{index}].{field}");
        let valid_name = !plugin.name.is_empty()
            && plugin
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err((
                key("name"),
                "must be non-empty letters, digits, '_' or '-'".into(),
            ));
        }
        if BUILT_IN_ADAPTERS.contains(&plugin.name.as_str()) {
            return Err((
                key("name"),
                format!("{:?} is a built-in adapter", plugin.name),
            ));
        }
        if plugins[..index].iter().any(|p| p.name == plugin.name) {
            return Err((key("name"), format!("{:?} is named twice", plugin.name)));
        }
        let section_key = format!("adapters.{}", plugin.name);
        let Some(section) = sections.get(&plugin.name) else {
            return Err((
                section_key,
                "missing: a plugin's adapter needs at least `listen`".into(),
            ));
        };
        let host: HostKeys = section.deserialize().map_err(|e| {
            let field = e.path.last().cloned().unwrap_or_default();
            let key = if field.is_empty() {
                section_key.clone()
            } else {
                format!("{section_key}.{field}")
            };
            (key, e.kind.to_string())
        })?;
        if let Some(profile) = &host.tls
            && !tls_profiles(profile)
        {
            return Err((
                format!("{section_key}.tls"),
                format!("no TLS profile named {profile:?} ([tls.{profile}] is missing)"),
            ));
        }
        let mut own = section.clone().into_dict().unwrap_or_default();
        for host_key in ["enabled", "listen", "tls"] {
            own.remove(host_key);
        }
        let settings_json = serde_json::to_string(&own).map_err(|e| {
            (
                section_key.clone(),
                format!("cannot be passed on as JSON: {e}"),
            )
        })?;
        adapters.push(PluginAdapterSettings {
            name: plugin.name.clone(),
            path: plugin.path.clone(),
            enabled: host.enabled,
            listen: host.listen,
            tls: host.tls,
            settings_json,
        });
    }
    Ok(adapters)
}
