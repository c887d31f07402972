//! The `local` strategy's passwords: argon2id hashes. Checking a password of an unknown
//! user costs the same as a wrong one, so response times do not tell which usernames
//! exist.
//!
//! Each hash needs argon2id's 19 MiB of working memory. They run on a fixed set of
//! threads, one per core, fed by a bounded queue: at most that many hashes (and so that
//! much memory) at once, whatever the number of concurrent logins; past the queue's bound
//! a caller is told at once that the node is overloaded. Never on an actix worker.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::protocol::errors::{self, ApiError};

/// A hash of a password nobody has, verified when the username is unknown.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash_now("kuzzle-rt decoy password").unwrap_or_default());

/// Hashes waiting for a thread, per thread.
const QUEUED_PER_THREAD: usize = 16;

/// The node's password hashing threads.
static POOL: LazyLock<HashingPool> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    HashingPool::new(threads, threads * QUEUED_PER_THREAD)
});

/// Every thread and its queue are busy: the request is refused, not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Overloaded;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of threads taking jobs from a bounded queue.
pub struct HashingPool {
    queue: SyncSender<Job>,
}

impl HashingPool {
    pub fn new(threads: usize, queued: usize) -> HashingPool {
        let (queue, jobs) = sync_channel::<Job>(queued);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..threads.max(1) {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || run_jobs(&jobs));
            if let Err(error) = spawned {
                log::error!("cannot start a password hashing thread: {error}");
            }
        }
        HashingPool { queue }
    }

    /// Runs `work` on a hashing thread; `Overloaded` at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Overloaded> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        match self.queue.try_send(job) {
            Ok(()) => answered.await.map_err(|_| Overloaded),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Overloaded),
        }
    }
}

fn run_jobs(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let next = jobs.lock().recv();
        match next {
            Ok(job) => {
                job();
                release_freed_memory();
            }
            Err(_) => return,
        }
    }
}

/// Gives this thread's freed memory back to the system at once: a hash frees 19 MiB that
/// mimalloc (the binary's allocator) would otherwise keep until the thread allocates
/// again, and a hashing thread may sleep until the next login.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer and only releases memory mimalloc holds but
    // no live allocation uses; it is sound from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_now(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// What a password operation can end with besides its answer.
#[derive(Debug, PartialEq, Eq)]
pub enum HashError {
    Overloaded,
    Failed(String),
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> ApiError {
        match error {
            HashError::Overloaded => ApiError::plain(errors::OVERLOADED),
            HashError::Failed(reason) => ApiError::new(errors::PLUGIN_UNEXPECTED_ERROR, [reason]),
        }
    }
}

/// The argon2id PHC string for `password`.
pub async fn hash(password: String) -> Result<String, HashError> {
    POOL.run(move || hash_now(&password))
        .await
        .map_err(|_| HashError::Overloaded)?
        .map_err(HashError::Failed)
}

/// Whether `password` matches `hash`; with no hash (unknown user) a decoy is checked and
/// the answer is false.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, Overloaded> {
    POOL.run(move || match hash {
        Some(hash) => verify_now(&password, &hash),
        None => {
            verify_now(&password, &DECOY);
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash("s3cret".into()).await.unwrap();
        let b = hash("s3cret".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert_eq!(verify("s3cret".into(), Some(a.clone())).await, Ok(true));
        assert_eq!(verify("wrong".into(), Some(a)).await, Ok(false));
        assert_eq!(
            verify("s3cret".into(), None).await,
            Ok(false),
            "unknown user"
        );
        assert_eq!(
            verify("s3cret".into(), Some("not a hash".into())).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = Arc::new(HashingPool::new(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        // One job runs (blocked until released), one waits: the queue is full.
        let blocked = {
            let (pool, hold) = (pool.clone(), hold.clone());
            tokio::spawn(async move { pool.run(move || hold.lock().recv().is_ok()).await })
        };
        let mut accepted = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            let pool = pool.clone();
            let job = tokio::spawn(async move { pool.run(|| 1).await });
            tokio::task::yield_now().await;
            accepted.push(job);
        }
        // Let the first job be picked up, then count refusals among the rest.
        let _ = release.send(());
        assert_eq!(blocked.await.unwrap(), Ok(true));
        for job in accepted {
            match job.await.unwrap() {
                Ok(1) => {}
                Err(Overloaded) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(refused >= 8, "{refused} refused");
    }
}
