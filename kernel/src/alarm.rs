//! Alarms: conditions a member raises (storage quota exceeded, data corrupt) that change
//! what the cluster accepts. They are replicated as commands and stored in the `meta`
//! column family; [`Alarms`] is the in-memory copy the request path checks.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::types::{Alarm, AlarmKind};

pub(crate) const META_ALARMS: &[u8] = b"alarms";

#[derive(Debug, Default)]
pub(crate) struct Alarms {
    active: Mutex<BTreeSet<Alarm>>,
}

impl Alarms {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeSet<Alarm>) -> T) -> T {
        let mut guard = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn replace(&self, alarms: impl IntoIterator<Item = Alarm>) {
        self.with(|active| *active = alarms.into_iter().collect());
    }

    pub(crate) fn list(&self) -> Vec<Alarm> {
        self.with(|active| active.iter().copied().collect())
    }

    /// Whether writes that add data must be refused.
    pub(crate) fn no_space(&self) -> bool {
        self.with(|active| active.iter().any(|a| a.kind == AlarmKind::NoSpace))
    }
}
