"""Prompt sets: the Attend-and-Excite generator, the benchmark file loaders, contrast sets."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from contrastive_diffusers.eval.prompt_sets import BUILTIN_PROMPT_SETS, load_prompt_set
from contrastive_diffusers.prompts import (
    ANIMALS,
    ATTEND_AND_EXCITE_SUBSETS,
    COLORS,
    OBJECTS,
    PromptItem,
    attend_and_excite_prompts,
    contrast_set,
    load_prompt_file,
)
from contrastive_diffusers.prompts.geneval import GENEVAL_TAGS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"public prompt files not present at {SHARED}"
)


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"public prompt file not present: {path}")
    return path


def words_in(prompt: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, re.IGNORECASE) is not None


# --- Attend-and-Excite generator ----------------------------------------------------------------


def test_attend_and_excite_counts_ids_and_categories():
    items = attend_and_excite_prompts()
    assert len(items) == 276
    assert Counter(i.category for i in items) == {"animals": 66, "animal_object": 144, "object_object": 66}
    for subset, n in zip(ATTEND_AND_EXCITE_SUBSETS, (66, 144, 66)):
        sub = attend_and_excite_prompts(subset)
        assert len(sub) == n and {i.category for i in sub} == {subset}
        assert sub[0].id == f"{subset}-0001" and sub[-1].id == f"{subset}-{n:04d}"
    assert len({i.id for i in items}) == 276 and len({i.prompt for i in items}) == 276
    assert attend_and_excite_prompts() == items  # deterministic
    assert items[0].prompt == "a cat and a dog" and items[0].token_groups == [["cat"], ["dog"]]


def test_attend_and_excite_token_groups_and_vocabulary():
    for item in attend_and_excite_prompts():
        assert len(item.token_groups) == 2
        for group in item.token_groups:
            assert all(words_in(item.prompt, w) for w in group), (item.prompt, group)
            assert group[-1] in ANIMALS + OBJECTS  # noun last
            assert all(w in COLORS for w in group[:-1])
    animal_pairs = {frozenset(g[0] for g in i.token_groups) for i in attend_and_excite_prompts("animals")}
    assert len(animal_pairs) == 66 == len(ANIMALS) * (len(ANIMALS) - 1) // 2
    colored = [i for i in attend_and_excite_prompts("animal_object") if " and " in i.prompt]
    assert len(colored) == 108 and colored[0].token_groups[1][0] in COLORS


def test_attend_and_excite_subset_errors_and_aliases():
    with pytest.raises(ValueError, match="animals, animal_object, object_object"):
        attend_and_excite_prompts("plants")
    # the published prompts.json keys
    assert attend_and_excite_prompts("objects") == attend_and_excite_prompts("object_object")
    assert len(attend_and_excite_prompts("animals_objects")) == 144


@needs_shared
def test_attend_and_excite_equals_published_set():
    published = json.loads(shared_file("attend_and_excite/prompts.json").read_text())
    assert {p for ps in published.values() for p in ps} == {i.prompt for i in attend_and_excite_prompts()}
    for key, subset in (("animals", "animals"), ("animals_objects", "animal_object"), ("objects", "object_object")):
        assert set(published[key]) == {i.prompt for i in attend_and_excite_prompts(subset)}


@needs_shared
def test_attend_and_excite_file_loader_groups_match_generator():
    loaded = load_prompt_file(shared_file("attend_and_excite/prompts.json"))
    generated = {i.prompt: i for i in attend_and_excite_prompts()}
    assert len(loaded) == 276
    for item in loaded:
        assert item.token_groups == generated[item.prompt].token_groups
        assert item.category == generated[item.prompt].category
    assert loaded[0].id == "prompts-animals-0001" and loaded[0].metadata == {"key": "animals"}


# --- loaders on the published files -------------------------------------------------------------

TEXT_FILES = [
    ("structured_diffusion/CC-500.txt", None),
    ("structured_diffusion/ABC-6K.txt", None),
    ("geneval/object_names.txt", None),
] + [
    (f"t2i_compbench/{stem}_val.txt", stem)
    for stem in ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy", "3d_spatial")
]


@needs_shared
@pytest.mark.parametrize("relative, category", TEXT_FILES)
def test_text_files(relative, category):
    path = shared_file(relative)
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text().split("\n"), 1) if line.strip()]
    items = load_prompt_file(path)
    assert len(items) == len(lines)
    assert items[0].prompt == lines[0][1]
    assert items[-1].id == f"{path.stem}-{lines[-1][0]}"
    assert {i.category for i in items} == {category}
    assert all(i.token_groups is None for i in items)
    if category is not None:
        assert load_prompt_file(path, format="t2i_compbench") == items


@needs_shared
def test_cc500_keeps_duplicates_and_strips_tab():
    items = load_prompt_file(shared_file("structured_diffusion/CC-500.txt"))
    assert len(items) == 602 and len({i.prompt for i in items}) == 588
    assert not items[446].prompt.endswith("\t") and items[446].id == "CC-500-447"


@needs_shared
def test_geneval_file():
    path = shared_file("geneval/evaluation_metadata.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items = load_prompt_file(path)
    assert len(items) == len(rows) == 553
    assert items[0].prompt == rows[0]["prompt"] and items[0].metadata == rows[0]
    assert Counter(i.category for i in items) == {
        "position": 100, "color_attr": 100, "two_object": 99, "colors": 94, "single_object": 80, "counting": 80,
    }
    with_groups = [i for i in items if i.token_groups is not None]
    assert with_groups and all(i.category != "counting" for i in with_groups)
    for item in with_groups:
        for group in item.token_groups:
            assert all(words_in(item.prompt, w) for w in group)
    two = next(i for i in items if i.prompt == "a photo of a purple wine glass and a black apple")
    assert two.token_groups == [["purple", "wine glass"], ["black", "apple"]]


@needs_shared
def test_parti_file():
    path = shared_file("parti/PartiPrompts.tsv")
    lines = path.read_text().split("\n")
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    items = load_prompt_file(path)
    assert len(items) == len(rows) == 1632
    assert items[0].prompt == rows[0][0] == "bond" and items[0].id == "PartiPrompts-2"
    assert items[0].category == "Abstract"
    assert items[0].metadata == {"Challenge": "Basic", "Note": rows[0][3]}
    assert Counter(i.category for i in items) == Counter(r[1] for r in rows)
    assert any('"' in i.prompt for i in items)  # quotes are literal, not CSV quoting


# --- loaders: formats and errors on small files ---------------------------------------------------


def test_text_format_skips_blank_and_comment_lines(tmp_path):
    path = tmp_path / "my prompts.txt"
    path.write_bytes(b"# header\r\na cat\r\n\r\n  a dog and a frog  \r\n")
    items = load_prompt_file(path)
    assert [(i.id, i.prompt) for i in items] == [("my_prompts-2", "a cat"), ("my_prompts-4", "a dog and a frog")]


def test_jsonl_format(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [
        {"prompt": "a red car and a blue bench", "id": "car-1", "category": "color",
         "token_groups": [["red", "car"], ["blue", "bench"]], "seed": 3},
        {"prompt": "a cat", "metadata": {"source": "me"}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = load_prompt_file(path)
    assert a == PromptItem("car-1", rows[0]["prompt"], "color", rows[0]["token_groups"], {"seed": 3})
    assert b == PromptItem("set-2", "a cat", None, None, {"source": "me"})


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, fmt, pattern",
    [
        ("a.jsonl", '{"prompt": "a"}\n\n{"prompt": "b"\n', "auto", r"a\.jsonl, line 3: malformed JSON"),
        ("a.jsonl", '{"prompt": "a"}\n{"text": "b"}\n', "jsonl", r"line 2: the row has no prompt"),
        ("a.jsonl", '{"prompt": "a"}\n["b"]\n', "jsonl", r"line 2: expected a JSON object"),
        ("a.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "jsonl", r"line 2: id 'x' already used on line 1"),
        ("a.jsonl", '{"prompt": "a", "id": "a/b"}\n', "jsonl", r"line 1: id 'a/b' is not filesystem-safe"),
        ("a.jsonl", '{"prompt": "a", "token_groups": ["a"]}\n', "jsonl", r"line 1: token_groups must be"),
        ("g.jsonl", '{"tag": "x", "prompt": "a"}\n{"tag": "x", "prompt": ""}\n', "auto", r"line 2: the row has no prompt"),
        ("p.tsv", "Text\tCategory\nbond\tAbstract\n", "auto", r"p\.tsv, line 1: the TSV header has no 'Prompt' column"),
        ("p.tsv", "Prompt\tCategory\nbond\tAbstract\n\n\tAbstract\n", "parti", r"line 4: the row has an empty Prompt"),
        ("p.tsv", "Prompt\tCategory\n", "parti", r"no prompts found"),
        ("e.txt", "", "auto", r"e\.txt: no prompts found"),
        ("e.txt", "# only a comment\n\n", "text", r"no prompts found"),
        ("e.jsonl", "\n\n", "auto", r"no prompts found"),
        ("x.json", '{\n  "animals": [\n    "a cat and a dog",\n  ]\n}\n', "auto", r"x\.json, line 4: malformed JSON"),
        ("x.json", '["a cat"]', "attend_and_excite", r"expected one JSON object"),
        ("x.csv", "a cat\n", "auto", r"cannot tell the format.*name it \.txt.*pass format="),
        ("x.txt.gz", "a cat\n", "auto", r"a gzip file: unpack it first"),
        ("a.jsonl", '{"prompt": "a cat", "token_groups": []}\n', "jsonl", r"line 1: token_groups is empty"),
        ("a.jsonl", '{"prompt": "a", "id": "A"}\n{"prompt": "b", "id": "a"}\n', "jsonl",
         r"line 2: id 'a' already used on line 1 \(ids differing only in case"),
        ("x.json", '{"a b": ["a cat and a dog"], "a_b": ["a frog"]}', "auto", r"subsets 'a b' and 'a_b' give prompts the same ids"),
        ("x.txt", "a cat\n", "yaml", r"Unknown prompt file format 'yaml'; valid formats: auto, text"),
        # another format's rows in a .txt would be drawn verbatim
        ("rows.txt", 'a cat\n{"prompt": "a red car", "category": "color"}\n', "auto",
         r"rows\.txt, line 2: a JSON object.*name a JSON Lines file \.jsonl"),
        ("parti.txt", "Prompt\tCategory\nbond\tAbstract\n", "auto", r"line 1: tab-separated fields.*\.tsv"),
        ("a.jsonl", '{"prompt": "a", "x": 2, "metadata": {"x": 1}}\n', "jsonl",
         r"line 1: 'x' is both a field of the row and a key of its \"metadata\""),
        ("a.jsonl", '{"prompt": "\\u200b "}\n', "jsonl", r"line 1: the row has no prompt"),
    ],
)
def test_loader_errors(tmp_path, name, text, fmt, pattern):
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError, match=pattern):
        load_prompt_file(path, format=fmt)


def test_loader_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(FileNotFoundError, match="Prompt file not found: .*nope.txt"):
        load_prompt_file(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        load_prompt_file(tmp_path / "nope.jsonl", format="jsonl")
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"a cat\na caf\xe9\n")
    with pytest.raises(ValueError, match=r"line 2: not UTF-8"):
        load_prompt_file(path)


def test_auto_detects_geneval_vs_generic_jsonl(tmp_path):
    geneval = write(tmp_path, "g.jsonl", '{"tag": "colors", "include": [], "prompt": "a red car"}\n')
    generic = write(tmp_path, "h.jsonl", '{"prompt": "a red car"}\n')
    assert load_prompt_file(geneval)[0].category == "colors"
    assert load_prompt_file(generic)[0].metadata == {}
    # a user's row with a "tag" of its own is no GenEval row: its id, category and groups are kept
    mine = write(tmp_path, "m.jsonl", '{"id": "mine-1", "prompt": "a red car", "tag": "favourite", '
                                      '"category": "color", "token_groups": [["red", "car"]]}\n')
    assert load_prompt_file(mine) == [PromptItem("mine-1", "a red car", "color", [["red", "car"]], {"tag": "favourite"})]


def test_text_files_drop_invisible_characters(tmp_path):
    # files concatenated with `cat` keep the second file's byte-order mark mid-file; a zero-width space alone
    path = tmp_path / "joined.txt"
    path.write_text("a cat\n\ufeffa red car\n\u200b\n")
    assert [i.prompt for i in load_prompt_file(path)] == ["a cat", "a red car"]
    rows = tmp_path / "rows.jsonl"  # JSON Lines prompts lose them as plain-text lines do
    rows.write_text('{"prompt": "  a red car \\u200b "}\n{"tag": "t", "include": [], "prompt": "a cat\\ufeff"}\n')
    assert [i.prompt for i in load_prompt_file(rows, format="jsonl")] == ["a red car", "a cat"]
    geneval = tmp_path / "g.jsonl"
    geneval.write_text('{"tag": "t", "include": [], "prompt": "a cat\\u200b"}\n')
    assert load_prompt_file(geneval)[0].prompt == "a cat"


def test_text_files_with_old_mac_line_ends_and_no_break_spaces(tmp_path):
    # a lone "\r" ends a line as editors show it; a no-break space at an end is no part of the prompt
    path = tmp_path / "mac.txt"
    path.write_bytes("a red car\ra blue bench\u00a0\r\r\u00a0a green dog\r".encode())
    items = load_prompt_file(path)
    assert [(i.id, i.prompt) for i in items] == [("mac-1", "a red car"), ("mac-2", "a blue bench"),
                                                 ("mac-4", "a green dog")]


@pytest.mark.parametrize("name, category", [
    ("color_val.txt", "color"), ("color_val_seen.txt", "color"), ("shape_val_unseen.txt", "shape"),
    ("texture_train.txt", "texture"), ("non_spatial.txt", "non_spatial"), ("non_spatial_val.txt", "non_spatial"),
    ("3d_spatial.txt", "3d_spatial"), ("spatial_val.txt", "spatial"), ("complex_val_spatial.txt", "complex"),
    ("complex_train_spatialaction.txt", "complex"), ("complex_val_action.txt", "complex"),
    ("numeracy_val.txt", "numeracy"),
])
def test_t2i_compbench_file_names_give_their_category(tmp_path, name, category):
    """Every name of T2I-CompBench's examples/dataset: the category picks the judge's metric."""
    from contrastive_diffusers.eval.judges.t2i_compbench import CATEGORY_METRIC

    path = write(tmp_path, name, "a red car and a blue bench\n")
    assert load_prompt_file(path)[0].category == category in CATEGORY_METRIC
    assert load_prompt_file(path, format="t2i_compbench")[0].category == category


@pytest.mark.parametrize("name", ["colors.txt", "my_color_val.txt", "new_objects.txt", "prompts_val.txt"])
def test_other_text_names_are_plain_text(tmp_path, name):
    assert load_prompt_file(write(tmp_path, name, "a red car\n"))[0].category is None


# --- load_prompt_set ----------------------------------------------------------------------------


def test_load_prompt_set(tmp_path):
    assert len(load_prompt_set("attend_and_excite")) == 276
    assert load_prompt_set("attend_and_excite:animals") == attend_and_excite_prompts("animals")
    assert set(BUILTIN_PROMPT_SETS) == {"attend_and_excite", "shapes", "shapes:test", "shapes:sample", "shapes:train"} | {
        f"attend_and_excite:{s}" for s in ATTEND_AND_EXCITE_SUBSETS
    } | {"geneval"} | {f"geneval:{t}" for t in GENEVAL_TAGS}
    shapes = load_prompt_set("shapes")
    assert shapes == load_prompt_set("shapes:test") and all("spec" in item.metadata for item in shapes)
    assert {item.metadata["split"] for item in load_prompt_set("shapes:train")} == {"train"}
    sample = load_prompt_set("shapes:sample")  # the quick start's set: two per category, from the test split
    assert len(sample) == 14 and all(sum(i.category == c for i in sample) == 2 for c in {i.category for i in shapes})
    # the test set's own prompts: an id means one prompt, so a quick start folder can take the whole set
    assert {i.id: i.prompt for i in sample}.items() <= {i.id: i.prompt for i in shapes}.items()
    with pytest.raises(ValueError, match="animal_object"):
        load_prompt_set("attend_and_excite:plants")
    with pytest.raises(ValueError, match=r"Unknown prompt set 'bogus'.*attend_and_excite:animals.*path"):
        load_prompt_set("bogus")
    with pytest.raises(FileNotFoundError):
        load_prompt_set(str(tmp_path / "missing.txt"))
    path = write(tmp_path, "mine.txt", "a cat\n")
    assert load_prompt_set(str(path))[0].prompt == "a cat"


def test_prompt_item_validation():
    with pytest.raises(ValueError, match="filesystem-safe"):
        PromptItem("a/b", "a cat")
    with pytest.raises(ValueError, match="non-empty"):
        PromptItem("a", "  ")
    with pytest.raises(ValueError, match="token group 1"):
        PromptItem("a", "a cat and a dog", token_groups=[["cat"], []])


# --- contrast sets ------------------------------------------------------------------------------


def test_contrast_set_red_car_blue_bench():
    # swapping the nouns ("a red bench and a blue car") would say what swap_attributes says: left out
    item = PromptItem("car-1", "a red car and a blue bench", "color", [["red", "car"], ["blue", "bench"]])
    assert contrast_set(item) == [
        PromptItem("car-1~swap_attributes", "a blue car and a red bench", "color",
                   [["blue", "car"], ["red", "bench"]], {"perturbation": "swap_attributes", "source_id": "car-1"}),
        PromptItem("car-1~replace_object", "a red car and a blue clock", "color",
                   [["red", "car"], ["blue", "clock"]], {"perturbation": "replace_object", "source_id": "car-1"}),
    ]


def test_contrast_set_partial_cases():
    no_attr = PromptItem("p", "a cat and a dog", token_groups=[["cat"], ["dog"]])
    # "a dog and a cat" only paraphrases the prompt: no swap
    assert [(c.metadata["perturbation"], c.prompt) for c in contrast_set(no_attr)] == [
        ("replace_object", "a cat and a bird"),
    ]
    one_attr = PromptItem("q", "a cat and a red bench", token_groups=[["cat"], ["red", "bench"]])
    assert [c.prompt for c in contrast_set(one_attr)] == ["a bench and a red cat", "a cat and a red clock"]
    # equal attributes: the swap would not change the prompt, so it is left out; each "red" binds to its noun
    same = PromptItem("r", "a red car and a red bench", token_groups=[["red", "bench"], ["red", "car"]])
    assert [c.metadata["perturbation"] for c in contrast_set(same)] == ["replace_object"]
    # one noun twice: swapping the attributes says the same ("a blue car and a red car"); so does case
    two_cars = PromptItem("u", "a red car and a blue car", token_groups=[["red", "car"], ["blue", "car"]])
    assert [c.metadata["perturbation"] for c in contrast_set(two_cars)] == ["replace_object"]
    cased = PromptItem("v", "a Red car and a red bench", token_groups=[["Red", "car"], ["red", "bench"]])
    assert [c.metadata["perturbation"] for c in contrast_set(cased)] == ["replace_object"]
    three = PromptItem("s", "a cat, a dog and a frog", token_groups=[["cat"], ["dog"], ["frog"]])
    assert [(c.id, c.prompt) for c in contrast_set(three)] == [("s~replace_object", "a cat, a dog and a turtle")]
    # "flower vase" is a compound noun (the parser's convention): no attribute to swap, the objects swap
    unknown_nouns = PromptItem("t", "a wooden spoon and a flower vase", token_groups=[["wooden", "spoon"], ["flower", "vase"]])
    assert [c.prompt for c in contrast_set(unknown_nouns)] == ["a wooden flower vase and a spoon"]
    # "glass" names a material: an attribute, swapped as "wooden" is
    glass = PromptItem("t", "a wooden spoon and a glass vase", token_groups=[["wooden", "spoon"], ["glass", "vase"]])
    assert [c.prompt for c in contrast_set(glass)] == ["a glass spoon and a wooden vase"]


def test_contrast_captions_rechoose_their_articles():
    def prompts(text, groups):
        return [c.prompt for c in contrast_set(PromptItem("p", text, token_groups=groups))]

    assert prompts("a purple square and an orange cross", [["purple", "square"], ["orange", "cross"]]) == [
        "an orange square and a purple cross"]
    assert prompts("A red apple and an orange car", [["red", "apple"], ["orange", "car"]]) == [
        "An orange apple and a red car", "A red apple and an orange bowl"]
    assert prompts("a cat and an elephant", [["cat"], ["elephant"]]) == ["a cat and a monkey"]
    # a prompt whose articles do not follow the rule ("a apple", the A&E set's style) keeps them
    assert prompts("a cat and a apple", [["cat"], ["apple"]]) == ["a cat and a backpack"]
    assert prompts("a apple and a red bench", [["apple"], ["red", "bench"]])[0] == "a bench and a red apple"
    # one article off the rule anywhere: the prompt's style, kept for every word (not half-corrected)
    assert prompts("a orange backpack and a purple car", [["orange", "backpack"], ["purple", "car"]])[0] == (
        "a purple backpack and a orange car")


def test_contrast_captions_of_compounds_counts_relations_and_capitals():
    def made(text, groups):
        return {c.metadata["perturbation"]: c.prompt for c in contrast_set(PromptItem("p", text, token_groups=groups))}

    # a compound noun's words are no attributes: "fire" stays with "hydrant", "teddy bear" is not replaced
    assert made("a red fire hydrant and a blue car", [["red", "fire", "hydrant"], ["blue", "car"]]) == {
        "swap_attributes": "a blue fire hydrant and a red car", "replace_object": "a red fire hydrant and a blue bowl"}
    assert made("a red car and a teddy bear", [["red", "car"], ["teddy", "bear"]]) == {
        "swap_objects": "a red teddy bear and a car", "replace_object": "a red bowl and a teddy bear"}
    # a material before a noun is an attribute (T2I-CompBench's texture prompts), not a compound
    assert made("a wooden chair and a metal table", [["wooden", "chair"], ["metal", "table"]]) == {
        "swap_attributes": "a metal chair and a wooden table", "replace_object": "a wooden balloon and a metal table"}
    assert made("a metal chair and a red bench", [["metal", "chair"], ["red", "bench"]])["swap_attributes"] == \
        "a red chair and a metal bench"
    assert made("a plastic bowl and a glass clock", [["plastic", "bowl"], ["glass", "clock"]])["swap_attributes"] == \
        "a glass bowl and a plastic clock"
    # ... unless the two words name one thing: a paper towel is no towel made of paper
    assert made("a paper towel and a red bench", [["paper", "towel"], ["red", "bench"]]) == {
        "swap_objects": "a bench and a red paper towel", "replace_object": "a paper towel and a red clock"}
    assert made("a red tin can and a blue cup", [["red", "tin", "can"], ["blue", "cup"]])["swap_attributes"] == \
        "a blue tin can and a red cup"
    # counts are not swapped (the number would not follow); plurals only with plurals
    assert "swap_objects" not in made("three cats and a red bowl", [["cats"], ["red", "bowl"]])
    assert "swap_objects" not in made("two red cats and a blue bowl", [["two", "red", "cats"], ["blue", "bowl"]])
    assert "swap_objects" not in made("cats and a red bowl", [["cats"], ["red", "bowl"]])
    # a relation makes the order matter: swapping the objects is a contrast, not a paraphrase
    assert made("a cat to the left of a dog", [["cat"], ["dog"]])["swap_objects"] == "a dog to the left of a cat"
    assert made("a cat next to a dog", [["cat"], ["dog"]]).keys() == {"replace_object"}
    assert made("a red car to the left of a blue bench", [["red", "car"], ["blue", "bench"]]).keys() == {
        "swap_attributes", "swap_objects", "replace_object"}
    # the noun right after its attributes, not the first one in the prompt
    assert made("a toy car beside a red car", [["red", "car"]])["replace_object"] == "a toy car beside a red bowl"
    # attributes in another order say the same; a moved word follows the sentence start's capital
    assert "swap_attributes" not in made("a big red car and a red big bench", [["big", "red", "car"], ["red", "big", "bench"]])
    assert made("Red car and blue bench", [["Red", "car"], ["blue", "bench"]])["swap_attributes"] == "Blue car and red bench"
    # the replacement is no word of the prompt
    assert made("a cat and a dog", [["cat"]])["replace_object"] == "a bird and a dog"


def test_contrast_captions_read_number_links_sounds_and_proper_nouns():
    def made(text, groups):
        return {c.metadata["perturbation"]: c.prompt for c in contrast_set(PromptItem("p", text, token_groups=groups))}

    # irregular plurals, and the word before an object, fix its number: no "a mice and some cat"
    assert "swap_objects" not in made("a cat and some mice", [["cat"], ["mice"]])
    assert "swap_objects" not in made("A group of people are cheering at a sports game.", [["people"], ["sports", "game"]])
    assert "swap_objects" not in made("a herd of white sheep on a green hill", [["white", "sheep"], ["green", "hill"]])
    assert made("some blue sheep with white numbers", [["blue", "sheep"], ["white", "numbers"]])["swap_objects"] == \
        "some blue numbers with white sheep"
    assert made("a photo of a refrigerator below a scissors", [["scissors"], ["refrigerator"]])["swap_objects"] == \
        "a photo of a scissors below a refrigerator"  # GenEval's "a scissors": one object
    # the replacement is no noun of the prompt in the other number either
    assert made("a cat and three dogs", [["cat"], ["dogs"]])["replace_object"] == "a bird and three dogs"
    # symmetric links, read as phrases: the swap would paraphrase ("on side of": T2I-CompBench's "beside")
    for link in ("by", "on side of", "along with", "as well as", "close to"):
        assert made(f"a mouse {link} a key", [["mouse"], ["key"]]).keys() == {"replace_object"}, link
    assert "swap_objects" in made("a sticker on the side of a car", [["sticker"], ["car"]])
    # articles by sound; a correct "a university" no longer freezes the others
    assert made("an orange car and a blue bench near a university", [["orange", "car"], ["blue", "bench"]])[
        "swap_attributes"] == "a blue car and an orange bench near a university"
    assert made("a unicorn on an elephant", [["unicorn"], ["elephant"]])["swap_objects"] == "an elephant on a unicorn"
    assert made("a cat on an hourglass", [["cat"], ["hourglass"]])["swap_objects"] == "an hourglass on a cat"
    # only the sentence start's capital moves; proper nouns keep theirs
    assert made("a whale in front of the Sydney Opera House", [["whale"], ["sydney", "opera", "house"]])[
        "swap_objects"] == "a Sydney Opera House in front of the whale"
    assert made("a Corgi next to a red car", [["Corgi"], ["red", "car"]])["swap_objects"] == "a car next to a red Corgi"
    # a tokenizer's words ("t - shirt") and decomposed accents match the prompt as written
    assert made("a red t-shirt and a blue jacket", [["red", "t - shirt"], ["blue", "jacket"]])["swap_attributes"] == \
        "a blue t-shirt and a red jacket"
    assert made("a red cafe\u0301 and a blue car", [["red", "café"], ["blue", "car"]])["swap_attributes"] == \
        "a blue café and a red car"
    # a source id too long for "~<perturbation>" is shortened, the source kept in the metadata
    long_id = "p" * 195
    made_long = contrast_set(PromptItem(long_id, "a red car and a blue bench", token_groups=[["red", "car"], ["blue", "bench"]]))
    assert all(len(c.id) <= 200 and c.metadata["source_id"] == long_id for c in made_long)
    assert len({c.id for c in made_long}) == len(made_long)


def test_contrast_set_errors():
    bad = PromptItem("p", "a red car and a blue bench", token_groups=[["red", "car"], ["green", "bench"]])
    with pytest.raises(ValueError, match=r"'green' not found in prompt 'a red car and a blue bench'"):
        contrast_set(bad)
    with pytest.raises(ValueError, match="needs token groups"):
        contrast_set(PromptItem("p", "a red car"))


def test_contrast_sets_of_the_attend_and_excite_benchmark():
    for item in attend_and_excite_prompts():
        contrasts = contrast_set(item)
        nouns = {g[-1] for g in item.token_groups}
        kinds = [c.metadata["perturbation"] for c in contrasts]
        attributes = [tuple(g[:-1]) for g in item.token_groups]
        # a binding contrast exactly when the two objects carry different attributes, or when
        # their order means something ("a cat with a crown" -> "a crown with a cat"; "a cat with
        # a glasses" too: the set's "a" makes its glasses one object)
        ordered = " with " in item.prompt
        assert ("swap_objects" in kinds or "swap_attributes" in kinds) == (attributes[0] != attributes[1] or ordered)
        assert "replace_object" in kinds
        for c in contrasts:
            assert c.prompt != item.prompt and c.id == f"{item.id}~{c.metadata['perturbation']}"
            assert all(words_in(c.prompt, w) for g in c.token_groups for w in g)
        replaced = next(c for c in contrasts if c.metadata["perturbation"] == "replace_object")
        index = next(i for i, (g, h) in enumerate(zip(item.token_groups, replaced.token_groups)) if g != h)
        new_noun = replaced.token_groups[index][-1]
        assert new_noun not in nouns and not re.search(r"\ban? glasses\b", replaced.prompt)  # never "a glasses"
        assert (new_noun in ANIMALS) == (item.token_groups[index][-1] in ANIMALS)
