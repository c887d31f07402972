//! The `local` strategy's passwords: argon2id hashes. Checking a password of an unknown
//! user costs the same as a wrong one, so response times do not tell which usernames
//! exist.
//!
//! Each hash needs argon2id's 19 MiB of working memory. They run on a fixed set of
//! threads, one per core, each reusing its own working memory, fed by a bounded queue: at
//! most that many hashes (and so that much memory) at once, whatever the number of
//! concurrent logins; past the queue's bound a caller is told at once that the node is
//! overloaded. Never on an actix worker.

use std::cell::RefCell;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

thread_local! {
    /// This thread's argon2 working memory (19 MiB with the default parameters), kept and
    /// reused by every hash it runs. Allocated per hash, it made glibc's allocator keep
    /// hundreds of MiB after a burst of logins (its threshold for handing large blocks
    /// back to the system grows with them); kept per hashing thread, the node holds at
    /// most one per core, whatever the number of logins.
    static WORKING_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2 of `password` and `salt` into `out`, in this thread's working memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    WORKING_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        let blocks = params.block_count();
        if memory.len() != blocks {
            *memory = vec![Block::default(); blocks];
        }
        argon2.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
    })
}

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_buffer = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buffer)
        .map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon2, &params, password.as_bytes(), salt_bytes, &mut out)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

fn verify_now(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut salt_buffer = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    argon2_into(&argon2, &params, password.as_bytes(), salt_bytes, &mut out).is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(&out).is_ok_and(|computed| computed == expected)
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

    /// Hashes stored before the reusable working memory (made by argon2's own
    /// `PasswordHasher`) still verify, and new ones verify with argon2's own verifier.
    #[test]
    fn hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(verify_now("s3cret", &theirs));
        assert!(!verify_now("other", &theirs));
        let ours = hash_now("s3cret").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
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
