//! The Lua scripts that make each step on a shared budget one atomic
//! operation in Redis. Keys come in threes per account: its balance (a hash
//! of `settled` and `held`, in nanodollars), its holds' lease deadlines (a
//! sorted set) and its holds' amounts (a hash). Amounts are integers
//! written with `%d`: Lua numbers are doubles, exact to 2^53 nanodollars
//! ($9 million), and its default number-to-string would print large ones
//! in exponent form, which Redis would refuse as an integer.

use std::sync::LazyLock;

use redis::Script;

/// Drops an account's lapsed holds (a crashed p402's), giving their money
/// back. Shared by every script that reads a balance.
macro_rules! prune {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function release(balance, leases, amounts, id)
  local amount = redis.call('HGET', amounts, id)
  if amount then
    redis.call('HINCRBY', balance, 'held', string.format('%d', -tonumber(amount)))
    redis.call('HDEL', amounts, id)
  end
  redis.call('ZREM', leases, id)
end
local function prune(balance, leases, amounts, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    release(balance, leases, amounts, id)
  end
end
"#
    };
}

/// KEYS: three per account. ARGV: hold id, lease (ms), wanted, minimum,
/// then per account its limit and its keys' lifetime (ms, 0 for none).
/// Holds `min(wanted, least left)` on every account if the least left is
/// at least `minimum`: `{1, held}`; else holds nothing: `{0, index of the
/// tightest account (1-based), what it has left}`.
pub static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prune!(),
        r#"
local now = now_ms()
local id, lease = ARGV[1], tonumber(ARGV[2])
local wanted, minimum = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 3
local least, least_at = nil, 1
for i = 1, n do
  local balance, leases, amounts = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  prune(balance, leases, amounts, now)
  local settled = tonumber(redis.call('HGET', balance, 'settled') or '0')
  local held = tonumber(redis.call('HGET', balance, 'held') or '0')
  local left = tonumber(ARGV[3 + 2*i]) - settled - held
  if least == nil or left < least then least, least_at = left, i end
end
if least < minimum then
  return {0, least_at, string.format('%d', least)}
end
local grant = wanted
if least < wanted then grant = least end
grant = string.format('%d', grant)
for i = 1, n do
  local balance, leases, amounts = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  redis.call('HINCRBY', balance, 'held', grant)
  redis.call('HSET', amounts, id, grant)
  redis.call('ZADD', leases, string.format('%d', now + lease), id)
  local ttl = tonumber(ARGV[4 + 2*i])
  if ttl > 0 then
    redis.call('PEXPIRE', balance, ttl)
    redis.call('PEXPIRE', leases, ttl)
    redis.call('PEXPIRE', amounts, ttl)
  end
end
return {1, grant}
"#
    ))
});

/// KEYS: the request's settlement marker, the team ledger stream, then
/// three per account. ARGV: hold id (or empty), cost, the marker's
/// lifetime (s), the oldest ledger id to keep (ms), instance, entry JSON.
/// Swaps the hold for the cost and appends to the ledger, once per request
/// id: returns 1, or 0 if this request was settled already.
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prune!(),
        r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
local n = (#KEYS - 2) / 3
for i = 1, n do
  local balance, leases, amounts = KEYS[3*i], KEYS[3*i+1], KEYS[3*i+2]
  if ARGV[1] ~= '' then release(balance, leases, amounts, ARGV[1]) end
  redis.call('HINCRBY', balance, 'settled', ARGV[2])
end
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*', 'instance', ARGV[5], 'entry', ARGV[6])
return 1
"#
    ))
});

/// KEYS: three per account. ARGV: hold id. Gives a hold back unused.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prune!(),
        r#"
for i = 1, #KEYS / 3 do
  release(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], ARGV[1])
end
return 1
"#
    ))
});

/// KEYS: the accounts' lease sets. ARGV: hold id, lease (ms). Extends a
/// live hold; returns how many accounts still had it (fewer than KEYS
/// means it lapsed, and its money was given back).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prune!(),
        r#"
local deadline = string.format('%d', now_ms() + tonumber(ARGV[2]))
local renewed = 0
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then
    redis.call('ZADD', KEYS[i], 'XX', deadline, ARGV[1])
    renewed = renewed + 1
  end
end
return renewed
"#
    ))
});

/// KEYS: three per account. Returns `{settled, held}` per account, after
/// dropping lapsed holds.
pub static BALANCES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prune!(),
        r#"
local now = now_ms()
local out = {}
for i = 1, #KEYS / 3 do
  local balance, leases, amounts = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  prune(balance, leases, amounts, now)
  out[#out + 1] = redis.call('HGET', balance, 'settled') or '0'
  out[#out + 1] = redis.call('HGET', balance, 'held') or '0'
end
return out
"#
    ))
});
