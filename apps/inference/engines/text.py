"""Text in and out of the model: chat prompts whose messages cannot forge the template's control
tokens, and generated tokens turned into safely streamable text (stop sequences and partial
characters)."""

from __future__ import annotations

import logging
import re
import weakref
from collections import Counter, deque
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, Finished, GenerationRequest, Resume

from .constraint import Constraint, ConstraintError
from .sampling import log_probs, sample

if TYPE_CHECKING:
    from .thread import Submission

logger = logging.getLogger(__name__)

# Private-use characters around a message's index stand in for its text in the rendered template.
_MARK = re.compile("\ue000(\\d+)\ue001")


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids: the chat template's own text with its control tokens, and each
    message's text encoded as plain text. A message containing "<|im_end|>" (or any special
    token's text) gets those characters, not the control token, so text from an untrusted end
    user cannot close its turn or forge a system one.

    The template is rendered with a placeholder for each message's text; the pieces between are
    encoded as usual. Encoded apart, whitespace at the very start of a message may be split into
    other tokens than in one pass over the whole text (the same characters). A template that
    alters the text (the rendering with placeholders, filled in, differs from the real one) is
    encoded whole, as transformers would, and logged.
    """
    placeholders = [
        {**message, "content": f"\ue000{index}\ue001"} for index, message in enumerate(messages)
    ]
    rendered = tokenizer.apply_chat_template(
        placeholders, add_generation_prompt=True, tokenize=False
    )

    def content(mark: re.Match[str]) -> str:
        return messages[int(mark.group(1))]["content"]

    actual = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if _MARK.sub(content, rendered) != actual:
        logger.warning("the chat template alters message text: encoding the prompt whole")
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def encode(text: str, *, plain: bool) -> list[int]:
        if not text:
            return []
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=plain)["input_ids"]
        return list(ids)

    ids: list[int] = []
    start = 0
    for mark in _MARK.finditer(rendered):
        ids += encode(rendered[start : mark.start()], plain=False)
        ids += encode(content(mark), plain=True)
        start = mark.end()
    return ids + encode(rendered[start:], plain=False)


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


@cache
def _byte_decoder() -> dict[str, int]:
    """The characters a byte-level BPE vocabulary (GPT-2's, SmolLM2's) writes each byte as."""
    from gguf.vocab import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


class TokenPieces:
    """Each token's own text and bytes, as log-probability entries show them (OpenAI's
    ``token`` and ``bytes``): a token may hold part of a character, whose bytes then say what it
    is while its text shows U+FFFD. Looked up once per token id and kept."""

    _of: weakref.WeakKeyDictionary[Any, TokenPieces] = weakref.WeakKeyDictionary()

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pieces: dict[int, tuple[str, list[int]]] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"

    @classmethod
    def of(cls, tokenizer: Any) -> TokenPieces:
        """The one table of ``tokenizer``'s pieces (engines share a tokenizer per model)."""
        pieces = cls._of.get(tokenizer)
        if pieces is None:
            pieces = cls._of[tokenizer] = cls(tokenizer)
        return pieces

    def piece(self, token: int) -> tuple[str, list[int]]:
        found = self.pieces.get(token)
        if found is None:
            text = str(self.tokenizer.decode([token], skip_special_tokens=False))
            raw = None
            if self.byte_level:
                written = self.tokenizer.convert_ids_to_tokens(token)
                table = _byte_decoder()
                if all(char in table for char in written):
                    raw = [table[char] for char in written]
            found = self.pieces[token] = (text, raw if raw is not None else list(text.encode()))
        return found

    def entry(self, token: int, logprob: float | None) -> dict[str, Any]:
        text, raw = self.piece(token)
        return {"token": text, "logprob": logprob, "bytes": raw}


class Answer:
    """One request's answer as an engine generates it, the same bookkeeping on every engine: the
    ids seen (prompt and output, for the repetition penalty) and how often each was generated
    (for the frequency and presence penalties), the next token's choice from the logits
    (``choose``: sampling, and its log-probabilities when the request keeps them), the text
    through the incremental detokenizer, the stop sequences, ``max_tokens``, the grammar's
    ``constraint`` when the request has one, and the tail the stop tracker held back, sent when
    it ends."""

    def __init__(
        self,
        submission: Submission,
        tokenizer: Any,
        prompt_ids: list[int],
        constraint: Constraint | None = None,
    ) -> None:
        self.submission = submission
        self.constraint = constraint
        self.params = submission.request.params
        self.max_tokens = self.params.max_tokens
        self.pieces = TokenPieces.of(tokenizer) if self.params.logprobs is not None else None
        self.chosen: tuple[int, dict[str, Any]] | None = None  # the last choice's entry
        self.prompt_entries: list[dict[str, Any]] | None = None  # ``score_prompt``'s
        self.tracker = StopTextTracker(submission.request.params.stop)
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.seen = set(prompt_ids)
        self.counts: Counter[int] = Counter()  # generated tokens, for the frequency penalties
        self.generated = 0
        self.text = ""

    def resume(self, resume: Resume) -> bool:
        """Take over an answer from its stored tokens: they count as generated, their text as
        streamed up to ``resume.text`` (the rest is what the stop tracker still held back).
        False when the tokens do not give that text."""
        for token in resume.token_ids:
            self.text += self.detokenizer.push(token)
            if self.constraint is not None:
                try:
                    self.constraint.advance(token)
                except ConstraintError:
                    return False
        if not self.text.startswith(resume.text):
            return False
        self.generated = len(resume.token_ids)
        self.seen.update(resume.token_ids)
        self.counts.update(resume.token_ids)
        self.tracker.update(self.text)
        self.tracker.sent = len(resume.text)
        return True

    @property
    def ended(self) -> str | None:
        """The finish reason of an answer that needs no more tokens (a resumed one may not)."""
        if self.tracker.stopped or (self.constraint is not None and self.constraint.complete):
            return "stop"
        return "length" if self.generated >= self.max_tokens else None

    @property
    def needs_logits(self) -> bool:
        """Whether ``choose`` must see the logits even where the request is greedy."""
        return self.pieces is not None or self.constraint is not None

    def choose(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        """The next token from this position's raw ``logits`` (``sampling.sample``, among the
        tokens the grammar allows when there is one), and, when the request keeps them, its
        log-probability entry for ``take`` (from the raw logits: the model's own belief)."""
        allowed = logits if self.constraint is None else self.constraint.allow(logits)
        token = sample(allowed, self.params, self.seen, rng, self.counts)
        if self.pieces is not None:
            self.chosen = (token, self._entry(logits, token))
        return token

    def _entry(self, logits: np.ndarray, token: int) -> dict[str, Any]:
        """``token``'s log-probability entry at the position whose raw logits are ``logits``."""
        assert self.pieces is not None
        chosen, top = log_probs(logits, token, self.params.logprobs or 0)
        entry = self.pieces.entry(token, chosen)
        entry["top_logprobs"] = [self.pieces.entry(i, lp) for i, lp in top]
        return entry

    @property
    def scores_prompt(self) -> bool:
        """Whether the engine must give ``score_prompt`` the logits at every prompt position."""
        return self.params.prompt_logprobs

    def score_prompt(self, prompt_ids: list[int], logits: Any, start: int = 0) -> None:
        """Score prompt tokens from ``logits[j]``, the raw logits after prompt position
        ``start + j``: they give token ``start + j + 1``'s entry (rows past the prompt's last
        but one position are ignored). Called in position order; the first token, which nothing
        before it predicts, has its text and a log-probability of None. Once every token has its
        entry, they go out with the answer's next delta."""
        assert self.pieces is not None
        if self.prompt_entries is None:
            first = self.pieces.entry(prompt_ids[0], None)
            self.prompt_entries = [{**first, "top_logprobs": None}]
        for j in range(min(len(logits), len(prompt_ids) - 1 - start)):
            token = prompt_ids[start + j + 1]
            self.prompt_entries.append(self._entry(logits[j], token))
        if len(self.prompt_entries) == len(prompt_ids):
            self.submission.prompt_logprobs = tuple(self.prompt_entries)

    def take(self, token: int, end_ids: set[int], *, interval: float) -> str | None:
        """Take the sampled ``token`` and stream what it adds; the finish reason when the answer
        has ended with it, else None."""
        if token in end_ids:
            return "stop"
        if self.constraint is not None:
            self.constraint.advance(token)
        self.generated += 1
        self.seen.add(token)
        self.counts[token] += 1
        piece = self.detokenizer.push(token)
        new = ""
        if piece:
            self.text += piece
            new = self.tracker.update(self.text)
        entries: tuple[dict[str, Any], ...] = ()
        if self.chosen is not None and self.chosen[0] == token:
            entries = (self.chosen[1],)
        self.submission.add(new, (token,), interval=interval, logprobs=entries)
        return self.ended

    def finish(self, reason: str, prompt_tokens: int, cached_tokens: int = 0) -> None:
        """End the stream: the held-back tail, then ``Finished``."""
        if not self.tracker.stopped:
            tail = self.tracker.update(self.text + self.detokenizer.flush(), final=True)
            self.submission.pending_text += tail
        self.submission.end(
            Finished(reason, prompt_tokens, self.generated, cached_tokens)  # type: ignore[arg-type]
        )


def answer_for(
    submission: Submission,
    tokenizer: Any,
    prompt_ids: list[int],
    *,
    end_ids: set[int],
    vocab_size: int,
) -> Answer | EngineError:
    """The request's ``Answer``, with its grammar compiled against the model's vocabulary
    (``end_ids`` end the text, ``vocab_size`` is the logits' width), or the error that refuses a
    grammar this model cannot follow."""
    grammar = submission.request.params.grammar
    constraint = None
    if grammar is not None:
        try:
            constraint = Constraint(grammar, tokenizer, end_ids=end_ids, vocab_size=vocab_size)
        except ConstraintError as exc:
            return EngineError(
                ErrorCode.INVALID_PARAMETER,
                f"The response format cannot be used with this model: {exc}",
            )
    return Answer(submission, tokenizer, prompt_ids, constraint)


def prompt_ids_for(
    tokenizer: Any, request: GenerationRequest, *, vocab_size: int, context_length: int
) -> list[int] | EngineError:
    """A request's prompt as token ids (chat messages through the template, a completion prompt
    as it is), or the error that refuses it: unreadable, empty, a ``logit_bias`` id past the
    vocabulary, or prompt and ``max_tokens`` over the model's context (never truncated). The
    checks every engine makes before a request may wait for a slot."""
    params = request.params
    try:
        if request.messages is not None:
            ids = chat_prompt_ids(tokenizer, request.messages)
        else:
            ids = list(tokenizer(request.prompt or "")["input_ids"])
    except Exception:
        logger.exception("could not tokenize request %s", request.request_id)
        return EngineError(ErrorCode.INVALID_PARAMETER, "The prompt could not be read.")
    if not ids:
        return EngineError(ErrorCode.INVALID_PARAMETER, "The prompt is empty.")
    outside = sorted(token for token in params.logit_bias if token >= vocab_size)
    if outside:
        return EngineError(
            ErrorCode.INVALID_PARAMETER,
            f"logit_bias names token {outside[0]}, but this model's vocabulary has {vocab_size} "
            f"tokens (ids 0 to {vocab_size - 1}).",
        )
    if len(ids) + params.max_tokens > context_length:
        return EngineError(
            ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            f"The prompt has {len(ids)} tokens and max_tokens is {params.max_tokens}; together "
            f"they exceed the model's context of {context_length} tokens. Shorten the "
            "conversation or lower max_tokens.",
        )
    return ids


def wait_in_turn(waiting: deque[Any], entry: Any) -> None:
    """Put ``entry`` (anything with a ``submission``) in ``waiting``: an interactive request
    ahead of every Batch API request, each kind in arrival order."""
    if not entry.submission.request.batch:
        for index, queued in enumerate(waiting):
            if queued.submission.request.batch:
                waiting.insert(index, entry)
                return
    waiting.append(entry)
