"""PEM: the formula, no parameters in the corrected one, the seed's unused fc."""

from __future__ import annotations

import torch

from haformer.pem import PEM, SeedPEM


def test_pem_formula() -> None:
    x = torch.randn(2, 5, 4, 6)
    weights = torch.softmax(x.mean(dim=(2, 3)), dim=1)[:, :, None, None]
    torch.testing.assert_close(PEM()(x), x * weights + x)


def test_pem_is_parameter_free_and_seed_pem_equal_in_output() -> None:
    seed = SeedPEM(5)
    assert list(PEM(5).parameters()) == []
    assert sum(p.numel() for p in seed.parameters()) == 5 * 5 + 5
    x = torch.randn(2, 5, 4, 6)
    torch.testing.assert_close(PEM()(x), seed(x))


def test_seed_pem_fc_gets_no_gradient() -> None:
    seed = SeedPEM(4)
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    seed(x).sum().backward()
    assert seed.fc.weight.grad is None
    assert x.grad is not None


def test_pem_amplifies_the_strongest_channel_most() -> None:
    x = torch.ones(1, 3, 2, 2) * torch.tensor([1.0, 2.0, 3.0])[None, :, None, None]
    gain = PEM()(x)[0, :, 0, 0] / x[0, :, 0, 0]
    assert gain[2] > gain[1] > gain[0] > 1
