"""Small heads: the MLP projector and the online linear probe."""

from __future__ import annotations

from torch import nn


def mlp_projector(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3) -> nn.Sequential:
    """``num_layers`` Linear layers with BatchNorm + GELU between them (none after the last).

    ``num_layers=1`` is a single linear map ``in_dim -> out_dim``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def linear_probe(in_dim: int, num_classes: int) -> nn.Sequential:
    """LayerNorm (no affine) + Linear, trained on detached features."""
    return nn.Sequential(nn.LayerNorm(in_dim, elementwise_affine=False), nn.Linear(in_dim, num_classes))
