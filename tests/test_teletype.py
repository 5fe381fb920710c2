"""Every profile through a real pty with pyserial, checked from the other end."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import PortError, ProfileError
from appliance.teletype import codes
from appliance.teletype.discipline import LineDiscipline
from appliance.teletype.keyboard import KeyboardReader
from appliance.teletype.ports import SerialPort, TranscriptPort, open_port
from appliance.teletype.printer import Printer
from appliance.teletype.profiles import PROFILES, get_profile
from appliance.testing.wire import FakeClock, PtyReader, check_ascii, check_baudot

HOSTILE = (
    "Hello {world} | ~tilde~ `tick` \x1b[31mred\x1b[0m \x07bell\x00nul\x7f "
    "caf\u00e9 na\u00efve \u00fcber \u2014 \u201cquotes\u201d \u2192 \u4f60\u597d "
    "\U0001f680 \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439 "
    "Supercalifragilisticexpialidocious"
    * 1
    + " a" * 5
    + " "
    + "X" * 160
    + "\n\n\n\nend\r\nof text.\tTab"
)


@pytest.fixture
def pty():
    reader = PtyReader()
    yield reader
    reader.close()


def _printer(port, profile_name: str, clock: FakeClock, **kw) -> Printer:
    profile = get_profile(profile_name)
    discipline = LineDiscipline(profile, **kw)
    return Printer(port, discipline, clock=clock, sleep=clock.sleep)


def _serial(pty, profile_name: str, parity: str | None = None, software: bool = True):
    profile = get_profile(profile_name)
    return SerialPort(pty.name, profile, parity or profile.parity, software)


def _check(profile_name: str, data: bytes, **kw):
    profile = get_profile(profile_name)
    if profile.is_baudot:
        return check_baudot(
            data,
            codes.BAUDOT_LETTERS,
            codes.BAUDOT_FIGURES[profile.code],
            width=profile.columns,
            **kw,
        )
    return check_ascii(data, width=profile.columns, **kw)


@pytest.mark.parametrize("profile_name", list(PROFILES))
def test_teletype_every_profile_through_a_pty(pty, profile_name):
    clock = FakeClock()
    printer = _printer(_serial(pty, profile_name), profile_name, clock)
    result = printer.print_text(HOSTILE)
    printer.close()
    data = pty.collect()
    assert len(data) == result.characters
    report = _check(profile_name, data)
    assert report.problems == []
    assert report.ends_at_column_zero
    text = report.text
    assert "HELLO" in text and "END" in text
    # The 160-character word is broken at the margin, every piece a full line.
    width = get_profile(profile_name).columns
    assert "X" * width in report.lines
    # No more than one blank line for the run of newlines.
    assert "\n\n\n" not in text


def test_teletype_asr33_folds_to_the_typewheel(pty):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33"), "asr33", clock)
    printer.print_text("Hello {world} | ~x~ `q` caf\u00e9 \u2014 ok")
    printer.close()
    report = check_ascii(pty.collect())
    assert report.problems == []
    assert report.lines[0] == "HELLO (WORLD) ! -X- 'Q' CAFE - OK"


@pytest.mark.parametrize("parity", ["even", "odd", "mark", "space"])
def test_teletype_software_parity_on_8_bit_frames(pty, parity):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33", parity), "asr33", clock, parity=parity)
    printer.print_text("PARITY CHECK 0123456789")
    printer.close()
    report = check_ascii(pty.collect(), parity=parity)
    assert report.problems == []
    assert report.lines[0] == "PARITY CHECK 0123456789"


def test_teletype_uart_parity_sends_7_bit_codes(pty):
    """With the UART making parity, we hand it 7-bit codes (a pty shows them as sent)."""
    clock = FakeClock()
    profile = get_profile("asr33")
    port = SerialPort(pty.name, profile, "even", software_parity=False)
    assert port.settings()["bytesize"] == 7 and port.settings()["parity"] == "E"
    printer = Printer(
        port, LineDiscipline(profile, software_parity=False), clock=clock, sleep=clock.sleep
    )
    printer.print_text("UART")
    printer.close()
    data = pty.collect()
    assert all(b < 0x80 for b in data)
    assert data.startswith(b"UART\r")


def test_teletype_del_fills_and_other_counts(pty):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33"), "asr33", clock, cr_fills=3, lf_fills=2, fill="del")
    printer.print_text("ONE\nTWO")
    printer.close()
    report = check_ascii(pty.collect(), cr_fills=3, lf_fills=2, fill=0x7F)
    assert report.problems == []
    assert report.lines[:2] == ["ONE", "TWO"]


@pytest.mark.parametrize("profile_name", list(PROFILES))
def test_teletype_pacing_is_the_nominal_rate(pty, profile_name):
    clock = FakeClock()
    profile = get_profile(profile_name)
    printer = _printer(_serial(pty, profile_name), profile_name, clock)
    text = ("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG 0123456789 " * 4)[:200]
    start = clock.now
    result = printer.print_text(text)
    printer.close()
    elapsed = clock.now - start
    # The first frame goes at once; every later one waits one frame time.
    rate = (result.characters - 1) / elapsed
    assert result.characters >= 200
    assert rate == pytest.approx(profile.characters_per_second(), rel=0.01)
    assert len(pty.collect()) == result.characters


def test_teletype_asr33_is_ten_characters_a_second():
    assert get_profile("asr33").characters_per_second() == pytest.approx(10.0)
    assert get_profile("asr33").bits_per_character() == 11


def test_teletype_idle_time_is_not_made_up_with_a_burst(pty):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33"), "asr33", clock)

    def slow_text():
        yield "FIRST WORDS "
        clock.now += 30.0  # the generator was slow
        yield "SECOND WORDS."

    printer.print_stream(slow_text())
    printer.close()
    # After the pause the printer restarts from now, not from a deadline in
    # the past: every gap is at least one frame time.
    assert check_ascii(pty.collect()).problems == []
    assert clock.now > 30.0 + 12 * 0.1


@pytest.mark.parametrize("profile_name", list(PROFILES))
def test_teletype_cancel_lands_within_one_line_and_leaves_column_zero(pty, profile_name):
    clock = FakeClock()
    cancel = threading.Event()
    printer = _printer(_serial(pty, profile_name), profile_name, clock)
    frame = printer.frame_time
    text = "ALL WORK AND NO PLAY MAKES A DULL TELETYPE. " * 20

    def cancel_after_100(c):
        if c.now >= 100 * frame:
            cancel.set()

    clock.on_sleep = cancel_after_100
    result = printer.print_text(text, cancel)
    printer.close()
    data = pty.collect()
    assert result.cancelled
    report = _check(profile_name, data)
    assert report.problems == []
    assert report.ends_at_column_zero
    # At most one more line's worth after the cancel (here: just the CR LF).
    after_cancel = result.characters - 100
    assert after_cancel <= get_profile(profile_name).columns + 8


def test_teletype_bell_rings_with_parity(pty):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33"), "asr33", clock)
    printer.bell()
    printer.close()
    assert pty.collect() == bytes([0x87])  # BEL with even parity


def test_teletype_unplugged_adapter_pauses_and_resumes(pty, tmp_path):
    """The port vanishes mid-line; the printer waits, reopens, reprints the line."""
    clock = FakeClock()
    profile = get_profile("asr33")
    port = _serial(pty, "asr33")
    states = []
    told: list[bytes] = []  # what the printer says it wrote (the paper model hears this)
    printer = Printer(
        port, LineDiscipline(profile), clock=clock, sleep=clock.sleep,
        on_port_state=states.append, on_write=told.append,
    )  # fmt: skip
    real_name = port.name
    failures = {"left": 3}

    def unplug_then_replug(c):
        # At the 20th character the adapter disappears for three retries.
        if c.sleeps == 20:
            port.close()
            port.name = str(tmp_path / "ttyUSB-gone")
        if port.name != real_name and c.now > 0 and c.sleeps > 20:
            failures["left"] -= 1
            if failures["left"] == 0:
                port.name = real_name

    clock.on_sleep = unplug_then_replug
    text = "NOTHING IS LOST WHEN THE CABLE IS PULLED OUT AND PUT BACK."
    result = printer.print_text(text)
    printer.close()
    wire = pty.collect()
    report = check_ascii(wire)
    assert report.problems == []
    # The paper model and the keyboard's echo hear every byte the wire got,
    # the fresh line and the reprinted line included.
    assert b"".join(told) == wire
    # What reached the paper before the cable came out is unknown: the line
    # is printed again, whole, on a fresh line.
    assert text.startswith(report.lines[0]) and len(report.lines[0]) < len(text)
    assert report.lines[1] == text
    assert "offline" in states and states[-1] == "open"
    assert not result.cancelled


def test_teletype_unknown_device_is_a_clear_error(tmp_path):
    port = SerialPort(str(tmp_path / "ttyNONE"), get_profile("asr33"), "even", True)
    with pytest.raises(PortError, match="ttyNONE"):
        port.open()


def test_teletype_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match="asr33, model28, ita2"):
        get_profile("asr35")


def test_teletype_transcript_file(tmp_path):
    path = tmp_path / "paper.txt"
    profile = get_profile("asr33")
    port = open_port(f"file:{path}", profile, "even", True)
    assert isinstance(port, TranscriptPort)
    clock = FakeClock()
    printer = Printer(port, LineDiscipline(profile), clock=clock, sleep=clock.sleep)
    printer.print_text("first line\nsecond line")
    printer.close()
    assert path.read_text() == "FIRST LINE\nSECOND LINE\n"
    assert clock.sleeps == 0  # a file is not paced


def test_teletype_virtual_terminal_renders_upper_case(capsys):
    profile = get_profile("asr33")
    port = open_port("virtual", profile, "even", True)
    clock = FakeClock()
    Printer(port, LineDiscipline(profile), clock=clock, sleep=clock.sleep).print_text("Hi there")
    assert capsys.readouterr().out == "HI THERE\n"


def test_teletype_keyboard_lines_with_parity_and_half_duplex_echo():
    profile = get_profile("asr33")
    keyboard = KeyboardReader(profile, half_duplex=True)
    sent = bytes([0xC8, 0xC9])  # "HI" as we sent it (even parity)
    keyboard.sent(sent)
    typed = bytes(c | (codes.parity_bit(c, "even") << 7) for c in b"HELLO\r")
    assert keyboard.received(sent + typed) == ["HELLO"]
    assert keyboard.received(b"PART") == []
    assert keyboard.received(b"IAL\r\n") == ["PARTIAL"]


def test_teletype_keyboard_reads_a_line_through_the_pty(pty):
    profile = get_profile("asr33")
    port = _serial(pty, "asr33")
    port.open()
    keyboard = KeyboardReader(profile)
    pty.type(bytes(c | (codes.parity_bit(c, "even") << 7) for c in b"THE TYPING UNIT\r"))
    lines = []
    for _ in range(50):
        lines += keyboard.received(port.read(0.05))
        if lines:
            break
    port.close()
    assert lines == ["THE TYPING UNIT"]


def test_teletype_baudot_keyboard_decodes_shifts():
    profile = get_profile("model28")
    keyboard = KeyboardReader(profile)
    b = codes.BAUDOT_LETTERS
    f = codes.USTTY_FIGURES
    data = bytes([codes.LTRS, b["H"], b["I"], codes.SPACE, codes.FIGS, f["3"], f["3"], codes.CR])
    assert keyboard.received(data) == ["HI 33"]


def test_teletype_baudot_uses_as_few_shifts_as_possible():
    discipline = LineDiscipline(get_profile("ita2"))
    frames = discipline.start_job() + discipline.feed("AB 12 CD 3.") + discipline.flush()
    shifts = [f.code for f in frames if f.code in (codes.LTRS, codes.FIGS)]
    # LTRS (start), FIGS for "12", LTRS for "CD", FIGS for "3.": four, no more.
    assert shifts == [codes.LTRS, codes.FIGS, codes.LTRS, codes.FIGS]


def test_teletype_ita2_never_sends_who_are_you():
    # FIGS-D on ITA2 trips the far machine's answer-back.
    discipline = LineDiscipline(get_profile("ita2"))
    frames = discipline.start_job() + discipline.feed('$ & # ! ; " D$D ') + discipline.flush()
    shift = None
    for f in frames:
        if f.code in (codes.LTRS, codes.FIGS):
            shift = f.code
        assert not (shift == codes.FIGS and f.code == 0x09)


# --- properties over arbitrary Unicode -------------------------------------------


def _all_frames(discipline, pieces):
    frames = discipline.start_job()
    for piece in pieces:
        frames += discipline.feed(piece)
    return frames + discipline.flush() + discipline.end_line()


@pytest.mark.parametrize("profile_name", list(PROFILES))
@given(pieces=st.lists(st.text(max_size=120), max_size=6))
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_teletype_any_unicode_keeps_the_wire_invariants(profile_name, pieces):
    profile = get_profile(profile_name)
    data = bytes(f.code for f in _all_frames(LineDiscipline(profile), pieces))
    report = _check(profile_name, data)
    assert report.problems == []
    assert report.ends_at_column_zero


@given(st.text(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_teletype_asr33_prints_every_word_it_can(text):
    """Folding loses only what cannot be printed: the words come out in order."""
    profile = get_profile("asr33")
    discipline = LineDiscipline(profile)
    data = bytes(f.code for f in _all_frames(discipline, [text]))
    printed = check_ascii(data).text.split()
    folded = codes.CHARACTER_SETS["ascii63"].fold(text).split()
    # Words longer than a line are broken; join both sides to compare.
    assert "".join(printed) == "".join(folded)


def test_teletype_bell_during_a_print_rings_between_characters(pty):
    clock = FakeClock()
    printer = _printer(_serial(pty, "asr33"), "asr33", clock)

    def ring_once(c):
        if c.sleeps == 10:
            printer.bell()  # from inside the print, as a second thread would find it busy

    clock.on_sleep = ring_once
    printer.print_text("A BELL RINGS IN THE MIDDLE OF THIS LINE.")
    printer.close()
    data = pty.collect()
    assert data.count(0x87) == 1
    assert 9 <= data.index(0x87) <= 12  # between two characters, not after the job
    report = check_ascii(data, allow_bell=True)
    assert report.problems == []
    assert report.lines[0] == "A BELL RINGS IN THE MIDDLE OF THIS LINE."


@pytest.mark.parametrize("port", ["virtual", "{tmp}/ttyTELETYPE"])
def test_printer_speed_factor_paces_a_serial_port_too(tmp_path, port):
    # A test's pty may print fast (a file is never paced); the Teletype's pacing is tested above.
    from appliance.config import TeletypeConfig
    from appliance.teletype import build_printer

    spec = port.format(tmp=tmp_path)
    normal = build_printer(TeletypeConfig(port=spec))
    fast = build_printer(TeletypeConfig(port=spec, speed=100))
    assert normal.frame_time == pytest.approx(0.1)  # 11 bits at 110 baud
    assert fast.frame_time == pytest.approx(normal.frame_time / 100)


def _printed(frames) -> str:
    return "".join(chr(f.code & 0x7F) for f in frames if f.code & 0x7F not in (0, 0x7F))


def test_teletype_a_word_known_whole_prints_before_the_next_piece():
    """A reply's pieces end at words' ends: the first word goes on paper at once,
    not when the next piece brings the space after it."""
    d = LineDiscipline(get_profile("asr33"))
    assert _printed(d.start_job() + d.feed("THE")) == ""  # could be the start of THEM
    d = LineDiscipline(get_profile("asr33"))
    assert _printed(d.start_job() + d.feed("THE", word_end=True)) == "THE"
    assert _printed(d.feed(" CLUTCH", word_end=True) + d.feed(",", word_end=True)) == " CLUTCH,"


def test_teletype_a_word_that_ends_at_the_margin_waits_for_what_follows():
    """A comma after a word that fills the line must not start the next line alone."""
    d = LineDiscipline(get_profile("asr33"))
    frames = d.start_job() + d.feed("A" * (d.width - 5) + " WORD", word_end=True)
    assert _printed(frames) == "A" * (d.width - 5) + " "  # WORD would end at the margin
    frames = d.feed(", THEN", word_end=True) + d.flush()
    assert _printed(frames) == "\r\nWORD, THEN"
