//! The shared backend: Redis, for several gateway instances at once. Every step that touches more
//! than one key is one Lua script, so it is atomic, and lease times come from Redis's own clock
//! (`TIME`), so instances with skewed clocks agree on when a lease expired.
//!
//! Keys: `rp:idem:<scoped key>` (the record, JSON, expiring after the retention period),
//! `rp:pay:<id>` (the payment, JSON), `rp:merchant:<id>` (sorted set of payment ids by creation
//! time) and `rp:due` (sorted set of processing payment ids by when they are due).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{
    Claim, ClaimRequest, IdempotencyRecord, PaymentFilter, PaymentPage, RecordState, StoreError, StoredResponse,
    created_micros, due_ms, matches,
};
use crate::model::{Payment, Refund};

const PUT_PAYMENT_FN: &str = r"
local function put_payment(pay_key, merchant_key, due_key, id, json, created_score, due_score)
  redis.call('SET', pay_key, json)
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

/// KEYS: record, payment, merchant index, due index.
/// ARGV: fingerprint, owner, lease ms, retention ms, resource id, payment JSON or '', payment id,
/// created score, due score or ''.
const CLAIM: &str = r"
local now = now_ms()
local record = load_record(KEYS[1])
if not record then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'resource_id', ARGV[5], 'owner', ARGV[2],
             'lease_until_ms', now + tonumber(ARGV[3]), 'done', '0', 'status', '0', 'body', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if ARGV[6] ~= '' then
    put_payment(KEYS[2], KEYS[3], KEYS[4], ARGV[7], ARGV[6], ARGV[8], ARGV[9])
  end
  return {'fresh'}
end
if record.fingerprint ~= ARGV[1] then return {'mismatch'} end
if record.done then return {'replay', tostring(record.status), redis.call('HGET', KEYS[1], 'body')} end
if record.lease_until_ms > now then return {'in_use', tostring(record.lease_until_ms - now)} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'lease_until_ms', now + tonumber(ARGV[3]))
return {'taken_over', record.resource_id}
";

/// KEYS: record, payment, merchant index, due index.
/// ARGV: resource id, status, body, retention ms, payment JSON or '', payment id, created score,
/// due score or ''.
const FINISH: &str = r"
local record = load_record(KEYS[1])
if record and record.resource_id == ARGV[1] then
  redis.call('HSET', KEYS[1], 'done', '1', 'status', ARGV[2], 'body', ARGV[3], 'lease_until_ms', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if ARGV[5] ~= '' then
  put_payment(KEYS[2], KEYS[3], KEYS[4], ARGV[6], ARGV[5], ARGV[7], ARGV[8])
end
return 1
";

/// The release rule of `store::decide_release`, in Lua.
/// KEYS: record, payment, merchant index, due index.
/// ARGV: resource id, payment JSON or '', payment id, created score, due score or '', owner or ''.
const RELEASE: &str = r"
local record = load_record(KEYS[1])
if record and record.resource_id == ARGV[1] and (not record.done or record.status == 202) then
  local now = now_ms()
  if not record.done and record.lease_until_ms > now and record.owner ~= ARGV[6] then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
if ARGV[2] ~= '' then
  put_payment(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[2], ARGV[4], ARGV[5])
end
return 1
";

/// The record and its remaining lifetime, in one round trip. KEYS: record.
const READ_RECORD: &str = r"
local record = load_record(KEYS[1])
if not record then return {} end
return {record.fingerprint, record.resource_id, record.owner, tostring(record.lease_until_ms),
        record.done and '1' or '0', tostring(record.status), redis.call('HGET', KEYS[1], 'body') or '',
        tostring(redis.call('PTTL', KEYS[1]))}
";

/// Compare-and-set of a payment. KEYS: payment, merchant index, due index.
/// ARGV: expected JSON ('' for none), new JSON, payment id, created score, due score or ''.
const PUT_PAYMENT_IF: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if ARGV[1] ~= '*' and current ~= ARGV[1] then return 0 end
put_payment(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[2], ARGV[4], ARGV[5])
return 1
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
    finish: Script,
    release: Script,
    put_if: Script,
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
    format!("rp:pay:{id}")
}

fn merchant_key(merchant: &str) -> String {
    format!("rp:merchant:{merchant}")
}

/// The arguments `put_payment` takes: JSON, id, created score ('' when the payment is already in
/// the merchant index), due score.
fn payment_args(payment: Option<&Payment>) -> Result<[String; 4], StoreError> {
    let Some(payment) = payment else { return Ok(Default::default()) };
    Ok([
        serde_json::to_string(payment).map_err(corrupt)?,
        payment.id.clone(),
        created_micros(payment).to_string(),
        due_ms(payment).map(|d| d.to_string()).unwrap_or_default(),
    ])
}

/// Keys `put_payment` touches (the first two are placeholders when there is no payment).
fn payment_keys(payment: Option<&Payment>) -> [String; 3] {
    match payment {
        Some(p) => [payment_key(&p.id), merchant_key(&p.merchant_id), DUE_KEY.to_owned()],
        None => ["rp:pay:-".to_owned(), "rp:merchant:-".to_owned(), DUE_KEY.to_owned()],
    }
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
        let scripts = Scripts {
            claim: script(CLAIM),
            finish: script(FINISH),
            release: script(RELEASE),
            put_if: script(PUT_PAYMENT_IF),
            read_record: script(READ_RECORD),
        };
        Ok(Self { connection, scripts: std::sync::Arc::new(scripts) })
    }

    pub async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let [json, id, created, due] = payment_args(request.insert)?;
        let [pay, merchant, due_index] = payment_keys(request.insert);
        let reply: Vec<String> = self
            .scripts
            .claim
            .key(record_key(request.key))
            .key(pay)
            .key(merchant)
            .key(due_index)
            .arg(request.fingerprint)
            .arg(request.owner)
            .arg(request.lease.as_millis() as u64)
            .arg(request.retention.as_millis() as u64)
            .arg(request.resource_id)
            .arg(json)
            .arg(id)
            .arg(created)
            .arg(due)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
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

    pub async fn finish(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
        retention: Duration,
        payment: Option<&Payment>,
    ) -> Result<(), StoreError> {
        // The payment was indexed by merchant when it was claimed.
        let [json, id, _, due] = payment_args(payment)?;
        let [pay, merchant, due_index] = payment_keys(payment);
        let _: i64 = self
            .scripts
            .finish
            .key(record_key(key))
            .key(pay)
            .key(merchant)
            .key(due_index)
            .arg(resource_id)
            .arg(response.status)
            .arg(&response.body)
            .arg(retention.as_millis() as u64)
            .arg(json)
            .arg(id)
            .arg("")
            .arg(due)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn release(
        &self,
        key: &str,
        resource_id: &str,
        owner: Option<&str>,
        payment: Option<&Payment>,
    ) -> Result<bool, StoreError> {
        // The payment was indexed by merchant when it was claimed.
        let [json, id, _, due] = payment_args(payment)?;
        let [pay, merchant, due_index] = payment_keys(payment);
        // No request ever names itself by the empty string, so '' never matches a holder.
        let released: i64 = self
            .scripts
            .release
            .key(record_key(key))
            .key(pay)
            .key(merchant)
            .key(due_index)
            .arg(resource_id)
            .arg(json)
            .arg(id)
            .arg("")
            .arg(due)
            .arg(owner.unwrap_or_default())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(released == 1)
    }

    /// Writes `payment` if the stored JSON is still `expected` (`None`: whatever it is).
    async fn put_payment_if(&self, payment: &Payment, expected: Option<&str>) -> Result<bool, StoreError> {
        let [json, id, created, due] = payment_args(Some(payment))?;
        let [pay, merchant, due_index] = payment_keys(Some(payment));
        let written: i64 = self
            .scripts
            .put_if
            .key(pay)
            .key(merchant)
            .key(due_index)
            .arg(expected.unwrap_or("*"))
            .arg(json)
            .arg(id)
            .arg(created)
            .arg(due)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    pub async fn put_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        self.put_payment_if(payment, None).await.map(drop)
    }

    async fn get_raw(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.connection.clone().get(payment_key(id)).await.map_err(unavailable)
    }

    pub async fn get_payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        self.get_raw(id).await?.map(|raw| serde_json::from_str(&raw).map_err(corrupt)).transpose()
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<Payment>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| payment_key(id)).collect();
        let raws: Vec<Option<String>> = self.connection.clone().mget(keys).await.map_err(unavailable)?;
        raws.into_iter().flatten().map(|raw| serde_json::from_str(&raw).map_err(corrupt)).collect()
    }

    pub async fn list_payments(&self, merchant: &str, filter: &PaymentFilter) -> Result<PaymentPage, StoreError> {
        let index = merchant_key(merchant);
        let (max, mut skip_until) = match &filter.starting_after {
            Some(cursor) => match self.get_payment(cursor).await? {
                Some(c) if c.merchant_id == merchant => (created_micros(&c).to_string(), Some(c.id)),
                _ => return Ok(PaymentPage::default()),
            },
            None => ("+inf".to_owned(), None),
        };
        let mut page = PaymentPage::default();
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
            let ids: Vec<String> = ids
                .into_iter()
                .filter(|id| match &skip_until {
                    Some(cursor) if id == cursor => {
                        skip_until = None;
                        false
                    }
                    Some(_) => false,
                    None => true,
                })
                .collect();
            for payment in self.load_many(&ids).await? {
                if !matches(&payment, filter) {
                    continue;
                }
                if page.payments.len() == filter.limit {
                    page.has_more = true;
                    return Ok(page);
                }
                page.payments.push(payment);
            }
        }
        Ok(page)
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

    pub async fn apply_refund(&self, payment_id: &str, refund: &Refund) -> Result<Option<Payment>, StoreError> {
        // Optimistic: read, apply, write only if nobody changed the payment meanwhile; else again.
        for _ in 0..32 {
            let Some(raw) = self.get_raw(payment_id).await? else { return Ok(None) };
            let mut payment: Payment = serde_json::from_str(&raw).map_err(corrupt)?;
            payment.apply_refund(refund.clone());
            if self.put_payment_if(&payment, Some(&raw)).await? {
                return Ok(Some(payment));
            }
        }
        Err(StoreError::Unavailable(format!("payment {payment_id} kept changing; refund not recorded")))
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
