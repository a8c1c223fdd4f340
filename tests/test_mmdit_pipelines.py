"""The guided SD3 and Flux pipelines on tiny random models: plain equals stock, every method
lowers its loss in the large majority of updates and changes the output, batches,
num_images_per_prompt, fractions of the trajectory, low precision, errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from contrastive_diffusers.guidance import AttendAndExcite, Conform, get_method
from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.pipelines import GuidedFluxPipeline, GuidedStableDiffusion3Pipeline

PROMPT = "a red car and a blue bench"
GROUPS = [["red", "car"], ["blue", "bench"]]
STEPS = 8
KINDS = {"sd3": GuidedStableDiffusion3Pipeline, "flux": GuidedFluxPipeline}
# Flux always defaults to 1024 px; 128 px keeps the tiny model's 8x8 patch grid. A short T5
# sequence keeps the tiny forward cheap; both are ordinary arguments of the stock call.
SIZE = {"sd3": {}, "flux": {"height": 128, "width": 128, "max_sequence_length": 32}}


@pytest.fixture(scope="module")
def pipes():
    return {kind: cls.from_pipe(tiny_pipeline(kind)) for kind, cls in KINDS.items()}


def _call(pipe, kind, seed=0, **kwargs):
    kwargs = {"prompt": PROMPT, "num_inference_steps": STEPS, **SIZE[kind], **kwargs}
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return pipe(output_type="latent", **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_plain_call_equals_the_stock_pipeline(pipes, kind):
    stock_class = StableDiffusion3Pipeline if kind == "sd3" else FluxPipeline
    stock = stock_class(**pipes[kind].components)
    prompts = [PROMPT, "a green cat"]
    stock_out = _call(stock, kind, prompt=prompts, num_images_per_prompt=2, generator=torch.Generator().manual_seed(3))
    out = _call(pipes[kind], kind, prompt=prompts, num_images_per_prompt=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.images, stock_out.images) and isinstance(out, type(stock_out))
    assert out.guidance_records is None and out.token_groups is None


@pytest.mark.parametrize("method", ["attend_and_excite", "conform", "ebama", "syngen"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_method_lowers_its_loss_and_changes_the_output(pipes, kind, method):
    # The descent direction is under test, so a step (5) that does not overshoot on these
    # tiny models. Their sharpened maps saturate A&E's softmax of 100 x maps (a one-hot
    # softmax has no gradient: the loss stays put), so A&E reads them at 25 x here.
    extra = {"softmax_temperature": 25.0} if method == "attend_and_excite" else {}
    # Two refinement iterations instead of 20 keep the test fast; every update is counted.
    guidance = get_method(method, **extra).with_schedule(step_size=5.0, refinement_iterations=2)
    prompts = [PROMPT, "a yellow dog and a black hat"]
    groups = [GROUPS, [["yellow", "dog"], ["black", "hat"]]]
    plain = _call(pipes[kind], kind, prompt=prompts).images
    out = _call(pipes[kind], kind, prompt=prompts, guidance=guidance, token_groups=groups,
                record_loss_after_update=True)
    pairs = [
        (before, after)
        for record in out.guidance_records
        for before, after, updated in zip(record.loss, record.loss_after_update, record.updated)
        if updated
    ]
    lower = sum(after < before for before, after in pairs)
    assert len(pairs) >= 6 and lower >= 0.8 * len(pairs), (lower, len(pairs))
    assert not any(s for record in out.guidance_records for s in record.skipped_nonfinite)
    assert (out.images - plain).abs().amax(dim=(1, 2, 3) if kind == "sd3" else (1, 2)).min() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_batches_and_images_per_prompt(pipes, kind):
    prompts = [PROMPT, "a yellow dog and a black hat"]
    out = _call(pipes[kind], kind, prompt=prompts, num_images_per_prompt=2, guidance="ebama",
                token_groups=[GROUPS, "auto"], return_attention_maps=True)
    assert out.images.shape[0] == 4
    assert [[g.words for g in groups] for groups in out.token_groups] == [
        [("red", "car"), ("blue", "bench")], [("yellow", "dog"), ("black", "hat")]
    ]
    first = out.attention_maps[0]
    tokens = 77 if kind == "sd3" else 33  # SD3 reads CLIP's 77; Flux T5's 32 after a placeholder slot
    assert first.shape == (4, 8, 8, tokens) and first.dtype == torch.float32
    torch.testing.assert_close(first.sum(-1), torch.ones(4, 8, 8), atol=1e-5, rtol=0)  # a softmax per image token
    assert all(len(record.loss) == 4 for record in out.guidance_records)
    # A prompt's two images start from different noise, so guidance moves them differently.
    assert not torch.allclose(out.images[0], out.images[1])


def test_token_positions_are_per_sequence(pipes):
    sd3, flux = pipes["sd3"], pipes["flux"]
    clip = _call(sd3, "sd3", guidance="syngen", token_groups=GROUPS, num_inference_steps=2)
    assert [g.word_positions for g in clip.token_groups[0]] == [((2,), (3,)), ((6,), (7,))]
    t5 = _call(sd3, "sd3", guidance="syngen", token_groups=GROUPS, text_sequence="t5", max_sequence_length=32,
               return_attention_maps=True)
    assert t5.attention_maps[0].shape[-1] == 33 and torch.all(t5.attention_maps[0][..., 0] == 0)
    pieces = flux.tokenizer_2.convert_ids_to_tokens(flux.tokenizer_2(PROMPT).input_ids)
    out = _call(flux, "flux", guidance="syngen", token_groups=GROUPS)
    for group in out.token_groups[0]:
        for word, positions in zip(group.words, group.word_positions):
            assert "".join(pieces[p - 1] for p in positions).lstrip("▁") == word


@pytest.mark.parametrize("kind", KINDS)
def test_schedule_is_a_fraction_of_the_trajectory(pipes, kind):
    out = _call(pipes[kind], kind, guidance=AttendAndExcite(max_refinement_steps=0))
    # max_iter_to_alter=25 of the paper's 50 steps is half the trajectory: steps 0-3 of 8.
    assert [r.step for r in out.guidance_records] == [0, 1, 2, 3]
    absolute = _call(pipes[kind], kind, guidance=AttendAndExcite(max_refinement_steps=0, max_iter_to_alter=2),
                     absolute_steps=True)
    assert [r.step for r in absolute.guidance_records] == [0, 1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_stays_finite_with_float32_losses(kind, dtype):
    # Its own model: from_pipe(torch_dtype=...) casts the shared components in place.
    pipe = KINDS[kind].from_pipe(tiny_pipeline(kind), torch_dtype=dtype)
    out = _call(pipe, kind, guidance=Conform(refinement_iterations=2), token_groups=GROUPS, return_attention_maps=True)
    assert out.images.dtype == dtype and torch.isfinite(out.images.float()).all()
    assert out.attention_maps[0].dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(r.loss)).all() for r in out.guidance_records)


def test_flux_true_cfg_and_blocks_and_user_callback(pipes):
    steps = []

    def callback(pipe, i, t, kwargs):
        steps.append(i)
        return kwargs

    out = _call(pipes["flux"], "flux", guidance="ebama", token_groups=GROUPS, negative_prompt="blurry",
                true_cfg_scale=2.0, blocks=["transformer_blocks.1", "single_transformer_blocks.0"],
                callback_on_step_end=callback)
    assert steps == list(range(STEPS)) and len(out.guidance_records) == 4
    assert torch.isfinite(out.images).all()


def test_bad_input_is_refused_with_the_fix(pipes):
    with pytest.raises(ValueError, match="Word 'truck'.*not in the prompt"):
        _call(pipes["flux"], "flux", guidance="ae", token_groups=[["truck"]])
    with pytest.raises(ValueError, match="max_sequence_length"):
        _call(pipes["flux"], "flux", guidance="ae", prompt=" ".join(["red"] * 40))
    with pytest.raises(ValueError, match="No joint-attention block 9"):
        _call(pipes["sd3"], "sd3", guidance="ae", blocks=[9])
    with pytest.raises(ValueError, match="text_sequence must be"):
        _call(pipes["sd3"], "sd3", guidance="ae", text_sequence="clip-g")
    from contrastive_diffusers.pipelines import GuidanceCallback

    with pytest.raises(ValueError, match="has no UNet.*GuidedStableDiffusion3Pipeline.from_pipe"):
        GuidanceCallback(pipes["sd3"], "ae", PROMPT, token_groups=GROUPS)


@pytest.mark.parametrize("kind", KINDS)
def test_a_mistyped_keyword_fails_before_any_guidance_work(pipes, kind):
    """The stock call takes no **kwargs: a typo fails there at once, and here before step 0."""
    pipe = pipes[kind]
    forwards = []
    hook = pipe.transformer.register_forward_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(TypeError, match="unexpected keyword argument 'num_inference_step'"):
            _call(pipe, kind, guidance=Conform(), token_groups=GROUPS, num_inference_step=3)
    finally:
        hook.remove()
    assert forwards == []


@pytest.mark.parametrize("variant", ["sd35", "flux-schnell"])
def test_sd35_dual_attention_and_flux_schnell_are_guided(variant):
    kind = "flux" if variant.startswith("flux") else "sd3"
    pipe = KINDS[kind].from_pipe(tiny_pipeline(variant))
    plain = _call(pipe, kind, num_inference_steps=4).images
    out = _call(pipe, kind, num_inference_steps=4, guidance="syngen", token_groups=GROUPS, record_loss_after_update=True)
    assert [r.step for r in out.guidance_records] == [0, 1]
    assert all(after < before for r in out.guidance_records for before, after in zip(r.loss, r.loss_after_update))
    assert (out.images - plain).abs().max() > 1e-3


def _encoded(pipe, kind, prompt):
    """``prompt_embeds`` / ``pooled_prompt_embeds`` as a user would make them with encode_prompt."""
    if kind == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt, None, None, do_classifier_free_guidance=False, max_sequence_length=pipe.default_max_sequence_length()
        )
    else:
        embeds, pooled, _ = pipe.encode_prompt(prompt, None, max_sequence_length=SIZE["flux"]["max_sequence_length"])
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


@pytest.mark.parametrize("kind", KINDS)
def test_given_prompt_embeds_are_the_ones_sampled_and_guided(pipes, kind):
    """The prompt names the token groups; given embeddings (edited, weighted) are what the
    model reads, in the guidance forward and in the stock loop."""
    pipe = pipes[kind]
    kwargs = dict(guidance="syngen", token_groups=GROUPS, num_inference_steps=4)
    reference = _call(pipe, kind, **kwargs)
    same = _call(pipe, kind, **kwargs, **_encoded(pipe, kind, PROMPT))
    torch.testing.assert_close(same.images, reference.images, atol=1e-4, rtol=1e-4)
    other = _call(pipe, kind, **kwargs, **_encoded(pipe, kind, "a green cat and a yellow hat"))
    assert (other.images - reference.images).abs().max() > 1e-3
    assert other.guidance_records[0].loss != reference.guidance_records[0].loss
    one_row = _encoded(pipe, kind, PROMPT)
    with pytest.raises(ValueError, match="hold 1 rows but the guided call makes 2 images"):
        _call(pipe, kind, **{**kwargs, "token_groups": "auto"}, prompt=[PROMPT, PROMPT], **one_row)
    with pytest.raises(ValueError, match="prompt_embeds and pooled_prompt_embeds together"):
        _call(pipe, kind, **kwargs, prompt_embeds=one_row["prompt_embeds"])


@pytest.mark.parametrize("kind", KINDS)
def test_given_latents_need_one_row_per_image(pipes, kind):
    """Stock Flux broadcasts one latents row over the images and SD3 fails deep inside; the
    guided call guides each image by its own maps, so it asks for one row per image."""
    pipe = pipes[kind]
    drawn = _call(pipe, kind, num_inference_steps=1)  # latents as the pipeline takes them (Flux: packed)
    one_row = torch.zeros_like(drawn.images[:1])
    with pytest.raises(ValueError, match=r"latents holds 1 row\(s\) but the guided call makes 2 images"):
        _call(pipe, kind, guidance="syngen", token_groups=GROUPS, latents=one_row, num_images_per_prompt=2)


@pytest.mark.parametrize("kind, name, options", [
    ("flux", "prompt_2", {}), ("sd3", "prompt_2", {}), ("sd3", "prompt_3", {"text_sequence": "t5"}),
])
def test_a_second_prompt_the_loss_would_read_is_refused(pipes, kind, name, options):
    # token groups are found in `prompt`; the loss reads the text encoded from `name`
    with pytest.raises(ValueError, match=f"encoded from `{name}`"):
        _call(pipes[kind], kind, guidance="syngen", token_groups=GROUPS, **{name: "a dog"}, **options)
    same = _call(pipes[kind], kind, guidance="syngen", token_groups=GROUPS, num_inference_steps=2, **{name: PROMPT},
                 **options)
    assert torch.isfinite(same.images).all()  # the same text: guided as without it


def test_flux_embeddings_of_another_length_and_one_row_negatives(pipes, caplog):
    flux = pipes["flux"]
    embeds = _encoded(flux, "flux", PROMPT)
    with pytest.raises(ValueError, match="hold 32 T5 tokens, but max_sequence_length is 48"):
        _call(flux, "flux", guidance="syngen", token_groups=GROUPS, **embeds, max_sequence_length=48)
    # true CFG with one row of negative embeddings for two images of the prompt, as stock broadcasts it
    negative, negative_pooled, _ = flux.encode_prompt("blurry", None, max_sequence_length=32)
    out = _call(flux, "flux", guidance="syngen", token_groups=GROUPS, num_inference_steps=2, num_images_per_prompt=2,
                true_cfg_scale=2.0, negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
    by_text = _call(flux, "flux", guidance="syngen", token_groups=GROUPS, num_inference_steps=2,
                    num_images_per_prompt=2, true_cfg_scale=2.0, negative_prompt="blurry")
    torch.testing.assert_close(out.images, by_text.images, atol=1e-4, rtol=1e-4)
    with caplog.at_level("WARNING"):
        _call(flux, "flux", guidance="syngen", token_groups=GROUPS, num_inference_steps=1, return_attention_maps=True,
              return_dict=False)
    assert "has no effect with return_dict=False" in caplog.text


def test_inputs_the_maps_cannot_follow_are_refused(pipes):
    flux = pipes["flux"]
    mask = torch.ones(1, 32 + 64, dtype=torch.bool)
    with pytest.raises(ValueError, match="attention_mask in joint_attention_kwargs"):
        _call(flux, "flux", guidance="syngen", token_groups=GROUPS, joint_attention_kwargs={"attention_mask": mask})
    with pytest.raises(ValueError, match="does not support IP-Adapter inputs"):
        _call(flux, "flux", guidance="syngen", token_groups=GROUPS, negative_ip_adapter_image_embeds=[mask])


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_checkpointing_changes_nothing_and_stays_on(kind):
    pipe = KINDS[kind].from_pipe(tiny_pipeline(kind))
    kwargs = dict(guidance=get_method("syngen").with_schedule(step_size=5.0), token_groups=GROUPS,
                  num_inference_steps=3)
    plain = _call(pipe, kind, **kwargs).images
    pipe.transformer.enable_gradient_checkpointing()
    for truncate in (True, False):
        assert torch.equal(_call(pipe, kind, truncate_guidance_forward=truncate, **kwargs).images, plain)
    assert pipe.transformer.is_gradient_checkpointing


@pytest.mark.parametrize("kind", KINDS)
def test_model_cpu_offload_guides_as_without_it(pipes, kind):
    """Under diffusers' model offload hooks the guidance forward runs whole (no truncation) and
    gives the images of the pipeline without offload; the CPU is the named offload device."""
    kwargs = dict(guidance="attend_and_excite", token_groups=GROUPS, num_inference_steps=3)
    expected = _call(pipes[kind], kind, **kwargs).images
    pipe = KINDS[kind].from_pipe(tiny_pipeline(kind))
    pipe.enable_model_cpu_offload(device="cpu")
    assert torch.equal(_call(pipe, kind, **kwargs).images, expected)
    assert hasattr(pipe.transformer, "_hf_hook")


@pytest.mark.parametrize("kind", KINDS)
def test_a_lora_scale_guides_alike_truncated_or_not_and_leaves_the_adapters_as_they_were(kind):
    """joint_attention_kwargs={"scale": s}: the stopped guidance forward puts the adapters'
    scalings back (diffusers before 0.37 would have left them scaled)."""
    from peft import LoraConfig

    from contrastive_diffusers.guidance.engine import lora_layers

    images = {}
    for truncate in (True, False):
        pipe = KINDS[kind].from_pipe(tiny_pipeline(kind))
        torch.manual_seed(0)
        pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                target_modules=["to_q", "to_k", "to_v"]))
        scalings = [dict(layer.scaling) for layer in lora_layers(pipe.transformer)]
        images[truncate] = _call(pipe, kind, guidance="syngen", token_groups=GROUPS, num_inference_steps=3,
                                 joint_attention_kwargs={"scale": 0.5}, truncate_guidance_forward=truncate).images
        assert [dict(layer.scaling) for layer in lora_layers(pipe.transformer)] == scalings
    torch.testing.assert_close(images[True], images[False], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_layerwise_casting_guides_as_the_same_weights_without_it(kind):
    """float8 storage under enable_layerwise_casting: guided as the float8-rounded weights are
    without it (the guidance backward needs them in their compute dtype while guiding)."""
    from contrastive_diffusers.guidance.engine import layerwise_casting_hooks

    pipe = KINDS[kind].from_pipe(tiny_pipeline(kind))
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    hooked = dict(layerwise_casting_hooks(pipe.transformer))
    cast = {name for name, module in pipe.transformer.named_modules() if module in hooked}
    assert cast
    reference = KINDS[kind].from_pipe(tiny_pipeline(kind))
    for name, module in reference.transformer.named_modules():
        if name in cast:
            module.to(torch.float8_e4m3fn).to(torch.float32)
    kwargs = dict(guidance="syngen", token_groups=GROUPS, num_inference_steps=3)
    assert torch.equal(_call(pipe, kind, **kwargs).images, _call(reference, kind, **kwargs).images)


def test_second_order_schedulers_and_caches_are_refused_with_the_fix(pipes):
    from diffusers import FirstBlockCacheConfig, FlowMatchHeunDiscreteScheduler

    heun = KINDS["sd3"].from_pipe(pipes["sd3"])
    heun.scheduler = FlowMatchHeunDiscreteScheduler.from_config(heun.scheduler.config)
    fix = "pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config"  # the first-order kind of this model
    with pytest.raises(ValueError, match=f"FlowMatchHeunDiscreteScheduler is a solver of order 2.*{fix}"):
        _call(heun, "sd3", guidance="ae", token_groups=GROUPS)
    # A cache skips blocks whose input barely changed: the guidance gradient would skip them too.
    cached = GuidedFluxPipeline.from_pipe(tiny_pipeline("flux"))
    cached.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(ValueError, match="cache enabled.*disable_cache"):
        _call(cached, "flux", guidance="ae", token_groups=GROUPS)
    assert torch.isfinite(_call(cached, "flux", num_inference_steps=2).images).all()  # plain calls keep it


def test_flux_guidance_works_under_inference_mode(pipes):
    kwargs = dict(guidance="syngen", token_groups=GROUPS, num_inference_steps=2)
    expected = _call(pipes["flux"], "flux", **kwargs)
    with torch.inference_mode():
        out = _call(pipes["flux"], "flux", **kwargs)
    assert torch.equal(out.images, expected.images) and out.guidance_records[0].updated == [True]
