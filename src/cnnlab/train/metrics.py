"""Exact epoch metrics, accumulated on the device.

The sums of the per-sample loss and of the correct predictions stay in a device tensor; the sample count is a
host integer (it is known without looking at the data). Nothing here syncs the host until :meth:`compute`, and
then once, after summing over all ranks, so the epoch figures are exact global numbers, not a mean of batch means.
"""

from __future__ import annotations

import torch

from cnnlab.train.distributed import sum_over_ranks


class EpochMetrics:
    """Running sums of loss x n and correct predictions over an epoch."""

    def __init__(self, device: torch.device):
        # float64 keeps 60,000 summed losses exact enough and counts exact; MPS has no float64.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(2, dtype=dtype, device=device)
        self.count = 0

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``loss`` is the batch's mean loss, ``logits`` N x C, ``labels`` N."""
        n = labels.shape[0]
        correct = (logits.argmax(dim=1) == labels).sum()
        # In place on views of the running sums: no per-step allocation beyond the argmax/compare above.
        self.sums[0].add_(loss.detach(), alpha=n)
        self.sums[1].add_(correct)
        self.count += n

    def _summed(self) -> tuple[torch.Tensor, int]:
        """The sums and count over all ranks (a collective under torchrun: every rank calls it at the same point)."""
        packed = torch.cat((self.sums, torch.tensor([self.count], dtype=self.sums.dtype, device=self.sums.device)))
        sum_over_ranks(packed)
        return packed[:2], int(packed[2].item())

    def compute(self) -> dict[str, float]:
        """Global mean loss and accuracy over every sample seen by every rank (one host sync)."""
        sums, count = self._summed()
        loss_sum, correct = sums.tolist()
        if count == 0:
            return {"loss": float("nan"), "acc": float("nan"), "count": 0}
        return {"loss": loss_sum / count, "acc": correct / count, "count": count}

    def state_dict(self) -> dict:
        """This rank's running sums."""
        return {"sums": self.sums.cpu(), "count": self.count}

    def global_state_dict(self) -> dict:
        """The running sums of all ranks together, as a checkpoint keeps them (a collective under torchrun)."""
        sums, count = self._summed()
        return {"sums": sums.cpu(), "count": count}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.count = int(state["count"])
