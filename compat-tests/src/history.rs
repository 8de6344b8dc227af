//! The history of a concurrent key-value test: what every client asked for, when, and
//! what it got back, for [`linearizability`](crate::linearizability) to check.
//!
//! A [`History`] is a thread-safe recorder, cheap to clone (one `Arc<Mutex<..>>`), shared
//! by every client task. A client wraps each request in it:
//!
//! ```
//! use concord_compat_tests::history::{Call, History, Outcome};
//!
//! let history = History::new();
//! let op = history.invoke(1, "k", Call::put("v"));
//! // ... send the put and wait for the answer ...
//! history.complete(op, Outcome::Ok);
//! assert_eq!(history.operations().len(), 1);
//! ```
//!
//! Times are a monotonic clock ([`Instant`]) read as the time since the history was
//! created, inside the recorder's lock: an operation is invoked before `invoke` returns and
//! completed before `complete` is called, so each recorded interval contains the real one.
//!
//! The [`Outcome`] says what the client knows: [`Outcome::Ok`] and [`Outcome::Value`] are
//! definite answers, [`Outcome::Failed`] means the request was definitely not applied (an
//! error the server returns before proposing it), and [`Outcome::Unknown`] means it may or
//! may not take effect, at any time after its invocation (a timeout, a lost connection).
//! An operation that is never completed (its [`PendingOp`] dropped) is `Unknown`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Who issued an operation: any number unique per client (task, connection).
pub type ClientId = u64;

/// What a client asked for, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// Set the key to this value.
    Put(Vec<u8>),
    /// Read the key.
    Get,
    /// Remove the key (absent afterwards, whether or not it was there).
    Delete,
}

impl Call {
    /// A [`Call::Put`] of `value`.
    pub fn put(value: impl Into<Vec<u8>>) -> Self {
        Self::Put(value.into())
    }
}

/// What a client got back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A put or delete was applied.
    Ok,
    /// A get returned this value (`None`: the key was absent).
    Value(Option<Vec<u8>>),
    /// The request was definitely not applied; the checker drops the operation.
    Failed,
    /// The request may or may not have taken effect, at any time after its invocation
    /// (timeout, connection lost): the checker treats it as never returning.
    Unknown,
}

impl Outcome {
    /// A get that found `value`.
    pub fn found(value: impl Into<Vec<u8>>) -> Self {
        Self::Value(Some(value.into()))
    }

    /// A get that found the key absent.
    pub fn absent() -> Self {
        Self::Value(None)
    }
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its position in the history (the order of the `invoke` calls).
    pub id: usize,
    pub client: ClientId,
    pub key: Vec<u8>,
    pub call: Call,
    /// When it was invoked, since the history's start.
    pub invoked: Duration,
    /// When `complete` was called, since the history's start; `None` if it never was.
    /// For an [`Outcome::Unknown`] this is only when the client gave up: the checker
    /// ignores it.
    pub completed: Option<Duration>,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    /// `#7 client 2 put "k"="v" [1.5ms, 2ms] ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} client {} ", self.id, self.client)?;
        match &self.call {
            Call::Put(value) => write!(f, "put {}={}", bytes(&self.key), bytes(value))?,
            Call::Get => write!(f, "get {}", bytes(&self.key))?,
            Call::Delete => write!(f, "delete {}", bytes(&self.key))?,
        }
        write!(f, " [{:?}, ", self.invoked)?;
        match (&self.outcome, self.completed) {
            (Outcome::Unknown, Some(gave_up)) => write!(f, "never (gave up at {gave_up:?})]")?,
            (_, Some(completed)) => write!(f, "{completed:?}]")?,
            (_, None) => write!(f, "never]")?,
        }
        match &self.outcome {
            Outcome::Ok => write!(f, " ok"),
            Outcome::Value(Some(value)) => write!(f, " -> {}", bytes(value)),
            Outcome::Value(None) => write!(f, " -> absent"),
            Outcome::Failed => write!(f, " failed"),
            Outcome::Unknown => write!(f, " unknown"),
        }
    }
}

/// Bytes as a quoted string if they are printable UTF-8, else as hex.
pub(crate) fn bytes(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => {
            let hex: String = raw.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// An operation that was invoked and not yet completed; give it back to
/// [`History::complete`]. Dropping it instead leaves the operation [`Outcome::Unknown`].
#[derive(Debug)]
#[must_use = "complete the operation with History::complete (dropping it records Unknown)"]
pub struct PendingOp {
    id: usize,
    /// The history that issued it, so that it cannot complete another history's operation.
    recorded: Arc<Mutex<Recorded>>,
}

impl PendingOp {
    /// The [`Operation::id`] it will have.
    pub fn id(&self) -> usize {
        self.id
    }
}

/// The thread-safe recorder; clones share one history.
#[derive(Debug, Clone)]
pub struct History {
    recorded: Arc<Mutex<Recorded>>,
}

#[derive(Debug)]
struct Recorded {
    start: Instant,
    operations: Vec<Operation>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        let recorded = Recorded {
            start: Instant::now(),
            operations: Vec::new(),
        };
        Self {
            recorded: Arc::new(Mutex::new(recorded)),
        }
    }

    /// Records that `client` is about to send `call` on `key`; call it just before sending.
    pub fn invoke(&self, client: ClientId, key: impl Into<Vec<u8>>, call: Call) -> PendingOp {
        let mut recorded = lock(&self.recorded);
        let id = recorded.operations.len();
        let invoked = recorded.start.elapsed();
        recorded.operations.push(Operation {
            id,
            client,
            key: key.into(),
            call,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
        });
        PendingOp {
            id,
            recorded: Arc::clone(&self.recorded),
        }
    }

    /// Records what `op` got back; call it just after the answer (or the give-up) arrives.
    /// The operation is recorded in the history that issued it, which is normally `self`.
    pub fn complete(&self, op: PendingOp, outcome: Outcome) {
        let mut recorded = lock(&op.recorded);
        let completed = recorded.start.elapsed();
        if let Some(operation) = recorded.operations.get_mut(op.id) {
            operation.completed = Some(completed);
            operation.outcome = outcome;
        }
    }

    /// Every operation so far, in invocation order (`operations()[i].id == i`); those not
    /// completed yet are [`Outcome::Unknown`] with no completion time.
    pub fn operations(&self) -> Vec<Operation> {
        lock(&self.recorded).operations.clone()
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        lock(&self.recorded).operations.len()
    }

    /// Whether no operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The recorder's lock; a client that panicked while holding it left the history whole
/// (each change is one assignment), so a poisoned lock is still used.
fn lock(recorded: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    recorded.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_outcomes_and_ordered_times() {
        let history = History::new();
        let put = history.invoke(1, "k", Call::put("v"));
        let get = history.invoke(2, "k", Call::Get);
        history.complete(put, Outcome::Ok);
        history.complete(get, Outcome::found("v"));
        let ops = history.operations();
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].id, ops[0].client), (0, 1));
        assert_eq!(ops[0].key, b"k");
        assert_eq!(ops[0].call, Call::Put(b"v".to_vec()));
        assert_eq!(ops[0].outcome, Outcome::Ok);
        assert_eq!(ops[1].call, Call::Get);
        assert_eq!(ops[1].outcome, Outcome::Value(Some(b"v".to_vec())));
        let put_done = ops[0].completed.unwrap();
        let get_done = ops[1].completed.unwrap();
        assert!(ops[0].invoked <= ops[1].invoked);
        assert!(ops[1].invoked <= put_done && put_done <= get_done);
    }

    #[test]
    fn an_operation_never_completed_is_unknown() {
        let history = History::new();
        let op = history.invoke(1, "k", Call::Delete);
        drop(op);
        let ops = history.operations();
        assert_eq!(ops[0].outcome, Outcome::Unknown);
        assert_eq!(ops[0].completed, None);
    }

    #[test]
    fn clones_share_one_history_across_threads() {
        let history = History::new();
        let threads: Vec<_> = (0..4)
            .map(|client| {
                let history = history.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let op = history.invoke(client, format!("k{i}"), Call::Get);
                        history.complete(op, Outcome::absent());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let ops = history.operations();
        assert_eq!(ops.len(), 400);
        assert_eq!(history.len(), 400);
        for (i, op) in ops.iter().enumerate() {
            assert_eq!(op.id, i);
            assert!(op.invoked <= op.completed.unwrap());
            assert_eq!(op.outcome, Outcome::Value(None));
        }
        assert!(
            ops.windows(2)
                .all(|pair| pair[0].invoked <= pair[1].invoked)
        );
    }

    #[test]
    fn a_pending_op_completes_in_the_history_that_issued_it() {
        let first = History::new();
        let second = History::new();
        let _other = second.invoke(9, "x", Call::Get);
        let op = first.invoke(1, "k", Call::put("v"));
        second.complete(op, Outcome::Ok);
        assert_eq!(first.operations()[0].outcome, Outcome::Ok);
        assert_eq!(second.operations()[0].outcome, Outcome::Unknown);
    }

    #[test]
    fn operations_display_calls_times_and_outcomes() {
        let op = Operation {
            id: 7,
            client: 2,
            key: b"k".to_vec(),
            call: Call::put("v"),
            invoked: Duration::from_micros(1500),
            completed: Some(Duration::from_millis(2)),
            outcome: Outcome::Ok,
        };
        assert_eq!(op.to_string(), r#"#7 client 2 put "k"="v" [1.5ms, 2ms] ok"#);
        let get = Operation {
            call: Call::Get,
            outcome: Outcome::Value(Some(vec![0, 255])),
            ..op.clone()
        };
        assert_eq!(
            get.to_string(),
            r#"#7 client 2 get "k" [1.5ms, 2ms] -> 0x00ff"#
        );
        let lost = Operation {
            call: Call::Delete,
            completed: None,
            outcome: Outcome::Unknown,
            ..op
        };
        assert_eq!(
            lost.to_string(),
            r#"#7 client 2 delete "k" [1.5ms, never] unknown"#
        );
    }
}
