"""Rule HED read from the committed rows: each seed's figures beside I2's, and the rule's decision when both seeds
have run (``python results/dcnnimaf/selection/HED/reading.py``)."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("val_dice_all_post", "dice_lesion", "false_positive_rate_empty", "accuracy", "roc_auc", "val_accuracy_cls")


def rows(path: Path) -> dict[int, dict]:
    return {r["seed"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("protocol", "grouped")}


def main() -> None:
    ref = rows(HERE.parent / "CPB" / "I2" / "runs.jsonl")
    hed = {}
    for sub in ("HED_s0", "HED_s1"):
        if (HERE / sub / "runs.jsonl").is_file():
            hed.update(rows(HERE / sub / "runs.jsonl"))
    print("seed | " + " | ".join(KEYS))
    for s in sorted(hed):
        print(f"HED s{s} | " + " | ".join(f"{hed[s][k]:.4f}" for k in KEYS))
        print(f"I2  s{s} | " + " | ".join(f"{ref[s][k]:.4f}" for k in KEYS))
    if set(hed) >= {0, 1}:
        mean = {k: sum(hed[s][k] for s in (0, 1)) / 2 for k in KEYS}
        adopt = (mean["val_dice_all_post"] >= 0.7768 and mean["dice_lesion"] >= 0.6950
                 and mean["false_positive_rate_empty"] <= 0.2457)
        print("means over seeds 0 and 1:", {k: round(v, 4) for k, v in mean.items()})
        print("rule HED:", "adopted" if adopt else "not adopted")
    else:
        print(f"rule HED: not read yet (seeds run: {sorted(hed)}; the rule needs 0 and 1)")


if __name__ == "__main__":
    main()
