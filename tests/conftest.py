import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUSIONREC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or a clean skip when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent")
    return path


def load_lightgbm(name: str):
    """LightGBM example tsv files: label first, then features."""
    train = np.loadtxt(shared_file("lightgbm", f"{name}.train"), delimiter="\t")
    test = np.loadtxt(shared_file("lightgbm", f"{name}.test"), delimiter="\t")
    return train[:, 1:].astype(np.float32), train[:, 0], test[:, 1:].astype(np.float32), test[:, 0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
