//! Writing a plugin in Rust: implement [`SansIoPlugin`] and call [`export_plugin!`]. The
//! SDK provides the C entry point and table, decodes events, encodes actions, frees
//! buffers, and catches panics at the boundary (a panic answers `status::PANICKED`).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use prost::Message;

use crate::pb::{self, action, host_event};
use crate::{ABI_MAJOR, HostTable, PluginBuffer, PluginTable, level, status};

/// A dialect as a state machine: events in, actions out.
pub trait SansIoPlugin: Sized + Send + 'static {
    /// Builds an instance from the adapter's config section (a JSON object).
    fn create(config_json: &str) -> Result<Self, String>;
    /// Reacts to one event with the actions the host should carry out, in order.
    fn handle(&mut self, event: host_event::Event) -> Vec<action::Action>;
}

static HOST_LOG: OnceLock<extern "C" fn(u32, *const u8, usize)> = OnceLock::new();

/// Logs through the host (dropped before the host has called the entry point).
pub fn log(level: u32, message: &str) {
    if let Some(log) = HOST_LOG.get() {
        log(level, message.as_ptr(), message.len());
    }
}

pub fn log_error(message: &str) {
    log(level::ERROR, message);
}

pub fn log_info(message: &str) {
    log(level::INFO, message);
}

/// The entry point's work: remember the host's logger, refuse a host of another major
/// version (by returning null), hand out the table.
///
/// # Safety
/// `host` must be null or point at a valid [`HostTable`].
pub unsafe fn entry(host: *const HostTable, table: &'static PluginTable) -> *const PluginTable {
    // SAFETY: guaranteed by the caller.
    let Some(host) = (unsafe { host.as_ref() }) else {
        return std::ptr::null();
    };
    if host.abi_major != ABI_MAJOR {
        return std::ptr::null();
    }
    let _ = HOST_LOG.set(host.log);
    table
}

fn write_out(out: *mut PluginBuffer, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    // SAFETY: the host passes a valid, writable out-pointer (null checked above).
    unsafe { out.write(PluginBuffer::from_vec(bytes)) };
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".into())
}

/// `PluginTable::create` for `P`.
// The table needs a safe `extern "C" fn`; the pointers are the host's to keep valid.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn create<P: SansIoPlugin>(
    config: *const u8,
    len: usize,
    out: *mut PluginBuffer,
) -> *mut c_void {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let bytes = if config.is_null() {
            &[][..]
        } else {
            // SAFETY: the host lends `len` bytes at `config` for this call.
            unsafe { std::slice::from_raw_parts(config, len) }
        };
        let text = std::str::from_utf8(bytes).map_err(|e| format!("config is not UTF-8: {e}"))?;
        P::create(text)
    }));
    match outcome {
        Ok(Ok(plugin)) => Box::into_raw(Box::new(plugin)).cast(),
        Ok(Err(message)) => {
            write_out(out, message.into_bytes());
            std::ptr::null_mut()
        }
        Err(payload) => {
            write_out(
                out,
                format!("panicked in create: {}", panic_message(&*payload)).into_bytes(),
            );
            std::ptr::null_mut()
        }
    }
}

/// `PluginTable::handle` for `P`.
// As for `create`: a safe `extern "C" fn` for the table, pointers kept valid by the host.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn handle<P: SansIoPlugin>(
    instance: *mut c_void,
    event: *const u8,
    len: usize,
    out: *mut PluginBuffer,
) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` came from `create::<P>` and calls never overlap.
        let Some(plugin) = (unsafe { instance.cast::<P>().as_mut() }) else {
            return Err("null instance".to_string());
        };
        let bytes = if event.is_null() {
            &[][..]
        } else {
            // SAFETY: the host lends `len` bytes at `event` for this call.
            unsafe { std::slice::from_raw_parts(event, len) }
        };
        let event = pb::HostEvent::decode(bytes)
            .map_err(|e| format!("undecodable host event: {e}"))?
            .event
            .ok_or_else(|| "empty host event".to_string())?;
        let actions = plugin.handle(event);
        Ok(pb::Actions {
            actions: actions
                .into_iter()
                .map(|a| pb::Action { action: Some(a) })
                .collect(),
        }
        .encode_to_vec())
    }));
    match outcome {
        Ok(Ok(bytes)) => {
            write_out(out, bytes);
            status::OK
        }
        Ok(Err(message)) => {
            write_out(out, message.into_bytes());
            status::ERROR
        }
        Err(payload) => {
            write_out(out, panic_message(&*payload).into_bytes());
            status::PANICKED
        }
    }
}

/// `PluginTable::destroy` for `P`.
pub extern "C" fn destroy<P: SansIoPlugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` came from `create::<P>` and is not used after this call.
        drop(unsafe { Box::from_raw(instance.cast::<P>()) });
    }));
}

/// `PluginTable::free_buffer`.
pub extern "C" fn free_buffer(buffer: PluginBuffer) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host returns buffers this library made with `from_vec`, once each.
        drop(unsafe { buffer.into_vec() });
    }));
}

/// Exports `$plugin` (a [`SansIoPlugin`]) under the dialect name `$name` as this
/// library's entry point.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty, $name:expr) => {
        static CONCORD_PLUGIN_TABLE: $crate::PluginTable = $crate::PluginTable {
            abi_major: $crate::ABI_MAJOR,
            abi_minor: $crate::ABI_MINOR,
            size: ::std::mem::size_of::<$crate::PluginTable>() as u32,
            name: $name.as_ptr(),
            name_len: $name.len(),
            create: $crate::sdk::create::<$plugin>,
            handle: $crate::sdk::handle::<$plugin>,
            destroy: $crate::sdk::destroy::<$plugin>,
            free_buffer: $crate::sdk::free_buffer,
        };

        /// The plugin's entry point (see `concord_plugin_abi::ENTRY_SYMBOL`).
        ///
        /// # Safety
        /// `host` must be null or point at the host's valid function table.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn concord_plugin_entry(
            host: *const $crate::HostTable,
        ) -> *const $crate::PluginTable {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::sdk::entry(host, &CONCORD_PLUGIN_TABLE) }
        }
    };
}

/// Shorthands for building actions.
pub mod actions {
    use crate::pb::{self, action::Action, kernel_call};

    pub fn write(connection: u64, data: Vec<u8>) -> Action {
        Action::Write(pb::Write { connection, data })
    }

    pub fn close(connection: u64) -> Action {
        Action::Close(pb::Close { connection })
    }

    pub fn kernel(connection: u64, call: u64, request: kernel_call::Request) -> Action {
        Action::KernelCall(pb::KernelCall {
            connection,
            call,
            request: Some(request),
        })
    }

    pub fn set_timer(connection: u64, timer: u64, after_ms: u64) -> Action {
        Action::SetTimer(pb::SetTimer {
            connection,
            timer,
            after_ms,
        })
    }

    pub fn pause_reading(connection: u64) -> Action {
        Action::PauseReading(pb::PauseReading { connection })
    }

    pub fn resume_reading(connection: u64) -> Action {
        Action::ResumeReading(pb::ResumeReading { connection })
    }

    pub fn cancel_timer(connection: u64, timer: u64) -> Action {
        Action::CancelTimer(pb::CancelTimer { connection, timer })
    }
}
