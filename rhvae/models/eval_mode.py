"""A block in eval mode without autograd, for evaluation code at every layer above the models."""

from __future__ import annotations

import torch


class EvalMode:
    """Eval mode and no autograd for the duration of a block; the previous training flag is restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        self.no_grad.__exit__(*exc)
        return False
