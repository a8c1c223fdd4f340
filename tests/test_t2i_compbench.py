"""T2I-CompBench's judges: noun phrases and questions by the official script's rules, the
B-VQA arithmetic on constructed answers, a tiny random BLIP VQA (real config shape, saved and
loaded by path) through the judge, and ``bench --judge t2i-compbench`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.cli import main
from contrastive_diffusers.eval.judges import load_judge
from contrastive_diffusers.eval.judges.blip_vqa import BlipYesNo, pre_question
from contrastive_diffusers.eval.judges.phrases import PhraseSplitter, rule_noun_phrases
from contrastive_diffusers.eval.judges.t2i_compbench import T2ICompBenchJudge, product_score

pytestmark = pytest.mark.usefixtures("single_thread")

VQA_WORDS = "a an the red blue green car dog cat bench apple bowl yes no and with".split()


def tiny_blip_vqa(seed: int = 0, hub_layout: bool = False):
    """A tiny random ``BlipForQuestionAnswering`` (32 px) and its processor: a BERT WordPiece
    tokenizer with BLIP's ``[DEC]`` / ``[ENC]`` tokens and the answers "yes" and "no". With
    ``hub_layout`` as the hub's converted checkpoints: the tokenizer lacks both tokens, and the
    model's vocabulary has two rows after it, ``[DEC]`` (its bos) and ``[ENC]``."""
    import transformers
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipProcessor

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ([] if hub_layout else ["[DEC]", "[ENC]"])
    vocab = {t: i for i, t in enumerate(special + VQA_WORDS)}
    tokenizer = BertTokenizer(vocab=vocab) if hub_layout else BertTokenizer(vocab=vocab, bos_token="[DEC]")
    bos = len(vocab) if hub_layout else tokenizer.bos_token_id
    text = dict(vocab_size=len(vocab) + 2 * hub_layout, hidden_size=32, intermediate_size=64, projection_dim=32,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, initializer_range=0.1,
                bos_token_id=bos, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8, initializer_range=0.02)
    torch.manual_seed(seed)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)
    model = BlipForQuestionAnswering(config).eval()
    image_processor = getattr(transformers, "BlipImageProcessorPil", transformers.BlipImageProcessor)(
        size={"height": 32, "width": 32})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-blip-vqa")
    for part in tiny_blip_vqa():
        part.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images():
    return [Image.fromarray(np.random.RandomState(i).randint(0, 256, (40, 48, 3)).astype(np.uint8)) for i in range(4)]


def _judge(vqa_dir, **kw):
    return T2ICompBenchJudge(vqa_model=str(vqa_dir), device="cpu", phrase_splitter="rules", image_size=None, **kw)


# --- phrases and questions: the official script's rules -----------------------------------------


@pytest.mark.parametrize("prompt, phrases", [
    # the attribute-binding grammar: spaCy's noun chunks, determiners kept
    ("a green bench and a red car", ["a green bench", "a red car"]),
    ("an oblong cucumber and a teardrop plum", ["an oblong cucumber", "a teardrop plum"]),
    ("rubber sole shoes and fluffy clouds", ["rubber sole shoes", "fluffy clouds"]),
    ("a plastic phone case and a fabric bag", ["a plastic phone case", "a fabric bag"]),
    # longer sentences: prepositions, verbs in -ing, forms of "be", possessives, punctuation
    ("A bathroom with white tile and a beige toilet.", ["A bathroom", "white tile", "a beige toilet"]),
    ("a girl on the top of a frog", ["a girl", "the top", "a frog"]),
    ("A dog is chasing after a ball and wagging its tail.", ["A dog", "a ball", "its tail"]),
    ("a black gold and white vase sitting on a counter", ["a black gold", "white vase", "a counter"]),
    ("The wedding ring is on the table", ["The wedding ring", "the table"]),  # -ing nouns stay
    # "-ing" words: verbs where no noun can follow, after "be", or in a row of "-ing" verbs;
    # modifiers of the noun after them otherwise
    ("a circular dining table and a square cutting board", ["a circular dining table", "a square cutting board"]),
    ("a man riding a horse", ["a man", "a horse"]),
    ("a clearing in the woods", ["a clearing", "the woods"]),
    ("A person is yawning in a boring meeting.", ["A person", "a boring meeting"]),
    ("A person is playing guitar on the beach.", ["A person", "guitar", "the beach"]),
    ("A woman is holding a camera and taking photos.", ["A woman", "a camera", "photos"]),
    ("a duckling swimming in a pond", ["a duckling", "a pond"]),
    ("white commode and matching white sink", ["white commode", "matching white sink"]),
    ("", []),
])
def test_rule_noun_phrases(prompt, phrases):
    assert rule_noun_phrases(prompt) == phrases


def test_questions_follow_the_official_script(vqa_dir):
    judge = _judge(vqa_dir, max_phrases=2)
    assert judge.splitter.name == "rules"
    # "{chunk}?" for the first np_num chunks; BLIP's pre_question lower-cases and drops . ! etc., keeps "?"
    assert judge.questions("A red car, a blue dog and a green cat.") == ["A red car?", "a blue dog?"]
    # the official script drops "top", "the side", "the left", "the right" before it counts
    assert _judge(vqa_dir).questions("a dog on the left of a cat on top of the side of a box") == [
        "a dog?", "a cat?", "a box?"]
    assert judge.questions("the left of the right of a cat and a dog") == ["a cat?", "a dog?"]
    assert pre_question("A red car?") == "a red car?"
    assert pre_question('The "big" (red) car: done!') == "the big red car done"
    with pytest.raises(ValueError, match="phrase splitter"):
        PhraseSplitter("nltk")


def test_product_score_rounds_each_answer_like_the_official_files():
    # '{:.4f}' per phrase, product, '{:.4f}' again: 0.81237 -> 0.8124, 0.50004 -> 0.5000
    assert product_score([0.81237, 0.50004]) == pytest.approx(0.4062)
    assert product_score([0.9, 0.8, 0.5]) == pytest.approx(0.36)
    assert product_score([0.99996, 0.99996]) == 1.0  # each rounds to 1.0000 first
    assert product_score([]) == 1.0  # no noun phrase: every question blank, each "reward" 1


class FixedAnswers:
    """A stand-in VQA model: P(yes) from a table of questions, to check the judge's arithmetic."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def yes_probability(self, images, questions):
        self.asked.append(questions)
        return [[self.table[q] for q in qs] for qs in questions]

    def settings(self):
        return {"vqa_model": "fixed"}


def test_bvqa_multiplies_phrase_answers_and_tables_by_category(images):
    table = {"a red car?": 0.9, "a blue bench?": 0.5, "a green apple?": 0.25, "a bowl?": 0.8}
    stub = FixedAnswers(table)
    judge = T2ICompBenchJudge(vqa_model=stub, clip_model=None, device="cpu", phrase_splitter="rules")
    records = [
        {"method": "none", "prompt": "a red car and a blue bench", "category": "color"},
        {"method": "none", "prompt": "a green apple with a bowl", "category": "color"},
        {"method": "none", "prompt": "a red car on the left of a blue bench", "category": "spatial"},
        {"method": "x", "prompt": "a red car and a blue bench", "category": None},
    ]
    results = judge.score(images, records)
    assert [r["metrics"]["bvqa"] for r in results] == [pytest.approx(0.45), pytest.approx(0.2), None,
                                                        pytest.approx(0.45)]
    assert results[0]["details"] == {"questions": ["a red car?", "a blue bench?"], "p_yes": [0.9, 0.5]}
    assert "UniDet" in results[2]["details"]["skipped"] and results[2]["metrics"] == {"bvqa": None, "t2i_clip": None}
    assert stub.asked == [[["a red car?", "a blue bench?"], ["a green apple?", "a bowl?"], ["a red car?", "a blue bench?"]]]
    for record, result in zip(records, results):
        record.update(metrics=result["metrics"], judges={"t2i-compbench": result}, status="ok")
    table = judge.summarize(records)
    assert table["columns"] == ["method", "color (B-VQA)", "spatial (not covered)", "all (B-VQA)"]
    assert table["rows"] == [["none", pytest.approx(0.325), None, None], ["x", None, None, pytest.approx(0.45)]]
    assert any("spatial (UniDet)" in note for note in table["notes"])


# --- the tiny BLIP VQA through the judge ---------------------------------------------------------


def test_tiny_vqa_shapes_batching_and_determinism(vqa_dir, images):
    questions = [["a red car?", "a blue bench and a green cat?"], ["the dog?"], [], ["a bowl?", "an apple?", "a cat?"]]
    answers = [BlipYesNo.from_pretrained(vqa_dir, torch.device("cpu"), torch.float32, batch_size=size,
                                         image_size=None).yes_probability(images, questions)
               for size in (1, 2, 4)]
    assert [len(a) for a in answers[0]] == [2, 1, 0, 3]
    flat = [p for a in answers[0] for p in a]
    assert all(0 < p < 1 for p in flat) and len(set(flat)) == len(flat)
    for other in answers[1:]:  # batching equals one by one
        np.testing.assert_allclose([p for a in other for p in a], flat, rtol=1e-5, atol=1e-6)
    vqa = BlipYesNo.from_pretrained(vqa_dir, torch.device("cpu"), torch.float32, image_size=None)
    assert vqa.yes_probability(images, questions) == vqa.yes_probability(images, questions)
    assert vqa.settings() == {"vqa_model": str(vqa_dir), "image_size": 32, "question_start": "[ENC]"}


def test_tiny_vqa_matches_the_official_computation(vqa_dir, images):
    """P(yes) as BLIP's vqa_prob computes it, written out on the model's parts: [ENC] question
    over the image, one [DEC] step, softmax over the vocabulary, yes / (yes + no)."""
    model, processor = tiny_blip_vqa()
    tok = processor.tokenizer
    with torch.no_grad():
        pixels = processor.image_processor(images[:1], return_tensors="pt")["pixel_values"]
        image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
        ids = tok(["a red car?"], return_tensors="pt").input_ids
        ids[:, 0] = tok.convert_tokens_to_ids("[ENC]")
        question = model.text_encoder(input_ids=ids, encoder_hidden_states=image_embeds).last_hidden_state
        logits = model.text_decoder(input_ids=torch.tensor([[tok.bos_token_id]]), encoder_hidden_states=question).logits
        probs = logits[0, 0].softmax(-1)
    yes, no = probs[tok.convert_tokens_to_ids("yes")], probs[tok.convert_tokens_to_ids("no")]
    vqa = BlipYesNo(model, processor, torch.device("cpu"), torch.float32, image_size=None)
    assert vqa.yes_probability(images[:1], [["A red car?"]])[0][0] == pytest.approx(float(yes / (yes + no)), abs=1e-6)


def test_hub_tokenizers_without_enc_start_questions_with_its_row(images):
    """The hub's BLIP tokenizers are bert-base-uncased alone; [ENC] is the embedding row after
    [DEC] (the bos), not [CLS] as in transformers' own forward."""
    model, processor = tiny_blip_vqa(hub_layout=True)
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("[ENC]") == tok.unk_token_id
    vqa = BlipYesNo(model, processor, torch.device("cpu"), torch.float32, image_size=None)
    enc = model.config.text_config.bos_token_id + 1
    assert (vqa.question_start, vqa.question_start_id) == ("[ENC]", enc) and enc == len(tok) + 1
    with torch.no_grad():
        pixels = processor.image_processor(images[:1], return_tensors="pt")["pixel_values"]
        image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def p_yes(first):
        ids = tok(["a red car?"], return_tensors="pt").input_ids
        ids[:, 0] = first
        question = model.text_encoder(input_ids=ids, encoder_hidden_states=image_embeds).last_hidden_state
        start = torch.tensor([[model.config.text_config.bos_token_id]])
        probs = model.text_decoder(input_ids=start, encoder_hidden_states=question).logits[0, 0].softmax(-1)
        yes, no = probs[tok.convert_tokens_to_ids("yes")], probs[tok.convert_tokens_to_ids("no")]
        return float(yes / (yes + no))

    answer = vqa.yes_probability(images[:1], [["a red car?"]])[0][0]
    assert answer == pytest.approx(p_yes(enc), abs=1e-6)
    assert abs(answer - p_yes(tok.cls_token_id)) > 1e-4  # the row matters
    # a vocabulary without BLIP's two extra rows keeps [CLS]
    model.config.text_config.vocab_size -= 1
    assert BlipYesNo(model, processor, torch.device("cpu"), torch.float32).question_start == "[CLS]"


def test_judge_on_the_tiny_vqa(vqa_dir, images):
    judge = _judge(vqa_dir, clip_model=None)
    records = [{"prompt": "a red car and a blue bench", "category": "color"},
               {"prompt": "a green apple with a bowl", "category": "texture"}]
    results = judge.score(images[:2], records)
    for result in results:
        assert result["metrics"]["bvqa"] == pytest.approx(product_score(result["details"]["p_yes"]))
        assert len(result["details"]["questions"]) == 2
    assert judge.score(images[:2], records) == results
    assert judge.settings() == {"name": "t2i-compbench", "vqa_model": str(vqa_dir), "image_size": 32,
                                "question_start": "[ENC]", "clip_model": None, "phrase_splitter": "rules",
                                "max_phrases": 8, "skipped_phrases": ["the left", "the right", "the side", "top"]}
    with pytest.raises(ValueError, match="needs a CLIP model"):
        judge.score(images[:1], [{"prompt": "a dog is running", "category": "non_spatial"}])


def test_non_spatial_is_clip_cosine(vqa_dir, images, tiny_clip_dir):
    from contrastive_diffusers.eval import ClipScorer

    judge = _judge(vqa_dir, clip_model=str(tiny_clip_dir))
    prompts = ["a dog is running", "a cat is sleeping"]
    results = judge.score(images[:2], [{"prompt": p, "category": "non_spatial"} for p in prompts])
    scorer = ClipScorer.from_pretrained(tiny_clip_dir, device="cpu")
    image_embeds = scorer.image_embeddings(images[:2])
    text_embeds = scorer.text_embeddings(prompts)
    cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds).tolist()
    assert [r["metrics"]["t2i_clip"] for r in results] == pytest.approx(cosine, abs=1e-5)
    assert all(r["metrics"]["bvqa"] is None for r in results)


def test_load_judge_errors(tmp_path, vqa_dir):
    with pytest.raises(ValueError, match="known judges are: geneval, t2i-compbench"):
        load_judge("t2i_compbench")
    with pytest.raises(OSError, match="cannot load the BLIP VQA model"):
        load_judge("t2i-compbench", vqa_model=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ValueError, match="max_phrases"):
        _judge(vqa_dir, max_phrases=0)


# --- bench end to end -----------------------------------------------------------------------------


def test_bench_with_the_t2i_compbench_judge(tmp_path, vqa_dir, tiny_clip_dir):
    prompts = tmp_path / "color_val.txt"
    prompts.write_text("a red car and a blue bench\na green apple and a red bowl\n")
    run = tmp_path / "run"
    args = ["bench", "--model", "tiny-sd1", "--steps", "2", "--height", "64", "--width", "64", "--quiet",
            "--prompts", str(prompts), "--method", "none", "--seeds", "0", "--clip-model", str(tiny_clip_dir),
            "--judge", "t2i-compbench", "--vqa-model", str(vqa_dir), "--output-dir", str(run)]
    assert main(args) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        judged = row["judges"]["t2i-compbench"]
        assert row["metrics"]["bvqa"] == judged["metrics"]["bvqa"] == product_score(judged["details"]["p_yes"])
        assert "clip_score" in row["metrics"] and judged["settings"]["vqa_model"] == str(vqa_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert "bvqa" in summary["metrics"]
    table = summary["judges"]["t2i-compbench"]
    expected = round(sum(r["metrics"]["bvqa"] for r in rows) / 2, 4)
    assert table["columns"] == ["method", "color (B-VQA)"] and table["rows"] == [["none", pytest.approx(expected)]]
    markdown, page = (run / "summary.md").read_text(), (run / "report.html").read_text()
    assert "## T2I-CompBench (the benchmark's own judge)" in markdown and f"{expected:.4f}" in markdown
    assert "| method | bvqa |" not in markdown and "bvqa" in markdown.split("## Results")[1].splitlines()[2]
    assert "<h2>T2I-CompBench (the benchmark's own judge)</h2>" in page and "B-VQA" in page
    # a re-run keeps the judged records; a changed judge setting re-judges them
    before = (run / "metrics.jsonl").read_text()
    assert main(args) == 0 and (run / "metrics.jsonl").read_text() == before
    assert main(["score", str(run), "--clip-model", str(tiny_clip_dir), "--quiet", "--judge", "t2i-compbench",
                 "--vqa-model", str(vqa_dir), "--judge-clip-model", str(tiny_clip_dir)]) == 0
    rejudged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["judges"]["t2i-compbench"]["settings"]["clip_model"] == str(tiny_clip_dir) for r in rejudged)
    assert [r["metrics"]["bvqa"] for r in rejudged] == [r["metrics"]["bvqa"] for r in rows]
