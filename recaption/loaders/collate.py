"""A collate function that drops broken samples (``None``) and says how many it dropped.

DataLoader workers run the collate in their own processes, so a counter there would never
reach the training loop; the count travels in the batch instead: ``batch["skipped"]``.
"""

from __future__ import annotations

from typing import Any


def skip_broken_collate(samples: list[Any]) -> dict[str, Any]:
    import torch  # noqa: PLC0415 - torch, loaded only where it is used
    from torch.utils.data import default_collate  # noqa: PLC0415 - torch, loaded only where it is used

    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        return {"skipped": torch.tensor(skipped)}
    if isinstance(good[0], dict) and not all(hasattr(v, "shape") for v in good[0].values()):
        batch = {k: [s[k] for s in good] for k in good[0]}  # PIL images and strings, without a processor
    else:
        batch = default_collate(good)
    batch["skipped"] = torch.tensor(skipped)
    return batch
