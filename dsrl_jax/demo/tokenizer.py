"""A character-level tokenizer for the CPU demo: no files, no downloads, ~100 ids.

Every printable ASCII character is one token, so any prompt text the generic code builds
(including the math instruction of dsrl_jax/data/prompts.py) encodes; anything else raises
a ValueError naming the character rather than silently mapping it to an unknown id. The
interface is the subset of a Hugging Face tokenizer that the project's generic code uses
(`encode`, `decode`, `__call__`, the special-token ids, `vocab_size`), so the trainer,
sampler and evaluator need no demo-specific branches.
"""
from __future__ import annotations

import string
from collections.abc import Iterable

SPECIALS = ("<pad>", "<bos>", "<eos>")
# Printable ASCII (letters, digits, punctuation incl. \ { } ( ) + - * = , ; .) plus newline.
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n"

# The demo's prompt ends with this separator; the model's answer follows it.
PROMPT_SEPARATOR = "="


class CharTokenizer:
    """One id per character; ids 0, 1, 2 are PAD, BOS, EOS."""

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    pad_token, bos_token, eos_token = SPECIALS
    chat_template = None  # plain prompts (dsrl_jax.data.prompts "plain" mode)

    def __init__(self):
        self._id = {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}
        self._char = {i: c for c, i in self._id.items()}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(CHARS)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def all_special_ids(self) -> list[int]:
        return list(range(len(SPECIALS)))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; with add_special_tokens, BOS first (as HF causal-LM tokenizers do)."""
        ids = []
        for pos, c in enumerate(text):
            if c not in self._id:
                raise ValueError(
                    f"CharTokenizer cannot encode {c!r} at position {pos} of {text[:40]!r}; "
                    "it knows printable ASCII and newline only")
            ids.append(self._id[c])
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(SPECIALS):
                if not skip_special_tokens:
                    out.append(SPECIALS[i])
            elif i in self._char:
                out.append(self._char[i])
            else:
                raise ValueError(f"id {i} is outside the vocabulary (size {self.vocab_size})")
        return "".join(out)

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(r, skip_special_tokens) for r in rows]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def format_prompt(self, problem_text: str) -> list[int]:
        """The demo's prompt: BOS, the problem, then "=" (short prompts keep the demo fast)."""
        return [self.bos_token_id] + self.encode(problem_text.strip() + PROMPT_SEPARATOR)
