//! Batching as pure code: items go in, a batch comes out with the reason it was flushed. No clock
//! of its own (the caller passes `now`), so it is tested without sleeping or a queue.

use std::time::{Duration, Instant};

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
}
