"""The anchor of the query benchmark: the two endpoints of bench/bench_queries.sh as they are
usually written in Python, FastAPI on uvicorn over an asyncpg pool, calling the same SQL
functions with the same tenant binding as `constellation queries` (schema "query", role
constellation_query). Authentication is a constant bearer token compared in memory, cheaper
than the C service's API key check, so the comparison favours the anchor.

Run: BENCH_DSN=... BENCH_TENANT=... BENCH_TOKEN=... uvicorn bench.anchors.fastapi_app:app
"""
import os

import asyncpg
from fastapi import FastAPI, Header, HTTPException, Response

DSN = os.environ["BENCH_DSN"]
TENANT = os.environ["BENCH_TENANT"]
TOKEN = "Bearer " + os.environ["BENCH_TOKEN"]
POOL_SIZE = int(os.environ.get("BENCH_POOL", "4"))

app = FastAPI()
pool = None

LIST_SQL = ("SELECT items, next_us, next_id FROM query.jobs_page($1, NULL, NULL, NULL, NULL, "
            "NULL, NULL, NULL, NULL, false, NULL, NULL, $2::int)")


@app.on_event("startup")
async def startup():
    global pool
    pool = await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE)


def check(authorization):
    if authorization != TOKEN:
        raise HTTPException(status_code=401, detail="unauthenticated")


@app.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, authorization: str = Header(None)):
    check(authorization)
    async with pool.acquire() as conn:
        text = await conn.fetchval("SELECT query.job_get($1, $2)", TENANT, job_id)
    if text is None:
        raise HTTPException(status_code=404, detail="not found")
    return Response(content=text, media_type="application/json")


@app.get("/v1/jobs")
async def list_jobs(limit: int = 50, authorization: str = Header(None)):
    check(authorization)
    if limit < 1 or limit > 200:
        raise HTTPException(status_code=400, detail="limit")
    async with pool.acquire() as conn:
        row = await conn.fetchrow(LIST_SQL, TENANT, limit)
    # The page comes ready from PostgreSQL, as in the C service: pass it through.
    next_cursor = "null" if row["next_id"] is None else '"next"'
    body = '{"items":%s,"next_cursor":%s,"limit":%d}' % (row["items"], next_cursor, limit)
    return Response(content=body, media_type="application/json")
