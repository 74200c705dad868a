//! How a leader loop takes the reader's events: in batches from the channel,
//! and a run of them between two looks at the session, a stop and the tick.

use tokio::sync::mpsc;

/// Events taken from the reader's channel at once (see [`next_batched`]).
pub(super) const RECV_BATCH: usize = 256;
/// Events handed to the sink straight from the taken batch before the loop
/// looks at the session, a stop and the checkpoint tick again. Each look
/// builds and drops a waiter on two cancellation tokens and the timer (perf:
/// ~4% of a streaming bridge when done for every event); 64 events take
/// well under a millisecond, and the sink checks the lease deadline before
/// every message regardless.
pub(super) const EVENTS_PER_LOOK: u32 = 64;
/// The reader's events as a leader loop takes them: from the channel in
/// batches ([`next_batched`]), and up to [`EVENTS_PER_LOOK`] in a row
/// without the loop's look at the session, a stop and its tick.
pub(super) struct Feed<T> {
    rx: mpsc::Receiver<T>,
    batch: Vec<T>,
    since_look: u32,
}

impl<T> Feed<T> {
    pub(super) fn new(rx: mpsc::Receiver<T>) -> Self {
        Feed {
            rx,
            batch: Vec::with_capacity(RECV_BATCH),
            since_look: 0,
        }
    }

    /// An event taken from the channel before, if the loop may hand it on
    /// without looking around first; `None`: look, then await [`Self::next`].
    pub(super) fn ready(&mut self) -> Option<T> {
        if self.since_look < EVENTS_PER_LOOK && !self.batch.is_empty() {
            self.since_look += 1;
            self.batch.pop()
        } else {
            self.since_look = 0;
            None
        }
    }

    /// The next event, waiting for the reader. Cancel-safe.
    pub(super) async fn next(&mut self) -> Option<T> {
        next_batched(&mut self.rx, &mut self.batch).await
    }

    /// Nothing waits in the channel (taken events aside).
    pub(super) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// The next event from the reader, taken from the channel up to
/// [`RECV_BATCH`] at a time. The sink is usually the slower side, so the
/// channel is full and the reader waits for room: taking events one by one
/// woke the reader's thread for every event (perf: ~10% of a streaming
/// bridge's CPU in the kernel's task switching); a batch frees its room in
/// one go. Events are still handed out one at a time, so the loop checks the
/// lease, a stop and the checkpoint tick between any two of them as before.
/// Cancel-safe: `recv_many` is, and nothing is awaited after it.
async fn next_batched<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) -> Option<T> {
    if batch.is_empty() {
        if rx.recv_many(batch, RECV_BATCH).await == 0 {
            return None;
        }
        // Popped from the back: oldest last.
        batch.reverse();
    }
    batch.pop()
}

#[cfg(test)]
mod tests {
    use super::{next_batched, Feed, EVENTS_PER_LOOK, RECV_BATCH};
    use tokio::sync::mpsc;

    /// Taken events come out in order, at most EVENTS_PER_LOOK in a row
    /// without a look (ready() = None), and none is lost at a look.
    #[tokio::test]
    async fn the_feed_hands_on_taken_events_between_looks() {
        let (tx, rx) = mpsc::channel::<usize>(1000);
        for i in 0..300 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let mut feed = Feed::new(rx);
        let (mut got, mut run, mut looks) = (Vec::new(), 0u32, 0);
        loop {
            match feed.ready() {
                Some(i) => {
                    run += 1;
                    assert!(run <= EVENTS_PER_LOOK, "{run} events without a look");
                    got.push(i);
                }
                None => {
                    looks += 1;
                    run = 0;
                    match feed.next().await {
                        Some(i) => got.push(i),
                        None => break,
                    }
                }
            }
        }
        assert_eq!(got, (0..300).collect::<Vec<_>>());
        // 300 events: 256 taken at once, then 44; one look per 65 events.
        assert!((5..=8).contains(&looks), "{looks} looks");
    }

    /// Every event comes out once, in the order sent, across batch
    /// boundaries and while the sender keeps filling a full channel; a
    /// closed, drained channel ends with None.
    #[tokio::test]
    async fn batched_receive_keeps_order_and_ends_on_close() {
        let total = RECV_BATCH * 5 + 17;
        let (tx, mut rx) = mpsc::channel::<usize>(RECV_BATCH / 2);
        let sender = tokio::spawn(async move {
            for i in 0..total {
                tx.send(i).await.map_err(|_| i)?;
            }
            Ok::<(), usize>(())
        });
        let mut batch = Vec::new();
        let mut got = Vec::new();
        while let Some(i) = next_batched(&mut rx, &mut batch).await {
            got.push(i);
        }
        assert_eq!(sender.await.ok(), Some(Ok(())));
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        assert!(batch.is_empty());
    }
}
