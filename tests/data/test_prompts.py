"""Prompt formatting: math/code instructions, the R1 chat template, plain tokenizers."""
import pytest

from dsrl_jax.data import prompts

MATH = {"id": "m", "domain": "math", "problem": "  What is 1+1?\n", "answer": "2"}
STDIN = {"id": "c", "domain": "code", "problem": "Read n, print n+1.", "tests": []}
STARTER = {**STDIN, "id": "s", "starter_code": "class Solution:\n    def f(self, n: int) -> int:\n        "}


class CharTokenizer:
    """Like the demo's: encode(text) only, no chat template."""

    def encode(self, text):
        return [ord(c) for c in text]


def test_math_prompt_appends_the_boxed_instruction():
    text = prompts.prompt_text(MATH)
    assert text == "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}."


def test_code_prompt_stdin_and_starter_follow_lcb_layout():
    text = prompts.prompt_text(STDIN)
    assert text.startswith("### Question:\nRead n, print n+1.\n\n### Format:")
    assert "standard input" in text and "# YOUR CODE HERE" in text
    assert text.rstrip().endswith("### Answer: (use the provided format with backticks)")
    text = prompts.prompt_text(STARTER)
    assert "standard input" not in text and "starter code" in text
    assert "```python\nclass Solution:\n    def f(self, n: int) -> int:\n```" in text
    assert text.index("### Question") < text.index("### Format") < text.index("### Answer")


def test_unknown_domain_is_a_clear_error():
    with pytest.raises(ValueError, match="no prompt format for domain 'bio'"):
        prompts.prompt_text({"id": "x", "domain": "bio", "problem": "p"})
    with pytest.raises(ValueError, match="prompt mode"):
        prompts.format_prompt(MATH, CharTokenizer(), "jinja")


def test_plain_mode_with_a_char_tokenizer():
    tok = CharTokenizer()
    ids = prompts.format_prompt(MATH, tok)  # auto -> plain: no template
    assert "".join(map(chr, ids)) == prompts.prompt_text(MATH)
    ids = prompts.format_prompt(MATH, tok, "plain", plain_template="Q: {prompt}\nA:")
    assert "".join(map(chr, ids)).startswith("Q: What is 1+1?") and chr(ids[-1]) == ":"
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        prompts.format_prompt(MATH, tok, "chat")
    fn = prompts.make_tokenize_fn(tok, "plain")
    assert fn(STDIN) == [ord(c) for c in prompts.prompt_text(STDIN)]


def test_chat_mode_with_the_r1_tokenizer(r1_tokenizer_dir):
    from dsrl_jax.models import hf

    tok = hf.load_tokenizer(str(r1_tokenizer_dir))
    ids = prompts.format_prompt(MATH, tok)
    text = tok.decode(ids)
    assert ids[0] == 151646 and ids[1] == 151644  # BOS, <｜User｜>
    assert ids[-3:-1] == [151645, 151648]  # <｜Assistant｜><think>
    assert "What is 1+1?\nPlease reason step by step" in text
    plain = prompts.format_prompt(MATH, tok, "plain")
    assert tok.decode(plain) == prompts.prompt_text(MATH) and 151646 not in plain
    code = tok.decode(prompts.format_prompt(STARTER, tok))
    assert "### Question:" in code and "class Solution" in code
