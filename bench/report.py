"""The benchmark's report: the targets the run is held to, and the Markdown tables of a run."""

from __future__ import annotations

from typing import Any


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    engines, naive = r["engine"], r["naive"]
    llama, torch = r["platform"]["llamacpp"], r["platform"]["transformers"]
    sse, ws = llama["sse"], llama["ws"]
    engine1 = engines["llamacpp"]["engine_1"]
    rows = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "value": value, "goal": goal, "met": met})

    def at_least(name: str, value: float | None, goal: float) -> None:
        add(name, value, f"≥ {goal}", value is not None and value >= goal)

    def at_most(name: str, value: float | None, goal: float, label: str = "") -> None:
        add(name, value, f"≤ {label or goal}", value is not None and value <= goal)

    for label, shape in (("API (SSE)", sse), ("WebSocket", ws)):
        at_least(
            f"{label} single-stream tok/s ÷ raw engine",
            ratio(shape["1"]["per_stream_tok_s"], engine1["per_stream_tok_s"]),
            0.9,
        )
        gap = (shape["1"]["ttft_p50_ms"] or 0) - (engine1["ttft_p50_ms"] or 0)
        at_most(f"{label} TTFT p50 − raw engine's (ms)", round(gap, 1), 50)
    agg16 = sse["16"]["aggregate_tok_s"]
    at_least(
        "aggregate tok/s at 16 streams ÷ naive server's",
        ratio(agg16, naive["16"]["aggregate_tok_s"]),
        6,
    )
    dialogue = llama["dialogue"]
    turn6, fresh = dialogue["turn_ttft_ms"][-1], dialogue["fresh_ttft_ms"]
    at_most("multi-turn: TTFT of turn 6 ÷ a short fresh prompt's", ratio(turn6, fresh), 2, "2")
    at_least(
        "multi-turn TTFT of turn 6, torch engine ÷ llama.cpp engine",
        ratio(torch["dialogue"]["turn_ttft_ms"][-1], turn6),
        1,
    )
    at_least(
        "aggregate tok/s at 16 streams, llama.cpp engine ÷ torch engine (platform)",
        ratio(agg16, torch["sse"]["16"]["aggregate_tok_s"]),
        1,
    )
    if "peer" in r:
        peer = r["peer"]
        at_least(
            "single-stream tok/s (SSE) ÷ llama-server's",
            ratio(sse["1"]["per_stream_tok_s"], peer["server_16"]["1"]["per_stream_tok_s"]),
            0.9,
        )
        at_least(
            "aggregate tok/s at 16 streams ÷ llama-server's (16 slots)",
            ratio(agg16, peer["server_16"]["16"]["aggregate_tok_s"]),
            1.25,
        )
        at_least(
            "aggregate tok/s at 32 streams ÷ llama-server's (32 slots)",
            ratio(sse["32"]["aggregate_tok_s"], peer["server_32"]["32"]["aggregate_tok_s"]),
            1.25,
        )
        for name, bench in (
            ("llamacpp", "batched_bench_served"),
            ("llamacpp-keep", "batched_bench"),
        ):
            if name in engines and peer.get(bench):
                at_least(
                    f"raw engine tok/s at 16 ÷ llama-batched-bench's at 16, prompts included ({engines[name]['weights']})",
                    ratio(
                        engines[name]["engine_16"]["aggregate_tok_s"],
                        peer[bench].get("16", {}).get("tg_whole_tok_s"),
                    ),
                    0.85,
                )
        p95, peer_p95 = sse["16"]["ttft_p95_ms"], peer["server_16"]["16"]["ttft_p95_ms"]
        at_most("TTFT p95 at 16 streams (ms), ≤ llama-server's", p95, peer_p95 or 0, "peer")
        peer_turn6 = peer["dialogue"]["turn_ttft_ms"][-1]
        at_most("multi-turn TTFT of turn 6 (ms), ≤ llama-server's", turn6, peer_turn6 or 0, "peer")
        best = max(
            peer["dialogue"]["cold"]["prefill_tok_s"], torch["dialogue"]["cold"]["prefill_tok_s"]
        )
        at_least(
            "cold long prompt, prefill tok/s ÷ the better of llama-server and the torch engine",
            ratio(dialogue["cold"]["prefill_tok_s"], best),
            1,
        )
    return rows


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    weights = "; ".join(f"{name}: {e['weights']}" for name, e in r["engine"].items())
    lines = [
        f"Run {m['date']} at commit {m['commit']} on {m['cpu']} ({m['cores']} cores"
        + (f", {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"), Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}. "
        f"SmolLM2-135M-Instruct, greedy, up to {m['new_tokens']} new tokens, "
        f"{len(m['prompts'])} fixed prompts. Engines: {weights}.",
        "",
        f"CPU flags: `{m.get('cpu_flags', '')}`",
        "",
        "| what | streams | tok/s in all | tok/s per stream | TTFT p50 ms | TTFT p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, s: dict[str, Any]) -> None:
        lines.append(
            f"| {name} | {s['streams']} | {s['aggregate_tok_s']} | {s['per_stream_tok_s']} | "
            f"{s['ttft_p50_ms']} | {s['ttft_p95_ms']} | {len(s['errors'])} |"
        )

    names = {
        "llamacpp": "llama.cpp engine",
        "llamacpp-keep": "llama.cpp engine on the file's own weights",
        "transformers": "torch engine",
    }
    for backend, e in r["engine"].items():
        row(f"raw {names[backend]}, one prompt at a time", e["engine_1"])
        row(f"raw {names[backend]}, concurrent", e["engine_16"])
        row(f"raw {names[backend]}, concurrent", e["engine_32"])
    torch_engine = r["engine"]["transformers"]
    row("plain `generate`, float32", torch_engine["generate_float32"])
    row("plain `generate`, bfloat16", torch_engine["generate_bfloat16"])
    for s in r["naive"].values():
        row("naive server (`generate` per request, in turn)", s)
    for backend, p in r["platform"].items():
        for s in p["sse"].values():
            row(f"platform on the {names[backend]}, API with SSE", s)
        for s in p.get("ws", {}).values():
            row(f"platform on the {names[backend]}, chat WebSocket", s)
    peer = r.get("peer", {})
    for slots in (16, 32):
        for s in peer.get(f"server_{slots}", {}).values():
            row(f"llama-server ({slots} slots)", s)
    if peer.get("batched_bench"):
        lines += [
            "",
            "| llama-batched-bench (32-token prompts, 128 new) | sequences | generation tok/s | "
            "generated tokens ÷ whole run (prompts included) | prompt tok/s |",
        ]
        lines.append("|---|---:|---:|---:|---:|")
        for key, weights in (
            ("batched_bench", "the file's Q4_1"),
            ("batched_bench_served", "q8_0"),
        ):
            for sequences, b in peer.get(key, {}).items():
                lines.append(
                    f"| llama.cpp's kernels alone, {weights} | {sequences} | {b['tg_tok_s']} | "
                    f"{b.get('tg_whole_tok_s')} | {b['pp_tok_s']} |"
                )

    dialogues = [(f"platform, {names[b]}", p["dialogue"]) for b, p in r["platform"].items()]
    if peer.get("dialogue"):
        dialogues.append(("llama-server (16 slots, cache_prompt)", peer["dialogue"]))
    lines += [
        "",
        "| six turns over a ~1,000-token document: TTFT ms | fresh short prompt | "
        + " | ".join(f"turn {i}" for i in range(1, 7))
        + " | cold long prompt: tokens, TTFT ms, prefill tok/s |",
        "|---|---:|" + "---:|" * 6 + "---:|",
    ]
    for name, d in dialogues:
        cold = d["cold"]
        lines.append(
            f"| {name} | {d['fresh_ttft_ms']} | "
            + " | ".join(str(t) for t in d["turn_ttft_ms"])
            + f" | {cold['prompt_tokens']}, {cold['ttft_ms']}, {cold['prefill_tok_s']} |"
        )
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|:---:|"]
    for t in r["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"
