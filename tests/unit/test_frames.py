"""Where a client frame lies (gateway/frames.py), against frames websockets builds."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from topichub.gateway.frames import FAST_TEXT, client_frame_at, text_frame


def masked(frame: Frame) -> bytes:
    return frame.serialize(mask=True, extensions=[])


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_header_of_every_length_form(size: int) -> None:
    data = masked(Frame(Opcode.TEXT, b"x" * size))
    header = client_frame_at(data, 0)
    assert header is not None
    first, mask_at, length = header
    assert (first, length) == (FAST_TEXT, size)
    assert mask_at + 4 + length == len(data)  # the frame ends where its payload does


def test_a_header_cut_short_is_none_at_every_cut() -> None:
    for size in (10, 300, 70000):
        data = masked(Frame(Opcode.TEXT, b"y" * size))
        header_end = {10: 2, 300: 4, 70000: 10}[size]
        for cut in range(header_end):
            assert client_frame_at(data[:cut], 0) is None, (size, cut)
        assert client_frame_at(data[:header_end], 0) is not None


def test_frames_after_the_first_and_other_opcodes() -> None:
    ping = masked(Frame(Opcode.PING, b"hi"))
    cont = masked(Frame(Opcode.CONT, b"abc", fin=False))
    data = ping + cont
    assert client_frame_at(data, 0) == (0x89, 2, 2)
    first, mask_at, length = client_frame_at(data, len(ping)) or (0, 0, 0)
    assert (first, length) == (0x00, 3)  # no FIN, continuation
    assert mask_at == len(ping) + 2


def test_an_unmasked_frame_says_so() -> None:
    assert client_frame_at(text_frame(b"server-style"), 0) == (FAST_TEXT, -1, 12)
