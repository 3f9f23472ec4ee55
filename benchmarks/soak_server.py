"""Soak the teacher server with hostile traffic beside good traffic (issue 16), bounded in time and count.

A scripted-backend server runs in a child process (``robot-rl teacher serve`` on loopback). Three phases of
``--seconds / 4``, ``/ 2`` and ``/ 4``: idle (good requests only), load (good requests beside slow clients that
trickle a body, slowloris clients that trickle their headers, big bodies of ``--big-mb`` MiB, and clients that
disconnect mid-body; all of them in a process of their own), recovery (good requests only). Reports good-request
latency p50 / p99 (idle vs under load) and the RSS of the server's process tree over time (psutil).

Targets: good-request p99 under load within 2x of idle; RSS after recovery within 20% of the start.

Usage::

    .venv/bin/python benchmarks/soak_server.py --seconds 60
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import requests

from robot_rl.teachers.remote import free_port, wait_healthy

BODY = ('{"instructions": ["push"], "task_ids": ["RRL-PushCube-Sparse-v1"], "states": [[0.0, 0.0, 0.1, 1, 0, 0, 0, '
        '0.05, 0.0, 0.02, 1, 0, 0, 0, 0.1, 0.1, 0.02, 0, 0, 0]]}')


def good_loop(url: str, stop: threading.Event, out: list[float], failed: list[str], max_count: int) -> None:
    """Good requests one after another; ``out`` gets each answered one's latency (s), ``failed`` the others."""
    s = requests.Session()
    while not stop.is_set() and len(out) < max_count:
        t0 = time.perf_counter()
        try:
            r = s.post(f"{url}/act/batch", data=BODY, timeout=30)
        except requests.RequestException as exc:
            failed.append(type(exc).__name__)
            continue
        if r.status_code == 200:
            out.append(time.perf_counter() - t0)
        else:
            failed.append(str(r.status_code))
        time.sleep(0.01)


def raw_post(port: int, length: int, payload: bytes, pause_s: float = 0.0) -> None:
    """Send headers declaring ``length`` bytes, then ``payload`` (maybe slowly), then drop the connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"POST /act/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
            for i in range(0, len(payload), 64 * 1024):
                s.sendall(payload[i:i + 64 * 1024])
                if pause_s:
                    time.sleep(pause_s)
    except OSError:
        pass


def slow_headers(port: int, seconds: float) -> None:
    """Open a connection and trickle a request's headers a few bytes a second (slowloris): the server's header
    deadline (``server.header_timeout_s``) must end it.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /act/batch HTTP/1.1\r\nHost: x\r\n")
            for i in range(int(seconds)):
                s.sendall(b"X-%d: y\r\n" % i)
                time.sleep(1.0)
    except OSError:
        pass


def hostile_loop(kind: str, port: int, stop: threading.Event, big_bytes: int, counts: dict,
                 max_count: int = 100_000) -> None:
    """One hostile client of ``kind``, one request after another until ``stop`` or ``max_count`` of its kind."""
    big_body = b'{"x": "' + b"a" * big_bytes + b'"}' if kind == "big" else b""
    while not stop.is_set() and counts.get(kind, 0) < max_count:
        if kind == "slow":  # headers, then 4 KiB of a 1 MiB body, then 1 s of silence, then gone
            raw_post(port, 1 << 20, b"{" + b" " * 4096, pause_s=1.0)
        elif kind == "slow-headers":
            slow_headers(port, 30.0)
        elif kind == "big":
            try:
                requests.post(f"http://127.0.0.1:{port}/act/batch", data=big_body, timeout=30)
            except requests.RequestException:
                pass
        else:  # mid-body disconnect
            raw_post(port, 1 << 20, b'{"instructions": ' + b" " * 100_000)
        counts[kind] = counts.get(kind, 0) + 1


def hostile_process(port: int, clients: dict[str, int], big_bytes: int, seconds: float, out,
                    max_count: int = 100_000) -> None:
    """The hostile clients, in their own process (so that their GIL is not the good client's), for ``seconds``;
    puts the count of requests of each kind on ``out``.
    """
    stop, counts = threading.Event(), {}
    threads = [threading.Thread(target=hostile_loop, args=(kind, port, stop, big_bytes, counts, max_count),
                                daemon=True)
               for kind, n in clients.items() for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    out.put(counts)


def tree_rss_mib(proc: psutil.Process) -> float:
    """RSS of ``proc`` and its children (MiB)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="total run time (s)")
    ap.add_argument("--slow", type=int, default=20, help="slow clients at once")
    ap.add_argument("--big", type=int, default=4, help="big-body clients at once")
    ap.add_argument("--big-mb", type=float, default=48.0, help="size of one big body (MiB; the limit is 64)")
    ap.add_argument("--disconnects", type=int, default=4, help="mid-body disconnecting clients at once")
    ap.add_argument("--slow-headers", type=int, default=20, help="clients that trickle their headers at once")
    ap.add_argument("--max-requests", type=int, default=20_000, help="most good requests per phase")
    ap.add_argument("--max-hostile", type=int, default=100_000,
                    help="most hostile requests of each kind (its clients start no new one past it)")
    args = ap.parse_args()

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the server's log goes to a file: a pipe nobody drains fills at 64 KiB and then blocks the server's event loop
    log_file = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "teacher", "serve", "server.port=%d" % port,
                             "server.log_level=warning", "server.body_timeout_s=5", "server.header_timeout_s=5"],
                            env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 60, proc)
        ps = psutil.Process(proc.pid)
        rss: list[tuple[float, float]] = []
        t_start = time.monotonic()
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                rss.append((time.monotonic() - t_start, tree_rss_mib(ps)))
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        quarter = args.seconds / 4
        lat, failed = {}, {}
        counts: dict = {}
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        clients = {"slow": args.slow, "slow-headers": args.slow_headers, "big": args.big,
                   "disconnect": args.disconnects}
        for phase, seconds, hostile in (("idle", quarter, False), ("load", 2 * quarter, True),
                                        ("recovery", quarter, False)):
            stop, out, failed[phase] = threading.Event(), [], []
            good = threading.Thread(target=good_loop, args=(url, stop, out, failed[phase], args.max_requests))
            if hostile:
                attacker = ctx.Process(target=hostile_process, args=(port, clients, int(args.big_mb * 2**20),
                                                                     seconds, queue, args.max_hostile), daemon=True)
                attacker.start()
            good.start()
            time.sleep(seconds)
            stop.set()
            good.join(30)
            if hostile:
                counts = queue.get(timeout=60)
                attacker.join(30)
            lat[phase] = np.array(out) * 1000.0
        time.sleep(2.0)
        sampling.set()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.seek(0)
        err = log_file.read()

    print("good requests (ms): " + "; ".join(
        f"{p}: n={len(v)} p50={np.percentile(v, 50):.1f} p99={np.percentile(v, 99):.1f}" for p, v in lat.items()
        if len(v)))
    print(f"hostile requests sent: {counts}; good requests not answered 200: "
          f"{ {p: len(v) for p, v in failed.items()} } (first: {[v[:3] for v in failed.values()]})")
    print("server RSS (MiB) over time: " + " ".join(f"{t:.0f}s:{m:.0f}" for t, m in rss[::max(1, len(rss) // 20)]))
    start, peak, end = rss[0][1], max(m for _, m in rss), rss[-1][1]
    ratio = np.percentile(lat["load"], 99) / np.percentile(lat["idle"], 99)
    print(f"p99 load/idle = {ratio:.2f} (target <= 2: {'met' if ratio <= 2 else 'NOT met'}); RSS start {start:.0f}, "
          f"peak {peak:.0f}, end {end:.0f} MiB (target end within 20% of start: "
          f"{'met' if end <= 1.2 * start else 'NOT met'})")
    errors = [line for line in err.splitlines() if "ERROR" in line or "Traceback" in line]
    print(f"server ERROR/Traceback lines: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
