//! The shared backend: Redis, for several gateway instances at once. Every step that touches more
//! than one key is one Lua script, so it is atomic, and lease times come from Redis's own clock
//! (`TIME`), so instances with skewed clocks agree on when a lease expired.
//!
//! Keys: `rp:idem:<scoped key>` (the record, a hash, expiring after the retention period),
//! `rp:payment:<id>` (the payment: a hash of its `version` and its JSON, so that a script checks
//! the version without decoding JSON), `rp:merchant:<id>` (sorted set of payment ids by creation
//! time) and `rp:due` (sorted set of the ids of payments due for the reconciler, by when).
//!
//! Events: `rp:event:<id>` (the event, expiring after the retention period), `rp:events:<merchant>`
//! and `rp:events_t:<type>:<merchant>` (sorted sets of event ids by creation time, trimmed to the
//! retention period), and the stream `rp:outbox`, one entry per event, which the gateway
//! instances read as one consumer group (`dispatch`) to fan events out to deliveries. Webhooks:
//! `rp:endpoints:<merchant>` (a hash of endpoints by id), `rp:deliveries:<event id>` (a hash of
//! the event's deliveries by endpoint id, each with its version under `<endpoint id>:v`) and
//! `rp:deliveries:due` (a sorted set of `<event id> <endpoint id>` by when each is due).
//!
//! The scripts take named arguments (`name, value, name, value, …`), read into a table `a`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::outbox::{EventFilter, EventPage, EventPager, LogEntry, Saved};
use super::{
    Claim, ClaimRequest, Commit, Committed, IdempotencyRecord, Pager, PaymentFilter, PaymentPage, RecordChange,
    RecordState, StoreError, StoredResponse, created_micros, due_ms,
};
use crate::model::webhook::{Delivery, Endpoint};
use crate::model::{Payment, StoredEvent};

/// Reads the named arguments, and writes a payment keeping both indexes in step, as
/// `store::rules::index_moves` says: listed under its merchant on its first write (`created_score`
/// is '' when it already is), on the due list exactly while due (`ZADD` and `ZREM` are idempotent,
/// so the script need not know where it stood).
const PUT_PAYMENT_FN: &str = r"
local a = {}
for i = 1, #ARGV, 2 do a[ARGV[i]] = ARGV[i + 1] end

local function put_payment(pay_key, merchant_key, due_key, id, version, json, created_score, due_score)
  redis.call('HSET', pay_key, 'v', version, 'json', json)
  if created_score ~= '' then
    redis.call('ZADD', merchant_key, created_score, id)
  end
  if due_score ~= '' then
    redis.call('ZADD', due_key, due_score, id)
  else
    redis.call('ZREM', due_key, id)
  end
end
";

/// Writes the events named `ev1_…`, `ev2_…` (`ev_n` of them): each kept for `ev_retention_ms`,
/// indexed under its merchant (all, and by type) and appended to the outbox stream; the indexes
/// and the stream drop what is older than the retention period (the listing skips an index entry
/// whose event expired before its trim).
const PUT_EVENTS_FN: &str = r"
local function put_events()
  local n = tonumber(a.ev_n or '0')
  local retention = tonumber(a.ev_retention_ms)
  for i = 1, n do
    local p = 'ev' .. i .. '_'
    local id, merchant, kind, created = a[p .. 'id'], a[p .. 'merchant'], a[p .. 'type'], tonumber(a[p .. 'created'])
    local horizon = created - retention
    redis.call('SET', 'rp:event:' .. id, a[p .. 'json'], 'PX', retention)
    -- The indexes and the stream are trimmed on about one write in 64 (by the event's time, so
    -- the same on every replica): what is past the horizon is dropped a little late, never early.
    local trim = created % 64 == 0
    for _, index in ipairs({'rp:events:' .. merchant, 'rp:events_t:' .. kind .. ':' .. merchant}) do
      redis.call('ZADD', index, created, id)
      if trim then redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. horizon) end
    end
    if trim then
      redis.call('XADD', 'rp:outbox', 'MINID', '~', tostring(math.max(horizon, 0)), '*', 'event', id)
    else
      redis.call('XADD', 'rp:outbox', '*', 'event', id)
    end
  end
end
";

/// The idempotency record is a hash (no JSON to decode or encode in Lua, and the stored answer's
/// body is only read for a replay). `load_record` also reads a record written by an earlier
/// version as one JSON string, and turns it into a hash with the same expiry. `now_ms` is the lease
/// clock the scripts share.
const RECORD_FN: &str = r"
-- Redis's own clock in ms, so that instances with skewed clocks agree on leases.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local RECORD_FIELDS = {'fingerprint', 'resource_id', 'owner', 'lease_until_ms', 'done', 'status'}
local function load_record(key)
  local v = redis.pcall('HMGET', key, unpack(RECORD_FIELDS))
  if v.err then
    local ttl = redis.call('PTTL', key)
    local old = cjson.decode(redis.call('GET', key))
    redis.call('DEL', key)
    redis.call('HSET', key, 'fingerprint', old.fingerprint, 'resource_id', old.resource_id, 'owner', old.owner or '',
               'lease_until_ms', old.lease_until_ms or 0, 'done', old.done and '1' or '0', 'status', old.status or 0,
               'body', old.body or '')
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    v = redis.call('HMGET', key, unpack(RECORD_FIELDS))
  end
  if not v[1] then return nil end
  return {fingerprint = v[1], resource_id = v[2], owner = v[3] or '', lease_until_ms = tonumber(v[4]) or 0,
          done = v[5] == '1', status = tonumber(v[6]) or 0}
end
";

/// KEYS: the record; and, with a payment to create, the payment, its merchant index, the due index.
/// Arguments: fingerprint, owner, lease_ms, retention_ms, resource_id; and for a new payment
/// json, id, version, created, due ('' when not due).
const CLAIM: &str = r"
local now = now_ms()
local record = load_record(KEYS[1])
if not record then
  redis.call('HSET', KEYS[1], 'fingerprint', a.fingerprint, 'resource_id', a.resource_id, 'owner', a.owner,
             'lease_until_ms', now + tonumber(a.lease_ms), 'done', '0', 'status', '0', 'body', '')
  redis.call('PEXPIRE', KEYS[1], a.retention_ms)
  if a.json then
    put_payment(KEYS[2], KEYS[3], KEYS[4], a.id, a.version, a.json, a.created, a.due)
    put_events()
  end
  return {'fresh'}
end
if record.fingerprint ~= a.fingerprint then return {'mismatch'} end
if record.done then return {'replay', tostring(record.status), redis.call('HGET', KEYS[1], 'body')} end
if record.lease_until_ms > now then return {'in_use', tostring(record.lease_until_ms - now)} end
redis.call('HSET', KEYS[1], 'owner', a.owner, 'lease_until_ms', now + tonumber(a.lease_ms))
return {'taken_over', record.resource_id}
";

/// The commit rule of `store::decide_commit`, in Lua.
/// KEYS: the payment, its merchant index, the due index; and the record, unless op is `keep`.
/// Arguments: op (`keep`, `finish` or `release`); for finish: resource_id, fingerprint (only
/// when the caller knows it), status, body, retention_ms; for release: resource_id, owner ('' for none); always: the payment's id,
/// version, json, created and due ('' when not due).
const COMMIT: &str = r"
local record_key = KEYS[4]
local record = nil
if record_key then record = load_record(record_key) end
local delete_record = false
if a.op == 'finish' then
  if record and record.resource_id ~= a.resource_id then return {'superseded'} end
elseif a.op == 'release' then
  if record and record.resource_id == a.resource_id and (not record.done or record.status == 202) then
    if not record.done and record.lease_until_ms > now_ms() and record.owner ~= a.owner then
      return {'refused'}
    end
    delete_record = true
  end
end
local stored = redis.call('HGET', KEYS[1], 'v')
if stored and tonumber(stored) + 1 ~= tonumber(a.version) then
  return {'conflict', redis.call('HGET', KEYS[1], 'json') or ''}
end
local fingerprint = a.fingerprint
if record then fingerprint = record.fingerprint end
if a.op == 'finish' and fingerprint then
  redis.call('HSET', record_key, 'fingerprint', fingerprint, 'resource_id', a.resource_id, 'owner', '',
             'lease_until_ms', '0', 'done', '1', 'status', a.status, 'body', a.body)
  redis.call('PEXPIRE', record_key, a.retention_ms)
elseif delete_record then
  redis.call('DEL', record_key)
end
local created = ''
if not stored then created = a.created end
put_payment(KEYS[1], KEYS[2], KEYS[3], a.id, a.version, a.json, created, a.due)
put_events()
return {'written'}
";

/// The record and its remaining lifetime, in one round trip. KEYS: record.
const READ_RECORD: &str = r"
local record = load_record(KEYS[1])
if not record then return {} end
return {record.fingerprint, record.resource_id, record.owner, tostring(record.lease_until_ms),
        record.done and '1' or '0', tostring(record.status), redis.call('HGET', KEYS[1], 'body') or '',
        tostring(redis.call('PTTL', KEYS[1]))}
";

/// Creates an event's deliveries that do not exist yet and acknowledges its outbox entry.
/// KEYS: the event's deliveries, the due index, the outbox. Arguments: group, entry,
/// retention_ms, event, n; and per delivery `d<i>_endpoint`, `d<i>_json`, `d<i>_due`.
const FAN_OUT: &str = r"
for i = 1, tonumber(a.n) do
  local p = 'd' .. i .. '_'
  local endpoint = a[p .. 'endpoint']
  if redis.call('HSETNX', KEYS[1], endpoint, a[p .. 'json']) == 1 then
    redis.call('HSET', KEYS[1], endpoint .. ':v', '1')
    redis.call('ZADD', KEYS[2], a[p .. 'due'], a.event .. ' ' .. endpoint)
  end
end
if tonumber(a.n) > 0 then redis.call('PEXPIRE', KEYS[1], a.retention_ms) end
if a.entry ~= '' then redis.call('XACK', KEYS[3], a.group, a.entry) end
return 'ok'
";

/// Takes up to `limit` deliveries due now (by Redis's clock), leasing each for `lease_ms` (its
/// version bumped). KEYS: the due index. Returns the lease's end, then json, version pairs.
const TAKE_DUE: &str = r"
local now = now_ms()
local lease_until = now + tonumber(a.lease_ms)
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(a.limit))
local out = {tostring(lease_until)}
for _, member in ipairs(members) do
  local space = string.find(member, ' ', 1, true)
  local hash = 'rp:deliveries:' .. string.sub(member, 1, space - 1)
  local endpoint = string.sub(member, space + 1)
  local json = redis.call('HGET', hash, endpoint)
  if json then
    local version = redis.call('HINCRBY', hash, endpoint .. ':v', 1)
    redis.call('ZADD', KEYS[1], lease_until, member)
    table.insert(out, json)
    table.insert(out, tostring(version))
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
";

/// Writes a delivery over the version it was derived from. KEYS: the event's deliveries, the
/// due index. Arguments: endpoint, json, version, due ('' once final), member.
const SAVE_DELIVERY: &str = r"
local stored = redis.call('HGET', KEYS[1], a.endpoint .. ':v')
if not stored or tonumber(stored) + 1 ~= tonumber(a.version) then
  return {'conflict', redis.call('HGET', KEYS[1], a.endpoint) or '', stored or '0'}
end
redis.call('HSET', KEYS[1], a.endpoint, a.json, a.endpoint .. ':v', a.version)
if a.due ~= '' then
  redis.call('ZADD', KEYS[2], a.due, a.member)
else
  redis.call('ZREM', KEYS[2], a.member)
end
return {'written'}
";

const DUE_KEY: &str = "rp:due";
const OUTBOX_KEY: &str = "rp:outbox";
const DELIVERIES_DUE_KEY: &str = "rp:deliveries:due";
/// The consumer group of the gateway instances that fan events out.
const GROUP: &str = "dispatch";
/// How many index entries one listing may walk through before giving up on finding more matches.
const MAX_SCAN: usize = 10_000;

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
    event_retention: Duration,
}

struct Scripts {
    claim: Script,
    commit: Script,
    read_record: Script,
    fan_out: Script,
    take_due: Script,
    save_delivery: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn record_key(key: &str) -> String {
    format!("rp:idem:{key}")
}

fn payment_key(id: &str) -> String {
    format!("rp:payment:{id}")
}

fn merchant_key(merchant: &str) -> String {
    format!("rp:merchant:{merchant}")
}

/// The named arguments `put_payment` takes (`created` is read only for a new payment).
fn payment_args(invocation: &mut redis::ScriptInvocation<'_>, payment: &Payment) -> Result<(), StoreError> {
    invocation
        .arg("json")
        .arg(serde_json::to_string(payment).map_err(corrupt)?)
        .arg("id")
        .arg(&payment.id)
        .arg("version")
        .arg(payment.version)
        .arg("created")
        .arg(created_micros(payment))
        .arg("due")
        .arg(due_ms(payment).map(|d| d.to_string()).unwrap_or_default());
    Ok(())
}

/// The named arguments `put_events` takes.
fn event_args(invocation: &mut redis::ScriptInvocation<'_>, events: &[StoredEvent], retention: Duration) {
    invocation.arg("ev_n").arg(events.len()).arg("ev_retention_ms").arg(retention.as_millis() as u64);
    for (i, event) in events.iter().enumerate() {
        let p = format!("ev{}_", i + 1);
        let json = serde_json::to_string(event).unwrap_or_default();
        invocation
            .arg(format!("{p}id"))
            .arg(&event.id)
            .arg(format!("{p}merchant"))
            .arg(&event.merchant_id)
            .arg(format!("{p}type"))
            .arg(event.kind.as_str())
            .arg(format!("{p}created"))
            .arg(event.created_ms)
            .arg(format!("{p}json"))
            .arg(json);
    }
}

fn event_key(id: &str) -> String {
    format!("rp:event:{id}")
}

fn deliveries_key(event_id: &str) -> String {
    format!("rp:deliveries:{event_id}")
}

fn endpoints_key(merchant: &str) -> String {
    format!("rp:endpoints:{merchant}")
}

/// A delivery read from its hash, with the version kept beside it.
fn delivery_of(json: &str, version: &str) -> Result<Delivery, StoreError> {
    let mut delivery: Delivery = serde_json::from_str(json).map_err(corrupt)?;
    delivery.version = version.parse().map_err(corrupt)?;
    Ok(delivery)
}

fn payment_keys(invocation: &mut redis::ScriptInvocation<'_>, payment: &Payment) {
    invocation.key(payment_key(&payment.id)).key(merchant_key(&payment.merchant_id)).key(DUE_KEY);
}

impl RedisStore {
    pub async fn connect(url: &str, event_retention: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        // Short timeouts: when Redis is gone, answer 503 quickly instead of holding requests.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        let script = |body: &str| Script::new(&format!("{PUT_PAYMENT_FN}\n{PUT_EVENTS_FN}\n{RECORD_FN}\n{body}"));
        let scripts = Scripts {
            claim: script(CLAIM),
            commit: script(COMMIT),
            read_record: script(READ_RECORD),
            fan_out: script(FAN_OUT),
            take_due: script(TAKE_DUE),
            save_delivery: script(SAVE_DELIVERY),
        };
        let store = Self { connection, scripts: std::sync::Arc::new(scripts), event_retention };
        store.create_group().await?;
        Ok(store)
    }

    /// Creates the outbox's consumer group (and the stream) unless it exists. It starts at the
    /// stream's beginning: every entry is fanned out once, even one written before the group.
    async fn create_group(&self) -> Result<(), StoreError> {
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(OUTBOX_KEY)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.connection.clone())
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(unavailable(error)),
            _ => Ok(()),
        }
    }

    pub async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation.key(record_key(request.key));
        if let Some(payment) = request.insert {
            payment_keys(&mut invocation, payment);
        }
        invocation
            .arg("fingerprint")
            .arg(request.fingerprint)
            .arg("owner")
            .arg(request.owner)
            .arg("lease_ms")
            .arg(request.lease.as_millis() as u64)
            .arg("retention_ms")
            .arg(request.retention.as_millis() as u64)
            .arg("resource_id")
            .arg(request.resource_id);
        if let Some(payment) = request.insert {
            payment_args(&mut invocation, payment)?;
            event_args(&mut invocation, request.events, self.event_retention);
        }
        let reply: Vec<String> = invocation.invoke_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        match reply.as_slice() {
            [fresh] if fresh == "fresh" => Ok(Claim::Fresh),
            [mismatch] if mismatch == "mismatch" => Ok(Claim::Mismatch),
            [replay, status, body] if replay == "replay" => {
                Ok(Claim::Replay(StoredResponse { status: status.parse().map_err(corrupt)?, body: body.clone() }))
            }
            [in_use, ms] if in_use == "in_use" => {
                Ok(Claim::InUse { retry_after: Duration::from_millis(ms.parse().map_err(corrupt)?) })
            }
            [taken, resource_id] if taken == "taken_over" => Ok(Claim::TakeOver { resource_id: resource_id.clone() }),
            other => Err(corrupt(format!("unexpected claim reply {other:?}"))),
        }
    }

    pub async fn commit(&self, commit: Commit<'_>) -> Result<Committed, StoreError> {
        let payment = commit.payment;
        let mut invocation = self.scripts.commit.prepare_invoke();
        payment_keys(&mut invocation, payment);
        if let Some(key) = commit.record.key() {
            invocation.key(record_key(key));
        }
        match commit.record {
            RecordChange::Keep => {
                invocation.arg("op").arg("keep");
            }
            RecordChange::Finish { resource_id, fingerprint, response, retention, .. } => {
                if let Some(fingerprint) = fingerprint {
                    invocation.arg("fingerprint").arg(fingerprint);
                }
                invocation
                    .arg("op")
                    .arg("finish")
                    .arg("resource_id")
                    .arg(resource_id)
                    .arg("status")
                    .arg(response.status)
                    .arg("body")
                    .arg(&response.body)
                    .arg("retention_ms")
                    .arg(retention.as_millis() as u64);
            }
            RecordChange::Release { resource_id, owner, .. } => {
                // No request ever names itself by the empty string, so '' never matches a holder.
                invocation
                    .arg("op")
                    .arg("release")
                    .arg("resource_id")
                    .arg(resource_id)
                    .arg("owner")
                    .arg(owner.unwrap_or_default());
            }
        }
        payment_args(&mut invocation, payment)?;
        event_args(&mut invocation, commit.events, self.event_retention);
        let reply: Vec<String> = invocation.invoke_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        match reply.as_slice() {
            [written] if written == "written" => Ok(Committed::Written),
            [refused] if refused == "refused" => Ok(Committed::Refused),
            [superseded] if superseded == "superseded" => Ok(Committed::Superseded),
            [conflict, json] if conflict == "conflict" => {
                let current = (!json.is_empty())
                    .then(|| serde_json::from_str(json).map(Box::new).map_err(corrupt))
                    .transpose()?;
                Ok(Committed::Conflict(current))
            }
            other => Err(corrupt(format!("unexpected commit reply {other:?}"))),
        }
    }

    pub async fn get_payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        let raw: Option<String> = self.connection.clone().hget(payment_key(id), "json").await.map_err(unavailable)?;
        raw.map(|raw| serde_json::from_str(&raw).map_err(corrupt)).transpose()
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<Payment>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(payment_key(id), "json");
        }
        let raws: Vec<Option<String>> = pipe.query_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        raws.into_iter().flatten().map(|raw| serde_json::from_str(&raw).map_err(corrupt)).collect()
    }

    pub async fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> Result<PaymentPage, StoreError> {
        let cursor = match &filter.starting_after {
            Some(id) => self.get_payment(id).await?,
            None => None,
        };
        let Some((mut pager, from)) = Pager::start(merchant, filter, cursor.as_ref()) else {
            return Ok(PaymentPage::default());
        };
        let index = merchant_key(merchant);
        let max = from.map_or_else(|| "+inf".to_owned(), |created| created.to_string());
        let mut offset = 0;
        let chunk = 200;
        while offset < MAX_SCAN {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(offset)
                .arg(chunk)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                break;
            }
            offset += ids.len();
            for payment in self.load_many(&ids).await? {
                if pager.offer(payment).is_break() {
                    return Ok(pager.finish());
                }
            }
        }
        Ok(pager.finish())
    }

    pub async fn due_payments(&self, now_ms: i64, limit: usize) -> Result<Vec<Payment>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(DUE_KEY)
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        self.load_many(&ids).await
    }

    pub async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let reply: Vec<String> = self
            .scripts
            .read_record
            .key(record_key(key))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        if reply.is_empty() {
            return Ok(None);
        }
        let Ok([fingerprint, resource_id, owner, lease_until_ms, done, status, body, ttl_ms]) =
            <[String; 8]>::try_from(reply)
        else {
            return Err(corrupt("unexpected record reply"));
        };
        let number = |text: &str| text.parse::<f64>().map_err(corrupt);
        let state = if done == "1" {
            RecordState::Done { response: StoredResponse { status: number(&status)? as u16, body } }
        } else {
            RecordState::InFlight { owner, lease_until_ms: number(&lease_until_ms)? as i64 }
        };
        Ok(Some(IdempotencyRecord {
            fingerprint,
            resource_id,
            state,
            expires_at_ms: super::now_ms() + (number(&ttl_ms)? as i64).max(0),
        }))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let raw: Option<String> = self.connection.clone().get(event_key(id)).await.map_err(unavailable)?;
        raw.map(|raw| serde_json::from_str(&raw).map_err(corrupt)).transpose()
    }

    async fn load_events(&self, ids: &[String]) -> Result<Vec<Option<StoredEvent>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| event_key(id)).collect();
        let raws: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        // An event this version cannot read (a newer instance's, in a rolling deploy) is skipped
        // here rather than stalling everything after it; an instance that reads it takes it.
        Ok(raws.into_iter().map(|raw| raw.and_then(|raw| readable_event(&raw))).collect())
    }

    pub async fn events(&self, merchant: &str, filter: &EventFilter) -> Result<EventPage, StoreError> {
        let index = match filter.kind {
            Some(kind) => format!("rp:events_t:{}:{merchant}", kind.as_str()),
            None => format!("rp:events:{merchant}"),
        };
        let max = match &filter.starting_after {
            Some(id) => match StoredEvent::id_ms(id) {
                Some(ms) => ms.to_string(),
                None => return Ok(EventPage::default()),
            },
            None => "+inf".to_owned(),
        };
        let mut pager = EventPager::new(filter.limit);
        let mut offset = 0;
        while offset < MAX_SCAN {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(offset)
                .arg(200)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                break;
            }
            offset += ids.len();
            let below: Vec<String> =
                ids.into_iter().filter(|id| filter.starting_after.as_ref().is_none_or(|after| id < after)).collect();
            for event in self.load_events(&below).await?.into_iter().flatten() {
                if pager.offer(event).is_break() {
                    return Ok(pager.finish());
                }
            }
        }
        Ok(pager.finish())
    }

    /// Entries of the outbox stream, with their events (entries whose event expired are skipped).
    async fn entries_with_events(&self, entries: Vec<(String, String)>) -> Result<Vec<LogEntry>, StoreError> {
        let ids: Vec<String> = entries.iter().map(|(_, id)| id.clone()).collect();
        let events = self.load_events(&ids).await?;
        Ok(entries
            .into_iter()
            .zip(events)
            .filter_map(|((cursor, _), event)| event.map(|event| LogEntry { cursor, event }))
            .collect())
    }

    pub async fn log_after(&self, cursor: Option<&str>, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let start = cursor.map_or_else(|| "-".to_owned(), |c| format!("({c}"));
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(OUTBOX_KEY)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        self.entries_with_events(stream_entries(reply.ids)).await
    }

    pub async fn log_end(&self) -> Result<String, StoreError> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(OUTBOX_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(reply.ids.first().map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone()))
    }

    pub async fn outbox(
        &self,
        consumer: &str,
        limit: usize,
        claim_idle: Duration,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let entries = match self.read_group(consumer, limit, claim_idle).await {
            Err(error) if error.code() == Some("NOGROUP") => {
                // Redis lost its data (and the group with it): start the group again.
                self.create_group().await?;
                self.read_group(consumer, limit, claim_idle).await.map_err(unavailable)?
            }
            other => other.map_err(unavailable)?,
        };
        let found = self.entries_with_events(entries.clone()).await?;
        let mut expired: Vec<&String> = Vec::new();
        for (cursor, event_id) in &entries {
            if !found.iter().any(|f| &f.cursor == cursor) {
                // Gone (past its retention), not merely unreadable by this version.
                let exists: bool = self.connection.clone().exists(event_key(event_id)).await.map_err(unavailable)?;
                if !exists {
                    expired.push(cursor);
                }
            }
        }
        if !expired.is_empty() {
            // Their events are gone: nothing to fan out.
            let _: i64 = self.connection.clone().xack(OUTBOX_KEY, GROUP, &expired).await.map_err(unavailable)?;
        }
        Ok(found)
    }

    /// Entries another consumer took over `claim_idle` ago without acknowledging (it died), then
    /// new ones.
    async fn read_group(
        &self,
        consumer: &str,
        limit: usize,
        claim_idle: Duration,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let mut connection = self.connection.clone();
        let claimed: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(OUTBOX_KEY)
            .arg(GROUP)
            .arg(consumer)
            .arg(claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut connection)
            .await?;
        let mut entries = stream_entries(claimed.claimed);
        if entries.len() < limit {
            let options =
                redis::streams::StreamReadOptions::default().group(GROUP, consumer).count(limit - entries.len());
            let read: Option<redis::streams::StreamReadReply> =
                connection.xread_options(&[OUTBOX_KEY], &[">"], &options).await?;
            for key in read.map(|r| r.keys).unwrap_or_default() {
                entries.extend(stream_entries(key.ids));
            }
        }
        Ok(entries)
    }

    pub async fn fan_out(
        &self,
        event: &StoredEvent,
        ack: Option<&str>,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.fan_out.prepare_invoke();
        invocation.key(deliveries_key(&event.id)).key(DELIVERIES_DUE_KEY).key(OUTBOX_KEY);
        invocation
            .arg("group")
            .arg(GROUP)
            .arg("entry")
            .arg(ack.unwrap_or_default())
            .arg("retention_ms")
            .arg(self.event_retention.as_millis() as u64)
            .arg("event")
            .arg(&event.id)
            .arg("n")
            .arg(deliveries.len());
        for (i, delivery) in deliveries.iter().enumerate() {
            let p = format!("d{}_", i + 1);
            invocation
                .arg(format!("{p}endpoint"))
                .arg(&delivery.endpoint_id)
                .arg(format!("{p}json"))
                .arg(serde_json::to_string(delivery).map_err(corrupt)?)
                .arg(format!("{p}due"))
                .arg(delivery.due_ms.unwrap_or_default());
        }
        let _: String = invocation.invoke_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    pub async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint, StoreError> {
        let key = endpoints_key(&endpoint.merchant_id);
        let json = serde_json::to_string(endpoint).map_err(corrupt)?;
        let (_, stored): (bool, String) = redis::pipe()
            .atomic()
            .hset_nx(&key, &endpoint.id, json)
            .hget(&key, &endpoint.id)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        serde_json::from_str(&stored).map_err(corrupt)
    }

    pub async fn save_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let json = serde_json::to_string(endpoint).map_err(corrupt)?;
        let _: () = self
            .connection
            .clone()
            .hset(endpoints_key(&endpoint.merchant_id), &endpoint.id, json)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn endpoints(&self, merchant: &str) -> Result<Vec<Endpoint>, StoreError> {
        let raws: Vec<String> = self.connection.clone().hvals(endpoints_key(merchant)).await.map_err(unavailable)?;
        let mut endpoints: Vec<Endpoint> =
            raws.iter().map(|raw| serde_json::from_str(raw).map_err(corrupt)).collect::<Result<_, _>>()?;
        endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(endpoints)
    }

    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let fields: std::collections::HashMap<String, String> =
            self.connection.clone().hgetall(deliveries_key(event_id)).await.map_err(unavailable)?;
        let mut found = Vec::new();
        for (field, json) in &fields {
            if field.ends_with(":v") {
                continue;
            }
            let version = fields.get(&format!("{field}:v")).map_or("0", String::as_str);
            found.push(delivery_of(json, version)?);
        }
        found.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        Ok(found)
    }

    pub async fn take_due_deliveries(
        &self,
        _now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let reply: Vec<String> = self
            .scripts
            .take_due
            .key(DELIVERIES_DUE_KEY)
            .arg("lease_ms")
            .arg(lease_ms)
            .arg("limit")
            .arg(limit)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        let Some((lease_until, taken)) = reply.split_first() else { return Ok(Vec::new()) };
        let lease_until: i64 = lease_until.parse().map_err(corrupt)?;
        taken
            .chunks(2)
            .map(|pair| match pair {
                [json, version] => {
                    delivery_of(json, version).map(|delivery| Delivery { due_ms: Some(lease_until), ..delivery })
                }
                _ => Err(corrupt("unexpected take reply")),
            })
            .collect()
    }

    pub async fn endpoint(&self, merchant: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let raw: Option<String> =
            self.connection.clone().hget(endpoints_key(merchant), id).await.map_err(unavailable)?;
        raw.map(|raw| serde_json::from_str(&raw).map_err(corrupt)).transpose()
    }

    pub async fn save_delivery(&self, delivery: &Delivery) -> Result<Saved, StoreError> {
        let member = format!("{} {}", delivery.event_id, delivery.endpoint_id);
        let reply: Vec<String> = self
            .scripts
            .save_delivery
            .key(deliveries_key(&delivery.event_id))
            .key(DELIVERIES_DUE_KEY)
            .arg("endpoint")
            .arg(&delivery.endpoint_id)
            .arg("json")
            .arg(serde_json::to_string(delivery).map_err(corrupt)?)
            .arg("version")
            .arg(delivery.version)
            .arg("due")
            .arg(delivery.due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg("member")
            .arg(member)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [written] if written == "written" => Ok(Saved::Written),
            [conflict, json, version] if conflict == "conflict" => {
                let current = (!json.is_empty()).then(|| delivery_of(json, version).map(Box::new)).transpose()?;
                Ok(Saved::Conflict(current))
            }
            other => Err(corrupt(format!("unexpected save reply {other:?}"))),
        }
    }
}

fn readable_event(raw: &str) -> Option<StoredEvent> {
    serde_json::from_str(raw).map_err(|error| tracing::warn!(%error, "skipping an event this version cannot read")).ok()
}

/// A stream's entries as (entry id, event id).
fn stream_entries(ids: Vec<redis::streams::StreamId>) -> Vec<(String, String)> {
    ids.into_iter()
        .filter_map(|entry| {
            let event: Option<String> = entry.get("event");
            event.map(|event| (entry.id, event))
        })
        .collect()
}
