"""Validation PSNR against training time, read back from a checkpoint's own history.

    python bench/training_curve.py CKPT --name my_curve --command "threpair train-identity ..."
    -> bench/results/<name>.{json,md,png}

Every checkpoint keeps its validation history (degraded, repaired and clean-reconstruction
PSNR on the validation crops) and the theory numbers; this turns them into the curve and the
table that a training benchmark reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_results  # noqa: E402
from threpair.checkpoint import read_metadata  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", required=True, help="the command that trained it")
    args = ap.parse_args()
    meta = read_metadata(args.checkpoint)
    tr = meta["metadata"]["training"]
    hist = tr["history"]
    # Older checkpoints have no elapsed time per validation: spread the total evenly by step.
    per_step = tr["seconds"] / max(tr["steps"], 1)
    for h in hist:
        h.setdefault("elapsed", h["step"] * per_step)
    rows = [
        {"step": int(h["step"]), "minutes": h["elapsed"] / 60, "PSNR degraded": h["psnr_degraded"],
         "PSNR repaired": h["psnr_repair"], "PSNR clean recon": h["psnr_recon"],
         "codes used %": 100 * h.get("usage_fraction", float("nan"))}
        for h in hist
    ]  # fmt: skip
    th = tr["theory"]
    final = hist[-1]
    note = (
        f"Preset {meta['metadata'].get('preset')} ({meta['model_config']['resolution']} px, "
        f"{meta['num_parameters']:,} parameters), generator simulated at {tr['gen_res']} px, "
        f"{tr['train_crops']} training / {tr['val_crops']} validation crops, {tr['steps']} steps "
        f"in {tr['seconds'] / 60:.1f} min. Final: degraded {final['psnr_degraded']:.2f} dB -> "
        f"repaired {final['psnr_repair']:.2f} dB (clean reconstruction, the ceiling: "
        f"{final['psnr_recon']:.2f} dB). Theory on training crops: delta_min "
        f"{th.get('delta_min', float('nan')):.3f}, eps_max {th.get('eps_max', float('nan')):.3f}, "
        f"Lipschitz ~{th.get('lipschitz', float('nan')):.2f}, NRoUB "
        f"{th.get('nroub', float('nan')):.3f}. Trained with `{args.command}`; this report: "
        f"`python bench/training_curve.py {args.checkpoint} --name {args.name} --command ...`."
    )
    write_results(args.name, rows, list(rows[0]), note)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    mins = [r["minutes"] for r in rows]
    ax.plot(mins, [r["PSNR repaired"] for r in rows], "o-", label="repaired (degraded in)")
    ax.plot(mins, [r["PSNR clean recon"] for r in rows], "s--", label="clean reconstruction")
    ax.axhline(rows[0]["PSNR degraded"], color="gray", ls=":", label="degraded input")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(args.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=100)


if __name__ == "__main__":
    main()
