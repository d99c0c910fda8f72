"""Turning generated tokens into safely streamable text: stop sequences and partial characters."""

from __future__ import annotations

from typing import Any


class StopTextTracker:
    """Holds back text that might still turn into a stop sequence or an unfinished character.

    ``update(full_text)`` takes the whole decoded completion so far and returns the new text that is
    safe to send; ``stopped`` becomes True once a stop sequence appears, and the text is cut before it.
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self.sent = 0
        self.stopped = False
        self.text = ""

    def update(self, full_text: str, *, final: bool = False) -> str:
        cut = self._first_stop(full_text)
        if cut is not None:
            full_text = full_text[:cut]
            self.stopped = True
            final = True
        self.text = full_text
        safe_end = len(full_text) if final else len(full_text) - self._hold(full_text)
        if safe_end <= self.sent:
            return ""
        new = full_text[self.sent : safe_end]
        self.sent = safe_end
        return new

    def _first_stop(self, text: str) -> int | None:
        # Only the tail can hold a new match: earlier text was checked on earlier calls.
        start = max(0, self.sent - max((len(s) for s in self.stop), default=0))
        hits = [i for s in self.stop if (i := text.find(s, start)) != -1]
        return min(hits) if hits else None

    def _hold(self, text: str) -> int:
        held = 0
        # A trailing U+FFFD is a multi-byte character whose bytes have not all arrived.
        while held < len(text) and text[len(text) - 1 - held] == "\ufffd":
            held += 1
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    held = max(held, n)
                    break
        return held


class IncrementalDetokenizer:
    """Text for one token at a time, at constant cost per token.

    Decoding the whole output at each step costs more the longer it gets; this decodes only the
    tokens since the last piece of text it returned (plus the ones before, for context), and holds
    a token back while it ends in an unfinished multi-byte character.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # ids before this were fully returned
        self.read_offset = 0  # ids before this are covered by returned text

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, token: int) -> str:
        """The new text that ``token`` completes (often the token's text, sometimes empty)."""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is held back, once no more tokens will come."""
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        self.read_offset = self.prefix_offset = len(self.ids)
        return after[len(before) :]
