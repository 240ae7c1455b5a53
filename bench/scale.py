"""The scale benchmark's driver (bench/scale.sh builds the binary and calls it).

For each N: makes N distinct 64x64 PNGs (a few random rectangles each; pure Python, no imaging
library), indexes them with the embedded default, and measures what grows with the corpus. Prints
one row per N, then the ratios from the smallest to the largest N.
"""

import http.client
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

BIN, MODEL = (sys.argv[1], sys.argv[2]) if __name__ == "__main__" else (None, None)
QUERIES = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a photo of a cat", "something dark"]


def png(width, height, rng):
    """A PNG of a background and three rectangles in random colours."""
    bg = bytes(rng.randrange(256) for _ in range(3))
    rows = [bytearray(bg * width) for _ in range(height)]
    for _ in range(3):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = min(width, x0 + rng.randrange(8, 40)), min(height, y0 + rng.randrange(8, 40))
        colour = bytes(rng.randrange(256) for _ in range(3))
        for y in range(y0, y1):
            rows[y][x0 * 3 : x1 * 3] = colour * (x1 - x0)
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def make_corpus(root, n):
    rng = random.Random(n)
    for i in range(n):
        d = os.path.join(root, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:07d}.png"), "wb") as f:
            f.write(png(64, 64, rng))


def timed(args, env=None):
    """(wall seconds, peak RSS in bytes, peak anonymous RSS in bytes, stdout) of a command.

    The peak RSS is the kernel's (its high-water mark, through /usr/bin/time); it counts the pages
    of the vector store's memory-mapped files the process touched, which are the page cache's and
    go under memory pressure. The anonymous part (heap, stacks: what the process itself holds) is
    sampled from /proc every 20 ms.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "--output", rss.name] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        anon, done = [0], threading.Event()

        def sample():
            child = None
            while not done.wait(0.02):
                try:
                    child = child or int(open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()[0])
                    for line in open(f"/proc/{child}/status"):
                        if line.startswith("RssAnon:"):
                            anon[0] = max(anon[0], int(line.split()[1]) * 1024)
                except (OSError, IndexError, ValueError):
                    pass

        sampler = threading.Thread(target=sample)
        sampler.start()
        out, _ = p.communicate()
        done.set()
        sampler.join()
        wall = time.monotonic() - start
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, args)
        peak_kb = int(rss.read().strip().splitlines()[-1])
    return wall, peak_kb * 1024, anon[0], out.decode()


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs if not os.path.islink(os.path.join(d, f)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def latencies(port, concurrency, total, filtered):
    """p50 and p99 of `total` searches sent by `concurrency` clients, in ms."""
    times, errors, lock = [], [], threading.Lock()
    per = total // concurrency

    def client(k):
        try:
            ask(k)
        except Exception as e:  # noqa: BLE001 - re-raised after the join
            with lock:
                errors.append(e)

    def ask(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(per):
            body = {"query": QUERIES[(k + i) % len(QUERIES)], "limit": 50}
            if filtered:
                body["filters"] = {"fromDate": "2000-01-01", "toDate": "2100-01-01"}
            start = time.monotonic()
            conn.request("POST", "/api/v1/search", json.dumps(body), {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            with lock:
                times.append((time.monotonic() - start) * 1000)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def serve_rows(data):
    port = free_port()
    server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data, "--model", MODEL, "--max-heavy-requests", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("serve did not answer /health within a minute")
        latencies(port, 1, 50, False)  # warm up: the model, the page cache
        # 1,000 searches a cell: a p99 of 10 samples, not 2
        cells = {f"c{c}{'f' if f else ''}": latencies(port, c, 1000, f) for c in (1, 8) for f in (False, True)}
        # the CLI beside a running server asks it (serve.json in the data dir), loading nothing
        cells["cli_via_serve_s"] = min(timed([BIN, "search", "a red circle", "--data-dir", data, "--model", MODEL])[0] for _ in range(3))
        return cells
    finally:
        server.terminate()
        server.wait()


def row(n, work, baseline):
    images, data = os.path.join(work, "images"), os.path.join(work, "data")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(images)
    make_corpus(images, n)
    wall, rss, anon, out = timed([BIN, "index", images, "--data-dir", data, "--model", MODEL, "--json"])
    summary = json.loads(out)
    assert summary["indexed"] == n and summary["failed"] == 0, summary
    scan = summary["scanSeconds"]
    rerun, _, _, out = timed([BIN, "index", images, "--data-dir", data, "--model", MODEL, "--json"])
    assert json.loads(out)["skippedUnchanged"] == n
    # a process of its own that loads the store (no server runs): the first one after `index`,
    # then the best of three more
    searches = [timed([BIN, "search", "a red circle", "--data-dir", data, "--model", MODEL])[0] for _ in range(4)]
    status = json.loads(subprocess.run([BIN, "status", "--data-dir", data, "--json"], stdout=subprocess.PIPE, check=True).stdout)
    serve = serve_rows(data)
    dim_bytes = 4 * 64
    return {
        "n": n,
        "scan_fps": n / max(scan, 1e-9),
        "index_ips": n / wall,
        "embed_ips": summary["imagesPerSecond"],
        "peak_rss": rss,
        "peak_anon": anon,
        "rss_per_image": max(0.0, (rss - baseline[0]) / n - dim_bytes) if baseline else 0.0,
        "anon_per_image": max(0.0, (anon - baseline[1]) / n - dim_bytes) if baseline else 0.0,
        "rerun_s": rerun,
        "cli_search_s": searches[0],
        "cli_search_best_s": min(searches[1:]),
        "indexed": status["indexedVectors"],
        "serve": serve,
        "data_mb": du(data) / 2**20,
    }


def main(sizes):
    # SCALE_WORK=DIR: work there and keep the largest N's images and data dir afterwards
    keep = os.environ.get("SCALE_WORK")
    work = keep or tempfile.mkdtemp(prefix="imgsearch-scale-")
    try:
        # the RSS of indexing 100 images: what the process needs whatever the corpus
        b = row(100, os.path.join(work, "base"), None)
        base = (b["peak_rss"], b["peak_anon"])
        rows = []
        head = f"{'N':>8} {'scan f/s':>9} {'index i/s':>9} {'embed i/s':>9} {'RSS MB':>7} {'+B/img':>6} {'anon MB':>7} {'+B/img':>6} {'rerun s':>8} {'CLI s':>11} {'CLI srv s':>9} {'HNSW':>8} " \
               f"{'c1 p50/p99':>12} {'c1+f p50/p99':>13} {'c8 p50/p99':>12} {'c8+f p50/p99':>13} {'data MB':>8}"
        print(f"{os.cpu_count()} cores, tiny CLIP (64-d), 64x64 PNGs, embedded default; serve latencies in ms")
        print("RSS: peak resident memory, the vector store's mapped files (page cache) included; anon: its anonymous part (heap), sampled; "
              "+B/img: beyond a 100-image run's, per image, less the 256 bytes of the vector;")
        print("  CLI s: `imgsearch search` alone (it loads the store), first after `index`/best of 3 more; CLI srv s: beside a running `serve`, which it asks")
        print("  "
              "+f: with a date filter (matching every image: the filter's cost, not its selectivity)")
        print(head, flush=True)
        for n in sizes:
            r = row(n, os.path.join(work, "run"), base)
            rows.append(r)
            s = r["serve"]
            lat = lambda k: f"{s[k][0]:.1f}/{s[k][1]:.1f}"
            print(f"{n:>8} {r['scan_fps']:>9.0f} {r['index_ips']:>9.0f} {r['embed_ips']:>9.0f} {r['peak_rss'] / 2**20:>7.0f} {r['rss_per_image']:>6.0f} {r['peak_anon'] / 2**20:>7.0f} {r['anon_per_image']:>6.0f} {r['rerun_s']:>8.2f} "
                  f"{r['cli_search_s']:>5.2f}/{r['cli_search_best_s']:<5.2f} {s['cli_via_serve_s']:>9.2f} {r['indexed']:>8} {lat('c1'):>12} {lat('c1f'):>13} {lat('c8'):>12} {lat('c8f'):>13} {r['data_mb']:>8.1f}", flush=True)
        if len(rows) > 1:
            a, b = rows[0], rows[-1]
            print(f"growth from {a['n']} to {b['n']} images ({b['n'] / a['n']:.0f}x the corpus):")
            print(f"  scan files/s {b['scan_fps'] / a['scan_fps']:.2f}x, index images/s {b['index_ips'] / a['index_ips']:.2f}x, peak RSS {b['peak_rss'] / a['peak_rss']:.2f}x (anon {b['peak_anon'] / max(a['peak_anon'], 1):.2f}x), "
                  f"unchanged re-run {b['rerun_s'] / a['rerun_s']:.2f}x, CLI search {b['cli_search_best_s'] / a['cli_search_best_s']:.2f}x (beside serve {b['serve']['cli_via_serve_s'] / a['serve']['cli_via_serve_s']:.2f}x)")
            for k, label in (("c1", "c=1"), ("c1f", "c=1 filtered"), ("c8", "c=8"), ("c8f", "c=8 filtered")):
                print(f"  serve {label}: p50 {b['serve'][k][0] / a['serve'][k][0]:.2f}x, p99 {b['serve'][k][1] / a['serve'][k][1]:.2f}x")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main([int(n) for n in sys.argv[3:]])
