"""Do the evidence tables depend on how the oracle reads borderline images? Rescore an
evidence run's images with the oracle as it was before 2026-12-02 and compare.

    python benchmarks/oracle_sensitivity.py --run-dir outputs/evidence
    python benchmarks/oracle_sensitivity.py --run-dir outputs/evidence-mmdit --model embedded-mmdit

The oracle changed on 2026-12-02 (a colour competes for a pixel from mixing weight 0.25, and the
best-fitting colour takes it before the 0.5 foreground cut: yellow edges no longer read as extra
orange objects). Apart from such edges both rules read clean renders alike, but the models'
images are soft blobs, and a few pixels more or less of a colour can change which shape the
oracle fits. A guidance effect that is real should not hinge on that choice.

``--run-dir``: the evidence command's ``--output-dir`` (its ``test/`` folder holds the images and
their bench records). The committed records file (``--records``; by default the model's
``evidence[-mmdit]-records.jsonl``) gives the arms, prompts and seeds; the images are first
rescored with the current oracle, which must give every committed verdict again (otherwise the
run folder is not the run the records came from, and the script stops). Writes ``--output``
(default ``benchmarks/results/shapesworld/oracle-sensitivity[-mmdit].json``: for each oracle
variant the evidence tables, and for each arm how many verdicts the variants disagree on) and a
Markdown summary beside it. Needs only the images: about a minute for a run's ~4,000 images on
one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_evidence import METRIC, MODELS, evidence, public_arm, read_records, records_path  # noqa: E402  (same folder)

from contrastive_diffusers.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402
from contrastive_diffusers.shapes.oracle import CANDIDATE_WEIGHT, check  # noqa: E402

#: Oracle variants by name: the mixing weight from which a colour competes for a pixel.
VARIANTS = {"current": CANDIDATE_WEIGHT, "before-2026-12-02": 0.5}
OUTPUTS = {model: path.with_name(path.stem.replace("evidence", "oracle-sensitivity") + ".json")
           for model, path in MODELS.items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the evidence command's --output-dir")
    parser.add_argument("--model", choices=sorted(MODELS), default="embedded")
    parser.add_argument("--records", type=Path, default=None, help="default: the model's committed records file")
    parser.add_argument("--output", type=Path, default=None, help="default: oracle-sensitivity[-mmdit].json")
    args = parser.parse_args(argv)
    args.records = args.records or records_path(MODELS[args.model])
    args.output = args.output or OUTPUTS[args.model]
    return args


def image_index(test_dir: Path) -> dict[tuple[str, str, int], tuple[Path, dict]]:
    """``(method, prompt_id, seed) -> (image file, caption spec)`` from the bench runner's
    per-image records under ``test_dir`` (``<arm>/<prompt_id>/<seed>.json``, in the run folder
    or a map-size subfolder)."""
    index = {}
    for path in sorted(test_dir.rglob("*/*/*.json")):
        record = json.loads(path.read_text())
        if not {"method", "prompt_id", "seed"} <= record.keys() or record.get("status") != "ok" or not record.get("image"):
            continue
        key = (record["method"], record["prompt_id"], record["seed"])
        image = path.parents[2] / record["image"]
        if key in index and index[key][0] != image:
            raise SystemExit(f"{key} has two images, {index[key][0]} and {image}: is {test_dir} one evidence run?")
        index[key] = (image, record["spec"])
    return index


def rescore(records: list[dict], index: dict, candidate_weight: float, cache: dict) -> list[dict]:
    """The records with their verdicts read again at ``candidate_weight``. A tuned arm that kept
    the paper defaults has no images of its own: it reads the defaults arm's."""
    out = []
    for record in records:
        if record["status"] != "ok" or record["metrics"][METRIC] is None:
            out.append(record)
            continue
        key = (record["method"], record["prompt_id"], record["seed"])
        if key not in index and record["method"].endswith("-tuned"):
            key = (record["method"].removesuffix("-tuned"), *key[1:])
        if key not in index:
            raise SystemExit(f"no image for {record['method']} {record['prompt_id']} seed {record['seed']} in the run "
                             "folder: pass the --run-dir of the run that wrote the records.")
        image, spec = index[key]
        if (image, candidate_weight) not in cache:
            array = np.asarray(Image.open(image).convert("RGB"))
            cache[image, candidate_weight] = float(check(array, spec, candidate_weight=candidate_weight).success)
        out.append({**record, "metrics": {METRIC: cache[image, candidate_weight]}})
    return out


def changed_verdicts(a: list[dict], b: list[dict], arms: list[str]) -> dict[str, dict[str, int]]:
    """Per arm: images scored under both variants, and how many verdicts differ."""
    counts = {arm: {"images": 0, "changed": 0} for arm in arms}
    for x, y in zip(a, b):
        if x["metrics"][METRIC] is None:
            continue
        counts[x["method"]]["images"] += 1
        counts[x["method"]]["changed"] += int(x["metrics"][METRIC] != y["metrics"][METRIC])
    return {public_arm(arm): c for arm, c in counts.items()}


def summary_markdown(result: dict) -> str:
    """Per arm and category: the paired difference from plain under each oracle variant."""
    names = list(result["variants"])
    tables = {name: result["variants"][name]["paired"] for name in names}
    categories = list(next(iter(tables[names[0]].values())))
    lines = [f"Plain success and each arm's paired difference from it under each oracle ({', '.join(names)}), "
             "95% t-interval over prompts (images); then the verdicts the oracles disagree on:", "",
             "| method | category | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for category in categories:  # the baseline's own success first
        cells = []
        for name in names:
            stat = result["variants"][name]["methods"]["none"][category]
            cells.append(f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}] ({stat['n']})")
        lines.append(f"| none (success) | {category} | " + " | ".join(cells) + " |")
    for arm in tables[names[0]]:
        for category in categories:
            cells = []
            for name in names:
                stat = tables[name][arm][category]
                cells.append("-" if stat["delta"] is None else
                             f"{stat['delta']:+.3f} [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}] ({stat['n']})")
            lines.append(f"| {arm} | {category} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | images | verdicts changed |", "|---|---|---|"]
    lines += [f"| {arm} | {c['images']} | {c['changed']} |" for arm, c in result["changed_verdicts"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    records, arms, n_seeds = read_records(args.records)
    index = image_index(args.run_dir / "test")
    cache: dict = {}
    scored = {name: rescore(records, index, weight, cache) for name, weight in VARIANTS.items()}
    differ = [r for r, s in zip(records, scored["current"]) if r["metrics"][METRIC] != s["metrics"][METRIC]]
    if differ:
        first = differ[0]
        raise SystemExit(f"{len(differ)} images' verdicts under the current oracle differ from {args.records} "
                         f"(first: {first['method']} {first['prompt_id']} seed {first['seed']}): the run folder is not "
                         "the run that wrote the records, or the oracle changed since.")
    result = {
        "model": args.model,
        "records": args.records.name,
        "variants": {name: {"candidate_weight": weight, **evidence(scored[name], arms, n_seeds)}
                     for name, weight in VARIANTS.items()},
        "changed_verdicts": changed_verdicts(*scored.values(), arms),
    }
    summary = summary_markdown(result)
    write_json_atomic(args.output, result)
    write_text_atomic(args.output.with_suffix(".md"), summary)
    print(summary)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
