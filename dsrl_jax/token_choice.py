"""Per-step token choice for the samplers: argmax, top-k / top-p draws, per-row random
numbers and the log-probs returned with each token. Pure functions of [B, V] fp32 logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Per-step token choice. Everything here reads the [B, V] logits a few times and never
# sorts or draws V random numbers: on CPU a full-vocabulary sort costs ~0.4 s per step and
# V Gumbel draws ~30 ms, more than the model's forward. Rows are cut into blocks of BLOCK
# entries, so each search is one pass over the vocabulary plus work on [B, V / BLOCK].
BLOCK = 128


def _blocks(x: jax.Array, fill) -> jax.Array:
    """[B, N] -> [B, ceil(N / BLOCK), BLOCK], padded with `fill`."""
    b, n = x.shape
    nb = -(-n // BLOCK)
    return jnp.pad(x, ((0, 0), (0, nb * BLOCK - n)), constant_values=fill).reshape(b, nb, BLOCK)


def _row_block(x: jax.Array, j: jax.Array) -> jax.Array:
    """x [B, nb, BLOCK], j [B] -> block j of each row [B, BLOCK]."""
    return jnp.take_along_axis(x, j[:, None, None], axis=1)[:, 0]


def argmax(logits: jax.Array) -> jax.Array:
    """First index of the row maximum (jnp.argmax semantics), via block maxima."""
    x = _blocks(logits, -jnp.inf)
    j = jnp.argmax(x.max(-1), axis=-1)
    return (j * BLOCK + jnp.argmax(_row_block(x, j), axis=-1)).astype(jnp.int32)


def nucleus_threshold(probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """Per row, the smallest probability in the top-p nucleus: the tokens kept are those
    whose strictly more probable tokens hold less than top_p of the mass, i.e. probs >= the
    returned value. Found by bisection on the float bit patterns (monotone for p >= 0):
    32 masked sums, exact, no sort."""
    bits = jax.lax.bitcast_convert_type(probs, jnp.int32)

    def step(_, bounds):  # invariant: mass(bits > lo) >= top_p > mass(bits > hi)
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        small = jnp.where(bits > mid[:, None], probs, 0.0).sum(-1) < top_p
        return jnp.where(small, lo, mid), jnp.where(small, mid, hi)

    lo = jnp.full(probs.shape[:1], -1, jnp.int32)
    _, hi = jax.lax.fori_loop(0, 32, step, (lo, bits.max(-1)))
    return jax.lax.bitcast_convert_type(hi, jnp.float32)


def sample_weights(weights: jax.Array, u: jax.Array) -> jax.Array:
    """Inverse-CDF draw from unnormalised weights >= 0 [B, N] with uniforms u [B] in
    [0, 1): the block holding u * total, then the token inside it. Never returns a
    zero-weight token (rounding at a block's end falls back to its last positive one)."""
    x = _blocks(weights, 0.0)
    mass = x.sum(-1)  # [B, nb]
    cdf = jnp.cumsum(mass, axis=-1)
    target = u * cdf[:, -1]
    j = jnp.minimum((cdf <= target[:, None]).sum(-1), mass.shape[1] - 1)
    pick = lambda a: jnp.take_along_axis(a, j[:, None], axis=1)[:, 0]
    rest = target - (pick(cdf) - pick(mass))
    row = _row_block(x, j)
    k = (jnp.cumsum(row, axis=-1) <= rest[:, None]).sum(-1)
    last_positive = BLOCK - 1 - jnp.argmax((row > 0)[:, ::-1], axis=-1)
    return (j * BLOCK + jnp.minimum(k, last_positive)).astype(jnp.int32)


def row_uniforms(rng: jax.Array, rows: jax.Array, steps: jax.Array) -> jax.Array:
    """One uniform in [0, 1) per row [B] for token `steps[b]` of output row `rows[b]`, from
    key fold_in(fold_in(rng, row), step): a row's draws do not depend on its batch, its
    slot or when it ran, so the static and continuous-batching paths draw alike."""
    key = lambda r, i: jax.random.fold_in(jax.random.fold_in(rng, r), i)
    return jax.vmap(lambda r, i: jax.random.uniform(key(r, i)))(rows, steps)


def choose(logits, u, temperature, top_p, *, greedy: bool, top_k: int, use_top_p: bool):
    """Next tokens [B] from fp32 logits [B, V]: argmax, or a draw (with uniforms u [B]) from
    softmax(logits / T) restricted to the top-k and then to the top-p nucleus."""
    if greedy:
        return argmax(logits)
    z = logits / temperature
    ids = None
    if top_k and top_k < z.shape[-1]:
        z, ids = jax.lax.top_k(z, top_k)
    probs = jax.nn.softmax(z, axis=-1)
    if use_top_p:
        probs = jnp.where(probs >= nucleus_threshold(probs, top_p)[:, None], probs, 0.0)
    choice = sample_weights(probs, u)
    if ids is None:
        return choice
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def token_logprob(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log_softmax(logits)[tokens] without materialising the [B, V] log-softmax."""
    top = logits.max(-1)
    lse = top + jnp.log(jnp.exp(logits - top[:, None]).sum(-1))
    return jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - lse


def sampled_logprob(logits, tokens, temperature, *, greedy: bool) -> jax.Array:
    """The log-prob returned with each token: log_softmax(logits / T) at the token (T = 1
    when greedy), the distribution the row was drawn from before top-k / top-p truncation
    (what verl and TRL use for the policy update)."""
    return token_logprob(logits if greedy else logits / temperature, tokens)
