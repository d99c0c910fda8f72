import pytest

from apps.core.errors import ErrorCode, ServiceError
from apps.inference.engines.text import StopTextTracker
from apps.inference.protocol import SamplingParams


def test_defaults():
    params = SamplingParams.parse({})
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.7, 1.0, 0, 512)
    assert params.stop == () and params.seed is None


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"repetition_penalty": 3}, "repetition_penalty"),
        ({"seed": -5}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"temperature": "hot"}, "temperature"),
    ],
)
def test_out_of_range_is_rejected_naming_the_parameter(data, param):
    with pytest.raises(ServiceError) as caught:
        SamplingParams.parse(data)
    assert caught.value.code == ErrorCode.INVALID_PARAMETER
    assert caught.value.param == param
    assert caught.value.message.startswith(f"Invalid value for {param}")


def test_unknown_parameter_is_named():
    with pytest.raises(ServiceError) as caught:
        SamplingParams.parse({"temprature": 1})
    assert caught.value.param == "temprature"
    assert caught.value.message == "Unknown parameter: temprature"


def test_stop_accepts_a_single_string():
    assert SamplingParams.parse({"stop": "\n\n"}).stop == ("\n\n",)


def feed(tracker, pieces, *, final=True):
    text, out = "", []
    for piece in pieces:
        text += piece
        out.append(tracker.update(text))
    if final and not tracker.stopped:
        out.append(tracker.update(text, final=True))
    return "".join(out)


def test_tracker_without_stops_passes_text_through():
    assert feed(StopTextTracker(()), ["Hel", "lo", " world"]) == "Hello world"


def test_tracker_cuts_at_a_stop_split_over_tokens():
    tracker = StopTextTracker(("END",))
    assert feed(tracker, ["one two E", "N", "D three"]) == "one two "
    assert tracker.stopped


def test_tracker_releases_a_false_start_of_a_stop():
    tracker = StopTextTracker(("END",))
    assert tracker.update("say EN") == "say "  # "EN" may still become "END"
    assert tracker.update("say ENough") == "ENough"
    assert not tracker.stopped


def test_tracker_cuts_at_the_earliest_of_several_stops():
    assert feed(StopTextTracker(("b", "c")), ["a", "c", "b"]) == "a"


def test_tracker_holds_an_unfinished_character():
    tracker = StopTextTracker(())
    assert tracker.update("caf\ufffd") == "caf"
    assert tracker.update("café") == "é"
