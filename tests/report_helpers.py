"""A store holding a finished run's evaluation outputs, made by the tests in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iro.core.fsutil import atomic_write_json
from iro.core.store.local import ArtifactStore

DOCS = [
    "Return the absolute version of a path, normalised.",
    "Open a file and return a stream; raise OSError on failure.",
    "Split a string into a list of words using sep as the delimiter.",
    "Return a new sorted list from the items in an iterable.",
]
REFERENCES = ["Absolute path.", "Open a file.", "Split a string.", "Sorted list."]


def make_run(root: Path, run_name: str = "demo", outputs: dict[str, list[str]] | None = None):
    """Eval artifacts for each method (rewards: -len(response)) and the run's evaluation.json."""
    store = ArtifactStore(root)
    outputs = outputs or {
        "base": ["It returns a path, which is absolute and normalised for you.", "Opens.", "Split it up.", "Sort."],
        "iro-iter1": ["Absolute path of a path.", "Open a file, return a stream.", "Split words.", "Sorted list of items."],
    }  # fmt: skip
    rows = []
    for method, responses in outputs.items():
        table = pd.DataFrame(
            {
                "prompt_id": [f"doc{i}" for i in range(len(DOCS))],
                "prompt": DOCS,
                "reference": REFERENCES,
                "response": responses,
                "reward": [-float(len(r)) for r in responses],
                "reference_reward": [-float(len(r)) for r in REFERENCES],
            }
        )

        def build(out: Path, table=table) -> dict:
            table.to_parquet(out / "table.parquet")
            return {"mean_reward": float(table["reward"].mean())}

        artifact = store.create("eval", 1, {"method": method}, [], build)
        rows.append({"method": method, "artifact": f"eval/{artifact.id}"})
    atomic_write_json(store.run_dir(run_name) / "evaluation.json", {"evaluation": rows})
    return store
