//! A plugin for the host's tests that declares the next ABI major version, which the
//! host must refuse at load with a message naming both versions.

#![allow(unsafe_code)]

use concord_plugin_abi::pb::{action::Action, host_event::Event};
use concord_plugin_abi::sdk::{self, SansIoPlugin};
use concord_plugin_abi::{ABI_MAJOR, HostTable, PluginTable};

#[derive(Debug)]
pub struct Future;

impl SansIoPlugin for Future {
    fn create(_config_json: &str) -> Result<Self, String> {
        Ok(Future)
    }

    fn handle(&mut self, _event: Event) -> Vec<Action> {
        Vec::new()
    }
}

static TABLE: PluginTable = PluginTable {
    abi_major: ABI_MAJOR + 1,
    abi_minor: 0,
    size: size_of::<PluginTable>() as u32,
    name: "future".as_ptr(),
    name_len: "future".len(),
    create: sdk::create::<Future>,
    handle: sdk::handle::<Future>,
    destroy: sdk::destroy::<Future>,
    free_buffer: sdk::free_buffer,
};

/// The entry point, answering with a table of the next major version whatever the host.
///
/// # Safety
/// Never dereferences `host`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn concord_plugin_entry(_host: *const HostTable) -> *const PluginTable {
    &TABLE
}
