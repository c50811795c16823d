import torch

from ddrn.models.embedding_space import EmbeddingSpace


def _space(sampling: str = "gumbel") -> EmbeddingSpace:
    torch.manual_seed(0)
    return EmbeddingSpace(num_embeddings=16, dim=8, tau=0.1, sampling=sampling)


def test_forward_is_exactly_a_codebook_row_and_grads_reach_tokens_and_codebook():
    space = _space().train()
    tokens = torch.randn(2, 5, 8, requires_grad=True)
    quantized, indices = space(tokens)
    assert quantized.shape == (2, 5, 8) and indices.shape == (2, 5) and indices.dtype == torch.int64
    assert torch.equal(quantized, space.weight[indices])  # bit-for-bit rows
    (quantized * torch.randn_like(quantized)).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert space.weight.grad is not None
    # Rows never chosen still get a gradient through the soft surrogate (when not saturated).
    assert torch.isfinite(tokens.grad).all() and torch.isfinite(space.weight.grad).all()


def test_training_index_is_the_clean_argmax_even_with_gumbel_noise():
    space = _space().train()
    tokens = torch.randn(4, 7, 8)
    _, indices = space(tokens)
    assert torch.equal(indices, (tokens @ space.weight.t()).argmax(-1))


def test_eval_picks_max_dot_product_code_deterministically():
    space = _space().eval()
    tokens = torch.randn(3, 6, 8)
    q1, i1 = space(tokens)
    q2, i2 = space(tokens)
    assert torch.equal(i1, (tokens @ space.weight.t()).argmax(-1))
    assert torch.equal(q1, q2) and torch.equal(i1, i2)


def test_gradient_matches_textbook_straight_through_for_default_sampling():
    space = _space("default").train()
    tokens = torch.randn(2, 3, 8, requires_grad=True)
    upstream = torch.randn(2, 3, 8)
    (space(tokens)[0] * upstream).sum().backward()
    ours_t, ours_w = tokens.grad.clone(), space.weight.grad.clone()
    tokens.grad = None
    space.weight.grad = None
    soft = torch.softmax(tokens @ space.weight.t() / space.tau, -1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 16).float()
    ((hard - soft.detach() + soft) @ space.weight * upstream).sum().backward()
    torch.testing.assert_close(ours_t, tokens.grad)
    torch.testing.assert_close(ours_w, space.weight.grad)


def test_gumbel_path_with_fp16_tokens_has_no_nan():
    space = _space().train()
    tokens = (torch.randn(4, 50, 8) * 30).half().requires_grad_()
    quantized, _ = space(tokens)
    assert quantized.dtype == torch.float16 and torch.isfinite(quantized).all()
    quantized.float().sum().backward()
    assert torch.isfinite(tokens.grad).all() and torch.isfinite(space.weight.grad).all()


def test_usage_reports_histogram_perplexity_and_dead_codes():
    space = _space()
    stats = space.usage(torch.tensor([[0, 0, 1, 1]]))
    assert stats["histogram"].tolist()[:3] == [2, 2, 0] and int(stats["histogram"].sum()) == 4
    assert abs(stats["perplexity"] - 2.0) < 1e-9
    assert stats["dead_codes"] == 14
    uniform = space.usage(torch.arange(16))
    assert abs(uniform["perplexity"] - 16.0) < 1e-9 and uniform["dead_codes"] == 0
