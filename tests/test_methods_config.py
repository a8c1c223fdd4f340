"""Methods as diffusers configs, schedules in absolute steps or fractions, and each method's
default schedule against the authors' code (values read off their pipelines)."""

import json

import numpy as np
import pytest

from contrastive_diffusers.guidance import AttendAndExcite, Conform, Ebama, GuidanceSchedule, SynGen, get_method
from contrastive_diffusers.guidance.methods import METHODS, load_method


def guided(schedule: GuidanceSchedule, num_steps: int) -> dict:
    """Which loop indices update / refine (with what target) for a call of ``num_steps``."""
    s = schedule.resolve(num_steps)
    return {
        "updates": [i for i in range(num_steps) if s.updates_at(i)],
        "refines": {i: s.refinement[i] for i in range(num_steps) if s.refines_at(i)},
        "iterations": s.refinement_iterations,
        "sizes": s.step_sizes(num_steps),
    }


# ------------------------------------------------------------------ the authors' schedules
# A&E, diffusers' StableDiffusionAttendAndExcitePipeline: `scale_range = np.linspace(1.0, 0.5,
# len(self.scheduler.timesteps)); step_size = scale_factor * np.sqrt(scale_range)`, refinement
# `if i in thresholds.keys() and loss > 1.0 - thresholds[i]` (at most 20 tries), update `if i < max_iter_to_alter` (25).
# CONFORM's notebook: max_iter_to_alter = 30, iterative_refinement_steps = [0, 10, 20], refinement_steps = 20.
# EBAMA's diffusion_pipeline.py: `if self.i > 25: return 0`, step_size = 20.0.
# SynGen's pipeline: `if i < num_intervention_steps` (25), syngen_step_size = 20.0.
@pytest.mark.parametrize("num_steps", [30, 50])
def test_default_schedules_are_the_authors(num_steps):
    sqrt_sizes = 20.0 * np.sqrt(np.linspace(1.0, 0.5, num_steps))

    ae = guided(AttendAndExcite().schedule, num_steps)
    assert ae["updates"] == list(range(25))
    assert ae["refines"] == pytest.approx({0: 0.95, 10: 0.5, 20: 0.2})
    assert ae["iterations"] == 20
    np.testing.assert_allclose(ae["sizes"], sqrt_sizes)

    conform = guided(Conform().schedule, num_steps)
    assert conform["updates"] == list(range(30))
    assert conform["refines"] == {0: None, 10: None, 20: None} and conform["iterations"] == 20
    np.testing.assert_allclose(conform["sizes"], sqrt_sizes)
    assert Conform().softmax_normalize is False

    signature = Conform.pipeline_signature()
    assert guided(signature.schedule, num_steps)["updates"] == list(range(25)) and signature.softmax_normalize

    ebama = guided(Ebama().schedule, num_steps)
    assert ebama["updates"] == list(range(26)) and ebama["refines"] == {}
    np.testing.assert_allclose(ebama["sizes"], np.full(num_steps, 20.0))

    syngen = guided(SynGen().schedule, num_steps)
    assert syngen["updates"] == list(range(25)) and syngen["refines"] == {}
    np.testing.assert_allclose(syngen["sizes"], np.full(num_steps, 20.0))


# ------------------------------------------------------------------ fractions of the trajectory
def test_fraction_schedules_resolve_per_step_count():
    # A&E's published schedule as fractions of 50 steps: stop 25/50, refinement at 0, 10/50, 20/50.
    fractional = AttendAndExcite(max_iter_to_alter=0.5, thresholds={0.0: 0.05, 0.2: 0.5, 0.4: 0.8})
    # Hand-computed: index = floor(fraction * steps).
    expected = {
        20: (list(range(10)), {0: 0.95, 4: 0.5, 8: 0.2}),  # 0.2*20 = 4, 0.4*20 = 8
        28: (list(range(14)), {0: 0.95, 5: 0.5, 11: 0.2}),  # 0.2*28 = 5.6, 0.4*28 = 11.2
        50: (list(range(25)), {0: 0.95, 10: 0.5, 20: 0.2}),  # the published schedule
    }
    for steps, (updates, refines) in expected.items():
        got = guided(fractional.schedule, steps)
        assert got["updates"] == updates and got["refines"] == pytest.approx(refines), steps
    # At 50 steps the fractional form is exactly the published (absolute) one.
    assert fractional.schedule.resolve(50) == AttendAndExcite().schedule


def test_start_and_stop_fractions_and_float_noise():
    s = GuidanceSchedule(start_step=0.1, max_update_step=0.3, step_size_kind="constant")
    assert guided(s, 20)["updates"] == [2, 3, 4, 5]  # floor(2.0) .. floor(6.0) - 1
    assert guided(s, 28)["updates"] == [2, 3, 4, 5, 6, 7]  # floor(2.8) = 2, floor(8.4) = 8
    # 0.29 * 100 is 28.999999999999996 in floats; the index is still 29.
    assert GuidanceSchedule(max_update_step=0.29).resolve(100).max_update_step == 29
    # Absolute schedules are kept as they are, whatever the step count.
    absolute = GuidanceSchedule(max_update_step=25)
    assert absolute.resolve(20) is absolute
    # A fractional schedule must be resolved before the engine asks about steps.
    with pytest.raises(ValueError, match="resolve"):
        GuidanceSchedule(max_update_step=0.5).updates_at(3)


def test_schedule_positions_are_validated():
    with pytest.raises(ValueError, match="fraction"):
        GuidanceSchedule(max_update_step=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        GuidanceSchedule(start_step=-1)
    with pytest.raises(ValueError, match="int step index"):
        GuidanceSchedule(max_update_step=True)
    with pytest.raises(ValueError, match="refinement step"):
        GuidanceSchedule(refinement={"ten": None})


def test_with_schedule_accepts_fractions():
    method = Ebama().with_schedule(max_update_step=0.5)
    assert guided(method.schedule, 20)["updates"] == list(range(10))
    assert guided(method.schedule, 50)["updates"] == list(range(25))
    with pytest.raises(ValueError, match="Unknown schedule field"):
        Ebama().with_schedule(stop=0.5)


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_config_and_from_config_round_trip(name, tmp_path):
    method = get_method(name).with_schedule(step_size=7.5, start_step=1, refinement={0.2: None})
    method.save_config(tmp_path)
    saved = json.loads((tmp_path / "guidance_method.json").read_text())
    assert saved["_class_name"] == type(method).__name__
    assert saved["schedule_overrides"]["step_size"] == 7.5

    for loaded in (
        type(method).from_config(type(method).load_config(tmp_path)),
        load_method(tmp_path),
        load_method(tmp_path / "guidance_method.json"),
    ):
        assert type(loaded) is type(method)
        assert loaded.schedule == method.schedule
        assert loaded.record() == method.record()
    assert load_method(tmp_path).schedule.resolve(50).refinement == {10: None}


def test_paper_parameters_survive_json():
    method = AttendAndExcite(thresholds={0: 0.1, 5: 0.6}, scale_range=(1.0, 0.25), max_iter_to_alter=0.4)
    loaded = load_method(json.loads(method.to_json_string()))
    assert loaded.schedule == method.schedule
    assert loaded.schedule.refinement == pytest.approx({0: 0.9, 5: 0.4})
    assert loaded.schedule.step_size_range == (1.0, 0.25) and loaded.schedule.max_update_step == 0.4


def test_hand_written_method_file(tmp_path):
    path = tmp_path / "conform.json"
    path.write_text(json.dumps({"method": "conform", "temperature": 0.25, "schedule_overrides": {"max_update_step": 0.6}}))
    method = load_method(path)
    assert isinstance(method, Conform) and method.temperature == 0.25
    assert guided(method.schedule, 20)["updates"] == list(range(12))
    assert isinstance(load_method({"method": "ae"}), AttendAndExcite)

    path.write_text(json.dumps({"method": "conform", "temprature": 0.25}))
    with pytest.raises(ValueError, match="temprature"):
        load_method(path)
    with pytest.raises(ValueError, match="names no method"):
        load_method({"temperature": 0.25})
    with pytest.raises(ValueError, match="No method config"):
        load_method(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_method(path)


def test_run_record_through_config_call():
    """Run folders and ledgers store ``method.config()``: name, arguments and the schedule."""
    record = Conform(temperature=0.25).with_schedule(step_size=10).config()
    assert record["method"] == "conform" and record["temperature"] == 0.25
    assert record["schedule"]["step_size"] == 10 and record["schedule"]["max_update_step"] == 30
    assert record["schedule"]["refinement"] == {"0": None, "10": None, "20": None}
    assert json.loads(json.dumps(record)) == record
    # ``method.config`` itself is diffusers' config mapping.
    assert Conform().config["softmax_normalize"] is False
