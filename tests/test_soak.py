"""Soak: 100 consecutive small fits in one session leak no memory, descriptors, threads or
listening sockets in any process of the session.

The fits run in a process of their own (tests/jobs/soak.py), with a local[2] session of their
own, so that the figures are those of the fits alone. Run with ``python -m pytest -m slow -s
tests/test_soak.py`` to see them. It takes about five minutes: the fits, then one minute for
the JVM's idle pool threads to expire.
"""

import pytest

from tests.support.jobs import run_job

FITS = 100
MAX_GROWTH = 0.10  # resident memory after the last fit over that after fit 5


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def _growth(before: int, after: int) -> str:
    return f"{100 * (after - before) / before:+.2f}%"


def _report(result: dict) -> str:
    """The figures, one line per process: before the first fit, after fit 5, after the last."""
    fits, seconds = result["fits"], result["fit_seconds"]
    before, base, end, idle = (result[k] for k in ("before", "baseline", "end", "idle"))
    lines = [
        f"{fits} fits in {sum(seconds):.0f} s (first {seconds[0]:.1f} s, median "
        f"{sorted(seconds)[len(seconds) // 2]:.2f} s); then {result['idle_seconds']:.0f} s idle",
        "process            RSS MiB before / fit 5 / end (growth)     fds b/5/end"
        "   threads b/5/end   listening ports b/5/end",
    ]

    def line(name, b, f, e):
        rss = f"{_mib(b['rss']) if b else '-'} / {_mib(f['rss'])} / {_mib(e['rss'])} "
        rss += f"({_growth(f['rss'], e['rss'])})"
        fds = f"{b['fds'] if b else '-'}/{f['fds']}/{e['fds']}"
        threads = f"{b['threads'] if b else '-'}/{f['threads']}/{e['threads']}"
        ports = f"{b['listening'] if b else '-'}/{f['listening']}/{e['listening']}"
        lines.append(f"{name:<18} {rss:<38} {fds:<13} {threads:<17} {ports}")

    line("driver python", before["driver"], base["driver"], end["driver"])
    line("driver JVM", before["jvm"], base["jvm"], end["jvm"])
    for daemon, last in zip(base["daemons"], end["daemons"]):
        line(f"daemon {daemon['pid']}", None, daemon, last)
    for worker, last in zip(base["workers"], end["workers"]):
        line(f"worker {worker['pid']}", None, worker, last)
    jvm = [before["jvm"], base["jvm"], end["jvm"], idle["jvm"]]
    lines += [
        "driver python threads (threading): "
        + " / ".join(str(s["driver"]["python_threads"]) for s in (before, base, end)),
        "JVM heap used after full GC, MiB: "
        + " / ".join(_mib(j["heap_used"]) for j in jvm[:3])
        + f" ({_growth(base['jvm']['heap_used'], end['jvm']['heap_used'])}); committed: "
        + " / ".join(_mib(j["heap_committed"]) for j in jvm[:3])
        + "; Arrow off-heap bytes held: "
        + " / ".join(str(j["arrow_allocated"]) for j in jvm[:3]),
        "JVM non-heap (metaspace, code cache) MiB: "
        + " / ".join(_mib(j["nonheap_used"]) for j in jvm[:3])
        + "; loaded classes: "
        + " / ".join(str(j["classes"]) for j in jvm[:3]),
        "JVM threads before / fit 5 / end / after idle: "
        + " / ".join(str(j["threads"]) for j in jvm)
        + "; VM threads: "
        + " / ".join(str(j["vm_threads"]) for j in jvm)
        + "; of which Java threads that stay: "
        + " / ".join(str(j["lasting_threads"]) for j in jvm)
        + "; expiring idle pool threads: "
        + " / ".join(str(sum(j["expiring_threads"].values())) for j in jvm),
        f"JVM after idle: RSS {_mib(idle['jvm']['rss'])} MiB, fds {idle['jvm']['fds']} "
        "(Spark closed the idle Python workers)",
        "worker threads after fit 5 / end: "
        + " / ".join(str([w["thread_names"] for w in s["workers"]]) for s in (base, end)),
        "zombie children: " + " / ".join(str(s["zombies"]) for s in (before, base, end)),
        "every 10 fits, RSS MiB driver / JVM / workers, JVM heap MiB:",
    ]
    for point in result["trace"]:
        workers = ",".join(_mib(rss) for rss in point["worker_rss"])
        lines.append(
            f"  fit {point['fit']:>3}: {_mib(point['driver_rss'])} / {_mib(point['jvm_rss'])}"
            f" / {workers}, heap {_mib(point['heap_used'])}"
        )
    return "\n".join(lines)


def _python_processes(first: dict, last: dict) -> list[tuple[str, dict, dict]]:
    """(name, figures in ``first``, figures in ``last``) of every Python process of the session."""
    pairs = [("driver python", first["driver"], last["driver"])]
    for role in ("daemons", "workers"):
        later = {p["pid"]: p for p in last[role]}
        pairs += [(f"{role[:-1]} {p['pid']}", p, later[p["pid"]]) for p in first[role]]
    return pairs


@pytest.mark.slow
def test_hundred_fits_leak_nothing():
    result = run_job("soak", str(FITS), timeout=1800)
    print("\n" + _report(result))
    before, base, end, idle = (result[k] for k in ("before", "baseline", "end", "idle"))

    # The same Python workers ran every fit (worker reuse), so their figures compare; the
    # Flight servers and progress reporters of all the fits lived in them.
    for role in ("daemons", "workers"):
        pids = [[p["pid"] for p in snapshot[role]] for snapshot in (base, end)]
        assert pids[0] == pids[1] and pids[0], f"the pyspark {role} changed: {pids}"
    assert end["zombies"] == base["zombies"]

    # Memory: every Python process stays within 10% of what it used after fit 5. The driver
    # JVM is held to its heap after full collections, not to its RSS, which grows with nothing
    # leaked: Native Memory Tracking over fits 5 to 100 put it on the JIT (code cache +30 MB,
    # compiler arenas +14 MB, metaspace +8 MB, still compiling), on the stacks of Spark's pool
    # threads (+16 MB, until they expire) and on heap committed but not in use (+10 MB).
    # Leaked Java objects (broadcasts, plans, listeners, shuffle state) would show in the heap.
    for name, first, last in _python_processes(base, end):
        assert last["rss"] < first["rss"] * (1 + MAX_GROWTH), (name, first["rss"], last["rss"])
    assert end["jvm"]["heap_used"] < base["jvm"]["heap_used"] * (1 + MAX_GROWTH)
    # The JVM side of mapInArrow allocates its Arrow buffers off the heap.
    assert end["jvm"]["arrow_allocated"] == base["jvm"]["arrow_allocated"]

    # Descriptors and threads: exactly where they were after fit 5. The first fit opens a few
    # for good (the pyspark daemon, its pipes and its workers' sockets, the JVM's persistent
    # connection to the driver's accumulator server), so the baseline is fit 5; the driver's
    # threads must not change even once.
    for name, first, last in _python_processes(base, end):
        assert last["fds"] == first["fds"], (name, first["fd_kinds"], last["fd_kinds"])
        assert last["threads"] == first["threads"], (name, first["threads"], last["threads"])
    jvm_fds = (base["jvm"]["fd_kinds"], end["jvm"]["fd_kinds"])
    assert end["jvm"]["fds"] == base["jvm"]["fds"], jvm_fds
    for snapshot in (base, end):
        assert snapshot["driver"]["threads"] == before["driver"]["threads"]
        assert snapshot["driver"]["python_thread_names"] == before["driver"]["python_thread_names"]
    # The JVM's thread count follows the job rate: Spark's cached pools start a thread per
    # task up to their caps, and each exits after 60 s idle. Once the pools have expired, every
    # Java thread that stays must have been there after fit 5: none is new. (At about 0.5 s a
    # fit, the snapshots right after fit 5 and fit 100 also catch the last fit's asynchronous
    # tail, task monitors and shuffle location dispatchers, so they hold a few more threads
    # than the idle one; they are only reported.) The VM's own threads (GC workers, JIT
    # compilers) come and go on demand and are only reported.
    assert idle["jvm"]["expiring_threads"] == {}
    assert set(idle["jvm"]["lasting"]) <= set(base["jvm"]["lasting"])

    # Listening sockets: no Flight server is left in a worker, no progress listener in the
    # driver; every process listens on exactly what it listened on before (the driver's
    # accumulator server, the JVM's RPC, block manager and py4j ports, the daemon's port).
    for snapshot in (base, end):
        assert all(w["listening"] == [] for w in snapshot["workers"])
        assert snapshot["driver"]["listening"] == before["driver"]["listening"]
        assert snapshot["jvm"]["listening"] == before["jvm"]["listening"]
    assert [d["listening"] for d in end["daemons"]] == [d["listening"] for d in base["daemons"]]
