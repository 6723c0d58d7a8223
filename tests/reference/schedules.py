"""Closed forms of the learning-rate schedules, written from the decks and the papers
independently of fusedmlp.schedules: deck 002's linear decay, deck 000's cosine and
multi-step, Goyal et al.'s warmup, Smith's 1-cycle (torch OneCycleLR's phases), SGDR by
walking the restart periods (Loshchilov & Hutter), and torch's ReduceLROnPlateau rules.
"""

from __future__ import annotations

import math


def step_decay(lr, t, step_size, gamma):
    return lr * gamma ** (int(t) // step_size)


def multi_step(lr, t, milestones, gamma):
    return lr * gamma ** sum(1 for m in milestones if t >= m)


def exponential(lr, t, gamma):
    return lr * gamma**t


def linear_decay(lr0, t, tau, lr_tau):
    # deck 002: eps_k = (1 - alpha) eps_0 + alpha eps_tau, alpha = k / tau, constant after tau
    if t >= tau:
        return lr_tau
    a = t / tau
    return (1 - a) * lr0 + a * lr_tau


def cosine(lr0, t, T, lr_min=0.0):
    # deck 000: alpha_t = 1/2 alpha_0 (1 + cos(t pi / T)), shifted to end at lr_min
    t = min(t, T)
    return lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(t * math.pi / T))


def warmup(base, t, warmup_steps, start_factor):
    if t >= warmup_steps:
        return base
    return base * (start_factor + (1 - start_factor) * t / warmup_steps)


def _anneal(a, b, pct, anneal):
    """OneCycle's phase from a to b at fraction pct: cosine or linear."""
    if anneal == "cos":
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * pct))
    return a + (b - a) * pct


def one_cycle(max_lr, t, total, pct_start, div, final_div, anneal="cos"):
    lo = max_lr / div
    end_lr = lo / final_div
    peak = pct_start * total - 1

    if t <= peak:
        return _anneal(lo, max_lr, t / peak, anneal)
    return _anneal(max_lr, end_lr, min(1.0, (t - peak) / (total - 1 - peak)), anneal)


def sgdr(lr0, t, T0, T_mult, lr_min=0.0):
    # walk the periods: T_i = T0 T_mult^i, restart at their partial sums
    start, length = 0.0, float(T0)
    while t >= start + length:
        start += length
        length *= T_mult
    return lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(math.pi * (t - start) / length))


def reduce_on_plateau(
    lr,
    metrics,
    factor,
    patience,
    mode="min",
    threshold=1e-4,
    threshold_mode="rel",
    cooldown=0,
    lr_min=0.0,
):
    """The lr after each check (torch.optim.lr_scheduler.ReduceLROnPlateau)."""
    best = math.inf if mode == "min" else -math.inf
    bad = cool = 0
    out = []
    for m in metrics:
        if mode == "min":
            better = m < (best * (1 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            better = m > (best * (1 + threshold) if threshold_mode == "rel" else best + threshold)
        if better:
            best, bad = m, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            new = max(lr * factor, lr_min)
            if lr - new > 1e-8 * lr:
                lr = new
                cool = cooldown
            bad = 0
        out.append(lr)
    return out


def one_cycle_momentum(t, total, pct_start, base_m, max_m, anneal="cos"):
    """torch.optim.lr_scheduler.OneCycleLR's cycled momentum (two phases): max_m down to base_m
    while the lr rises, then back up to max_m."""
    peak = pct_start * total - 1

    if t <= peak:
        return _anneal(max_m, base_m, t / peak, anneal)
    return _anneal(base_m, max_m, min(1.0, (t - peak) / (total - 1 - peak)), anneal)
