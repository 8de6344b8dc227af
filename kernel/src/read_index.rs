//! Read-index rounds shared by concurrent linearizable reads. A read queues a waiter; a
//! round takes every waiter queued when it begins (each read began before the round
//! did, so the index the round gets covers every write acknowledged before the read) and
//! answers them all with one index: one quorum confirmation on the leader, one peer
//! request from a follower, for many reads.
//!
//! A round normally takes about a millisecond, and reads arriving meanwhile wait for it
//! to end and then share the next one. A round may also hang (sent to a leader that was
//! just cut off, it waits for the peer timeout): reads queued behind it wait at most
//! [`ROUND_PATIENCE`], then start their own round, which goes to whichever leader is
//! known by then. Every round is bounded by the forward timeout.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::{FORWARD_TIMEOUT, PeerRequest};
use crate::error::{KernelError, KernelResult};
use crate::kernel::{Inner, Kernel};

/// How long reads queued behind a round in flight wait for it before starting one of
/// their own.
const ROUND_PATIENCE: Duration = Duration::from_millis(50);

/// Where a read waiting for a read index gets it.
pub(crate) type ReadIndexWaiter = oneshot::Sender<KernelResult<u64>>;

impl Kernel {
    /// The index a linearizable read must see applied, from a round shared with the
    /// other reads queued at the same time.
    pub(crate) async fn read_index(&self) -> KernelResult<u64> {
        let (waiter, index) = oneshot::channel();
        self.inner
            .read_index_waiters
            .send(waiter)
            .map_err(|_| KernelError::Shutdown)?;
        index.await.map_err(|_| KernelError::Shutdown)?
    }

    /// One round: the quorum confirmation here when this member leads, else a request
    /// to the leader.
    async fn read_index_round(&self) -> KernelResult<u64> {
        if self.leader_elsewhere().is_none() {
            match self.local_read_index().await {
                Err(KernelError::LeaderChanged) => {}
                done => return done,
            }
        }
        self.ask_leader::<KernelResult<u64>>(PeerRequest::ReadIndex)
            .await?
    }
}

/// Runs rounds for the queued waiters until the kernel is gone.
pub(crate) async fn run_read_index(
    inner: Weak<Inner>,
    mut waiters: mpsc::UnboundedReceiver<ReadIndexWaiter>,
) {
    let mut in_flight: Option<oneshot::Receiver<()>> = None;
    while let Some(first) = waiters.recv().await {
        if let Some(round) = in_flight.take() {
            // Reads arriving meanwhile join this batch.
            let _ = tokio::time::timeout(ROUND_PATIENCE, round).await;
        }
        let mut batch = vec![first];
        while let Ok(more) = waiters.try_recv() {
            batch.push(more);
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let kernel = Kernel { inner };
        let (done, round) = oneshot::channel();
        in_flight = Some(round);
        tokio::spawn(async move {
            let index = tokio::time::timeout(FORWARD_TIMEOUT, kernel.read_index_round())
                .await
                .unwrap_or(Err(KernelError::Timeout));
            for waiter in batch {
                let _ = waiter.send(index.clone());
            }
            drop(done);
        });
    }
}
