"""What every part of the benchmark shares: the prompts, the request shape and the figures."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

NEW_TOKENS = 128
PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a busy day at a train station, hour by hour.",
    "Write a detailed recipe for bread, with every step explained.",
]


def messages(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}]


# The multi-turn run: one conversation of six questions over a document of about 1,000 tokens,
# short answers, each turn sending the whole history again (as a chat client does).
TURN_TOKENS = 48
SHORT_PROMPT = "Name the capital of France."
QUESTIONS = [
    "Summarise the report in two sentences.",
    "Which team met most often?",
    "What was decided on day 12?",
    "Which items came up more than once?",
    "Who should read this report first, and why?",
    "Write a one-line title for the report.",
]


def document(tag: str) -> str:
    """About 1,000 tokens of a made-up meeting report; ``tag`` at its start makes it new to any
    cache (a cold prompt) or the same as before (a conversation going on)."""
    teams = ["harbour", "library", "bakery", "railway", "garden", "museum"]
    lines = [f"Report {tag}: the minutes of thirty days of meetings in a small town."]
    for day in range(1, 31):
        team = teams[day * 7 % len(teams)]
        lines.append(
            f"Day {day}: the {team} team met at {8 + day % 9} o'clock, discussed item "
            f"{day * 11 % 17} and agreed to review it again on day {day + day % 5 + 1}."
        )
    return "\n".join(lines)


@dataclass
class Sample:
    """One streamed answer, timed by its client (seconds on one monotonic clock)."""

    start: float
    first: float | None
    last: float | None
    end: float
    tokens: int
    error: str = ""
    prompt_tokens: int = 0  # from the usage, where the server reports it

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def decode_rate(self) -> float | None:
        """Tokens per second after the first, as the client saw them arrive."""
        if self.first is None or self.last is None or self.last <= self.first or self.tokens < 2:
            return None
        return (self.tokens - 1) / (self.last - self.first)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarise(samples: list[Sample]) -> dict[str, object]:
    """Aggregate figures for one run of concurrent streams."""
    ok = [s for s in samples if not s.error]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    rates = [r for s in ok if (r := s.decode_rate) is not None]
    wall = max(s.end for s in samples) - min(s.start for s in samples) if samples else 0.0
    tokens = sum(s.tokens for s in ok)
    return {
        "streams": len(samples),
        "errors": [s.error for s in samples if s.error],
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2) if wall else None,
        "per_stream_tok_s": round(statistics.mean(rates), 2) if rates else None,
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        "ttft_p95_ms": _ms(percentile(ttfts, 95)),
        "samples": [asdict(s) for s in samples],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
