"""Rule W read from the committed rows: W0's best validation loss beside the committed DCAT rows (with warm-up) for
each seed, and the rule's decision once all three seeds have run
(``python results/dcat/pneumoniamnist/selection/W/reading.py``)."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("best_val_loss", "best_epoch", "roc_auc", "accuracy")
BAR = 0.1002  # the committed rows' mean best validation loss (0.1052) - 0.005


def rows(path: Path) -> dict[int, dict]:
    if not path.is_file():
        return {}
    return {r["seed"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("variant") == "dcat"}


def main() -> None:
    ref, w0 = rows(HERE.parents[1] / "runs.jsonl"), rows(HERE / "W0" / "runs.jsonl")
    print("run seed | " + " | ".join(KEYS))
    for s in sorted(ref):
        for name, table in (("warm-up", ref), ("W0", w0)):
            if s in table:
                print(f"{name} s{s} | " + " | ".join(f"{table[s][k]:.4f}" for k in KEYS))
    if set(w0) >= {0, 1, 2}:
        mean = sum(w0[s]["best_val_loss"] for s in (0, 1, 2)) / 3
        print(f"rule W: W0's mean best_val_loss {mean:.4f} against the bar {BAR}: the profile "
              f"{'keeps' if mean > BAR else 'drops'} the warm-up")
    else:
        print(f"rule W: not read yet (seeds run: {sorted(w0)}; the rule needs 0, 1 and 2)")


if __name__ == "__main__":
    main()
