//! Step 6 of the processing order: at most `limits.concurrentRequests` requests run at
//! once; the others wait in a FIFO queue of at most `limits.requestsBufferSize`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct RequestLimiter {
    running: Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
    buffer_size: usize,
    warning_threshold: usize,
    warned: AtomicBool,
}

/// The queue is full: the request is refused with `api.process.overloaded`.
#[derive(Debug)]
pub struct Overloaded;

/// Decrements the waiting count even when the waiting future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RequestLimiter {
    pub fn new(concurrent: usize, buffer_size: usize, warning_threshold: usize) -> Self {
        RequestLimiter {
            running: Semaphore::new(concurrent),
            capacity: concurrent,
            waiting: AtomicUsize::new(0),
            buffer_size,
            warning_threshold,
            warned: AtomicBool::new(false),
        }
    }

    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, Overloaded> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let _waiting = Waiting(&self.waiting);
        if queued > self.buffer_size {
            return Err(Overloaded);
        }
        if queued > self.warning_threshold && !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "request queue holds {queued} requests (warning threshold {})",
                self.warning_threshold
            );
        } else if queued <= self.warning_threshold / 2 {
            self.warned.store(false, Ordering::Relaxed);
        }
        self.running.acquire().await.map_err(|_| Overloaded)
    }

    pub fn running(&self) -> usize {
        self.capacity - self.running.available_permits()
    }

    pub fn pending(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queues_then_refuses() {
        let limiter = RequestLimiter::new(1, 1, 1);
        let first = limiter.acquire().await.unwrap();
        assert_eq!(limiter.running(), 1);
        let second = limiter.acquire();
        tokio::pin!(second);
        // Poll once so that the second request enters the queue.
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert_eq!(limiter.pending(), 1);
        assert!(limiter.acquire().await.is_err(), "queue is full");
        drop(first);
        let _second = second.await.unwrap();
        assert_eq!(limiter.pending(), 0);
        assert_eq!(limiter.running(), 1);
    }
}
