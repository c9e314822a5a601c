"""Phase 3's rows and notes: our figures beside llama-server's."""

from __future__ import annotations

import math
import shlex

from bench.config import CONCURRENCY_LEVELS, MIB, ratio
from bench.llama_server import RSS_TARGET, LlamaServerFigures
from bench.phases import ServerFigures
from bench.report import Row, target_row


def rows(srv: ServerFigures, theirs: LlamaServerFigures) -> list[Row]:
    """Our figures beside llama-server's; only peak RSS has a target (issue 12)."""
    out = [
        target_row(
            "Peak RSS vs llama-server (MiB)",
            f"{srv.peak_rss / MIB:.0f}",
            f"{theirs.peak_rss / MIB:.0f} llama-server",
            ratio(srv.peak_rss, theirs.peak_rss),
            f"<= {RSS_TARGET}x",
            lambda x: x <= RSS_TARGET,
        )
    ]
    ours_kv, their_kv = srv.kv_bytes_reported or 0, theirs.kv_bytes
    if ours_kv and their_kv:
        ours_rest, their_rest = srv.peak_rss - ours_kv, theirs.peak_rss - their_kv
        out.append(
            Row(
                "Peak RSS less KV cache (as reported) vs llama-server (MiB)",
                f"{ours_rest / MIB:.0f} (KV {ours_kv / MIB:.0f})",
                f"{their_rest / MIB:.0f} llama-server (KV {their_kv / MIB:.0f})",
                f"{ratio(ours_rest, their_rest):.3f}x",
                "",
                None,
            )
        )

    def beside(figure: str, ours: float, theirs_: float, fmt: str = ".1f") -> Row:
        return Row(
            figure,
            f"{ours:{fmt}}",
            f"{theirs_:{fmt}} llama-server",
            f"{ratio(ours, theirs_):.3f}x",
            "",
            None,
        )

    out.append(
        beside("Decode, 1 stream vs llama-server (tok/s)", srv.decode_tps, theirs.decode_tps)
    )
    out.append(
        beside("Prompt processing vs llama-server (tok/s)", srv.pp_tps, theirs.pp_tps, ".0f")
    )
    for n in CONCURRENCY_LEVELS[1:]:
        out.append(
            beside(
                f"Aggregate, {n} clients vs llama-server (tok/s)",
                srv.aggregate.get(n, math.nan),
                theirs.aggregate.get(n, math.nan),
            )
        )
    return out


def notes(srv: ServerFigures, theirs: LlamaServerFigures, found: str) -> list[str]:
    cmd = " ".join(shlex.quote(c) for c in theirs.command)
    kv = (
        f"KV buffers {theirs.kv_bytes / MIB:.0f} MiB, compute buffers "
        f"{theirs.compute_bytes / MIB:.0f} MiB (its log)"
        if theirs.kv_bytes
        else "KV size not found in its log"
    )
    base = theirs.aggregate.get(1, math.nan)
    scaling = ", ".join(
        f"{n} clients {ratio(theirs.aggregate.get(n, math.nan), base):.2f}x"
        for n in CONCURRENCY_LEVELS[1:]
    )
    return [
        f"llama-server ({found}), run after our server stopped, same prompts and load without "
        f"the in-process runs and the batch/chat figures, {theirs.n_ctx} KV cells for "
        f"{srv.parallel} slots of {theirs.per_slot}, SWA layers {theirs.swa}: `{cmd}`.",
        f"llama-server: {kv}; peak RSS from {theirs.rss_samples} psutil samples after /health "
        f"(our server: KV {(srv.kv_bytes_reported or 0) / MIB:.0f} MiB); its 1-client "
        f"aggregate {base:.1f} tok/s, {scaling} against it; throughputs come from separate "
        "phases (not interleaved), so machine drift enters their ratios.",
        *theirs.notes,
    ]
