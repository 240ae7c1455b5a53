//! Batching: items go in, a batch comes out with the reason it was flushed. [`Batcher`] is pure code
//! with no clock of its own (the caller passes `now`), tested without sleeping or a queue;
//! [`Batcher::next_batch`] is the one loop that feeds it from a [`Source`] (a channel, a broker
//! consumer) against the batch's deadline, shared by the embedded pipeline and both workers. It
//! reads tokio's clock, so tests drive it with a paused clock.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Where a batch's items come from: the next item, or `None` once the input ended (and on every
/// call after). `next` must be cancel-safe: a dropped call loses no item.
pub trait Source {
    type Item;
    fn next(&mut self) -> impl Future<Output = Option<Self::Item>> + Send;
}

impl<T: Send> Source for tokio::sync::mpsc::Receiver<T> {
    type Item = T;
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Why a batch was handed on; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// It reached the maximum size.
    Size,
    /// Its oldest item waited the maximum time.
    Deadline,
    /// The input ended (or is stopping) and what was left went out.
    Drained,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Size => "size",
            FlushReason::Deadline => "deadline",
            FlushReason::Drained => "drained",
        }
    }
}

#[derive(Debug)]
pub struct Batcher<T> {
    max_size: usize,
    max_wait: Duration,
    items: Vec<T>,
    oldest: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(max_size: usize, max_wait: Duration) -> Self {
        assert!(max_size > 0, "a batch holds at least one item");
        Batcher { max_size, max_wait, items: Vec::with_capacity(max_size), oldest: None }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds an item; returns the batch when it is full.
    pub fn push(&mut self, item: T, now: Instant) -> Option<(Vec<T>, FlushReason)> {
        self.oldest.get_or_insert(now);
        self.items.push(item);
        (self.items.len() >= self.max_size).then(|| self.take(FlushReason::Size))
    }

    /// When the current batch must go out even if not full; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.max_wait)
    }

    /// The batch, if its deadline has passed.
    pub fn poll(&mut self, now: Instant) -> Option<(Vec<T>, FlushReason)> {
        match self.deadline() {
            Some(d) if now >= d => Some(self.take(FlushReason::Deadline)),
            _ => None,
        }
    }

    /// Whatever is left, when the input ends.
    pub fn drain(&mut self) -> Option<(Vec<T>, FlushReason)> {
        (!self.items.is_empty()).then(|| self.take(FlushReason::Drained))
    }

    /// Takes items from `source` until the batch is full, its oldest item waited the maximum time,
    /// or the source ended (then what is left goes out as `Drained`). `None`: the source ended and
    /// nothing is left. Cancel-safe: dropped mid-wait, the items taken so far stay in the batcher
    /// (a worker that stops takes them with `drain`).
    pub async fn next_batch<S: Source<Item = T>>(&mut self, source: &mut S) -> Option<(Vec<T>, FlushReason)> {
        loop {
            let flushed = match self.deadline() {
                Some(deadline) => tokio::select! {
                    item = source.next() => match item {
                        Some(item) => self.push(item, now()),
                        None => return self.drain(),
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => self.poll(now()),
                },
                None => match source.next().await {
                    Some(item) => self.push(item, now()),
                    None => return self.drain(),
                },
            };
            if flushed.is_some() {
                return flushed;
            }
        }
    }

    fn take(&mut self, reason: FlushReason) -> (Vec<T>, FlushReason) {
        self.oldest = None;
        (std::mem::replace(&mut self.items, Vec::with_capacity(self.max_size)), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_on_size_deadline_and_drain() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Batcher::new(3, Duration::from_millis(50));
        assert_eq!(b.push(1, ms(0)), None);
        assert_eq!(b.push(2, ms(10)), None);
        assert_eq!(b.push(3, ms(20)), Some((vec![1, 2, 3], FlushReason::Size)));
        assert_eq!(b.deadline(), None, "an empty batcher has no deadline");
        assert_eq!(b.push(4, ms(30)), None);
        assert_eq!(b.deadline(), Some(ms(80)), "the deadline runs from the oldest item");
        assert_eq!(b.poll(ms(79)), None);
        assert_eq!(b.push(5, ms(79)), None);
        assert_eq!(b.poll(ms(80)), Some((vec![4, 5], FlushReason::Deadline)));
        assert_eq!(b.push(6, ms(90)), None);
        assert_eq!(b.drain(), Some((vec![6], FlushReason::Drained)));
        assert_eq!(b.drain(), None);
    }

    /// A channel fed by the test; the clock is tokio's paused one, so deadlines pass only when the
    /// test lets time advance (no sleeping, nothing timing-dependent).
    #[tokio::test(start_paused = true)]
    async fn next_batch_flushes_full_late_and_last_batches() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut b = Batcher::new(3, Duration::from_millis(200));
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(b.next_batch(&mut rx).await, Some((vec![0, 1, 2], FlushReason::Size)));
        // one item waits: nothing more comes, so its deadline flushes it, 200 ms (virtual) later
        let started = tokio::time::Instant::now();
        assert_eq!(b.next_batch(&mut rx).await, Some((vec![3], FlushReason::Deadline)));
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        // the input ends with items in hand: they go out as drained, then the end is reported
        tx.send(4).await.unwrap();
        drop(tx);
        assert_eq!(b.next_batch(&mut rx).await, Some((vec![4], FlushReason::Drained)));
        assert_eq!(b.next_batch(&mut rx).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_keeps_the_items_taken() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut b = Batcher::new(10, Duration::from_secs(60));
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        // a worker's select drops the wait (e.g. on shutdown) before the batch is complete
        let stopped = tokio::time::timeout(Duration::from_millis(1), b.next_batch(&mut rx)).await;
        assert!(stopped.is_err());
        assert_eq!(b.drain(), Some((vec![1, 2], FlushReason::Drained)));
    }
}
