//! The C ABI between the Concord host and a dialect plugin loaded from a shared library,
//! and a small SDK ([`sdk`]) that turns a Rust [`sdk::SansIoPlugin`] into that ABI.
//!
//! A plugin is a sans-IO protocol state machine. The host owns sockets, TLS, timers and
//! the runtime; it hands the plugin [`pb::HostEvent`]s (a connection opened, bytes
//! received, a kernel reply, a timer) and carries out the [`pb::Actions`] it returns
//! (write bytes, close, call the kernel, set a timer). Only plain bytes and integer
//! handles cross the boundary, as protobuf messages; each side frees what it allocated.
//!
//! Versioning: both tables start with `abi_major`, `abi_minor` and `size`. A host loads
//! only plugins of its own major version; minor versions append fields to the end of a
//! table (and to the protobuf messages), so a reader checks `size` before touching a
//! field added after the first minor.

// The ABI is raw pointers and `extern "C"` functions by nature; every unsafe block says
// which side guarantees what.
#![allow(unsafe_code)]

use std::ffi::c_void;

pub mod sdk;

/// Generated protobuf messages: the etcd v3 API's and the plugin envelope.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
pub mod pb {
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    pub mod concord {
        pub mod plugin {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/concord.plugin.v1.rs"));
            }
        }
    }
    pub use concord::plugin::v1::*;
}

/// The ABI major version this crate speaks. A different major is refused at load.
pub const ABI_MAJOR: u32 = 1;
/// The ABI minor version this crate speaks (fields appended since major 1).
pub const ABI_MINOR: u32 = 0;

/// The symbol every plugin library exports, of type [`EntryFn`].
pub const ENTRY_SYMBOL: &str = "concord_plugin_entry";

/// `concord_plugin_entry(host) -> plugin table`: called once per loaded library. The
/// returned table is static in the library and lives as long as it stays loaded (the
/// host never unloads a library). Null means the plugin refuses to load.
pub type EntryFn = unsafe extern "C" fn(host: *const HostTable) -> *const PluginTable;

/// Log levels of [`HostTable::log`].
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
}

/// What `PluginTable::handle` and `PluginTable::create` return.
pub mod status {
    /// Done; the output buffer holds the result.
    pub const OK: i32 = 0;
    /// Refused; the output buffer holds a UTF-8 message.
    pub const ERROR: i32 = 1;
    /// The plugin panicked; the instance must not be called again (except `destroy`).
    pub const PANICKED: i32 = 2;
}

/// The host's functions, handed to the entry point. Static in the host.
#[repr(C)]
#[derive(Debug)]
pub struct HostTable {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<HostTable>()` as the host compiled it.
    pub size: u32,
    /// Writes one log line through the host's logger (`level::*`, UTF-8 bytes borrowed
    /// for the call only).
    pub log: extern "C" fn(level: u32, message: *const u8, len: usize),
}

/// Bytes allocated by the plugin and handed to the host, which gives them back with
/// `PluginTable::free_buffer` once read.
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub capacity: usize,
}

impl PluginBuffer {
    pub const EMPTY: PluginBuffer = PluginBuffer {
        ptr: std::ptr::null_mut(),
        len: 0,
        capacity: 0,
    };

    /// Hands `bytes` over; they come back through [`PluginBuffer::into_vec`].
    pub fn from_vec(bytes: Vec<u8>) -> PluginBuffer {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        PluginBuffer {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    /// Takes back a buffer made by [`PluginBuffer::from_vec`] in this same library.
    ///
    /// # Safety
    /// `self` must come from `from_vec` of the same allocator and not be used again.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller guarantees the parts come from a Vec of this allocator.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) }
    }

    /// The bytes, borrowed.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes (or be null), valid while borrowed.
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The plugin's functions. Static in the plugin library.
///
/// Calls on one instance never overlap (the host makes them from one thread at a time);
/// each function catches its own panics.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<PluginTable>()` as the plugin compiled it.
    pub size: u32,
    /// The dialect's name (UTF-8, static).
    pub name: *const u8,
    pub name_len: usize,
    /// Makes an instance from its config section (JSON bytes, borrowed). Returns null
    /// and a UTF-8 message in `out` on failure.
    pub create: extern "C" fn(config: *const u8, len: usize, out: *mut PluginBuffer) -> *mut c_void,
    /// Hands one encoded [`pb::HostEvent`] (borrowed) to the instance; on `status::OK`
    /// `out` holds encoded [`pb::Actions`].
    pub handle: extern "C" fn(
        instance: *mut c_void,
        event: *const u8,
        len: usize,
        out: *mut PluginBuffer,
    ) -> i32,
    /// Ends an instance.
    pub destroy: extern "C" fn(instance: *mut c_void),
    /// Frees a buffer this plugin handed out.
    pub free_buffer: extern "C" fn(buffer: PluginBuffer),
}

// SAFETY: the table is immutable static data (function pointers and a pointer to a static
// string), so sharing it between threads is sound.
unsafe impl Sync for PluginTable {}
// SAFETY: as above.
unsafe impl Sync for HostTable {}
