//! Login throttling shared by the nodes of a cluster (the same rules as
//! `auth::throttle::LoginThrottle`, with the counters in Redis), so that spreading a brute
//! force over the nodes behind a load balancer gains nothing.

use redis::Script;

use super::Link;
use crate::protocol::now_ms;

/// KEYS[1]: the failures hash of one (address, username). ARGV: now (ms), failures
/// before the delay, first delay (ms), longest delay (ms), how long a record outlives its
/// delay (ms).
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

/// KEYS: the failures hash of (address, username), the username's known addresses, its
/// ceiling. ARGV: now (ms), the address, how long an address stays known (ms), the
/// ceiling's interval (ms, 0: no ceiling) and tolerance (ms).
/// Returns 0 (check the password), 1 (this address waits), 2 (the ceiling is reached).
const ADMIT_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blockedUntil') or '0')
if now < blocked then return 1 end
local interval = tonumber(ARGV[4])
if interval == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '-1')
if seen >= 0 and now - seen < tonumber(ARGV[3]) then return 0 end
local tat = tonumber(redis.call('GET', KEYS[3]) or '0')
if tat < now then tat = now end
if tat - now > tonumber(ARGV[5]) then return 2 end
redis.call('SET', KEYS[3], tat + interval, 'PX', tat + interval - now + 1000)
return 0
";

/// KEYS: the failures hash of (address, username), the username's known addresses.
/// ARGV: now (ms), the address, how long an address stays known (ms), most addresses kept.
const SUCCEEDED_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[4]) then
  local all = redis.call('HGETALL', KEYS[2])
  local oldest, at = nil, nil
  for i = 1, #all, 2 do
    local t = tonumber(all[i + 1])
    if at == nil or t < at then oldest, at = all[i], t end
  end
  redis.call('HDEL', KEYS[2], oldest)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Addresses kept per username as known.
const MAX_KNOWN: u32 = 16;

pub struct SharedLogins {
    failed_script: Script,
    admit_script: Script,
    succeeded_script: Script,
}

impl Default for SharedLogins {
    fn default() -> Self {
        SharedLogins {
            failed_script: Script::new(FAILED_SCRIPT),
            admit_script: Script::new(ADMIT_SCRIPT),
            succeeded_script: Script::new(SUCCEEDED_SCRIPT),
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
            .bounded(pipe.query_async(&mut link.redis.get()))
            .await?;
        Ok(count <= per_second)
    }

    /// Whether the password of `username` may be checked for a client at `address`,
    /// on any node: 0 yes, 1 the address waits, 2 the username's ceiling (`ceiling`:
    /// interval and tolerance in ms) is reached for unknown addresses.
    pub async fn admit(
        &self,
        link: &Link,
        username: &str,
        address: &str,
        known_for_ms: u64,
        ceiling: Option<(u64, u64)>,
    ) -> Result<u8, String> {
        let (interval, tolerance) = ceiling.unwrap_or((0, 0));
        let mut invocation = self.admit_script.prepare_invoke();
        invocation
            .key(link.keys.login_failures(address, username))
            .key(link.keys.login_known(username))
            .key(link.keys.login_ceiling(username))
            .arg(now_ms())
            .arg(address)
            .arg(known_for_ms)
            .arg(interval)
            .arg(tolerance);
        link.bounded(invocation.invoke_async::<u8>(&mut link.redis.get()))
            .await
    }

    /// Records a failure; from the `before_delay`-th on, the (address, username) waits,
    /// the delay doubling with each failure up to `max_delay`.
    #[allow(clippy::too_many_arguments)]
    pub async fn failed(
        &self,
        link: &Link,
        username: &str,
        address: &str,
        before_delay: u32,
        first_delay_ms: u64,
        max_delay_ms: u64,
        forget_ms: u64,
    ) -> Result<(), String> {
        let mut invocation = self.failed_script.prepare_invoke();
        invocation
            .key(link.keys.login_failures(address, username))
            .arg(now_ms())
            .arg(before_delay)
            .arg(first_delay_ms)
            .arg(max_delay_ms)
            .arg(forget_ms);
        link.bounded(invocation.invoke_async::<u64>(&mut link.redis.get()))
            .await
            .map(|_| ())
    }

    /// Resets the (address, username) record and remembers the address as known.
    pub async fn succeeded(
        &self,
        link: &Link,
        username: &str,
        address: &str,
        known_for_ms: u64,
    ) -> Result<(), String> {
        let mut invocation = self.succeeded_script.prepare_invoke();
        invocation
            .key(link.keys.login_failures(address, username))
            .key(link.keys.login_known(username))
            .arg(now_ms())
            .arg(address)
            .arg(known_for_ms)
            .arg(MAX_KNOWN);
        link.bounded(invocation.invoke_async::<u64>(&mut link.redis.get()))
            .await
            .map(|_| ())
    }
}
