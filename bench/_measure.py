"""What the HTTP benchmarks measure besides their own figures, shared by ingest.py and collect.py.

- load generators: ``wrk`` (closed loop, Lua script for unique bodies) and bench/openloop.js
  (open loop at a fixed rate, latency from each request's due time);
- the server's own view: ``/metrics`` scraped before and after a run, histograms subtracted
  (``backchannel_request_duration_seconds``, the watchdog's lag and GC pauses);
- the disk: fsync latency of a 4 KiB write on the database's file system;
- the machine: how busy both cores were during a run and who used them (the server's
  processes, the load generator, everyone else), ``/proc/loadavg``, and how long the
  server's event-loop threads waited for a core (``/proc/PID/task/PID/schedstat``).

The machine is shared: "others" (busy time not ours) is printed beside every figure so that a
run with other work on the cores can be told from a quiet one.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from _common import percentile

HERE = Path(__file__).resolve().parent
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the disk ---------------------------------------------------------------------------------
def fsync_probe(directory: Path, calls: int = 2000) -> list[float]:
    """Seconds per 4 KiB write + os.fsync on the disk that holds the database, sorted."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(calls):
            os.pwrite(fd, block, (i % 256) * 4096)
            begin = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - begin)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)


def fsync_summary(probe: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(probe, 0.5),
        "p99": percentile(probe, 0.99),
        "max": probe[-1],
    }


def describe_fsync(figures: dict[str, float]) -> str:
    return f"p50 {ms(figures['p50'])}, p99 {ms(figures['p99'])}, max {ms(figures['max'])}"


# -- the machine ------------------------------------------------------------------------------
def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main (event-loop) thread was runnable but not running."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except OSError:
        return 0.0


def children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for (load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_pids(pid: int) -> list[int]:
    """The processes that serve: the children of a process group's parent, or ``pid`` alone."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children) or [pid]


@dataclass
class Window:
    """Who used the two cores between :meth:`start` and :meth:`stop` (see module docstring)."""

    pids: list[int]
    began: float = 0.0
    busy: float = 0.0
    generator: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)
    waits: dict[int, float] = field(default_factory=dict)
    load: str = ""

    def start(self) -> Window:
        self.load = loadavg()
        self.busy = machine_busy()
        self.generator = children_cpu()
        self.cpu = {p: cpu_seconds(p) for p in self.pids}
        self.waits = {p: runqueue_wait(p) for p in self.pids}
        self.began = time.perf_counter()
        return self

    def stop(self) -> dict[str, Any]:
        took = time.perf_counter() - self.began
        busy = machine_busy() - self.busy
        generator = children_cpu() - self.generator
        per = {p: cpu_seconds(p) - self.cpu[p] for p in self.pids}
        waits = {p: runqueue_wait(p) - self.waits[p] for p in self.pids}
        server = sum(per.values())
        return {
            "seconds": took,
            "load": self.load,
            "busy_cores": busy / took,
            "server_cores": server / took,
            "server_cores_each": [per[p] / took for p in self.pids],
            "generator_cores": generator / took,
            "others_cores": max(0.0, busy - server - generator) / took,
            "runqueue_ms_per_s": [waits[p] / took * 1000 for p in self.pids],
        }


def describe_window(w: dict[str, Any]) -> str:
    each = "+".join(f"{c:.2f}" for c in w["server_cores_each"])
    waits = "/".join(f"{v:.0f}" for v in w["runqueue_ms_per_s"])
    return (
        f"cores busy {w['busy_cores']:.2f} of 2: server {w['server_cores']:.2f} ({each}),"
        f" generator {w['generator_cores']:.2f}, others {w['others_cores']:.2f};"
        f" server loop threads waited for a core {waits} ms per s; load {w['load']}"
    )


# -- the server's metrics ---------------------------------------------------------------------
def scrape(url: str, token: str) -> Samples:
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def histogram_delta(
    before: Samples, after: Samples, name: str, labels: dict[str, str]
) -> list[tuple[float, float]]:
    """(upper bound, observations at or under it) between two scrapes, by bound."""
    out = []
    for (sample, sample_labels), value in after.items():
        if sample != name + "_bucket":
            continue
        as_dict = dict(sample_labels)
        le = as_dict.pop("le")
        if as_dict != labels:
            continue
        out.append((float(le), value - before.get((sample, sample_labels), 0.0)))
    return sorted(out)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> tuple[float, float]:
    """(interpolated value, the bucket's upper bound) at quantile ``q``, Prometheus-style."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return float("nan"), float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower, bound
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share, bound
        lower, below = bound, count
    return lower, float("inf")


def longest(buckets: list[tuple[float, float]]) -> float:
    """The upper bound of the highest bucket anything fell in (0 when empty)."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return 0.0
    return next(bound for bound, count in buckets if count >= total)


def server_view(
    before: Samples, after: Samples, route: str, writer: str | None = None
) -> dict[str, Any]:
    """The server's own figures for one run: its percentiles for ``route``, loop lag, GC,
    and ``writer``'s group commits (how many, requests in each, time of each)."""
    buckets = histogram_delta(
        before, after, "backchannel_request_duration_seconds", {"route": route}
    )
    out: dict[str, Any] = {"requests": int(buckets[-1][1]) if buckets else 0}
    for q in (0.5, 0.9, 0.99, 0.999):
        value, bound = bucket_quantile(buckets, q)
        out[f"p{q * 100:g}"] = value
        out[f"p{q * 100:g}_bucket"] = bound
    out["over"] = {
        bound: int(buckets[-1][1] - count) for bound, count in buckets if bound in (0.01, 0.025)
    }
    lag = histogram_delta(before, after, "backchannel_event_loop_lag_seconds", {})
    out["lag_p99"] = bucket_quantile(lag, 0.99)[0]
    out["lag_longest_bucket"] = longest(lag)
    out["lag_max_since_start"] = after.get(("backchannel_event_loop_lag_max_seconds", ()), 0.0)
    out["stalls"] = int(
        after.get(("backchannel_event_loop_stalls_total", ()), 0.0)
        - before.get(("backchannel_event_loop_stalls_total", ()), 0.0)
    )
    gc: dict[str, tuple[int, float, float]] = {}
    for generation in ("0", "1", "2"):
        pauses = histogram_delta(
            before, after, "backchannel_gc_pause_seconds", {"generation": generation}
        )
        key = ("backchannel_gc_pause_seconds_sum", (("generation", generation),))
        total = after.get(key, 0.0) - before.get(key, 0.0)
        gc[generation] = (int(pauses[-1][1]) if pauses else 0, total, longest(pauses))
    out["gc"] = gc
    if writer is not None:
        sizes = histogram_delta(
            before, after, "backchannel_group_commit_requests", {"writer": writer}
        )
        commits = int(sizes[-1][1]) if sizes else 0
        if commits:
            key = ("backchannel_group_commit_requests_sum", (("writer", writer),))
            times = histogram_delta(
                before, after, "backchannel_group_commit_seconds", {"writer": writer}
            )
            out["groups"] = {
                "commits": commits,
                "mean": (after.get(key, 0.0) - before.get(key, 0.0)) / commits,
                "size_p50": bucket_quantile(sizes, 0.5)[1],
                "size_p99": bucket_quantile(sizes, 0.99)[1],
                "time_p50": bucket_quantile(times, 0.5)[0],
                "time_p99": bucket_quantile(times, 0.99)[0],
                "time_longest": longest(times),
            }
    return out


def describe_server(view: dict[str, Any]) -> list[str]:
    parts = [
        f"p{q} {ms(view[f'p{q}'])} (bucket <= {ms(view[f'p{q}_bucket'])})"
        for q in ("50", "90", "99", "99.9")
    ]
    over = ", ".join(f"{ms(b)}: {n}" for b, n in sorted(view["over"].items()))
    gc = "; ".join(
        f"gen {g}: {n} in {ms(total)}, longest <= {ms(top)}"
        for g, (n, total, top) in view["gc"].items()
    )
    return [
        f"server (time inside the app, /metrics histogram, {view['requests']} requests): "
        + ", ".join(parts),
        f"server requests over {over}",
        f"event loop: longest lag in this run <= {ms(view['lag_longest_bucket'])} (histogram"
        f" bucket), lag p99 {ms(view['lag_p99'])}, stalls >= 100 ms: {view['stalls']};"
        f" longest since start {ms(view['lag_max_since_start'])}",
        f"GC {gc}",
        *(
            [
                f"group commits: {g['commits']}, requests in each: mean {g['mean']:.2f},"
                f" p50 <= {g['size_p50']:g}, p99 <= {g['size_p99']:g}; time of each (statements"
                f" to COMMIT's return): p50 {ms(g['time_p50'])}, p99 {ms(g['time_p99'])}, longest"
                f" <= {ms(g['time_longest'])}"
            ]
            if (g := view.get("groups"))
            else []
        ),
    ]


# -- load generators --------------------------------------------------------------------------
def open_loop(
    url: str,
    path: str,
    headers: dict[str, str],
    template: str,
    rate: int,
    seconds: int,
    *,
    warmup: int = 2,
    sockets: int = 256,
) -> dict[str, Any]:
    """bench/openloop.js (Node) at a fixed rate; its JSON result. ``template``: the body, with
    ``__ID__`` where each request puts a unique id."""
    config = {
        "url": url,
        "path": path,
        "headers": headers,
        "template": template,
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "sockets": sockets,
    }
    config_file = Path(tempfile.mkstemp(suffix=".json")[1])
    config_file.write_text(orjson.dumps(config).decode())
    try:
        out = subprocess.run(
            ["node", str(HERE / "openloop.js"), str(config_file)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        config_file.unlink()
    result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    ok = sum(n for code, n in result["statuses"].items() if code.startswith("2"))
    result["lost"] = result["sent"] - ok
    return result


def describe_open_loop(label: str, result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return (
        f"{label}: {result['achieved_rate']:,.0f} req/s achieved; client p50 {lat['p50']:.1f} ms,"
        f" p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}, p99.9 {lat['p999']:.1f},"
        f" max {lat['max']:.1f} ms; lost (not 2xx) {result['lost']} of {result['sent']}"
        f" (statuses {result['statuses']}, errors {result['errors']}"
        f" {result.get('error_codes') or ''});"
        f" generator late by at most {result['max_send_lag_ms']:.1f} ms"
    )


WRK_LUA = """
wrk.method = "POST"
%(headers)s
keys = {%(keys)s}
counter = 0
request = function()
  counter = counter + 1
  local id = tostring(counter) .. "-" .. tostring(math.random(1, 1000000000))
  local body = string.gsub([[%(template)s]], "__ID__", id)
  local headers = nil
  if #keys > 0 then
    headers = {["Authorization"] = "Bearer " .. keys[(counter %% #keys) + 1]}
  end
  return wrk.format(nil, "%(path)s", headers, body)
end
"""


def wrk_run(
    url: str,
    path: str,
    headers: dict[str, str],
    template: str,
    seconds: int,
    connections: int = 64,
    keys: list[str] | None = None,
) -> tuple[float, dict[str, float]]:
    """``wrk`` closed loop: (requests per second, latency percentiles in ms); fails on any
    answer that is not 2xx. ``template``: the body, ``__ID__`` replaced per request;
    ``keys``: API keys the requests take in turn (one per property), as Bearer tokens."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua_headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    lua_keys = ", ".join(f'"{k}"' for k in keys or [])
    script.write_text(
        WRK_LUA % {"headers": lua_headers, "keys": lua_keys, "template": template, "path": path}
    )
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        script.unlink()
    rps = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[-1])
    latencies: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            latencies[parts[0]] = _ms(parts[1])
    non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
    if non2xx:
        raise RuntimeError(f"{path}: {non2xx[0].strip()}")
    return rps, latencies


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)
