"""The one sampler both engines use (``engines/sampling.py``), on made-up logits: each parameter
does what the README's table says, in its order."""

from __future__ import annotations

import numpy as np
import pytest

from apps.core.errors import ServiceError
from apps.inference.engines.sampling import log_probs, sample
from apps.inference.protocol import SamplingParams

LOGITS = np.array([1.0, 4.0, 3.0, 2.0, 0.5], dtype=np.float32)


def pick(counts=None, seen=(), seed=0, **params) -> int:
    rng = np.random.default_rng(seed)
    return sample(LOGITS, SamplingParams(**params), set(seen), rng, counts)


def picks(draws: int = 400, **params) -> set[int]:
    rng = np.random.default_rng(7)
    chosen = SamplingParams(**params)
    return {sample(LOGITS, chosen, set(), rng) for _ in range(draws)}


def test_greedy_is_the_top_logit_and_logit_bias_moves_it():
    assert pick(temperature=0) == 1
    assert pick(temperature=0, logit_bias={1: -100}) == 2  # banned: the next best
    assert pick(temperature=0, logit_bias={4: 100}) == 4  # forced
    assert pick(temperature=0, logit_bias={2: 1.5}) == 2  # 3 + 1.5 beats 4
    assert 1 not in picks(temperature=1, logit_bias={1: -100})


def test_frequency_and_presence_penalties_count_the_answers_tokens():
    # Token 1 was generated twice: 4 - 2 * 0.6 = 2.8 falls below token 2's 3.
    assert pick(temperature=0, frequency_penalty=0.6, counts={1: 2}) == 2
    assert pick(temperature=0, frequency_penalty=0.6, counts={1: 1}) == 1  # 3.4 still leads
    assert pick(temperature=0, presence_penalty=1.5, counts={1: 5}) == 2  # once, however often
    # Both: tokens 1 and 2 fall to 1.5 and 0.5, below token 3's 2.
    assert pick(temperature=0, presence_penalty=2, frequency_penalty=0.5, counts={1: 1, 2: 1}) == 3
    assert pick(temperature=0, frequency_penalty=-2, counts={4: 2}) == 4  # negative: encourages
    # Only generated tokens count: the prompt's ids (seen) do not, unlike repetition_penalty.
    assert pick(temperature=0, frequency_penalty=2, seen={1}) == 1
    assert pick(temperature=0, repetition_penalty=2, seen={1}) == 2  # 4 / 2 = 2 < 3


def test_min_p_keeps_tokens_near_the_likeliest():
    # At temperature 1, token 2 is e^-1 (0.37) times as likely as token 1, token 3 e^-2 (0.14).
    assert picks(temperature=1, min_p=0.3) == {1, 2}
    assert picks(temperature=1, min_p=0.1) == {1, 2, 3}
    assert picks(temperature=1, min_p=1.0) == {1}
    assert picks(temperature=1) == {0, 1, 2, 3, 4}


def test_a_seed_repeats_with_every_parameter():
    params = {"temperature": 1.2, "min_p": 0.05, "frequency_penalty": 0.5, "logit_bias": {0: 2}}
    assert [pick(seed=s, counts={1: 1}, **params) for s in range(20)] == [
        pick(seed=s, counts={1: 1}, **params) for s in range(20)
    ]


def test_is_greedy_only_when_nothing_reshapes_the_logits():
    assert SamplingParams(temperature=0).is_greedy
    for extra in ({"logit_bias": {3: 1}}, {"frequency_penalty": 0.1}, {"presence_penalty": -1}):
        assert not SamplingParams(temperature=0, **extra).is_greedy


@pytest.mark.parametrize(
    ("values", "param"),
    [
        ({"logit_bias": {5: 100.5}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "logit_bias"),
        ({"logit_bias": {i: 1 for i in range(301)}}, "logit_bias"),
        ({"presence_penalty": -2.1}, "presence_penalty"),
        ({"min_p": -0.1}, "min_p"),
    ],
)
def test_out_of_bounds_is_refused_by_name(values, param):
    with pytest.raises(ServiceError) as refused:
        SamplingParams.parse(values)
    assert refused.value.param == param


def test_log_probs_are_the_raw_softmax_whatever_reshapes_the_sampling():
    chosen, top = log_probs(LOGITS, 2, 3)
    exact = LOGITS.astype(np.float64) - np.log(np.exp(LOGITS.astype(np.float64)).sum())
    assert chosen == pytest.approx(exact[2])
    assert [token for token, _ in top] == [1, 2, 3]  # likeliest first
    assert [value for _, value in top] == pytest.approx([exact[1], exact[2], exact[3]])
    assert log_probs(LOGITS, 4, 0) == (pytest.approx(exact[4]), [])
    everything = log_probs(LOGITS, 0, 5)[1]
    assert sum(np.exp(value) for _, value in everything) == pytest.approx(1.0)
    tied = np.array([2.0, 5.0, 5.0, 1.0], dtype=np.float32)
    assert [token for token, _ in log_probs(tied, 0, 2)[1]] == [1, 2]  # ties by id


def test_logprobs_bounds_and_the_prompt_needing_them():
    with pytest.raises(ServiceError, match="logprobs"):
        SamplingParams.parse({"logprobs": 21})
    with pytest.raises(ServiceError, match="prompt_logprobs: it needs logprobs set"):
        SamplingParams.parse({"prompt_logprobs": True})
    assert SamplingParams.parse({"logprobs": 0, "prompt_logprobs": True}).prompt_logprobs
