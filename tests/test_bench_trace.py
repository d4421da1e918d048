"""`kimi-deploy bench --workload trace`: a Mooncake-format trace replayed through the real CLI against a
recording server (a real aiohttp server that keeps every request body and its arrival time, and counts
tokens with a real tokenizer: the byte-level BPE tiny-k2 is built with, trained here, behind transformers'
chat template rendering, the way vLLM renders a chat request). Checked against what the server received:
send times match timestamp x --time-scale, equal timestamps go out together, max_tokens = output_length,
templated prompts are exactly input_length tokens, requests sharing leading hash ids share that exact
token prefix and differ after it, and the prefix-cache hit rates (the trace's ideal and the engine's,
from the server's vLLM-named counters) are reported. Then the shared Mooncake sample (its first rows), bad
input, and an end-to-end replay on real vLLM serving tiny-k2."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web

from .conftest import ROOT, Server, assert_clean_error, free_port, run_cli, run_cli_timed

# the first 60 rows of Mooncake's synthetic trace, kept in the repository (tests/data/README.md)
SAMPLE = ROOT / "tests" / "data" / "mooncake-synthetic-trace-first60.jsonl"
BLOCK = 512
PAGE = 16  # the recorder's prefix cache works on 16-token pages, like vLLM's default block size


class Recorder:
    """An OpenAI-compatible server that records what it received. /tokenize and usage.prompt_tokens use
    the real tokenizer; /metrics exports vLLM's prefix-cache counter names, counted by a real
    prefix cache over 16-token pages of the prompts it received (a page hits when its whole chain of
    pages was seen before; the last prompt token is never a hit, as in vLLM)."""

    def __init__(self, tok: Any, model: str = "rec", tokenize: bool = True) -> None:
        self.tok, self.model, self.has_tokenize = tok, model, tokenize
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.pages: set[int] = set()
        self.queries = self.hits = 0

    def ids(self, messages: list[dict[str, Any]], kwargs: dict[str, Any] | None = None) -> list[int]:
        return list(self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 **(kwargs or {}))["input_ids"])

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        if self.has_tokenize:
            app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": self.model}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text="# TYPE vllm:cache_config_info gauge\n"
                                 'vllm:cache_config_info{block_size="16",enable_prefix_caching="True",engine="0"} 1.0\n'
                                 "# TYPE vllm:prefix_cache_queries counter\n"
                                 f"vllm:prefix_cache_queries_total{{engine=\"0\"}} {self.queries}\n"
                                 "# TYPE vllm:prefix_cache_hits counter\n"
                                 f"vllm:prefix_cache_hits_total{{engine=\"0\"}} {self.hits}\n")

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            ids = self.ids(body["messages"], body.get("chat_template_kwargs"))
        else:
            ids = self.tok(body["prompt"], add_special_tokens=body.get("add_special_tokens", True)).input_ids
        return web.json_response({"count": len(ids), "tokens": ids, "max_model_len": 1 << 20})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        t = time.monotonic()  # before the body is read: the arrival
        body = await request.json()
        self.received.append((t, body))
        ids = self.ids(body["messages"], body.get("chat_template_kwargs"))
        parent, hit = 0, True
        for p in range(len(ids) // PAGE):
            parent = hash((parent, tuple(ids[p * PAGE:(p + 1) * PAGE])))
            if hit and parent in self.pages and (p + 1) * PAGE < len(ids):
                self.hits += PAGE
            else:
                hit = False
            self.pages.add(parent)
        self.queries += len(ids)
        n = body["max_tokens"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            chunk = {"choices": [{"index": 0, "delta": {"content": f" x{i}"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp


@pytest.fixture(scope="module")
def real_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tiny-k2's tokenizer (byte-level BPE, Kimi's special tokens and chat template), trained here on
    tiny-k2's corpus, loaded by transformers."""
    from transformers import AutoTokenizer

    from kimi_deploy.tiny.model import _corpus
    from kimi_deploy.tiny.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(_corpus(0), d)
    return AutoTokenizer.from_pretrained(str(d))


@pytest.fixture(params=[True], ids=["tokenize"])
def recorder(real_tokenizer: Any, request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, str]]:
    rec = Recorder(real_tokenizer, tokenize=request.param)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(rec.app())
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield rec, f"http://127.0.0.1:{port}/v1"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def _bench(url: str, out: Path, *args: str) -> dict:
    proc = run_cli("bench", "--base-url", url, "--model", "rec", "--output", str(out), "--workload", "trace",
                   *args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "summary.json").read_text())


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(ts: float, n_in: int, n_out: int, ids: list[int]) -> dict[str, Any]:
    assert len(ids) == math.ceil(n_in / BLOCK)
    return {"timestamp": ts, "input_length": n_in, "output_length": n_out, "hash_ids": ids}


def _ideal(rows: list[dict[str, Any]]) -> float:
    """The trace's ideal token hit rate, by brute force over id-chain prefixes (independent of the code)."""
    seen: set[tuple[int, ...]] = set()
    hit = total = 0
    for r in rows:
        ids, leading = r["hash_ids"], True
        for j in range(len(ids)):
            n = min(BLOCK, r["input_length"] - BLOCK * j)
            chain = tuple(ids[: j + 1])
            leading = leading and chain in seen
            hit += n if leading else 0
            total += n
            seen.add(chain)
    return hit / total


def _by_row(rec: Recorder, rows: list[dict[str, Any]],
            received: list[tuple[float, dict[str, Any]]] | None = None) -> dict[int, tuple[float, dict[str, Any], list[int]]]:
    """Each received request matched to its trace row by (max_tokens, templated prompt length), with its
    arrival time and the token ids of its user message content (no template)."""
    key = {(r["output_length"], r["input_length"]): i for i, r in enumerate(rows)}
    assert len(key) == len(rows), "the test's rows must be told apart by (output_length, input_length)"
    out = {}
    for t, body in rec.received if received is None else received:
        n = len(rec.ids(body["messages"], body.get("chat_template_kwargs")))
        i = key.get((body["max_tokens"], n))
        assert i is not None, f"no row asks for {body['max_tokens']} tokens with a {n}-token prompt"
        content = body["messages"][-1]["content"]
        out[i] = (t, body, rec.tok(content, add_special_tokens=False).input_ids)
    return out


def _check_prefixes(rows: list[dict[str, Any]], got: dict[int, tuple[float, dict[str, Any], list[int]]]) -> int:
    """Requests that share k leading hash ids share exactly their first k blocks' tokens (as far as both
    reach) and differ in the block after when both have one with different ids. Returns the pairs checked."""
    pairs = 0
    for a in got:
        for b in got:
            if a >= b:
                continue
            ia, ib = rows[a]["hash_ids"], rows[b]["hash_ids"]
            k = next((j for j, (x, y) in enumerate(zip(ia, ib)) if x != y), min(len(ia), len(ib)))
            ta, tb = got[a][2], got[b][2]
            shared = min(k * BLOCK, len(ta), len(tb))
            assert ta[:shared] == tb[:shared], (a, b, k)
            if k < min(len(ia), len(ib)) and len(ta) >= (k + 1) * BLOCK and len(tb) >= (k + 1) * BLOCK:
                # distinct ids at block k: distinct block text (the whole block, and already its start)
                assert ta[k * BLOCK:(k + 1) * BLOCK] != tb[k * BLOCK:(k + 1) * BLOCK], (a, b, k)
                assert ta[k * BLOCK:k * BLOCK + 8] != tb[k * BLOCK:k * BLOCK + 8], (a, b, k)
            pairs += k > 0
    return pairs


def test_trace_is_replayed_on_schedule_with_exact_lengths_and_shared_prefixes(recorder, tmp_path: Path) -> None:
    rec, url = recorder
    rows = [_row(0, 1400, 5, [1, 2, 3]), _row(0, 1300, 6, [1, 2, 4]), _row(0, 300, 7, [5]),
            _row(1000, 2000, 8, [1, 2, 3, 6]), _row(1000, 700, 9, [1, 7]), _row(3000, 900, 10, [5, 8]),
            _row(4000, 1024, 11, [9, 10]), _row(6000, 1536, 12, [1, 2, 3])]
    trace = _write(tmp_path / "trace.jsonl", rows)
    scale = 0.5
    s = _bench(url, tmp_path / "out", "--dataset", str(trace), "--time-scale", str(scale), "--thinking", "off")
    assert s["requests"]["completed"] == len(rows) and s["requests"]["failed"] == 0
    facts = s["config"]["workload_facts"]
    assert facts["lengths"] == "exact" and facts["rows"] == len(rows) and facts["template_overhead"] > 0, facts
    got = _by_row(rec, rows)
    assert sorted(got) == list(range(len(rows)))  # every row sent once, each with its own lengths
    for i, r in enumerate(rows):
        body = got[i][1]
        assert body["max_tokens"] == body["min_tokens"] == r["output_length"] and body["ignore_eos"] is True
        assert body["chat_template_kwargs"] == {"thinking": False}
    # the server's prompt_tokens (its tokenizer, its template) is input_length for every request
    assert sorted(x["prompt_tokens"] for x in map(json.loads, (tmp_path / "out" / "requests.jsonl").read_text()
                                                  .splitlines())) == sorted(r["input_length"] for r in rows)
    assert _check_prefixes(rows, got) >= 5
    # on schedule: arrival offsets match (timestamp - first) x scale; a wrong scale would be off by seconds.
    # Tolerance 0.3 s: a 2-core machine shared with other test runs (the run itself reports its schedule lag).
    first = min(t for t, _, _ in got.values())
    for i, r in enumerate(rows):
        assert abs((got[i][0] - first) - r["timestamp"] * scale / 1000) < 0.3, (i, got[i][0] - first)
    for group in ([0, 1, 2], [3, 4]):  # equal timestamps go out together
        times = [got[i][0] for i in group]
        assert max(times) - min(times) < 0.2, times
    pc = s["prefix_cache"]
    assert pc["ideal_token_hit_rate"] == round(_ideal(rows), 4) and pc["ideal_token_hit_rate"] > 0.2
    assert pc["engine_token_hit_rate"] == round(rec.hits / rec.queries, 4) and "vllm" in pc["source"], pc
    assert pc["prefix_caching"] is True and rec.hits > 0
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Prefix cache" in report and f"{pc['ideal_token_hit_rate']:.1%}" in report


def test_the_mooncake_sample_first_rows(recorder, tmp_path: Path) -> None:
    """The first 60 rows of Mooncake's synthetic trace (prompts up to 56k tokens, rows 42/49 and 15/58
    share long prefixes) read from the file itself, capped with --num-requests, replayed 50x faster."""
    rec, url = recorder
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    assert len(rows) == 60
    s = _bench(url, tmp_path / "out", "--dataset", str(SAMPLE), "--num-requests", "60", "--time-scale", "0.02")
    facts = s["config"]["workload_facts"]
    assert facts["rows"] == 60 and facts["lengths"] == "exact", facts
    assert [c["input_length"] for c in facts["checked"]] == [rows[0]["input_length"], max(r["input_length"] for r in rows)]
    assert all(c["prompt_tokens"] == c["input_length"] for c in facts["checked"])
    overhead = facts["template_overhead"]
    short = [i for i, r in enumerate(rows) if r["input_length"] <= overhead]
    assert facts["rows_shorter_than_template"] == len(short)
    exact_rows = [r for i, r in enumerate(rows) if i not in short]
    # a row no longer than the template's own tokens is sent with an empty message (the template alone)
    empty = [(t, b) for t, b in rec.received if not b["messages"][0]["content"]]
    assert sorted(b["max_tokens"] for _, b in empty) == sorted(rows[i]["output_length"] for i in short)
    got = _by_row(rec, exact_rows, [(t, b) for t, b in rec.received if b["messages"][0]["content"]])
    assert len(got) == len(exact_rows) and len(rec.received) == 60  # the rest: exactly input_length tokens each
    assert _check_prefixes(exact_rows, got) >= 2
    assert s["prefix_cache"]["ideal_token_hit_rate"] == round(_ideal(rows), 4) > 0


@pytest.mark.parametrize("recorder", [False], ids=["no-tokenize"], indirect=True)
def test_without_tokenize_lengths_are_marked_approximate(recorder, tmp_path: Path) -> None:
    """A server without /tokenize (a hosted API): prompts are input_length words, and the results
    and the console say the lengths are approximate rather than claim them."""
    rec, url = recorder
    rows = [_row(0, 600, 3, [1, 2]), _row(100, 700, 4, [1, 3])]
    proc = run_cli("bench", "--base-url", url, "--model", "rec", "--output", str(tmp_path / "out"), "--workload",
                   "trace", "--dataset", str(_write(tmp_path / "t.jsonl", rows)), "--time-scale", "0.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "prompt lengths are approximate" in proc.stderr
    facts = json.loads((tmp_path / "out" / "summary.json").read_text())["config"]["workload_facts"]
    assert facts["lengths"] == "approximate" and "no /tokenize" in facts["note"], facts
    words = sorted(len(b["messages"][0]["content"].split()) for _, b in rec.received)
    assert words == [600, 700]
    first, second = (b["messages"][0]["content"].split() for _, b in sorted(rec.received, key=lambda x: x[1]["max_tokens"]))
    assert first[:512] == second[:512] and first[512:520] != second[512:520]  # still one block shared


def test_trace_bad_input(sim_factory, tmp_path: Path) -> None:
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    good = json.dumps(_row(0, 600, 4, [1, 2]))

    def bench(*args: str):
        return run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "o"),
                       "--workload", "trace", *args)

    cases = {
        "not json": (good + "\n{oops\n", ["line 2", "invalid JSON"]),
        "missing": (json.dumps({"timestamp": 0, "input_length": 5, "hash_ids": [1]}), ["line 1", "output_length"]),
        "negative": (json.dumps(_row(0, 600, 4, [1, 2]) | {"timestamp": -5}), ["line 1", "timestamp"]),
        "float len": (json.dumps(_row(0, 600, 4, [1, 2]) | {"input_length": 600.5}), ["line 1", "input_length",
                                                                                     "integer"]),
        "zero out": (json.dumps(_row(0, 600, 4, [1, 2]) | {"output_length": 0}), ["line 1", "output_length"]),
        "bad ids": (json.dumps(_row(0, 600, 4, [1, 2]) | {"hash_ids": [1, "x"]}), ["line 1", "hash_ids"]),
        "id count": (json.dumps(_row(0, 600, 4, [1, 2]) | {"hash_ids": [1, 2, 3]}), ["line 1", "hash_ids",
                                                                                   "ceil(600/512) = 2"]),
        "backwards": (json.dumps(_row(500, 600, 4, [1, 2])) + "\n" + json.dumps(_row(100, 600, 4, [1, 3])),
                      ["line 2", "earlier", "sorted"]),
        "not object": ("[1, 2]\n", ["line 1", "JSON object"]),
        "empty": ("\n", ["no row"]),
        # bounds: a prompt no model reads would take minutes to build; a send 10^27 s away is a hang
        "huge input": (json.dumps({"timestamp": 0, "input_length": 10**9, "output_length": 4,
                                   "hash_ids": list(range(math.ceil(10**9 / BLOCK)))}), ["line 1", "input_length",
                                                                                         "context"]),
        "far future": (good + "\n" + json.dumps(_row(1e30, 600, 4, [1, 2])), ["line 2", "days", "--time-scale"]),
        "binary": ("\udcff\x00\x01", ["not UTF-8"]),
    }
    for name, (text, needles) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        assert_clean_error(bench("--dataset", str(path)), str(path), *needles)
    trace = _write(tmp_path / "ok.jsonl", [_row(0, 600, 4, [1, 2])])
    assert_clean_error(bench("--dataset", str(tmp_path / "absent.jsonl")), "absent.jsonl", "not found")
    assert_clean_error(bench(), "--dataset")
    for scale in ("0", "-1", "nan", "inf"):
        assert_clean_error(bench("--dataset", str(trace), "--time-scale", scale), "--time-scale")
    for flags, needle in ((("--rate", "2"), "--rate"), (("--concurrency", "2"), "--concurrency"),
                          (("--input-len", "100"), "--input-len"), (("--output-len", "9"), "--output-len"),
                          (("--sweep", "rate=1,2"), "--sweep")):
        assert_clean_error(bench("--dataset", str(trace), *flags), needle)
    assert_clean_error(run_cli("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "o"),
                               "--concurrency", "1", "--time-scale", "0.5"), "--time-scale")
    # The file is checked before the endpoint: a bad trace is named even when no server answers, and no
    # output directory is left behind.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # bound, never listening: refused at once
        out = tmp_path / "never"
        assert_clean_error(run_cli("bench", "--base-url", dead, "--model", "sim", "--output", str(out),
                                   "--workload", "trace", "--dataset", str(tmp_path / "missing.jsonl")),
                           "line 1", "output_length")
        assert not out.exists()


def test_a_long_trace_with_a_duration_reads_only_what_it_sends(sim_factory, tmp_path: Path) -> None:
    """A million-row trace (one row a millisecond, a quarter of an hour) with --duration 2 reads the rows
    due in those 2 s and starts at once; the whole file is never read before the run."""
    url = sim_factory("--ttft-ms", "1", "--itl-ms", "1")
    trace = tmp_path / "long.jsonl"
    with trace.open("w") as fh:
        for i in range(10**6):
            fh.write(f'{{"timestamp": {i}, "input_length": 8, "output_length": 2, "hash_ids": [{i}]}}\n')
    proc = run_cli_timed("bench", "--base-url", url, "--model", "sim", "--output", str(tmp_path / "o"), "--workload",
                         "trace", "--dataset", str(trace), "--duration", "2", "--time-scale", "50", limit=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["config"]["workload_facts"]["rows"] == 40  # rows 0..39 are due within 2 s at 50 ms apart


def test_trace_on_real_vllm(tiny_server: Server, tmp_path: Path) -> None:
    """The strongest proof: real vLLM serving tiny-k2 (max_model_len 2048) reports usage.prompt_tokens ==
    input_length for every replayed row, honours output_length, and its own prefix-cache counters give the
    engine's hit rate beside the trace's ideal."""
    rows = []
    for i in range(20):  # four conversations growing by a block, plus unrelated one-block prompts
        conv = i % 4
        if i % 5 == 4:
            rows.append(_row(i * 100, 300 + i, 4 + i, [1000 + i]))
        else:
            k = 1 + min(i // 4, 2)
            ids = [100 * conv + j for j in range(k)]
            rows.append(_row(i * 100, BLOCK * (k - 1) + 200 + 7 * i, 4 + i, ids))
    trace = _write(tmp_path / "trace.jsonl", rows)
    proc = run_cli("bench", "--base-url", f"{tiny_server.url}/v1", "--model", "tiny-k2", "--output",
                   str(tmp_path / "out"), "--workload", "trace", "--dataset", str(trace), "--time-scale", "0.5",
                   timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["requests"]["completed"] == 20 and s["config"]["workload_facts"]["lengths"] == "exact"
    done = [json.loads(x) for x in (tmp_path / "out" / "requests.jsonl").read_text().splitlines()]
    for d in done:
        r = rows[d["index"]]
        assert (d["prompt_tokens"], d["output_tokens_server"]) == (r["input_length"], r["output_length"]), (d, r)
    pc = s["prefix_cache"]
    assert "vllm:prefix_cache_hits" in pc["source"] and pc["ideal_token_hit_rate"] == round(_ideal(rows), 4) > 0
    if pc["prefix_caching"] is False:
        # vLLM's CPU engine turns prefix caching off for MLA models (Kimi K2's attention, so tiny-k2's)
        # unless the CPU has AMX (vllm v0.32.0 vllm/platforms/cpu.py): the report must say so, not show 0 %
        assert pc["engine_token_hit_rate"] is None and pc["queried_tokens"] == 0 and "off" in pc["source"], pc
    else:
        assert pc["prefix_caching"] is True and pc["queried_tokens"] >= sum(r["input_length"] for r in rows), pc
        assert pc["engine_token_hit_rate"] > 0, pc
