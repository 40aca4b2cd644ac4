"""Lay two training curves side by side: a markdown table of train/val loss per evaluation with the
gap between them, and one plot with both.

    python bench/compare_curves.py out/full/metrics.csv out/torch_twin/metrics.csv --plot docs/loss_curves.png
"""

import argparse
import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minigrad.files import write_atomically  # noqa: E402


def read(path):
    with open(path, newline="") as f:
        return {int(r["iter"]): (float(r["train_loss"]), float(r["val_loss"])) for r in csv.DictReader(f)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minigrad_csv")
    parser.add_argument("torch_csv")
    parser.add_argument("--plot", help="write the two curves to this PNG")
    args = parser.parse_args()
    ours, theirs = read(args.minigrad_csv), read(args.torch_csv)
    common = sorted(ours.keys() & theirs.keys())
    print("| iter | minigrad train | PyTorch train | minigrad val | PyTorch val | largest gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for it in common:
        (mt, mv), (tt, tv) = ours[it], theirs[it]
        gap = max(abs(mt - tt), abs(mv - tv))
        worst = max(worst, gap)
        print(f"| {it} | {mt:.4f} | {tt:.4f} | {mv:.4f} | {tv:.4f} | {gap:.4f} |")
    print(f"\nlargest gap over {len(common)} evaluations: {worst:.4f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for curves, label, style in ((ours, "minigrad", "-"), (theirs, "PyTorch twin", "--")):
            iters = sorted(curves)
            ax.plot(iters, [curves[i][0] for i in iters], "o" + style, label=f"{label} train", ms=3)
            ax.plot(iters, [curves[i][1] for i in iters], "s" + style, label=f"{label} val", ms=3)
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy loss (nats)")
        ax.set_title("char-GPT on tiny-shakespeare: minigrad vs the same recipe in PyTorch")
        ax.grid(alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        write_atomically(args.plot, buffer.getvalue())
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
