#!/usr/bin/env bash
# `make run`: Kafka + etcd on loopback, a demo config in etcd, the agent in the foreground.
# Usage: devstack/run.sh [PYTHON] [CONFIG]   (defaults .venv/bin/python, devstack/dev.ini)
#
# One config for everything: the stack takes its ports and the ip whose keys it seeds from
# CONFIG, the agent runs with it, and the README's CLI commands take it with -c.
#
# Stopping. In a terminal the agent runs as the terminal's foreground job (bash job control),
# so Ctrl-C reaches the agent alone: it drains its queue into Kafka and exits 0, then this
# script stops Kafka and etcd, and make ends quietly with the agent's status. Without a
# terminal the agent shares make's process group, so a SIGINT or SIGTERM to that group
# reaches it the same way. The stack always runs in a process group of its own: it stops
# after the agent has drained into Kafka, never under it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
CONFIG=${2:-devstack/dev.ini}
RUN=.stack/run
READY=$RUN.ready
rm -f "$READY"
mkdir -p .stack

set -m  # the next job gets its own process group
"$PYTHON" -m devstack.stack up --config "$CONFIG" --dir "$RUN" --ready-file "$READY" &
STACK=$!
set +m
stop_stack() {
    kill -INT "$STACK" 2>/dev/null || true
    wait "$STACK" 2>/dev/null || true
}
trap stop_stack EXIT
# Interrupted while the stack starts: stop it, then end by the signal as make expects.
trap 'trap - INT; stop_stack; kill -INT $$' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

for _ in $(seq 1 300); do
    [ -f "$READY" ] && break
    if ! kill -0 "$STACK" 2>/dev/null; then
        # devstack has printed why (a port in use, mvn or java missing ...), in one line
        wait "$STACK" && status=0 || status=$?
        exit "$((status ? status : 1))"
    fi
    sleep 0.5
done
[ -f "$READY" ] || { echo "devstack: not ready after 150 s; its logs are in $RUN" >&2; exit 1; }

cat >&2 <<EOF
agent: shipping /tmp/logagent-demo/app.log to topic demo_log, with $CONFIG
  watch it:   make consume                (in a second terminal; TOPICS='t1 t2' for others)
  the CLI:    .venv/bin/logagent check -c $CONFIG     (or: source .venv/bin/activate)
  stop:       Ctrl-C
EOF

# The agent got the signal itself (same terminal job or process group); once it has
# drained and exited, the EXIT trap stops the stack.
trap : INT TERM HUP
if "$PYTHON" -c 'import os, sys; sys.exit(os.tcgetpgrp(0) != os.getpgrp())' 2>/dev/null; then
    set -m  # in a terminal: the agent becomes the foreground job, Ctrl-C reaches it alone
fi
"$PYTHON" -m logagent run -c "$CONFIG" && status=0 || status=$?
set +m
exit "$status"
