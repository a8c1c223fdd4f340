"""Training data validation, data order, arguments, placeholder embeddings and output files
(no training here; see test_training_e2e.py)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.models.tiny import tiny_pipeline, tiny_tokenizer
from contrastive_diffusers.training.args import build_parser, validate_args
from contrastive_diffusers.training.data import (
    DataError,
    DataStream,
    ImageCaptions,
    fill_placeholders,
    load_examples,
    to_pixels,
)
from contrastive_diffusers.training.embeddings import (
    LearnedEmbeddings,
    add_placeholder_tokens,
)
from contrastive_diffusers.training.args import parse_method_args
from contrastive_diffusers.training.mcpl import MCPL
from contrastive_diffusers.training.reversion import ReVersion
from contrastive_diffusers.training.save import (
    file_names,
    load_learned_embeds,
    save_learned_embeds,
)

# Tiny models gain nothing from threads; on a shared machine extra threads spin.
pytestmark = pytest.mark.usefixtures("single_thread")


def _images(folder, n=2, size=(40, 56)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _reversion(folder, templates=("cat {} basket",), n=2):
    _images(folder, n)
    (folder / "text.json").write_text(json.dumps({f"{i}.png": list(templates) for i in range(n)}))
    return folder


# ----------------------------------------------------------------------------- data validation
def test_both_layouts_load(tmp_path):
    examples = load_examples(_reversion(tmp_path / "r", ["cat {} basket", "dog {} box"]))
    assert [e.path.name for e in examples] == ["0.png", "1.png"] and examples[0].captions == (
        "cat {} basket",
        "dog {} box",
    )
    meta = _images(tmp_path / "m")
    (meta / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "a <c1> on <c2>"}\n\n{"file_name": "1.png", "text": ["x <c1>", "y <c2>"]}\n'
    )
    examples = load_examples(meta)
    assert examples[1].captions == ("x <c1>", "y <c2>")
    filled = fill_placeholders(load_examples(tmp_path / "r"), ["<R>"])
    assert filled[0].captions == ("cat <R> basket", "dog <R> box")


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.write_text("x"), "is a file"),
        (lambda d: d.mkdir(), "No images"),
        (lambda d: _images(d), "no captions"),
        (lambda d: _reversion(d, ["cat basket"]), r"no '\{\}'"),
        (lambda d: (_reversion(d), (d / "metadata.jsonl").write_text("")), "both"),
        (
            lambda d: (_images(d), (d / "text.json").write_text('{"0.png": ["a {}"], "5.png": ["b {}"]}')),
            "5.png: not found",
        ),
        (lambda d: (_images(d), (d / "text.json").write_text('{"0.png": ["a {}"]}')), "1.png in .* have no caption"),
        (
            lambda d: (_images(d), (d / "sub").mkdir(), Image.new("RGB", (8, 8)).save(d / "sub" / "2.png"),
                       (d / "metadata.jsonl").write_text(
                           "".join(f'{{"file_name": "{n}", "text": "a <c>"}}\n' for n in ("0.png", "1.png", "sub/2.png")))),
            "sub/2.png: only images directly in .* not sub-folders",
        ),
        (
            lambda d: (_images(d), Image.new("RGB", (8, 8)).save(d / "2.tiff"), (d / "text.json").write_text(
                '{"0.png": ["a {}"], "1.png": ["a {}"], "2.tiff": ["a {}"]}')),
            r"2.tiff: .tiff is not a format read for training \(.png, .jpg, .jpeg, .webp, .bmp\); convert",
        ),
        (
            lambda d: (_images(d), (d / "metadata.jsonl").write_text('{"file_name": "0.png"}\n')),
            'needs "file_name" and "text"',
        ),
        (lambda d: (_images(d), (d / "metadata.jsonl").write_text("{not json\n")), "line 1 is not valid JSON"),
        (lambda d: (_images(d), (d / "text.json").write_text('{"0.png": [], "1.png": ["a {}"]}')), "non-empty caption"),
    ],
)
def test_data_errors_name_the_problem(tmp_path, setup, match):
    folder = tmp_path / "data"
    setup(folder)
    with pytest.raises(DataError, match=match):
        load_examples(folder)


def test_unreadable_image_is_named(tmp_path):
    folder = _reversion(tmp_path / "d")
    (folder / "1.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"Cannot read the image .*1\.png"):
        load_examples(folder)


def test_placeholder_checks(tmp_path):
    examples = load_examples(_reversion(tmp_path / "d"))
    with pytest.raises(DataError, match="ambiguous with 2 placeholder tokens"):
        fill_placeholders(examples, ["<a>", "<b>"])
    meta = _images(tmp_path / "m")
    (meta / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "a <c1>"}\n{"file_name": "1.png", "text": "a dog"}\n'
    )
    with pytest.raises(DataError, match="'a dog' of 1.png contains no learned token"):
        fill_placeholders(load_examples(meta), ["<c1>"])
    (meta / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "a <c1>"}\n{"file_name": "1.png", "text": "a <c1>"}\n'
    )
    with pytest.raises(DataError, match="<c2> occur in no caption"):
        fill_placeholders(load_examples(meta), ["<c1>", "<c2>"])
    # the default templates of plain textual inversion make a caption-less folder usable
    assert load_examples(_images(tmp_path / "plain"), ["a photo of {}"])[0].captions == ("a photo of {}",)


# ----------------------------------------------------------------------------- data order
def test_stream_is_deterministic_epoch_complete_and_process_split():
    stream = DataStream(5, seed=3)
    first = [stream.example_at(p) for p in range(10)]
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:]) == list(range(5))
    assert first == [DataStream(5, seed=3).example_at(p) for p in range(10)]
    assert first != [DataStream(5, seed=4).example_at(p) for p in range(10)]
    for step in range(4):  # 2 processes x batch 1 read what 1 process x batch 2 reads
        single = stream.positions(step, 2)
        assert stream.positions(step, 1, 2, 0) + stream.positions(step, 1, 2, 1) == single


def test_image_loading_is_seeded_by_position(tmp_path):
    examples = fill_placeholders(load_examples(_reversion(tmp_path / "d", ["a {}", "b {}", "c {}"])), ["<R>"])
    data = ImageCaptions(examples, resolution=32, flip_p=0.5)
    a, b = data.load(0, seed=1, position=7), data.load(0, seed=1, position=7)
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["caption"] == b["caption"]
    assert a["pixel_values"].shape == (3, 32, 32) and -1 <= a["pixel_values"].min() and a["pixel_values"].max() <= 1
    assert a["original_size"] == (40, 56) and a["crop_top_left"][0] == 0  # short side fills the crop
    never, always = ImageCaptions(examples, 32, True, 0.0), ImageCaptions(examples, 32, True, 1.0)
    assert torch.equal(never.load(0, 1, 7)["pixel_values"].flip(-1), always.load(0, 1, 7)["pixel_values"])
    captions = {data.load(0, 1, p)["caption"] for p in range(40)}
    assert captions == {"a <R>", "b <R>", "c <R>"}


def test_images_load_as_displayed(tmp_path):
    """A phone photo's EXIF orientation is applied (as diffusers' load_image and DreamBooth's
    script do), and 16-bit greyscale is scaled to 8 bits, not clipped to white."""
    stored = np.zeros((64, 32, 3), dtype=np.uint8)
    stored[:32] = 255  # stored 32 wide, 64 high: white top half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(stored).save(folder / "0.png", exif=exif)
    grey = np.array([[0, 257 * 128, 65535, 257 * 64 + 100]], dtype=np.uint16).repeat(8, 0).repeat(2, 1)
    Image.fromarray(grey).save(folder / "1.png")  # mode I;16
    (folder / "text.json").write_text('{"0.png": ["a {}"], "1.png": ["a {}"]}')
    data = ImageCaptions(fill_placeholders(load_examples(folder), ["<R>"]), 32, squash=True)
    photo = data.load(0, seed=1, position=0)
    assert photo["original_size"] == (32, 64)  # (height, width) as displayed
    displayed = np.rot90(stored, k=-1)  # clockwise: the white top half becomes the right half
    expected = to_pixels(Image.fromarray(np.ascontiguousarray(displayed)).resize((32, 32), resample=Image.BICUBIC))
    assert torch.equal(photo["pixel_values"], expected) and photo["pixel_values"][:, :, -4:].min() == 1.0
    levels = np.rint(grey[0, ::2] / 257).astype(np.uint8)  # 0, 128, 255, 64
    assert levels.tolist() == [0, 128, 255, 64]
    expected = to_pixels(Image.fromarray(np.repeat(levels.repeat(2)[None, :, None], 8, 0).repeat(3, 2))
                         .resize((32, 32), resample=Image.BICUBIC))
    assert torch.equal(data.load(1, seed=1, position=0)["pixel_values"], expected)


def test_squashed_images_keep_the_whole_picture(tmp_path):
    """--image_fit squash: the whole 56x40 image resized to the square, as the token methods'
    own loaders (diffusers' textual inversion, ReVersion, MCPL) do; --center_crop: its centre square."""
    from PIL import Image

    examples = fill_placeholders(load_examples(_reversion(tmp_path / "d", ["a {}"])), ["<R>"])
    source = Image.open(examples[0].path).convert("RGB")
    squashed = ImageCaptions(examples, 32, squash=True).load(0, seed=1, position=7)
    expected = source.resize((32, 32), resample=Image.BICUBIC)
    assert torch.equal(squashed["pixel_values"], to_pixels(expected))
    assert squashed["original_size"] == (40, 56) and squashed["crop_top_left"] == (0, 0)
    centred = ImageCaptions(examples, 32, center_crop=True, squash=True).load(0, seed=1, position=7)
    expected = source.crop((8, 0, 48, 40)).resize((32, 32), resample=Image.BICUBIC)
    assert torch.equal(centred["pixel_values"], to_pixels(expected))
    assert centred["crop_top_left"] == (0, round(8 * 32 / 40))  # in pixels of the short side scaled to 32


# ----------------------------------------------------------------------------- arguments
def _argv(*extra):
    return ["--pretrained_model_name_or_path", "m", "--train_data_dir", "d", *extra]


def test_method_defaults_and_argument_errors(capsys):
    args = parse_method_args(ReVersion(), _argv(), "reversion")
    assert (args.placeholder_tokens, args.initializer_tokens) == (["<R>"], ["and"])
    assert (
        args.learning_rate,
        args.scale_lr,
        args.train_batch_size,
        args.gradient_accumulation_steps,
        args.max_train_steps,
        args.flip_p,
        args.steering_loss_weight,
        args.steering_temperature,
        args.relation_focal_alpha,
        args.max_grad_norm,
        args.image_fit,
    ) == (2.5e-4, True, 2, 4, 3000, 0.0, 0.01, 0.07, 0.5, 0.0, "squash")  # the authors' code: no clipping
    args = parse_method_args(
        MCPL(),
        _argv(
            "--placeholder_tokens",
            "<c1>, <c2>",
            "--initializer_tokens",
            "circle,square",
            "--bind_adjectives",
            "<c1>:<c2>",
        ),
        "mcpl",
    )
    assert args.placeholder_tokens == ["<c1>", "<c2>"] and args.bind_adjectives == [("<c1>", "<c2>")]
    bad = [
        (ReVersion(), _argv("--placeholder_tokens", "<a>,<b>", "--initializer_tokens", "x,y"), "one relation token"),
        (MCPL(), _argv("--placeholder_tokens", "<a>,<b>", "--initializer_tokens", "x"), "one initializer word per"),
        (
            MCPL(),
            _argv("--placeholder_token", "<a>", "--placeholder_tokens", "<b>", "--initializer_token", "x"),
            "not both",
        ),
        (MCPL(), _argv("--placeholder_tokens", "<a>,<a>", "--initializer_tokens", "x,y"), "distinct"),
        (
            MCPL(),
            _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x", "--bind_adjectives", "<a>:<z>"),
            "not a placeholder",
        ),
        (ReVersion(), _argv("--resolution", "100"), "multiple of 8"),
        (ReVersion(), _argv("--train_batch_size", "0"), "train_batch_size must be a positive"),
        (ReVersion(), _argv("--enable_xformers_memory_efficient_attention"), "needs xformers"),
        (ReVersion(), _argv("--relation_focal_alpha", "1.5"), "relation_focal_alpha"),
        (ReVersion(), _argv("--report_to", "wandb"), "needs the wandb package"),
        (ReVersion(), _argv("--learning_rate", "nan"), "--learning_rate nan: give finite numbers"),
        (ReVersion(), _argv("--max_grad_norm", "inf"), "--max_grad_norm inf: give finite numbers"),
        (MCPL(), _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x", "--promptcl_weight=-inf"),
         "--promptcl_weight -inf"),
        (MCPL(), _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x", "--attn_tokens", "<b>"),
         "--attn_tokens names '<b>', which is not a placeholder token"),
        (MCPL(), _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x", "--attn_tokens", "<a>",
                       "--attn_mask", "none"), "--attn_mask none makes no mask"),
        (MCPL(), _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x", "--promptcl_tokens", "<a>",
                       "--promptcl_weight", "0"), "--promptcl_weight 0 turns it off"),
    ]
    for method, argv, match in bad:
        with pytest.raises(SystemExit) as exit_:
            parse_method_args(method, argv, "prog")
        assert exit_.value.code == 2
        assert match in capsys.readouterr().err, (argv, match)


def test_each_method_defaults_to_its_authors_settings():
    from contrastive_diffusers.training import DCO, TextualInversion

    dco = parse_method_args(DCO(), _argv(), "dco")
    assert (dco.rank, dco.adam_weight_decay, dco.max_grad_norm, dco.image_fit) == (32, 1e-4, 1.0, "crop")
    ti = parse_method_args(TextualInversion(), _argv("--placeholder_token", "<t>", "--initializer_token", "x"), "ti")
    assert (ti.max_grad_norm, ti.image_fit, ti.flip_p) == (0.0, "squash", 0.5)
    mcpl = parse_method_args(MCPL(), _argv("--placeholder_tokens", "<a>", "--initializer_tokens", "x"), "mcpl")
    assert (mcpl.max_grad_norm, mcpl.image_fit) == (0.0, "squash")


def test_common_parser_has_the_diffusers_names():
    names = {a.dest for a in build_parser("p", "d")._actions}
    assert {
        "pretrained_model_name_or_path",
        "train_data_dir",
        "output_dir",
        "placeholder_token",
        "placeholder_tokens",
        "initializer_token",
        "initializer_tokens",
        "resolution",
        "train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "scale_lr",
        "lr_scheduler",
        "max_train_steps",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "resume_from_checkpoint",
        "mixed_precision",
        "gradient_checkpointing",
        "enable_xformers_memory_efficient_attention",
        "seed",
        "validation_prompt",
        "validation_steps",
        "report_to",
    } <= names
    parser = build_parser("p", "d")
    args = validate_args(parser, parser.parse_args(_argv("--placeholder_token", "<x>", "--initializer_token", "y")))
    assert args.output_dir == "p-output"


# ----------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
def test_placeholder_rows_initialise_substitute_and_leave_others(pad):
    pipe = tiny_pipeline("sd2" if pad == "!" else "sd1")
    tok, enc = pipe.tokenizer, pipe.text_encoder
    assert tok.pad_token == pad
    before = enc.get_input_embeddings().weight.detach().clone()
    pieces = tok("zebra", add_special_tokens=False).input_ids
    assert len(pieces) > 1  # a multi-piece initializer: mean of its pieces
    with pytest.warns(UserWarning, match=r"The initializer 'zebra' is \d+ tokenizer pieces .*typo") as caught:
        info, rows = add_placeholder_tokens(tok, enc, ["<z>", "<and>"], ["zebra", "and"])
    assert len(caught) == 1  # "and" is one piece, the placeholders are new strings
    assert info.token_ids == (before.shape[0], before.shape[0] + 1)
    assert torch.allclose(rows[0], before[pieces].mean(0)) and len(info.initializer_pieces[0]) == len(pieces)
    assert torch.equal(enc.get_input_embeddings().weight[: before.shape[0]], before)
    learned = LearnedEmbeddings([enc], [info], [rows], sdxl=False)
    ids = tok(["a <z> and <and>"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert (ids == tok.pad_token_id).sum() > 0
    with torch.no_grad():
        learned.rows[0].add_(1.0)
        emb = enc.get_input_embeddings()(ids)
    z = (ids[0] == info.token_ids[0]).nonzero().item()
    assert torch.allclose(emb[0, z], rows[0] + 1.0)
    others = ~torch.isin(ids[0], torch.tensor(info.token_ids))
    assert torch.equal(emb[0, others], before[ids[0, others]])  # padding ("!" for SD2) included
    learned.remove_hooks()
    assert torch.equal(enc.get_input_embeddings()(ids)[0, z], rows[0])
    with pytest.raises(ValueError, match="already in the tokenizer"):
        add_placeholder_tokens(tok, enc, ["<z>"], ["cat"])
    # a placeholder the tokenizer reads as a known word: every prompt with that word would change
    with pytest.warns(UserWarning, match="The placeholder token 'cat' is a word the tokenizer already knows"):
        add_placeholder_tokens(tok, enc, ["cat"], ["dog"])


# ----------------------------------------------------------------------------- saved files
def test_file_names_are_safe_and_distinct():
    assert file_names(["<c1>", "<C1>", "a/b", "<>", "<c1>x"]) == ["c1", "C1-2", "a-b", "token", "c1-x"]


def test_saved_files_load_with_stock_diffusers(tmp_path):
    rows = torch.randn(2, 32)
    files = save_learned_embeds(tmp_path / "two", ["<c1>", "<c2>"], [rows], ["a", "b"])
    assert [f.name for f in files] == ["learned_embeds-c1.safetensors", "learned_embeds-c2.safetensors"]
    pipe = tiny_pipeline("sd1")
    pipe.load_textual_inversion([str(f) for f in files])
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(weight[pipe.tokenizer.convert_tokens_to_ids("<c2>")], rows[1])
    save_learned_embeds(tmp_path / "one", ["<R>"], [rows[:1]])
    assert (tmp_path / "one" / "learned_embeds.safetensors").exists()
    pipe = tiny_pipeline("sd1")
    assert load_learned_embeds(pipe, tmp_path / "one") == ["<R>"]
    manifest = json.loads((tmp_path / "two" / "learned_embeds.json").read_text())
    assert manifest["tokens"][1] == {
        "token": "<c2>",
        "files": {"text_encoder": "learned_embeds-c2.safetensors"},
        "initializer_token": "b",
    }
    assert tiny_tokenizer().convert_tokens_to_ids("<R>") == tiny_tokenizer().unk_token_id


def test_a_token_inside_a_longer_token_does_not_count():
    from contrastive_diffusers.training.data import _tokens_in

    assert _tokens_in("a <c10> and a box", ["<c1>", "<c10>"]) == {"<c10>"}
    assert _tokens_in("<c1> beside <c10>", ["<c1>", "<c10>"]) == {"<c1>", "<c10>"}
