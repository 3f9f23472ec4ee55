"""Teacher server benchmark: latency and throughput over loopback HTTP, and what batching buys.

    .venv/bin/python benchmarks/teacher_server.py [--requests 200] [--out bench_out/teacher_server.json]
    .venv/bin/python benchmarks/teacher_server.py --only framing [--requests 500]   # part 3 alone

1. The scripted backend in-process vs over HTTP (a real ``robot-rl teacher serve`` subprocess),
   with 1, 8 and 32 concurrent clients, each sending one-row ``POST /act/batch`` requests with a
   224x224 RGB image and the privileged state. Target: HTTP overhead (HTTP p50 - in-process p50,
   one client) <= 3 ms. One client is measured with ``--batch-wait-ms 0``: with nobody to batch
   with, the batching window is pure added latency (up to its length), which is a setting, not
   overhead; the default window is measured too.
2. The openvla backend on the tiny random-weight checkpoint (:mod:`robot_rl.testing.tiny_vla`),
   32 concurrent clients, batching on (``--max-batch 32``) vs off (``--max-batch 1``).
   Target: >= 3x the throughput of unbatched serving.
3. Framing, side by side on one server (scripted, ``--batch-wait-ms 0``, one client): one row with a 224x224x3
   uint8 image, the state, the instruction and the task, as openpi's protocol (WebSocket + msgpack-numpy,
   :mod:`robot_rl.teachers.openpi_wire`, one kept connection) and as ``POST /act/batch`` (HTTP + json-numpy,
   one kept session), the two requests interleaved so both see the same machine load. Overhead = p50 - the
   in-process p50 of the same row. Target for openpi framing: <= 1 ms p50 overhead.

Clients are threads in this process (requests + json-numpy, as RemoteTeacher); latency is the
client-side wall time of one request, encoding and decoding included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import json_numpy
import numpy as np
import requests
from websockets.sync.client import connect

from robot_rl.teachers import ScriptedTeacher, TeacherRequest, openpi_wire
from robot_rl.teachers.remote import SpawnedServer

TASK = "RRL-PushCube-Sparse-v1"
IMAGE_SIZE = 224
DEFAULT_WAIT_MS = 5.0  # robot-rl teacher serve's default --batch-wait-ms


def _rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 224, 224, 3)`` and plausible PushCube states ``(n, 20)``."""
    images = rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    states = np.zeros((n, 20), np.float32)
    states[:, 0:3] = np.c_[rng.uniform(-0.1, 0.1, (n, 2)), np.full(n, 0.15)]
    states[:, 3:7] = [0, 1, 0, 0]  # TCP pointing down
    states[:, 7:10] = np.c_[rng.uniform(-0.1, 0.1, (n, 2)), np.full(n, 0.02)]
    states[:, 10:14] = [1, 0, 0, 0]
    states[:, 14:17] = states[:, 7:10] + [0.2, 0, -0.019]
    states[:, 18:20] = [0.08, 0.02]
    return images, states


def _summary(latencies_s: list[float], wall_s: float) -> dict:
    lat = np.asarray(latencies_s) * 1e3
    return {"requests": len(lat), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "throughput_rps": len(lat) / wall_s}


def in_process(n_requests: int, rng) -> dict:
    teacher = ScriptedTeacher(control_period_steps=4, task=TASK, seed=0)
    images, states = _rows(n_requests, rng)
    lat = []
    t0 = time.perf_counter()
    for i in range(n_requests):
        s = time.perf_counter()
        teacher.act(TeacherRequest(["push the cube"], images=images[i:i + 1], states=states[i:i + 1], task_ids=[TASK]))
        lat.append(time.perf_counter() - s)
    return _summary(lat, time.perf_counter() - t0)


def over_http(url: str, clients: int, n_requests: int, rng, with_state: bool = True, with_image: bool = True) -> dict:
    """``clients`` threads share ``n_requests`` one-row requests; returns latency and throughput."""
    images, states = _rows(n_requests, rng)
    bodies = []
    for i in range(n_requests):
        body = {"instructions": ["push the cube"], "task_ids": [TASK]}
        if with_image:
            body["images"] = images[i:i + 1]
        if with_state:
            body["states"] = states[i:i + 1]
        bodies.append(body)
    lat: list[float] = []
    rows_seen: list[int] = []
    lock = threading.Lock()
    next_i = iter(range(n_requests))

    def client():
        session = requests.Session()
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            s = time.perf_counter()
            r = session.post(f"{url}/act/batch", data=json_numpy.dumps(bodies[i]), timeout=60)
            out = json_numpy.loads(r.text)
            dt = time.perf_counter() - s
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            with lock:
                lat.append(dt)
                rows_seen.append(int(out["batch_rows"]))

    for _ in range(2):  # warm-up: connections, first-call costs
        requests.post(f"{url}/act/batch", data=json_numpy.dumps(bodies[0]), timeout=60)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = _summary(lat, time.perf_counter() - t0)
    out["mean_batch_rows"] = float(np.mean(rows_seen))
    return out


def framing(url: str, n_requests: int, rng, in_process_p50_ms: float) -> dict:
    """Part 3: openpi framing vs HTTP/json-numpy for the same rows, interleaved; p50 / p99 / overhead (ms)."""
    images, states = _rows(n_requests, rng)
    ws_url = "ws" + url[len("http"):]
    lat: dict[str, list[float]] = {"openpi": [], "http": []}
    timing: dict[str, list[float]] = {"server": [], "policy": []}
    session = requests.Session()
    with connect(ws_url, compression=None, max_size=None) as ws:
        openpi_wire.unpackb(ws.recv())  # the metadata frame

        def openpi_once(i: int) -> None:
            obs = {"observation/image": images[i], "observation/state": states[i], "prompt": "push the cube",
                   "task_id": TASK}
            ws.send(openpi_wire.packb(obs))
            reply = ws.recv()
            if isinstance(reply, str):
                raise RuntimeError(reply)
            out = openpi_wire.unpackb(reply)
            timing["server"].append(out["server_timing"]["infer_ms"])
            timing["policy"].append(out["policy_timing"]["infer_ms"])

        def http_once(i: int) -> None:
            body = {"instructions": ["push the cube"], "task_ids": [TASK], "images": images[i:i + 1],
                    "states": states[i:i + 1]}
            r = session.post(f"{url}/act/batch", data=json_numpy.dumps(body), timeout=60)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            json_numpy.loads(r.text)["actions"]

        for i in range(5):  # warm-up
            openpi_once(i)
            http_once(i)
        for i in range(n_requests):
            for name, once in (("openpi", openpi_once), ("http", http_once))[:: 1 if i % 2 else -1]:
                s = time.perf_counter()
                once(i)
                lat[name].append(time.perf_counter() - s)
    out = {}
    for name, values in lat.items():
        ms = np.asarray(values) * 1e3
        p50 = float(np.percentile(ms, 50))
        out[name] = {"requests": len(ms), "p50_ms": p50, "p99_ms": float(np.percentile(ms, 99)),
                     "overhead_p50_ms": p50 - in_process_p50_ms}
    # where the openpi round trip goes: the server's own time (validation, batcher, backend) and the backend's
    out["openpi"]["server_infer_p50_ms"] = float(np.median(timing["server"]))
    out["openpi"]["policy_infer_p50_ms"] = float(np.median(timing["policy"]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    p.add_argument("--clients", default="1,8,32", help="concurrent client counts (default 1,8,32)")
    p.add_argument("--out", type=Path, default=Path("bench_out/teacher_server.json"))
    p.add_argument("--only", choices=("all", "framing"), default="all",
                   help="framing: only part 3, openpi vs HTTP framing (default all)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    results: dict = {"scripted": {}, "openvla_tiny": {}}

    base = in_process(args.requests, rng)
    results["scripted"]["in_process"] = base
    print(f"scripted in-process: p50 {base['p50_ms']:.2f} ms  p99 {base['p99_ms']:.2f} ms  "
          f"{base['throughput_rps']:.0f} req/s")
    with SpawnedServer("scripted", task=TASK, max_batch=32, batch_wait_ms=0.0) as server:
        r = framing(server.url, args.requests, rng, base["p50_ms"])
    results["framing_224"] = r
    for name, label in (("openpi", "openpi (WebSocket + msgpack)"), ("http", "HTTP /act/batch (json-numpy)")):
        print(f"framing, 224x224x3 image, 1 client, {label:30s}: p50 {r[name]['p50_ms']:.2f} ms  "
              f"p99 {r[name]['p99_ms']:.2f} ms  overhead p50 {r[name]['overhead_p50_ms']:.2f} ms")
    print(f"  openpi: the server's own time p50 {r['openpi']['server_infer_p50_ms']:.2f} ms, of which the backend's "
          f"{r['openpi']['policy_infer_p50_ms']:.2f} ms; the rest of the round trip is the WebSocket transport")
    met = r["openpi"]["overhead_p50_ms"] <= 1.0
    print(f"openpi framing overhead p50: {r['openpi']['overhead_p50_ms']:.2f} ms (target <= 1 ms: "
          f"{'met' if met else 'NOT met'}); HTTP/json-numpy: {r['http']['overhead_p50_ms']:.2f} ms")
    if args.only == "framing":
        return _write(results, args.out)
    with SpawnedServer("scripted", task=TASK, max_batch=32, batch_wait_ms=0.0) as server:
        r = over_http(server.url, 1, args.requests, rng)
        results["scripted"]["http_1_clients_wait_0ms"] = r
        print(f"scripted HTTP,  1 client, --batch-wait-ms 0: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
              f"{r['throughput_rps']:.0f} req/s")
        r = over_http(server.url, 1, args.requests, rng, with_image=False)  # what RemoteTeacher sends this backend
        results["scripted"]["http_1_clients_wait_0ms_no_image"] = r
        print(f"scripted HTTP,  1 client, --batch-wait-ms 0, no image (needs_image=False): p50 {r['p50_ms']:.2f} ms  "
              f"p99 {r['p99_ms']:.2f} ms")
    with SpawnedServer("scripted", task=TASK, max_batch=32, batch_wait_ms=DEFAULT_WAIT_MS) as server:
        for c in [int(x) for x in args.clients.split(",")]:
            r = over_http(server.url, c, args.requests, rng)
            results["scripted"][f"http_{c}_clients"] = r
            print(f"scripted HTTP, {c:2d} clients, --batch-wait-ms {DEFAULT_WAIT_MS:g}: p50 {r['p50_ms']:.2f} ms  "
                  f"p99 {r['p99_ms']:.2f} ms  {r['throughput_rps']:.0f} req/s  "
                  f"mean batch {r['mean_batch_rows']:.1f} rows")
    overhead = results["scripted"]["http_1_clients_wait_0ms"]["p50_ms"] - base["p50_ms"]
    results["scripted"]["http_overhead_p50_ms"] = overhead
    print(f"HTTP overhead p50 (1 client, no batching window): {overhead:.2f} ms  "
          f"(target <= 3 ms: {'met' if overhead <= 3 else 'NOT met'}); a batching window adds up to its length")

    from robot_rl.testing.tiny_vla import save_tiny_vla

    with tempfile.TemporaryDirectory() as tmp:
        model = str(save_tiny_vla(Path(tmp) / "tiny_vla"))
        for label, max_batch in (("unbatched", 1), ("batched", 32)):
            with SpawnedServer("openvla", model=model, unnorm_key="bridge_orig", max_batch=max_batch,
                               batch_wait_ms=5.0) as server:
                r = over_http(server.url, 32, args.requests, rng, with_state=False)
            results["openvla_tiny"][label] = r
            print(f"tiny VLA, 32 clients, {label:9s} (max-batch {max_batch:2d}): p50 {r['p50_ms']:.0f} ms  "
                  f"p99 {r['p99_ms']:.0f} ms  {r['throughput_rps']:.1f} req/s  "
                  f"mean batch {r['mean_batch_rows']:.1f} rows")
    speedup = (results["openvla_tiny"]["batched"]["throughput_rps"]
               / results["openvla_tiny"]["unbatched"]["throughput_rps"])
    results["openvla_tiny"]["batching_speedup"] = speedup
    print(f"batching speed-up: {speedup:.1f}x  (target >= 3x: {'met' if speedup >= 3 else 'NOT met'})")

    return _write(results, args.out)


def _write(results: dict, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
