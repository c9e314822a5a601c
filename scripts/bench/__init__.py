"""Benchmark locallab_cpp against llama.cpp called in-process, in one run.

Usage::

    python scripts/bench.py                       # full run (a few minutes on 2 cores)
    python scripts/bench.py --quick               # smoke test: tiny workloads, figures meaningless
    python scripts/bench.py --markdown docs/benchmarks.md

Phase 1 loads the in-process ceiling: ``llama_cpp.Llama`` on the same GGUF with the same
threads, batch size, flash attention (the server's context leaves it on "auto", which
llama.cpp turns on for CPUs) and full-size SWA cache as the server, greedy decoding. It
measures:

* decode tok/s of one stream: ``(tokens - 1) / (t_last_token - t_first_token)``, tokens
  taken from ``Llama.generate`` (exact, one yield per token, end-of-generation ignored);
* time to first token (TTFT) of a short prompt: from before tokenization to the first
  token;
* prompt processing tok/s: ``prompt_tokens / TTFT`` of a ~600-token prompt, one new token.

Phase 2 starts the server (``python -m locallab_cpp serve --threads T --parallel 8
--rate-limit 0``, greedy, ``repetition_penalty`` 1.0) and measures it over HTTP. Every
prompt starts with a random tag, so the server's prompt-prefix cache only helps where a
figure wants it to. The two sides are interleaved: each round runs the ceiling's decode
run, the server's single stream, four long prompts on each side (taking turns to go first),
then 4 and 8 concurrent clients. A shared machine (a cloud VM) drifts by several per cent over a
minute; measured in separate phases, that drift showed up in the ratios (single-stream
decode 0.92-1.06 over eight runs), interleaved it moves both sides alike. The ``Llama``
object stays loaded but idle meanwhile (it takes no CPU; its memory is not the server's),
and is closed before the batch and chat measurements.

Streams are read by a small asyncio HTTP/1.1 client (``StreamClient``), not httpx, whose
pure-Python chunk parsing took about 2% of single-stream decode from the server on 2 cores.

* Token counts. A streamed reply carries no ``usage``, and an SSE event is a chunk of text,
  not a token (an incomplete UTF-8 character or a held-back stop-string prefix makes the
  two differ). The benchmark therefore reads the server's own counters
  (``active_model.generated_tokens``, ``prompt_tokens`` and ``cached_prompt_tokens`` of
  ``GET /system/info``) before and after each measured request or group of concurrent
  requests; nothing else runs on the server meanwhile, so the difference is the exact
  token count. It also counts the events and reports whether events == tokens. Rates use
  the actual counts, since a base model may stop early at an end token.
* Single-stream decode tok/s and TTFT: the 1-client runs below; TTFT is from sending the
  request to the first ``data:`` event; decode is ``(tokens - 1) / (t_last_event -
  t_first_event)``.
* Prompt processing: the ~600-token prompt (new random tag) sent non-streamed with
  ``max_length`` 1; rate = ``usage.prompt_tokens / latency`` (the latency is the HTTP TTFT,
  response included). ``usage.cached_prompt_tokens`` is checked to be ~0.
* Aggregate tok/s with 1, 4 and 8 concurrent streaming clients (distinct prompts):
  ``tokens generated (server counter) / (last stream end - first request sent)``, median
  over rounds; TTFT p50/p95 over all streams of all rounds (nearest rank).
* ``/generate/batch`` of 8 prompts vs the same 8 prompts sent one after another
  (non-streamed): ratio of wall times (medians over rounds); the token counts of both are
  shown, as batched and single decoding may take different greedy paths.
* Follow-up chat turn: conversation C = (system ~500 tokens, user); C is sent, then
  C + assistant answer + a new user turn is streamed and its TTFT measured (warm). Cold =
  the same second conversation with a different first character of the system prompt
  (nothing cached). Ratio warm/cold of median TTFTs; cached prompt tokens are reported
  from the server counter.
* Peak resident memory of the server process, sampled every 50 ms by psutil from the
  moment the model is loaded to the end, against model file + KV cache + 150 MiB. The KV
  cache size is computed from the GGUF metadata (layers x KV heads x (key + value length)
  x 2 bytes, f16) x n_ctx per slot x slots (both from ``GET /models/current``), since
  ``/system/info`` does not report it.

Every measurement is repeated (``--rounds``, default 7) and the median kept, on both sides.
The HTTP client runs on the same machine and takes some CPU from the server, as a real
local client would; the in-process ceiling pays no such cost.
The server subprocess is always stopped (try/finally; SIGTERM handled; on Linux it also
gets SIGTERM if this process dies).

Phase 3, with ``--llama-server PATH`` (or a build found under ``.bench/llama-server/``, see
``scripts/build_llama_server.sh``), runs llama.cpp's own ``llama-server`` on the same GGUF
with the same threads, slots and per-slot context, under the same load without the
in-process runs, and reports its peak RSS and throughput beside ours (issue 12: our peak
RSS <= 1.1x llama-server's). How it is configured: ``bench/llama_server.py``.
"""
