//! What the kernel's integration tests share: a one-member group in a directory, with
//! short Raft timings.

use std::time::Duration;

use concord_kernel::{Kernel, KernelConfig};

/// Opens (bootstrapping or recovering) a kernel whose data lives in `dir`.
pub async fn open(dir: &std::path::Path) -> Kernel {
    let config = KernelConfig {
        data_dir: dir.to_path_buf(),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(150),
        ..Default::default()
    };
    match Kernel::open(config, Duration::from_secs(10)).await {
        Ok(kernel) => kernel,
        Err(e) => panic!("cannot open the kernel in {}: {e}", dir.display()),
    }
}
