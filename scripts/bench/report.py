"""The results table: rows with targets, notes, text and Markdown output."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ceiling import Ceiling
from bench.config import (
    BATCH_SIZE,
    CONCURRENCY_LEVELS,
    MARK_BEGIN,
    MARK_END,
    MEMORY_SLACK_BYTES,
    MIB,
    PROMPT_RUNS_PER_ROUND,
    Config,
    ratio,
)
from bench.phases import ServerFigures

# ----- report --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    server: str
    reference: str
    ratio: str
    target: str
    passed: bool | None

    @property
    def result(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _ok(value: float, good: Callable[[float], bool]) -> bool | None:
    return None if math.isnan(value) else good(value)


def target_row(
    figure: str, server: str, reference: str, r: float, target: str, good: Callable[[float], bool]
) -> Row:
    """A row whose ratio ``r`` is checked against its target."""
    return Row(figure, server, reference, f"{r:.3f}x", target, _ok(r, good))


def build_rows(cfg: Config, ceiling: Ceiling, srv: ServerFigures) -> list[Row]:
    rows: list[Row] = []
    r = ratio(srv.decode_tps, ceiling.decode_tps)
    rows.append(
        target_row(
            "Decode, 1 stream (tok/s)",
            f"{srv.decode_tps:.1f}",
            f"{ceiling.decode_tps:.1f} in-process",
            r,
            ">= 0.95x",
            lambda x: x >= 0.95,
        )
    )
    r = ratio(srv.ttft_s, ceiling.ttft_s)
    rows.append(
        target_row(
            f"TTFT, short prompt ({ceiling.short_prompt_tokens} tok) (ms)",
            f"{srv.ttft_s * 1e3:.1f}",
            f"{ceiling.ttft_s * 1e3:.1f} in-process",
            r,
            "<= 1.2x",
            lambda x: x <= 1.2,
        )
    )
    r = ratio(srv.pp_tps, ceiling.pp_tps)
    rows.append(
        target_row(
            f"Prompt processing, {srv.pp_prompt_tokens} tok (tok/s)",
            f"{srv.pp_tps:.0f}",
            f"{ceiling.pp_tps:.0f} in-process ({ceiling.pp_prompt_tokens} tok)",
            r,
            ">= 0.95x",
            lambda x: x >= 0.95,
        )
    )
    base = srv.aggregate.get(1, math.nan)
    targets = {4: 1.4, 8: 2.0}
    for n in CONCURRENCY_LEVELS:
        p50 = srv.ttft_p50.get(n, math.nan) * 1e3
        p95 = srv.ttft_p95.get(n, math.nan) * 1e3
        agg = srv.aggregate.get(n, math.nan)
        if n in targets:
            r = ratio(agg, base)
            rows.append(
                target_row(
                    f"Aggregate, {n} streaming clients (tok/s)",
                    f"{agg:.1f}",
                    f"{base:.1f} with 1 client",
                    r,
                    f">= {targets[n]}x",
                    lambda x, t=targets[n]: x >= t,
                )
            )
        else:
            rows.append(
                Row(f"Aggregate, {n} streaming client (tok/s)", f"{agg:.1f}", "", "", "", None)
            )
        rows.append(
            Row(
                f"TTFT p50 / p95, {n} client{'s' if n > 1 else ''} (ms)",
                f"{p50:.0f} / {p95:.0f}",
                "",
                "",
                "",
                None,
            )
        )
    r = ratio(srv.batch_wall, srv.seq_wall)
    rows.append(
        target_row(
            f"/generate/batch of {BATCH_SIZE} (wall s)",
            f"{srv.batch_wall:.2f} ({srv.batch_tokens} tok)",
            f"{srv.seq_wall:.2f} one by one ({srv.seq_tokens} tok)",
            r,
            "<= 0.5x",
            lambda x: x <= 0.5,
        )
    )
    r = ratio(srv.warm_ttft, srv.cold_ttft)
    rows.append(
        target_row(
            "Follow-up chat turn TTFT (ms)",
            f"{srv.warm_ttft * 1e3:.0f} (cached {srv.warm_cached}/{srv.warm_prompt} tok)",
            f"{srv.cold_ttft * 1e3:.0f} cold (cached {srv.cold_cached} tok)",
            r,
            "<= 0.3x",
            lambda x: x <= 0.3,
        )
    )
    kv = srv.kv_bytes_reported or (
        ceiling.kv_bytes_per_token * srv.n_ctx * srv.parallel
        if ceiling.kv_bytes_per_token
        else None
    )
    if kv is not None and srv.model_size:
        budget = srv.model_size + kv + MEMORY_SLACK_BYTES
        rows.append(
            Row(
                "Server peak RSS (MiB)",
                f"{srv.peak_rss / MIB:.0f}",
                f"model {srv.model_size / MIB:.0f} + KV {kv / MIB:.0f} + 150 = {budget / MIB:.0f}",
                f"{ratio(srv.peak_rss, budget):.2f}x",
                "<= budget",
                srv.peak_rss <= budget if srv.peak_rss else None,
            )
        )
    else:
        rows.append(
            Row("Server peak RSS (MiB)", f"{srv.peak_rss / MIB:.0f}", "KV size unknown", "",
                "<= budget", None)
        )  # fmt: skip
    return rows


def method_notes(cfg: Config, ceiling: Ceiling, srv: ServerFigures) -> list[str]:
    notes = [
        f"Model {srv.model_id}: {srv.n_ctx} tokens of context per slot x {srv.parallel} "
        f"slots; KV cache "
        + (
            f"{srv.kv_bytes_reported} B as reported by /system/info."
            if srv.kv_bytes_reported
            else f"computed from GGUF metadata, {ceiling.kv_note} (not in /system/info)."
        ),
        f"Greedy decoding, repetition_penalty 1.0, max_length {cfg.max_tokens}; medians of "
        f"{cfg.rounds} rounds ({cfg.batch_rounds} for the batch comparison); in-process, "
        f"single-stream, long-prompt ({PROMPT_RUNS_PER_ROUND} a round on each side) and 4- and "
        "8-client runs interleaved in each round.",
        "Token counts come from the server's /system/info counters (exact); "
        + (
            "SSE events matched tokens in every concurrency run."
            if srv.events_match_tokens
            else "SSE events did NOT always match tokens."
            if srv.events_match_tokens is False
            else "counters unavailable, SSE events used instead."
        ),
        f"Prompt processing over HTTP: non-streamed, max_length 1; server reported "
        f"{srv.pp_cached_tokens} cached prompt tokens at most (random tag per prompt).",
        f"Peak RSS from {srv.rss_samples} psutil samples (every 50 ms) while the server ran.",
    ]
    if cfg.quick:
        notes.insert(0, "QUICK MODE: tiny workloads; the figures are a smoke test only.")
    return notes + srv.notes


def render_text(machine: dict[str, str], rows: list[Row], notes: list[str]) -> str:
    headers = ("Figure", "Server", "Reference", "Ratio", "Target", "Result")
    table = [headers] + [
        (r.figure, r.server, r.reference, r.ratio, r.target, r.result) for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = ["Machine:"] + [f"  {k:17} {v}" for k, v in machine.items()] + [""]
    for i, line in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def render_markdown(
    machine: dict[str, str], rows: list[Row], notes: list[str], cfg: Config, command: str
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smoke test)" if cfg.quick else "full"
    out = [
        MARK_BEGIN,
        "## Benchmark results",
        "",
        f"Run {when}, mode {mode}: `{command}`",
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        "",
        "| Figure | Server | Reference | Ratio | Target | Result |",
        "|---|---:|---|---:|---|---|",
        *(
            f"| {r.figure} | {r.server} | {r.reference} | {r.ratio} | {r.target} | {r.result} |"
            for r in rows
        ),
        "",
        *(f"- {n}" for n in notes),
        MARK_END,
    ]
    return "\n".join(out) + "\n"


def write_markdown(path: Path, section: str) -> None:
    """Replace the benchmark section of ``path`` (between the markers), else append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin != -1 and end > begin:
        text = text[:begin] + section + text[end + len(MARK_END) :].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _json_safe(value: Any) -> Any:
    """NaN (a figure not measured) as null; dict keys as strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
