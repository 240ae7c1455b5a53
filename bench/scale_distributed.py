"""The scale benchmark's distributed rows (bench/scale.sh --distributed builds the binaries and calls it).

For each N: the same generated corpus as the embedded rows, indexed by the distributed wiring over
this machine's PostgreSQL and RabbitMQ and the Qdrant gRPC test fixture. First the coordinator
alone (`coordinator --no-wait`: scan, record the jobs, publish them), whose peak memory and publish
rate are what grows with N; then one embedder and one writer take the jobs, and the writer's
catalog commit time per batch is read from its metrics. Last, the catalog statements that run once
per page or per batch are EXPLAINed on the filled catalog: each must use an index, not a scan of
the table. One row per N, then the ratios from the smallest to the largest N.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from scale import free_port, make_corpus, timed

BIN, FIXTURE, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]
SIZES = [int(n) for n in sys.argv[4:]]
PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atq"]


def psql(sql, schema):
    return subprocess.run(PG + ["-c", f"SET search_path TO {schema}; {sql}"], stdout=subprocess.PIPE, check=True, text=True).stdout.strip()


def plans(schema, session, root):
    """The statements run per page or per batch, and `status`'s, with the table each reads by a scan, if any."""
    sub = os.path.join(root, "0000")
    job = psql(f"SELECT max(id) FROM training_jobs WHERE session_id = {session}", schema)
    statements = {
        "job page (embedded feed)": f"SELECT * FROM training_jobs WHERE session_id = {session} AND id > {int(job) // 2} AND status IN ('pending','queued','running') ORDER BY id LIMIT 1000",
        "assets of a page": "SELECT * FROM image_assets WHERE id IN (" + ",".join(str(i) for i in range(1000, 1500)) + ")",
        "job statuses (writer)": "SELECT id, status FROM training_jobs WHERE id IN (" + ",".join(str(i) for i in range(1000, 1256)) + ")",
        "job result (writer)": f"UPDATE training_jobs SET status = 'completed' WHERE id = {job} AND status IN ('pending','queued','running')",
        "asset indexed (writer)": "UPDATE image_assets SET training_status = 'trained' WHERE id = 1",
        "session counters (writer)": f"UPDATE training_sessions SET processed_images = processed_images + 1 WHERE id = {session}",
        "mark queued (publish)": f"UPDATE image_assets SET training_status = 'queued' WHERE id = (SELECT asset_id FROM training_jobs WHERE id = {job}) AND training_status = 'pending'",
        "known files of a folder (scan)": f"SELECT * FROM image_assets WHERE path >= '{sub}/' AND path < '{sub}0' ORDER BY path",
        "failed jobs (status)": "SELECT COUNT(*) FROM training_jobs WHERE status = 'failed'",
        "failures (status)": "SELECT a.path, j.error_message FROM image_assets a JOIN training_jobs j ON j.asset_id = a.id "
        "WHERE a.training_status = 'failed' AND j.status = 'failed' ORDER BY a.path, j.completed_at DESC",
    }
    scans = []
    for name, sql in statements.items():
        plan = psql(f"EXPLAIN {sql}", schema)
        # a table of a few rows (the sessions) is read whole whatever its indexes: only the tables
        # that grow with the corpus count
        if re.search(r"Seq Scan on (training_jobs|image_assets|training_evidence)\b", plan):
            scans.append(name)
    return len(statements), scans


def metric_sums(port, name):
    """sum and count of a histogram, by its labels, from a process's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(rf'{name}_(sum|count)\{{stage="(\w+)"\}} (\S+)', line)
        if m:
            out.setdefault(m[2], {})[m[1]] = float(m[3])
    return out


def row(n, work, baseline):
    images = os.path.join(work, "images")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(images)
    make_corpus(images, n)
    stamp = f"{os.getpid()}_{n}_{int(time.time())}"
    schema, prefix = f"scale_{stamp}", f"scale{stamp}"
    port, writer_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "IMGSEARCH__CATALOG__SCHEMA": schema,
        "IMGSEARCH__BROKER__PREFIX": prefix,
        "IMGSEARCH__VECTORS__QDRANT_URL": f"http://127.0.0.1:{port}",
        "IMGSEARCH__MODEL__NAME": MODEL,
        "IMGSEARCH__COORDINATOR__METRICS_ADDR": "127.0.0.1:0",
        "IMGSEARCH__EMBEDDER__METRICS_ADDR": "127.0.0.1:0",
        "IMGSEARCH__WRITER__METRICS_ADDR": f"127.0.0.1:{writer_port}",
        "IMGSEARCH_LOG": "warn",
    })
    procs = [subprocess.Popen([FIXTURE, "--addr", f"127.0.0.1:{port}", "--data", os.path.join(work, "qdrant")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the Qdrant fixture did not listen within a minute")
        _, rss, anon, out = timed([BIN, "coordinator", images, "--no-wait", "--json"], env=env)
        report = json.loads(out)
        assert report["published"] == n, report
        session = report["sessionId"]
        started = time.monotonic()
        for role in ("embedder", "writer"):
            procs.append(subprocess.Popen([BIN, role], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while int(psql(f"SELECT COUNT(*) FROM training_jobs WHERE session_id = {session} AND status IN ('completed', 'failed')", schema)) < n:
            if time.monotonic() - started > 3600:
                raise RuntimeError("the distributed run did not finish within an hour")
            time.sleep(1)
        pipeline = time.monotonic() - started
        stages = metric_sums(writer_port, "imgsearch_writer_batch_duration_seconds")
        counted, scans = plans(schema, session, os.path.realpath(images))
        per_batch = lambda s: 1000 * stages.get(s, {}).get("sum", 0) / max(1, stages.get(s, {}).get("count", 0))
        return {
            "n": n,
            "scan_fps": n / max(report["scanSeconds"], 1e-9),
            "publish_ps": n / max(report["publishSeconds"], 1e-9),
            "coord_rss": rss,
            "coord_anon": anon,
            "anon_per_image": max(0.0, (anon - baseline) / n) if baseline else 0.0,
            "e2e_ips": n / pipeline,
            "catalog_ms": per_batch("commit"),
            "vectors_ms": per_batch("upsert"),
            "batches": int(stages.get("commit", {}).get("count", 0)),
            "plans": f"{counted - len(scans)}/{counted} indexed" + (f" (scan: {', '.join(scans)})" if scans else ""),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        subprocess.run(PG + ["-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for q in ("jobs", "jobs.dead", "embeddings", "embeddings.dead"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{prefix}.{q}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main():
    work = tempfile.mkdtemp(prefix="imgsearch-scale-dist-")
    try:
        base = row(100, os.path.join(work, "base"), None)["coord_anon"]
        print(f"{os.cpu_count()} cores, tiny CLIP (64-d), 64x64 PNGs; distributed: PostgreSQL, RabbitMQ, the Qdrant gRPC fixture, 1 embedder, 1 writer")
        print("coordinator: scan and publish alone (--no-wait); anon: its peak anonymous memory, +B/img beyond a 100-image run's; "
              "writer: mean catalog commit and vector upsert per batch; plans: per-page and per-batch statements served by an index")
        head = f"{'N':>8} {'scan f/s':>9} {'publish/s':>9} {'RSS MB':>7} {'anon MB':>7} {'+B/img':>6} {'e2e i/s':>8} {'commit ms':>9} {'upsert ms':>9} {'batches':>7}  plans"
        print(head, flush=True)
        rows = []
        for n in SIZES:
            r = row(n, os.path.join(work, "run"), base)
            rows.append(r)
            print(f"{n:>8} {r['scan_fps']:>9.0f} {r['publish_ps']:>9.0f} {r['coord_rss'] / 2**20:>7.0f} {r['coord_anon'] / 2**20:>7.0f} {r['anon_per_image']:>6.0f} "
                  f"{r['e2e_ips']:>8.0f} {r['catalog_ms']:>9.1f} {r['vectors_ms']:>9.1f} {r['batches']:>7}  {r['plans']}", flush=True)
        if len(rows) > 1:
            a, b = rows[0], rows[-1]
            print(f"growth from {a['n']} to {b['n']} images ({b['n'] / a['n']:.0f}x the corpus): coordinator anon {b['coord_anon'] / max(a['coord_anon'], 1):.2f}x, "
                  f"publish rate {b['publish_ps'] / a['publish_ps']:.2f}x, writer commit per batch {b['catalog_ms'] / max(a['catalog_ms'], 1e-9):.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


main()
