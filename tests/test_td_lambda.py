"""TD(lambda) value targets: the lambda-returns, their per-state rows, and training in rounds."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from iro.pipeline.value_training import train_value
from iro.valuefn.encoding import encode_pair
from iro.valuefn.model import TokenValueModel
from iro.valuefn.targets import regression_targets
from iro.valuefn.td import lambda_returns
from iro.valuefn.td_rounds import ROUND_DONE
from iro.valuefn.training import ValueCollator, state_values
from tests.conftest import tiny_value_config

# V_target at states 0..3 of a 3-token response; the last is never read (the final state is R)
VALUES = np.array([0.0, 0.2, 0.4, 99.0])


def test_lambda_one_without_discount_is_the_reward_at_every_state():
    returns = lambda_returns(VALUES, reward=1.5, trace_decay=1.0, discount=1.0)
    np.testing.assert_allclose(returns, [1.5] * 4)


def test_lambda_one_with_discount_is_the_discounted_monte_carlo_return():
    returns = lambda_returns(VALUES, reward=1.0, trace_decay=1.0, discount=0.9)
    np.testing.assert_allclose(returns, [0.9**3, 0.9**2, 0.9, 1.0])


def test_lambda_zero_bootstraps_one_step_from_the_next_states_value():
    returns = lambda_returns(VALUES, reward=1.0, trace_decay=0.0, discount=0.9)
    # G_t = gamma * V(t+1), the final state valued at R, not at V_target(3) = 99
    np.testing.assert_allclose(returns, [0.9 * 0.2, 0.9 * 0.4, 0.9 * 1.0, 1.0])


def test_lambda_half_with_discount_matches_the_recursion_by_hand():
    returns = lambda_returns(VALUES, reward=1.0, trace_decay=0.5, discount=0.9)
    g2 = 0.9 * (0.5 * 1.0 + 0.5 * 1.0)
    g1 = 0.9 * (0.5 * 0.4 + 0.5 * g2)
    g0 = 0.9 * (0.5 * 0.2 + 0.5 * g1)
    np.testing.assert_allclose(returns, [g0, g1, g2, 1.0])
    assert returns[0] == pytest.approx(0.35325)


def test_an_empty_response_has_one_state_valued_at_its_reward():
    np.testing.assert_allclose(lambda_returns(np.array([7.0]), 0.3, 0.5, 0.9), [0.3])


def packed_row(**extra) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "prompt_text": ["the list"],
            "responses": [["returns a value", "one"]],
            "ended": [[True, False]],
            "targets": [[0.5, -1.0]],
            "weights": [[1.0, 3.0]],
            **extra,
        }
    )


def test_collator_puts_per_state_targets_on_their_states(tiny_tokenizer):
    row = packed_row(state_targets=[[[0.1, 0.2, 0.3, 0.4, 0.5], [7.0, 8.0]]])
    batch = ValueCollator(tiny_tokenizer, max_length=64)(list(row))
    # prompt 2 tokens; response 0: 3 tokens + EOS at positions 2..5, its state t read at 1 + t;
    # response 1: one token at position 6, its state 0 read at 1 (the last prompt token)
    assert batch["value_mask"][0, 0].tolist() == [False] + [True] * 5 + [False]
    assert batch["targets"][0, 0, 1:6].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert batch["value_mask"][0, 1].tolist() == [False, True] + [False] * 4 + [True]
    assert batch["targets"][0, 1, [1, 6]].tolist() == [7.0, 8.0]


def test_per_state_targets_must_cover_every_state(tiny_tokenizer):
    row = packed_row(state_targets=[[[0.1, 0.2, 0.3, 0.4], [7.0, 8.0]]])  # 4 for states 0..4
    with pytest.raises(ValueError, match="4 per-state targets for a response of 4 tokens"):
        ValueCollator(tiny_tokenizer, max_length=64)(list(row))


def test_per_state_targets_are_standardised_with_their_response_weight_shared():
    targets, weights = regression_targets(packed_row(state_targets=[[[0.0, 2.0], [4.0]]]))
    assert targets.tolist() == [0.0, 2.0, 4.0]
    assert weights.tolist() == [0.5, 0.5, 3.0]


def test_state_values_are_each_prefix_value_read_alone(tiny_lm, tiny_tokenizer):
    torch.manual_seed(1)
    model = TokenValueModel.from_causal_lm(str(tiny_lm))
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    collator = ValueCollator(tiny_tokenizer, max_length=64)
    values = state_values(model, collator, packed_row(), batch_size=1)[0]
    assert [len(v) for v in values] == [5, 2]  # states 0..4 and 0..1
    for response, ended, found in zip(
        ["returns a value", "one"], [True, False], values, strict=True
    ):
        ids = torch.tensor([encode_pair(tiny_tokenizer, "the list", response, ended, 64).input_ids])
        with torch.no_grad():
            alone = model(ids, torch.ones_like(ids))[0, 1:]  # state t at position 1 + t
        np.testing.assert_allclose(found, alone.numpy(), rtol=1e-5, atol=1e-5)


def td_config(tiny_lm: Path, target_updates: int, **td):
    return tiny_value_config(
        tiny_lm,
        {"target": "td_lambda", "td": {"target_updates": target_updates, "trace_decay": 0.5, **td}},
        {"per_device_train_batch_size": 2, "learning_rate": 1e-2},
    )


TABLE = pd.DataFrame(
    {
        "prompt_text": ["the document"] * 4,
        "response": ["returns a value", "list of file path", "one short sentence", "the name"],
        "ended": [True, True, False, True],
        "reward": [1.0, -1.0, 0.5, 0.0],
        "prompt_mean_reward": [0.125] * 4,
        "weight": [1.0, 1.0, 2.0, 1.0],
    }
)


def train(tiny_lm: Path, tmp_path: Path, target_updates: int, work: str = "work", **td):
    metrics = train_value(
        td_config(tiny_lm, target_updates, **td), TABLE, None, tmp_path / "out", tmp_path / work
    )
    return metrics, TokenValueModel.load(tmp_path / "out")


def test_td_training_runs_every_round_and_marks_each_done(tiny_lm, tmp_path):
    metrics, _ = train(tiny_lm, tmp_path, target_updates=2)
    assert [(tmp_path / "work" / f"round-{r}" / ROUND_DONE).is_file() for r in (1, 2, 3)] == [
        True,
        True,
        False,
    ]
    assert metrics["rounds_resumed"] == 0
    assert metrics["round_1_steps"] == metrics["round_2_steps"] == 4  # 4 rows, batch 2, 2 epochs
    assert metrics["train_loss"] == metrics["round_2_train_loss"]


def test_round_one_from_a_fresh_model_regresses_to_monte_carlo_returns(tiny_lm, tmp_path):
    metrics, _ = train(tiny_lm, tmp_path, target_updates=1)
    # lambda = 1, gamma = 1: the reward at every state, so the targets' mean is the weighted
    # mean reward (bootstrapping the fresh head's ~0 values would pull it towards 0)
    assert metrics["round_1_target_mean"] == pytest.approx(
        np.average(TABLE.reward, weights=TABLE.weight)
    )


def test_a_process_killed_between_rounds_resumes_at_the_next_round(tiny_lm, tmp_path):
    first, _ = train(tiny_lm, tmp_path, target_updates=1)  # round 1 done, then "killed"
    resumed, model = train(tiny_lm, tmp_path, target_updates=2)
    assert resumed["rounds_resumed"] == 1
    assert resumed["round_1_train_loss"] == first["round_1_train_loss"]
    _, straight = train(tiny_lm, tmp_path, target_updates=2, work="straight")
    for (name, a), b in zip(
        model.state_dict().items(), straight.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)  # as if it had never stopped
