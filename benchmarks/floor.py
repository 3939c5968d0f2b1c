"""The floor of an import, and the official client, against the same server.

`floor`: a bare aiohttp sender of pre-built bodies: every batch-create body (100 contacts,
the 5 columns of `hsbulk bench`) is encoded before the clock starts; N tasks POST them and
read the answers, nothing else. No import can go faster through the same server and core.

`official`: `hubspot-api-client` (a dev dependency), 16 threads of batch create, one
client per thread, the same records.

Each prints one JSON line: records, elapsed_s, records_per_s, cpu_s (this process's CPU
while sending), cpu_us_per_record. The token comes from $HUBSPOT_ACCESS_TOKEN.

    .venv/bin/python benchmarks/floor.py floor|official --base-url URL --records N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BATCH = 100


def properties(n: int, run: str) -> dict[str, str]:
    return {"email": f"u{n}@r{run}.floor.example.com", "firstname": f"First{n}",
            "lastname": f"Last{n}", "company": f"Company {n % 997}", "city": "Springfield"}


def bodies(records: int, run: str) -> list[bytes]:
    """Every batch body, encoded once, as hsbulk sends them (with objectWriteTraceId)."""
    import orjson

    return [orjson.dumps({"inputs": [
        {"properties": properties(n, run), "objectWriteTraceId": str(n + 1)}
        for n in range(start, min(records, start + BATCH))]})
        for start in range(0, records, BATCH)]


async def send_floor(base_url: str, token: str, records: int,
                     concurrency: int) -> tuple[float, float]:
    import aiohttp

    queue = bodies(records, uuid.uuid4().hex[:8])
    queue.reverse()
    url = base_url + "/crm/v3/objects/contacts/batch/create"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status >= 300:
                        raise RuntimeError(f"floor: HTTP {answer.status}")

        started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return started


def send_official(base_url: str, token: str, records: int,
                  threads: int) -> tuple[float, float]:
    from hubspot import HubSpot
    from hubspot.crm.contacts import (
        BatchInputSimplePublicObjectBatchInputForCreate,
        SimplePublicObjectInputForCreate,
    )

    run = uuid.uuid4().hex[:8]
    local = threading.local()

    def send(start: int) -> None:
        if not hasattr(local, "api"):
            local.api = HubSpot(access_token=token, host=base_url)
        batch = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectInputForCreate(properties=properties(n, run))
            for n in range(start, min(records, start + BATCH))])
        local.api.crm.contacts.batch_api.create(
            batch_input_simple_public_object_batch_input_for_create=batch)

    started = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(0, records, BATCH)))
    return started


def measure(send: Callable[[], tuple[float, float]], records: int) -> dict[str, Any]:
    wall, cpu_started = send()  # the clocks as sending began (bodies already built)
    elapsed = time.perf_counter() - wall
    cpu = time.process_time() - cpu_started
    return {"records": records, "elapsed_s": round(elapsed, 3),
            "records_per_s": round(records / elapsed, 1), "cpu_s": round(cpu, 3),
            "cpu_us_per_record": round(cpu / records * 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sender", choices=["floor", "official"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    token = os.environ["HUBSPOT_ACCESS_TOKEN"]
    if args.sender == "floor":
        result = measure(lambda: asyncio.run(send_floor(
            args.base_url, token, args.records, args.concurrency)), args.records)
    else:
        result = measure(lambda: send_official(args.base_url, token, args.records,
                                               args.concurrency), args.records)
    print(json.dumps({"sender": args.sender, **result}), flush=True)


if __name__ == "__main__":
    main()
