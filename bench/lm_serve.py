"""Streaming load against an OpenAI-compatible completions endpoint (modelforge serve, or
llama.cpp's server): C concurrent clients, each sending R streaming requests one after
another, with prompts of mixed length cut from a text. Standard library only.

    python lm_serve.py HOST:PORT MODEL CONCURRENCY REQUESTS MAX_TOKENS TEXT_FILE [PATH]

Prints one JSON line: aggregate output tokens/s, time to first token p50/p99 (ms) and
inter-token latency p50/p99 (ms), over every request.
"""
import asyncio
import gzip
import json
import random
import sys
import time


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def one(host, port, path, body):
    """Sends one streaming request; returns (ttft, gaps, tokens)."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    await writer.drain()
    start = time.perf_counter()
    first, last, gaps, tokens = None, None, [], 0
    while True:
        line = await reader.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            break
        event = json.loads(payload)
        if "error" in event:
            raise RuntimeError(event["error"])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        choices = event.get("choices") or []
        if choices and choices[0].get("text"):
            now = time.perf_counter()
            if first is None:
                first = now - start
            else:
                gaps.append(now - last)
            last = now
    writer.close()
    return first, gaps, tokens


async def client(host, port, path, model, requests, max_tokens, prompts, rng, out):
    for _ in range(requests):
        body = {
            "model": model,
            "prompt": rng.choice(prompts),
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": rng.randrange(1 << 30),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        out.append(await one(host, port, path, body))


async def main():
    address, model = sys.argv[1], sys.argv[2]
    concurrency, requests, max_tokens = (int(a) for a in sys.argv[3:6])
    path = sys.argv[7] if len(sys.argv) > 7 else "/v1/completions"
    opener = gzip.open if sys.argv[6].endswith(".gz") else open
    text = opener(sys.argv[6], "rt").read()[:200_000]
    host, port = address.rsplit(":", 1)
    rng = random.Random(1)
    # Mixed lengths: 4 to 40 characters from random places of the text.
    prompts = []
    for _ in range(200):
        at = rng.randrange(len(text) - 64)
        prompts.append(text[at : at + rng.randint(4, 40)])
    results = []
    start = time.perf_counter()
    await asyncio.gather(*(
        client(host, int(port), path, model, requests, max_tokens, prompts,
               random.Random(i), results)
        for i in range(concurrency)
    ))
    elapsed = time.perf_counter() - start
    ttfts = [r[0] for r in results if r[0] is not None]
    gaps = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    print(json.dumps({
        "concurrency": concurrency,
        "requests": len(results),
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed,
        "ttft_p50_ms": percentile(ttfts, 50) * 1e3,
        "ttft_p99_ms": percentile(ttfts, 99) * 1e3,
        "itl_p50_ms": percentile(gaps, 50) * 1e3,
        "itl_p99_ms": percentile(gaps, 99) * 1e3,
    }))


if __name__ == "__main__":
    asyncio.run(main())
