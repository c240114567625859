"""Does a modality carry the car at the model's resolution? A ridge regression from the model
inputs of all nodes (pooled 2x2, standardised per pixel) to the (x, z) target, trained on the
train split, scored on val. No network: if this beats a backbone trained alone on the same
modality, the backbone's training, not the data, is what fails (docs/RESULTS.md, "Why depth
carried nothing").

    python benchmarks/linear_probe.py [--data data/demo15k] [--modalities depth rgb radar]
        [--img-size 64] [--lam 1e2 1e3 1e4]

Uses the preprocessing of config/data.yaml and the dataset's decode cache. Prints one line per
modality and ridge strength: val error in cm, and chance (predicting the train mean).
"""

from __future__ import annotations

import argparse

import numpy as np

from admn_ros.data.dataset import GDTMDataset


def pooled_features(ds: GDTMDataset, modality: str, pool: int = 2) -> np.ndarray:
    """[N, S * C * (s / pool)^2] float64: every sample's inputs of all nodes, average-pooled."""
    x = np.stack([ds[i]["inputs"][modality].numpy() for i in range(len(ds))])  # [N, S, C, s, s]
    n, s, c, h, w = x.shape
    x = x.reshape(n, s, c, h // pool, pool, w // pool, pool).mean((4, 6))
    return x.reshape(n, -1).astype(np.float64)


def ridge_error_cm(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                   val_y: np.ndarray, lam: float) -> float:
    """Mean val distance (cm) of a ridge fit on per-pixel standardised features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (val_x - mu) / sd
    y0 = train_y.mean(0)
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (train_y - y0))
    return float(np.linalg.norm(b @ w + y0 - val_y, axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/demo15k")
    ap.add_argument("--modalities", nargs="+", default=["depth", "rgb", "radar"])
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--lam", type=float, nargs="+", default=[1e2, 1e3, 1e4])
    ap.add_argument("--train-stride", type=int, default=2, help="every k-th train frame")
    args = ap.parse_args()
    for m in args.modalities:
        split = {name: GDTMDataset(args.data, name, args.img_size, modalities=[m])
                 for name in ("train", "val")}
        train_x = pooled_features(split["train"], m)[::args.train_stride]
        train_y = split["train"].targets[::args.train_stride].astype(np.float64)
        val_x, val_y = pooled_features(split["val"], m), split["val"].targets.astype(np.float64)
        chance = float(np.linalg.norm(val_y - train_y.mean(0), axis=1).mean())
        for lam in args.lam:
            err = ridge_error_cm(train_x, train_y, val_x, val_y, lam)
            print(f"{m}: ridge lambda {lam:g}: val {err:.1f} cm (chance {chance:.1f} cm, "
                  f"{len(train_x)} train / {len(val_x)} val frames, {train_x.shape[1]} features)")


if __name__ == "__main__":
    main()
