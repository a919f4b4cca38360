"""The shipped toy model: loads offline, agrees with its card, and is not untrained."""

import json
import re
from pathlib import Path

import pytest

import falip
from falip.backbones.toy import TOY_DIR
from falip.toy.evaluate import Evaluator, Split
from falip.toy.report import check_numbers, markdown_table

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (TOY_DIR / "config.json").is_file(), reason="the toy checkpoint is not in this checkout"
)


@pytest.fixture(scope="module")
def toy():
    return falip.load()


@pytest.fixture(scope="module")
def metrics():
    return json.loads((TOY_DIR / "metrics.json").read_text())


def test_default_model_is_the_toy_and_small(toy):
    assert toy.name == "toy" and falip.load("toy").name == "toy"
    assert toy.depth == 12 and toy.default_layers == [8, 9, 10, 11]
    assert sum(f.stat().st_size for f in TOY_DIR.iterdir()) <= 20 * 2**20


def test_shipped_weights_reproduce_the_cards_held_out_numbers(toy, metrics):
    measured = check_numbers(toy)
    for key, value in metrics["check"].items():
        assert measured[key] == pytest.approx(value, abs=0.02), key


def test_shipped_weights_are_trained(toy):
    """Colour is what this model learnt (see its card); an untrained checkpoint is at 1/6 here."""
    singles = Split.make("test", 120, 0).singles
    assert Evaluator(toy).attributes(singles)["colour"].value > 0.8


def test_card_toy_model_page_and_metrics_agree(metrics):
    table = markdown_table(metrics)
    card = (TOY_DIR / "MODEL_CARD.md").read_text()
    assert table in card and "model organism, not OpenAI's CLIP" in card
    assert table in (ROOT / "docs" / "TOY_MODEL.md").read_text()
    training = json.loads((TOY_DIR / "training.json").read_text())
    assert f"ran {training['steps_done']} steps" in card
    assert re.search(r"`falip train-toy`", card)
