"""Guided pipelines end to end on the tiny SD1 / SD2 / SDXL models."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from contrastive_diffusers.guidance import AttendAndExcite, Conform, Ebama, SynGen
from contrastive_diffusers.pipelines import (
    GuidanceCallback,
    GuidedStableDiffusionPipeline,
    GuidedStableDiffusionXLPipeline,
)
from contrastive_diffusers.models.tiny import _sharpen_cross_attention, tiny_components, tiny_pipeline

PROMPTS = ["a red car and a blue bench", "a green cat with a yellow hat"]
SIZE = 128
STEPS = 10


def guided(kind, dtype=torch.float32):
    base = tiny_pipeline(kind).to(dtype=dtype)
    cls = GuidedStableDiffusionXLPipeline if kind == "sdxl" else GuidedStableDiffusionPipeline
    pipe = cls.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt=PROMPTS, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(
        prompt,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    )


def all_processors(unet):
    return {name: type(proc).__name__ for name, proc in unet.attn_processors.items()}


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def pipe(request):
    return guided(request.param)


def test_attend_and_excite_matches_diffusers_pipeline():
    """Same components, seed and settings: our A&E == diffusers' StableDiffusionAttendAndExcitePipeline."""
    from diffusers import StableDiffusionAttendAndExcitePipeline

    components = tiny_components("sd1")
    reference = StableDiffusionAttendAndExcitePipeline(**components)
    reference.set_progress_bar_config(disable=True)
    ours = GuidedStableDiffusionPipeline(**components)
    ours.set_progress_bar_config(disable=True)
    prompt, steps = PROMPTS[0], 12
    expected = reference(
        prompt,
        token_indices=[3, 7],
        attn_res=(4, 4),  # diffusers' default is a fixed 16x16; ours is size / 32 = 4x4 here
        num_inference_steps=steps,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    out = run(ours, prompt, guidance=AttendAndExcite(), token_groups=[["car"], ["bench"]], num_inference_steps=steps)
    plain = run(ours, prompt, num_inference_steps=steps).images
    # Refinement ran, and only at A&E's refinement steps 0 and 10 (so the parity covers the
    # refinement loop too; with these weights it runs at step 10, step 0 meets its threshold).
    refined = [r.step for r in out.guidance_records if sum(r.refinement_iterations)]
    assert refined and set(refined) <= {0, 10}, refined
    # float32 sums differ with the thread count, and 12 steps of gradient updates amplify them:
    # 6e-6 with the default threads, 1.0e-4 with OMP_NUM_THREADS=1; both far below one 8-bit
    # level (3.9e-3). The plain image must be farther away than this, or the test shows nothing.
    assert np.abs(out.images - expected).max() < 5e-4
    assert np.abs(plain - expected).max() > 0.05  # and guidance did change the image


@pytest.mark.parametrize("method_cls", [AttendAndExcite, Conform, Ebama, SynGen], ids=lambda c: c.__name__)
def test_updates_lower_the_loss_and_change_the_image(pipe, method_cls):
    """Batch of 2 prompts x 2 images: the loss re-evaluated right after an update, at the same
    timestep, is lower in the large majority of updates; the images differ from plain ones."""
    out = run(
        pipe,
        guidance=method_cls(),
        token_groups="auto",
        num_images_per_prompt=2,
        record_loss_after_update=True,
    )
    assert out.images.shape == (4, SIZE, SIZE, 3) and np.isfinite(out.images).all()
    pairs = [
        (after, before)
        for record in out.guidance_records
        for after, before, updated in zip(record.loss_after_update, record.loss, record.updated)
        if updated
    ]
    assert len(pairs) >= 4 * 9  # every image updated at (nearly) every guided step
    lower = sum(after < before for after, before in pairs)
    assert lower / len(pairs) >= 0.7, f"{lower}/{len(pairs)} updates lowered the loss"
    plain = run(pipe, num_images_per_prompt=2).images
    assert np.abs(out.images - plain).reshape(4, -1).max(1).min() > 1e-3  # every image changed
    assert not any(any(r.skipped_nonfinite) for r in out.guidance_records)


def test_groups_per_prompt_and_per_image(pipe):
    out = run(
        pipe,
        guidance=Conform(),
        token_groups=[[["red", "car"], ["blue", "bench"]], [["green", "cat"], ["yellow", "hat"]]],
        num_images_per_prompt=2,
        num_inference_steps=2,
    )
    assert [[g.words for g in groups] for groups in out.token_groups] == [
        [("red", "car"), ("blue", "bench")],
        [("green", "cat"), ("yellow", "hat")],
    ]
    assert len(out.guidance_records[0].loss) == 4


def test_plain_call_matches_stock_pipeline(pipe):
    stock_cls = StableDiffusionXLPipeline if isinstance(pipe, StableDiffusionXLPipeline) else StableDiffusionPipeline
    stock = stock_cls.from_pipe(pipe)
    stock.set_progress_bar_config(disable=True)
    out = run(pipe, PROMPTS[0], num_inference_steps=3)
    expected = run(stock, PROMPTS[0], num_inference_steps=3)
    np.testing.assert_array_equal(out.images, expected.images)
    assert isinstance(out, type(expected))  # code that checks for diffusers' output class takes ours


def test_processors_restored_after_call_and_after_error(pipe):
    before = all_processors(pipe.unet)
    run(pipe, PROMPTS[0], guidance=AttendAndExcite(), num_inference_steps=2)
    assert all_processors(pipe.unet) == before

    def explode(pipeline, step, timestep, kwargs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(pipe, PROMPTS[0], guidance=AttendAndExcite(), num_inference_steps=2, callback_on_step_end=explode)
    assert all_processors(pipe.unet) == before


def test_guiding_swaps_only_the_recorded_layers_and_restores_them_exactly():
    # A module processor (as adapters install) on a recorded layer, some weights frozen by the
    # user: after a guided step, also one that raises, the same objects and flags are back.
    from diffusers.models.attention_processor import AttnProcessor2_0

    from contrastive_diffusers.guidance.attention import RecordingAttnProcessor
    from contrastive_diffusers.guidance.engine import GuidanceConditioning, Guider
    from contrastive_diffusers.guidance.tokens import TokenGroup

    class ModuleProcessor(torch.nn.Module):
        def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    components = tiny_components("sd1")
    unet, scheduler = components["unet"], components["scheduler"]
    scheduler.set_timesteps(4)
    frozen = [p for name, p in unet.named_parameters() if name.startswith("down_blocks.0")]
    for p in frozen:
        p.requires_grad_(False)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    groups = [TokenGroup(("red", "car"), ((2,), (3,))), TokenGroup(("blue", "bench"), ((5,), (6,)))]
    cond = GuidanceConditioning(text, [groups], [7], ["a red car and a blue bench"])
    guider = Guider(AttendAndExcite(), unet, scheduler, cond, (16, 16), None, 4)
    recorded = guider.layer_names[0]
    layer = unet.get_submodule(recorded.removesuffix(".processor"))
    layer.set_processor(ModuleProcessor())
    before = dict(unet.attn_processors)
    seen = {}

    class Spy(torch.nn.Module):  # notes the processors in place during the guidance forward
        def forward(self, *args, **kwargs):
            seen.update(unet.attn_processors)
            raise RuntimeError("inside")

    latents = torch.randn(1, 4, 16, 16)
    guider.step(latents, scheduler.timesteps[0], 0)
    assert {n: p for n, p in unet.attn_processors.items()} == before  # the same objects
    assert layer._modules["processor"] is before[recorded]  # still a registered submodule
    assert all(not p.requires_grad for p in frozen) and all(p.grad is None for p in unet.parameters())
    assert sum(p.requires_grad for p in unet.parameters()) == len(list(unet.parameters())) - len(frozen)
    spied = next(n for n in reversed(list(unet.attn_processors)) if n not in guider.layer_names)
    unet.get_submodule(spied.removesuffix(".processor")).set_processor(Spy())
    before = dict(unet.attn_processors)
    guider.recorder.stop_after = None  # let the forward reach the spy's layer (an unrecorded one)
    with pytest.raises(RuntimeError, match="inside"):
        guider.step(latents, scheduler.timesteps[0], 0)
    assert {n: p for n, p in unet.attn_processors.items()} == before
    assert all(not p.requires_grad for p in frozen)
    swapped = {n for n, p in seen.items() if isinstance(p, RecordingAttnProcessor)}
    assert swapped == set(guider.layer_names)  # while guiding: the recorded layers swapped, no other
    assert all(seen[n] is before[n] for n in seen if n not in guider.layer_names)


def test_refinement_forwards_only_the_images_above_their_target(pipe, monkeypatch):
    # Two prompts, a refinement target between their losses: only the image above it is run
    # again (as diffusers' A&E pipeline refines one image at a time); the latents are those of
    # refining the whole batch with the other image masked out, up to batched rounding.
    from contrastive_diffusers.guidance.engine import Guider

    def call(method):
        return run(pipe, guidance=method, num_inference_steps=2)

    first = call(AttendAndExcite(max_iter_to_alter=1, thresholds={}))
    low, high = sorted(first.guidance_records[0].loss)
    assert high - low > 1e-3
    method = AttendAndExcite(max_iter_to_alter=1, thresholds={0: 1 - (low + high) / 2}, max_refinement_steps=3)
    sizes = []
    forward = Guider._forward_maps

    def counting(self, latents, t, rows=None):
        sizes.append(latents.shape[0])
        return forward(self, latents, t, rows)

    monkeypatch.setattr(Guider, "_forward_maps", counting)
    subsets = call(method)
    iterations = subsets.guidance_records[0].refinement_iterations
    assert sorted(iterations)[0] == 0 and sorted(iterations)[1] >= 2
    assert sizes[0] == 2 and sizes[-1] == 2 and sizes[1:-1] == [1] * (max(iterations) - 1)
    monkeypatch.setattr(Guider, "forwards_row_subsets", False)
    sizes.clear()
    whole = call(method)
    assert sizes == [2] * (max(iterations) + 1)
    assert whole.guidance_records[0].refinement_iterations == iterations
    resting = iterations.index(0)
    np.testing.assert_array_equal(subsets.images[resting], whole.images[resting])
    np.testing.assert_allclose(subsets.images, whole.images, atol=1e-4)


def test_attention_maps_and_user_callback(pipe):
    seen = []

    def callback(pipeline, step, timestep, kwargs):
        seen.append(step)
        return kwargs

    out = run(
        pipe,
        PROMPTS[0],
        guidance=SynGen(max_iter_to_alter=3),
        num_inference_steps=4,
        return_attention_maps=True,
        callback_on_step_end=callback,
    )
    assert seen == list(range(len(seen))) and len(seen) >= 4
    assert sorted(out.attention_maps) == [0, 1, 2]  # only guided steps
    maps = out.attention_maps[0]
    assert maps.dtype == torch.float32 and maps.shape[:3] == (1, 4, 4)
    assert torch.allclose(maps.sum(-1), torch.ones(1, 4, 4), atol=1e-4)  # probabilities over tokens


def test_return_dict_false_gives_tuple(pipe, caplog):
    out = run(pipe, PROMPTS[0], guidance=Ebama(), num_inference_steps=2, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, SIZE, SIZE, 3)
    from diffusers.utils import logging

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            run(pipe, PROMPTS[0], guidance=Ebama(), num_inference_steps=1, return_dict=False,
                return_attention_maps=True)
    finally:
        logging.disable_propagation()
    assert "return_attention_maps=True has no effect with return_dict=False" in caplog.text


def test_seeded_runs_are_deterministic(pipe):
    a = run(pipe, PROMPTS[0], guidance=Conform(), num_inference_steps=3).images
    b = run(pipe, PROMPTS[0], guidance=Conform(), num_inference_steps=3).images
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_float16_pipeline_has_no_nans_and_float32_losses(kind):
    pipe = guided(kind, torch.float16)
    out = run(pipe, PROMPTS[0], guidance=Conform(), num_inference_steps=3, return_attention_maps=True)
    assert np.isfinite(out.images).all()
    assert all(np.isfinite(r.loss).all() for r in out.guidance_records)
    assert out.attention_maps[0].dtype == torch.float32
    assert not any(any(r.skipped_nonfinite) for r in out.guidance_records)


def test_nonfinite_gradient_is_skipped_not_propagated():
    pipe = guided("sd1")

    class Broken(AttendAndExcite):
        def loss(self, maps, groups, window, prompt_length, previous_maps=None):
            return super().loss(maps, groups, window, prompt_length) * float("nan")

    out = run(pipe, PROMPTS[0], guidance=Broken(thresholds={}), num_inference_steps=3)
    assert np.isfinite(out.images).all()
    assert all(r.skipped_nonfinite == [True] for r in out.guidance_records)
    plain = run(pipe, PROMPTS[0], num_inference_steps=3).images
    np.testing.assert_allclose(out.images, plain, atol=1e-5)


def test_guidance_callback_on_a_stock_pipeline(pipe):
    """Any pipeline through callback_on_step_end: steps 1.. guided, the same as our pipeline
    would do when step 0 is left alone."""
    stock_cls = StableDiffusionXLPipeline if isinstance(pipe, StableDiffusionXLPipeline) else StableDiffusionPipeline
    stock = stock_cls.from_pipe(pipe)
    stock.set_progress_bar_config(disable=True)
    before = all_processors(stock.unet)
    # The softmax-normalised variant moves random-weight images enough to see (the default
    # on raw maps moves tiny SDXL by ~5e-4).
    method = Conform.pipeline_signature()
    callback = GuidanceCallback(stock, method, PROMPTS[0], token_groups=[["red", "car"], ["blue", "bench"]])
    images = run(stock, PROMPTS[0], num_inference_steps=4, callback_on_step_end=callback).images
    assert all_processors(stock.unet) == before
    steps = [r.step for r in callback.records]
    assert steps[0] == 1 and steps == list(range(1, len(steps) + 1))
    plain = run(stock, PROMPTS[0], num_inference_steps=4).images
    assert np.abs(images - plain).max() > 1e-3
    # Our pipeline with step 0 left out of the schedule makes the same updates.
    reference = run(
        pipe,
        PROMPTS[0],
        guidance=method.with_schedule(start_step=1),
        token_groups=[["red", "car"], ["blue", "bench"]],
        num_inference_steps=4,
    ).images
    np.testing.assert_allclose(images, reference, atol=1e-4)


def test_save_and_load_guided_pipeline_folder(tmp_path):
    tiny_pipeline("sd2").save_pretrained(tmp_path / "sd2")
    pipe = GuidedStableDiffusionPipeline.from_pretrained(tmp_path / "sd2")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.pad_token == "!" and pipe.scheduler.config.prediction_type == "v_prediction"
    out = run(pipe, PROMPTS[0], guidance=SynGen(), num_inference_steps=2)
    assert np.isfinite(out.images).all()


def test_a_saved_guided_pipeline_is_a_stock_folder(tmp_path):
    # DiffusionPipeline and the AutoPipelines pick the class by model_index.json's _class_name
    # (the AutoPipelines are not imported here: diffusers 0.35's do not import beside transformers 5)
    from diffusers import DiffusionPipeline

    for kind, stock in (("sd1", StableDiffusionPipeline), ("sdxl", StableDiffusionXLPipeline)):
        guided(kind).save_pretrained(tmp_path / kind)
        assert json.loads((tmp_path / kind / "model_index.json").read_text())["_class_name"] == stock.__name__
        assert type(DiffusionPipeline.from_pretrained(tmp_path / kind)) is stock
    assert type(GuidedStableDiffusionPipeline.from_pretrained(tmp_path / "sd1")) is GuidedStableDiffusionPipeline


def test_from_pipe_keeps_each_components_dtype():
    base = tiny_pipeline("sd1").to(dtype=torch.float16)
    pipe = GuidedStableDiffusionPipeline.from_pipe(base)
    assert pipe.unet.dtype == torch.float16 and base.unet.dtype == torch.float16
    # an fp16 model with a float32 VAE (the usual fix for fp16 NaNs): nothing is cast, even through fp16
    base = tiny_pipeline("sd1")
    vae_weight = base.vae.decoder.conv_out.weight.detach().clone()
    base.unet.to(torch.float16)
    base.text_encoder.to(torch.float16)
    assert base.dtype == torch.float16
    pipe = GuidedStableDiffusionPipeline.from_pipe(base)
    assert pipe.vae is base.vae and base.vae.dtype == torch.float32 and base.unet.dtype == torch.float16
    assert torch.equal(base.vae.decoder.conv_out.weight, vae_weight)


def test_sdxl_prompt_embeds_need_their_pooled_embeds():
    pipe = guided("sdxl")
    prompt_embeds = pipe.encode_prompt(PROMPTS[0], device="cpu", do_classifier_free_guidance=False)[0]
    with pytest.raises(ValueError, match="Pass pooled_prompt_embeds with prompt_embeds"):
        run(pipe, PROMPTS[0], prompt_embeds=prompt_embeds, guidance=SynGen(), num_inference_steps=2)


def test_prompt_embeds_with_their_prompt_text_guide_as_the_text(pipe):
    """Given both, a guided call conditions on the embeddings and finds the token groups in the
    text (the stock call refuses both; plain calls still do)."""
    sdxl = isinstance(pipe, GuidedStableDiffusionXLPipeline)
    encoded = pipe.encode_prompt(PROMPTS[0], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    names = ("prompt_embeds", "negative_prompt_embeds") + (("pooled_prompt_embeds", "negative_pooled_prompt_embeds")
                                                           if sdxl else ())
    embeds = dict(zip(names, encoded))
    kwargs = dict(guidance=SynGen(), num_inference_steps=3)
    reference = run(pipe, PROMPTS[0], **kwargs)
    out = run(pipe, PROMPTS[0], **embeds, **kwargs)
    np.testing.assert_allclose(out.images, reference.images, atol=1e-5)
    assert out.guidance_records[0].loss == pytest.approx(reference.guidance_records[0].loss, abs=1e-5)
    with pytest.raises(ValueError, match="pass `prompt` too"):
        run(pipe, None, **embeds, **kwargs)


def test_negative_prompt_string_with_guidance(pipe):
    out = run(pipe, PROMPTS, guidance=Ebama(), negative_prompt="blurry", num_inference_steps=2)
    assert out.images.shape[0] == 2


def test_conform_with_single_word_groups_guides_from_the_second_step(pipe):
    """"a cat with a hat" -> [["cat"], ["hat"]]: no positive pair until the previous step's maps
    exist, so step 0 leaves the latents alone instead of failing."""
    out = run(pipe, "a cat with a hat", guidance=Conform(), num_inference_steps=3)
    assert [g.words for g in out.token_groups[0]] == [("cat",), ("hat",)]
    first, second = out.guidance_records[:2]
    assert first.loss == [0.0] and second.loss[0] > 0


def test_denoising_end_stops_guidance_with_the_loop():
    pipe = guided("sdxl")
    out = run(pipe, PROMPTS[0], guidance=SynGen(), num_inference_steps=10, denoising_end=0.5)
    last_loop_step = max(r.step for r in out.guidance_records)
    assert last_loop_step < 6  # the truncated loop ran about 5 steps; nothing guided after it


def test_guidance_callback_restarts_on_every_call():
    stock = tiny_pipeline("sd1")
    callback = GuidanceCallback(stock, Ebama(), PROMPTS[0])
    first = run(stock, PROMPTS[0], num_inference_steps=3, callback_on_step_end=callback).images
    second = run(stock, PROMPTS[0], num_inference_steps=3, callback_on_step_end=callback).images
    np.testing.assert_array_equal(first, second)
    # PNDM repeats a timestep: 3 steps are 4 loop iterations, of which 1..3 follow a callback.
    assert [r.step for r in callback.records] == list(range(1, len(stock.scheduler.timesteps)))


def test_unsupported_unet_inputs_are_refused():
    from types import SimpleNamespace

    from contrastive_diffusers.pipelines.session import check_supported_unet

    with pytest.raises(ValueError, match="IP-Adapter"):
        check_supported_unet(SimpleNamespace(config=SimpleNamespace(encoder_hid_dim_type="ip_image_proj")))
    inpainting = SimpleNamespace(config=SimpleNamespace(encoder_hid_dim_type=None, in_channels=9))
    with pytest.raises(ValueError, match="9 input channels"):
        check_supported_unet(inpainting, 4)


def test_guidance_callback_refuses_an_inpainting_unet_when_built():
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    components = tiny_components("sd1")
    unet = UNet2DConditionModel.from_config({**components["unet"].config, "in_channels": 9})
    pipe = StableDiffusionInpaintPipeline(**{**components, "unet": unet})
    with pytest.raises(ValueError, match="UNet takes 9 input channels but the latents have 4"):
        GuidanceCallback(pipe, SynGen(), PROMPTS[0])


def test_bad_size_fails_before_any_guidance_work(pipe):
    calls = []

    class Counting(SynGen):
        def loss(self, *args, **kwargs):
            calls.append(1)
            return super().loss(*args, **kwargs)

    with pytest.raises(ValueError, match="divisible by 8"):
        pipe(PROMPTS[0], guidance=Counting(), height=100, width=128, num_inference_steps=2)
    assert calls == []


def test_output_heatmaps_per_image(tmp_path, pipe):
    from PIL import Image

    from contrastive_diffusers.guidance.visualize import save_output_heatmaps

    out = pipe(
        PROMPTS, guidance=Conform(), num_inference_steps=2, height=SIZE, width=SIZE,
        num_images_per_prompt=2, return_attention_maps=True,
    )
    path = save_output_heatmaps(out, tmp_path / "h.png", image_index=3)  # second prompt's image
    with Image.open(path) as grid:
        assert grid.size == (5 * SIZE, grid.size[1])  # image + green, cat, yellow, hat
    with pytest.raises(ValueError, match="not guided"):
        save_output_heatmaps(out, tmp_path / "x.png", step=99)
    plain = pipe(PROMPTS[0], num_inference_steps=1, height=SIZE, width=SIZE, return_attention_maps=True)
    with pytest.raises(ValueError, match="only guided steps record them"):
        save_output_heatmaps(plain, tmp_path / "plain.png")


def test_layers_outside_the_map_size_keep_their_processor():
    """Guidance records only the chosen layers; every other layer runs the processor the user
    set (SDPA, xformers, ...), also inside the guidance forward."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    calls = {}

    class Counting(AttnProcessor2_0):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def __call__(self, attn, hidden_states, *args, **kwargs):
            calls[self.name] = calls.get(self.name, 0) + 1
            return super().__call__(attn, hidden_states, *args, **kwargs)

    pipe = guided("sd1")
    pipe.unet.set_attn_processor({name: Counting(name) for name in pipe.unet.attn_processors})
    out = run(
        pipe, PROMPTS[0], guidance=SynGen(max_iter_to_alter=1), num_inference_steps=1, truncate_guidance_forward=False
    )
    denoising = len(pipe.scheduler.timesteps)  # one CFG-batched forward per loop iteration
    guidance = len(out.guidance_records)  # one guidance forward per guided step (no refinement)
    recorded = [n for n in calls if n.startswith(("down_blocks.2.", "up_blocks.1.")) and ".attn2." in n]
    others = [n for n in calls if n not in recorded]
    assert guidance == 1 and len(recorded) == 3 and len(others) == 17
    assert all(calls[n] == denoising for n in recorded)  # explicit attention while guiding
    assert all(calls[n] == denoising + guidance for n in others)

    # Truncated (the default): the blocks after up_blocks.1 do not run in the guidance forward.
    calls.clear()
    run(pipe, PROMPTS[0], guidance=SynGen(max_iter_to_alter=1), num_inference_steps=1)
    after = [n for n in others if n.startswith(("up_blocks.2.", "up_blocks.3."))]
    before = [n for n in others if n not in after]
    assert len(after) == 8
    assert all(calls[n] == denoising for n in after) and all(calls[n] == denoising + 1 for n in before)


@pytest.mark.parametrize("method_cls", [AttendAndExcite, Conform])
def test_truncated_guidance_forward_gives_the_same_images(pipe, method_cls):
    """Stopping the guidance forward after the last recorded layer is an optimisation only."""
    kwargs = dict(guidance=method_cls(), num_images_per_prompt=2, num_inference_steps=6, return_attention_maps=True)
    fast = run(pipe, truncate_guidance_forward=True, **kwargs)
    full = run(pipe, truncate_guidance_forward=False, **kwargs)
    np.testing.assert_allclose(fast.images, full.images, atol=1e-5)
    for step in full.attention_maps:
        torch.testing.assert_close(fast.attention_maps[step], full.attention_maps[step], atol=1e-6, rtol=1e-5)


def _lora_scalings(model):
    from contrastive_diffusers.guidance.engine import lora_layers

    return [dict(layer.scaling) for layer in lora_layers(model)]


def test_a_lora_scale_guides_alike_truncated_or_not_and_leaves_the_adapters_as_they_were():
    """cross_attention_kwargs={"scale": s} scales a PEFT LoRA for the call; the guidance forward
    that stops after its last recorded layer must not leave the adapters scaled (diffusers before
    0.37 unscales only at the end of a whole forward: the scale compounded on every guided step)."""
    from peft import LoraConfig

    images, scalings = {}, None
    for truncate in (True, False):
        pipe = guided("sd1")
        torch.manual_seed(0)
        pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        scalings = _lora_scalings(pipe.unet)
        images[truncate] = run(pipe, PROMPTS[0], guidance=SynGen(), num_inference_steps=3,
                               cross_attention_kwargs={"scale": 0.5}, truncate_guidance_forward=truncate).images
        assert _lora_scalings(pipe.unet) == scalings
    np.testing.assert_allclose(images[True], images[False], atol=1e-6)


def test_a_stopped_guidance_forward_puts_the_lora_scalings_back():
    """The forward of diffusers before 0.37, stopped early: scaled on entry, never unscaled."""
    from diffusers.utils import scale_lora_layers
    from peft import LoraConfig

    from contrastive_diffusers.guidance.attention import ForwardComplete
    from contrastive_diffusers.guidance.engine import lora_layers, stopping_early

    unet = tiny_pipeline("sd1").unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v"]))
    layers = lora_layers(unet)
    assert len(layers) == 2 * len(unet.attn_processors) and layers[0].scaling == {"default": 2.0}
    with stopping_early(layers):
        scale_lora_layers(unet, 0.5)
        assert layers[0].scaling == {"default": 1.0}
        raise ForwardComplete
    assert all(layer.scaling == {"default": 2.0} for layer in layers)
    with pytest.raises(RuntimeError), stopping_early(layers):  # other errors pass through
        raise RuntimeError


def test_layerwise_casting_guides_as_the_same_weights_without_it():
    """enable_layerwise_casting (float8 storage, each layer cast to float32 for its forward and
    back after) guides as a UNet holding those float8-rounded weights without the casting: the
    guidance backward needs the weights in their compute dtype, kept while guiding; they are
    back in float8 after the call."""
    from contrastive_diffusers.guidance.engine import layerwise_casting_hooks

    pipe = guided("sd1")
    pipe.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    cast = {name for name, module in pipe.unet.named_modules() if module in dict(layerwise_casting_hooks(pipe.unet))}
    assert any(name.endswith("attn2.to_k") for name in cast)
    reference = guided("sd1")
    for name, module in reference.unet.named_modules():
        if name in cast:
            module.to(torch.float8_e4m3fn).to(torch.float32)
    kwargs = dict(guidance=SynGen(), num_inference_steps=3)
    out = run(pipe, PROMPTS[0], **kwargs)
    np.testing.assert_array_equal(out.images, run(reference, PROMPTS[0], **kwargs).images)
    assert all(p.dtype == torch.float8_e4m3fn for name, m in pipe.unet.named_modules() if name in cast
               for p in m.parameters(recurse=False))


def test_gradient_checkpointing_changes_nothing_and_stays_on():
    """A UNet with gradient checkpointing on (kept from training, or to save memory) guides as
    one without: the guidance pass turns it off (its recomputation would run after the maps were
    recorded, and torch would abort) and turns it back on."""
    pipe = guided("sd1")
    kwargs = dict(guidance=SynGen(), num_inference_steps=4)
    plain = run(pipe, **kwargs).images
    pipe.unet.enable_gradient_checkpointing()
    try:
        for truncate in (True, False):
            np.testing.assert_array_equal(run(pipe, truncate_guidance_forward=truncate, **kwargs).images, plain)
        assert pipe.unet.is_gradient_checkpointing
    finally:
        pipe.unet.disable_gradient_checkpointing()


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_model_cpu_offload_guides_as_without_it(kind):
    """diffusers' model offload (accelerate hooks that move each model to the device on its
    forward) guides as without: the guidance forward runs whole under the hooks, since they
    expect whole forwards, and the hooks stay on. The offload device is the CPU here, which
    diffusers allows when it is named."""
    kwargs = dict(guidance=AttendAndExcite(), num_inference_steps=4)
    expected = run(guided(kind), **kwargs)
    pipe = guided(kind)
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook")
    out = run(pipe, **kwargs)
    np.testing.assert_array_equal(out.images, expected.images)
    assert [r.refinement_iterations for r in out.guidance_records] == [
        r.refinement_iterations for r in expected.guidance_records]
    if kind == "sd1":  # the refinement's extra forwards ran under the hooks too (the tiny SDXL needs none)
        assert any(sum(r.refinement_iterations) for r in out.guidance_records)
    assert hasattr(pipe.unet, "_hf_hook")


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
def test_group_offload_guides_as_without_it_and_runs_whole_forwards(offload_type):
    """diffusers' group offloading learns the layers' order from a first forward to prefetch
    them, so the guidance forward runs whole under it; the images are those without it."""
    from contrastive_diffusers.guidance.engine import can_truncate

    kwargs = dict(guidance=AttendAndExcite(), num_inference_steps=3)
    expected = run(guided("sd1"), PROMPTS[0], **kwargs).images
    pipe = guided("sd1")
    extra = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}
    pipe.unet.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                   offload_type=offload_type, **extra)
    assert not can_truncate(True, pipe.unet)
    np.testing.assert_array_equal(run(pipe, PROMPTS[0], **kwargs).images, expected)


@pytest.mark.parametrize("setup", ["enable_attention_slicing", "fuse_qkv_projections"])
def test_memory_and_speed_settings_guide_as_without_them(setup):
    """Attention slicing and fused QKV projections replace every attention processor; the
    recording layers compute the maps themselves during the guidance forward, so the maps and
    the images are those of the default processors, and the user's processors are back after."""
    kwargs = dict(guidance=AttendAndExcite(), num_inference_steps=4, return_attention_maps=True)
    expected = run(guided("sd1"), **kwargs)
    pipe = guided("sd1")
    getattr(pipe, setup)()
    processors = all_processors(pipe.unet)
    assert set(processors.values()) == {"SlicedAttnProcessor" if setup == "enable_attention_slicing" else "FusedAttnProcessor2_0"}
    out = run(pipe, **kwargs)
    np.testing.assert_allclose(out.images, expected.images, atol=1e-4)  # other summation orders
    for step, maps in expected.attention_maps.items():
        torch.testing.assert_close(out.attention_maps[step], maps, atol=1e-5, rtol=1e-4)
    assert all_processors(pipe.unet) == processors


def test_guidance_callback_with_denoising_end_starts_at_the_first_timestep():
    """SDXL's denoising_end shortens the loop from the end: the callback must still index from 0."""
    stock = tiny_pipeline("sdxl")
    callback = GuidanceCallback(stock, SynGen(), PROMPTS[0])
    run(stock, PROMPTS[0], num_inference_steps=10, denoising_end=0.5, callback_on_step_end=callback)
    steps = [r.step for r in callback.records]
    assert steps[0] == 1 and steps == list(range(1, len(steps) + 1)) and len(steps) < 6
    t_first = [r.timestep for r in callback.records][0]
    assert t_first == float(stock.scheduler.timesteps[1])


def test_default_attn_res_is_latent_over_4_or_the_nearest_map_size():
    from contrastive_diffusers.pipelines import default_attn_res
    from contrastive_diffusers.models.tiny import tiny_pipeline

    unet = tiny_pipeline("sd1").unet  # cross-attention at latent, /2, /4 (and the mid block)
    assert default_attn_res(unet, (64, 64)) == (16, 16)  # SD at 512 px: image / 32
    assert default_attn_res(unet, (16, 16)) == (4, 4)
    # SDXL's layout has no cross-attention at full latent size; latent/4 exists (the coarser level)
    assert default_attn_res(tiny_pipeline("sdxl").unet, (16, 16)) == (4, 4)
    # a model whose maps are only at 16x16 and 8x8 of a 16x16 latent: 4x4 is missing, 8x8 is nearest
    from diffusers import UNet2DConditionModel

    small = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, attention_head_dim=4,
    )
    assert default_attn_res(small, (16, 16)) == (8, 8)


def test_default_attn_res_tie_takes_the_finer_map_and_needs_cross_attention():
    """Nearest counts UNet levels (|log| of the area ratio); a tie goes to the finer map."""
    from diffusers import UNet2DConditionModel

    from contrastive_diffusers.guidance.attention import default_attn_res, layer_resolutions

    common = dict(sample_size=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
    # Cross-attention at 8x8 and 2x2 of a 16x16 latent: the 4x4 target is one level from each.
    skipping = UNet2DConditionModel(
        **common, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    assert set(layer_resolutions(skipping, (16, 16)).values()) == {(8, 8), (2, 2)}
    assert default_attn_res(skipping, (16, 16)) == (8, 8)
    assert default_attn_res(skipping, (64, 64)) == (32, 32)  # 16x16 missing: 32x32 and 8x8 tie
    plain = UNet2DConditionModel(
        **common, cross_attention_dim=8, mid_block_type="UNetMidBlock2D",
        down_block_types=("DownBlock2D",) * 4, up_block_types=("UpBlock2D",) * 4,
    )
    with pytest.raises(ValueError, match="no cross-attention layers"):
        default_attn_res(plain, (16, 16))


def test_already_resolved_token_groups_give_the_same_call():
    """TokenGroup lists (resolved once by the caller) are used as given: same groups, same images."""
    from contrastive_diffusers.guidance.tokens import resolve_groups

    pipe = guided("sd1")
    words = [[["red", "car"], ["blue", "bench"]], "auto"]
    by_words = run(pipe, PROMPTS, guidance=Conform(), token_groups=words, num_inference_steps=3)
    resolved = [resolve_groups(pipe.tokenizer, p, g) for p, g in zip(PROMPTS, words)]
    by_groups = run(pipe, PROMPTS, guidance=Conform(), token_groups=resolved, num_inference_steps=3)
    assert by_groups.token_groups == by_words.token_groups == resolved
    np.testing.assert_array_equal(by_groups.images, by_words.images)
    # One prompt's list, and resolved groups next to words for another prompt.
    single = run(pipe, PROMPTS[0], guidance=Conform(), token_groups=resolved[0], num_inference_steps=2)
    assert single.token_groups == [resolved[0]]
    mixed = run(pipe, PROMPTS, guidance=Conform(), token_groups=[resolved[0], "auto"], num_inference_steps=3)
    np.testing.assert_array_equal(mixed.images, by_words.images)
    callback = GuidanceCallback(pipe, Conform(), PROMPTS[0], token_groups=resolved[0])
    assert callback.groups == [resolved[0]]
    longer = resolve_groups(pipe.tokenizer, "a red car and a blue bench under a tree", [["car"], ["tree"]])
    with pytest.raises(ValueError, match=r"\[10\], outside the 7 tokens"):
        run(pipe, PROMPTS[0], guidance=Conform(), token_groups=longer, num_inference_steps=2)
    with pytest.raises(ValueError, match="one TokenGroup list per prompt"):
        run(pipe, PROMPTS, guidance=Conform(), token_groups=resolved[0], num_inference_steps=2)


def test_mcpl_mask_maps_are_latent_over_4_but_never_coarser_than_16():
    from diffusers import UNet2DConditionModel

    from contrastive_diffusers.models.tiny import tiny_pipeline
    from contrastive_diffusers.training.mcpl import mask_attn_res

    unet = tiny_pipeline("sd1").unet  # maps at latent, /2, /4
    assert mask_attn_res(unet, 64) == 16  # SD at 512 px: the paper's 16x16, as the guidance default
    assert mask_attn_res(unet, 128) == 32  # latent / 4 above 16
    assert mask_attn_res(unet, 32) == 16  # latent / 4 = 8 would be coarser than the paper's maps
    assert mask_attn_res(unet, 16) == 16  # never finer than the latent itself
    # the embedded model's layout: maps at 16x16 and 8x8 of a 16x16 latent -> 16x16 (guidance: 8x8)
    small = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, attention_head_dim=4,
    )
    assert mask_attn_res(small, 16) == 16
    # SDXL's layout lacks latent-size maps: 16x16 on a 16x16 latent falls to the nearest, 8x8
    assert mask_attn_res(tiny_pipeline("sdxl").unet, 16) == 8


def test_second_order_schedulers_are_refused_with_the_fix():
    """Heun's loop visits each timestep twice: guidance would land on half-steps and the step
    schedules would end halfway, so guided calls and the callback refuse it and name the fix."""
    from diffusers import HeunDiscreteScheduler

    pipe = guided("sd1")
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="HeunDiscreteScheduler is a solver of order 2.*first-order"):
        run(pipe, PROMPTS[0], guidance=SynGen(), num_inference_steps=2)
    with pytest.raises(ValueError, match="order 2"):
        GuidanceCallback(pipe, SynGen(), PROMPTS[0])
    # A callback built for a first-order scheduler checks again when the loop starts.
    stock = tiny_pipeline("sd1")
    callback = GuidanceCallback(stock, SynGen(), PROMPTS[0])
    stock.scheduler = HeunDiscreteScheduler.from_config(stock.scheduler.config)
    with pytest.raises(ValueError, match="order 2"):
        run(stock, PROMPTS[0], num_inference_steps=2, callback_on_step_end=callback)
    assert np.isfinite(run(stock, PROMPTS[0], num_inference_steps=2).images).all()  # plain calls are untouched


def test_guidance_callback_refuses_controlnet_pipelines():
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    components = tiny_components("sd1")
    controlnet = ControlNetModel.from_unet(components["unet"])
    pipe = StableDiffusionControlNetPipeline(**components, controlnet=controlnet)
    with pytest.raises(ValueError, match="does not support pipelines with a controlnet"):
        GuidanceCallback(pipe, SynGen(), PROMPTS[0])
    # a callback built on the plain pipeline, then handed to a ControlNet pipeline sharing its UNet
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline(**components)
    callback = GuidanceCallback(plain, SynGen(), PROMPTS[0], token_groups=[["red", "car"], ["blue", "bench"]])
    condition = torch.zeros(1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="does not support pipelines with a controlnet"):
        run(pipe, PROMPTS[0], image=condition, num_inference_steps=2, callback_on_step_end=callback)


def test_guidance_callback_refuses_perturbed_attention_guidance():
    from diffusers import StableDiffusionPAGPipeline

    pag = StableDiffusionPAGPipeline(**tiny_components("sd1"), pag_applied_layers=["mid"])
    with pytest.raises(ValueError, match="does not support perturbed-attention guidance"):
        GuidanceCallback(pag, SynGen(), PROMPTS[0])


def test_guidance_callback_on_an_sdxl_refiner_without_the_first_text_encoder():
    """A refiner (img2img, second tokenizer and encoder only) is guided from its loop's tensors."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    components = {**tiny_components("sdxl"), "tokenizer": None, "text_encoder": None}
    width = components["text_encoder_2"].config.hidden_size
    # The refiner's UNet reads the second encoder alone and 5 time ids (aesthetic score, no target size).
    torch.manual_seed(0)
    components["unet"] = UNet2DConditionModel.from_config(
        {**components["unet"].config, "cross_attention_dim": width, "projection_class_embeddings_input_dim": width + 5 * 8}
    )
    _sharpen_cross_attention(components["unet"])  # as every tiny UNet: peaked maps, so guidance moves the latents
    refiner = StableDiffusionXLImg2ImgPipeline(**components, requires_aesthetics_score=True)
    refiner.set_progress_bar_config(disable=True)
    callback = GuidanceCallback(refiner, Conform.pipeline_signature(), PROMPTS[0])
    assert [g.words for g in callback.groups[0]] == [("red", "car"), ("blue", "bench")]
    image = torch.zeros(1, 3, SIZE, SIZE)
    kwargs = dict(image=image, strength=0.6, num_inference_steps=5, output_type="latent")
    guided_images = refiner(PROMPTS[0], generator=torch.Generator().manual_seed(0), callback_on_step_end=callback,
                            **kwargs).images
    plain = refiner(PROMPTS[0], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert [r.step for r in callback.records] == [1, 2]  # strength 0.6 of 5 steps: a loop of 3
    assert all(r.loss[0] > 0 for r in callback.records)
    assert (guided_images - plain).abs().max() > 1e-4


def test_guidance_works_under_inference_mode(pipe):
    """Users wrap calls in torch.inference_mode(), which enable_grad cannot lift: guidance runs
    outside it on a copy of the latents, so the images equal those of an ordinary call."""
    kwargs = dict(guidance="syngen", token_groups="auto", num_inference_steps=3)
    expected = run(pipe, **kwargs)
    with torch.inference_mode():
        out = run(pipe, **kwargs)
    assert np.array_equal(out.images, expected.images)
    assert [r.loss for r in out.guidance_records] == [r.loss for r in expected.guidance_records]
    assert not np.array_equal(out.images, run(pipe, num_inference_steps=3).images)  # guided, not plain


def test_given_latents_are_guided_and_need_one_row_per_image(pipe):
    """The latents the generator would draw, given as `latents`, make the same guided images;
    one row for two images is refused before any work (each image is guided by its own maps)."""
    factor = pipe.vae_scale_factor
    shape = (2, pipe.unet.config.in_channels, SIZE // factor, SIZE // factor)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))  # what prepare_latents draws
    kwargs = dict(guidance=SynGen(), num_inference_steps=3)
    reference = run(pipe, PROMPTS, **kwargs)
    given = run(pipe, PROMPTS, latents=noise, **kwargs)
    np.testing.assert_allclose(given.images, reference.images, atol=1e-6)
    assert given.guidance_records[0].loss == pytest.approx(reference.guidance_records[0].loss, abs=1e-6)
    with pytest.raises(ValueError, match=r"latents holds 1 row\(s\) but the guided call makes 2 images \(2 prompt"
                                         r"\(s\) x num_images_per_prompt=1\); pass one row per image \(one row for all: "
                                         r"latents.repeat\(2, 1, 1, 1\)\)"):
        run(pipe, PROMPTS, latents=noise[:1], **kwargs)
