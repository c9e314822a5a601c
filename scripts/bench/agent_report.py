"""The agent-cache phase's report: the per-turn table, the targets of issue 22 and a plot of
TTFT per turn (an SVG written by hand, so the benchmark needs no plotting library)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import shlex
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import MIB, ratio, write_marked

if TYPE_CHECKING:
    from bench.agent_cache import Side, Turn
    from bench.agent_workload import Workload

SECTION = "agent-cache"
NEW_TOKENS_SLACK = 8  # template tokens around a turn; a re-computed prefix is far more
COLORS = {"ours": "#1f77b4", "llama-server": "#ff7f0e"}


def _by_label(side: Side) -> dict[str, Turn]:
    return {t.label: t for t in side.turns}


def only_new_tokens(side: Side) -> tuple[int, int]:
    """(turns after a session's first that computed at most their new tokens, such turns)."""
    ok = total = 0
    for session in sorted({t.session for t in side.turns}):
        turns = [t for t in side.turns if t.session == session]
        for prev, cur in itertools.pairwise(turns):
            total += 1
            ok += cur.computed <= cur.prompt_tokens - prev.prompt_tokens + NEW_TOKENS_SLACK
    return ok, total


def _verdict(value: float, good: bool) -> str:
    return "-" if math.isnan(value) else ("PASS" if good else "FAIL")


def target_rows(ours: Side, theirs: Side | None) -> list[str]:
    """Issue 22's targets for the workload, ours (and llama-server's figure beside it)."""
    mine = _by_label(ours)
    other = _by_label(theirs) if theirs else {}

    def rel(turns: dict[str, Turn], a: str, b: str) -> float:
        return ratio(turns[a].ttft_s, turns[b].ttft_s) if a in turns and b in turns else math.nan

    rows = []
    for label, name, limit in (("B1", "from memory", 0.1), ("C1", "after a restart", 0.25)):
        r, r_theirs = rel(mine, label, "A1"), rel(other, label, "A1")
        rows.append(
            f"| {label} TTFT / A1 TTFT (same system prompt, {name}) | {r:.3f}x | "
            f"{r_theirs:.3f}x | | <= {limit}x | {_verdict(r, r <= limit)} |"
        )
    ok, total = only_new_tokens(ours)
    ok_t, total_t = only_new_tokens(theirs) if theirs else (0, 0)
    rows.append(
        f"| Turns after a session's first computing only their new tokens | {ok} of {total} | "
        f"{ok_t} of {total_t} | | all | {_verdict(float(total), ok == total)} |"
    )
    if theirs is not None:
        speed = ratio(theirs.total_s, ours.total_s)
        rows.append(
            f"| Workload time (s) | {ours.total_s:.1f} | {theirs.total_s:.1f} | {speed:.2f}x "
            f"faster | >= 1.3x faster | {_verdict(speed, speed >= 1.3)} |"
        )
        mem = ratio(ours.peak_rss, theirs.peak_rss)
        rows.append(
            f"| Peak RSS (MiB) | {ours.peak_rss / MIB:.0f} | {theirs.peak_rss / MIB:.0f} | "
            f"{mem:.2f}x | <= 1.0x | {_verdict(mem, mem <= 1.0)} |"
        )
    else:
        rows.append(f"| Workload time (s) | {ours.total_s:.1f} | | | | - |")
        rows.append(f"| Peak RSS (MiB) | {ours.peak_rss / MIB:.0f} | | | | - |")
    return rows


def render_markdown(
    machine: dict[str, str],
    sides: list[Side],
    workload: Workload,
    system_tokens: int,
    command: str,
    found: str,
) -> str:
    ours, theirs = sides[0], (sides[1] if len(sides) > 1 else None)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    other = _by_label(theirs) if theirs else {}
    lines = [
        f"Run {when}: `{command}`; {machine.get('CPU', '?')}, {machine.get('Cores', '?')}; "
        f"system prompt with tools {system_tokens} tokens, sessions A and B of "
        f"{workload.turns} turns interleaved, both servers restarted, then session C; greedy, "
        f"max_tokens {workload.max_tokens}.",
        "",
        "| Turn | Session | Ours TTFT (s) | llama-server TTFT (s) | Ours computed / cached "
        "| llama-server computed / cached |",
        "|---|---|---:|---:|---|---|",
    ]
    for t in ours.turns:
        o = other.get(t.label)
        restart = " (after restart)" if t.session == "C" and t.turn == 1 else ""
        lines.append(
            f"| {t.label}{restart} | {t.session} | {t.ttft_s:.2f} | "
            + (f"{o.ttft_s:.2f}" if o else "-")
            + f" | {t.computed} / {t.cached_tokens} | "
            + (f"{o.computed} / {o.cached_tokens}" if o else "-")
            + " |"
        )
    lines += [
        "",
        "| Figure | Ours | llama-server | Ratio | Target | Result |",
        "|---|---:|---:|---:|---|---|",
        *target_rows(ours, theirs),
        "",
    ]
    for side in sides:
        cmd = " ".join(shlex.quote(c.replace("{port}", "PORT")) for c in side.command)
        ready = ", ".join(f"{s:.1f}" for s in side.ready_s)
        lines.append(
            f"- {side.name}: `{cmd}`; ready after {ready} s; peak RSS from "
            f"{side.rss_samples} samples" + "".join(f"; {n}" for n in side.notes) + "."
        )
    lines.append(f"- llama-server: {found}.")
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the text between this phase's markers in ``path`` (append them if absent)."""
    write_marked(path, SECTION, text)


def write_plot(path: Path, sides: list[Side], system_tokens: int) -> None:
    """TTFT per turn of every side, a log-scale y axis (cold turns take tens of seconds,
    cached ones a fraction of one), a dashed line at the restart."""
    labels = [t.label for t in sides[0].turns]
    width, height, left, right, top, bottom = 760, 380, 64, 150, 40, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [t.ttft_s for s in sides for t in s.turns if t.ttft_s > 0]
    lo = 10 ** math.floor(math.log10(min(values, default=0.1)))
    hi = 10 ** math.ceil(math.log10(max(values, default=10.0)))
    hi = hi if hi > lo else lo * 10

    def x(i: int) -> float:
        return left + (i + 0.5) * plot_w / max(1, len(labels))

    def y(v: float) -> float:
        v = max(v, lo)
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / math.log10(hi / lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Time to first token per turn '
        f"(system prompt with tools: {system_tokens} tokens; log scale)</text>",
    ]
    decade = lo
    while decade <= hi * 1.001:
        for mult in (1, 3):
            v = decade * mult
            if v > hi * 1.001:
                continue
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" '
                       f'y2="{y(v):.1f}" stroke="#ddd"/>')  # fmt: skip
            out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} s</text>')
        decade *= 10
    for i, label in enumerate(labels):
        out.append(
            f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{label}</text>'
        )
        if label == "C1":
            bx = x(i) - plot_w / max(1, len(labels)) / 2
            out.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{top + plot_h}" '
                       'stroke="#888" stroke-dasharray="4 3"/>')  # fmt: skip
            out.append(f'<text x="{bx + 4:.1f}" y="{top + 12}" fill="#555">restart</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
               "turn (session and its turn number, in the order sent)</text>")  # fmt: skip
    for k, side in enumerate(sides):
        color = COLORS.get(side.name, "#2ca02c")
        turns = _by_label(side)
        points = [(x(i), y(turns[lab].ttft_s)) for i, lab in enumerate(labels) if lab in turns]
        restart = labels.index("C1") if "C1" in labels else len(points)
        for part in (points[:restart], points[restart:]):  # no line across the restart
            path_d = " ".join(f"{px:.1f},{py:.1f}" for px, py in part)
            out.append(f'<polyline points="{path_d}" fill="none" stroke="{color}" '
                       'stroke-width="2"/>')  # fmt: skip
        out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"/>'
                for px, py in points]  # fmt: skip
        ly = top + 20 + 20 * k
        out.append(f'<line x1="{left + plot_w + 14}" x2="{left + plot_w + 38}" y1="{ly}" '
                   f'y2="{ly}" stroke="{color}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{left + plot_w + 44}" y="{ly + 4}">{escape(side.name)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#444"/>')  # fmt: skip
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
