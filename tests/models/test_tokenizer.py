"""Tokenizers and chat templates from the real tokenizer directories."""
from dsrl_jax.models import hf

R1_IDS = {"bos": 151646, "eos": 151643, "user": 151644, "assistant": 151645, "think": 151648, "end_think": 151649}


def test_r1_distill_chat_template(r1_tokenizer_dir):
    tok = hf.load_tokenizer(str(r1_tokenizer_dir))
    ids = hf.chat_prompt_ids(tok, [{"role": "user", "content": "What is 1+1?"}])
    text = tok.decode(ids)
    assert text.startswith("<｜begin▁of▁sentence｜><｜User｜>What is 1+1?")
    assert text.endswith("<｜Assistant｜><think>\n")
    assert ids[0] == R1_IDS["bos"] and ids[1] == R1_IDS["user"]
    assert ids[-3:-1] == [R1_IDS["assistant"], R1_IDS["think"]]
    assert tok.convert_tokens_to_ids("</think>") == R1_IDS["end_think"]
    assert hf.stop_token_ids(tok, str(r1_tokenizer_dir)) == [R1_IDS["eos"]]


def test_qwen_instruct_chat_template(qwen_tokenizer_dir):
    tok = hf.load_tokenizer(str(qwen_tokenizer_dir))
    ids = hf.chat_prompt_ids(tok, [{"role": "user", "content": "Hi"}])
    text = tok.decode(ids)
    assert "<|im_start|>user\nHi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    stops = hf.stop_token_ids(tok, str(qwen_tokenizer_dir))
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops
