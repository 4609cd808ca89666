"""Saved scikit-learn models: a joblib file beside a manifest with its SHA-256.

Loading refuses a file whose digest, scikit-learn version or feature list does not match
the manifest, and says which step to rerun.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import sklearn

from analysis.io import atomic_path, write_json


def save_model(model: Any, folder: Path, features: list[str]) -> None:
    """Write ``model.joblib`` and ``model.json`` (versions, features, digest) atomically."""
    with atomic_path(folder / "model.joblib") as tmp:
        joblib.dump(model, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    write_json({"sklearn": sklearn.__version__, "features": list(features), "sha256": digest},
               folder / "model.json")


def load_model(folder: Path, features: list[str] | None = None, step: str = "") -> Any:
    """Load a saved model, refusing one that does not match its manifest."""
    rerun = f"rerun `shopbayes run {step}`" if step else "rerun the step that saved it"
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    blob = (folder / "model.joblib").read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise ValueError(f"{folder / 'model.joblib'}: contents do not match model.json "
                         "(modified or corrupted); refusing to load")
    if meta["sklearn"] != sklearn.__version__:
        raise ValueError(f"{folder}: model saved with scikit-learn {meta['sklearn']}, this is "
                         f"{sklearn.__version__}; {rerun}")
    if features is not None and list(features) != meta["features"]:
        raise ValueError(f"{folder}: model trained on features {meta['features']}, "
                         f"data has {list(features)}; {rerun}")
    return joblib.load(folder / "model.joblib")
