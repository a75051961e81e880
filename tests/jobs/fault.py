"""Kill (SIGKILL) or stall (SIGSTOP) rank 1 mid-fit on local-cluster[2,1,1024] and print what
happened as JSON.

Argument: "kill" (Spark retries the stage and the fit resumes from its checkpoint) or "stall"
with stage retries off (the fit must fail with a clear error soon after exchangeTimeout). Run
by test_faults.py in its own process, since a process holds one SparkContext.
"""

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["SPARK_WORKER_DIR"] = tempfile.mkdtemp(prefix="svb-worker-")

import signal  # noqa: E402

from svb_spark.spark.session import local_session  # noqa: E402
from svb_spark.spark.task import _RECORD_WORKERS_ENV  # noqa: E402
from tests.support.data import planted_frame  # noqa: E402
from tests.test_faults import _estimator, _interrupt_rank_1, _listening, _records  # noqa: E402

scenario = sys.argv[1]
conf = {"spark.executor.memory": "512m", "spark.default.parallelism": "2"}
if scenario == "stall":
    conf["spark.stage.maxConsecutiveAttempts"] = "1"  # no retry: the error must surface
spark = local_session("local-cluster[2,1,1024]", app_name="svb_spark-faults", **conf)
deadline = time.time() + 120
while spark.sparkContext._jsc.sc().getExecutorIds().size() < 2 and time.time() < deadline:
    time.sleep(0.5)

scratch = Path(tempfile.mkdtemp(prefix="svb-faults-"))
workers, checkpoints = scratch / "workers", scratch / "checkpoints"
workers.mkdir()
spark.sparkContext.environment[_RECORD_WORKERS_ENV] = str(workers)
df = planted_frame(spark).cache()
result = {}
if scenario == "kill":
    expected = _estimator(checkpoints).fit(df)
    result["expected"] = expected.coefficientMatrix.toArray().tolist()
    for path in workers.iterdir():
        path.unlink()

events = {}
sig = signal.SIGKILL if scenario == "kill" else signal.SIGSTOP
threading.Thread(
    target=_interrupt_rank_1, args=(workers, checkpoints, sig, events), daemon=True
).start()
try:
    model = _estimator(checkpoints, timeout=3.0).fit(df)
    result.update(
        coefficients=model.coefficientMatrix.toArray().tolist(),
        resumed_from_step=model.summary.resumedFromStep,
        retry_after_seconds=events["retried"] - events["sent"],
    )
except Exception as error:
    failed_after = time.perf_counter() - events["sent"]
    result.update(error=str(error)[:4000], failed_after_seconds=failed_after)

# Spark kills the tasks of a failed stage; give it a moment, then look for leftovers.
victim = events["pid"]
deadline = time.time() + 30
while os.path.exists(f"/proc/{victim}") and time.time() < deadline:
    time.sleep(0.2)
result["interrupted_worker_gone"] = not os.path.exists(f"/proc/{victim}")
if not result["interrupted_worker_gone"]:
    os.kill(victim, signal.SIGKILL)
records = _records(workers, 0) + _records(workers, 1)
result["executor_pids"] = sorted({r["pid"] for r in records})
result["listening"] = [r["location"] for r in records if _listening(r["location"])]
result["checkpoints_left"] = sorted(p.name for p in checkpoints.iterdir())
print("RESULT " + json.dumps(result))
spark.stop()
