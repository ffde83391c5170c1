"""Pictures of an ensemble: decision regions, learning curves, correlation of out-of-fold predictions.

Each function draws with matplotlib's Agg backend (no display needed) and writes a PNG
atomically; it returns the path written.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import numpy as np

from fusionrec._atomic import atomic_write_bytes
from fusionrec.errors import FusionrecError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue(), checksum=False)
    return str(path)


def _named(models, what: str) -> list[tuple[str, object]]:
    if isinstance(models, Mapping):
        items = list(models.items())
    else:
        items = list(models)
    if not items or not all(isinstance(i, tuple) and len(i) == 2 for i in items):
        raise FusionrecError(f"{what}: give a dict or a list of (name, model) pairs")
    return items


def plot_decision_regions(models, X, y, path, *, resolution: int = 200, n_cols: int = 2) -> str:
    """One panel per fitted model on 2-D data: its predicted class over a grid, and the points.

    ``models`` maps names to fitted classifiers (base models and the ensemble alike), as in
    the mlxtend example of Datawhale's model-fusion notes (Task 5).
    """
    items = _named(models, "plot_decision_regions models")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise FusionrecError(f"plot_decision_regions: X has shape {X.shape}; it needs exactly 2 features")
    classes = np.unique(y)
    pad = 0.05 * (X.max(axis=0) - X.min(axis=0) + 1e-12)
    xs = np.linspace(X[:, 0].min() - pad[0], X[:, 0].max() + pad[0], resolution)
    ys = np.linspace(X[:, 1].min() - pad[1], X[:, 1].max() + pad[1], resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    plt = _pyplot()
    n_rows = math.ceil(len(items) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 4 * n_rows), squeeze=False)
    for ax, (name, model) in zip(axes.ravel(), items):
        codes = np.searchsorted(classes, np.asarray(model.predict(grid)))
        ax.contourf(grid_x, grid_y, codes.reshape(grid_x.shape), levels=np.arange(len(classes) + 1) - 0.5,
                    cmap="Pastel1", alpha=0.8)  # fmt: skip
        for code, label in enumerate(classes):
            mask = y == label
            ax.scatter(X[mask, 0], X[mask, 1], s=12, label=str(label), edgecolor="k", linewidth=0.3,
                       color=plt.get_cmap("Set1")(code % 9))  # fmt: skip
        ax.set_title(name)
    for ax in axes.ravel()[len(items) :]:
        ax.axis("off")
    axes.ravel()[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(models, X, y, path, *, cv=5, train_sizes=(0.1, 0.325, 0.55, 0.775, 1.0), scoring=None,
                         n_jobs=None, random_state=0) -> str:  # fmt: skip
    """Training and validation score against training-set size, one panel per (unfitted) model.

    Uses scikit-learn's ``learning_curve`` with shuffled training rows (so that a small
    training size of sorted data still holds every class); bands are one standard deviation
    over the folds.
    """
    from sklearn.model_selection import learning_curve

    items = _named(models, "plot_learning_curves models")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.8), squeeze=False, sharey=True)
    for ax, (name, model) in zip(axes[0], items):
        sizes, train, valid = learning_curve(model, X, y, cv=cv, train_sizes=np.asarray(train_sizes),
                                             scoring=scoring, n_jobs=n_jobs, shuffle=True,
                                             random_state=random_state)  # fmt: skip
        for scores, label in ((train, "training"), (valid, "validation")):
            mean, std = scores.mean(axis=1), scores.std(axis=1)
            ax.plot(sizes, mean, marker="o", label=label)
            ax.fill_between(sizes, mean - std, mean + std, alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("training rows")
    axes[0][0].set_ylabel(scoring or "score")
    axes[0][0].legend(loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_oof_correlation(source, path, *, names=None, method: str = "pearson") -> str:
    """Heatmap of the correlation between base models' out-of-fold predictions.

    ``source`` is a fitted stacking / averaging / selection estimator (its ``oof_predictions_``)
    or a (n_rows, n_models) array, with ``names`` for its columns. Highly correlated models
    add little to each other. ``method`` is "pearson" or "spearman".
    """
    if hasattr(source, "oof_predictions_"):
        values = np.asarray(source.oof_predictions_, dtype=np.float64)
        names = names or source.oof_feature_names_
    else:
        values = np.asarray(source, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise FusionrecError(f"plot_oof_correlation: predictions of shape {values.shape}; need (rows, >= 2 models)")
    names = list(names) if names is not None else [f"model {i}" for i in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise FusionrecError(f"plot_oof_correlation: {len(names)} names for {values.shape[1]} columns")
    values = values[~np.isnan(values).any(axis=1)]  # rows in no test fold
    if method == "spearman":
        from scipy.stats import rankdata

        values = rankdata(values, axis=0)
    elif method != "pearson":
        raise FusionrecError(f"plot_oof_correlation: method={method!r}; use 'pearson' or 'spearman'")
    corr = np.corrcoef(values, rowvar=False)
    plt = _pyplot()
    size = 1.0 + 0.8 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(corr[i, j]) > 0.6 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(f"{method} correlation of out-of-fold predictions")
    fig.tight_layout()
    return _save(fig, path)
