#!/usr/bin/env bash
# `make run`: Kafka + etcd on loopback, a demo config in etcd, the agent in the foreground.
# Ctrl-C (SIGINT) reaches the agent and the stack; both stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUN=.stack/run
READY=$RUN.ready
rm -f "$READY"
mkdir -p .stack

"$PYTHON" -m devstack.stack up --dir "$RUN" --ready-file "$READY" &
STACK=$!
cleanup() {
    kill -INT "$STACK" 2>/dev/null || true
    wait "$STACK" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    [ -f "$READY" ] && break
    kill -0 "$STACK" 2>/dev/null || { echo "devstack failed to start (see above)" >&2; exit 1; }
    sleep 0.5
done
[ -f "$READY" ] || { echo "devstack did not become ready" >&2; exit 1; }

echo "agent: shipping /tmp/logagent-demo/app.log to topic demo_log; watch it with: make consume" >&2
export LOGAGENT_AGENT_IP=127.0.0.1
export LOGAGENT_AGENT_DATA_DIR="$PWD/$RUN/agent-data"
export LOGAGENT_AGENT_ALLOWED_PATHS="/tmp/logagent-demo/**"
export LOGAGENT_SYSINFO_INTERVAL=10
set +e
"$PYTHON" -m logagent run -c config.ini
status=$?
exit $status
