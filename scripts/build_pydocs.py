"""Build the large docstring-summarisation dataset, data/pydocs.jsonl.gz.

Why: the demo set (data/docstrings.jsonl, 343 stdlib docstrings) is so small that the value model
memorises it. This script makes the same kind of data from text that ships offline, at a scale of
thousands of examples: every docstring (module, class, function, method) in the .py files of the
running interpreter's standard library and of the packages installed in site-packages.

An example is one docstring: `summary` is its one-line summary (first sentence, 5..22 words),
`document` is the prose that follows it (35..160 words, whitespace-normalised). Files are read with
`ast` (never imported: fast and free of side effects). Structured sections (Args:, numpydoc
Parameters, :param:, doctests, directives, code, tables, lists) are cut, and what is left must be
English prose (see scripts/docstring_filters.py). Auto-generated files and docstrings, licence
headers and boilerplate are dropped; identical summaries, identical documents and near-duplicate
documents (same opening, or word-shingle Jaccard >= 0.5 via MinHash buckets) keep one copy.

The split is by module group (the package directory a module lives in, e.g.
transformers.models.bert or email.mime; a directory with more than a tenth of --min-test examples
is split into its modules): groups are ordered by a seeded stable hash and moved to `test` in that
order until it holds --min-test examples, so held-out prompts never share a module with training
prompts. Groups larger than a tenth of --min-test always stay in `train`, so that the test split
covers many groups, and a test document with word-shingle Jaccard >= 0.3 against any train
document is dropped. The test rows are written in a seeded stable shuffle (evaluation takes the
first N rows); train rows are sorted by id. The output is byte-identical across runs.

    .venv/bin/python scripts/build_pydocs.py --out data/pydocs.jsonl.gz
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import hashlib
import json
import os
import re
import sys
import sysconfig
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docstring_filters import Rejected, extract_example

# Directories never read: test suites, GUI/IDE code, vendored third-party copies, examples, data.
SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "testing",
        "_testing",
        "idlelib",
        "lib2to3",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "pydoc_data",
        "encodings",
        "site-packages",
        "_vendor",
        "_distutils",  # setuptools' copy of the stdlib's distutils
        "vendor",
        "vendored",
        "_vendored",
        "externals",
        "_externals",
        "extern",
        "_extern",
        "third_party",
        "thirdparty",
        "examples",
        "benchmarks",
        "docs",
        "__pycache__",
    }
)
SKIP_FILE = re.compile(r"^(?:test_.*|.*_test|conftest|setup|.*_pb2(?:_grpc)?)\.py$")
# Looked for in the first 2,000 characters of a file: its header comments and module docstring.
GENERATED_FILE_HEAD = re.compile(
    r"\bauto-?generated\b|do not edit|"
    r"(?:file|module|code) (?:was |is )?(?:automatically )?generated|"
    r"generated (?:by|from|with) [\w./-]+\.(?:py|proto|json|ya?ml|gram|txt)\b|"
    r"generated from our openapi",
    re.IGNORECASE,
)
MAX_FILE_BYTES = 1_500_000  # larger .py files are generated tables, not documentation
NEAR_DUPLICATE_JACCARD = 0.5
SHINGLE_WORDS = 3
MINHASH_BANDS, MINHASH_ROWS = 16, 2
CROSS_SPLIT_JACCARD = 0.3  # a test document this close to a train document is dropped
PREFIX_CHARS = 200


@dataclass
class Candidate:
    id: str
    module: str
    group: str
    source: str
    summary: str
    document: str
    split: str = "train"

    def row(self) -> dict[str, str]:
        return {
            "id": self.id,
            "module": self.module,
            "source": self.source,
            "split": self.split,
            "document": self.document,
            "summary": self.summary,
        }


@dataclass
class SourceFile:
    path: Path
    module: str
    group: str
    source: str


# ---------------------------------------------------------------------------- discovering files


def distribution_of_files(site_packages: Path) -> dict[str, str]:
    """Relative path (posix) -> distribution name, from every *.dist-info/RECORD."""
    owners: dict[str, str] = {}
    for dist_info in sorted(site_packages.glob("*.dist-info")):
        record = dist_info / "RECORD"
        if not record.is_file():
            continue
        name = _distribution_name(dist_info)
        with record.open(newline="", encoding="utf-8", errors="replace") as f:
            for fields in csv.reader(f):
                if fields and fields[0].endswith(".py"):
                    owners[fields[0]] = name
    return owners


def _distribution_name(dist_info: Path) -> str:
    metadata = dist_info / "METADATA"
    if metadata.is_file():
        with metadata.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    return dist_info.name.split("-", 1)[0]


def iter_python_files(root: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """(path, module parts) of every importable .py file under root, skipping SKIP_DIRS."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d.isidentifier())
        for filename in sorted(filenames):
            stem = filename[:-3]
            if not filename.endswith(".py") or not stem.isidentifier() or SKIP_FILE.match(filename):
                continue
            yield Path(dirpath) / filename, (*rel, stem)


def module_name_and_group(parts: tuple[str, ...]) -> tuple[str, str]:
    """Dotted module name, and its split group: the package directory holding it.

    `transformers/models/bert/modeling_bert.py` -> group `transformers.models.bert`;
    a top-level module (`argparse.py`) or a package's `__init__.py` is its own group.
    """
    is_package = parts[-1] == "__init__"
    module_parts = parts[:-1] if is_package else parts
    group_parts = module_parts if is_package or len(module_parts) == 1 else module_parts[:-1]
    return ".".join(module_parts), ".".join(group_parts)


def discover(stdlib: Path, site_packages: Path | None) -> Iterator[SourceFile]:
    for path, parts in iter_python_files(stdlib):
        module, group = module_name_and_group(parts)
        yield SourceFile(path, module, group, "stdlib")
    if site_packages is None:
        return
    owners = distribution_of_files(site_packages)
    for path, parts in iter_python_files(site_packages):
        rel = path.relative_to(site_packages).as_posix()
        module, group = module_name_and_group(parts)
        yield SourceFile(path, module, group, owners.get(rel, parts[0]))


# ---------------------------------------------------------------------------- reading docstrings


def read_tree(path: Path, counts: Counter[str]) -> ast.Module | None:
    try:
        data = path.read_bytes()
    except OSError:
        counts["file_unreadable"] += 1
        return None
    if len(data) > MAX_FILE_BYTES:
        counts["file_too_large"] += 1
        return None
    if b'"""' not in data and b"'''" not in data:
        counts["file_without_docstrings"] += 1
        return None
    if GENERATED_FILE_HEAD.search(data[:2000].decode("utf-8", "replace")):
        counts["file_autogenerated"] += 1
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        counts["file_unparsable"] += 1
        return None


def iter_docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of the module and of its classes, functions and methods."""
    doc = ast.get_docstring(tree)
    if doc:
        yield module, doc
    yield from _walk(tree.body, module)


def _walk(body: Iterable[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{node.name}"
            doc = ast.get_docstring(node)
            if doc:
                yield name, doc
            if isinstance(node, ast.ClassDef):
                yield from _walk(node.body, name)
        elif isinstance(node, ast.If | ast.Try | ast.TryStar | ast.With):
            for field in ("body", "orelse", "finalbody"):
                yield from _walk(getattr(node, field, []), prefix)
            for handler in getattr(node, "handlers", []):
                yield from _walk(handler.body, prefix)


def collect(files: Iterable[SourceFile], counts: Counter[str]) -> list[Candidate]:
    candidates = []
    for source_file in files:
        counts["files_seen"] += 1
        tree = read_tree(source_file.path, counts)
        if tree is None:
            continue
        counts["files_parsed"] += 1
        for qualname, doc in iter_docstrings(tree, source_file.module):
            counts["docstrings_found"] += 1
            try:
                summary, document = extract_example(doc)
            except Rejected as rejected:
                counts[f"rejected:{rejected.reason}"] += 1
                continue
            candidates.append(
                Candidate(
                    qualname,
                    source_file.module,
                    source_file.group,
                    source_file.source,
                    summary,
                    document,
                )
            )
    return candidates


# ---------------------------------------------------------------------------- deduplication


def dedup_key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def shingles(text: str) -> set[int]:
    tokens = dedup_key(text).split()
    grams = {
        " ".join(tokens[i : i + SHINGLE_WORDS]) for i in range(len(tokens) - SHINGLE_WORDS + 1)
    }
    return {zlib.crc32(g.encode()) for g in grams} or {0}


MINHASH_PRIME = (1 << 61) - 1
_MINHASH_RNG = np.random.default_rng(20240601)
MINHASH_A = _MINHASH_RNG.integers(1, 1 << 31, MINHASH_BANDS * MINHASH_ROWS, dtype=np.uint64)
MINHASH_B = _MINHASH_RNG.integers(0, 1 << 31, MINHASH_BANDS * MINHASH_ROWS, dtype=np.uint64)


def minhash_bands(shingle_set: set[int]) -> list[tuple[int, ...]]:
    values = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))
    hashed = (MINHASH_A[:, None] * values[None, :] + MINHASH_B[:, None]) % MINHASH_PRIME
    mins = hashed.min(axis=1).tolist()
    return [
        (band, *mins[band * MINHASH_ROWS : (band + 1) * MINHASH_ROWS])
        for band in range(MINHASH_BANDS)
    ]


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b)


def deduplicate(candidates: list[Candidate], counts: Counter[str]) -> list[Candidate]:
    """Keep the first of each identical summary, identical document, same document opening or
    near-duplicate document (shingle Jaccard >= NEAR_DUPLICATE_JACCARD); stdlib comes first."""
    ordered = sorted(candidates, key=lambda c: (c.source != "stdlib", c.source, c.id))
    seen: dict[str, set[str]] = defaultdict(set)
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    kept_shingles: list[set[int]] = []
    kept: list[Candidate] = []
    for cand in ordered:
        keys = {
            "summary": dedup_key(cand.summary),
            "document": dedup_key(cand.document),
            "opening": dedup_key(cand.document)[:PREFIX_CHARS],
        }
        duplicate = next((kind for kind, key in keys.items() if key in seen[kind]), None)
        if duplicate:
            counts[f"duplicate:{duplicate}"] += 1
            continue
        grams = shingles(cand.document)
        bands = minhash_bands(grams)
        near = {i for band in bands for i in buckets.get(band, ())}
        if any(jaccard(grams, kept_shingles[i]) >= NEAR_DUPLICATE_JACCARD for i in near):
            counts["duplicate:near"] += 1
            continue
        for kind, key in keys.items():
            seen[kind].add(key)
        for band in bands:
            buckets[band].append(len(kept))
        kept_shingles.append(grams)
        kept.append(cand)
    return kept


def make_ids_unique(candidates: list[Candidate]) -> None:
    used: Counter[str] = Counter()
    for cand in sorted(candidates, key=lambda c: (c.id, c.source, c.document)):
        used[cand.id] += 1
        if used[cand.id] > 1:
            cand.id = f"{cand.id}~{used[cand.id]}"


# ---------------------------------------------------------------------------- split and output


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def refine_large_groups(candidates: list[Candidate], largest_group: int) -> None:
    """A package directory with more than `largest_group` examples is split into its modules."""
    sizes = Counter(c.group for c in candidates)
    for cand in candidates:
        if sizes[cand.group] > largest_group:
            cand.group = cand.module


def assign_splits(candidates: list[Candidate], seed: int, target: int, largest_group: int) -> None:
    """Move whole module groups, in seeded hash order, to `test` until it has `target` rows.

    Groups with more than `largest_group` examples stay in `train`, so that `test` covers many.
    """
    sizes = Counter(c.group for c in candidates)
    test_groups: set[str] = set()
    n_test = 0
    for group in sorted(sizes, key=lambda g: (stable_hash(f"{seed}:{g}"), g)):
        if n_test >= target:
            break
        if sizes[group] <= largest_group:
            test_groups.add(group)
            n_test += sizes[group]
    for cand in candidates:
        cand.split = "test" if cand.group in test_groups else "train"


def near_copies_of_train(candidates: list[Candidate]) -> set[int]:
    """Indices of test rows whose document has shingle Jaccard >= CROSS_SPLIT_JACCARD with a
    train document (exact, through an inverted index of the train shingles)."""
    index: dict[int, list[int]] = defaultdict(list)
    train_shingles: dict[int, set[int]] = {}
    for i, cand in enumerate(candidates):
        if cand.split == "train":
            train_shingles[i] = shingles(cand.document)
            for gram in train_shingles[i]:
                index[gram].append(i)
    leaks = set()
    for i, cand in enumerate(candidates):
        if cand.split != "test":
            continue
        grams = shingles(cand.document)
        shared = Counter(j for gram in grams for j in index.get(gram, ()))
        if any(
            n / (len(grams) + len(train_shingles[j]) - n) >= CROSS_SPLIT_JACCARD
            for j, n in shared.items()
        ):
            leaks.add(i)
    return leaks


def split(
    candidates: list[Candidate], seed: int, min_test: int, counts: Counter[str]
) -> list[Candidate]:
    """Assign splits, drop test rows that nearly copy a train row, and top up the test split."""
    largest_group = max(1, min_test // 10)
    refine_large_groups(candidates, largest_group)
    target = min_test
    while True:
        assign_splits(candidates, seed, target, largest_group)
        leaks = near_copies_of_train(candidates)
        n_test = sum(c.split == "test" for c in candidates) - len(leaks)
        if n_test >= min_test or target >= len(candidates):
            break
        target += min_test - n_test
    counts["duplicate:near_train"] = len(leaks)
    return [c for i, c in enumerate(candidates) if i not in leaks]


def ordered_rows(candidates: list[Candidate], seed: int) -> list[dict[str, str]]:
    train = sorted((c for c in candidates if c.split == "train"), key=lambda c: c.id)
    test = sorted(
        (c for c in candidates if c.split == "test"),
        key=lambda c: (stable_hash(f"{seed}:{c.id}"), c.id),
    )
    return [c.row() for c in (*train, *test)]


def write_jsonl_gz(rows: list[dict[str, str]], out: Path) -> None:
    """Deterministic bytes (sorted keys, gzip mtime 0, no file name), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        for row in rows:
            gz.write((json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode())
    os.replace(tmp, out)


def report(counts: Counter[str], kept: list[Candidate], out: Path) -> None:
    print(f"files: {counts['files_seen']} seen, {counts['files_parsed']} parsed")
    for key in sorted(k for k in counts if k.startswith("file_")):
        print(f"  skipped {key[5:]}: {counts[key]}")
    print(f"docstrings found: {counts['docstrings_found']}")
    rejected = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("rejected:")}
    print(f"rejected: {sum(rejected.values())}")
    for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1]):
        print(f"  {reason}: {n}")
    dups = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("duplicate:")}
    print(f"accepted: {counts['accepted']}; deduplicated away: {sum(dups.values())} {dups}")
    split_counts = Counter(c.split for c in kept)
    test_groups = {c.group for c in kept if c.split == "test"}
    print(
        f"kept: {len(kept)} = {split_counts['train']} train + {split_counts['test']} test "
        f"({len(test_groups)} test module groups of {len({c.group for c in kept})})"
    )
    per_source = Counter(c.source for c in kept)
    per_source_test = Counter(c.source for c in kept if c.split == "test")
    print("per source (top 10): kept (test)")
    for source, n in per_source.most_common(10):
        print(f"  {source}: {n} ({per_source_test[source]})")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/pydocs.jsonl.gz"))
    parser.add_argument(
        "--site-packages",
        type=Path,
        default=Path(sysconfig.get_paths()["purelib"]),
        help="directory of installed packages to read (default: this interpreter's purelib)",
    )
    parser.add_argument("--no-site-packages", action="store_true", help="stdlib only")
    parser.add_argument("--seed", type=int, default=0, help="split and test-order seed")
    parser.add_argument("--min-test", type=int, default=500, help="test rows to reach, at least")
    args = parser.parse_args()

    start = time.perf_counter()
    counts: Counter[str] = Counter()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site_packages = None if args.no_site_packages else args.site_packages.resolve()
    candidates = collect(discover(stdlib, site_packages), counts)
    counts["accepted"] = len(candidates)
    kept = deduplicate(candidates, counts)
    make_ids_unique(kept)
    kept = split(kept, args.seed, args.min_test, counts)
    n_test = sum(c.split == "test" for c in kept)
    if n_test < args.min_test:
        sys.exit(f"only {n_test} test rows, fewer than --min-test {args.min_test}")
    write_jsonl_gz(ordered_rows(kept, args.seed), args.out)
    report(counts, kept, args.out)
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
