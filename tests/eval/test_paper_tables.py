"""The U-GAT-IT paper's published tables in the report: the data file loads, holds the
paper's numbers and names only variants params.yaml defines (or paper-only rows); the
report shows the paper's columns beside the measured KID x100, the reason where KID is
unavailable, the not-the-paper's-dataset note and the Kendall tau of the orderings."""

from __future__ import annotations

import html
import importlib
import json
import math
import random
from pathlib import Path

import pytest

from toonlab.eval.paper_tables import check_paper_tables, kendall_tau, load_paper_tables
from toonlab.eval.report import build_report

ROOT = Path(__file__).resolve().parents[2]

# (selfie2anime, anime2selfie) KID x100, Kim et al. 2020 (ICLR).
COMPARISON = {"U-GAT-IT": (11.61, 11.52), "CycleGAN": (13.08, 11.84), "UNIT": (14.71, 26.32),
              "MUNIT": (13.85, 13.94), "DRIT": (15.08, 14.85)}
ABLATION = {"U-GAT-IT (AdaLIN)": (11.61, 11.52), "U-GAT-IT w/ IN": (13.64, 13.58), "U-GAT-IT w/ LN": (12.39, 13.17),
            "U-GAT-IT w/ AdaIN": (12.29, 11.81), "U-GAT-IT w/ GN": (12.76, 12.30),
            "U-GAT-IT w/o CAM": (12.85, 14.06), "U-GAT-IT w/o G_CAM": (12.33, 13.86),
            "U-GAT-IT w/o D_CAM": (12.49, 13.33)}
VARIANTS = {"ugatit_adalin": "ugatit", "ugatit_in": "ugatit", "ugatit_ln": "ugatit", "ugatit_adain": "ugatit",
            "ugatit_gn": "ugatit", "ugatit_no_cam": "ugatit", "ugatit_no_g_cam": "ugatit",
            "ugatit_no_d_cam": "ugatit", "cyclegan_base": "cyclegan"}


# ----------------------------------------------------------------------------- Kendall tau


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # 4 concordant, 2 discordant pairs, no ties: (4 - 2) / 6.
    assert kendall_tau([11.61, 13.64, 12.39, 12.29], [2.0, 2.5, 4.0, 1.5]) == pytest.approx(1 / 3)
    # With ties (tau-b), the example of scipy.stats.kendalltau's documentation.
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    # Undefined: one pair at most, or one side all tied.
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def test_kendall_tau_matches_scipy_with_ties():
    stats = importlib.import_module("scipy.stats")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        x = [rng.randint(0, 4) for _ in range(n)]
        y = [rng.randint(0, 4) for _ in range(n)]
        ref = stats.kendalltau(x, y).statistic
        ours = kendall_tau(x, y)
        if ours is None:
            assert math.isnan(ref)
        else:
            assert ours == pytest.approx(ref)


# ----------------------------------------------------------------------------- the data file


def test_the_data_file_holds_the_papers_numbers():
    tables = {t.id: t for t in load_paper_tables()}
    assert set(tables) == {"ugatit_vs_others", "ugatit_ablation"}
    for tid, expected in (("ugatit_vs_others", COMPARISON), ("ugatit_ablation", ABLATION)):
        t = tables[tid]
        assert "Kim" in t.source.paper and "ICLR 2020" in t.source.paper
        assert t.source.metric == "KID x100" and t.source.direction == "lower-is-better"
        assert t.source.table.startswith("Table ")
        assert [c.key for c in t.columns] == ["selfie2anime", "anime2selfie"]
        assert t.measured.key == "kid_x100" and t.measured.unavailable_key == "kid"
        assert t.measured.compare_with == "selfie2anime"
        assert {r.label: (r.values["selfie2anime"], r.values["anime2selfie"]) for r in t.rows} == expected
    paper_only = {r.label for t in tables.values() for r in t.rows if r.paper_only}
    assert paper_only == {"UNIT", "MUNIT", "DRIT"}
    assert {r.label: r.variant for r in tables["ugatit_vs_others"].rows if r.variant} == {
        "U-GAT-IT": "ugatit_adalin", "CycleGAN": "cyclegan_base"}


def test_every_row_names_a_variant_of_params_yaml():
    from toonlab.params import load_params

    ab = load_params(ROOT / "params.yaml").ablations
    tables = load_paper_tables()
    assert check_paper_tables(tables, ab.variants, ab.sets) == []
    for t in tables:
        assert all(r.variant in ab.variants for r in t.rows if not r.paper_only)
    # The check does catch a row naming a variant that is not there, and a set lacking one.
    assert check_paper_tables(tables, {k: v for k, v in ab.variants.items() if k != "ugatit_gn"}, ab.sets) == [
        "ugatit_ablation: row 'U-GAT-IT w/ GN' names variant 'ugatit_gn', not in ablations.variants"]
    sets = {**ab.sets, "ugatit_vs_cyclegan": ["ugatit_adalin"]}
    assert check_paper_tables(tables, ab.variants, sets) == [
        "ugatit_vs_others: ablations.sets.ugatit_vs_cyclegan lacks ['cyclegan_base']"]


def test_a_bad_data_file_is_refused(tmp_path):
    from toonlab.errors import ToonlabError

    good = (ROOT / "src/toonlab/eval/paper_tables.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.replace("variant: cyclegan_base,", "variant: cyclegan_base, paper_only: x,"))
    with pytest.raises(ToonlabError, match="exactly one of `variant` and `paper_only`"):
        load_paper_tables(bad)
    bad.write_text(good.replace("anime2selfie: 26.32", "anime2selfy: 26.32"))
    with pytest.raises(ToonlabError, match="anime2selfy"):
        load_paper_tables(bad)


# ----------------------------------------------------------------------------- the report


def _params(tmp_path: Path):
    from toonlab.params import validate_params

    return validate_params({
        "train": {"out_dir": str(tmp_path / "models")},
        "evaluate": {"metrics_dir": str(tmp_path / "metrics"), "out_dir": str(tmp_path / "reports/eval"),
                     "runs": []},
        "curate": {"report_dir": str(tmp_path / "reports/curation")},
        "report": {"out": str(tmp_path / "reports/index.html")},
        "ablations": {"run": [], "variants": {v: {"family": f} for v, f in VARIANTS.items()},
                      "sets": {"ugatit_ablation": [v for v in VARIANTS if v.startswith("ugatit")],
                               "ugatit_vs_cyclegan": ["ugatit_adalin", "cyclegan_base"]}},
    })


def _metrics(tmp_path: Path, variant: str, **fields) -> None:
    path = tmp_path / "metrics" / "ablations" / f"{variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": f"ablations/{variant}", "family": VARIANTS[variant], "step": 10,
                                "source": "photo", "target": "anime", "n_images": 8,
                                "unavailable": {}, **fields}))


def _section(text: str, title: str) -> str:
    """The HTML of one paper table: from its heading to the next heading."""
    start = text.index(f"<h3>{title}</h3>")
    ends = [i for i in (text.find("<h3>", start + 4), text.find("<h2>", start)) if i > 0]
    return text[start:min(ends)]


def test_report_shows_paper_beside_measured(tmp_path, monkeypatch):
    from toonlab.eval.inception import fid_inception_available

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    ok, no_inception = fid_inception_available()   # the reason a run without the weights records
    assert not ok and "pt_inception-2015-12-05-6726825d.pth" in no_inception
    # Measured: adalin, in, ln, adain (tau over those 4: 1/3); gn without the Inception
    # weights; no_cam translating the other way; no_g_cam, no_d_cam not evaluated.
    for v, kid in (("ugatit_adalin", 2.0), ("ugatit_in", 2.5), ("ugatit_ln", 4.0), ("ugatit_adain", 1.5)):
        _metrics(tmp_path, v, kid_x100=kid, kid_std_x100=0.1, fid=50.0)
    _metrics(tmp_path, "ugatit_gn", unavailable={"fid": no_inception, "kid": no_inception})
    _metrics(tmp_path, "ugatit_no_cam", kid_x100=9.0, source="anime", target="photo")
    _metrics(tmp_path, "cyclegan_base", unavailable={"fid": no_inception, "kid": no_inception})

    text = build_report(_params(tmp_path)).read_text(encoding="utf-8")
    assert "<h2>Paper tables</h2>" in text
    for title in ("U-GAT-IT against other methods", "U-GAT-IT ablation (decoder normalisation, CAM)"):
        sec = _section(text, title)
        # The paper's two directions and the measured column, labelled.
        assert "<th>paper: selfie2anime KID x100 &darr;</th>" in sec
        assert "<th>paper: anime2selfie KID x100 &darr;</th>" in sec
        assert "<th>measured: ToonLab photo→anime KID x100 &darr;</th>" in sec
        assert "Not the paper's dataset." in sec and "class=\"caveat\"" in sec
        assert "in the paper's selfie2anime direction only" in sec
        assert "Kim, Kim, Kang, Lee" in sec and "ICLR 2020" in sec

    comp = _section(text, "U-GAT-IT against other methods")
    for label, (s2a, a2s) in COMPARISON.items():
        assert f"<td>{label}</td>" in comp and f"<td>{s2a:.2f}</td>" in comp and f"<td>{a2s:.2f}</td>" in comp
    assert "<td>UNIT</td><td>(paper only)</td>" in comp
    assert "paper only: UNIT is not a ToonLab model family" in comp
    assert '<td class="measured">2.00</td>' in comp            # ugatit_adalin
    assert no_inception in html.unescape(comp)                 # cyclegan_base: why n/a (escaped on the page)
    assert "fewer than 2 rows have both numbers (1 so far)" in comp

    abl = _section(text, "U-GAT-IT ablation (decoder normalisation, CAM)")
    for label, (s2a, a2s) in ABLATION.items():
        assert f"<td>{label}</td>" in abl and f"<td>{s2a:.2f}</td>" in abl and f"<td>{a2s:.2f}</td>" in abl
    for kid in ("2.00", "2.50", "4.00", "1.50"):
        assert f'<td class="measured">{kid}</td>' in abl
    assert "9.00" not in abl
    assert "the run translates anime→photo, not photo→anime" in abl
    assert "not evaluated yet: snakemake -c2 ablations --config ablations='{set: ugatit_ablation}'" in html.unescape(abl)
    assert "pt_inception-2015-12-05-6726825d.pth" in abl        # ugatit_gn: why n/a
    assert "over the 4 rows with both numbers): <b>0.333</b>" in abl
    assert "http://" not in text and "https://" not in text


def test_report_without_any_measurement(tmp_path):
    text = build_report(_params(tmp_path)).read_text(encoding="utf-8")
    for title in ("U-GAT-IT against other methods", "U-GAT-IT ablation (decoder normalisation, CAM)"):
        sec = _section(text, title)
        assert "fewer than 2 rows have both numbers (0 so far)" in sec
        assert '<td class="measured">' not in sec
        assert "11.61" in sec and "11.52" in sec
