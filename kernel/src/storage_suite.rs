//! openraft's own storage conformance suite, run against our log store and state machine.

use openraft::testing::{StoreBuilder, Suite};

use crate::consensus::{StorageError, TypeConfig};
use crate::log_store::{LogStore, WAL_DIR, open_log_db};
use crate::state_machine::{StateMachine, open_state_db};
use crate::watch::WatchHub;

/// Builds stores in temporary directories; `sync_in_append` chooses how appends sync.
struct TempStores {
    sync_in_append: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let log_db = open_log_db(&dir.path().join(crate::log_store::LOG_DB_DIR))
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let state_db = open_state_db(&dir.path().join(crate::state_machine::STATE_DB_DIR))
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let log = LogStore::new(log_db, &dir.path().join(WAL_DIR))
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        log.sync_in_append()
            .store(self.sync_in_append, std::sync::atomic::Ordering::Release);
        Ok((
            dir,
            log,
            StateMachine::new(
                state_db,
                WatchHub::new(),
                Default::default(),
                Default::default(),
                std::sync::Arc::new(crate::node_cache::NodeCache::new(1 << 20)),
            ),
        ))
    }
}

#[test]
fn openraft_storage_suite_syncing_in_append() {
    Suite::test_all(TempStores {
        sync_in_append: true,
    })
    .unwrap();
}

#[test]
fn openraft_storage_suite_syncing_on_the_flusher_thread() {
    Suite::test_all(TempStores {
        sync_in_append: false,
    })
    .unwrap();
}
