//! The shared backend: Redis, for several gateway instances at once. Every step that touches more
//! than one key is one Lua script, so it is atomic, and lease times come from Redis's own clock
//! (`TIME`), so instances with skewed clocks agree on when a lease expired.
//!
//! Keys: `rp:idem:<scoped key>` (the record, a hash, expiring after the retention period),
//! `rp:payment:<id>` (the payment: a hash of its `version` and its JSON, so that a script checks
//! the version without decoding JSON), `rp:merchant:<id>` (sorted set of payment ids by creation
//! time) and `rp:due` (sorted set of the ids of payments due for the reconciler, by when).
//!
//! The scripts take named arguments (`name, value, name, value, …`), read into a table `a`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{
    Claim, ClaimRequest, Commit, Committed, IdempotencyRecord, Pager, PaymentFilter, PaymentPage, RecordChange,
    RecordState, StoreError, StoredResponse, created_micros, due_ms,
};
use crate::model::Payment;

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

const DUE_KEY: &str = "rp:due";
/// How many index entries one listing may walk through before giving up on finding more matches.
const MAX_SCAN: usize = 10_000;

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    commit: Script,
    read_record: Script,
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

fn payment_keys(invocation: &mut redis::ScriptInvocation<'_>, payment: &Payment) {
    invocation.key(payment_key(&payment.id)).key(merchant_key(&payment.merchant_id)).key(DUE_KEY);
}

impl RedisStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        // Short timeouts: when Redis is gone, answer 503 quickly instead of holding requests.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        let script = |body: &str| Script::new(&format!("{PUT_PAYMENT_FN}\n{RECORD_FN}\n{body}"));
        let scripts = Scripts { claim: script(CLAIM), commit: script(COMMIT), read_record: script(READ_RECORD) };
        Ok(Self { connection, scripts: std::sync::Arc::new(scripts) })
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
}
