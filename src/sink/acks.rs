//! In-order acknowledgement tracking: the one place that decides which
//! source position may be checkpointed.
//!
//! Every message handed to the producer is queued here with its delivery
//! future, followed by a *resume marker*: the position to resume from once
//! that message (and everything before it) is in Kafka. Deliveries complete
//! in any order across partitions, but the queue is only ever drained from
//! the front, so the acknowledged position never passes a message that is
//! still unacknowledged. A failed delivery stops the tracker for good: it is
//! never skipped.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Instant;

use futures_util::FutureExt;

use crate::event::Position;

enum Entry<F> {
    /// A message handed to the producer (at the instant), not yet acknowledged.
    Message(F, Instant),
    /// Once everything before this is acknowledged, resuming here loses nothing.
    Resume(Position),
}

/// Queue of deliveries and resume markers, drained strictly in order.
///
/// `F` resolves to `Ok(())` when the broker acknowledged the message, or to
/// `Err(reason)` when it will never be delivered.
pub(crate) struct AckTracker<F> {
    queue: VecDeque<Entry<F>>,
    /// Messages in `queue` (markers not counted): the in-flight window.
    messages: usize,
    /// Messages acknowledged since the tracker was made.
    acked_messages: u64,
    acked: Option<Position>,
    /// The last resume marker queued (acknowledged or not).
    last: Option<Position>,
    failed: Option<String>,
}

impl<F> AckTracker<F>
where
    F: Future<Output = Result<(), String>> + Unpin,
{
    pub(crate) fn new() -> Self {
        AckTracker {
            queue: VecDeque::new(),
            messages: 0,
            acked_messages: 0,
            acked: None,
            last: None,
            failed: None,
        }
    }

    /// `sent`: when it was handed to the producer.
    pub(crate) fn push_message(&mut self, delivery: F, sent: Instant) {
        self.queue.push_back(Entry::Message(delivery, sent));
        self.messages += 1;
    }

    pub(crate) fn push_resume(&mut self, pos: Position) {
        self.last = Some(pos.clone());
        self.queue.push_back(Entry::Resume(pos));
    }

    /// The last resume marker queued: where to resume once everything
    /// handed over so far is in Kafka (transactional delivery commits up to it).
    pub(crate) fn last_queued(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    /// Messages handed over and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.messages
    }

    /// Messages acknowledged so far (drained from the queue).
    pub(crate) fn acked_messages(&self) -> u64 {
        self.acked_messages
    }

    /// When the oldest unacknowledged message was handed to the producer.
    pub(crate) fn oldest_sent(&self) -> Option<Instant> {
        self.queue.iter().find_map(|e| match e {
            Entry::Message(_, at) => Some(*at),
            Entry::Resume(_) => None,
        })
    }

    /// The highest position up to which everything is acknowledged.
    pub(crate) fn acked(&self) -> Option<&Position> {
        self.acked.as_ref()
    }

    /// Drain acknowledged entries from the front without waiting.
    pub(crate) fn poll_ready(&mut self) -> Result<(), String> {
        self.drain(false).now_or_never().unwrap_or(Ok(()))
    }

    /// Wait until the oldest unacknowledged message is acknowledged (or fails),
    /// then drain what follows it. Returns at once if nothing is in flight.
    pub(crate) async fn wait_one(&mut self) -> Result<(), String> {
        self.drain(true).await
    }

    /// Wait until every queued message is acknowledged.
    pub(crate) async fn wait_all(&mut self) -> Result<(), String> {
        while !self.queue.is_empty() {
            self.drain(true).await?;
        }
        Ok(())
    }

    /// Pop from the front while entries are done. With `block`, wait for the
    /// first pending message instead of stopping at it (once).
    async fn drain(&mut self, mut block: bool) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        loop {
            match self.queue.front_mut() {
                None => return Ok(()),
                Some(Entry::Resume(_)) => {
                    if let Some(Entry::Resume(pos)) = self.queue.pop_front() {
                        // INVARIANT (checkpoint safety): `acked` advances only
                        // here, to a marker at the front of the queue. Markers
                        // are queued after the messages of their event, and a
                        // message leaves the front only once Kafka acknowledged
                        // it, so every message before `acked` is in Kafka. This
                        // is the only position that may be checkpointed.
                        self.acked = Some(pos);
                    }
                }
                Some(Entry::Message(fut, _)) => {
                    let done = if block {
                        block = false;
                        Some(fut.await)
                    } else {
                        fut.now_or_never()
                    };
                    match done {
                        None => return Ok(()),
                        Some(Ok(())) => {
                            self.queue.pop_front();
                            self.messages -= 1;
                            self.acked_messages += 1;
                        }
                        Some(Err(reason)) => {
                            self.failed = Some(reason.clone());
                            return Err(reason);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    type Fut = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

    fn delivery() -> (oneshot::Sender<Result<(), String>>, Fut) {
        let (tx, rx) = oneshot::channel();
        let fut: Fut = Box::pin(async move { rx.await.unwrap_or(Err("dropped".into())) });
        (tx, fut)
    }

    fn p(row: u64) -> Position {
        Position {
            file: "binlog.000001".into(),
            offset: 4,
            row,
            gtid: None,
        }
    }

    #[tokio::test]
    async fn acked_position_never_passes_an_unacknowledged_message() {
        let mut t = AckTracker::new();
        let (a, fa) = delivery();
        let (b, fb) = delivery();
        let (c, fc) = delivery();
        t.push_message(fa, Instant::now());
        t.push_resume(p(1));
        t.push_message(fb, Instant::now());
        t.push_resume(p(2));
        t.push_message(fc, Instant::now());
        t.push_resume(p(3));
        assert_eq!(t.in_flight(), 3);
        // Later messages acknowledged first (other partitions): no progress.
        c.send(Ok(())).unwrap();
        b.send(Ok(())).unwrap();
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), None);
        assert_eq!(t.in_flight(), 3);
        // The oldest one completes: everything up to the last marker is acked.
        a.send(Ok(())).unwrap();
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), Some(&p(3)));
        assert_eq!(t.in_flight(), 0);
    }

    #[tokio::test]
    async fn oldest_sent_is_the_oldest_unacknowledged_message() {
        let mut t = AckTracker::new();
        assert_eq!(t.oldest_sent(), None);
        let (a, fa) = delivery();
        let (b, fb) = delivery();
        let before = Instant::now();
        t.push_message(fa, Instant::now());
        t.push_resume(p(1));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let middle = Instant::now();
        t.push_message(fb, Instant::now());
        t.push_resume(p(2));
        let first = t.oldest_sent().expect("two messages in flight");
        assert!(first >= before && first <= middle);
        // Acknowledging the younger one changes nothing: the older still waits.
        b.send(Ok(())).unwrap();
        t.poll_ready().unwrap();
        assert_eq!(t.oldest_sent(), Some(first));
        a.send(Ok(())).unwrap();
        t.poll_ready().unwrap();
        assert_eq!(t.oldest_sent(), None);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.acked_messages(), 2);
    }

    #[tokio::test]
    async fn a_failed_delivery_stops_progress_and_sticks() {
        let mut t = AckTracker::new();
        let (a, fa) = delivery();
        let (b, fb) = delivery();
        t.push_message(fa, Instant::now());
        t.push_resume(p(1));
        t.push_message(fb, Instant::now());
        t.push_resume(p(2));
        a.send(Ok(())).unwrap();
        b.send(Err("broker said no".into())).unwrap();
        assert_eq!(t.wait_all().await, Err("broker said no".into()));
        assert_eq!(
            t.acked(),
            Some(&p(1)),
            "stops right before the failed message"
        );
        assert_eq!(t.poll_ready(), Err("broker said no".into()));
    }

    #[tokio::test]
    async fn markers_without_messages_advance_in_order() {
        let mut t: AckTracker<Fut> = AckTracker::new();
        t.push_resume(p(5));
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), Some(&p(5)));
        let (a, fa) = delivery();
        t.push_message(fa, Instant::now());
        t.push_resume(p(6));
        t.push_resume(p(7));
        let waiter = tokio::spawn(async move {
            t.wait_one().await.unwrap();
            t
        });
        tokio::task::yield_now().await;
        a.send(Ok(())).unwrap();
        let t = waiter.await.unwrap();
        assert_eq!(t.acked(), Some(&p(7)));
    }
}
