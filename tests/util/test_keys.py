"""`toonlab.util.keys` (nested settings by key path) and `toonlab.util.procs.pid_alive`."""

from __future__ import annotations

import os
import subprocess

import pytest

from toonlab.util import keys
from toonlab.util.procs import pid_alive


def test_find_get_put_replace():
    data = {"train": {"out_dir": "models", "gpus": 1}, "x": 3}
    assert keys.find(data, "train.out_dir") == (True, "models") == keys.find(data, ("train", "out_dir"))
    assert keys.find(data, "train.nope") == (False, None) == keys.find(data, "x.y")
    with pytest.raises(KeyError):
        keys.get(data, "x.y")
    keys.put(data, "a.b.c", 1)
    assert data["a"] == {"b": {"c": 1}}
    with pytest.raises(ValueError) as exc:
        keys.put(data, "x.y", 1)
    assert exc.value.args == ("x",)
    keys.replace(data, "train.gpus", 2)
    assert data["train"]["gpus"] == 2
    with pytest.raises(KeyError):
        keys.replace(data, "train.new", 1)


def test_merge_copies_and_flatten():
    base = {"m": {"a": 1, "b": {"c": 2}}, "n": [1]}
    out = keys.merge(base, {"m": {"b": {"d": 3}}, "n": 5})
    assert out == {"m": {"a": 1, "b": {"c": 2, "d": 3}}, "n": 5}
    assert base == {"m": {"a": 1, "b": {"c": 2}}, "n": [1]}
    nested = {"a": {"b": 1, "e": {}}, "c": 2}
    assert keys.flatten(nested) == {("a", "b"): 1, ("c",): 2}
    assert keys.flatten(nested, empty=True, sep=".") == {"a.b": 1, "a.e": {}, "c": 2}


def test_pid_alive():
    assert pid_alive(os.getpid())
    done = subprocess.Popen(["true"])
    done.wait()
    assert not pid_alive(done.pid)
    assert not any(pid_alive(p) for p in (0, -1, 2**40))
