//! Loading plugin libraries and calling them safely: the entry symbol, the ABI version
//! check, the registry that loads each library once and never unloads it, and
//! [`PluginInstance`], the one place that calls through the plugin's function table.

// Calling into a loaded library is unsafe by nature; each block says what it relies on.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use concord_plugin_abi::{
    ABI_MAJOR, ABI_MINOR, ENTRY_SYMBOL, EntryFn, HostTable, PluginBuffer, PluginTable, level,
    status,
};
use libloading::Library;
use prost::Message;

use crate::envelope;

/// Why a plugin could not be loaded or has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {name:?}: cannot load {path}: {reason}")]
    Load {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name:?}: {path} has no entry symbol `{ENTRY_SYMBOL}`: {reason}")]
    NoEntry {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {name:?}: {path} speaks plugin ABI {major}.{minor}; this host speaks {ABI_MAJOR}.{ABI_MINOR} (the major versions must match)"
    )]
    AbiMismatch {
        name: String,
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    #[error("plugin {name:?}: {path} refused to load (its entry point returned no table)")]
    Refused { name: String, path: PathBuf },
    #[error("plugin {name:?}: {path}: malformed function table ({reason})")]
    BadTable {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name:?}: the configuration was refused: {reason}")]
    Config { name: String, reason: String },
    #[error("plugin {name:?} panicked: {reason}")]
    Panicked { name: String, reason: String },
    #[error("plugin {name:?} failed: {reason}")]
    Failed { name: String, reason: String },
}

extern "C" fn host_log(level: u32, message: *const u8, len: usize) {
    let text = if message.is_null() {
        String::new()
    } else {
        // SAFETY: the plugin lends `len` bytes at `message` for this call (ABI contract).
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(message, len) }).into_owned()
    };
    match level {
        level::ERROR => tracing::error!(target: "concord::plugin", "{text}"),
        level::WARN => tracing::warn!(target: "concord::plugin", "{text}"),
        level::INFO => tracing::info!(target: "concord::plugin", "{text}"),
        _ => tracing::debug!(target: "concord::plugin", "{text}"),
    }
}

static HOST_TABLE: HostTable = HostTable {
    abi_major: ABI_MAJOR,
    abi_minor: ABI_MINOR,
    size: size_of::<HostTable>() as u32,
    log: host_log,
};

/// A loaded library's table; the library itself stays loaded for the process's life.
#[derive(Debug, Clone, Copy)]
pub struct LoadedPlugin {
    table: &'static PluginTable,
}

/// Libraries by canonical path: each is loaded once and never unloaded, since threads,
/// thread-locals and the table of a Rust library may outlive any one use of it.
fn registry() -> &'static Mutex<HashMap<PathBuf, LoadedPlugin>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, LoadedPlugin>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Loads (or finds already loaded) the plugin library at `path` for plugin `name`.
pub fn load(name: &str, path: &Path) -> Result<LoadedPlugin, PluginError> {
    let load_error = |reason: String| PluginError::Load {
        name: name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let canonical = path.canonicalize().map_err(|e| load_error(e.to_string()))?;
    let mut loaded = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(plugin) = loaded.get(&canonical) {
        return Ok(*plugin);
    }
    // SAFETY: loading runs the library's initialisers; naming a library in the config is
    // the operator's statement that it is a Concord plugin.
    let library = unsafe { Library::new(&canonical) }.map_err(|e| load_error(e.to_string()))?;
    // SAFETY: the symbol's type is the ABI's entry type (checked by name only, as with
    // any C ABI); the library is never unloaded, so the pointer stays valid.
    let entry: EntryFn = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
        .map(|symbol| *symbol)
        .map_err(|e| PluginError::NoEntry {
            name: name.to_string(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    // SAFETY: HOST_TABLE is static; the entry point must return null or its static table.
    let table = unsafe { entry(&HOST_TABLE).as_ref() }.ok_or_else(|| PluginError::Refused {
        name: name.to_string(),
        path: path.to_path_buf(),
    })?;
    check_table(name, path, table)?;
    // Never unloaded (see `registry`).
    std::mem::forget(library);
    let plugin = LoadedPlugin { table };
    loaded.insert(canonical, plugin);
    Ok(plugin)
}

fn check_table(name: &str, path: &Path, table: &PluginTable) -> Result<(), PluginError> {
    if table.abi_major != ABI_MAJOR {
        return Err(PluginError::AbiMismatch {
            name: name.to_string(),
            path: path.to_path_buf(),
            major: table.abi_major,
            minor: table.abi_minor,
        });
    }
    if (table.size as usize) < size_of::<PluginTable>() {
        return Err(PluginError::BadTable {
            name: name.to_string(),
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes, ABI {ABI_MAJOR}.0 needs {}",
                table.size,
                size_of::<PluginTable>()
            ),
        });
    }
    Ok(())
}

impl LoadedPlugin {
    /// The dialect name the library declares.
    pub fn dialect(&self) -> String {
        if self.table.name.is_null() {
            return String::new();
        }
        // SAFETY: the table's name is static UTF-8 of `name_len` bytes (ABI contract).
        let bytes = unsafe { std::slice::from_raw_parts(self.table.name, self.table.name_len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Makes an instance configured by `config_json`.
    pub fn instantiate(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<PluginInstance, PluginError> {
        let mut out = PluginBuffer::EMPTY;
        let instance = (self.table.create)(config_json.as_ptr(), config_json.len(), &mut out);
        let message = self.take(out);
        if instance.is_null() {
            return Err(PluginError::Config {
                name: name.to_string(),
                reason: String::from_utf8_lossy(&message).into_owned(),
            });
        }
        Ok(PluginInstance {
            name: name.to_string(),
            table: self.table,
            instance,
            alive: true,
        })
    }

    /// Copies a plugin-made buffer and gives it back to the plugin to free.
    fn take(&self, buffer: PluginBuffer) -> Vec<u8> {
        // SAFETY: the plugin filled `buffer` with `len` readable bytes (or left it empty).
        let bytes = unsafe { buffer.as_slice() }.to_vec();
        if !buffer.ptr.is_null() {
            (self.table.free_buffer)(buffer);
        }
        bytes
    }
}

/// One configured plugin instance. Calls never overlap: the instance is owned by one
/// driver thread. After a panic it is never called again.
#[derive(Debug)]
pub struct PluginInstance {
    name: String,
    table: &'static PluginTable,
    instance: *mut c_void,
    alive: bool,
}

// SAFETY: the ABI allows an instance to be called from any thread, one call at a time;
// `PluginInstance` is used by one owner (`&mut self` for every call).
unsafe impl Send for PluginInstance {}

impl PluginInstance {
    /// Hands one event to the plugin and returns the actions it asks for.
    pub fn handle(
        &mut self,
        event: envelope::host_event::Event,
    ) -> Result<Vec<envelope::action::Action>, PluginError> {
        if !self.alive {
            return Err(PluginError::Failed {
                name: self.name.clone(),
                reason: "stopped after an earlier panic".into(),
            });
        }
        let input = envelope::HostEvent { event: Some(event) }.encode_to_vec();
        let mut out = PluginBuffer::EMPTY;
        let code = (self.table.handle)(self.instance, input.as_ptr(), input.len(), &mut out);
        let bytes = LoadedPlugin { table: self.table }.take(out);
        let reason = || String::from_utf8_lossy(&bytes).into_owned();
        match code {
            status::OK => envelope::Actions::decode(bytes.as_slice())
                .map(|a| a.actions.into_iter().filter_map(|a| a.action).collect())
                .map_err(|e| PluginError::Failed {
                    name: self.name.clone(),
                    reason: format!("undecodable actions: {e}"),
                }),
            status::PANICKED => {
                self.alive = false;
                Err(PluginError::Panicked {
                    name: self.name.clone(),
                    reason: reason(),
                })
            }
            _ => Err(PluginError::Failed {
                name: self.name.clone(),
                reason: reason(),
            }),
        }
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        (self.table.destroy)(self.instance);
    }
}
