"""Token groups on T5's sentencepiece pieces (the text Flux's joint attention reads)."""

from __future__ import annotations

import pytest

from contrastive_diffusers.guidance.t5_tokens import T5WordLookup
from contrastive_diffusers.guidance.tokens import resolve_groups, tokenize_prompt
from contrastive_diffusers.models.tiny_tokenizers import tiny_t5_tokenizer


@pytest.fixture(scope="module")
def lookup():
    return T5WordLookup(tiny_t5_tokenizer(), max_length=32)


def test_words_map_to_their_pieces_counted_from_one(lookup):
    tokens = tokenize_prompt(lookup, "a red fire hydrant and a blue bench")
    # T5 pieces: ▁a ▁red ▁fi re ▁h y d ra nt ▁and ▁a ▁blue ▁bench </s>; position 1 is the first.
    assert dict(tokens.words[:4]) == {"a": (1,), "red": (2,), "fire": (3, 4), "hydrant": (5, 6, 7, 8, 9)}
    assert tokens.length == 13 and tokens.pieces[13] == "▁bench" and tokens.pieces[14] == "</s>"
    groups = resolve_groups(lookup, "a red fire hydrant and a blue bench", [["red", "fire hydrant"], ["blue", "bench"]])
    assert [g.word_positions for g in groups] == [((2,), (3, 4, 5, 6, 7, 8, 9)), ((12,), (13,))]


def test_case_punctuation_and_lone_word_start_pieces(lookup):
    # "A Red car, and a zebra." -> ▁ A ▁ R e d ▁car , ▁and ▁a ▁ z e b ra . </s>: a lone "▁"
    # belongs to the word it starts; punctuation is a word of its own, as for CLIP.
    groups = resolve_groups(lookup, "A Red car, and a zebra.", [["red", "car"], ["zebra"]])
    assert [g.word_positions for g in groups] == [((3, 4, 5, 6), (7,)), ((11, 12, 13, 14, 15),)]
    assert resolve_groups(lookup, "A Red car, and a zebra.", "auto")[0].words == ("red", "car")


def test_the_same_words_however_the_tokenizer_was_loaded(lookup):
    """transformers' T5Tokenizer gives a lone "▁" the next letter's offset, the same
    tokenizer.json loaded as a plain fast tokenizer gives it the space's: the words are the same."""
    from transformers import PreTrainedTokenizerFast

    from contrastive_diffusers.models.tiny_tokenizers import T5_TOKENIZER_DIR

    plain = T5WordLookup(PreTrainedTokenizerFast(tokenizer_file=str(T5_TOKENIZER_DIR / "tokenizer.json"),
                                                 eos_token="</s>", pad_token="<pad>", unk_token="<unk>"), 32)
    for prompt in ["a zebra and a firetruck", "A Red car, and a zebra.", "Ünïcode éclair's 42 dogs"]:
        assert plain.prompt_tokens(prompt).words == lookup.prompt_tokens(prompt).words
    assert dict(plain.prompt_tokens("a zebra").words)["zebra"] == (2, 3, 4, 5, 6)  # ▁ z e b ra


def test_words_sharing_a_piece_count_it_once(tmp_path):
    # a vocabulary with "▁12" and "▁t-shirt" (T5's has such pieces): CLIP's words "1" "2" and
    # "t" "-" "shirt" share one piece each, which a group must not count two or three times
    import json

    from transformers import T5TokenizerFast

    from contrastive_diffusers.models.tiny_tokenizers import T5_TOKENIZER_DIR

    data = json.loads((T5_TOKENIZER_DIR / "tokenizer.json").read_text())
    data["model"]["vocab"] += [["▁12", -1.0], ["▁t-shirt", -1.0]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    (tmp_path / "tokenizer_config.json").write_text((T5_TOKENIZER_DIR / "tokenizer_config.json").read_text())
    lookup = T5WordLookup(T5TokenizerFast.from_pretrained(tmp_path), 32)
    dogs, shirt = resolve_groups(lookup, "12 dogs and a red t-shirt", [["12", "dogs"], ["red", "t-shirt"]])
    assert dogs.word_positions[0] == (1,) and 1 not in dogs.word_positions[1] and dogs.positions.count(1) == 1
    (red,), (t_shirt,) = shirt.word_positions  # one piece each
    assert shirt.positions == (red, t_shirt) and lookup.prompt_tokens("12 dogs and a red t-shirt").pieces[t_shirt] == "▁t-shirt"


def test_decomposed_accents_and_dotted_capitals_resolve_as_on_clip(lookup):
    from contrastive_diffusers.models.tiny import tiny_tokenizer

    for prompt, word in (("a cafe\u0301 and a red car", "café"), ("a cafe\u0301 and a red car", "cafe\u0301"),
                         ("İstanbul and a red car", "İstanbul")):
        (group,) = resolve_groups(lookup, prompt, [[word]])
        assert group.positions and group.positions == tuple(sorted(set(group.positions)))
        (clip_group,) = resolve_groups(tiny_tokenizer(), prompt, [[word]])  # the CLIP path takes it too
        assert clip_group.words == group.words


def test_errors_name_the_problem(lookup):
    with pytest.raises(ValueError, match=r"Word 'truck' .* not in the prompt .* 1:'▁a'"):
        resolve_groups(lookup, "a red car", [["truck"]])
    with pytest.raises(ValueError, match="position 0 .* not a prompt token .*on T5.* a placeholder"):
        resolve_groups(lookup, "a red car", [[0]])
    with pytest.raises(ValueError, match="at most 31 .*max_sequence_length 32"):
        tokenize_prompt(lookup, " ".join(["red"] * 40))
