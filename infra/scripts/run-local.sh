#!/usr/bin/env bash
# `make run`: the whole system on this machine, in the foreground. Ctrl-C (or SIGTERM) stops every part.
# Logs of each part go to .run/<part>.log; this script prints where everything listens.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
mkdir -p .run
export PAYMENTS_DB__URL="${PAYMENTS_DB__URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/payments}"
export PAYMENTS_KAFKA__BOOTSTRAP_SERVERS="${PAYMENTS_KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:9092}"

echo "migrating ${PAYMENTS_DB__URL}"
$PY -m payment_infrastructure.postgres.migrate --create "$PAYMENTS_DB__URL"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop_all INT TERM EXIT

start() { # name, command...
  local name=$1; shift
  "$@" >".run/${name}.log" 2>&1 &
  pids+=($!)
  echo "started ${name} (pid $!, log .run/${name}.log)"
}

wait_http() { # name, url
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "${1} did not answer on ${2}; see .run/${1}.log" >&2
  tail -n 20 ".run/${1}.log" >&2 || true
  return 1
}

wait_tcp() { # name, port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "${1} did not listen on :${2}; see .run/${1}.log" >&2
  return 1
}

start broker $PY -m payment_infrastructure.kafka.tansu --host 127.0.0.1 --port 9092
wait_tcp broker 9092

start psp-simulator $PY -m services.psp_simulator --host 127.0.0.1 --port 8090 \
  --scenario "${PAYMENTS_PSP_SIM__SCENARIO:-NORMAL}"
wait_http psp-simulator http://127.0.0.1:8090/health/live

start dev-issuer $PY -m services.dev_issuer --host 127.0.0.1 --port 8082
wait_http dev-issuer http://127.0.0.1:8082/realms/ecommerce-platform/.well-known/openid-configuration

start payment-service $PY -m services.payment_service
wait_http payment-service http://127.0.0.1:9000/health/ready

start outbox-dispatcher $PY -m services.payment_service.dispatcher
wait_http outbox-dispatcher http://127.0.0.1:9002/health/ready

start payment-consumers $PY -m services.payment_consumers
wait_http payment-consumers http://127.0.0.1:9001/health/ready

cat <<MSG

payments is running:
  API                 http://127.0.0.1:8080   (POST /payments, GET /payments/{id}; docs at /docs)
  management          http://127.0.0.1:9000   (/health/live, /health/ready, /metrics)
  outbox dispatcher   http://127.0.0.1:9002   (/health/live, /health/ready, /metrics)
  payment-consumers   http://127.0.0.1:9001   (/health/live, /health/ready, /metrics)
  PSP simulator       http://127.0.0.1:8090   (/admin/summary, PUT /admin/scenario)
  Kafka (Tansu)       127.0.0.1:9092          (payment_order_created_topic, ...)
  dev issuer          http://127.0.0.1:8082/realms/ecommerce-platform
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
echo "a component exited; see .run/*.log" >&2
exit 1
