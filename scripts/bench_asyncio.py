"""The Python baseline of `fanfare bench fanout`: the classic asyncio.gather pattern.

N concurrent `messages.create` calls with the official `anthropic` SDK (AsyncAnthropic),
branch i using perspective i % 4 as its system prompt and max_tokens 512, then one
merge call whose prompt holds every reply. Prints one JSON line in the same shape as
fanfare's: framework, n, wall_s, overhead_s (wall - 2 x latency), cpu_s, peak_rss_mb,
ok, failed.
"""

import argparse
import asyncio
import json
import resource
import time

import anthropic

TASK = "Our new API will process 1M requests/day, storing all user queries in plain text logs."
PERSPECTIVES = [
    "You are the legal reviewer on a product review panel.",
    "You are the principal engineer on a product review panel.",
    "You are the finance partner on a product review panel.",
    "You are the security reviewer on a product review panel.",
]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--latency-ms", type=int, required=True)
    args = ap.parse_args()
    # The classic pattern, as users write it: the SDK's own client and defaults.
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=args.base_url, timeout=600)

    async def branch(i: int):
        try:
            msg = await client.messages.create(
                model="bench-model", max_tokens=512, system=PERSPECTIVES[i % 4],
                messages=[{"role": "user", "content": TASK}],
            )
            return msg.content[0].text
        except Exception:  # noqa: BLE001 - a failed branch is counted, not raised
            return None

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    replies = await asyncio.gather(*(branch(i) for i in range(args.n)))
    merged = "".join(f"## {i}\n{t}\n" for i, t in enumerate(replies) if t is not None)
    await client.messages.create(
        model="bench-model", max_tokens=512, system="Merge these.",
        messages=[{"role": "user", "content": merged}],
    )
    wall = time.perf_counter() - t0
    ok = sum(1 for r in replies if r is not None)
    print(json.dumps({
        "framework": "python-asyncio", "n": args.n, "wall_s": wall,
        "overhead_s": wall - 2 * args.latency_ms / 1000, "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ok": ok, "failed": args.n - ok,
    }))


if __name__ == "__main__":
    asyncio.run(main())
