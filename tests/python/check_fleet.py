#!/usr/bin/env python3
"""Checks a GPU fleet run from the event log alone (tests/cli/test_fleet.sh).

Usage:
  check_fleet.py status SCHEMAS JOBS_DUMP --tenant ID=WEIGHT...
  check_fleet.py check SCHEMAS JOBS_DUMP FLEET_DUMP LOGS_DUMP --model M --jobs N --tenant ID=WEIGHT...

The dumps are kcat output (-f '%t %p %o %h\\n%R%s', read_committed): a text line with the topic,
partition, offset and headers (n=v CSV), then the payload length as a big-endian int32 and the
payload, an Avro single object (C3 01, the CRC-64-AVRO fingerprint of the writer schema, Avro
binary). Each payload is decoded with fastavro, an implementation independent of the services',
from the schema in SCHEMAS whose fingerprint it names.

status prints "<succeeded> <ended otherwise>" over the jobs of the given tenants.

check asserts, over the jobs of the given tenants and the GPUs of model M, and exits 1 naming
every violation:
  - there are N jobs, each succeeded after exactly one run, which ended SUCCEEDED, and no worker
    of the fleet was lost;
  - no GPU is ever held by two jobs: replaying GpusReserved / GpusReleased of each
    worker in log order, no reservation takes a GPU another job holds and no release frees a GPU
    the job does not hold; by time, the reservation intervals of a GPU [GpusReserved.at,
    GpusReleased.at) are disjoint, and so are the run intervals [RunStarted.started_at,
    RunFinished.finished_at] of the jobs assigned to it; every run lies within the reservation of
    its GPUs, and every reservation of the tenants' jobs is released at the end (a job another
    test left queued without a model may run on these GPUs too: it counts in the overlaps);
  - every job printed the GPUs it was given (CUDA_VISIBLE_DEVICES, on constellation.jobs.logs);
  - fair share (see fair_share below): within the window in which all tenants have jobs queued,
    each tenant's share of the GPU-seconds run is within 10 % (relative) of its weight's share;
    and for at most 20 % of the window's running part were a tenant's queued jobs all of lower
    priority than another's (it then waits whatever its share, and the window would not measure
    fair share).
"""
import argparse
import io
import json
import os
import struct
import sys

try:
    import fastavro
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
except ImportError:
    sys.exit("fastavro is not installed: run `make deps` (it creates .venv from "
             "infra/local/requirements.txt)")

TOLERANCE = 0.10
# Most of the window's running part that a tenant may spend behind another's higher priority.
MAX_BEHIND = 0.20


def plain(schema):
    """The schema without logicalType annotations, so timestamps decode to integers."""
    if isinstance(schema, dict):
        return {k: plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain(v) for v in schema]
    return schema


def load_schemas(root):
    """fingerprint (hex, as the single-object header carries it) -> parsed schema."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".avsc"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                raw = json.load(f)
            fp = fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
            out[fp] = parse_schema(plain(raw), _write_hint=False)
    return out


def read_dump(path, schemas, keep=None):
    """Yields (topic, partition, offset, headers, value) in the dump's order; value is None for a
    record whose headers keep (when given) refuses: it is not decoded."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl].decode("utf-8", "replace")
        pos = nl + 1
        (size,) = struct.unpack(">i", data[pos:pos + 4])
        pos += 4
        payload = data[pos:pos + max(size, 0)]
        pos += max(size, 0)
        topic, partition, offset, *rest = line.split(" ", 3)
        headers = {}
        for item in (rest[0] if rest else "").split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                headers[k] = v
        value = None
        if keep is not None and not keep(headers):
            pass
        elif len(payload) > 10 and payload[:2] == b"\xc3\x01":
            schema = schemas.get(payload[2:10].hex())
            if schema is None:
                raise SystemExit(f"{topic}/{partition}@{offset}: no schema has fingerprint "
                                 f"{payload[2:10].hex()}")
            value = fastavro.schemaless_reader(io.BytesIO(payload[10:]), schema, None)
        yield topic, int(partition), int(offset), headers, value


def short_type(headers):
    t = headers.get("ce_type", "")
    parts = t.split(".")
    return parts[-2] if len(parts) >= 2 else t


class Job:
    def __init__(self, job_id, tenant, spec):
        self.id = job_id
        self.tenant = tenant
        self.spec = spec
        self.queued = []  # [start, end or None] while waiting to be assigned
        self.runs = {}  # run id -> dict
        self.run_order = []
        self.end = None  # the terminal event's short type


def read_jobs(path, schemas, tenants):
    jobs = {}
    for _, _, _, h, v in read_dump(path, schemas, lambda h: h.get("cstl_tenant") in tenants):
        if v is None:
            continue
        t = short_type(h)
        if t == "JobSubmitted":
            if v["tenant_id"] in tenants and v["job_id"] not in jobs:
                jobs[v["job_id"]] = Job(v["job_id"], v["tenant_id"], v)
            continue
        j = jobs.get(v.get("job_id"))
        if j is None:
            continue
        if t in ("JobAdmitted", "JobRequeued"):
            j.queued.append([v["at"], None])
        elif t == "JobAssigned":
            if j.queued and j.queued[-1][1] is None:
                j.queued[-1][1] = v["at"]
            j.runs[v["run_id"]] = {"worker": v["worker_id"], "gpus": list(v["gpu_uuids"]),
                                  "assigned_at": v["at"]}
            j.run_order.append(v["run_id"])
        elif t == "RunStarted" and v["run_id"] in j.runs:
            j.runs[v["run_id"]]["started_at"] = v["started_at"]
        elif t == "RunFinished" and v["run_id"] in j.runs:
            j.runs[v["run_id"]].update(finished_at=v["finished_at"], outcome=v["outcome"],
                                       gpu_seconds=v["gpu_seconds"])
        elif t in ("JobSucceeded", "JobFailed", "JobCancelled", "JobTimedOut", "JobRejected"):
            j.end = t
    return jobs


def parse_tenants(items):
    out = {}
    for item in items:
        tid, w = item.split("=", 1)
        out[tid] = float(w)
    return out


def overlaps(intervals):
    """Pairs of intervals (start, end, who) of different owners that overlap; end None = open."""
    bad = []
    ivs = sorted(intervals, key=lambda x: (x[0], x[1] if x[1] is not None else float("inf")))
    last = None  # the interval reaching furthest so far
    for iv in ivs:
        if last is not None and iv[2] != last[2]:
            last_end = last[1] if last[1] is not None else float("inf")
            if iv[0] < last_end:
                bad.append((last, iv))
        if last is None or (last[1] is not None and (iv[1] is None or iv[1] > last[1])):
            last = iv
    return bad


def fair_share(jobs, tenants):
    """The window in which every tenant has work queued, and each tenant's GPU-seconds in it.

    A job is queued from its JobAdmitted (or JobRequeued) to its JobAssigned. The window opens at
    the first instant at which every tenant has a job queued and closes at the first instant
    after that at which one of them has none. A run's GPU-seconds in the window are gpu_count x
    the length of [started_at, finished_at] within it. Returns (start, end, {tenant:
    GPU-seconds}, behind): behind is how long in the window some tenant's queued jobs were all
    of a lower priority than another's (priorities are strict: it waited whatever its share).
    """
    edges = {}
    for j in jobs.values():
        for start, end in j.queued:
            edges.setdefault(start, []).append((1, j.tenant, j.spec["priority"]))
            if end is not None:
                edges.setdefault(end, []).append((-1, j.tenant, j.spec["priority"]))
    queued = {t: {} for t in tenants}  # tenant -> priority -> queued jobs
    start = end = behind_since = None
    behind = 0
    for at in sorted(edges):  # every change at one instant together
        for delta, tenant, prio in edges[at]:
            n = queued[tenant].get(prio, 0) + delta
            if n:
                queued[tenant][prio] = n
            else:
                queued[tenant].pop(prio, None)
        tops = [max(q) if q else None for q in queued.values()]
        if start is None:
            if None not in tops:
                start = at
        elif None in tops:
            end = at
            break
        if start is not None:
            if behind_since is None and len(set(tops)) > 1:
                behind_since = at
            elif behind_since is not None and len(set(tops)) == 1:
                behind += at - behind_since
                behind_since = None
    if start is None or end is None:
        return start, end, {}, 0
    if behind_since is not None:
        behind += end - behind_since
    used = {t: 0.0 for t in tenants}
    for j in jobs.values():
        for r in j.runs.values():
            if "started_at" not in r or "finished_at" not in r:
                continue
            lo, hi = max(r["started_at"], start), min(r["finished_at"], end)
            if hi > lo:
                used[j.tenant] += (hi - lo) / 1e6 * j.spec["gpu_count"]
    return start, end, used, behind / 1e6


def check(args):
    schemas = load_schemas(args.schemas)
    tenants = parse_tenants(args.tenant)
    problems = []
    jobs = read_jobs(args.jobs_dump, schemas, tenants)

    # every job succeeded, in one run
    if len(jobs) != args.jobs:
        problems.append(f"{len(jobs)} jobs of the tenants are on the log, not {args.jobs}")
    for j in jobs.values():
        runs = [j.runs[r] for r in j.run_order]
        if j.end != "JobSucceeded":
            problems.append(f"job {j.id} ended {j.end or 'not at all'}")
        elif len(runs) != 1 or runs[0].get("outcome") != "SUCCEEDED":
            problems.append(f"job {j.id} succeeded after {len(runs)} runs: {runs}")

    # the fleet: the workers with GPUs of the model, and every reservation on them in log order
    gpus = set()
    workers = set()
    fleet = []
    for _, p, o, h, v in read_dump(args.fleet_dump, schemas):
        if v is None:
            continue
        t = short_type(h)
        if t == "WorkerRegistered" and any(g["model"] == args.model for g in v["gpus"]):
            workers.add(v["worker_id"])
            gpus.update(g["uuid"] for g in v["gpus"])
        if t in ("GpusReserved", "GpusReleased", "WorkerLost") and v["worker_id"] in workers:
            fleet.append((p, o, t, v))
    fleet.sort(key=lambda e: (e[0], e[1]))
    holder = {}
    held = {}  # gpu -> list of [reserved at, released at or None, job]
    reservations = releases = 0
    for _, o, t, v in fleet:
        if t == "WorkerLost":
            problems.append(f"worker {v['worker_id']} was lost")
            continue
        for g in v["gpu_uuids"]:
            if t == "GpusReserved":
                reservations += 1
                if holder.get(g) not in (None, v["job_id"]):
                    problems.append(f"GPU {g} reserved for job {v['job_id']} while job "
                                    f"{holder[g]} holds it (offset {o})")
                holder[g] = v["job_id"]
                held.setdefault(g, []).append([v["at"], None, v["job_id"]])
            else:
                releases += 1
                if holder.get(g) != v["job_id"]:
                    problems.append(f"GPU {g} released for job {v['job_id']}, held by "
                                    f"{holder.get(g)} (offset {o})")
                holder[g] = None
                for iv in reversed(held.get(g, [])):
                    if iv[2] == v["job_id"] and iv[1] is None:
                        iv[1] = v["at"]
                        break
    for g, ivs in held.items():
        for a, b in overlaps([tuple(iv) for iv in ivs]):
            problems.append(f"GPU {g}: reservations of jobs {a[2]} and {b[2]} overlap in time")
        for iv in ivs:
            if iv[1] is None and iv[2] in jobs:  # another test's job may still run here
                problems.append(f"GPU {g} is still held by job {iv[2]}")
    run_ivs = {}
    for j in jobs.values():
        for rid, r in j.runs.items():
            if "started_at" not in r or "finished_at" not in r:
                continue
            for g in r["gpus"]:
                if g not in gpus:
                    problems.append(f"job {j.id} ran on GPU {g}, not one of the fleet's")
                run_ivs.setdefault(g, []).append((r["started_at"], r["finished_at"], j.id))
                inside = any(iv[2] == j.id and iv[0] <= r["started_at"] and iv[1] is not None
                             and r["finished_at"] <= iv[1] for iv in held.get(g, []))
                if not inside:
                    problems.append(f"run {rid} of job {j.id} on GPU {g} is not within a "
                                    "reservation of that GPU for the job")
    for g, ivs in run_ivs.items():
        for a, b in overlaps(ivs):
            problems.append(f"GPU {g}: the runs of jobs {a[2]} and {b[2]} overlap in time")

    # what each job printed: "fleet <job id> <CUDA_VISIBLE_DEVICES>"
    printed = {}
    for _, _, _, _, v in read_dump(args.logs_dump, schemas,
                                   lambda h: h.get("cstl_tenant") in tenants):
        if v is not None and v["job_id"] in jobs and v["line"].startswith("fleet "):
            parts = v["line"].split(" ")
            if len(parts) == 3 and parts[1] == v["job_id"]:
                printed[v["job_id"]] = parts[2]
    for j in jobs.values():
        if not j.run_order:
            continue
        want = j.runs[j.run_order[-1]]["gpus"]
        got = printed.get(j.id)
        if got is None:
            problems.append(f"job {j.id} printed no line on constellation.jobs.logs")
        elif sorted(got.split(",")) != sorted(want):
            problems.append(f"job {j.id} ran with CUDA_VISIBLE_DEVICES={got}, assigned {want}")

    # fair share
    start, end, used, behind = fair_share(jobs, tenants)
    total_w = sum(tenants.values())
    total = sum(used.values())
    if start is None or end is None or total <= 0:
        problems.append(f"no window in which every tenant had jobs queued ({start}, {end})")
    else:
        first_run = max(start, min(r["started_at"] for j in jobs.values()
                                   for r in j.runs.values() if "started_at" in r))
        print(f"fleet: window {(end - start) / 1e6:.1f} s, ending {(end - first_run) / 1e6:.1f} s "
              f"after the first run started ({behind:.1f} s of it with a tenant's queued jobs "
              f"all of lower priority than another's); {total:.1f} GPU-seconds ran in it, "
              f"{total / ((end - first_run) / 1e6):.1f} GPUs busy on average")
        if behind > MAX_BEHIND * (end - first_run) / 1e6:
            problems.append(f"for {behind:.1f} s of the window a tenant's queued jobs were all of "
                            "lower priority than another's: it waited whatever its share, so "
                            "the window does not measure fair share (keep the higher priority "
                            "levels of the mix small)")
        names = {t: f"tenant {i + 1}" for i, t in enumerate(tenants)}
        for t, w in tenants.items():
            share, want = used[t] / total, w / total_w
            dev = (share - want) / want
            print(f"fleet: {names[t]} weight {w:g}: {used[t]:6.1f} GPU-s, share {share:.3f}, "
                  f"weight's share {want:.3f}, deviation {dev * 100:+.1f} %")
            if abs(dev) > TOLERANCE:
                problems.append(f"{names[t]} ({t}) had {share:.3f} of the GPU-seconds in the "
                                f"window, its weight's share is {want:.3f}: off by "
                                f"{dev * 100:+.1f} %, more than {TOLERANCE * 100:.0f} %")
    print(f"fleet: {len(jobs)} jobs, {sum(len(j.runs) for j in jobs.values())} runs, "
          f"{len(workers)} workers, {len(gpus)} GPUs, {reservations} GPU reservations and "
          f"{releases} releases checked")
    for p in problems[:40]:
        print(f"FAIL: {p}", file=sys.stderr)
    if len(problems) > 40:
        print(f"FAIL: ... and {len(problems) - 40} more", file=sys.stderr)
    return 1 if problems else 0


def status(args):
    jobs = read_jobs(args.jobs_dump, load_schemas(args.schemas), parse_tenants(args.tenant))
    ok = sum(1 for j in jobs.values() if j.end == "JobSucceeded")
    other = sum(1 for j in jobs.values() if j.end not in (None, "JobSucceeded"))
    print(ok, other)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["status", "check"])
    ap.add_argument("schemas")
    ap.add_argument("jobs_dump")
    ap.add_argument("fleet_dump", nargs="?")
    ap.add_argument("logs_dump", nargs="?")
    ap.add_argument("--model")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--tenant", action="append", required=True)
    args = ap.parse_args()
    if args.mode == "status":
        return status(args)
    if not (args.fleet_dump and args.logs_dump and args.model and args.jobs):
        ap.error("check needs the fleet and logs dumps, --model and --jobs")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
