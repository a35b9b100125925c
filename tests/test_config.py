from dataclasses import dataclass
from typing import Literal

import pytest

from irbench.core.config import (
    build_config,
    changed_fields,
    config_hash,
    describe_fields,
    param,
    parse_value,
)
from irbench.errors import ConfigError


@dataclass(frozen=True)
class C:
    size: int = param(10, "a size")
    rate: float = param(0.5, "a rate")
    flag: bool = param(False, "a flag")
    mode: Literal["a", "b"] = param("a", "a mode")
    ks: tuple[int, ...] = param((1, 2), "some ints")
    maybe: int | None = param(None, "optional int")
    name: str = param("x", "a name", choices=("x", "y"))


def test_parse_values_by_type():
    assert parse_value(int, "3") == 3
    assert parse_value(float, "1e-3") == 1e-3
    assert parse_value(bool, "True") is True and parse_value(bool, "no") is False
    assert parse_value(tuple[int, ...], "1,2,5") == (1, 2, 5)
    assert parse_value(int | None, "none") is None and parse_value(int | None, "4") == 4
    assert parse_value(Literal["a", "b"], "b") == "b"


@pytest.mark.parametrize("key,value", [("size", "ten"), ("flag", "maybe"), ("mode", "c"),
                                       ("name", "z")])
def test_bad_values_name_the_field(key, value):
    with pytest.raises(ConfigError, match=key):
        build_config(C, {key: value})


def test_unknown_key_lists_fields_and_closest():
    with pytest.raises(ConfigError) as err:
        build_config(C, {"sise": "3"}, owner="method 'x'")
    msg = str(err.value)
    assert "sise" in msg and "Did you mean size" in msg and "rate" in msg


def test_build_and_hash():
    c = build_config(C, {"size": "3", "ks": "4,5"})
    assert c.size == 3 and c.ks == (4, 5)
    assert changed_fields(c) == {"size": 3, "ks": [4, 5]}
    assert config_hash(c) == config_hash(build_config(C, {"ks": "4,5", "size": "3"}))
    assert config_hash(c) != config_hash(C())
    assert config_hash(c, ["rate"]) == config_hash(C(), ["rate"])


def test_describe_fields():
    fields = {f["name"]: f for f in describe_fields(C)}
    assert fields["size"]["default"] == 10 and fields["size"]["help"] == "a size"
    assert fields["mode"]["choices"] == ["a", "b"]
    assert fields["ks"]["default"] == [1, 2]
