"""Text prompts and embeddings as targets: tiny open_clip and Hugging Face CLIP/SigLIP models, random weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gradcam
from gradcam.apps.cli import main
from gradcam.io.models import ModelLoadError, load_model

open_clip = pytest.importorskip("open_clip")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROMPTS = ["a cat", "a cup of coffee", "a tree"]
LAST_NORM = "clip.visual.transformer.resblocks.1.ln_1"


@pytest.fixture(scope="module")
def tiny_clip() -> gradcam.io.image_text.OpenClipModel:
    from gradcam.io.image_text import OpenClipModel

    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=16, image_size=64),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return OpenClipModel(clip, open_clip.get_tokenizer("ViT-B-32")).eval()


def by_hand(model, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last block's input-norm tokens, the attention's output and the (B, K) cosine similarities,
    with plain hooks and the text embedding computed here."""
    kept = {}
    norm = model.get_submodule(LAST_NORM)
    attention = model.get_submodule("clip.visual.transformer.resblocks.1.attn")
    handles = [  # hooks that return None: the model's outputs stay as they are
        norm.register_forward_hook(lambda m, a, out: kept.update(x=out)),
        attention.register_forward_hook(lambda m, a, out: kept.update(y=out[0])),
    ]
    try:
        image = model.clip.encode_image(x)
    finally:
        for handle in handles:
            handle.remove()
    similarity = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    return kept["x"], kept["y"], similarity


def test_prompt_maps_are_grad_cam_of_the_cosine_similarity(tiny_clip):
    x = torch.randn(2, 3, 64, 64)
    ex = gradcam.explain(tiny_clip, x, targets=gradcam.TextPrompt(PROMPTS))
    assert ex.layer == LAST_NORM and ex.maps.shape == (2, 3, 64, 64)
    with torch.no_grad():
        text = tiny_clip.clip.encode_text(open_clip.get_tokenizer("ViT-B-32")(PROMPTS))
    tokens, _, similarity = by_hand(tiny_clip, x, text)
    torch.testing.assert_close(ex.scores, similarity.detach(), rtol=1e-4, atol=1e-5)
    assert ex.targets.tolist() == [[0, 1, 2], [0, 1, 2]]
    for k in range(3):
        (gradient,) = torch.autograd.grad(similarity[:, k].sum(), tokens, retain_graph=True)
        weights = gradient[:, 1:].mean(dim=1)  # (B, C): mean over the 16 patch tokens
        cam = torch.relu(torch.einsum("bnc,bc->bn", tokens[:, 1:].detach(), weights)).reshape(2, 4, 4)
        torch.testing.assert_close(ex.layer_results[0].raw[:, k], cam, rtol=1e-4, atol=1e-6)


def test_k_prompts_cost_one_forward_pass_of_the_image_and_one_cached_text_pass(tiny_clip):
    gradcam.explain(tiny_clip, torch.randn(1, 3, 64, 64), targets=gradcam.TextPrompt("warm up"))  # the layer probe
    calls = {"image": 0, "text": 0}
    visual = tiny_clip.clip.visual.register_forward_hook(lambda *a: calls.__setitem__("image", calls["image"] + 1))
    text = tiny_clip.clip.transformer.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    prompts = gradcam.TextPrompt(["a dog", "a car", "a boat", "a house"])
    try:
        gradcam.explain(tiny_clip, torch.randn(3, 3, 64, 64), targets=prompts)
        assert calls == {"image": 1, "text": 1}
        gradcam.explain(tiny_clip, torch.randn(3, 3, 64, 64), targets=prompts)  # a folder's next batch
        assert calls == {"image": 2, "text": 1}
    finally:
        visual.remove()
        text.remove()


def test_similarity_to_a_reference_embedding(tiny_clip):
    x, other = torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = tiny_clip(other)
    ex = gradcam.explain(tiny_clip, x, targets=gradcam.Similarity(reference, ["like the other photo"]))
    with torch.no_grad():
        expected = F.normalize(tiny_clip.clip.encode_image(x), dim=-1) @ reference[0]
    torch.testing.assert_close(ex.scores[:, 0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="2 names for 1 references"):
        gradcam.Similarity(reference, ["a", "b"])


def test_grad_eclip_by_hand(tiny_clip):
    """H_i = ReLU(sum_c (dS/do_cls W_o)_c v_i,c lambda_i), lambda the min-max normalised cos(q_cls, k_i)."""
    x = torch.randn(2, 3, 64, 64)
    ex = gradcam.explain(tiny_clip, x, "gradeclip", targets=gradcam.TextPrompt(PROMPTS[:2]))
    assert ex.maps.shape == (2, 2, 64, 64)
    with torch.no_grad():
        text = tiny_clip.clip.encode_text(open_clip.get_tokenizer("ViT-B-32")(PROMPTS[:2]))
    tokens, attention_output, similarity = by_hand(tiny_clip, x, text)
    attention = tiny_clip.get_submodule("clip.visual.transformer.resblocks.1.attn")
    wq, wk, wv = attention.in_proj_weight.chunk(3)
    bq, bk, bv = attention.in_proj_bias.chunk(3)
    t = tokens.detach()
    q_cls, keys, values = t[:, 0] @ wq.T + bq, t[:, 1:] @ wk.T + bk, t[:, 1:] @ wv.T + bv
    cosine = F.cosine_similarity(q_cls[:, None], keys, dim=-1)
    loosened = (cosine - cosine.min(1, keepdim=True).values) / (
        cosine.max(1, keepdim=True).values - cosine.min(1, keepdim=True).values
    )
    for k in range(2):
        (g,) = torch.autograd.grad(similarity[:, k].sum(), attention_output, retain_graph=True)
        w = g[:, 0] @ attention.out_proj.weight  # dS/do_cls, before the output projection
        cam = torch.relu((values * w[:, None]).sum(-1) * loosened).reshape(2, 4, 4)
        torch.testing.assert_close(ex.layer_results[0].raw[:, k], cam.detach(), rtol=1e-4, atol=1e-6)


def test_grad_eclip_reads_timm_and_refuses_a_layer_without_attention(tiny_clip):
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, depth=2).eval()
    assert gradcam.explain(vit, torch.randn(1, 3, 224, 224), "gradeclip", targets="top-2").maps.shape == (
        1,
        2,
        224,
        224,
    )
    with pytest.raises(ValueError, match="no attention module beside it"):
        gradcam.explain(tiny_clip, torch.randn(1, 3, 64, 64), "gradeclip", "clip.visual.conv1", gradcam.TextPrompt("x"))


def test_text_prompt_needs_an_image_text_model(tiny_cnn):
    with pytest.raises(ValueError, match="has no encode_text"):
        gradcam.explain(tiny_cnn, torch.randn(1, 3, 32, 32), targets=gradcam.TextPrompt("a cat"))
    with pytest.raises(ValueError, match="non-empty prompts"):
        gradcam.TextPrompt([" "])


def test_cli_prompts_on_an_open_clip_architecture(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["explain", str(EXAMPLES / "chelsea.jpg"), "--model", "clip:ViT-B-32", "--weights", "none"]
    assert main([*argv, "--prompt", "a cat", "--prompt", "a tree", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    manifest = json.loads((out / "results.json").read_text())
    entry = manifest["images"][0]
    assert manifest["prompts"] == ["a cat", "a tree"]
    assert [t["label"] for t in entry["targets"]] == ["a cat", "a tree"]
    assert entry["layer"] == "clip.visual.transformer.resblocks.11.ln_1"
    assert all(-1 <= p["similarity"] <= 1 for p in entry["predictions"]) and len(entry["predictions"]) == 2
    assert all(Path(t["files"]["overlay"]).exists() for t in entry["targets"])
    assert main([*argv, "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "image-text model: say what to look for with --prompt" in capsys.readouterr().err
    assert main(["explain", str(EXAMPLES / "chelsea.jpg"), "--weights", "none", "--prompt", "a cat", "--quiet",
                 "--out", str(tmp_path / "o3")]) == 2  # fmt: skip
    assert "is not an image-text model" in capsys.readouterr().err


def test_offline_clip_weights_fail_at_once(unreachable_hub):
    with pytest.raises(ModelLoadError, match=r"clip:ViT-B-32@openai weights .*--weights FILE"):
        load_model("clip:ViT-B-32")
    start = time.monotonic()  # again, with open_clip imported: what is timed is the hub's answer alone
    with pytest.raises(ModelLoadError):
        load_model("clip:ViT-B-32")
    assert time.monotonic() - start < 2  # no client retries
    with pytest.raises(ModelLoadError, match="did you mean"):
        load_model("clip:ViT-B-33")


def hf_image_text(folder: Path, kind: str) -> Path:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[EOS]", "a", "cat", "cup", "of", "coffee", "tree"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]", model_max_length=16
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=16,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    if kind == "clip":
        model = transformers.CLIPModel(
            transformers.CLIPConfig(vision_config={**vision, "patch_size": 16}, text_config=text, projection_dim=16)
        )
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    else:
        model = transformers.SiglipModel(
            transformers.SiglipConfig(vision_config={**vision, "patch_size": 16}, text_config=text)
        )
        processor = transformers.SiglipImageProcessor(size={"height": 64, "width": 64})
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind, layer", [("clip", "model.vision_model.encoder.layers.1.layer_norm1"),
                                         ("siglip", "model.vision_model.post_layernorm")])  # fmt: skip
def test_hugging_face_clip_and_siglip(tmp_path, kind, layer):
    bundle = load_model(f"hf:{hf_image_text(tmp_path, kind)}")
    assert bundle.extra.get("image_text") and bundle.preprocessing.crop == (64, 64)
    x = torch.randn(2, 3, 64, 64)
    ex = gradcam.explain(bundle.model, x, targets=gradcam.TextPrompt(PROMPTS))
    assert ex.layer == layer and ex.maps.shape == (2, 3, 64, 64) and float(ex.maps.std()) > 0
    text = bundle.model.encode_text(PROMPTS)
    with torch.no_grad():
        image = bundle.model(x)
    torch.testing.assert_close(ex.scores, image @ text.T, rtol=1e-4, atol=1e-5)
    if kind == "clip":  # LeGrad on Hugging Face's CLIP: the blocks' own prompt scores, the same targets
        legrad = gradcam.explain(bundle.model, x, "legrad", targets=gradcam.TextPrompt(PROMPTS))
        assert legrad.maps.shape == (2, 3, 64, 64) and legrad.layer.endswith("(2 blocks)")
        assert float(legrad.maps.std()) > 0.05


def test_the_web_app_takes_prompts_for_an_image_text_model(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradcam.apps import web

    name = "clip:ViT-B-32"
    monkeypatch.setattr(web, "SHELF", web.ModelShelf([name], {name: "none"}))
    result = web.explain_photo(str(EXAMPLES / "chelsea.jpg"), name, ["gradcam", "gradeclip"], None,
                               "a cat; a tree", 0.5, "jet", out_dir=tmp_path)  # fmt: skip
    assert set(result.top5) == {"a cat", "a tree"} and all(-1 <= v <= 1 for v in result.top5.values())
    assert [caption.split(", ")[0] for _, caption in result.overlays] == [
        "gradcam: a cat", "gradcam: a tree", "gradeclip: a cat", "gradeclip: a tree"
    ]  # fmt: skip
    assert result.overlays[0][0].size == (451, 300)  # chelsea at its own resolution
    with pytest.raises(web.AppError, match="image-text model: type what to look for"):
        web.explain_photo(str(EXAMPLES / "chelsea.jpg"), name, ["gradcam"], None, "", 0.5, "jet", out_dir=tmp_path)
    names, default = web.layer_choices(name)
    assert default == "clip.visual.transformer.resblocks.11.ln_1" and default in names


def test_grad_eclip_targets_and_batch_rows_are_independent_and_the_model_is_left_as_found(tiny_clip):
    x = torch.randn(3, 3, 64, 64)
    tiny_clip.train()
    try:
        together = gradcam.explain(tiny_clip, x, "gradeclip", targets=gradcam.TextPrompt(PROMPTS))
        assert tiny_clip.training and all(p.grad is None for p in tiny_clip.parameters())
        assert not any(m._forward_hooks for m in tiny_clip.modules())
    finally:
        tiny_clip.eval()
    for k, prompt in enumerate(PROMPTS):
        alone = gradcam.explain(tiny_clip, x, "gradeclip", targets=gradcam.TextPrompt(prompt))
        torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0])
    for i in range(3):
        single = gradcam.explain(tiny_clip, x[i : i + 1], "gradeclip", targets=gradcam.TextPrompt(PROMPTS))
        torch.testing.assert_close(together.maps[i], single.maps[0], rtol=1e-4, atol=1e-5)


def test_evaluate_refuses_an_image_text_model(tmp_path, capsys):
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--model", "clip:ViT-B-32", "--weights", "none"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    assert "is an image-text model; gradcam evaluate measures classifiers" in capsys.readouterr().err


def test_legrad_with_text_prompts_equals_its_formula_by_hand(tiny_clip):
    """LeGrad on CLIP, as its authors score it: at each block the normalised embedding of the mean token,
    ``normalize(ln_post(mean z) @ proj)``, against the prompt's text embedding; the gradient taken at the
    attention probabilities themselves (each attention re-run by hand with ``A`` as a tensor)."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = gradcam.explain(tiny_clip, x, "legrad", targets=gradcam.TextPrompt(PROMPTS[:2]))
    assert ours.maps.shape == (2, 2, 64, 64) and ours.layer.endswith("(2 blocks)")
    visual = tiny_clip.clip.visual
    text = F.normalize(tiny_clip.clip.encode_text(tiny_clip.tokenizer(PROMPTS[:2])), dim=-1).detach()
    probabilities, outputs = [], []

    def explicit(module, args, output):  # the attention written out, its probabilities kept with their graph
        x_in = args[0]
        q, k, v = F.linear(x_in, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        heads, d = module.num_heads, x_in.shape[-1] // module.num_heads
        q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in (q, k, v))
        attention = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        probabilities.append(attention)
        return (module.out_proj((attention @ v).transpose(1, 2).flatten(2)), None)

    handles = [b.attn.register_forward_hook(explicit) for b in visual.transformer.resblocks]
    handles += [b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in visual.transformer.resblocks]
    try:
        with torch.enable_grad():
            tiny_clip.clip.encode_image(x)
            expected = []
            for k in range(2):
                total = 0
                for attention, z in zip(probabilities, outputs, strict=True):
                    embedding = F.normalize(visual.ln_post(z.mean(dim=1)) @ visual.proj, dim=-1)
                    (gradient,) = torch.autograd.grad((embedding @ text[k]).sum(), attention, retain_graph=True)
                    total = total + gradient.clamp(min=0).mean(dim=(1, 2))[:, 1:]
                expected.append(total / 2)
    finally:
        for handle in handles:
            handle.remove()
    grid = torch.stack(expected, dim=1).reshape(2, 2, 4, 4).detach()
    from gradcam.result import normalise, upsample

    torch.testing.assert_close(ours.maps, normalise(upsample(normalise(grid), (64, 64))), atol=1e-5, rtol=1e-4)
