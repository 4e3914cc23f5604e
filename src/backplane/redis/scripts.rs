//! The Lua scripts the Redis backplane runs: publish (idempotent, bounded history), the
//! catch-up read, the thread snapshots, and the generation marker. Text only; `wire` parses
//! their replies.

/// The generation marker, as a Lua function run first by every script that creates keys:
/// `generation(marker, fresh)` returns the marker's value, and when it is absent sets it to
/// `fresh` and `PUBLISH`es it on the channel of the same name, in the same atomic step. So
/// Redis never holds a key of the backplane without its marker (nothing else would show that
/// the keys it held before are gone), and every node listening to that channel hears of a new
/// marker before any event published after it (see the [module docs](super#faults)).
///
/// A marker gone while Redis still holds keys under the prefix went alone (deleted, evicted):
/// the new one then ends with [`KEPT`], which tells the nodes that the data they knew is still
/// there. Since no key is created without the marker, the keys found are from before it went.
/// The search is a `SCAN` of the prefix, stopped at the first key, or after
/// [`SCAN_BUDGET`] batches of 1000 (a Redis shared with many other keys): then the data counts
/// as gone, which costs a needless loss at worst.
const GENERATION_LUA: &str = r"
local function generation(marker, fresh)
  local value = redis.call('GET', marker)
  if value then return value end
  local prefix = string.sub(marker, 1, #marker - #':generation')
  local pattern = string.gsub(prefix, '[%*%?%[%]\\]', '\\%0') .. ':*'
  local cursor, budget, kept = '0', SCAN_BUDGET, false
  repeat
    local found = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = found[1]
    for _, key in ipairs(found[2]) do
      if key ~= marker then kept = true end
    end
    budget = budget - 1
  until kept or cursor == '0' or budget == 0
  if kept then fresh = fresh .. KEPT end
  redis.call('SET', marker, fresh)
  redis.call('PUBLISH', marker, fresh)
  return fresh
end
";

/// How a generation marker set while Redis still held the backplane's keys ends: see
/// [`GENERATION_LUA`].
pub(crate) const KEPT: &str = " kept";

/// Batches of 1000 keys the generation marker's search for kept keys reads at most.
const SCAN_BUDGET: u32 = 64;

/// [`GENERATION_LUA`] with its constants.
fn generation_function() -> String {
    GENERATION_LUA
        .replace("SCAN_BUDGET", &SCAN_BUDGET.to_string())
        .replace("KEPT", &format!("'{KEPT}'"))
}

/// The generation script: the [`GENERATION_LUA`] function alone. `KEYS`: the marker.
/// `ARGV`: the value for a new marker. Returns the marker's value.
pub(crate) fn generation_lua() -> String {
    format!(
        "{}return generation(KEYS[1], ARGV[1])\n",
        generation_function()
    )
}

/// The publish script; see the [module docs](super#publishing).
///
/// `KEYS`: the history, the publish marks (a hash: node → the last publish counter of that node
/// that ran and when the mark may be forgotten), for a publish into a thread the thread
/// snapshots (a hash) and the threads' recency (a sorted set), and last the generation marker.
/// `ARGV`: feed, head, keep, slack, ttl ms, node, counter, max age ms (0: none), thread (`''`:
/// none), max threads, how long the node's mark must be kept (ms: its retries' window and a
/// margin), the value for a new generation marker, and `1` for a retry (else `0`): a retry
/// whose mark does not say it ran (Redis evicted the marks) still finds its event in the
/// history by its token, while the history holds it, and is not stored again.
/// Returns `false` (nothing stored), or `{id, nodes}`, or `{id, nodes, 1}` when the publish had
/// already run (a retry; `id` is `''` if the history no longer holds it); a `NOPERM` error,
/// having written nothing, if the node's Redis user may not `PUBLISH` to the feed (an ACL).
pub(crate) fn publish_lua() -> String {
    format!("{}{PUBLISH_BODY_LUA}", generation_function())
}

const PUBLISH_BODY_LUA: &str = r"
-- A Redis user whose ACL does not grant the feed's channel would store the event, then fail at
-- its PUBLISH: refused before anything is written, an error reply means nothing was stored.
if not redis.acl_check_cmd('PUBLISH', ARGV[1]) then
  return redis.error_reply('NOPERM this user has no permissions to PUBLISH to ' .. ARGV[1])
end
generation(KEYS[#KEYS], ARGV[12])
local feed, node, counter = ARGV[1], ARGV[6], tonumber(ARGV[7])
local thread = ARGV[9]
local token = node .. ':' .. ARGV[7]
local seen = redis.call('HGET', KEYS[2], node)
local ran = seen and tonumber(string.match(seen, '^(%d+)')) >= counter
-- A retry whose mark went (evicted) looks for its event in the history too.
if ran or ARGV[13] == '1' then
  local recent = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', tonumber(ARGV[3]) + tonumber(ARGV[4]))
  local nodes = redis.call('PUBSUB', 'NUMSUB', feed)[2]
  for _, entry in ipairs(recent) do
    if entry[2][4] == token then return {entry[1], nodes, 1} end
  end
  if ran then return {'', nodes, 1} end
end
local nodes = redis.call('PUBSUB', 'NUMSUB', feed)[2]
if redis.call('EXISTS', KEYS[1]) == 0 then
  if nodes == 0 and thread == '' then return false end
  local marker = redis.call('XADD', KEYS[1], '*', 'f', '')
  redis.call('XDEL', KEYS[1], marker)
end
local id, ordinal
if thread == '' then
  id = redis.call('XADD', KEYS[1], '*', 'f', ARGV[2], 't', token)
else
  ordinal = redis.call('HINCRBY', KEYS[3], 'n:' .. thread, 1)
  -- The thread's first event says so in its entry (field `s`): a read of a thread whose keys
  -- went finds where it starts in the history.
  if ordinal == 1 then
    id = redis.call('XADD', KEYS[1], '*', 'f', ARGV[2], 't', token, 'h', thread, 's', '1')
  else
    id = redis.call('XADD', KEYS[1], '*', 'f', ARGV[2], 't', token, 'h', thread)
  end
  if ordinal == 1 then
    local max = tonumber(ARGV[10])
    local count = redis.call('ZCARD', KEYS[4])
    if count >= max then
      local gone = redis.call('ZPOPMIN', KEYS[4], count - max + 1)
      for i = 1, #gone, 2 do
        redis.call('HDEL', KEYS[3], 'n:' .. gone[i], 's:' .. gone[i], 'r:' .. gone[i])
      end
    end
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    local before
    if seq == '0' then before = string.format('%d-18446744073709551615', tonumber(ms) - 1)
    else before = ms .. '-' .. string.format('%d', tonumber(seq) - 1) end
    redis.call('HSET', KEYS[3], 's:' .. thread, before .. ' 0\n')
    redis.call('HDEL', KEYS[3], 'r:' .. thread)
  end
  redis.call('ZADD', KEYS[4], tonumber(string.match(id, '^(%d+)-')), thread)
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
local keep = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
if len > keep + tonumber(ARGV[4]) then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
  local ids = {}
  for i, entry in ipairs(old) do ids[i] = entry[1] end
  redis.call('XDEL', KEYS[1], unpack(ids))
end
-- By age, up to the first event published into a thread: a node that syncs the thread reads
-- its events after its snapshot, which is written every `keep / 2` events, not by time, so a
-- slow run's events must stay until the length trims them. Only the oldest entries go, still.
local age = tonumber(ARGV[8])
if age > 0 then
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - age
  if cutoff > 0 then
    local old = redis.call('XRANGE', KEYS[1], '-', string.format('(%d-0', cutoff), 'COUNT', 256)
    local ids = {}
    for _, entry in ipairs(old) do
      if entry[2][5] == 'h' then break end
      ids[#ids + 1] = entry[1]
    end
    if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
  end
end
-- A mark is `counter expiry-ms` (Redis time): it must outlive every retry of the node's
-- publishes, and only its node knows how long those last. Past 64 fields (nodes come and go:
-- a node's id is random per process), the expired marks are dropped, never a live one, which
-- a pending retry needs to run once. A mark of an older version, without an expiry, counts
-- as expired.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HLEN', KEYS[2]) >= 64 then
  local marks = redis.call('HGETALL', KEYS[2])
  local gone = {}
  for i = 1, #marks, 2 do
    if tonumber(string.match(marks[i + 1], '^%d+ (%d+)$') or '0') < now then
      gone[#gone + 1] = marks[i]
    end
  end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
  end
end
redis.call('HSET', KEYS[2], node, ARGV[7] .. ' ' .. string.format('%d', now + tonumber(ARGV[11])))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local meta = '\n'
if thread ~= '' then meta = ' ' .. ordinal .. ' ' .. #thread .. '\n' .. thread end
redis.call('PUBLISH', feed, token .. meta .. ARGV[2] .. 'id: ' .. id .. '\n\n')
return {id, nodes}
";

/// Compares two stream ids in Lua (as numbers of any length, written in decimal).
const CMPID_LUA: &str = r"
local function cmpnum(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function cmpid(x, y)
  local xm, xs = string.match(x, '^(%d+)-(%d+)$')
  local ym, ys = string.match(y, '^(%d+)-(%d+)$')
  local c = cmpnum(xm, ym)
  if c ~= 0 then return c end
  return cmpnum(xs, ys)
end
";

/// The thread catch-up script: creates the history if needed (as the catch-up script does),
/// refreshes its time to live, and returns `{last-generated-id, count, snapshot, events,
/// generation, from-before-loss}`: the number of events ever published into the thread, its
/// snapshot (`''`: none), the thread's entries after the snapshot's id, as `{id, head}`, the
/// generation marker they were read under, and 1 if the snapshot folds events from before
/// Redis started the thread over (field `r:<thread>`), else 0.
///
/// `KEYS`: the history, the thread snapshots, the generation marker. `ARGV`: ttl ms, thread,
/// the value for a new generation marker, and `1` to pass over a snapshot that does not fold
/// events from before Redis started the thread over (the reader kept the thread's state across
/// the loss, and continues it with the thread's every entry), else `0`. Such a snapshot is
/// passed over only when the history still holds every entry of the thread since Redis
/// started it over (at least as many as its count; more when Redis dropped the thread's keys
/// alone, and its entries from before are still there): otherwise it holds more of the thread
/// than the history does, and is returned (the reader cannot join its state, and reads the
/// most there is). A thread with no snapshot and fewer events counted than the history holds
/// (its keys went, evicted or forgotten, and nothing was published into it since) is read
/// from its newest first event (the entry the publish script marks `s`), the count being the
/// entries from there: the thread whole, which the reader folds as such; if the history no
/// longer holds any first event of it, the read is all its entries and stays incomplete.
/// Reads at most the whole history (bounded by the publish script's trimming), twice at most.
pub(crate) fn thread_lua() -> String {
    format!(
        "{}{CMPID_LUA}{}",
        generation_function(),
        r"
local marker = generation(KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local marker = redis.call('XADD', KEYS[1], '*', 'f', '')
  redis.call('XDEL', KEYS[1], marker)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local thread = ARGV[2]
local function after(from)
  local mine, start = {}, 0
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], from, '+')) do
    local fields = entry[2]
    for i = 5, #fields, 2 do
      if fields[i] == 'h' and fields[i + 1] == thread then
        mine[#mine + 1] = {entry[1], fields[2]}
        if fields[i + 2] == 's' then start = #mine end
        break
      end
    end
  end
  return mine, start
end
local count = tonumber(redis.call('HGET', KEYS[2], 'n:' .. thread) or '0')
local snapshot = redis.call('HGET', KEYS[2], 's:' .. thread)
local before = tonumber(redis.call('HGET', KEYS[2], 'r:' .. thread) or '0')
if snapshot and before == 0 and ARGV[4] == '1' then
  local all = after('-')
  if #all >= count then return {last, count, '', all, marker, 0} end
end
if not snapshot then
  local all, start = after('-')
  -- The thread's keys went (evicted, or the thread forgotten) and nothing was published into
  -- it since: the history holds the thread whole from its newest first event, if it still
  -- holds that one (only the oldest entries are trimmed), and what precedes it is of an
  -- earlier thread of that name.
  if #all > count and start > 0 then
    local whole = {}
    for i = start, #all do whole[#whole + 1] = all[i] end
    return {last, #whole, '', whole, marker, 0}
  end
  return {last, count, '', all, marker, 0}
end
local covers = string.match(snapshot, '^(%S+)')
if cmpid(covers, last) >= 0 then return {last, count, snapshot, {}, marker, before} end
return {last, count, snapshot, after('(' .. covers), marker, before}
"
    )
}

/// The snapshot script: stores a thread's snapshot if the thread is known (a publish counted
/// it) and the snapshot outranks the one stored: it folds events from before Redis started the
/// thread over (after a loss) and the stored one does not, or both do or neither, and it is
/// newer. `KEYS`: the thread snapshots. `ARGV`: thread, the id it covers, the snapshot
/// (`<id> <count>\n<opening>`), ttl ms, `1` if it folds events from before Redis started the
/// thread over, else `0` (kept in the field `r:<thread>`). Returns 1 if stored, 0 if not, 2 if
/// not because the stored one folds events from before and this one does not.
pub(crate) fn snapshot_lua() -> String {
    format!(
        "{CMPID_LUA}{}",
        r"
if redis.call('HEXISTS', KEYS[1], 'n:' .. ARGV[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 's:' .. ARGV[1])
local before = tonumber(ARGV[5])
local held = tonumber(redis.call('HGET', KEYS[1], 'r:' .. ARGV[1]) or '0')
if current then
  if before < held then return 2 end
  if before == held and cmpid(string.match(current, '^(%S+)'), ARGV[2]) >= 0 then return 0 end
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[3])
if before == 1 then redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], 1)
else redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"
    )
}

/// The catch-up script: creates the history if needed (with its deleted marker), refreshes its
/// time to live, and returns `{last-generated-id, resumable-after, events}`.
///
/// `KEYS`: the history, the generation marker. `ARGV`: ttl ms, the client's id (`''`: none),
/// max events, max bytes, max age ms (0: none), the value for a new generation marker.
/// The events after the client's id are read only when they can be replayed: the id is within
/// the history (the deleted marker, or an entry the stream still holds), and what follows it
/// fits the replay bounds (events, bytes, age) of the channel. When it does not, the second
/// value is newer than the client's id (the first event the client lacks, or the last id when
/// the client's own entry is gone: a history restored without its tail), so that the client
/// resumes as `expired`; nothing is read beyond the bounds.
pub(crate) fn history_lua() -> String {
    format!("{}{CMPID_LUA}{HISTORY_BODY_LUA}", generation_function())
}

const HISTORY_BODY_LUA: &str = r"
generation(KEYS[2], ARGV[6])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local marker = redis.call('XADD', KEYS[1], '*', 'f', '')
  redis.call('XDEL', KEYS[1], marker)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local after = ARGV[2]
if after == '' or cmpid(after, last) >= 0 or cmpid(after, deleted) < 0 then
  return {last, deleted, {}}
end
-- Only the oldest entries are ever deleted, so every id issued after the deleted marker is
-- still there. One that is not was lost with the tail of the history (Redis restored from a
-- snapshot, or failed over to a lagging replica, then published again): what followed it is
-- unknown, so the client resumes as expired rather than skip the lost events silently.
if after ~= deleted and #redis.call('XRANGE', KEYS[1], after, after) == 0 then
  return {last, last, {}}
end
local max_events, max_bytes, age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local events = redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', max_events + 1)
if #events == 0 then return {last, deleted, events} end
local lost = #events > max_events
local bytes = 0
for _, entry in ipairs(events) do bytes = bytes + #entry[2][2] + #entry[1] + 6 end
if bytes > max_bytes then lost = true end
if age > 0 then
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - age
  local first = tonumber(string.match(events[1][1], '^(%d+)-'))
  if first < cutoff then lost = true end
end
if lost then return {last, events[1][1], {}} end
return {last, deleted, events}
";
