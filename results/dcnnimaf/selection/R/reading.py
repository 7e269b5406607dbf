"""Rule R read from the committed rows: RT's and RP's figures beside I2's for each seed, and the rule's decision
for each setting once both seeds have run (``python results/dcnnimaf/selection/R/reading.py``)."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("val_dice_all_post", "dice_lesion", "false_positive_rate_empty", "accuracy", "roc_auc", "wall_time_s")
BAR = 0.7668  # I2's mean validation Dice over all images after cleaning (0.7568) + 0.01
SETTINGS = {"RT": "flip TTA for the segmenter", "RP": "segmenters without early stopping"}


def rows(path: Path) -> dict[int, dict]:
    if not path.is_file():
        return {}
    return {r["seed"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("protocol") == "grouped"}


def cell(row: dict, key: str) -> str:
    value = row.get(key)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main() -> None:
    ref = rows(HERE.parent / "CPB" / "I2" / "runs.jsonl")
    print("run seed | " + " | ".join(KEYS))
    for s in (0, 1):
        print(f"I2 s{s} | " + " | ".join(cell(ref[s], k) for k in KEYS))
    for name, setting in SETTINGS.items():
        cand = rows(HERE / name / "runs.jsonl")
        for s in sorted(cand):
            print(f"{name} s{s} | " + " | ".join(cell(cand[s], k) for k in KEYS))
        if set(cand) >= {0, 1}:
            mean = sum(cand[s]["val_dice_all_post"] for s in (0, 1)) / 2
            keep = mean < BAR
            print(f"rule R, {name}: mean val_dice_all_post {mean:.4f} against the bar {BAR}: the profile "
                  f"{'keeps' if keep else 'drops'} {setting}")
        else:
            print(f"rule R, {name}: not read yet (seeds run: {sorted(cand)}; the rule needs 0 and 1)")


if __name__ == "__main__":
    main()
