"""A Hugging Face sequence-classification reward model (any AutoModelForSequenceClassification).

The (prompt, response) pair is shown the way the model was trained: through its chat template
when the tokenizer has one, else as a text pair (the classic encoder reward models' format).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from iro.reward.base import ModelReward, checked_dtype


class SequenceClassifierReward(ModelReward):
    name = "hf_classifier"

    def __init__(
        self,
        model: str,
        label: int = 0,
        batch_size: int = 16,
        max_length: int = 1024,
        use_chat_template: bool = True,
        trust_remote_code: bool = False,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        self.model_ref = model
        self.label = label
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.trust_remote_code = trust_remote_code
        self.device = device
        self.dtype = checked_dtype(self.name, dtype)

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            self.model_ref, trust_remote_code=self.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_ref,
            trust_remote_code=self.trust_remote_code,
            use_safetensors=True,
            dtype=torch.float32,  # not the checkpoint's: `dtype` autocasts the forward instead
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        if not 0 <= self.label < model.config.num_labels:
            raise ValueError(
                f"hf_classifier {self.model_ref}: label {self.label} out of range "
                f"(the model has {model.config.num_labels} labels)"
            )
        # frozen: autocast would otherwise keep a low-precision copy of every weight per call
        return model.requires_grad_(False).to(self.device).eval()

    @property
    def uses_chat_template(self) -> bool:
        return self.use_chat_template and bool(self.tokenizer.chat_template)

    def chat_texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """Each pair rendered as a user/assistant conversation by the model's chat template."""
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                tokenize=False,
            )
            for p, r in zip(prompts, responses, strict=True)
        ]

    def _encode(self, prompts: Sequence[str], responses: Sequence[str]):
        common = {
            "return_tensors": "pt",
            "padding": True,
            "truncation": True,
            "max_length": self.max_length,
        }
        if self.uses_chat_template:
            # the template already holds any special tokens the model expects
            texts = self.chat_texts(prompts, responses)
            return self.tokenizer(texts, add_special_tokens=False, **common)
        return self.tokenizer(list(prompts), list(responses), **common)

    def _score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        scores = []
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            batch = self._encode(prompts[start:stop], responses[start:stop]).to(self.device)
            logits = self.model(**batch).logits
            scores.append(logits[:, self.label].float().cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)
