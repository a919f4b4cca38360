"""ReCLIP's relation resolver ("parse", Subramanian et al., ACL 2022) with a pluggable region scorer.

A referring expression is parsed with spaCy into an entity tree: the head noun phrase, the spatial
relations that tie it to other noun phrases ("the cup left of the plate") and the superlatives that
single it out among its look-alikes ("the leftmost chair", "the dog on the left"). Each noun phrase
is scored over the boxes by a region scorer (a softmax over the boxes of its CLIP logits); relations
and superlatives are fixed rules over the boxes' geometry, combined with the scores as
probabilities. We follow allenai/reclip's `methods/parse.py`, `entity_extraction.py`,
`heuristics.py` and `interpreter.py` (commit 3ed4f47; the FALIP authors' fork keeps those files
unchanged) with its default options; the code is ours. The steps, for an expression (lowercased):

1. `p_full`: the softmax over the boxes of the whole expression's scores.
2. The parse's head is the first token that is its own head; its noun chunk is the entity. A head
   outside every noun chunk hands over to its first child when that child is in a chunk (a
   predicative sentence), else there is no entity; with none, the entity is extracted from the
   *syntactic head* of the first noun chunk's root (ReCLIP's choice: not the root itself).
3. Walking down the head's dependents: another noun chunk that is no keyword becomes a relation's
   object (the tokens passed on the way name the relation); a chain of modifiers ending in a
   superlative keyword is a superlative; a noun chunk's single child gives "the goat on the left".
4. Only when some token of the expression is a relation or superlative keyword is the entity tree
   used: the answer is `p_full` times the tree's probabilities; otherwise `p_full` alone.
5. An entity's probabilities: its chunk's text scored over the boxes (softmax); times, for each
   relation, `sum_j p_object[j] * rel[i, j]` (renormalised); then, for each superlative,
   `p[i] * sum_j p[j] * sup[i, j]` (renormalised).

Keywords, rules and oddities kept from ReCLIP (they are its behaviour, kept to be faithful):
- "bottom", "lower", "upper", "farther" are no keywords ("the bottom cup" is scored as a whole);
  "closer" means bigger and "further" smaller (size as a proxy for depth); "back"/"behind" mean above
  and "front" below; "top" is a relation and a superlative, "underneath" a superlative only.
- Relations compare box centres strictly (x for left/right, y for above/below), areas for
  bigger/smaller; "within" is the share of box i inside box j. A box is not left of itself.
- "between" (ReCLIP's ternary relation) is off by default there (its `--ternary` flag turns it on),
  so it is not here: its tokens make a possessive relation, as any other non-spatial word does.
- A relation without a spatial keyword ("the man with a hat") is "possessive": the entity's text
  becomes its chunk plus the path to, and the words under, the other noun chunk. ReCLIP also scores
  the boxes enlarged by 30% for it and discards the result (its `Box.expand` names an undefined
  variable, so that call could not have run); we keep only the effect on the text.
- ReCLIP's threshold on the head's confidence is infinite by default, and a placeholder makes the
  relation check vacuous, so relations always apply; superlatives apply unless the second-best box's
  probability is exactly 0 (its `m1 < inf * m2` is then false).
- A superlative keyword that spaCy attaches below another modifier ("the leftmost red circle":
  en_core_web_sm makes "leftmost" a compound of "red") is never reached by the walk, so the
  expression is scored as its chunk's text alone, as in ReCLIP.
- A scene with one box: that box (ReCLIP returns a constant there).

The region scorer is a function `score(text) -> (R,)` logits. ReCLIP's own ("reclip") is its
isolated-proposal ensemble: each box cropped, and the image blurred (Gaussian, std 100 px) outside
the box, both resized to the model's square input, `logit_scale * cosine` with "a photo of
<text>" summed over the two (`--box_method_aggregator sum`). Our `crop` and `blur` methods draw the
same pictures with Pillow, with two one-pixel differences: ReCLIP hands Pillow the box's float
edges (Pillow rounds them), ours take the pixels the box touches (floor, ceil); ReCLIP's blur mask
is PIL's inclusive rectangle, one pixel wider and taller than the box, ours exactly the box.
`<method>+relations` puts any registered falip method under the same resolver (our extension).

spaCy and an English pipeline are needed (`pip install 'falip[relations]'`, then
`python -m spacy download en_core_web_sm`); the pipeline's name is an option.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import FalipError
from ..inputs.settings import FalipSettings
from .methods import TEMPLATE, get_method, region_features, text_features

DEFAULT_PIPELINE = "en_core_web_sm"
RECLIP = "reclip"
RECLIP_MEMBERS = ("crop", "blur")  # ReCLIP's --box_representation_method crop,blur
SUFFIX = "+relations"


@dataclass(frozen=True)
class Rule:
    """A relation or superlative: its keywords (matched against token texts) and its box predicate."""

    name: str
    keywords: tuple[str, ...]


RELATIONS = (
    Rule("left", ("left", "west")),
    Rule("right", ("right", "east")),
    Rule("above", ("above", "north", "top", "back", "behind")),
    Rule("below", ("below", "south", "under", "front")),
    Rule("bigger", ("bigger", "larger", "closer")),
    Rule("smaller", ("smaller", "tinier", "further")),
    Rule("within", ("inside", "within", "contained")),
)
SUPERLATIVES = (
    Rule("left", ("left", "west", "leftmost", "western")),
    Rule("right", ("right", "rightmost", "east", "eastern")),
    Rule("above", ("above", "north", "top")),
    Rule("below", ("below", "south", "underneath", "front")),
    Rule("bigger", ("bigger", "biggest", "larger", "largest", "closer", "closest")),
    Rule("smaller", ("smaller", "smallest", "tinier", "tiniest", "further", "furthest")),
)
NULL_WORDS = ("part", "image", "side", "picture", "half", "region", "section")  # never an entity
_RELATION_WORDS = frozenset(w for r in RELATIONS for w in r.keywords)
_SUPERLATIVE_WORDS = frozenset(w for r in SUPERLATIVES for w in r.keywords)


# --- the parser ---------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_parser(name: str = DEFAULT_PIPELINE):
    """spaCy's English pipeline `name` (loaded once).

    Raises:
        FalipError: one line naming what to install when spaCy or the pipeline is missing.
    """
    try:
        import spacy
    except ImportError:
        raise FalipError(
            "the relation resolver needs spaCy: pip install 'falip[relations]' "
            f"(then python -m spacy download {name})"
        ) from None
    try:
        return spacy.load(name)
    except OSError:
        raise FalipError(
            f"spaCy's English pipeline {name!r} is not installed: python -m spacy download {name}"
        ) from None


def _rule(tokens: Sequence[Any], rules: Sequence[Rule]) -> Rule | None:
    """The first rule with a keyword among the tokens' texts (ReCLIP's order)."""
    texts = {t.text for t in tokens}
    return next((r for r in rules if texts & set(r.keywords)), None)


@dataclass
class Entity:
    """A noun phrase with the relations and superlatives that constrain it.

    `chunk`: its spaCy noun chunk; `relations`: (the tokens naming the relation, the other entity);
    `superlatives`: token lists, each holding a superlative keyword."""

    chunk: Any
    relations: list[tuple[list[Any], Entity]] = field(default_factory=list)
    superlatives: list[list[Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text of the entity's noun chunk."""
        return self.chunk.text

    def describe(self) -> dict:
        """The tree as plain data: {"head", "relations": [(rule or None, tokens, object)], "superlatives"}."""
        return {
            "head": self.text,
            "relations": [
                (
                    (r.name if (r := _rule(toks, RELATIONS)) else None),
                    " ".join(t.text for t in toks),
                    e.describe(),
                )
                for toks, e in self.relations
            ],
            "superlatives": [
                ((r.name if (r := _rule(toks, SUPERLATIVES)) else None), " ".join(t.text for t in toks))
                for toks in self.superlatives
            ],
        }


class _Chunks:
    """Token index -> the id of its noun chunk (ReCLIP compares the chunk objects themselves)."""

    def __init__(self, doc):
        self.spans = list(doc.noun_chunks)
        self.of = {i: k for k, span in enumerate(self.spans) for i in range(span.start, span.end)}

    def __contains__(self, token) -> bool:
        return token.i in self.of

    def span(self, token):
        return self.spans[self.of[token.i]]

    def same(self, a, b) -> bool:
        return a.i in self.of and b.i in self.of and self.of[a.i] == self.of[b.i]


def _superlatives(tokens: list) -> list[list]:
    """ReCLIP's `find_superlatives`: the tokens (in sentence order) when one is a superlative keyword."""
    if any(t.text in _SUPERLATIVE_WORDS for t in tokens):
        return [sorted(tokens, key=lambda t: t.i)]
    return []


def _extract(head, chunks: _Chunks) -> Entity | None:
    """ReCLIP's `Entity.extract`: the entity headed by `head`, or None."""
    if head not in chunks:
        children = list(head.children)
        if children and children[0] in chunks:  # predicative: "this is the cat on the left"
            head = children[0]
        else:
            return None
    relations, superlatives = _walk(head, head, [], chunks)
    return Entity(chunks.span(head), relations, superlatives)


def _walk(token, head, tokens: list, chunks: _Chunks) -> tuple[list, list]:
    """ReCLIP's `Entity._get_rel_sups`: relations and superlatives below `token`."""
    keyword = token.text in _RELATION_WORDS or token.text in NULL_WORDS
    if token in chunks and not chunks.same(token, head) and not keyword:  # another entity's head
        return [(sorted(tokens, key=lambda t: t.i), _extract(token, chunks))], []
    children = list(token.children)
    if not children:
        return [], _superlatives(tokens + [token])
    relations: list = []
    superlatives: list = []
    keyword = keyword or token.text in _SUPERLATIVE_WORDS
    for child in children:
        if chunks.same(token, child):
            if child.text not in _SUPERLATIVE_WORDS:
                if len(children) == 1:  # "the goat on the left"
                    superlatives.extend(_superlatives(tokens + [token]))
                continue
        passed = tokens + [token] if token not in chunks or keyword else tokens
        more_relations, more_superlatives = _walk(child, head, passed, chunks)
        relations.extend(more_relations)
        superlatives.extend(more_superlatives)
    return relations, superlatives


@dataclass
class Parse:
    """An expression's parse: the entity tree (None when none was found) and whether any token is a
    relation or superlative keyword (ReCLIP uses the tree only then)."""

    expression: str
    entity: Entity | None
    has_keyword: bool
    doc: Any = None

    @property
    def used(self) -> bool:
        """Whether ReCLIP uses the entity tree: an entity was found and a relation or superlative keyword is
        present."""
        return self.entity is not None and self.has_keyword


def parse(expression: str, nlp) -> Parse:
    """Parse one expression (lowercased, as ReCLIP's `main.py` does) with the spaCy pipeline `nlp`."""
    text = expression.lower()
    doc = nlp(text)
    chunks = _Chunks(doc)
    head = next((t for t in doc if t.head.i == t.i), None)
    entity = _extract(head, chunks) if head is not None else None
    if entity is None and chunks.spans:
        entity = _extract(chunks.spans[0].root.head, chunks)  # ReCLIP: the first chunk root's head
    has_keyword = any(t.text in _RELATION_WORDS or t.text in _SUPERLATIVE_WORDS for t in doc)
    return Parse(text, entity, has_keyword, doc)


def _possessive_text(entity: Entity, other: Entity) -> str:
    """ReCLIP's `Entity.expand`: the entity's chunk, plus, for each token of the other chunk that lies
    below the entity's chunk, its ancestors up to the root and its subtree; in sentence order."""
    keep = {t.i: t for t in entity.chunk}
    below = {t.i for token in entity.chunk for t in token.subtree}
    for target in other.chunk:
        if target.i in below:
            keep.update({t.i: t for t in target.ancestors})
            keep.update({t.i: t for t in target.subtree})
    return " ".join(keep[i].text for i in sorted(keep))


# --- geometry ------------------------------------------------------------------------------------


def relation_matrix(name: str, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """(R, R) truth of "box i <name> box j" for `xywh` boxes (ReCLIP's `interpreter.Environment`).

    left/right: box centres' x strictly less/greater; above/below: (top + bottom) strictly less/
    greater; bigger/smaller: areas; within: the share of box i's area inside box j (0 for an empty box).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = b.T
    cx, cy2, area = x + w / 2, 2 * y + h, w * h
    if name == "left":
        return (cx[:, None] < cx[None, :]).astype(float)
    if name == "right":
        return (cx[:, None] > cx[None, :]).astype(float)
    if name == "above":
        return (cy2[:, None] < cy2[None, :]).astype(float)
    if name == "below":
        return (cy2[:, None] > cy2[None, :]).astype(float)
    if name == "bigger":
        return (area[:, None] > area[None, :]).astype(float)
    if name == "smaller":
        return (area[:, None] < area[None, :]).astype(float)
    if name == "within":
        right, bottom = x + w, y + h
        iw = np.clip(np.minimum(right[:, None], right[None, :]) - np.maximum(x[:, None], x[None, :]), 0, None)
        ih = np.clip(
            np.minimum(bottom[:, None], bottom[None, :]) - np.maximum(y[:, None], y[None, :]), 0, None
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            share = iw * ih / area[:, None]
        return np.where(area[:, None] > 0, share, 0.0)
    raise ValueError(f"unknown relation {name!r}")


# --- execution -----------------------------------------------------------------------------------


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _normalise(p: np.ndarray) -> np.ndarray:
    total = p.sum()
    return p / total if total > 0 else p  # ReCLIP divides by 0 here (NaNs); we keep the zeros: a tie


@dataclass
class Resolution:
    """The resolver's answer for one expression: `probs` (R,) over the boxes, the texts it scored,
    and the parse."""

    probs: np.ndarray
    texts: list[str]
    parse: Parse | None


def resolve(
    expression: str, boxes: Sequence[Sequence[float]], score: Callable[[str], Any], nlp
) -> Resolution:
    """ReCLIP's "parse" method for one expression over `boxes` (`xywh`, pixels).

    Args:
        expression: the referring expression (lowercased before parsing and scoring, as ReCLIP).
        boxes: the R candidate boxes.
        score: `score(text) -> (R,)` region scores (logits) of a text for the boxes; called once per
            distinct text.
        nlp: a spaCy pipeline (`load_parser`).
    Returns:
        A `Resolution`; `probs` sums to 1 unless every box was ruled out (then all 0: a tie).
    """
    count = len(boxes)
    if count == 1:
        return Resolution(np.ones(1), [expression.lower()], None)
    memo: dict[str, np.ndarray] = {}
    texts: list[str] = []

    def filter_(text: str) -> np.ndarray:
        if text not in memo:
            logits = score(text)
            logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
            memo[text] = _softmax(logits.reshape(-1))
            texts.append(text)
        return memo[text]

    parsed = parse(expression, nlp)
    probs = filter_(parsed.expression)
    if parsed.used:
        probs = probs * _execute(parsed.entity, boxes, filter_)
    return Resolution(_normalise(probs), texts, parsed)


def _execute(entity: Entity, boxes, filter_: Callable[[str], np.ndarray]) -> np.ndarray:
    """ReCLIP's `Parse.execute_entity` with its default options."""
    text = entity.text
    spatial = []
    for tokens, other in entity.relations:
        rule = _rule(tokens, RELATIONS)
        if rule is not None:
            p_other = _execute(other, boxes, filter_)
            spatial.append(relation_matrix(rule.name, boxes) @ p_other)  # sum_j p_other[j] rel[i, j]
        else:  # possessive: the last one names the text
            text = _possessive_text(entity, other)
    probs = filter_(text)
    for weights in spatial:
        probs = _normalise(probs * weights)
    top = np.sort(probs)[::-1]
    if top[1] > 0:  # ReCLIP's m1 < inf * m2
        for tokens in entity.superlatives:
            rule = _rule(tokens, SUPERLATIVES)
            if rule is None:
                continue
            probs = _normalise(probs * (relation_matrix(rule.name, boxes) @ probs))
    return probs


# --- methods: the resolver over a region scorer --------------------------------------------------


def is_resolved(method: str) -> bool:
    """Whether `method` runs under the resolver: "reclip" or "<method>+relations"."""
    return method == RECLIP or method.endswith(SUFFIX)


def member_methods(method: str) -> tuple[str, ...]:
    """The region methods whose logits (summed) score the boxes under the resolver: ReCLIP's crop and
    blur for "reclip", `m` for "m+relations". Raises FalipError for an unknown one."""
    if method == RECLIP:
        return RECLIP_MEMBERS
    if method.endswith(SUFFIX):
        base = method[: -len(SUFFIX)]
        if not base or is_resolved(base):
            raise FalipError(f"{method!r}: put one region method before {SUFFIX!r}, e.g. falip{SUFFIX}")
        get_method(base)
        return (base,)
    raise FalipError(f"{method!r} is not a resolver method; use {RECLIP!r} or <method>{SUFFIX}")


def resolver_method_names() -> list[str]:
    """The resolver's method names for listings: "reclip", then "<m>+relations" for a few methods."""
    return [RECLIP, f"falip{SUFFIX}", f"red_circle{SUFFIX}", f"<any method>{SUFFIX}"]


@torch.no_grad()
def region_scorer(
    model,
    image,
    boxes: Sequence[Sequence[float]],
    method: str = RECLIP,
    *,
    template: str = TEMPLATE,
    settings: FalipSettings | None = None,
    **options,
) -> Callable[[str], torch.Tensor]:
    """The resolver's region scorer for one image: `score(text) -> (R,)` logits, the member methods'
    `logit_scale * cosine` with `template.format(text)` summed (ReCLIP's crop + blur for "reclip").

    Args and raises as `resolve_expressions`; the boxes' features are computed once, here.
    """
    members = member_methods(method)
    scale = model.backbone.logit_scale.float().exp().item()
    feats = {m: region_features(model, image, boxes, m, settings=settings, **options) for m in members}

    def score(text: str) -> torch.Tensor:
        return sum(scale * feats[m] @ text_features(model, [text], template, m)[0] for m in members)

    return score


@torch.no_grad()
def resolve_expressions(
    model,
    image,
    boxes: Sequence[Sequence[float]],
    expressions: Sequence[str],
    method: str = RECLIP,
    *,
    pipeline: str = DEFAULT_PIPELINE,
    template: str = TEMPLATE,
    settings: FalipSettings | None = None,
    **options,
) -> torch.Tensor:
    """Referring expressions resolved over one image's boxes, from Python (as `falip eval rec` does).

    Args:
        model: a `FalipModel`.
        image: a path, PIL image or uint8 array.
        boxes: R candidate `xywh` boxes in pixels.
        expressions: E referring expressions.
        method: "reclip" (ReCLIP's crop + blur scorer) or "<method>+relations" (any region method).
        pipeline: spaCy's English pipeline name.
        template: the text template ("a photo of {}", ReCLIP's).
        settings, options: as `region_features` takes them (FALIP's settings, methods' own options).
    Returns:
        (R, E) float32 probabilities over the boxes; the answer to expression e is `argmax[:, e]`.
    Raises:
        FalipError: spaCy or the pipeline missing, an unknown method, a bad image or box.
    """
    nlp = load_parser(pipeline)
    score = region_scorer(model, image, boxes, method, template=template, settings=settings, **options)
    columns = [torch.as_tensor(resolve(e, boxes, score, nlp).probs, dtype=torch.float32) for e in expressions]
    return torch.stack(columns, dim=1)
