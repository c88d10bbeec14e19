"""AlpacaEval through the `alpaca-eval` package, with an annotator that can be any
OpenAI-compatible server.

The length-controlled win rate is only meaningful on the 805 AlpacaEval instructions in their
order (its GLM is fitted against that set), so it is reported only there; on any other prompt
set the plain win rate is reported, and the report says which one it is.

The annotator config written next to the report never holds the key: at run time a private
client config (key + base URL) is written to a temporary 0600 file and handed to alpaca-eval
through `client_config_path`, then deleted.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from iro.core.fsutil import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

ANNOTATOR_NAME = "iro_pairwise"
ALPACA_EVAL_SIZE = 805
PROMPT_TEMPLATE = """<|im_start|>system
You are a careful evaluator who picks the better of two outputs for an instruction.
<|im_end|>
<|im_start|>user
Select the output, (a) or (b), that better follows the instruction. Answer with exactly \
"Output (a)" or "Output (b)" and nothing else.

## Instruction:
{instruction}

## Output (a):
{output_1}

## Output (b):
{output_2}

## Which is better, Output (a) or Output (b)?
<|im_end|>"""


@dataclass(frozen=True)
class AlpacaEvalResult:
    metric: str  # "length_controlled_winrate" or "win_rate" (alpaca-eval's names)
    value: float | None  # percent, as alpaca-eval reports it
    win_rate: float | None
    standard_error: float | None
    n_total: int
    n_wins: int
    n_draws: int
    failures: int  # annotations without a parsable preference
    reason: str


def to_alpaca_records(
    instructions: Sequence[str], outputs: Sequence[str], generator: str
) -> list[dict[str, str]]:
    return [
        {"instruction": i, "output": o, "generator": generator}
        for i, o in zip(instructions, outputs, strict=True)
    ]


def annotator_config(model: str, max_tokens: int, client_config_path: str | None) -> dict:
    kwargs = {
        "model_name": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "requires_chatml": True,
    }
    if client_config_path is not None:
        kwargs["client_config_path"] = client_config_path
    return {
        ANNOTATOR_NAME: {
            "prompt_template": f"{ANNOTATOR_NAME}/prompt.txt",  # relative to its parent
            "fn_completions": "openai_completions",
            "completions_kwargs": kwargs,
            "fn_completion_parser": "regex_parser",
            "completion_parser_kwargs": {
                "outputs_to_match": {1: r"(?i)output \(a\)", 2: r"(?i)output \(b\)"}
            },
            "batch_size": 1,
        }
    }


def write_annotator(directory: Path, config: dict) -> Path:
    """An alpaca-eval annotator config directory (configs.yaml + its prompt template)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "configs.yaml", yaml.safe_dump(config, sort_keys=True))
    atomic_write_text(directory / "prompt.txt", PROMPT_TEMPLATE)
    return directory / "configs.yaml"


def length_controlled_validity(instructions: Sequence[str]) -> tuple[bool, str]:
    """Whether these are the 805 AlpacaEval instructions in order (needs its hub files)."""
    if len(instructions) != ALPACA_EVAL_SIZE:
        return False, (
            f"{len(instructions)} prompts, not the {ALPACA_EVAL_SIZE} AlpacaEval instructions: "
            "plain win rate reported (the length-controlled one is only valid on that set)"
        )
    try:
        import datasets

        reference = datasets.load_dataset("tatsu-lab/alpaca_eval", "alpaca_eval", split="eval")
    except Exception as err:
        return False, f"AlpacaEval hub files unavailable ({type(err).__name__}): plain win rate"
    if list(reference["instruction"]) != list(instructions):
        return False, "prompts differ from the AlpacaEval set or its order: plain win rate"
    return True, "the 805 AlpacaEval instructions in order: length-controlled win rate"


def _write_client_config(directory: Path, api_key: str, base_url: str | None) -> Path:
    path = directory / "client.yaml"
    client = {"api_key": api_key, **({"base_url": base_url} if base_url else {})}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"default": [client]}, handle)
    return path


def _number(value) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


def run_alpaca_eval(
    out: Path,
    instructions: Sequence[str],
    method_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    method: str,
    baseline: str,
    model: str,
    api_key: str,
    base_url: str | None,
    max_tokens: int = 16,
) -> AlpacaEvalResult:
    """Annotate (baseline, method) pairs with alpaca-eval; files land in `out`."""
    from alpaca_eval.main import evaluate

    model_records = to_alpaca_records(instructions, method_outputs, method)
    reference_records = to_alpaca_records(instructions, baseline_outputs, baseline)
    atomic_write_json(out / "model_outputs.json", model_records)
    atomic_write_json(out / "reference_outputs.json", reference_records)
    write_annotator(out / ANNOTATOR_NAME, annotator_config(model, max_tokens, None))
    lc_valid, reason = length_controlled_validity(instructions)
    metric = "length_controlled_winrate" if lc_valid else "win_rate"
    with tempfile.TemporaryDirectory(prefix="iro-alpaca-") as private:
        private_dir = Path(private)
        client_path = _write_client_config(private_dir, api_key, base_url)
        configs = write_annotator(
            private_dir / ANNOTATOR_NAME, annotator_config(model, max_tokens, str(client_path))
        )
        leaderboard, annotations = evaluate(
            model_outputs=pd.DataFrame(model_records),
            reference_outputs=pd.DataFrame(reference_records),
            annotators_config=str(configs),
            name=method,
            output_path=None,
            precomputed_leaderboard=None,
            is_return_instead_of_print=True,
            fn_metric="get_length_controlled_winrate" if lc_valid else "get_winrate",
            is_cache_leaderboard=False,
            sort_by=metric,
        )
    annotations = pd.DataFrame(annotations)
    annotations.drop(columns=["raw_completion"], errors="ignore").to_json(
        out / "annotations.json", orient="records", indent=2
    )
    row = leaderboard.loc[method].to_dict()
    # alpaca-eval drops annotations it could not parse: whatever is not counted failed
    failures = len(instructions) - int(row.get("n_total", 0))
    return AlpacaEvalResult(
        metric=metric,
        value=_number(row.get(metric)),
        win_rate=_number(row.get("win_rate")),
        standard_error=_number(row.get("standard_error")),
        n_total=int(row.get("n_total", 0)),
        n_wins=int(row.get("n_wins", 0)),
        n_draws=int(row.get("n_draws", 0)),
        failures=failures,
        reason=reason,
    )
