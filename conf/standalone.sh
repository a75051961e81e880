#!/usr/bin/env bash
# A Spark standalone cluster on this machine, from the pip-installed pyspark: one master and
# N workers, all bound to 127.0.0.1, for trying multi-executor runs of svb_spark.
#
#   conf/standalone.sh start [N]     start a master and N workers (default 2)
#   conf/standalone.sh status        show the processes started by this script
#   conf/standalone.sh stop          stop them (by the PIDs written at start)
#
# Then submit to it (one core per worker by default, so numWorkers <= N):
#   spark-submit --master spark://127.0.0.1:7077 --properties-file conf/spark-defaults.conf \
#       --conf spark.pyspark.python="$(command -v python)" --executor-memory 1g \
#       "$(python -c 'import svb_spark.cli as c; print(c.__file__)')" train --param numWorkers=2 ...
#
# Environment (all optional):
#   PYTHON                  interpreter with pyspark installed (default: python, else python3)
#   SVB_STANDALONE_DIR      state directory: PID files, logs, SPARK_WORKER_DIR
#                           (default: ${TMPDIR:-/tmp}/svb-spark-standalone)
#   SVB_MASTER_PORT         master RPC port (default 7077)
#   SVB_MASTER_WEBUI_PORT   master web UI port (default 8080)
#   SVB_WORKER_CORES        cores per worker (default 1)
#   SVB_WORKER_MEMORY       memory per worker (default 2g)
set -euo pipefail

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
STATE_DIR=${SVB_STANDALONE_DIR:-${TMPDIR:-/tmp}/svb-spark-standalone}
MASTER_PORT=${SVB_MASTER_PORT:-7077}
MASTER_WEBUI_PORT=${SVB_MASTER_WEBUI_PORT:-8080}
WORKER_CORES=${SVB_WORKER_CORES:-1}
WORKER_MEMORY=${SVB_WORKER_MEMORY:-2g}
MASTER_URL="spark://127.0.0.1:${MASTER_PORT}"

# The web UIs bind to SPARK_LOCAL_IP (0.0.0.0 otherwise); keep everything on loopback.
export SPARK_LOCAL_IP=127.0.0.1
export SPARK_WORKER_DIR="${STATE_DIR}/work"
# The master's REST submission server would take a fixed port (6066); spark:// is enough.
export SPARK_MASTER_OPTS="${SPARK_MASTER_OPTS:-} -Dspark.master.rest.enabled=false"

spark_class() {
    local home
    home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    echo "${home}/bin/spark-class"
}

# A PID file names one of our daemons only while that process is alive and is a Spark daemon;
# a recycled PID that now belongs to something else is never signalled.
is_our_daemon() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null && [[ "$(ps -p "$pid" -o args= 2>/dev/null)" == *org.apache.spark.deploy.* ]]
}

wait_for_log() {
    local log=$1 pattern=$2 pid=$3 seconds=${4:-90}
    for _ in $(seq "$seconds"); do
        if grep -q "$pattern" "$log" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "standalone: process $pid exited; see $log" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 1
    done
    echo "standalone: no '$pattern' in $log after ${seconds}s" >&2
    return 1
}

start() {
    local workers=${1:-2}
    if [ -e "${STATE_DIR}/master.pid" ] && is_our_daemon "$(cat "${STATE_DIR}/master.pid")"; then
        echo "standalone: already running (${STATE_DIR}); run '$0 stop' first" >&2
        exit 1
    fi
    mkdir -p "$STATE_DIR" "$SPARK_WORKER_DIR"
    local class
    class=$(spark_class)

    # spark-class execs java, so $! is the daemon's own PID.
    nohup "$class" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_WEBUI_PORT" \
        >"${STATE_DIR}/master.log" 2>&1 </dev/null &
    echo $! >"${STATE_DIR}/master.pid"
    wait_for_log "${STATE_DIR}/master.log" "I have been elected leader" "$!"
    echo "master   ${MASTER_URL}  (pid $(cat "${STATE_DIR}/master.pid"), web UI" \
        "http://127.0.0.1:${MASTER_WEBUI_PORT})"

    for i in $(seq "$workers"); do
        # Port 0: each worker's RPC and web UI take a free port, so N workers never collide.
        nohup "$class" org.apache.spark.deploy.worker.Worker \
            --host 127.0.0.1 --port 0 --webui-port 0 \
            --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" --work-dir "$SPARK_WORKER_DIR" \
            "$MASTER_URL" >"${STATE_DIR}/worker-${i}.log" 2>&1 </dev/null &
        echo $! >"${STATE_DIR}/worker-${i}.pid"
    done
    for i in $(seq "$workers"); do
        wait_for_log "${STATE_DIR}/worker-${i}.log" "Successfully registered with master" \
            "$(cat "${STATE_DIR}/worker-${i}.pid")"
        echo "worker ${i} ${WORKER_CORES} core(s), ${WORKER_MEMORY}  (pid" \
            "$(cat "${STATE_DIR}/worker-${i}.pid"))"
    done
    echo "logs and PID files in ${STATE_DIR}"
}

stop() {
    local stopped=0
    shopt -s nullglob
    # Workers first, so the master does not log them as lost.
    for file in "${STATE_DIR}"/worker-*.pid "${STATE_DIR}/master.pid"; do
        [ -e "$file" ] || continue
        local pid
        pid=$(cat "$file")
        if is_our_daemon "$pid"; then
            kill "$pid"
            for _ in $(seq 30); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 1
            done
            if kill -0 "$pid" 2>/dev/null; then
                kill -9 "$pid"
            fi
            echo "stopped $(basename "$file" .pid) (pid $pid)"
            stopped=$((stopped + 1))
        fi
        rm -f "$file"
    done
    [ "$stopped" -gt 0 ] || echo "standalone: nothing running (${STATE_DIR})"
}

status() {
    shopt -s nullglob
    local any=0
    for file in "${STATE_DIR}/master.pid" "${STATE_DIR}"/worker-*.pid; do
        [ -e "$file" ] || continue
        local pid state
        pid=$(cat "$file")
        state=$(is_our_daemon "$pid" && echo running || echo "not running")
        echo "$(basename "$file" .pid) pid $pid: $state"
        any=1
    done
    [ "$any" -eq 1 ] || echo "standalone: nothing started (${STATE_DIR})"
}

case "${1:-}" in
    start) start "${2:-2}" ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start [N] | status | stop" >&2
        exit 2
        ;;
esac
