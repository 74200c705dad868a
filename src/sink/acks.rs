//! In-order acknowledgement tracking: the one place that decides which
//! source position may be checkpointed.
//!
//! Every message handed to the producer is queued here under a token (its
//! sequence number, given to librdkafka as the message's opaque), followed
//! by a *resume marker*: the position to resume from once that message (and
//! everything before it) is in Kafka. librdkafka's delivery callback writes
//! each outcome into a [`DeliveryBoard`]; deliveries complete in any order
//! across partitions, but the queue is only ever drained from the front, so
//! the acknowledged position never passes a message that is still
//! unacknowledged. A failed delivery stops the tracker for good: it is never
//! skipped.
//!
//! The board is a ring of one-byte slots indexed by token, written by the
//! producer's polling thread and read by the sink: no allocation, channel or
//! future per message (rust-rdkafka's `FutureProducer` allocates a boxed
//! oneshot sender per message and the sink polled a future per message).

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;

use crate::event::Position;
use crate::ops::metrics::{Histogram, TopicProduced};

const PENDING: u8 = 0;
const DELIVERED: u8 = 1;
const FAILED: u8 = 2;

/// Delivery outcomes by token, written by the delivery callback.
///
/// Slot `token % capacity` holds the outcome of message `token`. The tracker
/// never holds `capacity` or more messages (its window is smaller), and a
/// slot is reset only once its message left the tracker, after its outcome
/// was written, so no two live messages share a slot and no late callback
/// writes into a reused one.
pub(crate) struct DeliveryBoard {
    slots: Box<[AtomicU8]>,
    mask: u64,
    /// Why a message failed, by token (rare: read once, then the sink stops).
    failures: Mutex<HashMap<u64, String>>,
    /// The token the tracker waits for (`u64::MAX`: none): only its outcome
    /// (or a failure) wakes the sink.
    waiting_for: AtomicU64,
    waker: AtomicWaker,
}

impl DeliveryBoard {
    /// A board for at most `window` messages in flight.
    pub(crate) fn new(window: usize) -> DeliveryBoard {
        let capacity = window.max(1).saturating_add(1).next_power_of_two();
        DeliveryBoard {
            slots: (0..capacity).map(|_| AtomicU8::new(PENDING)).collect(),
            mask: capacity as u64 - 1,
            failures: Mutex::new(HashMap::new()),
            waiting_for: AtomicU64::new(u64::MAX),
            waker: AtomicWaker::new(),
        }
    }

    /// Most messages that may be in flight at once.
    pub(crate) fn window(&self) -> usize {
        self.slots.len() - 1
    }

    fn slot(&self, token: u64) -> &AtomicU8 {
        &self.slots[(token & self.mask) as usize]
    }

    /// Record the outcome of message `token` (the delivery callback).
    pub(crate) fn complete(&self, token: u64, outcome: Result<(), String>) {
        let state = match outcome {
            Ok(()) => DELIVERED,
            Err(reason) => {
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token, reason);
                FAILED
            }
        };
        // SeqCst with the load below and with `poll` (store `waiting_for`,
        // then load the slot): either the sink sees this outcome, or this
        // callback sees that the sink waits for it and wakes it.
        self.slot(token).store(state, Ordering::SeqCst);
        if state == FAILED || self.waiting_for.load(Ordering::SeqCst) == token {
            self.waker.wake();
        }
    }

    fn outcome(&self, token: u64) -> Option<Result<(), String>> {
        match self.slot(token).load(Ordering::SeqCst) {
            PENDING => None,
            DELIVERED => Some(Ok(())),
            _ => Some(Err(self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&token)
                .cloned()
                .unwrap_or_else(|| "delivery failed".to_string()))),
        }
    }

    /// The outcome of `token`, or Pending with `cx` woken once it is known.
    fn poll(&self, token: u64, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        if let Some(o) = self.outcome(token) {
            return Poll::Ready(o);
        }
        self.waiting_for.store(token, Ordering::SeqCst);
        self.waker.register(cx.waker());
        match self.outcome(token) {
            Some(o) => Poll::Ready(o),
            None => Poll::Pending,
        }
    }

    /// Free the slot of a delivered message that left the tracker.
    fn release(&self, token: u64) {
        self.slot(token).store(PENDING, Ordering::Relaxed);
    }
}

enum Entry {
    /// A message handed to the producer, not yet acknowledged.
    Message(Sent),
    /// Once everything before this is acknowledged, resuming here loses nothing.
    Resume(Position),
}

struct Sent {
    token: u64,
    /// When it was handed to the producer.
    at: Instant,
    /// Key + value bytes.
    bytes: u64,
    /// Where its acknowledgement is counted (metrics on).
    counter: Option<Arc<TopicProduced>>,
}

/// Queue of deliveries and resume markers, drained strictly in order.
pub(crate) struct AckTracker {
    board: Arc<DeliveryBoard>,
    queue: VecDeque<Entry>,
    /// The token of the next message pushed.
    next_token: u64,
    /// Messages in `queue` (markers not counted): the in-flight window.
    messages: usize,
    /// Their key + value bytes.
    bytes: u64,
    /// Messages acknowledged since the tracker was made.
    acked_messages: u64,
    acked: Option<Position>,
    /// The last resume marker queued (acknowledged or not).
    last: Option<Position>,
    failed: Option<String>,
    /// Time from hand-off to acknowledgement (metrics on).
    latency: Option<Arc<Histogram>>,
}

impl AckTracker {
    pub(crate) fn new(board: Arc<DeliveryBoard>) -> Self {
        AckTracker {
            board,
            queue: VecDeque::new(),
            next_token: 0,
            messages: 0,
            bytes: 0,
            acked_messages: 0,
            acked: None,
            last: None,
            failed: None,
            latency: None,
        }
    }

    /// Observe each message's time from hand-off to acknowledgement.
    pub(crate) fn set_latency(&mut self, latency: Arc<Histogram>) {
        self.latency = Some(latency);
    }

    /// Start over (nothing in flight): no acknowledged position, no counts.
    /// Tokens go on from where they were.
    pub(crate) fn reset(&mut self) {
        let fresh = AckTracker {
            next_token: self.next_token,
            latency: self.latency.take(),
            ..AckTracker::new(self.board.clone())
        };
        *self = fresh;
    }

    /// The token the next message must be handed to the producer with.
    pub(crate) fn next_token(&self) -> u64 {
        self.next_token
    }

    /// The message with token [`Self::next_token`] was handed to the
    /// producer at `at`.
    pub(crate) fn push_message(
        &mut self,
        at: Instant,
        bytes: u64,
        counter: Option<Arc<TopicProduced>>,
    ) {
        self.queue.push_back(Entry::Message(Sent {
            token: self.next_token,
            at,
            bytes,
            counter,
        }));
        self.next_token += 1;
        self.messages += 1;
        self.bytes += bytes;
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

    /// Key + value bytes of the messages in flight.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages acknowledged so far (drained from the queue).
    pub(crate) fn acked_messages(&self) -> u64 {
        self.acked_messages
    }

    /// When the oldest unacknowledged message was handed to the producer.
    pub(crate) fn oldest_sent(&self) -> Option<Instant> {
        self.queue.iter().find_map(|e| match e {
            Entry::Message(m) => Some(m.at),
            Entry::Resume(_) => None,
        })
    }

    /// The highest position up to which everything is acknowledged.
    pub(crate) fn acked(&self) -> Option<&Position> {
        self.acked.as_ref()
    }

    /// Drain acknowledged entries from the front without waiting.
    pub(crate) fn poll_ready(&mut self) -> Result<(), String> {
        match self.poll_drain(None) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// Wait until the oldest unacknowledged message is acknowledged (or fails),
    /// then drain what follows it. Returns at once if nothing is in flight.
    pub(crate) async fn wait_one(&mut self) -> Result<(), String> {
        let start = self.acked_messages;
        poll_fn(|cx| match self.poll_drain(Some(cx)) {
            Poll::Pending if self.acked_messages > start => Poll::Ready(Ok(())),
            other => other,
        })
        .await
    }

    /// Wait until every queued message is acknowledged.
    pub(crate) async fn wait_all(&mut self) -> Result<(), String> {
        poll_fn(|cx| self.poll_drain(Some(cx))).await
    }

    /// Pop from the front while entries are done. Ready once the queue is
    /// empty or a delivery failed. At a pending message: with `cx`, Pending
    /// (woken when that message's outcome is known); without, Ready(Ok).
    fn poll_drain(&mut self, mut cx: Option<&mut Context<'_>>) -> Poll<Result<(), String>> {
        if let Some(reason) = &self.failed {
            return Poll::Ready(Err(reason.clone()));
        }
        // The clock for the latency metric, read once per drain (on its
        // first acknowledged message), not once per message: the messages a
        // drain pops were all acknowledged when it ran.
        let mut now: Option<Instant> = None;
        loop {
            match self.queue.front() {
                None => return Poll::Ready(Ok(())),
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
                Some(Entry::Message(m)) => {
                    let done = match cx {
                        Some(ref mut cx) => match self.board.poll(m.token, cx) {
                            Poll::Ready(o) => Some(o),
                            Poll::Pending => return Poll::Pending,
                        },
                        None => self.board.outcome(m.token),
                    };
                    match done {
                        None => return Poll::Ready(Ok(())),
                        Some(Ok(())) => {
                            if let Some(Entry::Message(m)) = self.queue.pop_front() {
                                self.board.release(m.token);
                                self.messages -= 1;
                                self.bytes -= m.bytes;
                                self.acked_messages += 1;
                                if let Some(c) = m.counter {
                                    c.acked(m.bytes as usize);
                                    if let Some(l) = &self.latency {
                                        let now = *now.get_or_insert_with(Instant::now);
                                        l.observe(now.saturating_duration_since(m.at));
                                    }
                                }
                            }
                        }
                        Some(Err(reason)) => {
                            self.failed = Some(reason.clone());
                            return Poll::Ready(Err(reason));
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

    fn p(row: u64) -> Position {
        Position {
            file: "binlog.000001".into(),
            offset: 4,
            row,
            gtid: None,
        }
    }

    fn tracker(window: usize) -> (Arc<DeliveryBoard>, AckTracker) {
        let board = Arc::new(DeliveryBoard::new(window));
        (board.clone(), AckTracker::new(board))
    }

    /// Push a message of `bytes` and its resume marker; returns its token.
    fn push(t: &mut AckTracker, bytes: u64, resume: u64) -> u64 {
        let token = t.next_token();
        t.push_message(Instant::now(), bytes, None);
        t.push_resume(p(resume));
        token
    }

    #[tokio::test]
    async fn acked_position_never_passes_an_unacknowledged_message() {
        let (board, mut t) = tracker(8);
        let a = push(&mut t, 10, 1);
        let b = push(&mut t, 20, 2);
        let c = push(&mut t, 30, 3);
        assert_eq!(t.in_flight(), 3);
        assert_eq!(t.in_flight_bytes(), 60);
        // Later messages acknowledged first (other partitions): no progress.
        board.complete(c, Ok(()));
        board.complete(b, Ok(()));
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), None);
        assert_eq!(t.in_flight(), 3);
        // The oldest one completes: everything up to the last marker is acked.
        board.complete(a, Ok(()));
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), Some(&p(3)));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.in_flight_bytes(), 0);
    }

    #[tokio::test]
    async fn oldest_sent_is_the_oldest_unacknowledged_message() {
        let (board, mut t) = tracker(8);
        assert_eq!(t.oldest_sent(), None);
        let before = Instant::now();
        let a = push(&mut t, 1, 1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let middle = Instant::now();
        let b = push(&mut t, 1, 2);
        let first = t.oldest_sent().expect("two messages in flight");
        assert!(first >= before && first <= middle);
        // Acknowledging the younger one changes nothing: the older still waits.
        board.complete(b, Ok(()));
        t.poll_ready().unwrap();
        assert_eq!(t.oldest_sent(), Some(first));
        board.complete(a, Ok(()));
        t.poll_ready().unwrap();
        assert_eq!(t.oldest_sent(), None);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.acked_messages(), 2);
    }

    #[tokio::test]
    async fn a_failed_delivery_stops_progress_and_sticks() {
        let (board, mut t) = tracker(8);
        let a = push(&mut t, 1, 1);
        let b = push(&mut t, 1, 2);
        board.complete(a, Ok(()));
        board.complete(b, Err("broker said no".into()));
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
        let (board, mut t) = tracker(8);
        t.push_resume(p(5));
        t.poll_ready().unwrap();
        assert_eq!(t.acked(), Some(&p(5)));
        let a = t.next_token();
        t.push_message(Instant::now(), 1, None);
        t.push_resume(p(6));
        t.push_resume(p(7));
        let waiter = tokio::spawn(async move {
            t.wait_one().await.unwrap();
            t
        });
        tokio::task::yield_now().await;
        board.complete(a, Ok(()));
        let t = waiter.await.unwrap();
        assert_eq!(t.acked(), Some(&p(7)));
    }

    /// The callback runs on another thread and completes messages in any
    /// order; slots are reused many times over. Every message is
    /// acknowledged once, in order, and the waits never hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_are_reused_across_a_long_run_with_a_concurrent_callback() {
        let window = 64;
        let (board, mut t) = tracker(window);
        assert!(board.window() >= window);
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let cb = board.clone();
        let callback = std::thread::spawn(move || {
            // Complete in batches, the later half of each batch first.
            let mut batch = Vec::new();
            while let Ok(token) = rx.recv() {
                batch.push(token);
                if batch.len() == 7 {
                    let (x, y) = batch.split_at(3);
                    for tk in y.iter().chain(x) {
                        cb.complete(*tk, Ok(()));
                    }
                    batch.clear();
                }
            }
            for tk in batch {
                cb.complete(tk, Ok(()));
            }
        });
        let total = 20_000u64;
        for i in 0..total {
            while t.in_flight() >= window {
                t.wait_one().await.unwrap();
            }
            let token = push(&mut t, 3, i + 1);
            tx.send(token).unwrap();
        }
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(30), t.wait_all())
            .await
            .expect("every message acknowledged")
            .unwrap();
        callback.join().unwrap();
        assert_eq!(t.acked_messages(), total);
        assert_eq!(t.acked(), Some(&p(total)));
        assert_eq!(t.in_flight_bytes(), 0);
    }

    #[tokio::test]
    async fn reset_keeps_tokens_going() {
        let (board, mut t) = tracker(4);
        let a = push(&mut t, 1, 1);
        board.complete(a, Ok(()));
        t.wait_all().await.unwrap();
        t.reset();
        assert_eq!(t.acked(), None);
        assert_eq!(t.acked_messages(), 0);
        assert_eq!(t.next_token(), a + 1);
    }
}
