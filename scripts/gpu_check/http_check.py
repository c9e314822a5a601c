"""Talks to a running locallab_cpp server: waits for /health, then saves /system/info,
/models/current, a /generate and a streamed /chat, and prints a verdict for each.

Usage: python http_check.py BASE_URL OUT_DIR [WAIT_S]
"""
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

base, out = sys.argv[1].rstrip("/"), Path(sys.argv[2])
wait_s = float(sys.argv[3]) if len(sys.argv) > 3 else 120
out.mkdir(parents=True, exist_ok=True)
verdict: dict = {}


def call(method: str, path: str, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, raw, time.perf_counter() - t0


t0 = time.time()
health = None
while time.time() - t0 < wait_s:
    try:
        status, raw, _ = call("GET", "/health", timeout=5)
        health = json.loads(raw)
        if status == 200 and health.get("model_loaded"):
            break
    except Exception as exc:  # not up yet
        health = {"error": str(exc)}
    time.sleep(0.5)
verdict["health"] = health
verdict["health_wait_s"] = round(time.time() - t0, 1)
print("health:", health, f"after {verdict['health_wait_s']} s", flush=True)

for name, path in (("system_info", "/system/info"), ("models_current", "/models/current")):
    try:
        status, raw, dt = call("GET", path)
        (out / f"{name}.json").write_bytes(raw)
        verdict[name] = {"status": status, "s": round(dt, 3)}
    except Exception as exc:
        verdict[name] = {"error": str(exc)}
try:
    info = json.loads((out / "system_info.json").read_text())
    gi = info.get("gpu_info", {})
    am = info.get("active_model") or {}
    verdict["gpu_info"] = gi
    verdict["active_model_n_gpu_layers"] = am.get("n_gpu_layers")
    verdict["llama_backend"] = (info.get("llama_cpp") or {}).get("backend")
    verdict["CHECK backend_in_use==CUDA"] = gi.get("backend_in_use") == "CUDA"
    verdict["CHECK n_gpu_layers>0"] = (am.get("n_gpu_layers") or 0) > 0
except Exception as exc:
    verdict["system_info_parse"] = str(exc)

gen_body = {"prompt": "Hello world, the GPU is", "max_length": 32, "do_sample": False}
try:
    status, raw, dt = call("POST", "/generate", gen_body)
    (out / "generate.json").write_bytes(raw)
    g = json.loads(raw)
    verdict["generate"] = {"status": status, "s": round(dt, 3), "usage": g.get("usage"),
                           "finish_reason": g.get("finish_reason"), "text": g.get("text", "")[:200]}
    verdict["CHECK generate"] = status == 200 and bool(g.get("text"))
except Exception as exc:
    verdict["generate"] = {"error": str(exc)}

chat_body = {"messages": [{"role": "system", "content": "You are terse."},
                          {"role": "user", "content": "Say hello to the GPU."}],
             "max_length": 32, "stream": True, "temperature": 0.7, "seed": 7}
try:
    req = urllib.request.Request(base + "/chat", data=json.dumps(chat_body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    events, lines, first = 0, [], None
    with urllib.request.urlopen(req, timeout=120) as r:
        ctype = r.headers.get("Content-Type")
        status = r.status
        for line in r:
            s = line.decode("utf-8", "replace").rstrip("\n")
            lines.append(s)
            if s.startswith("data:"):
                events += 1
                first = first or time.perf_counter() - t0
    (out / "chat_stream.txt").write_text("\n".join(lines))
    verdict["chat_stream"] = {"status": status, "content_type": ctype, "data_lines": events,
                              "first_event_s": round(first, 3) if first else None,
                              "s": round(time.perf_counter() - t0, 3),
                              "done": any(x.strip() == "data: [DONE]" for x in lines),
                              "error_events": sum(1 for x in lines if x.startswith("event: error"))}
    verdict["CHECK chat stream"] = status == 200 and events > 1 and verdict["chat_stream"]["done"]
except Exception as exc:
    verdict["chat_stream"] = {"error": str(exc)}

# decode speed through the HTTP API: 256 greedy tokens, non-streamed
try:
    body = {"prompt": "Hello world, the GPU is fast.", "max_length": 256, "do_sample": False}
    call("POST", "/generate", dict(body, max_length=8))
    status, raw, dt = call("POST", "/generate", body)
    g = json.loads(raw)
    n = (g.get("usage") or {}).get("completion_tokens")
    verdict["http_generate_256"] = {"status": status, "s": round(dt, 3), "completion_tokens": n,
                                    "tok_per_s_incl_prefill": round(n / dt, 1) if n else None}
except Exception as exc:
    verdict["http_generate_256"] = {"error": str(exc)}

(out / "http_verdict.json").write_text(json.dumps(verdict, indent=2))
print(json.dumps(verdict, indent=2), flush=True)
