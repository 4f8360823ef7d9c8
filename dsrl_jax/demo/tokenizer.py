"""A character-level tokenizer for the CPU demo: no files, no downloads, ~100 ids.

Every printable ASCII character is one token, so any prompt text the generic code builds
(including the math instruction of dsrl_jax/data/prompts.py) encodes; anything else raises
a ValueError naming the character rather than silently mapping it to an unknown id. The
interface is the subset of a Hugging Face tokenizer that the supervised warm start uses
(`encode`, `decode`, `__call__`, the special-token ids, `vocab_size`).

`save_pretrained(dir)` writes the same tokenizer as Hugging Face files (a `tokenizers`
model with one token per character and no merges, whose chat template is the demo's
prompt), so a demo model directory is an ordinary policy spec: `load_policy(dir)` and every
entry point that takes a model (training, scoring, evaluation) load it through
`AutoTokenizer` with the same ids, the same decoded text and the same prompts
(tests/demo/test_tokenizer.py checks all three).
"""
from __future__ import annotations

import os
import string
from collections.abc import Iterable

SPECIALS = ("<pad>", "<bos>", "<eos>")
# Printable ASCII (letters, digits, punctuation incl. \ { } ( ) + - * = , ; .) plus newline.
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n"

# The demo's prompt ends with this separator; the model's answer follows it.
PROMPT_SEPARATOR = "="
# `format_prompt` as a chat template: BOS, the problem, "=". The generic prompt builder
# (dsrl_jax/data/prompts.py) puts the problem on the user message's first line and the
# boxed-answer instruction after it; the demo's model is trained without the instruction,
# so the template keeps the first line only.
CHAT_TEMPLATE = ("{{ bos_token }}{{ (messages | selectattr('role', 'equalto', 'user') | list | last)['content']"
                 ".split('\\n')[0] | trim }}" + PROMPT_SEPARATOR)


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

    def save_pretrained(self, directory: str) -> None:
        """This tokenizer as Hugging Face files in `directory` (AutoTokenizer loads them)."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, processors
        from transformers import PreTrainedTokenizerFast

        vocab = {token: i for i, token in enumerate(SPECIALS)}
        vocab.update(self._id)
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per character
        backend.decoder = decoders.Fuse()  # decoded text is the characters, concatenated
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
        backend.post_processor = processors.TemplateProcessing(  # add_special_tokens=True: BOS first
            single=f"{self.bos_token} $A", special_tokens=[(self.bos_token, self.bos_token_id)])
        hf_tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token=self.pad_token, bos_token=self.bos_token, eos_token=self.eos_token,
            clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE)
        os.makedirs(directory, exist_ok=True)
        hf_tokenizer.save_pretrained(directory)
