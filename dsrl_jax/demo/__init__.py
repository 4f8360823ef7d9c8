"""The CPU demo's built-in pieces: a character tokenizer, a synthetic arithmetic task with
graded difficulty, a supervised warm start and a Pass@1 evaluator.

    tok = CharTokenizer()
    splits = make_splits({"sft": 4000, "rl": 2000, "eval": 200}, seed=0)
    cfg = demo_model_config(tok.vocab_size)
    params = warm_start(cfg, tok, splits["sft"], steps=..., batch_size=64, lr=3e-3, seed=0)
    policy = load_policy(save_model("models/warm-start", cfg, params))  # dsrl_jax.policy
    print(pass_at_1(policy, splits["eval"], n=4, max_new_tokens=64, seed=0))

A saved demo model is an ordinary policy spec (a Hugging Face directory with the character
tokenizer's files), so configs name it like any other model. Nothing here downloads
anything; the demo runs on a laptop CPU in minutes (dsrl_jax/demo/run.py, configs/demo.py).
"""
from dsrl_jax.demo.tokenizer import CharTokenizer  # noqa: F401
from dsrl_jax.demo.task import make_record, make_split, make_splits, solution  # noqa: F401
from dsrl_jax.demo.sft import demo_model_config, save_model, sft_batch, warm_start  # noqa: F401
from dsrl_jax.demo.evaluate import EvalResult, pass_at_1  # noqa: F401
