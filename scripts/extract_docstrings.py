"""Build the demo dataset: Python standard-library docstrings as a TL;DR analogue.

Each example is a docstring whose first line is a one-sentence summary (the reference) and whose
remaining paragraphs (the document) explain the object in more detail. The policy sees only the
document; the reward never sees the reference, so "win rate against the reference" keeps its meaning.

The output is frozen into the repository (data/docstrings.jsonl) so every machine gets the same data;
re-run this script only to regenerate it:

    python scripts/extract_docstrings.py --out data/docstrings.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docstring_filters import split_docstring

# Modules that are slow, noisy or have side effects on import.
SKIP_PREFIXES = (
    "idlelib",
    "tkinter",
    "turtle",
    "test",
    "lib2to3",
    "ensurepip",
    "antigravity",
    "this",
)


def iter_stdlib_modules() -> Iterator[object]:
    names = sorted(sys.stdlib_module_names)
    for name in names:
        if name.startswith(SKIP_PREFIXES) or name.startswith("_"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
        yield module
        path = getattr(module, "__path__", None)
        if path:
            for info in pkgutil.iter_modules(path, prefix=f"{name}."):
                if info.name.split(".")[-1].startswith(("_", "test")):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        yield importlib.import_module(info.name)
                    except Exception:
                        continue


def iter_documented_objects(module: object) -> Iterator[tuple[str, object]]:
    module_name = module.__name__
    yield module_name, module
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module_name}.{attr}", obj
        if inspect.isclass(obj):
            for method_name, method in vars(obj).items():
                if not method_name.startswith("_") and inspect.isfunction(method):
                    yield f"{module_name}.{attr}.{method_name}", method


def split_of(key: str, held_out_fraction: float) -> str:
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < held_out_fraction else "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/docstrings.jsonl"))
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    args = parser.parse_args()

    seen_documents: set[str] = set()
    rows = []
    for module in iter_stdlib_modules():
        for qualname, obj in iter_documented_objects(module):
            doc = getattr(obj, "__doc__", None)
            parts = split_docstring(doc) if isinstance(doc, str) else None
            if parts is None or parts[1] in seen_documents:
                continue
            seen_documents.add(parts[1])
            summary, document = parts
            split = split_of(qualname, args.held_out_fraction)
            rows.append({"id": qualname, "split": split, "document": document, "summary": summary})

    rows.sort(key=lambda row: row["id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(args.out)
    n_test = sum(row["split"] == "test" for row in rows)
    print(f"wrote {len(rows)} examples ({len(rows) - n_test} train, {n_test} test) to {args.out}")


if __name__ == "__main__":
    main()
