import pytest
import torch
import torch.nn.functional as F

from ddrn.models.embedding_space import EmbeddingSpace

OLD = {"similarity": "dot", "kmeans_init": False, "dead_code_threshold": 0.0}
"""The plain Eq. 1-2 lookup (no data init, no restart): what the equation tests check."""


def _space(sampling: str = "gumbel", **kwargs) -> EmbeddingSpace:
    torch.manual_seed(0)
    return EmbeddingSpace(num_embeddings=16, dim=8, tau=0.1, sampling=sampling,
                          **{**OLD, **kwargs})


def _logits(space: EmbeddingSpace, tokens: torch.Tensor) -> torch.Tensor:
    queries = F.normalize(tokens, dim=-1) if space.similarity == "cosine" else tokens
    return queries @ space.codes().t()


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_forward_is_exactly_a_codebook_row_and_grads_reach_tokens_and_codebook(similarity):
    space = _space(similarity=similarity).train()
    tokens = torch.randn(2, 5, 8, requires_grad=True)
    quantized, indices = space(tokens)
    assert quantized.shape == (2, 5, 8) and indices.shape == (2, 5) and indices.dtype == torch.int64
    assert torch.equal(quantized, space.codes()[indices])  # bit-for-bit rows
    if similarity == "dot":
        assert torch.equal(space.codes(), space.weight)
    else:  # the lookup returns unit-norm codes
        torch.testing.assert_close(quantized.norm(dim=-1), torch.ones(2, 5))
    (quantized * torch.randn_like(quantized)).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert space.weight.grad is not None
    # Rows never chosen still get a gradient through the soft surrogate (when not saturated).
    assert torch.isfinite(tokens.grad).all() and torch.isfinite(space.weight.grad).all()


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_training_index_is_the_clean_argmax_even_with_gumbel_noise(similarity):
    space = _space(similarity=similarity).train()
    tokens = torch.randn(4, 7, 8)
    _, indices = space(tokens)
    assert torch.equal(indices, _logits(space, tokens).argmax(-1))


def test_cosine_ignores_token_and_code_norms_where_the_dot_product_does_not():
    tokens = torch.randn(3, 6, 8)
    scale = torch.rand(3, 6, 1) * 10 + 0.1
    cos = _space(similarity="cosine").eval()
    with torch.no_grad():
        cos.weight.mul_(torch.rand(16, 1) * 10 + 0.1)  # codes of very different norms
    assert torch.equal(cos(tokens)[1], cos(tokens * scale)[1])
    unit = F.normalize(tokens, dim=-1) @ F.normalize(cos.weight, dim=-1).t()
    assert torch.equal(cos(tokens)[1], unit.argmax(-1))
    # The dot product lets the longest code win: here it takes every token.
    dot = _space(similarity="dot").eval()
    with torch.no_grad():
        dot.weight[3] = tokens.reshape(-1, 8).mean(0) * 100
    assert (dot(tokens)[1] == 3).float().mean() > 0.5
    assert (cos.eval()(tokens)[1] == 3).float().mean() < 0.5


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_noisy_argmax_sampling_differs_from_clean_argmax_in_training_not_in_eval(similarity):
    space = _space(similarity=similarity, train_index="sample")
    tokens = torch.randn(8, 50, 8)
    clean = _logits(space, tokens).argmax(-1)
    torch.manual_seed(1)
    trained = space.train()(tokens)
    assert not torch.equal(trained[1], clean)  # Gumbel noise picks other codes
    assert torch.equal(trained[0], space.codes()[trained[1]])  # still exact codes
    evaluated = space.eval()(tokens)
    assert torch.equal(evaluated[1], clean)  # evaluation: the clean argmax, every time
    assert torch.equal(space(tokens)[1], clean)
    # The noise-free surrogate (sampling: default) has nothing to sample from.
    default = _space("default", similarity=similarity, train_index="sample").train()
    assert torch.equal(default(tokens)[1], _logits(default, tokens).argmax(-1))


def test_eval_picks_max_dot_product_code_deterministically():
    space = _space().eval()
    tokens = torch.randn(3, 6, 8)
    q1, i1 = space(tokens)
    q2, i2 = space(tokens)
    assert torch.equal(i1, (tokens @ space.weight.t()).argmax(-1))
    assert torch.equal(q1, q2) and torch.equal(i1, i2)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_gradient_matches_textbook_straight_through_for_default_sampling(similarity):
    space = _space("default", similarity=similarity).train()
    tokens = torch.randn(2, 3, 8, requires_grad=True)
    upstream = torch.randn(2, 3, 8)
    (space(tokens)[0] * upstream).sum().backward()
    ours_t, ours_w = tokens.grad.clone(), space.weight.grad.clone()
    tokens.grad = None
    space.weight.grad = None
    codes = space.codes()
    soft = torch.softmax(_logits(space, tokens) / space.tau, -1)
    hard = F.one_hot(soft.argmax(-1), 16).float()
    ((hard - soft.detach() + soft) @ codes * upstream).sum().backward()
    torch.testing.assert_close(ours_t, tokens.grad)
    torch.testing.assert_close(ours_w, space.weight.grad)


def test_gumbel_path_with_fp16_tokens_has_no_nan():
    space = _space(similarity="cosine", kmeans_init=True, dead_code_threshold=0.1).train()
    tokens = (torch.randn(4, 50, 8) * 30).half().requires_grad_()
    quantized, _ = space(tokens)
    assert quantized.dtype == torch.float16 and torch.isfinite(quantized).all()
    quantized.float().sum().backward()
    assert torch.isfinite(tokens.grad).all() and torch.isfinite(space.weight.grad).all()


def _clustered_tokens(centres: torch.Tensor, per_centre: int, noise: float = 0.01) -> torch.Tensor:
    """(1, k * per_centre, D) tokens scattered tightly around each of the (k, D) centres."""
    gen = torch.Generator().manual_seed(5)
    pts = centres.repeat_interleave(per_centre, 0)
    return (pts + noise * torch.randn(pts.shape, generator=gen))[None]


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_kmeans_init_places_the_codes_on_the_first_batch_tokens_once(similarity):
    space = _space(similarity=similarity, kmeans_init=True)
    # Far more tokens than codes, in 16 tight clusters far from the random initial codes.
    centres = F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(2)), dim=-1) * 5
    tokens = _clustered_tokens(centres, 40)
    assert not bool(space.initialized)
    space.eval()(tokens)  # evaluation never initialises
    assert not bool(space.initialized)
    space.train()(tokens)
    assert bool(space.initialized)
    # Each cluster got a code near its centre (k-means from random points can merge two clusters
    # and split one; most must be matched), and every code sits on the data.
    target = F.normalize(centres, dim=-1) if similarity == "cosine" else centres
    dist = torch.cdist(target, space.weight.detach())  # (16 centres, 16 codes)
    assert (dist.min(dim=1).values < 0.1).sum() >= 12
    assert (dist.min(dim=0).values < 0.5 * target.norm(dim=-1).max()).all()
    _, indices = space.eval()(tokens)
    assert space.usage(indices)["dead_codes"] <= 4
    # A second training step does not re-initialise.
    before = space.weight.detach().clone()
    space.train()(tokens * -1.0)
    assert torch.equal(before, space.weight)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_dead_code_restart_revives_an_unused_code_from_batch_tokens(similarity):
    space = _space(similarity=similarity, dead_code_threshold=0.5, restart_every=4,
                   usage_decay=0.5).train()
    tokens = torch.randn(1, 64, 8).abs()  # one orthant
    with torch.no_grad():
        space.weight[7] = -space.weight[7].abs() * 3  # points away from every token: never wins
    steps = []
    for _ in range(4):
        _, indices = space(tokens)
        steps.append(bool((indices == 7).any()))
    # Code 7 was never picked in the first steps and was restarted at step 4 from a batch token.
    assert not any(steps[:3])
    expected = F.normalize(tokens[0], dim=-1) if similarity == "cosine" else tokens[0]
    assert (space.weight.detach()[7] - expected).norm(dim=-1).min() < 1e-5
    assert int(space.steps) == 4
    _, indices = space(tokens)
    if similarity == "cosine":  # alive: cosine 1 with the token it was seeded from
        assert bool((indices == 7).any())
    # (Under the dot product a longer restarted token can still take it: why cosine is chosen.)


def test_restart_and_init_are_off_with_threshold_zero_and_no_kmeans():
    space = _space().train()
    before = space.weight.detach().clone()
    with torch.no_grad():
        for _ in range(25):
            space(torch.randn(2, 5, 8))
    assert torch.equal(before, space.weight) and int(space.steps) == 0


def test_init_and_usage_state_survive_a_state_dict_round_trip():
    space = _space(similarity="cosine", kmeans_init=True, dead_code_threshold=0.1).train()
    space(torch.randn(2, 40, 8))
    state = space.state_dict()
    assert {"weight", "initialized", "usage_ema", "steps"} <= set(state)
    fresh = _space(similarity="cosine", kmeans_init=True, dead_code_threshold=0.1)
    fresh.load_state_dict(state)
    assert bool(fresh.initialized) and int(fresh.steps) == 1
    # A resumed space does not re-run k-means on its next batch.
    fresh.train()(torch.randn(2, 40, 8) + 10)
    torch.testing.assert_close(fresh.weight, space.weight)


def test_codebook_asks_for_no_weight_decay_unless_configured():
    assert _space().exclude_from_weight_decay() == {"weight"}
    assert _space(weight_decay=True).exclude_from_weight_decay() == set()


def test_usage_reports_histogram_perplexity_and_dead_codes():
    space = _space()
    stats = space.usage(torch.tensor([[0, 0, 1, 1]]))
    assert stats["histogram"].tolist()[:3] == [2, 2, 0] and int(stats["histogram"].sum()) == 4
    assert abs(stats["perplexity"] - 2.0) < 1e-9
    assert stats["dead_codes"] == 14
    uniform = space.usage(torch.arange(16))
    assert abs(uniform["perplexity"] - 16.0) < 1e-9 and uniform["dead_codes"] == 0
