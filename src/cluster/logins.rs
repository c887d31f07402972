//! Login throttling shared by the nodes of a cluster (the same rules as
//! `auth::throttle::LoginThrottle`, with the counters in Redis), so that spreading a brute
//! force over the nodes behind a load balancer gains nothing.

use redis::Script;

use super::Link;
use crate::protocol::now_ms;

/// KEYS[1]: the username's failures hash. ARGV: now (ms), failures before the delay, first
/// delay (ms), longest delay (ms), how long a record outlives its delay (ms).
const FAILED_SCRIPT: &str = r"
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local now, before, first, max, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local delay = 0
if count >= before then
  delay = math.min(first * 2 ^ math.min(count - before, 31), max)
  redis.call('HSET', KEYS[1], 'blockedUntil', now + delay)
end
redis.call('PEXPIRE', KEYS[1], delay + forget)
return count
";

pub struct SharedLogins {
    failed_script: Script,
}

impl Default for SharedLogins {
    fn default() -> Self {
        SharedLogins {
            failed_script: Script::new(FAILED_SCRIPT),
        }
    }
}

impl SharedLogins {
    /// Counts an attempt from `address` in the current second, cluster-wide; true while
    /// within `per_second`.
    pub async fn admit_address(
        &self,
        link: &Link,
        address: &str,
        per_second: u32,
    ) -> Result<bool, String> {
        let key = link.keys.login_address(address, now_ms() / 1000);
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&key, 1u32).pexpire(&key, 2000).ignore();
        let (count,): (u32,) = link
            .bounded(pipe.query_async(&mut link.redis.clone()))
            .await?;
        Ok(count <= per_second)
    }

    /// False while `username` waits after repeated failures on any node.
    pub async fn admit_username(&self, link: &Link, username: &str) -> Result<bool, String> {
        let until: Option<u64> = link
            .bounded(
                redis::cmd("HGET")
                    .arg(link.keys.login_failures(username))
                    .arg("blockedUntil")
                    .query_async(&mut link.redis.clone()),
            )
            .await?;
        Ok(until.is_none_or(|until| now_ms() >= until))
    }

    /// Records a failure; from the `before_delay`-th on, the username waits, the delay
    /// doubling with each failure up to `max_delay`.
    pub async fn failed(
        &self,
        link: &Link,
        username: &str,
        before_delay: u32,
        first_delay_ms: u64,
        max_delay_ms: u64,
        forget_ms: u64,
    ) -> Result<(), String> {
        let mut invocation = self.failed_script.prepare_invoke();
        invocation
            .key(link.keys.login_failures(username))
            .arg(now_ms())
            .arg(before_delay)
            .arg(first_delay_ms)
            .arg(max_delay_ms)
            .arg(forget_ms);
        link.bounded(invocation.invoke_async::<u64>(&mut link.redis.clone()))
            .await
            .map(|_| ())
    }

    pub async fn succeeded(&self, link: &Link, username: &str) -> Result<(), String> {
        link.bounded(
            redis::cmd("DEL")
                .arg(link.keys.login_failures(username))
                .query_async::<u64>(&mut link.redis.clone()),
        )
        .await
        .map(|_| ())
    }
}
