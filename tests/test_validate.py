"""The boundary validators every entry point shares."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from engine.errors import BadInput
from engine.validate import inside, parse_float, parse_int, parse_port, safe_relative_name


@pytest.mark.parametrize("text", ["²", "٣", "1e3", "", " ", "99999999999999999999999", "-1", "0x10"])
def test_version_like_numbers_refuse_what_is_not_a_plain_bounded_integer(text):
    with pytest.raises(BadInput):
        parse_int("version", text, minimum=1)


def test_plain_integers_pass():
    assert parse_int("version", " 12 ", minimum=1) == 12
    assert parse_port("0") == 0 and parse_port(65535) == 65535
    with pytest.raises(BadInput):
        parse_port(70000)


@given(st.text(max_size=40))
def test_parse_int_either_returns_an_int_in_range_or_refuses(text):
    try:
        value = parse_int("n", text, minimum=0, maximum=1000)
    except BadInput as error:
        assert "\n" not in str(error)
    else:
        assert 0 <= value <= 1000


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e400", "x"])
def test_floats_must_be_finite(text):
    with pytest.raises(BadInput):
        parse_float("learning rate", text, minimum=0, exclusive_minimum=True)


def test_float_bounds():
    assert math.isclose(parse_float("lr", "2e-4", minimum=0, exclusive_minimum=True), 2e-4)
    with pytest.raises(BadInput):
        parse_float("lr", "0", minimum=0, exclusive_minimum=True)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/../../b", "a//b", "./a", "", "a\x00b",
                                  "a\\..\\b", "x/" + "y" * 300])
def test_file_names_from_outside_must_stay_inside(name, tmp_path):
    with pytest.raises(BadInput):
        safe_relative_name("file name", name)
    with pytest.raises(BadInput):
        inside(tmp_path, name)


def test_a_symlink_out_of_the_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "escape").symlink_to(tmp_path.parent)
    assert inside(tmp_path / "d", "sub/model.safetensors") == (tmp_path / "d" / "sub" / "model.safetensors").resolve()
    with pytest.raises(BadInput):
        inside(tmp_path / "d", "escape/x")


def test_checking_a_cuda_device_imports_no_torch():
    """The console's fine-tune form takes a device, and its process never imports torch."""
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = ("import sys\nfrom engine.validate import parse_device\ntry:\n    parse_device('cuda')\n"
             "except Exception:\n    pass\nprint('torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, capture_output=True,
                           text=True, timeout=60).stdout.strip()
    assert shown == "False"
