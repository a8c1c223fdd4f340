"""Token groups: words of a prompt -> positions in the tokenizer's input_ids."""

import re

import pytest

from contrastive_diffusers.guidance.tokens import (
    PromptTokens,
    TokenGroup,
    parse_prompt,
    resolve_batch_groups,
    resolve_groups,
    tokenize_prompt,
)
from contrastive_diffusers.models.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def sd1_tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def sd2_tok():
    return tiny_tokenizer(pad_token="!")


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def tok(request, sd1_tok, sd2_tok):
    return sd1_tok if request.param == "sd1" else sd2_tok


def ids_of(tok, word):
    return tok(word, add_special_tokens=False).input_ids


# ----------------------------------------------------------------------------- tokenize_prompt


def test_tokenize_prompt_positions_match_input_ids(tok):
    prompt = "a red car and a blue bench"
    pt = tokenize_prompt(tok, prompt)
    full = tok(prompt).input_ids
    assert isinstance(pt, PromptTokens)
    assert pt.input_ids == tuple(full)
    assert pt.input_ids[0] == tok.bos_token_id and pt.input_ids[-1] == tok.eos_token_id
    assert pt.length == 7 == len(full) - 2
    assert pt.pieces == tuple(tok.convert_ids_to_tokens(full))
    assert [w for w, _ in pt.words] == ["a", "red", "car", "and", "a", "blue", "bench"]
    assert [p for _, p in pt.words] == [(1,), (2,), (3,), (4,), (5,), (6,), (7,)]
    for word, positions in pt.words:
        assert [full[p] for p in positions] == ids_of(tok, word)


def test_tokenize_prompt_lowercases_and_splits_like_clip(tok):
    pt = tokenize_prompt(tok, "  A  Man's\tT-shirt, 12 OK!! ")
    assert [w for w, _ in pt.words] == ["a", "man", "'s", "t", "-", "shirt", ",", "1", "2", "ok", "!!"]
    assert pt.input_ids == tuple(tok("a man's t-shirt, 12 ok!!").input_ids)
    flat = [p for _, ps in pt.words for p in ps]
    assert flat == list(range(1, pt.length + 1))


def test_describe_lists_positions_and_pieces(sd1_tok):
    pt = tokenize_prompt(sd1_tok, "a red car")
    assert pt.describe() == "1:'a' 2:'red' 3:'car'"
    zebra = tokenize_prompt(sd1_tok, "a zebra").describe()
    assert zebra.startswith("1:'a' 2:") and "</w>" not in zebra and "startoftext" not in zebra


def test_empty_prompt(tok):
    pt = tokenize_prompt(tok, "")
    assert pt.length == 0 and pt.words == ()


def test_too_long_prompt_raises(tok):
    with pytest.raises(ValueError, match=r"80 tokens.*at most 75.*shorten the prompt"):
        tokenize_prompt(tok, "a " * 80)
    assert tokenize_prompt(tok, " ".join(["a"] * 75)).length == 75  # exactly at the limit


def test_non_clip_tokenizer_raises(sd1_tok):
    class Shuffled:
        """Word-by-word ids that differ from the whole prompt's ids (not CLIP-compatible)."""

        model_max_length = 77

        def __call__(self, text, add_special_tokens=True):
            out = sd1_tok(text, add_special_tokens=add_special_tokens)
            if isinstance(text, str) and add_special_tokens:
                out["input_ids"] = out["input_ids"][:1] + out["input_ids"][1:-1][::-1] + out["input_ids"][-1:]
            return out

        def convert_ids_to_tokens(self, ids):
            return sd1_tok.convert_ids_to_tokens(ids)

    with pytest.raises(ValueError, match="not CLIP-compatible.*integer token positions"):
        tokenize_prompt(Shuffled(), "a red car")


# ----------------------------------------------------------------------------- resolve_groups


def test_resolve_words_exact_positions(tok):
    groups = resolve_groups(tok, "a red car and a blue bench", [["red", "car"], ["blue", "bench"]])
    assert groups == [
        TokenGroup(words=("red", "car"), word_positions=((2,), (3,))),
        TokenGroup(words=("blue", "bench"), word_positions=((6,), (7,))),
    ]
    assert groups[0].noun == (3,) and groups[0].modifiers == ((2,),) and groups[0].positions == (2, 3)
    ids = tok("a red car and a blue bench").input_ids
    assert ids[3] == ids_of(tok, "car")[0] and ids[7] == ids_of(tok, "bench")[0]


def test_resolve_auto_matches_explicit(tok):
    prompt = "a red car and a blue bench"
    explicit = resolve_groups(tok, prompt, [["red", "car"], ["blue", "bench"]])
    assert resolve_groups(tok, prompt, "auto") == explicit


def test_multi_piece_words(tok):
    prompt = "a zebra next to a giraffe"
    zebra, giraffe = resolve_groups(tok, prompt, "auto")
    ids = tok(prompt).input_ids
    for group, word in ((zebra, "zebra"), (giraffe, "giraffe")):
        assert group.words == (word,)
        assert len(group.noun) > 1
        assert list(group.noun) == list(range(group.noun[0], group.noun[-1] + 1))
        assert [ids[p] for p in group.noun] == ids_of(tok, word)
    assert zebra.noun[0] == 2 and giraffe.noun[-1] == len(ids) - 2


def test_multi_piece_modifier(sd1_tok):
    (group,) = resolve_groups(sd1_tok, "a zebra bench", [["zebra", "bench"]])
    n = len(ids_of(sd1_tok, "zebra"))
    assert group.modifiers == (tuple(range(2, 2 + n)),) and group.noun == (2 + n,)
    assert group.positions == tuple(range(2, 3 + n))


def test_case_insensitive(tok):
    expected = resolve_groups(tok, "a red car", [["red", "car"]])
    assert resolve_groups(tok, "A RED Car", [["Red", "CAR"]]) == expected
    assert resolve_groups(tok, "a red car", ["RED car"]) == expected  # a string group splits on whitespace


def test_repeated_words_take_next_unused(tok):
    groups = resolve_groups(tok, "a red car and a red bench", [["red", "car"], ["red", "bench"]])
    assert [g.word_positions for g in groups] == [((2,), (3,)), ((6,), (7,))]
    # Order of groups does not matter: the bench group still gets the second "red".
    groups = resolve_groups(tok, "a red car and a red bench", [["red", "bench"], ["red", "car"]])
    assert [g.word_positions for g in groups] == [((6,), (7,)), ((2,), (3,))]
    groups = resolve_groups(tok, "a dog and a brown dog", [["dog"], ["brown", "dog"]])
    assert [g.word_positions for g in groups] == [((2,),), ((5,), (6,))]


def test_repeated_word_placement_is_in_order_and_compact(tok):
    (group,) = resolve_groups(tok, "a car and a red car", [["red", "car"]])
    assert group.word_positions == ((5,), (6,))
    (group,) = resolve_groups(tok, "a red car and a red bench", [["red", "bench"]])
    assert group.word_positions == ((6,), (7,))
    (group,) = resolve_groups(tok, "a red red car", [["red", "red", "car"]])
    assert group.word_positions == ((2,), (3,), (4,))


def test_a_group_with_more_words_is_placed_first_whatever_the_order(tok):
    # "red" binds to the car it stands before, not to the car left over by a one-word group
    for prompt, red_car, car in (("a red car next to a car", ((2,), (3,)), ((7,),)),
                                 ("a car next to a red car", ((6,), (7,)), ((2,),))):
        for groups in ([["red", "car"], ["car"]], [["car"], ["red", "car"]]):
            resolved = {g.words: g.word_positions for g in resolve_groups(tok, prompt, groups)}
            assert resolved == {("red", "car"): red_car, ("car",): car}
        assert [g.words for g in resolve_groups(tok, prompt, [["car"], ["red", "car"]])] == [("car",), ("red", "car")]


def test_a_group_of_multi_word_strings_only_is_refused(tok):
    # one prompt's list of string groups wrapped once more reads as one object: refused, with both readings
    with pytest.raises(ValueError, match=r"only multi-word entries.*\['red car', 'blue bench'\].*traffic light"):
        resolve_groups(tok, "a red car and a blue bench", [["red car", "blue bench"]])
    assert [g.words for g in resolve_groups(tok, "a red car and a blue bench", ["red car", "blue bench"])] == \
        [("red", "car"), ("blue", "bench")]
    (group,) = resolve_groups(tok, "a red traffic light", [["red", "traffic light"]])  # one multi-word noun: fine
    assert group.words == ("red", "traffic light")
    # beside a group of single words the reading is not in doubt
    light, car = resolve_groups(tok, "a light blue traffic light and a red car", [["light blue", "traffic light"],
                                                                                  ["red", "car"]])
    assert light.words == ("light blue", "traffic light") and car.words == ("red", "car")
    with pytest.raises(ValueError, match="only multi-word entries, as every group here does"):
        resolve_groups(tok, "a red car and a blue bench and a green cat and a white dog",
                       [["red car", "blue bench"], ["green cat", "white dog"]])


def test_words_out_of_prompt_order_and_shared_words(tok):
    # Not in prompt order: each word takes its first unused occurrence.
    (group,) = resolve_groups(tok, "a car that is red", [["red", "car"]])
    assert group.word_positions == ((5,), (2,)) and group.noun == (2,)
    # All occurrences used by earlier groups: the word is shared, not an error.
    first, second = resolve_groups(tok, "a cat and a dog", [["cat"], ["cat", "dog"]])
    assert first.positions == (2,) and second.positions == (2, 5)


def test_multi_word_entry_is_one_word(tok):
    prompt = "a traffic light and a car"
    light, car = resolve_groups(tok, prompt, [["traffic light"], "car"])
    n = len(ids_of(tok, "traffic")) + len(ids_of(tok, "light"))
    assert n > 2  # both words are multi-piece in the tiny vocab
    assert light.words == ("traffic light",)
    assert light.word_positions == (tuple(range(2, 2 + n)),)  # one word entry, all pieces
    assert car.words == ("car",) and car.noun == (4 + n,)  # after "and", "a"
    with pytest.raises(ValueError, match="'light traffic'"):
        resolve_groups(tok, prompt, [["light traffic"]])  # consecutive, in order


def test_integer_positions(tok):
    groups = resolve_groups(tok, "a red car and a blue bench", [[2, 3], 7, [6]])
    assert groups[0] == TokenGroup(words=("2", "3"), word_positions=((2,), (3,)))
    assert groups[1] == TokenGroup(words=("7",), word_positions=((7,),))
    assert groups[2].noun == (6,)
    # Mixed words and positions in one group.
    assert resolve_groups(tok, "a red car", [["red", 3]])[0].word_positions == ((2,), (3,))
    assert resolve_groups(tok, "a red car", ((2, 3),))[0].positions == (2, 3)


def test_unknown_word_error(tok):
    with pytest.raises(ValueError) as info:
        resolve_groups(tok, "a red car", [["red", "bus"]])
    msg = str(info.value)
    assert "'bus'" in msg and "'a red car'" in msg and "1:'a' 2:'red' 3:'car'" in msg
    assert "integer token positions" in msg
    # "car" does not match inside another word.
    with pytest.raises(ValueError, match="'car'"):
        resolve_groups(tok, "a red carpet", ["car"])


@pytest.mark.parametrize(
    "position, pattern",
    [
        (0, r"position 0 .*start-of-text"),
        (4, r"position 4 .*end-of-text/padding.*1\.\.3"),
        (40, r"position 40 .*end-of-text/padding.*1\.\.3"),
        (-1, r"position -1 .*negative.*1\.\.3"),
    ],
)
def test_bad_position_errors(tok, position, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        resolve_groups(tok, "a red car", [[2, position]])
    assert "1:'a' 2:'red' 3:'car'" in str(info.value)


@pytest.mark.parametrize(
    "groups, pattern",
    [
        ([[]], r"group 0 .*empty"),
        ([["red"], ""], r"group 1 .*empty"),
        ([["red", "  "]], r"empty word"),
        ([], r"group list .*empty"),
        ([[True]], r"True, a bool"),
        ([[2.0]], r"2\.0, a float"),
        ([None], r"NoneType"),
        ([[["red"]]], r"list"),
        ("red car", r"'auto' or a list"),
        (None, r"'auto' or a list"),
        (True, r"'auto' or a list"),
    ],
)
def test_bad_group_errors(sd1_tok, groups, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_groups(sd1_tok, "a red car", groups)


def test_auto_with_no_objects_errors(sd1_tok):
    with pytest.raises(ValueError, match="no objects.*explicitly"):
        resolve_groups(sd1_tok, "a the of", "auto")


def test_token_group_validation():
    with pytest.raises(ValueError):
        TokenGroup(words=(), word_positions=())
    with pytest.raises(ValueError):
        TokenGroup(words=("a",), word_positions=((),))


# ----------------------------------------------------------------------------- batches


def test_batch_auto(tok):
    prompts = ["a red car and a blue bench", "a cat with a hat"]
    out = resolve_batch_groups(tok, prompts, "auto")
    assert [[g.positions for g in groups] for groups in out] == [[(2, 3), (6, 7)], [(2,), (5,)]]


def test_batch_per_prompt(tok):
    prompts = ["a red car and a blue bench", "a cat with a hat"]
    out = resolve_batch_groups(tok, prompts, [[["blue", "bench"]], "auto"])
    assert out[0] == [TokenGroup(words=("blue", "bench"), word_positions=((6,), (7,)))]
    assert [g.words for g in out[1]] == [("cat",), ("hat",)]
    out = resolve_batch_groups(tok, prompts, ["auto", [[2], ["hat"]]])
    assert [g.positions for g in out[1]] == [(2,), (5,)]


def test_batch_single_prompt_group_list(tok):
    single = resolve_groups(tok, "a red car", [["red", "car"]])
    assert resolve_batch_groups(tok, ["a red car"], [["red", "car"]]) == [single]
    assert resolve_batch_groups(tok, ["a red car"], [[["red", "car"]]]) == [single]
    assert resolve_batch_groups(tok, ["a red car"], ["red car"]) == [single]


def test_batch_single_group_list_for_many_prompts_errors(sd1_tok):
    with pytest.raises(ValueError, match="2 prompts.*one group list per prompt"):
        resolve_batch_groups(sd1_tok, ["a red car", "a blue bench"], [["red", "car"]])


def test_batch_count_mismatch_errors(sd1_tok):
    with pytest.raises(ValueError, match=r"3 token group lists for 2 prompts"):
        resolve_batch_groups(sd1_tok, ["a red car", "a blue bench"], ["auto", "auto", [["red"]]])


# ----------------------------------------------------------------------------- parse_prompt


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a red car and a blue bench", [["red", "car"], ["blue", "bench"]]),
        ("a cat with a hat", [["cat"], ["hat"]]),
        ("a brown bear next to a white dog", [["brown", "bear"], ["white", "dog"]]),
        ("A photo of a green triangle above a yellow circle", [["green", "triangle"], ["yellow", "circle"]]),
        ("a cat", [["cat"]]),
        ("a red bowl on top of a blue box", [["red", "bowl"], ["blue", "box"]]),
        ("a cat to the left of a dog", [["cat"], ["dog"]]),
        ("a cat, a dog and a bird", [["cat"], ["dog"], ["bird"]]),
        ("two cats in front of the bench.", [["cats"], ["bench"]]),
        ("an oil painting of a dog", [["dog"]]),
        ("a man holding a painting", [["man"], ["painting"]]),
        ("", []),
    ],
)
def test_parse_prompt_builtin(prompt, expected):
    assert parse_prompt(prompt) == expected


def test_parse_prompt_unknown_parser():
    with pytest.raises(ValueError, match="Unknown prompt parser 'nltk'"):
        parse_prompt("a cat", parser="nltk")


def test_parse_prompt_spacy_missing_says_how_to_install():
    try:
        import spacy  # noqa: F401

        pytest.skip("spaCy is installed")
    except ImportError:
        pass
    install = re.escape("pip install spacy && python -m spacy download en_core_web_sm")
    with pytest.raises((ImportError, ValueError), match=install):
        parse_prompt("a cat", parser="spacy")


# ----------------------------------------------------------------------------- learned words


@pytest.fixture(scope="module")
def learned_pipe():
    """The tiny SD1 pipeline with textual inversion embeddings loaded the way users load them:
    one vector for "<cat-toy>", two for "<r>" (ReVersion-style), three for "<Dog>"."""
    import torch
    from contrastive_diffusers.models.tiny import tiny_pipeline

    pipe = tiny_pipeline("sd1")
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    for token, vectors in (("<cat-toy>", 1), ("<r>", 2), ("<Dog>", 3)):
        pipe.load_textual_inversion({token: torch.randn(vectors, dim)}, token=token)
    return pipe


@pytest.mark.parametrize("prompt", [
    "a red <cat-toy> and a blue ball", "a cat <r> a dog", "a cat <R> a dog <r>", "A <Dog> next to a <CAT-TOY>",
])
def test_learned_words_are_one_word_with_the_ids_diffusers_encodes(learned_pipe, prompt):
    """A learned token is one word (CLIP's pre-tokenizer alone would split "<cat-toy>" into
    five), its extra vectors (diffusers writes "<r> <r>_1" for a two-vector "<r>") are its
    positions, and the ids are those the pipeline encodes (``maybe_convert_prompt``, which
    does not expand a token the tokenizer lowercases, such as "<Dog>")."""
    tok = learned_pipe.tokenizer
    tokens = tokenize_prompt(tok, prompt)
    assert list(tokens.input_ids) == tok(learned_pipe.maybe_convert_prompt(prompt, tok)).input_ids
    words = dict(tokens.words)
    if prompt == "a cat <r> a dog":
        assert words["<r>"] == (3, 4)
        assert tok.convert_ids_to_tokens([tokens.input_ids[3], tokens.input_ids[4]]) == ["<r>", "<r>_1"]
    if prompt == "a cat <R> a dog <r>":  # diffusers expands only the spelling it added
        assert [ps for w, ps in tokens.words if w == "<r>"] == [(3,), (6, 7)]
    if "<cat-toy>" in prompt.lower():
        assert len(words["<cat-toy>"]) == 1
    if "<Dog>" in prompt:
        assert words["<Dog>"] == (2,)


def test_groups_of_learned_words_resolve_and_auto_says_to_name_them(learned_pipe):
    tok = learned_pipe.tokenizer
    groups = resolve_groups(tok, "a red <cat-toy> <r> a blue chair", [["red", "<CAT-toy>"], ["blue", "chair"]])
    assert [g.word_positions for g in groups] == [((2,), (3,)), ((7,), (8,))]  # "<r>" is 4 and 5
    assert [g.words for g in groups] == [("red", "<cat-toy>"), ("blue", "chair")]
    relation = resolve_groups(tok, "a cat <r> a dog", [["cat"], ["<r>"], ["dog"]])
    assert [g.positions for g in relation] == [(2,), (3, 4), (6,)]
    with pytest.raises(ValueError, match=r"cannot place the learned word\(s\) <r> of 'a cat <r> a dog'"):
        resolve_groups(tok, "a cat <r> a dog", "auto")
    assert [g.words for g in resolve_groups(tok, "a cat and a dog", "auto")] == [("cat",), ("dog",)]
