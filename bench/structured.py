"""``make bench-structured``: what constrained decoding costs and what it buys, against the
platform in its production shape (the ASGI server, a Celery inference worker on the default
engine, Postgres, Redis), in one run on this machine.

- Cost: the bench prompts (greedy, 128 new tokens) at 1 and 16 concurrent streams, each level run
  as free text and with a JSON schema (a long list of strings, so that every answer runs to
  ``max_tokens``), alternating free, schema, free, schema; the figures are per-stream decode
  tokens/s and aggregate tokens/s, the mean of the two runs of each.
- Benefit: 50 extraction prompts (made-up people: name, age, city, occupation, in ten styles of
  text) with a four-field schema, through the official client's ``chat.completions.parse`` (how
  many parse and validate, and how many give the right values), the same prompts unconstrained
  with the schema spelled out in the instructions (how many answers would have parsed), and
  through LangChain's ``with_structured_output``.

Writes bench/results/structured.json and prints a table. ``lscpu``'s model and flags are in it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import openai  # noqa: E402
import pydantic  # noqa: E402
import run  # noqa: E402 (sets the bench database and Redis for the platform it starts)
from client import sse_stream  # noqa: E402
from common import NEW_TOKENS, Sample, summarise  # noqa: E402

OUT = HERE / "results/structured.json"
LEVELS = [1, 16]

# Every answer runs to max_tokens: at least 64 items of at least one character.
LONG_SCHEMA = {
    "type": "object",
    "properties": {
        "lines": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 64}
    },
    "required": ["lines"],
    "additionalProperties": False,
}
LONG_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "lines", "schema": LONG_SCHEMA, "strict": True},
}


class Person(pydantic.BaseModel):
    name: str
    age: int
    city: str
    occupation: str


PEOPLE = [
    ("Maria Lopez", 34, "Madrid", "nurse"),
    ("Tom Becker", 52, "Berlin", "carpenter"),
    ("Aiko Tanaka", 27, "Osaka", "software engineer"),
    ("James O'Neill", 45, "Dublin", "teacher"),
    ("Priya Sharma", 39, "Mumbai", "doctor"),
]
STYLES = [
    "{name} is a {age}-year-old {occupation} who lives in {city}.",
    "Meet {name}! At {age}, this {occupation} from {city} has seen it all.",
    "Dear team, please welcome {name} ({age}), our new {occupation}, joining from {city}.",
    "Name: {name}\nAge: {age}\nHome town: {city}\nJob: {occupation}",
    "Local news: {city} {occupation} {name}, {age}, won the town's chess cup on Sunday.",
    "I'm {name}, I work as a {occupation}, I'm {age} years old and I live in {city}.",
    "After years of study, {name} became a {occupation}. Now {age}, {name} lives in {city}.",
    "{name}, aged {age}, resident of {city}, profession: {occupation}.",
    "Yesterday in {city} I met {name}. {name} is {age} and works as a {occupation}.",
    "The {occupation} {name} turned {age} this year and still rides a bike around {city}.",
]
EXTRACT = "Extract the person's name, age, city and occupation from this text.\n\n{text}"
SPELLED_OUT = (
    'Answer with JSON only, exactly {{"name": string, "age": integer, "city": string, '
    '"occupation": string}}, and nothing else.'
)


def extraction_items() -> list[tuple[str, Person]]:
    """The 50 prompts and the answers they should give."""
    items = []
    for style in STYLES:
        for name, age, city, occupation in PEOPLE:
            text = style.format(name=name, age=age, city=city, occupation=occupation)
            truth = Person(name=name, age=age, city=city, occupation=occupation)
            items.append((EXTRACT.format(text=text), truth))
    return items


def right(answer: Person, truth: Person) -> bool:
    return (
        answer.name.strip() == truth.name
        and answer.age == truth.age
        and answer.city.strip().lower() == truth.city.lower()
        and answer.occupation.strip().lower() == truth.occupation.lower()
    )


def extraction(base: str, key: str, model: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)
    items = extraction_items()
    results: dict[str, Any] = {"prompts": len(items)}

    def tally(name: str, answers: list[Person | None], seconds: float, **extra: Any) -> None:
        valid = [(a, t) for a, (_, t) in zip(answers, items, strict=True) if a is not None]
        results[name] = {
            "parsed_and_valid": len(valid),
            "right_values": sum(right(a, t) for a, t in valid),
            "seconds": round(seconds, 1),
            **extra,
        }
        run.log(
            f"  {name}: {len(valid)}/{len(items)} parse and validate, "
            f"{results[name]['right_values']} with the right values, {seconds:.0f} s"
        )

    started, answers = time.monotonic(), []
    lengths = 0
    for prompt, _ in items:
        completion = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            response_format=Person,
            temperature=0,
            max_tokens=120,
        )
        lengths += completion.choices[0].finish_reason == "length"
        answers.append(completion.choices[0].message.parsed)
    tally("constrained_parse", answers, time.monotonic() - started, cut_by_length=lengths)

    started, answers = time.monotonic(), []
    for prompt, _ in items:
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{prompt}\n\n{SPELLED_OUT}"}],
            temperature=0,
            max_tokens=120,
        )
        try:
            answers.append(Person.model_validate_json(completion.choices[0].message.content or ""))
        except pydantic.ValidationError:
            answers.append(None)
    tally("unconstrained", answers, time.monotonic() - started)

    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=model,
        base_url=f"{base}/v1",
        api_key=key,
        temperature=0,
        max_tokens=120,
        max_retries=0,
    )
    structured = llm.with_structured_output(Person, method="json_schema")
    started, answers = time.monotonic(), []
    for prompt, _ in items:
        try:
            answers.append(structured.invoke(prompt))
        except Exception as exc:  # a failure counts as not parsed, and is shown
            run.log(f"  langchain: {type(exc).__name__}: {exc}")
            answers.append(None)
    tally("langchain_with_structured_output", answers, time.monotonic() - started)
    return results


def cost(url: str, headers: dict[str, str], model: str) -> dict[str, Any]:
    """Free text and schema, alternating, at each level."""

    def level(streams: int, response_format: dict[str, Any] | None) -> dict[str, Any]:
        async def go() -> list[Sample]:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=600, limits=limits) as client:
                extra = {"response_format": response_format} if response_format else None
                return list(
                    await asyncio.gather(
                        *(
                            sse_stream(client, url, i, headers=headers, model=model, extra=extra)
                            for i in range(streams)
                        )
                    )
                )

        return summarise(asyncio.run(go()))

    results: dict[str, Any] = {}
    for streams in LEVELS:
        runs: dict[str, list[dict[str, Any]]] = {"free": [], "schema": []}
        for _ in range(2):
            runs["free"].append(level(streams, None))
            runs["schema"].append(level(streams, LONG_FORMAT))
        figures: dict[str, Any] = {}
        for name, summaries in runs.items():
            errors = [e for s in summaries for e in s["errors"]]
            figures[name] = {
                "per_stream_tok_s": _mean(s["per_stream_tok_s"] for s in summaries),
                "aggregate_tok_s": _mean(s["aggregate_tok_s"] for s in summaries),
                "runs": [
                    {k: s[k] for k in ("per_stream_tok_s", "aggregate_tok_s", "tokens")}
                    for s in summaries
                ],
                "errors": errors,
            }
        for figure in ("per_stream_tok_s", "aggregate_tok_s"):
            free, schema = figures["free"][figure], figures["schema"][figure]
            figures[f"{figure}_cost_percent"] = (
                round(100 * (1 - schema / free), 1) if free and schema else None
            )
        results[str(streams)] = figures
        run.log(
            f"  {streams:>2} streams: per stream {figures['free']['per_stream_tok_s']} free, "
            f"{figures['schema']['per_stream_tok_s']} schema "
            f"({figures['per_stream_tok_s_cost_percent']}% cost); aggregate "
            f"{figures['free']['aggregate_tok_s']} free, {figures['schema']['aggregate_tok_s']} "
            f"schema ({figures['aggregate_tok_s_cost_percent']}% cost)"
        )
    return results


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.mean(present), 2) if present else None


def main() -> None:
    results: dict[str, Any] = {"machine": run.machine(), "new_tokens": NEW_TOKENS}
    with run.serving_platform() as (base, headers, setup):
        url = f"{base}/v1/chat/completions"
        run.log("cost of a schema: free text against JSON, alternating")
        results["cost"] = cost(url, headers, setup["model"])
        run.log("extraction: 50 prompts, a four-field schema")
        results["extraction"] = extraction(base, setup["key"], setup["model"])
    OUT.write_text(json.dumps(results, indent=1))
    run.log(f"wrote {OUT}; process logs in {run.LOGS}")


if __name__ == "__main__":
    main()
