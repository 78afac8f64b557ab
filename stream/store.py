"""Redis adapter for the windows and the worker's counters.

One batch is one round trip: a pipeline of one Lua call per touched scope (each call stays inside
its scope's hash slot) plus one for the global counters. Each per-scope call is atomic and
idempotent per post id: a post id already in the scope's `seen` set is counted as a duplicate and
changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis
from redis.crc import key_slot

from stream.contracts import Post
from stream.redis_client import ReplicaWait, ScriptCall, is_cluster, run_scripts
from stream.keys import (
    BATCHES_KEY, CHANNELS_KEY, MODEL_EPOCHS_KEY, SCOPES_KEY, STATS_KEY, bucket_key, bucket_prefix, day_index_pattern, index_key, index_pattern, rollup_index_key,
    rollup_prefix, sample_key, scope_of_day_index, scope_of_index, seen_key,
)
from stream.windows import (
    Kept, Sample, WindowStats, aggregate, author_key, bucket_start, channel_member, is_pair_scope, kept_trim, matches_scope, pair_horizon, pair_scopes_for,
    scopes_for, text_key,
)

# Writes one or more scopes' windows, each scope's keys and arguments after the previous one's.
# A scope's KEYS: idx, seen, one index per roll-up level[, stats, scope registry, batch tokens,
# channel registry].
# Its ARGV: the bucket prefix; the numbers 'ttl trim-before keep seen-trim rows stats L', per
# roll-up level 'width ttl trim-before', then 'cap text-cap bucket-width' in one space-separated
# argument (keep: 1 to keep each bucket's extreme posts, not for the hidden pair scopes: nothing reads
# theirs; seen-trim: the dedupe window's edge; rows: how many posts follow; stats: 1 for `all`, which
# alone passes the last four keys; cap, text-cap: posts an author, and a text, count per label and
# event-time hour, 0 for no cap); each level's key prefix; for `all` alone the watermark,
# counters (JSON), partition watermarks (JSON), wall-clock now, the batch's scopes (JSON {scope:
# newest event time}), the partitions' lags (JSON), the trim line before any hold and the channel
# registry's entries (JSON list, empty without grouping); then one argument per post (`_packed_row`):
# 'bucket label score ts score² author text idbytes ' then the id and the text. Each argument and each command costs the client its
# packing in Python, so the numbers travel together and scopes share calls (`WindowStore._apply_calls`).
# A scope's trim-before is its own (what readers still need holds it back: windows.Kept); `all`
# also passes the batch's trim line before any such hold (`line`, after its lags), which is what the
# stats' `trimmed`, the scope registry and the batch tokens go by.
# The stats, scope-registry, batch-token and channel-registry keys live in the `all` scope's slot, so the batch's
# counters, duplicates, watermarks and scopes move atomically with its windows. The reply is the
# last scope's: (added, duplicates), and for `all` also the stored watermark, the stats fields
# windows.frontier reads (pwm:<p>, pseen:<p>, plag:<p>, pwm_since) with `trimmed`, and how many of
# the batch's posts their author's cap, and their text's, kept out of `all`.
# The caps (windows.author_key, SENTINEL_AUTHOR_CAP; windows.text_key, SENTINEL_TEXT_CAP): per scope,
# event-time hour and label, a post is counted iff it is among the first `cap` posts of its author
# and among the first `text-cap` posts of its text, by (event time, id) among all posts, whatever
# order they arrive in. Each author's and each text's first posts are kept in a hash per hour
# (keys.cap_cells_prefix, derived from the bucket prefix here); an earlier post that arrives late
# pushes the latest one out of its lists, and if that one counted it is taken back out of its
# bucket and roll-ups. Only a post later than the one arriving is ever taken out, and a later post
# sits in a boundary judging has not reached yet (every partition must be past it), so the records
# are the same in any arrival order.
# The counters JSON may carry `batch`, a token that makes a batch written twice count once.
_APPLY_SCOPES = """
-- One scope: its keys from KEYS[k], its arguments from ARGV[a]. Returns its reply and where the
-- next scope's keys and arguments start.
local function apply_scope(k, a)
  local idx, seen, prefix = KEYS[k], KEYS[k + 1], ARGV[a]
  local nums = {}
  for word in string.gmatch(ARGV[a + 1], '%S+') do nums[#nums + 1] = tonumber(word) end
  local ttl, trim_before, keep_samples, seen_trim, nrows = nums[1], nums[2], nums[3] == 1, nums[4], nums[5]
  local levels = {}
  for l = 1, nums[7] do
    local n = 7 + (l - 1) * 3
    levels[l] = {index = KEYS[k + 1 + l], prefix = ARGV[a + 1 + l], width = nums[n + 1], ttl = nums[n + 2], trim = nums[n + 3], sums = {}}
  end
  local caps_at = 8 + 3 * nums[7]
  local cap, text_cap, bucket_s = nums[caps_at] or 0, nums[caps_at + 1] or 0, nums[caps_at + 2]
  local cells, cells_idx
  if cap > 0 or text_cap > 0 then
    local base = string.sub(prefix, 1, -3)  -- 'sentinel:{<scope>}:' (the bucket prefix ends 'b:')
    cells, cells_idx = base .. 'cc:', base .. 'ccells'
  end
  local stats, registry, batches, channels
  if nums[6] == 1 then
    stats, registry, batches, channels = KEYS[k + 2 + #levels], KEYS[k + 3 + #levels], KEYS[k + 4 + #levels], KEYS[k + 5 + #levels]
  end
  -- `all` alone: watermark, counters, partition watermarks, now, scopes, lags, line, channel entries
  local extra = a + 2 + #levels
  local first_row = stats and extra + 8 or extra
  local line = stats and tonumber(ARGV[extra + 6]) or trim_before
  local next_k, next_a = k + 2 + #levels + (stats and 4 or 0), first_row + nrows
  local added, dups, first, capped, text_capped = 0, 0, nil, 0, 0
  -- Roll-ups: hourly (the console's overview reads 26 of them per scope, not 1,560 buckets)
  -- and daily (`sentinel report`; they outlive the buckets). Summed here and written once per
  -- slot below: a batch's posts mostly share one hour and one day.
  local function roll(bucket, label, s, sq, sign)
    for _, level in ipairs(levels) do
      local slot = math.floor(tonumber(bucket) / level.width) * level.width
      local acc = level.sums[slot]
      if acc == nil then
        acc = {n = 0, positive = 0, negative = 0, neutral = 0, score_sum = 0, score_sq = 0}
        level.sums[slot] = acc
      end
      acc.n = acc.n + sign
      acc[label] = (acc[label] or 0) + sign
      acc.score_sum = acc.score_sum + sign * s
      acc.score_sq = acc.score_sq + sign * tonumber(sq)
    end
  end
  -- A counted post taken back out (a cap): its bucket and roll-ups lose it. A sample it is stays
  -- one (samples are drawn from every post, below). The cells keep only its time, score and id:
  -- the bucket is its time's (windows.bucket_start: ts - fmod(ts, width) is exact, as Python's //
  -- is), its square is the score's (the same double Python squared), its label its list's.
  -- A field taken back to 0 goes, and with the bucket's last counted post its sums go too (their
  -- last bits are not 0 again): the bucket is then field for field what a write that never counted
  -- those posts leaves, not only equal as counts. The roll-ups need no such care: a label's first
  -- post of an hour is first in both its lists, so it counts, and no roll-up holding it ends at 0.
  local function uncount(e, label)
    local s = tonumber(e.score)
    local bucket = string.format('%d', e.t - math.fmod(e.t, bucket_s))
    local key = prefix .. bucket
    local n = redis.call('HINCRBY', key, 'n', -1)
    if redis.call('HINCRBY', key, label, -1) == 0 then redis.call('HDEL', key, label) end
    if n == 0 then
      redis.call('HDEL', key, 'n', 'score_sum', 'score_sq')
    else
      redis.call('HINCRBYFLOAT', key, 'score_sum', string.format('%.17g', -s))
      redis.call('HINCRBYFLOAT', key, 'score_sq', string.format('%.17g', -(s * s)))
    end
    roll(bucket, label, s, s * s, -1)
  end
  -- A cell's list: the first posts by (event time, id) of one author's or one text's posts of one
  -- label in one hour, all of them, counted or not, each 'ts score ref idbytes ' then the id. `ts`
  -- is seconds into the cell's hour, as few digits as give the same double back (t - hour and hour
  -- + that are exact: both are under 2^53 and within a factor of two of each other); `ref` is the
  -- post's other key ('-': none), its text key in an author's list and its author key in a
  -- text's, so a post pushed out of one list can be looked up in the other. A text's list keeps a
  -- post's score only where no author's list does ('-' otherwise): the cells are kept as long as
  -- the post ids, so every byte of an entry is paid per post and scope for the dedupe window.
  local function entries(value, hour)
    local out, p = {}, 1
    while value and p <= #value do
      local t, sc, ref, n, at = string.match(value, '^(%S+) (%S+) (%S+) (%d+) ()', p)
      out[#out + 1] = {ts = t, t = hour + tonumber(t), score = sc, ref = ref, id = string.sub(value, at, at + tonumber(n) - 1)}
      p = at + tonumber(n)
    end
    return out
  end
  local function packed(list)
    local parts = {}
    for j, x in ipairs(list) do parts[j] = string.format('%s %s %s %d ', x.ts, x.score, x.ref, #x.id) .. x.id end
    return table.concat(parts)
  end
  local function shortest(d)
    for digits = 4, 17 do
      local text = string.format('%.' .. digits .. 'g', d)
      if tonumber(text) == d then return text end
    end
  end
  local function find(list, id)
    for _, x in ipairs(list) do if x.id == id then return x end end
    return nil
  end
  local function earlier(x, y) return x.t < y.t or (x.t == y.t and x.id < y.id) end
  -- Whether `e` is among a list's first `n` (it goes in), and the post it pushes out of it.
  local function admits(list, n, e)
    if #list < n then return true, nil end
    local last = list[#list]
    if earlier(e, last) then return true, last end
    return false, nil
  end
  local function inserted(list, n, e)
    local at = #list + 1
    while at > 1 and earlier(e, list[at - 1]) do at = at - 1 end
    table.insert(list, at, e)
    if #list > n then table.remove(list) end
    return list
  end
  local touched = {}  -- the hours whose cells this call wrote: their expiry and index, once each
  -- The caps (SENTINEL_AUTHOR_CAP, SENTINEL_TEXT_CAP): a post counts iff it is among the first `cap`
  -- of its author's posts and among the first `text_cap` of its text's, per label and hour, by
  -- (event time, id) among all posts, counted or not. That depends on the set of posts alone, not
  -- their order: an arrival can only push later posts out of lists, and a post pushed out that
  -- counted (it was in both) is taken back out here. Per label, so an author's morning chatter
  -- never uses up the posts that count when they turn. Fields: '<author key>:<label's first three
  -- letters>' and 't<text key>:<the same>'.
  local function within_caps(akey, tkey, e)
    local lab = string.sub(e.label, 1, 3)
    local afield = cap > 0 and akey ~= '-' and akey .. ':' .. lab or nil
    local tfield = text_cap > 0 and tkey ~= '-' and 't' .. tkey .. ':' .. lab or nil
    if not afield and not tfield then return true end
    local h = math.floor(e.t / 3600) * 3600
    local hour = string.format('%d', h)
    local cell = cells .. hour
    e.ts = shortest(e.t - h)
    local alist = afield and entries(redis.call('HGET', cell, afield), h) or {}
    local tlist = tfield and entries(redis.call('HGET', cell, tfield), h) or {}
    local in_a, out_a, in_t, out_t = true, nil, true, nil
    if afield then
      if #alist >= cap then capped = capped + 1 end  -- this post or the one it pushes out: one over
      in_a, out_a = admits(alist, cap, e)
    end
    if tfield then
      if #tlist >= text_cap then text_capped = text_capped + 1 end
      in_t, out_t = admits(tlist, text_cap, e)
    end
    -- A post pushed out of one list counted iff it was also in its other one, as the lists stood
    -- before this post (read before the writes below: its other list may be this post's own).
    local function in_texts(x)
      if text_cap == 0 or x.ref == '-' then return true end
      return find(entries(redis.call('HGET', cell, 't' .. x.ref .. ':' .. lab), h), x.id) ~= nil
    end
    -- For a text's entry: its author's entry, which has the score; itself where it has no author
    -- (or was written while the author cap was off, and has its score); nil where it is not in
    -- its author's list.
    local function in_authors(x)
      if x.ref == '-' then return x end
      return find(entries(redis.call('HGET', cell, x.ref .. ':' .. lab), h), x.id)
    end
    if out_a and out_t and out_a.id == out_t.id then
      uncount(out_a, e.label)  -- the same post out of both: it was in both, so it counted, once
    else
      if out_a and in_texts(out_a) then uncount(out_a, e.label) end
      local counted = out_t and in_authors(out_t)
      if counted then uncount(counted, e.label) end
    end
    if in_a and afield then
      e.ref = tfield and tkey or '-'
      redis.call('HSET', cell, afield, packed(inserted(alist, cap, e)))
      touched[hour] = true
    end
    if in_t and tfield then
      local entry = {ts = e.ts, t = e.t, score = afield and '-' or e.score, ref = afield and akey or '-', id = e.id}
      redis.call('HSET', cell, tfield, packed(inserted(tlist, text_cap, entry)))
      touched[hour] = true
    end
    return in_a and in_t
  end
  for i = first_row, next_a - 1 do
    local row = ARGV[i]
    local bucket, label, score, ts, sq, akey, tkey, idlen, at = string.match(row, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%d+) ()')
    local id = string.sub(row, at, at + tonumber(idlen) - 1)
    if redis.call('ZADD', seen, 'NX', ts, id) == 1 then
      local key, s = prefix .. bucket, tonumber(score)
      if cells == nil or within_caps(akey, tkey, {t = tonumber(ts), score = score, label = label, id = id}) then
        redis.call('HINCRBY', key, 'n', 1)
        redis.call('HINCRBY', key, label, 1)
        redis.call('HINCRBYFLOAT', key, 'score_sum', score)
        redis.call('HINCRBYFLOAT', key, 'score_sq', sq)
        roll(bucket, label, s, sq, 1)
      end
      -- The bucket's most negative and most positive post, for the samples an alert shows; ties go
      -- to the smaller id so the choice never depends on arrival order. Among all the bucket's posts,
      -- those over their author's cap too: which of an author's posts count depends on what has
      -- arrived, and a sample taken back out could not be replaced (no other text is kept).
      if keep_samples then
        local ext = redis.call('HMGET', key, 'lo_score', 'lo_id', 'hi_score', 'hi_id')
        local lo, hi = tonumber(ext[1]), tonumber(ext[3])
        -- The texts go in keys of their own (keys.sample_key): in the hash, one value over 64 bytes
        -- would make Redis store the whole bucket as a hash table, several times its compact size.
        if lo == nil or s < lo or (s == lo and id < ext[2]) then
          redis.call('HSET', key, 'lo_score', score, 'lo_id', id, 'lo_label', label)
          redis.call('SET', key .. ':lo', string.sub(row, at + tonumber(idlen)), 'EX', ttl)
        end
        if hi == nil or s > hi or (s == hi and id < ext[4]) then
          redis.call('HSET', key, 'hi_score', score, 'hi_id', id, 'hi_label', label)
          redis.call('SET', key .. ':hi', string.sub(row, at + tonumber(idlen)), 'EX', ttl)
        end
      end
      redis.call('EXPIRE', key, ttl)
      redis.call('ZADD', idx, bucket, bucket)
      if stats then redis.call('HINCRBY', stats, 'label:' .. label, 1) end
      local t = tonumber(ts)
      if first == nil or t < first then first = t end
      added = added + 1
    else
      dups = dups + 1
    end
  end
  for _, level in ipairs(levels) do
    for slot, acc in pairs(level.sums) do
      local rkey, member = level.prefix .. string.format('%d', slot), string.format('%d', slot)
      for _, field in ipairs({'n', 'positive', 'negative', 'neutral'}) do
        if acc[field] ~= 0 then redis.call('HINCRBY', rkey, field, acc[field]) end
      end
      redis.call('HINCRBYFLOAT', rkey, 'score_sum', string.format('%.17g', acc.score_sum))
      redis.call('HINCRBYFLOAT', rkey, 'score_sq', string.format('%.17g', acc.score_sq))
      redis.call('EXPIRE', rkey, level.ttl)
      redis.call('ZADD', level.index, member, member)
    end
  end
  -- Post ids need keeping only as long as a post can still arrive on time (the dedupe window), which
  -- may be shorter than the buckets' retention: at 6 scopes a post they are most of a dense store.
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. seen_trim)
  -- An hour's cap cells go once all of it is behind the dedupe window's edge, with the post ids:
  -- a post of it could still be accepted until then, and without its hour's cell it would count
  -- whatever the caps (and unlike the same post arriving earlier).
  if cells then
    for hour in pairs(touched) do
      redis.call('EXPIRE', cells .. hour, ttl)
      redis.call('ZADD', cells_idx, hour, hour)
    end
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', cells_idx, '-inf', seen_trim - 3600)) do redis.call('DEL', cells .. old) end
    redis.call('ZREMRANGEBYSCORE', cells_idx, '-inf', seen_trim - 3600)
    if added > 0 then redis.call('EXPIRE', cells_idx, ttl) end
  end
  -- Buckets that fell out of retention (in event time) go now, not when their wall-clock TTL ends,
  -- so replaying a long history keeps only the retention's worth of buckets.
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. trim_before)) do
    redis.call('DEL', prefix .. old, prefix .. old .. ':lo', prefix .. old .. ':hi')
  end
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. trim_before)
  for _, level in ipairs(levels) do
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', level.index, '-inf', '(' .. level.trim)) do
      redis.call('DEL', level.prefix .. old)
    end
    redis.call('ZREMRANGEBYSCORE', level.index, '-inf', '(' .. level.trim)
  end
  if added > 0 then
    redis.call('EXPIRE', seen, ttl)
    redis.call('EXPIRE', idx, ttl)
    for _, level in ipairs(levels) do redis.call('EXPIRE', level.index, level.ttl) end
  end
  if registry then
    -- The scopes and their newest post: listing scopes reads this, not a SCAN of every bucket key.
    for scope, newest in pairs(cjson.decode(ARGV[extra + 4])) do redis.call('ZADD', registry, 'GT', newest, scope) end
    redis.call('ZREMRANGEBYSCORE', registry, '-inf', '(' .. line)
    redis.call('EXPIRE', registry, 2 * ttl)
    -- Which sources each channel held posts of, per hour (windows.channel_member; grouping only).
    -- Kept from the hour before `all`'s own trim line: grouping reads whole hours around what `all`
    -- keeps for it.
    local entries = cjson.decode(ARGV[extra + 7])
    if #entries > 0 then
      for _, entry in ipairs(entries) do redis.call('ZADD', channels, tonumber(string.match(entry, '^(%d+)|')), entry) end
      redis.call('EXPIRE', channels, 2 * ttl)
    end
    -- Trimmed by every write, entries or not: the end of the input writes none (AlertEngine.trim_ended;
    -- without grouping the key does not exist, and this costs nothing).
    redis.call('ZREMRANGEBYSCORE', channels, '-inf', '(' .. (math.floor(trim_before / 3600) * 3600 - 3600))
  end
  if stats then
    local wm = tonumber(ARGV[extra])
    local old = tonumber(redis.call('HGET', stats, 'watermark') or '-1')
    if wm > old then redis.call('HSET', stats, 'watermark', ARGV[extra]) end
    -- The furthest any write has trimmed buckets (its trim-before): a post before it is late
    -- (stream.processor), and a scope whose earliest bucket is at or before it may have lost older
    -- ones (judging.scope_history_start).
    if line > tonumber(redis.call('HGET', stats, 'trimmed') or '-1') then
      redis.call('HSET', stats, 'trimmed', string.format('%d', line))
    end
    -- A batch written again (its reply was lost, or its replicas were behind) counts once: its
    -- token (partition offsets) is remembered for the retention in event time, so the set holds a
    -- retention's worth of batches however fast a replay runs.
    local counters = cjson.decode(ARGV[extra + 1])
    local fresh = true
    if counters.batch then
      local at = wm >= 0 and wm or math.max(old, 0)
      fresh = redis.call('ZADD', batches, 'NX', at, counters.batch) == 1
      redis.call('ZREMRANGEBYSCORE', batches, '-inf', '(' .. line)
      redis.call('EXPIRE', batches, ttl)
      counters.batch = nil
    end
    if not fresh then counters, dups = {}, 0 end
    for name, value in pairs(counters) do
      if value ~= 0 then redis.call('HINCRBY', stats, name, value) end
    end
    -- Per-partition event-time watermarks (and when each last reported): alert judging
    -- judges a boundary only once every partition is past it.
    for partition, pwm in pairs(cjson.decode(ARGV[extra + 2])) do
      local field = 'pwm:' .. partition
      local prev = tonumber(redis.call('HGET', stats, field) or '-1')
      if tonumber(pwm) > prev then redis.call('HSET', stats, field, pwm) end
      redis.call('HSET', stats, 'pseen:' .. partition, ARGV[extra + 3])
      redis.call('HSETNX', stats, 'pwm_since', ARGV[extra + 3])
    end
    -- Each partition's consumer lag after the batch (plag:<p>; -1: not known, the last known one
    -- stays): a partition with posts left to read is not idle however long it goes unwritten
    -- (frontier). Not known is what a rebalance leaves until the next fetch, even where the worker
    -- keeps the partition; forgetting the backlog then would pass the partition after the short
    -- idle time, mid catch-up. A stale value is bounded by SENTINEL_ALERT_LAGGING_PARTITION.
    -- Every partition the batch read, posts or not: one whose last messages were all bad still
    -- says it has caught up.
    for partition, lag in pairs(cjson.decode(ARGV[extra + 5])) do
      if tonumber(lag) >= 0 then
        redis.call('HSET', stats, 'plag:' .. partition, string.format('%d', lag))
      end
    end
    if first ~= nil then
      local prev = tonumber(redis.call('HGET', stats, 'first_event') or '')
      if prev == nil or first < prev then redis.call('HSET', stats, 'first_event', string.format('%.6f', first)) end
    end
    if dups > 0 then redis.call('HINCRBY', stats, 'duplicates', dups) end
    if capped > 0 then redis.call('HINCRBY', stats, 'capped', capped) end
    if text_capped > 0 then redis.call('HINCRBY', stats, 'text_capped', text_capped) end
    if added > 0 then redis.call('HINCRBY', stats, 'processed', added) end
    redis.call('EXPIRE', stats, 2 * ttl)
    -- The stored watermark, then the fields judging's frontier reads (pwm:<p>, pseen:<p>, plag:<p>,
    -- pwm_since) and how far buckets were trimmed (trimmed) as field, value pairs, as stored
    -- (strings: Lua numbers reach the client as integers). The worker trims behind that frontier
    -- and the slowest partition's watermark (ApplyResult.low), and learns them here instead of in
    -- a round trip of its own.
    local stored, marks = '-inf', {}
    local fields = redis.call('HGETALL', stats)
    for f = 1, #fields, 2 do
      local name = fields[f]
      if name == 'watermark' then
        stored = fields[f + 1]
      elseif string.sub(name, 1, 4) == 'pwm:' or string.sub(name, 1, 6) == 'pseen:' or string.sub(name, 1, 5) == 'plag:'
          or name == 'pwm_since' or name == 'trimmed' then
        marks[#marks + 1] = name
        marks[#marks + 1] = fields[f + 1]
      end
    end
    return {added, dups, stored, marks, capped, text_capped}, next_k, next_a
  end
  return {added, dups}, next_k, next_a
end

local k, a, reply = 1, 1, nil
while k <= #KEYS do reply, k, a = apply_scope(k, a) end
return reply
"""

# KEYS: the index of each scope read. ARGV per scope: its bucket key prefix, the slice width, the
# number of runs, then (first, count) per run of consecutive slices. Sums each scope's buckets into
# slices server-side, so judging a day of history moves one string instead of 1,440 bucket hashes.
# Returns one string per scope: per run, the slices that have buckets as 'slot,n,positive,negative,
# neutral,score_sum,score_sq' joined by ';', the runs joined by '|'.
_READ_SLICES = """
local fields = {'n', 'positive', 'negative', 'neutral', 'score_sum', 'score_sq'}
local replies, at = {}, 1
for k, idx in ipairs(KEYS) do
  local prefix, width, nruns = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  local runs = {}
  for r = 1, nruns do
    local first, count = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    at = at + 2
    local sums, slots = {}, {}
    for _, b in ipairs(redis.call('ZRANGEBYSCORE', idx, first, '(' .. (first + width * count))) do
      local slot = math.floor((tonumber(b) - first) / width)
      local row = sums[slot]
      if row == nil then
        row = {0, 0, 0, 0, 0, 0}
        sums[slot] = row
        table.insert(slots, slot)
      end
      local v = redis.call('HMGET', prefix .. b, unpack(fields))
      for j = 1, 6 do row[j] = row[j] + (tonumber(v[j]) or 0) end
    end
    -- Only the slices that have buckets: a first judgement spans a day of mostly empty slices, and
    -- formatting thousands of zeros per scope is wasted.
    local out = {}
    for _, slot in ipairs(slots) do
      local row = sums[slot]
      local cells = {tostring(slot)}
      for j = 1, 6 do cells[j + 1] = string.format('%.17g', row[j]) end
      table.insert(out, table.concat(cells, ','))
    end
    table.insert(runs, table.concat(out, ';'))
  end
  -- One bulk string a scope: a reply of many elements costs far more to parse.
  replies[k] = table.concat(runs, '|')
end
return replies
"""

# Scopes a window-writing script call takes (`WindowStore._apply_calls`): Redis runs nothing else
# while a script runs, and at 300 x 100 a batch's 228 scopes took 12 ms of its time
# (docs/results/store_write_calls.json), so a call of 128 holds it about 6 ms.
APPLY_SCOPES_PER_CALL = 128

# One slice-reading script call reads scopes of one hash slot (all of them on one server) until it
# holds this many scopes or slices: many scopes a call save the client a command each (its packing
# and reply reading), and the cap keeps each call short (a scope's first judgement reads a day of
# slices).
READ_SCOPES_PER_CALL = 256
READ_SLICES_PER_CALL = 4096

# KEYS: a roll-up index. ARGV: roll-up prefix, slot width, first slot start, slot count. Each slot
# is one hash, so its fields go out as Redis holds them (no number formatting, the bulk of a summing
# script's time): rows 'slot,n,positive,negative,neutral,score_sum,score_sq' joined by ';'.
_READ_ROLLUP = """
local prefix, width, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- One flat list joined once: building each row by concatenation made a string per `..`.
local out, k = {}, 0
for _, slot in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], first, '(' .. (first + width * count))) do
  local v = redis.call('HMGET', prefix .. slot, 'n', 'positive', 'negative', 'neutral', 'score_sum', 'score_sq')
  out[k + 1] = string.format('%d', (tonumber(slot) - first) / width)
  for j = 1, 6 do out[k + 1 + j] = v[j] or '0' end
  k = k + 7
end
return table.concat(out, ',')
"""

COUNTERS = ("consumed", "valid", "dlq", "duplicates", "late_dropped", "ahead", "processed", "capped", "text_capped")
SAMPLE_TEXT_CHARS = 280  # post text kept for an alert's samples (per bucket: its two extremes only)
HOUR_S = 3600
DAY_S = 86400
DAY_RETENTION_S = 90 * DAY_S  # SENTINEL_REPORT_RETENTION's default


@dataclass
class _SliceRead:
    """One _READ_SLICES call being filled: its keys and arguments, which entries it reads, how many slices."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)
    slices: int = 0


def _to_table(sparse: str, count: int) -> np.ndarray:
    """Rows of (n, positive, negative, neutral, score_sum, score_sq), one per slice, from the
    read script's 'slot,values...' rows of the slices that have buckets (the rest are zeros)."""
    table = np.zeros((count, 6), dtype=np.float64)
    if sparse:
        rows = np.array([row.split(",") for row in sparse.split(";")], dtype=np.float64)
        table[rows[:, 0].astype(np.int64)] = rows[:, 1:]
    return table


def _flat_table(flat: str, count: int) -> np.ndarray:
    """`_to_table` for the roll-up script's reply: 'slot,n,...,score_sq' values in one comma list."""
    table = np.zeros((count, 6), dtype=np.float64)
    if flat:
        rows = np.array(flat.split(","), dtype=np.float64).reshape(-1, 7)
        table[rows[:, 0].astype(np.int64)] = rows[:, 1:]
    return table


def _packed_row(item: "Scored", bucket: int, capped: bool, text_capped: bool = False) -> str:
    """A post as one argument of the window script: its numbers, its author's key and its text's
    (`-`: none, or that cap off), then the id's length in UTF-8 bytes (Lua counts bytes), then the id
    and the text as they are, so neither needs escaping. Eight arguments a post and scope cost the
    client more than anything else in a write: redis-py encodes and packs each one in Python."""
    post = item.post
    author = (author_key(post) or "-") if capped else "-"
    text = (text_key(post.text) or "-") if text_capped else "-"
    return (f"{bucket} {item.label} {item.score!r} {post.created_at!r} {item.score * item.score!r} {author} {text} "
            f"{len(post.id.encode())} {post.id}{post.text[:SAMPLE_TEXT_CHARS]}")


def parse_stats(raw: Mapping[str, str]) -> dict[str, float]:
    """The stats hash (STATS_KEY) as numbers: counters are integers; watermarks, wall-clock marks
    and first_event are floats."""
    out: dict[str, float] = {name: 0 for name in COUNTERS}
    out.update({k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in raw.items()})
    return out


@dataclass(frozen=True)
class Scored:
    post: Post
    label: str
    score: float


@dataclass(frozen=True)
class ApplyResult:
    added: int  # posts newly counted (in scope `all`)
    duplicates: int
    watermark: float = float("-inf")  # the stored watermark after the write (every worker's newest post)
    # The stats fields windows.frontier reads (pwm:<p>, pseen:<p>, plag:<p>, pwm_since) and `trimmed`
    # (how far any write has trimmed buckets), after the write.
    marks: Mapping[str, float] = field(default_factory=dict)
    capped: int = 0  # posts of the batch over their author's hourly cap in `all` (not in its windows)
    text_capped: int = 0  # posts of the batch over their text's hourly cap in `all` (some over both)

    @property
    def low(self) -> float:
        """The slowest input partition's watermark after the write (-inf: none reported)."""
        return min((v for k, v in self.marks.items() if k.startswith("pwm:")), default=float("-inf"))


# KEYS: the model epochs. ARGV: the entry, the newest entry expected ('' = none), how many to keep.
# Returns 1 when appended, 0 when another worker appended first.
_APPEND_EPOCH = """
local newest = redis.call('LINDEX', KEYS[1], -1) or ''
if newest ~= ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
return 1
"""
MAX_EPOCHS = 16  # model epochs kept: judging reads the newest alone, the rest say what ran before


class WindowStore:
    def __init__(
        self, client: Any, *, bucket_s: int = 60, retention_s: int = 2 * 86400, pairs: bool = False,
        day_retention_s: int = DAY_RETENTION_S, replica_wait: ReplicaWait | None = None, dedupe_s: int | None = None,
        pair_retention_s: int | None = None, author_cap: int = 0, text_cap: int = 0,
    ):
        # A redis-py asyncio client, plain or cluster (redis_client.open_redis), made with
        # decode_responses=True: its replies are str, which redis-py's hints (bytes | str) cannot say.
        self.redis: Any = client
        self.replica_wait = replica_wait  # WAIT before a batch's offsets commit (SENTINEL_REDIS_WAIT_REPLICAS)
        self.pairs = pairs  # also write windows.pair_scopes_for (incident grouping reads them)
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        # How long post ids are kept, and so the lateness limit (SENTINEL_DEDUPE_WINDOW): a post
        # further behind its partition's watermark could not be told from a redelivery, so the
        # worker drops it.
        self.dedupe_s = retention_s if dedupe_s is None else dedupe_s
        if not 0 < self.dedupe_s <= retention_s:
            raise ValueError(f"the dedupe window ({self.dedupe_s} s) must be positive and within the retention ({retention_s} s)")
        # The hidden pair scopes are read only by incident grouping, over hours, not the retention
        # (SENTINEL_PAIR_RETENTION): their buckets and post ids go sooner.
        self.pair_retention_s = retention_s if pair_retention_s is None else min(pair_retention_s, retention_s)
        if self.pair_retention_s <= 0:
            raise ValueError(f"the pair retention ({self.pair_retention_s} s) must be positive")
        # Wall clock, renewed by every write: keys that are not per bucket (counters, registries, the
        # alert state) outlive the windows by a retention, and a deployment left idle cleans itself.
        self.idle_ttl_s = 2 * retention_s
        self.day_retention_s = day_retention_s  # daily roll-ups (sentinel report); 0: none
        # Posts one author counts per scope and event-time hour (SENTINEL_AUTHOR_CAP; 0: all): one
        # loud account, a bot or a troll, cannot make a swing or a spike on its own.
        if author_cap < 0:
            raise ValueError(f"the author cap ({author_cap}) must be 0 (none) or more")
        self.author_cap = author_cap
        # Posts one text counts per scope, label and event-time hour (SENTINEL_TEXT_CAP; 0: all): a
        # copy-paste raid from many fresh accounts, each under its author cap, counts as a few voices.
        if text_cap < 0:
            raise ValueError(f"the text cap ({text_cap}) must be 0 (none) or more")
        self.text_cap = text_cap
        self._apply_scopes = client.register_script(_APPLY_SCOPES)
        self._read_slices = client.register_script(_READ_SLICES)
        self._read_rollup = client.register_script(_READ_ROLLUP)
        self._append_epoch = client.register_script(_APPEND_EPOCH)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "WindowStore":
        return cls(aioredis.Redis.from_url(url, decode_responses=True), **kwargs)

    async def close(self) -> None:
        if self.replica_wait is not None:
            await self.replica_wait.close()
        await self.redis.aclose()

    async def replicated(self) -> bool:
        """Wait until every master's replicas hold this worker's writes so far; False when some
        master had fewer than asked at the timeout. True at once without a replica wait."""
        if self.replica_wait is None:
            return True
        return await self.replica_wait() >= self.replica_wait.replicas

    async def watermark(self) -> float:
        value = await self.redis.hget(STATS_KEY, "watermark")
        return float(value) if value is not None else float("-inf")

    async def stats(self) -> dict[str, float]:
        return parse_stats(await self.redis.hgetall(STATS_KEY))

    async def epochs(self) -> list[str]:
        """The model epochs as stored (MODEL_EPOCHS_KEY), oldest first: JSON, for stream/alerts/epochs.py."""
        return list(await self.redis.lrange(MODEL_EPOCHS_KEY, 0, -1))

    async def append_epoch(self, entry: str, newest: str | None) -> bool:
        """Append a model epoch if the newest is still `newest` (None: there is none), so two
        workers that start at once with the same new model append it once: the second re-reads
        and finds it. Kept without a TTL (a few entries, the last MAX_EPOCHS): an epoch must
        outlive an idle spell of the stream, or the next worker would take the old labels for its own."""
        return bool(await self._append_epoch(keys=[MODEL_EPOCHS_KEY], args=[entry, newest or "", str(MAX_EPOCHS)]))

    async def apply(
        self, scored: Sequence[Scored], counters: Mapping[str, int], watermark: float,
        partition_watermarks: Mapping[int, float] | None = None, batch: str | None = None, low: float | None = None,
        horizon: float | None = None, partition_lags: Mapping[int, int | None] | None = None, keep: Kept | None = None,
        trim: Iterable[str] = (),
    ) -> ApplyResult:
        """Write a batch's windows and counters in one round trip (duplicates and processed are
        counted here). With a `batch` token (its partition offsets), writing it again is harmless.
        `low` is the slowest input partition's watermark (ApplyResult.low of the last write; None:
        `watermark`, one partition): post ids are kept a dedupe window behind it.
        `horizon` is where buckets may go (windows.trim_horizon: a retention behind the slowest live
        partition; -inf: not known, nothing goes by event time), never later than a retention
        behind `watermark`; None: that, for one input partition read in order. The caller judges
        lateness against the same horizon, so no post it admits is trimmed by its own write.
        `partition_lags`: each input partition the batch read, and the posts left to read on it
        after the batch (None: not known), stored as plag:<p> for windows.frontier.
        `keep`: how far back judging and grouping still read each scope (windows.Kept, from
        AlertEngine.kept): its buckets go no further, whatever the horizon.
        `trim`: scopes to trim as well, with no posts of the batch (the end of the input trims every
        scope: AlertEngine.settle)."""
        by_scope: dict[str, list[str]] = {scope: [] for scope in trim}
        newest: dict[str, float] = {}
        channels: set[str] = set()  # the channel registry's entries (grouping reads them)
        for item in scored:
            row = _packed_row(item, bucket_start(item.post.created_at, self.bucket_s), self.author_cap > 0, self.text_cap > 0)
            scopes = scopes_for(item.post)
            for scope in scopes + (pair_scopes_for(item.post) if self.pairs else []):
                by_scope.setdefault(scope, []).append(row)
            for scope in scopes:
                newest[scope] = max(newest.get(scope, item.post.created_at), item.post.created_at)
            member = channel_member(item.post) if self.pairs else None
            if member is not None:
                channels.add(member)
        all_rows = by_scope.pop("all", [])
        ttl = self.retention_s + self.bucket_s
        has_wm = watermark > float("-inf")
        edge = watermark - self.retention_s if horizon is None else min(horizon, watermark - self.retention_s)
        trims = has_wm and edge > float("-inf")
        # Whole buckets only: a post at or after the horizon keeps its bucket, however the minute falls.
        trim_before = bucket_start(edge, self.bucket_s) if trims else 0
        # Ids go a window behind the slowest partition (a redelivery on it is judged by its own
        # watermark), but never later than the buckets' horizon: a partition that went quiet (idle,
        # so the horizon passes it) holds them back that far at most. And never past the batch's own oldest post: a post on time where it
        # stood may sit further behind the batch's final watermark than the window, and if its id
        # went now, a retried write of this batch (a lost reply, a failover) would count it again.
        floor = watermark if low is None else min(watermark, low)
        oldest = min((item.post.created_at for item in scored), default=watermark)
        seen_edge = min(max(floor - self.dedupe_s, trim_before if trims else float("-inf")), oldest)
        seen_trim = int(seen_edge) if has_wm and seen_edge > float("-inf") else 0
        pwm = {str(p): repr(ts) for p, ts in (partition_watermarks or {}).items()}
        counted = {**counters, "batch": batch} if batch else dict(counters)
        lags = {str(p): -1 if lag is None else max(int(lag), 0) for p, lag in (partition_lags or {}).items()}
        stats_args = [repr(watermark) if has_wm else "-1", json.dumps(counted), json.dumps(pwm), repr(time.time()), json.dumps(newest),
                      json.dumps(lags), str(trim_before), json.dumps(sorted(channels))]
        keep = keep or Kept()
        # Pair scopes: their buckets a pair retention behind the slowest partition, and their ids
        # with them. An id may go before the batch's oldest post here: that post's pair bucket goes
        # too, so a retried write that counts it again leaves nothing behind.
        pair_trim = pair_horizon(watermark, floor, self.pair_retention_s, self.retention_s, horizon=trim_before) if trims else 0
        pair_trim = kept_trim(pair_trim, keep.pairs, self.bucket_s)
        # (level, width, ttl, trim-before); a slot is dropped only once all of it is out of retention.
        levels = [("h", HOUR_S, self.retention_s + HOUR_S, trim_before // HOUR_S * HOUR_S)]
        if self.day_retention_s:
            # A day retention behind the same floor the buckets' horizon trails (min(watermark, floor)).
            day_trim = int(edge + self.retention_s - self.day_retention_s) // DAY_S * DAY_S if trims else 0
            levels.append(("d", DAY_S, self.day_retention_s + DAY_S, day_trim))
        # The script's numbers (see _APPLY_SCOPES): 'ttl trim-before keep seen-trim', the scope's row
        # count and stats flag, then 'L' and each level's spec.
        caps = f"{self.author_cap} {self.text_cap} {self.bucket_s}"
        level_specs = " ".join(str(x) for x in (len(levels), *(v for _, *spec in levels for v in spec))) + f" {caps}"
        # Hidden pair scopes are never shown, reported or judged: no roll-ups and no samples.
        pair_head = f"{self.pair_retention_s + self.bucket_s} {pair_trim} 0 {max(seen_trim, pair_trim)}"

        def segment(scope: str, rows: list[str], *stats_keys: str) -> tuple[list[str], list[str]]:
            if is_pair_scope(scope):
                return [index_key(scope), seen_key(scope)], [bucket_prefix(scope), f"{pair_head} {len(rows)} 0 0 {caps}", *rows]
            head = f"{ttl} {kept_trim(trim_before, keep.line(scope), self.bucket_s)} 1 {seen_trim}"
            return ([index_key(scope), seen_key(scope), *(rollup_index_key(scope, name) for name, *_ in levels), *stats_keys],
                    [bucket_prefix(scope), f"{head} {len(rows)} {1 if stats_keys else 0} {level_specs}",
                     *(rollup_prefix(scope, name) for name, *_ in levels), *(stats_args if stats_keys else ()), *rows])

        # `all` goes last: once its watermarks are visible, every scope of the batch is written, so
        # a reader that trusts the watermarks never sees half a batch. One server runs a pipeline
        # in order; a cluster runs each node's part concurrently, so there `all` waits for the rest.
        last = segment("all", all_rows, STATS_KEY, SCOPES_KEY, BATCHES_KEY, CHANNELS_KEY)
        calls = self._apply_calls([segment(scope, rows) for scope, rows in by_scope.items()], last)
        if is_cluster(self.redis):
            await run_scripts(self.redis, calls[:-1])
            calls = calls[-1:]
        results = await run_scripts(self.redis, calls)
        added, dups, stored, flat, capped, text_capped = results[-1]
        marks = {name: float(value) for name, value in zip(flat[::2], flat[1::2])}
        return ApplyResult(added=int(added), duplicates=int(dups), watermark=float(stored), marks=marks, capped=int(capped),
                           text_capped=int(text_capped))

    def _apply_calls(self, segments: list[tuple[list[str], list[str]]], last: tuple[list[str], list[str]]) -> list[ScriptCall]:
        """Scopes share script calls, up to APPLY_SCOPES_PER_CALL a call: each call costs the
        client a command (redis-py's packing and reply reading in Python), and with hundreds of
        scopes a batch those were most of a write. On a cluster only scopes of one hash slot share
        a call; `last` (the `all` scope) ends the last call, alone on a cluster."""
        cluster = is_cluster(self.redis)
        filling: dict[int, list[tuple[list[str], list[str]]]] = {}
        groups: list[list[tuple[list[str], list[str]]]] = []
        for keys, args in segments:
            slot = key_slot(keys[0].encode()) if cluster else 0
            group = filling.get(slot)
            if group is None or len(group) >= APPLY_SCOPES_PER_CALL:
                group = filling[slot] = []
                groups.append(group)
            group.append((keys, args))
        if cluster or not groups or len(groups[-1]) >= APPLY_SCOPES_PER_CALL:
            groups.append([last])
        else:
            groups[-1].append(last)
        return [(self._apply_scopes, [key for keys, _ in group for key in keys], [arg for _, args in group for arg in args])
                for group in groups]

    async def slices(self, scope: str, first: int, width: int, count: int) -> np.ndarray:
        """The scope's buckets summed into `count` consecutive slices of `width` seconds from `first`:
        rows of (n, positive, negative, neutral, score_sum, score_sq)."""
        return (await self.slices_many([(scope, first, width, count)]))[0]

    async def slices_many(self, requests: Sequence[tuple[str, int, int, int]]) -> list[np.ndarray]:
        """Several `slices` calls in one round trip; consecutive requests for one scope and width
        share one scope's entry, and scopes share script calls (the commands, not the bytes, are what
        a pipeline pays for): on a cluster those of one hash slot, on one server any."""
        entries: list[tuple[str, int, list[tuple[int, int]]]] = []
        for scope, first, width, count in requests:
            if entries and entries[-1][:2] == (scope, width):
                entries[-1][2].append((first, count))
            else:
                entries.append((scope, width, [(first, count)]))
        cluster = is_cluster(self.redis)
        filling: dict[int, _SliceRead] = {}  # hash slot -> the call taking its scopes
        calls: list[_SliceRead] = []
        for i, (scope, width, runs) in enumerate(entries):
            key = index_key(scope)
            slot = key_slot(key.encode()) if cluster else 0
            slices = sum(count for _, count in runs)
            call = filling.get(slot)
            if call is None or len(call.keys) >= READ_SCOPES_PER_CALL or call.slices + slices > READ_SLICES_PER_CALL:
                call = filling[slot] = _SliceRead()
                calls.append(call)
            call.keys.append(key)
            call.args += [bucket_prefix(scope), width, len(runs), *(x for run in runs for x in run)]
            call.entries.append(i)
            call.slices += slices
        replies = await run_scripts(self.redis, [(self._read_slices, call.keys, call.args) for call in calls])
        found = [""] * len(entries)
        for call, reply in zip(calls, replies):
            for i, text in zip(call.entries, reply):
                found[i] = text
        return [_to_table(sparse, count) for text, (_, _, runs) in zip(found, entries)
                for sparse, (_, count) in zip(text.split("|"), runs)]

    async def days_many(self, requests: Sequence[tuple[str, int, int]]) -> list[np.ndarray]:
        """Daily roll-ups, one table per (scope, first day start, day count): rows of (n, positive,
        negative, neutral, score_sum, score_sq) per UTC day. They outlive the buckets."""
        return await self._rollups("d", DAY_S, requests)

    async def hours_many(self, requests: Sequence[tuple[str, int, int]]) -> list[np.ndarray]:
        """Hourly roll-ups, one table per (scope, first hour start, hour count): a day per scope
        costs 24 reads instead of 1,440 buckets."""
        return await self._rollups("h", HOUR_S, requests)

    async def _rollups(self, level: str, width: int, requests: Sequence[tuple[str, int, int]]) -> list[np.ndarray]:
        if not requests:
            return []
        replies = await run_scripts(self.redis, [
            (self._read_rollup, [rollup_index_key(scope, level)], [rollup_prefix(scope, level), width, first, count])
            for scope, first, count in requests
        ])
        return [_flat_table(reply, count) for reply, (_, _, count) in zip(replies, requests)]

    async def day_scopes(self, pattern: str = "*") -> list[str]:
        """Scopes with daily roll-ups (also those whose buckets are gone)."""
        found = set()
        async for key in self.redis.scan_iter(match=day_index_pattern(pattern), count=500):
            found.add(scope_of_day_index(key))
        return sorted(s for s in found if not is_pair_scope(s))

    async def extremes(self, scope: str, start: int, end: int) -> list[Sample]:
        """The most negative and most positive post of every bucket in [start, end)."""
        starts = await self.redis.zrangebyscore(index_key(scope), start, f"({end}")
        # `*_text` in the hash: buckets written before the texts had keys of their own.
        fields = ("lo_id", "lo_text", "lo_label", "lo_score", "hi_id", "hi_text", "hi_label", "hi_score")
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in starts:
                pipe.hmget(bucket_key(scope, int(b)), fields)
                pipe.get(sample_key(scope, int(b), "lo"))
                pipe.get(sample_key(scope, int(b), "hi"))
            replies = await pipe.execute() if starts else []
        found: dict[str, Sample] = {}
        for row, *texts in zip(replies[::3], replies[1::3], replies[2::3]):
            for i, text in zip((0, 4), texts):
                if row[i] is not None:
                    found[row[i]] = Sample(row[i], text or row[i + 1] or "", row[i + 2] or "", float(row[i + 3]))
        return sorted(found.values(), key=lambda s: (s.score, s.id))

    async def indexed_scopes(self) -> list[str]:
        """Every scope with buckets, the hidden pair scopes and scopes gone from the registry
        included: a SCAN of the index keys (it walks the whole keyspace; the end of a replay's
        input reads it once, AlertEngine.settle)."""
        return sorted({scope_of_index(key) async for key in self.redis.scan_iter(match=index_pattern("*"), count=1000)})

    async def newest_buckets(self, scopes: Sequence[str]) -> dict[str, float]:
        """Each scope's newest bucket start (a scope with none is left out), in one round trip."""
        if not scopes:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.zrange(index_key(scope), -1, -1, withscores=True)
            replies = await pipe.execute()
        return {scope: float(found[0][1]) for scope, found in zip(scopes, replies) if found}

    async def known_scopes(self, scopes: Iterable[str]) -> set[str]:
        """Which of `scopes` the registry holds (written within retention): the scopes a ScopeBudget
        never folds. One key, in the `all` slot: a Redis Cluster answers it from one node."""
        asked = sorted(set(scopes))
        if not asked:
            return set()
        scores = await self.redis.zmscore(SCOPES_KEY, asked)
        return {scope for scope, score in zip(asked, scores) if score is not None}

    async def scopes(self, pattern: str = "*") -> list[str]:
        """Scopes with posts within retention, from the registry the `all` script keeps; windows
        written before the registry existed are found by a SCAN of the index keys (slow with many
        buckets: it walks the whole keyspace)."""
        found = set(await self.redis.zrange(SCOPES_KEY, 0, -1)) or set(await self.indexed_scopes())
        return sorted(s for s in found if not is_pair_scope(s) and matches_scope(s, pattern))

    async def window(self, scope: str, window_s: int, end: float | None = None) -> WindowStats:
        """The window [end - window_s, end) over whole buckets; end defaults to the watermark."""
        if end is None:
            wm = await self.watermark()
            end = wm if wm > float("-inf") else 0
        end_bucket = bucket_start(end, self.bucket_s) + self.bucket_s
        start = end_bucket - window_s
        starts = await self.redis.zrangebyscore(index_key(scope), start, f"({end_bucket}")
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in starts:
                pipe.hgetall(bucket_key(scope, int(b)))
            buckets = await pipe.execute() if starts else []
        return aggregate(scope, window_s, end_bucket, buckets)


