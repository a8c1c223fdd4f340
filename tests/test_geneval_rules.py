"""GenEval's decision rules on constructed detections, against hand-computed expectations
(djghosh13/geneval evaluate_images.py / summary_scores.py)."""

import pytest

from contrastive_diffusers.eval.judges.geneval_rules import (
    Detection,
    GenEvalSettings,
    box_iou,
    evaluate,
    format_summary,
    keep_objects,
    relative_position,
    summary_scores,
    validate_metadata,
)


def det(label, score, box=(0, 0, 10, 10)):
    return Detection(label, score, box)


def colours(answer_by_label):
    """A colour classifier answering from a table; it records what it was asked."""
    calls = []

    def classify(objects, classname):
        calls.append((classname, [o.score for o in objects]))
        return [answer_by_label[(classname, o.score)] for o in objects]

    classify.calls = calls
    return classify


def never_asked(objects, classname):
    raise AssertionError(f"the colour classifier was asked about {classname}")


def judge(detections, metadata, classify=never_asked, settings=GenEvalSettings()):
    return evaluate(keep_objects(detections, metadata["tag"], settings), metadata, classify, settings)


# --- keeping objects --------------------------------------------------------------------------


def test_threshold_is_strict_and_counting_uses_its_own():
    dets = [det("dog", 0.3), det("dog", 0.31), det("dog", 0.9), det("dog", 0.95)]
    assert [d.score for d in keep_objects(dets, "two_object")["dog"]] == [0.95, 0.9, 0.31]
    assert [d.score for d in keep_objects(dets, "counting")["dog"]] == [0.95]
    assert keep_objects([det("dog", 0.3)], "single_object") == {}


def test_at_most_sixteen_per_class_best_first():
    dets = [det("cup", 0.4 + 0.01 * k) for k in range(20)] + [det("dog", 0.5)]
    kept = keep_objects(dets, "single_object")
    assert [round(d.score, 2) for d in kept["cup"]] == [round(0.59 - 0.01 * k, 2) for k in range(16)]
    assert len(kept["dog"]) == 1


def test_overlap_suppression_is_off_by_default():
    same = [det("cat", 0.8, (0, 0, 10, 10)), det("cat", 0.7, (0, 0, 10, 10)), det("cat", 0.6, (50, 50, 60, 60))]
    assert len(keep_objects(same, "two_object")["cat"]) == 3
    nms = keep_objects(same, "two_object", GenEvalSettings(max_overlap=0.5))
    assert [d.score for d in nms["cat"]] == [0.8, 0.6]


def test_box_iou_counts_pixels_inclusively():
    # (0..9) x (0..9) and (5..14) x (5..14): 100 px each, 25 in common.
    assert box_iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 9, 9), (20, 20, 30, 30)) == 0.0


# --- relative position ------------------------------------------------------------------------


def test_relative_position_hand_computed():
    # Centres 30 px apart horizontally, boxes 10 px wide: shrunk offset 30 - 0.1 * 20 = 28 of 30.
    assert relative_position((0, 0, 10, 10), (30, 0, 40, 10)) == ["left of"]
    assert relative_position((30, 0, 40, 10), (0, 0, 10, 10)) == ["right of"]
    # Diagonal: shrunk (18, 18) of a 28.3 px offset: 0.636 on both axes.
    assert relative_position((0, 0, 10, 10), (20, 20, 30, 30)) == ["left of", "above"]
    assert relative_position((0, 40, 10, 50), (0, 0, 10, 10)) == ["below"]


def test_position_margin_boundaries():
    # Two 10 px boxes, centre offset d: the shrunk offset is d - 2, which must exceed d / 2.
    assert relative_position((0, 0, 10, 10), (2, 0, 12, 10)) == []  # shrunk to 0: no relation
    assert relative_position((0, 0, 10, 10), (4, 0, 14, 10)) == []  # 2 / 4 = 0.5, not more
    assert relative_position((0, 0, 10, 10), (4.2, 0, 14.2, 10)) == ["left of"]  # 2.2 / 4.2
    assert relative_position((0, 0, 10, 10), (4.2, 0, 14.2, 10), position_threshold=0.2) == []


# --- verdicts per task ------------------------------------------------------------------------


def test_single_and_two_object():
    single = {"tag": "single_object", "include": [{"class": "bench", "count": 1}]}
    assert judge([det("bench", 0.5), det("dog", 0.9)], single).correct  # extra objects are fine
    missing = judge([det("bench", 0.29)], single)
    assert not missing.correct and missing.reasons == ["expected bench>=1, found 0"]
    two = {"tag": "two_object", "include": [{"class": "cow", "count": 1}, {"class": "bus", "count": 1}]}
    assert judge([det("cow", 0.4), det("bus", 0.4)], two).correct
    assert judge([det("cow", 0.4), det("cow", 0.4)], two).reasons == ["expected bus>=1, found 0"]


def test_counting_needs_exactly_the_number_above_the_counting_threshold():
    three = {"tag": "counting", "include": [{"class": "dog", "count": 3}], "exclude": [{"class": "dog", "count": 4}]}
    assert judge([det("dog", 0.95)] * 3, three).correct
    four = judge([det("dog", 0.95)] * 4, three)
    assert not four.correct and four.reasons == ["expected dog<4, found 4"]
    # Three dogs, but one at 0.85: enough for other tasks, not for counting (threshold 0.9).
    low = judge([det("dog", 0.95), det("dog", 0.92), det("dog", 0.85)], three)
    assert low.reasons == ["expected dog>=3, found 2"]
    # A fourth dog below the counting threshold does not count against the prompt.
    assert judge([det("dog", 0.95)] * 3 + [det("dog", 0.6)], three).correct


def test_colour_is_checked_on_the_best_objects_only():
    row = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    classify = colours({("car", 0.9): "red", ("car", 0.5): "blue"})
    assert judge([det("car", 0.5), det("car", 0.9)], row, classify).correct
    assert classify.calls == [("car", [0.9])]
    mismatch = judge([det("car", 0.5)], row, colours({("car", 0.5): "blue"}))
    assert not mismatch.correct
    assert mismatch.reasons == ["expected red car>=1, found 0 red; and 1 blue"]
    # No car: the classifier is not asked.
    assert judge([det("bus", 0.9)], row).reasons == ["expected car>=1, found 0"]


def test_colour_attribution_swapped_colours_fail_both_rows():
    row = {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"},
                                             {"class": "bench", "count": 1, "color": "blue"}]}
    swapped = colours({("car", 0.8): "blue", ("bench", 0.7): "red"})
    verdict = judge([det("car", 0.8), det("bench", 0.7)], row, swapped)
    assert not verdict.correct
    assert verdict.reasons == ["expected red car>=1, found 0 red; and 1 blue",
                               "expected blue bench>=1, found 0 blue; and 1 red"]
    right = colours({("car", 0.8): "red", ("bench", 0.7): "blue"})
    assert judge([det("car", 0.8), det("bench", 0.7)], row, right).correct


def test_position():
    row = {"tag": "position", "include": [{"class": "bench", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    assert judge([det("bench", 0.5, (100, 0, 140, 40)), det("dog", 0.5, (0, 0, 40, 40))], row).correct
    wrong = judge([det("bench", 0.5, (0, 0, 40, 40)), det("dog", 0.5, (100, 0, 140, 40))], row)
    assert wrong.reasons == ["expected dog left of target, found right of target"]
    no_target = judge([det("dog", 0.5, (0, 0, 40, 40))], row)
    assert no_target.reasons == ["expected bench>=1, found 0", "no target for dog to be left of"]
    # Side by side within the margin: no relation at all.
    close = judge([det("bench", 0.5, (0, 0, 40, 40)), det("dog", 0.5, (5, 0, 45, 40))], row)
    assert close.reasons == ["expected dog left of target, found  target"]


def test_a_target_whose_colour_failed_is_no_target():
    row = {"tag": "position", "include": [{"class": "bench", "count": 1, "color": "red"},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    verdict = judge([det("bench", 0.5, (100, 0, 140, 40)), det("dog", 0.5, (0, 0, 40, 40))], row,
                    colours({("bench", 0.5): "green"}))
    assert verdict.reasons == ["expected red bench>=1, found 0 red; and 1 green", "no target for dog to be left of"]


def test_bad_rows_and_settings_are_named():
    with pytest.raises(ValueError, match="needs a string 'tag'"):
        validate_metadata({"include": []})
    with pytest.raises(ValueError, match="integer 'count'"):
        validate_metadata({"tag": "single_object", "include": [{"class": "dog"}]})
    with pytest.raises(ValueError, match="index of an earlier include row"):
        validate_metadata({"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]})
    with pytest.raises(ValueError, match="threshold must lie in"):
        GenEvalSettings(threshold=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        GenEvalSettings(max_objects=0)


# --- summary ----------------------------------------------------------------------------------


def test_summary_scores_hand_computed():
    results = [
        {"tag": "two_object", "prompt_key": "a", "correct": True},
        {"tag": "two_object", "prompt_key": "a", "correct": False},
        {"tag": "two_object", "prompt_key": "b", "correct": False},
        {"tag": "counting", "prompt_key": "c", "correct": True},
    ]
    summary = summary_scores(results)
    assert summary["total_images"] == 4 and summary["total_prompts"] == 3
    assert summary["correct_images"] == 0.5
    assert summary["correct_prompts"] == pytest.approx(2 / 3)
    assert list(summary["tasks"]) == ["two_object", "counting"]  # order of first appearance
    assert summary["tasks"]["two_object"] == {"score": pytest.approx(1 / 3), "correct": 1, "total": 3}
    assert summary["overall"] == pytest.approx((1 / 3 + 1) / 2)
    text = format_summary(summary)
    assert "% correct prompts: 66.67%" in text
    assert "two_object       = 33.33% (1 / 3)" in text
    assert text.endswith("Overall score (avg. over tasks): 0.66667")
