"""SigLIP: its features equal transformers' at alpha 0; FALIP's bias on the pooling query moves them."""

import numpy as np
import pytest
import torch

import falip
from conftest import close
from falip.errors import FalipError
from falip.tasks.methods import region_features

WORDS = [
    "<pad>",
    "</s>",
    "<unk>",
    "a",
    "photo",
    "of",
    "the",
    "red",
    "blue",
    "circle",
    "square",
    "cat",
    "dog",
    "left",
    "right",
]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    folder = tmp_path_factory.mktemp("siglip") / "tiny-siglip"
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=len(WORDS),
            max_position_embeddings=12,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=None,
            projection_size=64,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():  # sharper attention than the default init, so a bias shows
        for name, param in model.named_parameters():
            if (
                ("self_attn" in name or "head.attention" in name or "probe" in name)
                and "weight" in name
                or name.endswith("probe")
            ):
                param.mul_(6.0)
    model.save_pretrained(folder)
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    return folder


def test_siglip_features_equal_transformers_and_a_region_moves_them(siglip_dir):
    from transformers import AutoTokenizer, SiglipModel

    reference = SiglipModel.from_pretrained(siglip_dir).eval()
    model = falip.load(siglip_dir)
    assert model.is_siglip and model.preprocessing.size == 32
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = reference.get_image_features(pixel_values=pixels).pooler_output
    ours = model.encode_image(pixels)
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-5
    texts = ["a photo of the red circle", "the dog on the left"]
    ids = AutoTokenizer.from_pretrained(siglip_dir)(
        texts, padding="max_length", max_length=12, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        their_text = reference.get_text_features(input_ids=ids).pooler_output
    assert torch.equal(model.tokenize(texts), ids)
    assert ((model.encode_text(texts) - their_text).norm() / their_text.norm()).item() < 1e-5

    image = np.random.default_rng(0).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    boxes = [[0, 0, 16, 16], [16, 16, 16, 16]]
    plain = model.encode_image(image)
    assert close(model.encode_regions(image, boxes, alpha=0.0), plain.expand(2, -1), rel=1e-4)
    focused = model.encode_regions(image, boxes, alpha=3.0)
    assert not close(focused[0], focused[1], rel=1e-3) and not close(focused[0], plain[0], rel=1e-3)
    every_row = model.encode_regions(image, boxes, alpha=3.0, form="all", layers=[2, 3])
    assert not close(every_row, focused, rel=1e-3)
    logits = model.score(image, boxes, texts, alpha=3.0)
    cosine = (
        torch.nn.functional.normalize(focused, dim=-1)
        @ torch.nn.functional.normalize(model.encode_text(texts), dim=-1).T
    )
    assert close(logits, reference.logit_scale.exp() * cosine + reference.logit_bias, rel=1e-3)


def test_the_bias_is_on_the_pooling_query_alone_and_equals_a_plain_computation(siglip_dir):
    model = falip.load(siglip_dir)
    image = np.random.default_rng(2).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    box = [8, 8, 16, 16]
    row = model.region_rows((32, 32), [box], alpha=2.0)[0, 1:]  # the [CLS] slot dropped: SigLIP has none
    visual = model.backbone.visual
    with torch.no_grad():
        x = visual.embed(model.pixels(image))
        for block in visual.blocks:
            x = block(x)
        tokens = visual.post_layernorm(x)[0]  # (N, D)
        head = visual.head
        w_q, w_k, w_v = head.attention.in_proj_weight.chunk(3)
        b_q, b_k, b_v = head.attention.in_proj_bias.chunk(3)
        heads, dh = 4, 16
        outs = []
        for h in range(heads):
            part = slice(h * dh, (h + 1) * dh)
            q = head.probe[0, 0] @ w_q[part].T + b_q[part]
            k, v = tokens @ w_k[part].T + b_k[part], tokens @ w_v[part].T + b_v[part]
            outs.append(torch.softmax(k @ q / dh**0.5 + row, dim=0) @ v)
        pooled = head.attention.out_proj(torch.cat(outs))
        expected = pooled + head.mlp(head.layernorm(pooled))
    assert close(model.encode_regions(image, [box], alpha=2.0)[0], expected, rel=1e-4)


def test_cls_only_methods_say_so_for_siglip(siglip_dir):
    model = falip.load(siglip_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    for method in ("pasta", "red_circle+unleash", "replace-v", "feature-mask"):
        with pytest.raises(FalipError, match="SigLIP, which has none"):
            region_features(model, image, [[0, 0, 16, 16]], method)
    assert region_features(model, image, [[0, 0, 16, 16]], "red_circle").shape == (
        1,
        64,
    )  # pixel prompts need no [CLS]


def test_siglip_bench_computes_the_same_features_both_ways():
    from falip.evaluation import bench

    alone, shared, diff = bench.run_siglip_workload(3, width=64, layers=4, image_size=64, repeats=1)
    assert alone > 0 and shared > 0 and diff < 1e-5  # the shared encoder changes nothing but the time
