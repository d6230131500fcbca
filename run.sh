#!/usr/bin/env bash
# The one-command launcher of the resilient payment gateway.
#
#   ./run.sh               build (release), start two banks and the gateway, run the live dashboard
#                          in the foreground; quitting it (q) stops everything
#   ./run.sh --headless    the same without the dashboard, until Ctrl-C
#   ./run.sh saga          the bank and the gateway, plus the order-saga example service (orders
#                          paid by authorize, stock, capture or compensate, learned from webhooks);
#                          places a few demo orders, then runs until Ctrl-C
#
# It starts two mock banks (primary and backup) and the payment gateway routing between them (on
# Redis when redis-server is installed, on a private port with its data under .run/, else on the
# embedded store), with keys created under .run/ on first use.
#   ./run.sh test [ARGS]   run every test (cargo nextest when installed, else cargo test)
#   ./run.sh bench [compare|bank|load|resilience] [ARGS]
#                          benchmarks; load drives a running gateway (see README.md)
#   ./run.sh soak [--payments N] [--kill-gateway] [--restart-redis] [--instances 2]
#                          payments through chaos, then the invariants checked (see README.md)
#   ./run.sh fuzz [N]      validate /openapi.json and run schemathesis (every phase, every
#                          check, N examples per operation, default 100) against a fresh gateway
#
# Works from any directory; stops everything it started on exit, Ctrl-C or error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
RUN_DIR="$ROOT/.run"
PIDS=()

say() { printf '%s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but was not found. $2"
}

stop_children() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
}
trap stop_children EXIT
trap 'exit 130' INT TERM

build_release() {
  need cargo "Install Rust (https://rustup.rs), then run ./run.sh again."
  say "Building (release)..."
  cargo build --release --quiet "$@"
}

wait_healthy() { # url name
  local i
  for i in $(seq 1 100); do
    if curl -fsS "$1/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$2 did not become healthy at $1 (see $RUN_DIR/$2.log)"
}

port_free() { # host:port
  ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# Generates the API key, admin key and fingerprint key on first use and keeps them in .run/keys.env.
ensure_keys() {
  mkdir -p "$RUN_DIR"
  local keys="$RUN_DIR/keys.env"
  if [ ! -f "$keys" ]; then
    local secret
    secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    umask 077
    {
      echo "API_KEYS=demo:sk_demo_$(secret)"
      echo "ADMIN_KEY=admin_$(secret)"
      echo "FINGERPRINT_KEY=fp_$(secret)"
    } >"$keys"
    say "Created API keys in .run/keys.env"
  fi
  set -a
  # shellcheck disable=SC1090
  . "$keys"
  set +a
}

# Picks the first free port from $1 upwards.
free_port_from() {
  local port=$1
  while ! port_free "127.0.0.1:$port"; do port=$((port + 1)); done
  echo "$port"
}

start_store() {
  if command -v redis-server >/dev/null 2>&1; then
    local port
    port=$(free_port_from 6390)
    mkdir -p "$RUN_DIR/redis"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$RUN_DIR/redis" --save "" --appendonly yes --appendfsync always \
      >"$RUN_DIR/redis.log" 2>&1 &
    PIDS+=("$!")
    local i
    for i in $(seq 1 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.1
    done
    STORE_URL="redis://127.0.0.1:$port/0"
  else
    mkdir -p "$RUN_DIR/data"
    STORE_URL="redb:$RUN_DIR/data/payments.redb"
  fi
  export STORE_URL
}

# Starts two banks (primary and backup) and the gateway routing between them (after building
# them), and sets BANK_URL (the primary's), BACKUP_URL, API_URL, API_KEY.
start_services() {
  ensure_keys
  local bank_listen="${BANK_LISTEN:-127.0.0.1:8081}" backup_listen="${BACKUP_BANK_LISTEN:-127.0.0.1:8082}"
  local api_listen="${API_LISTEN:-127.0.0.1:8080}"
  port_free "$bank_listen" || die "$bank_listen is already in use; set BANK_LISTEN to another address."
  port_free "$backup_listen" || die "$backup_listen is already in use; set BACKUP_BANK_LISTEN to another address."
  port_free "$api_listen" || die "$api_listen is already in use; set API_LISTEN to another address."
  start_store
  BANK_LISTEN="$bank_listen" "$ROOT/target/release/mock-bank" >"$RUN_DIR/mock-bank.log" 2>&1 &
  PIDS+=("$!")
  BANK_LISTEN="$backup_listen" "$ROOT/target/release/mock-bank" >"$RUN_DIR/mock-bank-backup.log" 2>&1 &
  PIDS+=("$!")
  local bank_url="http://$bank_listen" backup_url="http://$backup_listen" api_url="http://$api_listen"
  wait_healthy "$bank_url" mock-bank
  wait_healthy "$backup_url" mock-bank-backup
  API_LISTEN="$api_listen" BANKS="${BANKS:-primary=$bank_url,backup=$backup_url}" LOG_DIR="${LOG_DIR:-$RUN_DIR/logs}" \
    "$ROOT/target/release/payment-api" >"$RUN_DIR/payment-api.log" 2>&1 &
  PIDS+=("$!")
  wait_healthy "$api_url" payment-api
  local api_key="${API_KEYS#*:}"
  api_key="${api_key%%,*}"
  BANK_URL="$bank_url" BACKUP_URL="$backup_url" API_URL="$api_url" API_KEY="$api_key"
}

cmd_start() {
  local headless=$1
  need curl "Install curl (apt-get install curl)."
  build_release -p mock-bank -p payment-api -p dashboard-tui
  start_services
  local bank_url="$BANK_URL" api_url="$API_URL" api_key="$API_KEY"
  cat <<INFO

  payment-api  $api_url     (log: .run/payment-api.log, store: $STORE_URL)
  mock-bank    $bank_url     primary (log: .run/mock-bank.log)
  mock-bank    $BACKUP_URL     backup, where payments fail over (log: .run/mock-bank-backup.log)
  API key      $api_key     (merchant "demo"; all keys in .run/keys.env)
  Admin key    $ADMIN_KEY
  API docs     $api_url/docs     metrics: $api_url/metrics     JSON logs: .run/logs/

  Pay:
    curl -s $api_url/v1/payments -H "Authorization: Bearer $api_key" -H 'Idempotency-Key: order-1' \\
      -H 'Content-Type: application/json' \\
      -d '{"amount":1999,"currency":"USD","card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"123"}}'
  Break the bank, and watch the gateway react:
    curl -s -X POST $bank_url/chaos/presets/flaky
    curl -sN $api_url/admin/stream -H "Authorization: Bearer $ADMIN_KEY"
  Take the primary down: payments fail over to the backup, and the primary's breaker opens:
    curl -s -X POST $bank_url/chaos/presets/outage
    curl -s $api_url/admin/banks -H "Authorization: Bearer $ADMIN_KEY"

INFO
  if [ "$headless" = 1 ]; then
    say "  Press Ctrl-C to stop."
    wait -n "${PIDS[@]}"
  else
    [ -t 1 ] || die "the dashboard needs a terminal; use ./run.sh --headless"
    "$ROOT/target/release/dashboard-tui" --api "$api_url" --bank "$bank_url" --admin-key "$ADMIN_KEY" \
      --api-key "$api_key" --export-dir "$RUN_DIR"
    say "Dashboard closed; stopping the banks and the gateway."
  fi
}

cmd_test() {
  need cargo "Install Rust (https://rustup.rs), then run ./run.sh test again."
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace "$@"
  else
    say "cargo-nextest is not installed; running cargo test (cargo install cargo-nextest --locked for faster runs)."
    cargo test --workspace --no-fail-fast "$@"
  fi
}

cmd_bench() {
  local target="${1:-compare}"
  [ $# -gt 0 ] && shift
  # Separate builds: with --bin, cargo builds only that binary of every package named.
  case "$target" in
    compare)
      build_release -p mock-bank -p payment-api
      build_release -p tests --bin bench
      "$ROOT/target/release/bench" compare "$@"
      ;;
    bank)
      build_release -p mock-bank
      build_release -p tests --bin bench
      "$ROOT/target/release/bench" bank "$@"
      ;;
    load)
      # Against the gateway ./run.sh started, with the merchant key it created.
      build_release -p tests --bin bench
      if [ -z "${LOAD_API_KEY:-}" ] && [ -f "$RUN_DIR/keys.env" ]; then
        ensure_keys
        LOAD_API_KEY="${API_KEYS#*:}"
        export LOAD_API_KEY="${LOAD_API_KEY%%,*}"
      fi
      "$ROOT/target/release/bench" load "$@"
      ;;
    resilience)
      need cargo "Install Rust (https://rustup.rs)."
      cargo bench -p resilience --bench breaker "$@"
      ;;
    *) die "unknown benchmark '$target' (known: compare, bank, load, resilience)" ;;
  esac
}

# Schemathesis and an OpenAPI validator, pinned, in a virtualenv kept between runs.
FUZZ_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/resilient-pay/fuzz-venv-1"
fuzz_tools() {
  need python3 "Install Python 3 (apt-get install python3 python3-venv)."
  if [ ! -x "$FUZZ_VENV/bin/schemathesis" ]; then
    say "Installing schemathesis into $FUZZ_VENV..."
    rm -rf "$FUZZ_VENV"
    python3 -m venv "$FUZZ_VENV" || die "cannot create a virtualenv (apt-get install python3-venv)"
    "$FUZZ_VENV/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==4.32.5" "openapi-spec-validator==0.9.0" || die "cannot install schemathesis from PyPI"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_fuzz() {
  local examples="${1:-100}"
  need cargo "Install Rust (https://rustup.rs)."
  need curl "Install curl (apt-get install curl)."
  fuzz_tools
  cargo build --quiet -p mock-bank -p payment-api
  local dir="$RUN_DIR/fuzz" bank_port api_port
  rm -rf "$dir"; mkdir -p "$dir"
  bank_port=$(free_port); api_port=$(free_port)
  local merchant_key="sk_fuzz_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  local admin_key="admin_fuzz_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  BANK_LISTEN="127.0.0.1:$bank_port" BANK_LOG=warn "$ROOT/target/debug/mock-bank" >"$dir/mock-bank.log" 2>&1 &
  PIDS+=("$!")
  wait_healthy "http://127.0.0.1:$bank_port" fuzz/mock-bank
  API_LISTEN="127.0.0.1:$api_port" BANK_URL="http://127.0.0.1:$bank_port" STORE_URL=memory \
    API_KEYS="fuzz:$merchant_key" ADMIN_KEY="$admin_key" RATE_LIMIT_PER_SEC=100000 RATE_LIMIT_BURST=100000 \
    API_LOG=warn "$ROOT/target/debug/payment-api" >"$dir/payment-api.log" 2>&1 &
  PIDS+=("$!")
  local api="http://127.0.0.1:$api_port"
  wait_healthy "$api" fuzz/payment-api
  curl -fsS "$api/openapi.json" -o "$dir/openapi.json"
  say "== OpenAPI 3.1 validation"
  "$FUZZ_VENV/bin/python" -c 'import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print("openapi.json is valid OpenAPI 3.1")' "$dir/openapi.json"
  # Every phase (examples, coverage, fuzzing, stateful) and every check; fuzz/schemathesis.toml says
  # where positive-data acceptance cannot apply. Merchant routes with a merchant key, admin routes
  # with the admin key; the endless event stream is left out.
  local common=(--max-examples "$examples" --seed 42 --request-timeout 10 --workers 1 --generation-deterministic)
  say "== schemathesis: merchant routes"
  (cd "$ROOT/fuzz" && "$FUZZ_VENV/bin/schemathesis" run "$dir/openapi.json" --url "$api" "${common[@]}" \
    -H "Authorization: Bearer $merchant_key" --exclude-path-regex '^/admin')
  say "== schemathesis: admin routes"
  (cd "$ROOT/fuzz" && "$FUZZ_VENV/bin/schemathesis" run "$dir/openapi.json" --url "$api" "${common[@]}" \
    -H "Authorization: Bearer $admin_key" --include-path /admin/breaker --phases examples,coverage,fuzzing)
  say "fuzz: the document is valid and the gateway kept to it"
}

cmd_saga() {
  need curl "Install curl (apt-get install curl)."
  build_release -p mock-bank -p payment-api -p order-saga
  start_services
  local saga_listen="${SAGA_LISTEN:-127.0.0.1:8090}"
  port_free "$saga_listen" || die "$saga_listen is already in use; set SAGA_LISTEN to another address."
  mkdir -p "$RUN_DIR/data"
  SAGA_LISTEN="$saga_listen" SAGA_GATEWAY_URL="$API_URL" SAGA_API_KEY="$API_KEY" \
    SAGA_STORE="${SAGA_STORE:-$RUN_DIR/data/order-saga.redb}" "$ROOT/target/release/order-saga" \
    >"$RUN_DIR/order-saga.log" 2>&1 &
  PIDS+=("$!")
  local saga_url="http://$saga_listen"
  wait_healthy "$saga_url" order-saga
  cat <<INFO

  order-saga   $saga_url     (log: .run/order-saga.log; 20% of orders find no stock)
  payment-api  $API_URL     mock-banks  $BANK_URL, $BACKUP_URL     (logs in .run/)

  Place an order, follow it, and see the saga's counters:
    curl -s $saga_url/orders -H 'Content-Type: application/json' -d '{"amount":2500}'
    curl -s $saga_url/orders/<id>
    curl -s $saga_url/stats
  The events it learned from, and their deliveries:
    curl -s "$API_URL/v1/events?limit=5" -H "Authorization: Bearer $API_KEY"

INFO
  say "Placing 10 demo orders..."
  local i
  for i in $(seq 1 10); do
    curl -fsS "$saga_url/orders" -H 'Content-Type: application/json' -d "{\"amount\":$((1000 + i * 100))}" >/dev/null
  done
  for i in $(seq 1 100); do
    if curl -fsS "$saga_url/stats" | grep -q '"orders":{[^}]*}' && ! curl -fsS "$saga_url/orders" | grep -Eq '"state":"(placed|authorizing|capturing|cancelling|refunding)"'; then
      break
    fi
    sleep 0.2
  done
  say "  $(curl -fsS "$saga_url/stats")"
  say "  Press Ctrl-C to stop."
  wait -n "${PIDS[@]}"
}

case "${1:-}" in
  "") cmd_start 0 ;;
  saga) cmd_saga ;;
  --headless) cmd_start 1 ;;
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  soak)
    shift
    build_release -p mock-bank -p payment-api
    build_release -p tests --bin soak
    "$ROOT/target/release/soak" "$@"
    ;;
  -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try ./run.sh --help)" ;;
esac
