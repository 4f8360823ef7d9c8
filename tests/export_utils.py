"""Logits of our model and of an exported directory under transformers (export tests)."""
import jax
import jax.numpy as jnp
import numpy as np

from dsrl_jax.models import qwen2


def ours(cfg, params, tokens):
    mask = np.ones(tokens.shape, bool)
    logits, _ = jax.jit(qwen2.forward, static_argnums=0)(
        cfg, params, jnp.asarray(tokens), qwen2.positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
    return np.asarray(logits)


def transformers_logits(directory, tokens):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype="float32").eval()
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens, np.int64))).logits.float().numpy()
