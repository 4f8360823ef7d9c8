"""CharTokenizer: round trips, special tokens, clear errors on what it cannot encode."""
import pytest

from dsrl_jax.demo.task import make_split, solution
from dsrl_jax.demo.tokenizer import CharTokenizer
from dsrl_jax.data.prompts import MATH_INSTRUCTION


def test_round_trip_of_problems_solutions_and_instruction():
    tok = CharTokenizer()
    texts = [solution(r) for r in make_split(20, 0)] + [MATH_INSTRUCTION, "a\nb (1,2); x*y."]
    for text in texts:
        ids = tok.encode(text)
        assert all(3 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok(text)["input_ids"] == ids


def test_special_tokens():
    tok = CharTokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok.encode("1+2", add_special_tokens=True)
    assert ids[0] == tok.bos_token_id
    ids = ids + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids) == "1+2"
    assert tok.decode(ids, skip_special_tokens=False) == "<bos>1+2<eos><pad>"
    assert tok.vocab_size == len(tok) < 128


def test_format_prompt():
    tok = CharTokenizer()
    ids = tok.format_prompt("3+5-2")
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids) == "3+5-2="


def test_errors():
    tok = CharTokenizer()
    with pytest.raises(ValueError, match="cannot encode 'é' at position 2"):
        tok.encode("1+é")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_saved_hugging_face_tokenizer_matches(tmp_path):
    """save_pretrained's files, loaded the way every policy spec's tokenizer is
    (AutoTokenizer), give the same ids, text and prompts as CharTokenizer."""
    import numpy as np

    from dsrl_jax.data.prompts import format_prompt
    from dsrl_jax.models import hf
    from dsrl_jax.policy import default_stop_ids
    from dsrl_jax.demo.sft import demo_model_config

    tok = CharTokenizer()
    tok.save_pretrained(str(tmp_path))
    loaded = hf.load_tokenizer(str(tmp_path))
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert len(loaded) == tok.vocab_size
    texts = [solution(r) for r in make_split(30, 0)] + [MATH_INSTRUCTION, "a\nb (1,2); x*y.  \\boxed{3}"]
    for text in texts:
        assert loaded(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        assert loaded.encode(text, add_special_tokens=True) == tok.encode(text, add_special_tokens=True)
    rng = np.random.default_rng(0)
    for _ in range(300):  # what the sampler may produce, special tokens anywhere included
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(0, 40))).tolist()
        for skip in (True, False):
            assert loaded.decode(ids, skip_special_tokens=skip) == tok.decode(ids, skip_special_tokens=skip)
    for record in make_split(50, 1):  # the generic prompt builder, through the chat template
        assert format_prompt(record, loaded, "auto") == tok.format_prompt(record["problem"])
    cfg = demo_model_config(tok.vocab_size)
    assert default_stop_ids(cfg, loaded) == (tok.eos_token_id,)
