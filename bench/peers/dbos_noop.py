"""DBOS peer of Corral's `runs` metric: a one-step no-op durable workflow.

Run by corral-bench (bench/src/metrics/runs_limits.rs) in a venv it creates with
`pip install dbos`. DBOS keeps its own state in the Postgres system database named by
`$CORRAL_BENCH_DBOS_URL` (created by DBOS on launch if missing; the bench drops it
afterwards; an environment variable, not an argument, so a password stays out of `ps`), with its
default durability: the workflow's start, its step's output and its end are each
committed to Postgres before the next goes on.

Protocol (one JSON object per line):
  stdout, after launch:  {"ready": true, "launch_s": F, "dbos": VERSION, "python": VERSION}
  stdin, per batch:      {"clients": C, "workflows": M}
  stdout, per batch:     {"elapsed_s": F, "latencies_ms": [F, ...]}
  stdin closed:          DBOS.destroy(), exit 0.
A batch runs M workflows by C client threads, each starting one workflow
(`DBOS.start_workflow`), waiting for its result through the handle and starting the
next, as Corral's clients submit a run and wait for its final event.
"""

import argparse
import json
import os
import sys
import threading
import time

from dbos import DBOS, DBOSConfig


@DBOS.step()
def echo_step(value):
    """The one step: returns its input (its output is checkpointed by DBOS)."""
    return value


@DBOS.workflow()
def noop_workflow(value):
    """The workflow: calls the step and returns what it returned."""
    return echo_step(value)


def batch(clients, workflows, value):
    """Runs `workflows` workflows by `clients` threads; returns (seconds, latencies in ms)."""
    lock = threading.Lock()
    next_index = [0]
    latencies = []
    errors = []

    def client():
        mine = []
        try:
            while True:
                with lock:
                    if next_index[0] >= workflows:
                        break
                    next_index[0] += 1
                t = time.perf_counter()
                handle = DBOS.start_workflow(noop_workflow, value)
                result = handle.get_result()
                mine.append((time.perf_counter() - t) * 1e3)
                if result != value:
                    raise RuntimeError(f"workflow returned {result!r}, not its input")
        except Exception as e:  # reported to the bench, which fails the row
            errors.append(repr(e))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return elapsed, latencies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True, help="each workflow's input")
    args = parser.parse_args()

    started = time.perf_counter()
    config: DBOSConfig = {
        "name": "corral-bench-peer",
        "system_database_url": os.environ["CORRAL_BENCH_DBOS_URL"],
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    from importlib.metadata import version

    ready = {
        "ready": True,
        "launch_s": time.perf_counter() - started,
        "dbos": version("dbos"),
        "python": sys.version.split()[0],
    }
    print(json.dumps(ready), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            try:
                elapsed, latencies = batch(int(req["clients"]), int(req["workflows"]), args.input)
                out = {"elapsed_s": elapsed, "latencies_ms": latencies}
            except Exception as e:
                out = {"error": repr(e)}
            print(json.dumps(out), flush=True)
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
