"""Learning-rate schedules as pure functions of the iteration (so resume needs no state),
each with an optional linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Sequence


class Scheduler:
    """``scheduler(iteration)`` → learning rate. ``warmup_iters`` ramps linearly from
    ``base_lr / warmup_iters`` to the scheduled value."""

    def __init__(self, base_lr: float, warmup_iters: int = 0) -> None:
        if base_lr < 0:
            msg = f"Invalid learning rate: {base_lr}"
            raise ValueError(msg)
        if warmup_iters < 0:
            msg = f"Invalid warmup_iters: {warmup_iters}"
            raise ValueError(msg)
        self.base_lr, self.warmup_iters = base_lr, warmup_iters

    def __call__(self, iteration: int) -> float:
        lr = self.schedule(iteration)
        if iteration < self.warmup_iters:
            lr *= (iteration + 1) / self.warmup_iters
        return lr

    def schedule(self, iteration: int) -> float:
        return self.base_lr


class StepScheduler(Scheduler):
    """Multiply by ``gamma`` every ``step_size`` iterations, or at each of ``milestones``."""

    def __init__(
        self,
        base_lr: float,
        gamma: float = 0.1,
        step_size: int | None = None,
        milestones: Sequence[int] = (),
        warmup_iters: int = 0,
    ) -> None:
        super().__init__(base_lr, warmup_iters)
        if step_size is None and not milestones:
            msg = "StepScheduler needs step_size or milestones"
            raise ValueError(msg)
        if step_size is not None and step_size <= 0:
            msg = f"Invalid step_size: {step_size}"
            raise ValueError(msg)
        self.gamma, self.step_size, self.milestones = gamma, step_size, sorted(milestones)

    def schedule(self, iteration: int) -> float:
        if self.step_size:
            k = iteration // self.step_size
        else:
            k = sum(iteration >= m for m in self.milestones)
        return self.base_lr * self.gamma**k


class ExponentialScheduler(Scheduler):
    """``base_lr · gamma^(iteration / iter_interval)``."""

    def __init__(self, base_lr: float, gamma: float, iter_interval: int = 1, warmup_iters: int = 0) -> None:
        super().__init__(base_lr, warmup_iters)
        if not 0 < gamma <= 1:
            msg = f"Invalid gamma: {gamma}"
            raise ValueError(msg)
        self.gamma, self.iter_interval = gamma, iter_interval

    def schedule(self, iteration: int) -> float:
        return self.base_lr * self.gamma ** (iteration // self.iter_interval)


class CosineScheduler(Scheduler):
    """Cosine decay from ``base_lr`` to ``min_lr`` over ``max_iter`` iterations."""

    def __init__(self, base_lr: float, max_iter: int, min_lr: float = 0.0, warmup_iters: int = 0) -> None:
        super().__init__(base_lr, warmup_iters)
        if max_iter <= 0:
            msg = f"Invalid max_iter: {max_iter}"
            raise ValueError(msg)
        self.max_iter, self.min_lr = max_iter, min_lr

    def schedule(self, iteration: int) -> float:
        progress = min(iteration, self.max_iter) / self.max_iter
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class PolynomialScheduler(Scheduler):
    """``base_lr · (1 - iteration/max_iter)^power``."""

    def __init__(self, base_lr: float, max_iter: int, power: float = 1.0, warmup_iters: int = 0) -> None:
        super().__init__(base_lr, warmup_iters)
        if max_iter <= 0:
            msg = f"Invalid max_iter: {max_iter}"
            raise ValueError(msg)
        self.max_iter, self.power = max_iter, power

    def schedule(self, iteration: int) -> float:
        return self.base_lr * (1 - min(iteration, self.max_iter) / self.max_iter) ** self.power
