"""Training checkpoints shared by F-CNN's fine-tuning and the DR-CNN detector's: model,
optimizer, schedule, RNG state and the loss history after a step count (epochs for F-CNN,
iterations for the detector), written atomically and resumed from; a damaged one is
deleted with a warning and training starts over."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irbench.core.cache import atomic_writer

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, model: nn.Module, optimizer: Any, history: list[dict[str, float]],
                    epoch: int, schedule: Any = None) -> None:
    """Model, optimizer, schedule and RNG state after `epoch` steps (epochs or
    iterations), written atomically."""
    _save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict() if schedule is not None else None,
                 "rng": torch.get_rng_state(), "history": history, "epoch": epoch})


def resume(path: Path | None, model: nn.Module, optimizer: Any, schedule: Any = None, *,
           device: str = "cpu") -> tuple[list[dict[str, float]], int]:
    """Restore a checkpoint written by `save_checkpoint` if there is one: (history, steps
    done); ([], 0) without one. A checkpoint that cannot be read or restored is deleted
    with a warning naming it, and training starts over."""
    if path is None or not path.is_file():
        return [], 0
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state.get("schedule") is not None:
            schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        history, epoch = list(state["history"]), int(state["epoch"])
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint only costs the restart
        log.warning("checkpoint %s is damaged (%s: %s); deleting it and training from the "
                    "start", path, type(exc).__name__, exc)
        path.unlink(missing_ok=True)
        return [], 0
    log.info("resuming training from %s (after %d)", path, epoch)
    return history, epoch


def checkpoint_path(method: Any, stage: str, inputs: dict[str, Any]) -> Path | None:
    """Where the training checkpoint of `method`'s `stage` for `inputs` lives: named by
    the key of the artifact the training produces, so a checkpoint resumes only the
    training it belongs to. None when the cache is disabled."""
    cache = method.context.cache
    if not cache.enabled:
        return None
    kind, key = method.stage_key(stage, inputs)
    return cache.root / "checkpoints" / kind / cache.key_of(kind, key) / "last.pt"


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_writer(path) as fh:
        torch.save(state, fh)
