"""Params validation: every problem names its key path."""

from pathlib import Path

import pytest
import yaml

from toonlab import registry
from toonlab.errors import ParamsError
from toonlab.params import Params, Section, load_params, validate_params

REPO = Path(__file__).resolve().parents[1]


def problems(raw) -> list[str]:
    with pytest.raises(ParamsError) as info:
        validate_params(raw)
    return info.value.problems


def test_repo_params_file_is_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    # Every key of the schema is written out in params.yaml (no hidden defaults).
    on_disk = yaml.safe_load((REPO / "params.yaml").read_text())
    # ... except `evaluate.runs: []`, which reads as every family with inference.
    assert on_disk["evaluate"]["runs"] == [] and params.evaluate.runs == registry.with_inference()
    on_disk["evaluate"]["runs"] = params.evaluate.runs
    assert on_disk == params.model_dump(mode="json")


def test_empty_params_gives_defaults():
    assert validate_params({}) == Params()


def test_wrong_type_names_key_and_value():
    assert problems({"demo": {"anime_count": "ten"}}) == [
        "demo.anime_count: expected an integer >= 1 and <= 10000, got 'ten'"]


def test_number_with_range_message():
    assert problems({"demo": {"anime_px": 10}}) == [
        "demo.anime_px: expected an integer >= 64 and <= 2048, got 10"]


def test_negative_value_rejected():
    assert problems({"seed": -1}) == ["seed: expected an integer >= 0, got -1"]


def test_unknown_key_names_path_and_suggests():
    (msg,) = problems({"demo": {"anime_cout": 3}})
    assert msg.startswith("demo.anime_cout: unknown key (did you mean 'anime_count'?)")
    assert "allowed here:" in msg


def test_unknown_section():
    (msg,) = problems({"cyclegann": {}})
    assert msg.startswith("cyclegann: unknown key")


def test_literal_choices_listed():
    assert problems({"runtime": {"device": "tpu"}}) == [
        "runtime.device: expected one of 'auto', 'cpu', 'cuda', got 'tpu'"]


def test_bool_is_not_coerced_from_string():
    assert problems({"demo": {"messy": "yes"}}) == ["demo.messy: expected true or false, got 'yes'"]


def test_list_items_are_checked_with_index():
    (msg,) = problems({"data": {"domains": ["photo", "cartoon"]}})
    assert msg == "data.domains.1: expected one of 'photo', 'anime', got 'cartoon'"


def test_section_must_be_mapping():
    (msg,) = problems({"demo": 3})
    assert msg.startswith("demo: expected a mapping of seed,")


def test_all_problems_reported_at_once():
    found = problems({"seed": "x", "demo": {"anime_px": 1, "bogus": 1}})
    assert [m.split(":")[0] for m in found] == ["seed", "demo.anime_px", "demo.bogus"]


def test_yaml_syntax_error_has_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("demo:\n  seed: [1,\n")
    with pytest.raises(ParamsError) as info:
        load_params(p)
    assert "not valid YAML (line" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match=r"\(top level\): expected a mapping"):
        load_params(p)


def test_dvc_unsafe_parameter_names_are_refused():
    with pytest.raises(TypeError, match="size"):
        class Bad(Section):  # noqa: F841
            size: int = 3


def test_nested_float_message_matches_documented_format():
    """The format promised in the docs, on a nested section shaped like a model's."""
    from typing import Annotated

    from pydantic import Field

    class Loss(Section):
        cycle_weight: Annotated[float, Field(ge=0)] = 10.0

    class Model(Section):
        loss: Loss = Loss()

    class Root(Section):
        cyclegan: Model = Model()

    with pytest.raises(ParamsError) as info:
        validate_params({"cyclegan": {"loss": {"cycle_weight": "ten"}}}, model=Root)
    assert info.value.problems == ["cyclegan.loss.cycle_weight: expected a number >= 0, got 'ten'"]
    # ints are fine where a number is expected
    assert validate_params({"cyclegan": {"loss": {"cycle_weight": 5}}}, model=Root).cyclegan.loss.cycle_weight == 5


def test_lax_mode_for_snakemake_config_strings():
    """`snakemake --config demo={anime_count: 3}` delivers '3'; lax mode accepts it, still typed."""
    p = validate_params({"demo": {"anime_count": "3", "messy": "false"}}, strict=False)
    assert p.demo.anime_count == 3 and p.demo.messy is False
    with pytest.raises(ParamsError) as info:
        validate_params({"demo": {"anime_count": "lots"}}, strict=False)
    assert info.value.problems[0].startswith("demo.anime_count: expected an integer")


def test_serve_limits_are_validated_and_documented():
    """The serve section's hostile-input limits: typed, ranged, named in the message, and
    written out with a comment in the repo's params.yaml."""
    found = problems({"serve": {"max_concurrent_uploads": "many", "upload_timeout_s": 0, "idle_timeout_s": "slow",
                                "max_loaded_mb": -1, "max_connections": 0}})
    assert sorted(found) == sorted([
        "serve.max_concurrent_uploads: expected an integer >= 1 and <= 1024, got 'many'",
        "serve.upload_timeout_s: expected a number > 0.0 and <= 3600.0, got 0",
        "serve.idle_timeout_s: expected a number > 0.0 and <= 3600.0, got 'slow'",
        "serve.max_loaded_mb: expected a number > 0.0 and <= 1048576.0, got -1",
        "serve.max_connections: expected an integer >= 1 and <= 100000, got 0"])
    serve = validate_params({"serve": {"max_concurrent_uploads": 2, "upload_timeout_s": 5, "idle_timeout_s": 1.5,
                                       "max_loaded_mb": 64}}).serve
    assert (serve.max_concurrent_uploads, serve.upload_timeout_s, serve.idle_timeout_s, serve.max_loaded_mb) == \
        (2, 5.0, 1.5, 64.0)
    lines = (REPO / "params.yaml").read_text().splitlines()
    section = lines[lines.index(next(ln for ln in lines if ln.startswith("serve:"))):]
    for key in ("max_loaded_mb", "max_concurrent_uploads", "upload_timeout_s", "idle_timeout_s", "max_connections"):
        line = next(ln for ln in section if ln.strip().startswith(key + ":"))
        assert "#" in line, f"params.yaml: serve.{key} has no comment"
