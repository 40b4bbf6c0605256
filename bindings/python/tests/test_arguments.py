"""Arguments the C ABI cannot carry, and arguments of the wrong type: refused with an error that
names them, never passed on altered (a NUL would cut a string short where C reads it)."""

from __future__ import annotations

import os
import pathlib

import pytest

import easdirect
from easdirect import Status
from easdirect import _client as internals

TWO = "static://10.0.0.1:80,10.0.0.2:80"


class BytesPath(os.PathLike):
    """A path whose ``__fspath__`` is bytes, as ``os.DirEntry`` of a bytes directory gives."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __fspath__(self) -> bytes:
        return self.raw


# (what the message names, how a client is made from the string, a string with a NUL in it):
# the part before the NUL is valid on its own, so a binding that cut the string there would
# make a client instead of refusing it.
NUL_CASES = {
    "target": ("target", lambda s: easdirect.Client(s), "static://10.0.0.1:80\0,10.0.0.2:80"),
    "option key": (
        "option key 'refresh_interval_ms\\x00x'",
        lambda s: easdirect.Client(TWO, **{s: 100}),
        "refresh_interval_ms\0x",
    ),
    "option value": (
        "the value of option 'refresh_interval_ms'",
        lambda s: easdirect.Client(TWO, refresh_interval_ms=s),
        "100\0junk",
    ),
    "path option value": (
        "the value of option 'snapshot_file'",
        lambda s: easdirect.Client(TWO, snapshot_file=pathlib.PurePosixPath(s)),
        "/nonexistent-easdirect-dir/snap\0.json",  # saving there fails: harmless
    ),
    "source option value": (
        "the value of option 'refresh_interval_ms'",
        lambda s: easdirect.Client.from_source(
            lambda: [("10.0.0.1", 80), ("10.0.0.2", 80)], refresh_interval_ms=s
        ),
        "100\0junk",
    ),
}


@pytest.mark.parametrize("case", NUL_CASES)
def test_a_nul_in_a_string_is_refused_never_cut_short(case):
    what, make, text = NUL_CASES[case]
    sources_before = set(internals._active_sources)
    with pytest.raises(easdirect.InvalidArgumentError) as ei:
        make(text)
    assert ei.value.code == Status.INVALID_ARGUMENT
    assert ei.value.message.startswith(what) and "NUL" in ei.value.message, ei.value.message
    assert set(internals._active_sources) == sources_before  # a refused source is not held
    with make(text.split("\0")[0]) as c:  # what C would have read
        c.wait_ready(5)
        assert len(c.instances()) == (1 if case == "target" else 2)


SURROGATE_CASES = {
    "target": ("target", lambda s: easdirect.Client(s), "static://10.0.0.1:80\udcff"),
    "option key": (
        "option key",
        lambda s: easdirect.Client(TWO, **{s: 100}),
        "refresh_interval_ms\udcff",
    ),
    "option value": (
        "the value of option 'snapshot_file'",
        lambda s: easdirect.Client(TWO, snapshot_file=s),
        "/tmp/easdirect-snap\udcff.json",
    ),
    # os.fsdecode of an undecodable byte gives a lone surrogate.
    "bytes path option value": (
        "the value of option 'snapshot_file'",
        lambda s: easdirect.Client(TWO, snapshot_file=BytesPath(os.fsencode(s))),
        "/tmp/easdirect-snap\udcff.json",
    ),
}


@pytest.mark.parametrize("case", SURROGATE_CASES)
def test_a_lone_surrogate_is_refused_naming_the_argument(case):
    what, make, text = SURROGATE_CASES[case]
    with pytest.raises(easdirect.InvalidArgumentError) as ei:
        make(text)
    assert ei.value.code == Status.INVALID_ARGUMENT
    assert isinstance(ei.value, ValueError)  # as the UnicodeEncodeError it replaces
    assert ei.value.message.startswith(what), ei.value.message
    assert "surrogate '\\udcff'" in ei.value.message, ei.value.message


def test_a_bytes_path_option_is_decoded_not_spelled_as_bytes(tmp_path):
    snap = tmp_path / "snap.json"
    with easdirect.Client(TWO, snapshot_file=BytesPath(os.fsencode(snap))) as c:
        assert len(c.instances()) == 2
    # The list was saved at the path itself, not at "b'...'" in the working directory.
    assert snap.is_file() and b"10.0.0.2" in snap.read_bytes()


def test_wrong_types_raise_type_error_and_leave_the_client_usable():
    for bad in (None, 42, b"static://10.0.0.1:80"):
        with pytest.raises(TypeError, match="target must be a str"):
            easdirect.Client(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fetch must be callable"):
        easdirect.Client.from_source(None)  # type: ignore[arg-type]
    with easdirect.Client(TWO) as c:
        inst = c.select()
        calls = [
            lambda: c.report_failure(None),  # type: ignore[arg-type]
            lambda: c.report_success(None),  # type: ignore[arg-type]
            lambda: c.report_failure(str(inst.id)),  # type: ignore[arg-type]
            lambda: c.report_success(float(inst.id)),  # type: ignore[arg-type]
            lambda: c.select_excluding(None),
            lambda: c.subscribe(None),  # type: ignore[arg-type]
            lambda: c.wait_ready(None),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(TypeError):
                call()
        assert c.stats().ejected == 0  # none of them reported anything
        assert c.report_failure(inst) and c.stats().ejected == 1
        c.wait_ready(float("inf"))  # ready: returns at once, no OverflowError
