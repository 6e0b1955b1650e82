"""OpenVLA's action discretisation: 256 uniform bins over [-1, 1] per action dimension.

Follows ``prismatic/vla/action_tokenizer.py`` of openvla/openvla: the bin edges are
``linspace(-1, 1, 256)``; an action value ``a`` maps to ``digitize(clip(a, -1, 1), edges)`` in 1..256 and
to the vocabulary id ``vocab_size - digitize(...)``, i.e. the last 256 ids of the vocabulary; decoding an
id returns the centre of its bin (255 centres; the top id decodes like its neighbour, as in OpenVLA).

Inside tgrpo, rollouts carry *bin indices* ``b = digitize(...) - 1`` in 0..255 (model independent); a
model maps them to its vocabulary with ``vocab_size - 1 - b``.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_BINS = 256


class ActionTokenizer:
    """Maps continuous actions in [-1, 1] to bin indices and back (OpenVLA convention).

    Attributes:
        edges: (256,) bin edges ``linspace(-1, 1, 256)``.
        centers: (255,) midpoints of consecutive edges.
    """

    def __init__(self, num_bins: int = NUM_BINS, low: float = -1.0, high: float = 1.0):
        self.num_bins = num_bins
        self.edges = np.linspace(low, high, num_bins)
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2.0

    def encode(self, actions: np.ndarray | torch.Tensor) -> np.ndarray:
        """(..., D) actions -> (..., D) int64 bin indices in [0, num_bins - 1]."""
        a = np.clip(np.asarray(actions, dtype=np.float64), self.edges[0], self.edges[-1])
        return (np.digitize(a, self.edges) - 1).astype(np.int64)

    def decode(self, bins: np.ndarray | torch.Tensor) -> np.ndarray:
        """(..., D) bin indices -> (..., D) float32 bin centres (OpenVLA: index clipped to 0..254)."""
        idx = np.clip(np.asarray(bins, dtype=np.int64), 0, len(self.centers) - 1)
        return self.centers[idx].astype(np.float32)

    def to_vocab(self, bins: np.ndarray | torch.Tensor, vocab_size: int):
        """Bin indices -> vocabulary ids (the last ``num_bins`` ids, highest bin = lowest id)."""
        return vocab_size - 1 - bins

    def from_vocab(self, ids: np.ndarray | torch.Tensor, vocab_size: int):
        """Vocabulary ids -> bin indices (inverse of :meth:`to_vocab`)."""
        return vocab_size - 1 - ids
