"""The benchmark's report: the targets the run is held to, and the Markdown table of a run."""

from __future__ import annotations

from typing import Any


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    engine1, sse, ws, naive = (
        r["engine"]["engine_1"],
        r["platform"]["sse"],
        r["platform"]["ws"],
        r["naive"],
    )
    rows = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "value": value, "goal": goal, "met": met})

    for label, shape in (("API (SSE)", sse), ("WebSocket", ws)):
        value = ratio(shape["1"]["per_stream_tok_s"], engine1["per_stream_tok_s"])
        add(
            f"{label} single-stream tok/s ÷ raw engine",
            value,
            "≥ 0.9",
            value is not None and value >= 0.9,
        )
        gap = (shape["1"]["ttft_p50_ms"] or 0) - (engine1["ttft_p50_ms"] or 0)
        add(f"{label} TTFT p50 − raw engine's (ms)", round(gap, 1), "≤ 50", gap <= 50)
    agg16 = sse["16"]["aggregate_tok_s"]
    value = ratio(agg16, sse["1"]["aggregate_tok_s"])
    add(
        "aggregate tok/s at 16 streams ÷ single stream",
        value,
        "≥ 6",
        value is not None and value >= 6,
    )
    value = ratio(agg16, naive["16"]["aggregate_tok_s"])
    add(
        "aggregate tok/s at 16 streams ÷ naive server's",
        value,
        "≥ 6",
        value is not None and value >= 6,
    )
    p95 = sse["16"]["ttft_p95_ms"]
    add("TTFT p95 at 16 streams (ms)", p95, "< 2000", p95 is not None and p95 < 2000)
    for dtype in ("float32", "bfloat16"):
        value = ratio(
            engine1["per_stream_tok_s"], r["engine"][f"generate_{dtype}"]["per_stream_tok_s"]
        )
        add(
            f"raw engine decode ÷ plain generate ({dtype})",
            value,
            "≥ 2",
            value is not None and value >= 2,
        )
    if "peer" in r:
        value = ratio(agg16, r["peer"]["16"]["aggregate_tok_s"])
        add(
            "aggregate tok/s at 16 streams ÷ llama.cpp's (16 slots)",
            value,
            "≥ 1",
            value is not None and value >= 1,
        )
        value = ratio(sse["1"]["per_stream_tok_s"], r["peer"]["1"]["per_stream_tok_s"])
        add("single-stream tok/s ÷ llama.cpp's", value, "reported", None)
    return rows


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Run {m['date']} at commit {m['commit']} on {m['cpu']} ({m['cores']} cores"
        + (f", {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"), Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}. "
        f"SmolLM2-135M-Instruct, greedy, up to {m['new_tokens']} new tokens, {len(m['prompts'])} fixed prompts. "
        f"Engine weights: {r['engine']['engine_weights']}.",
        "",
        "| what | streams | tok/s in all | tok/s per stream | TTFT p50 ms | TTFT p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, s: dict[str, Any]) -> None:
        lines.append(
            f"| {name} | {s['streams']} | {s['aggregate_tok_s']} | {s['per_stream_tok_s']} | "
            f"{s['ttft_p50_ms']} | {s['ttft_p95_ms']} | {len(s['errors'])} |"
        )

    e = r["engine"]
    row("raw engine, one prompt at a time", e["engine_1"])
    row("raw engine, concurrent", e["engine_16"])
    row("plain `generate`, float32", e["generate_float32"])
    row("plain `generate`, bfloat16", e["generate_bfloat16"])
    for s in r["naive"].values():
        row("naive server (`generate` per request, in turn)", s)
    for s in r["platform"]["sse"].values():
        row("platform, API with SSE", s)
    for s in r["platform"]["ws"].values():
        row("platform, chat WebSocket", s)
    for s in r.get("peer", {}).values():
        row("llama.cpp server (16 slots)", s)
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|:---:|"]
    for t in r["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"
