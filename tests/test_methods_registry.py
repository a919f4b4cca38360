"""A new region method is one file and one registration, and `falip eval rec scenes` runs it."""

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from falip.cli import cli
from falip.errors import FalipError
from falip.tasks import methods as registry

PLUGIN = '''
"""A region method outside falip: FALIP at four times the run's alpha."""

from falip.tasks.methods import register_method


@register_method("falip-x4")
def falip_x4(model, image, regions, settings):
    return model.encode_regions(image, list(regions), settings=settings.with_(alpha=4 * settings.alpha))
'''


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """`falip_x4_plugin.py` and an installed distribution declaring it in the `falip.methods` group."""
    (tmp_path / "falip_x4_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "falip_x4_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: falip-x4-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[falip.methods]\nfalip-x4 = falip_x4_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    yield
    sys.modules.pop("falip_x4_plugin", None)


def test_a_plugin_method_runs_through_falip_eval_rec_scenes(plugin_on_path, tmp_path):
    args = ["eval", "rec", "scenes", "--count", "4", "--quiet", "--alpha", "1.0"]
    x4 = CliRunner().invoke(cli, [*args, "--method", "falip-x4", "--out", str(tmp_path / "x4")])
    assert x4.exit_code == 0, x4.output
    direct = CliRunner().invoke(
        cli, [*args, "--method", "falip", "--alpha", "4.0", "--out", str(tmp_path / "a4")]
    )
    assert direct.exit_code == 0, direct.output
    said = "FALIP setting: alpha {}, sigma 100, layers 8-11 (0-based; the last third), form cls"
    assert said.format(1) in x4.output and said.format(4) in direct.output  # each run says its setting

    def scores(folder):
        records = [
            json.loads(line) for line in (tmp_path / folder / "results.jsonl").read_text().splitlines()
        ]
        return {r["key"]: next(iter(r["results"].values())) for r in records}

    ours, reference = scores("x4"), scores("a4")
    assert ours.keys() == reference.keys() and len(ours) > 0
    for key in ours:  # the plugin at alpha 1 is FALIP at alpha 4: the same box picked
        assert ours[key] == reference[key], key
    summary = json.loads((tmp_path / "x4" / "summary.json").read_text())
    assert any(system.endswith(":falip-x4") for system in summary)
    listed = CliRunner().invoke(cli, ["eval", "methods"])
    assert "falip-x4" in listed.output.split()


def test_a_taken_name_or_unknown_option_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        registry.register_method("falip")(lambda model, image, regions, settings: None)
    with pytest.raises(ValueError, match="unknown option"):
        registry.register_method("new-one", options=("beta",))
    with pytest.raises(FalipError, match="unknown method 'nope'"):
        registry.get_method("nope")
