"""The fusion plots write readable PNGs; bad arguments are named."""

import matplotlib.image as mpimg
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier

from fusionrec import FusionrecError
from fusionrec.fusion import EnsembleSelectionClassifier, StackingClassifier
from fusionrec.fusion.plot import plot_decision_regions, plot_learning_curves, plot_oof_correlation


@pytest.fixture
def iris2d():
    iris = load_iris()
    return iris.data[:, 1:3], iris.target


def _is_png(path):
    image = mpimg.imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_decision_regions_of_base_models_and_the_stack(iris2d, tmp_path):
    X, y = iris2d
    base = [("knn", KNeighborsClassifier(n_neighbors=1)), ("nb", GaussianNB())]
    stack = StackingClassifier(base, LogisticRegression()).fit(X, y)
    models = {name: model.fit(X, y) for name, model in base} | {"stacking": stack}
    assert _is_png(plot_decision_regions(models, X, y, tmp_path / "regions.png", resolution=50))
    with pytest.raises(FusionrecError, match="exactly 2 features"):
        plot_decision_regions(models, load_iris().data, y, tmp_path / "x.png")


def test_learning_curves_and_oof_correlation(iris2d, tmp_path):
    X, y = iris2d
    base = [("lr", LogisticRegression()), ("nb", GaussianNB()), ("knn", KNeighborsClassifier())]
    assert _is_png(plot_learning_curves(base, X, y, tmp_path / "curves.png", cv=3, train_sizes=(0.3, 1.0)))
    binary = y > 0
    selection = EnsembleSelectionClassifier(base, n_iterations=5).fit(X, binary)
    assert _is_png(plot_oof_correlation(selection, tmp_path / "corr.png"))
    assert _is_png(plot_oof_correlation(selection, tmp_path / "corr_s.png", method="spearman"))
    with pytest.raises(FusionrecError, match="need \\(rows, >= 2 models\\)"):
        plot_oof_correlation(selection.oof_predictions_[:, :1], tmp_path / "bad.png")
