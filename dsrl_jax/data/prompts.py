"""Problem record -> prompt token ids, with the model's chat template and a per-domain instruction.

    ids = format_prompt(record, tokenizer)               # "auto": chat template if it has one
    ids = format_prompt(record, char_tokenizer, "plain") # any object with .encode(str)

Math: the problem, then the instruction DeepSeek recommends for R1 models
("Please reason step by step, and put your final answer within \\boxed{}."); the math
reward reads the last \\boxed{} of the answer.

Code: LiveCodeBench's layout (a "### Question:" section, a "### Format:" section that
either says to read stdin / write stdout or shows the starter code to complete, and
"### Answer: (use the provided format with backticks)"), reworded here. The code reward
runs the last ```python block of the answer. The user message carries everything; R1
models are meant to run without a system prompt, so none is added unless asked.
"""
from __future__ import annotations

from collections.abc import Callable

from dsrl_jax.models import hf

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

CODE_FORMAT_STDIN = (
    "### Format: Write a Python program that reads its input from standard input, solves the "
    "problem and prints the answer to standard output (do not hard-code or directly test on the "
    "sample inputs). Put the whole program in one code block, like this:\n"
    "```python\n# YOUR CODE HERE\n```"
)
CODE_FORMAT_STARTER = (
    "### Format: Complete the solution by filling in the starter code below, and put your "
    "code in one code block:\n```python\n{starter_code}\n```"
)
CODE_ANSWER = "### Answer: (use the provided format with backticks)"
MODES = ("auto", "chat", "plain")


def math_prompt(problem: str, instruction: str = MATH_INSTRUCTION) -> str:
    return f"{problem.strip()}\n{instruction}" if instruction else problem.strip()


def code_prompt(problem: str, starter_code: str | None = None) -> str:
    fmt = CODE_FORMAT_STARTER.format(starter_code=starter_code.rstrip()) if starter_code else CODE_FORMAT_STDIN
    return f"### Question:\n{problem.strip()}\n\n{fmt}\n\n{CODE_ANSWER}\n\n"


def prompt_text(record: dict, math_instruction: str = MATH_INSTRUCTION) -> str:
    """The user message for a canonical record (see dsrl_jax/data/schema.py)."""
    domain = record.get("domain")
    if domain == "math":
        return math_prompt(record["problem"], math_instruction)
    if domain == "code":
        return code_prompt(record["problem"], record.get("starter_code"))
    raise ValueError(f"record {record.get('id')!r}: no prompt format for domain {domain!r}")


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of raw text: no special tokens for HF tokenizers, `.encode` for anything else."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # a minimal tokenizer: encode(text) only
        ids = tokenizer.encode(text)
    return [int(i) for i in ids]


def format_prompt(record: dict, tokenizer, mode: str = "auto", *, system: str | None = None,
                  plain_template: str = "{prompt}", math_instruction: str = MATH_INSTRUCTION) -> list[int]:
    """Prompt token ids for `record`.

    mode "chat": the tokenizer's chat template with a generation prompt (for R1-Distill
    models this ends with `<｜Assistant｜><think>\\n`). "plain": `plain_template` filled
    with the text, encoded as is (models without a template, e.g. the demo's character
    tokenizer). "auto": chat when the tokenizer has a template, else plain.
    """
    if mode not in MODES:
        raise ValueError(f"prompt mode {mode!r}; expected one of {MODES}")
    text = prompt_text(record, math_instruction)
    if mode == "auto":
        mode = "chat" if has_chat_template(tokenizer) else "plain"
    if mode == "plain":
        return encode_plain(tokenizer, plain_template.format(prompt=text))
    if not has_chat_template(tokenizer):
        raise ValueError(f"prompt mode 'chat' needs a tokenizer with a chat template; "
                         f"{type(tokenizer).__name__} has none (use mode='plain')")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return hf.chat_prompt_ids(tokenizer, messages)


def make_tokenize_fn(tokenizer, mode: str = "auto", **options) -> Callable[[dict], list[int]]:
    """`record -> prompt ids` for `PromptPipeline(tokenize_fn=...)` and the scorer."""
    if mode not in MODES:
        raise ValueError(f"prompt mode {mode!r}; expected one of {MODES}")
    return lambda record: format_prompt(record, tokenizer, mode, **options)
