"""The run's pictures: how alike the models' out-of-fold scores are, and every ROC curve."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fusionrec._atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue(), checksum=False)


def plot_oof_correlation(names: list[str], oof: np.ndarray, path: Path) -> None:
    """Spearman correlation of the models' out-of-fold scores (low: the fusion has more to gain)."""
    from scipy.stats import rankdata

    plt = _pyplot()
    matrix = np.atleast_2d(np.corrcoef(rankdata(oof, axis=0).T))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    image = ax.imshow(matrix, vmin=min(0.0, float(matrix.min())), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", color="w" if matrix[i, j] < 0.8 else "k")
    ax.set_title("out-of-fold score correlation (Spearman)")
    fig.colorbar(image, ax=ax)
    _save(fig, path)
    plt.close(fig)


def plot_roc(names: list[str], scores: np.ndarray, y: np.ndarray, fused: np.ndarray, path: Path, what: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for name, column in [*zip(names, scores.T), ("fusion", fused)]:
        fpr, tpr, _ = roc_curve(y >= 0.5, column)
        ax.plot(fpr, tpr, lw=2.2 if name == "fusion" else 1.2, label=f"{name} (AUC {roc_auc_score(y >= 0.5, column):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, {what}")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    plt.close(fig)
