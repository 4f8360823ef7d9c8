"""Random-weight `transformers` Qwen2 checkpoints for parity tests."""
import numpy as np
import torch
import transformers


def make_hf_model(out_dir=None, *, seed=0, bias_std=0.1, head_scale=1.0, max_shard_size=None, **kw):
    """A `Qwen2ForCausalLM` with random weights (non-zero biases so they are tested), saved
    with `save_pretrained` when `out_dir` is given. `head_scale` multiplies the LM head to
    make next-token distributions peaky (greedy parity without near-ties)."""
    defaults = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                    tie_word_embeddings=True, max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**defaults, **kw})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, bias_std)
        if head_scale != 1.0:
            model.lm_head.weight.mul_(head_scale)
    if out_dir is not None:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out_dir, **kwargs)
    return model


def hf_logits(model, tokens, mask=None):
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(tokens)),
                    attention_mask=None if mask is None else torch.tensor(np.asarray(mask).astype(np.int64)))
    return out.logits.float().numpy()
