"""float64 NumPy references for the optimizer rules, written from the published pseudo-code
independently of the C++ code: torch.optim's documented algorithms (SGD, Adagrad, RMSprop,
Adadelta, Adam, AdamW, NAdam, Adamax, Adafactor), the decks' algorithms for the variants
(deck 002 Alg. 8.2, 8.4, 8.5, 8.7; deck 003 Alg. 2-3), Zhuang et al. 2020 Alg. 2 (AdaBelief,
as the authors' code) and Srivastava et al. 2014 (max-norm).

``RefOptimizer(name, **hyper).step(params, grads, lr, grad_scale, decay)`` updates a list of
float64 arrays in place. Regularization (deck 002) is applied before the rule: gradients are
scaled, clipped by value, negated when maximizing, and receive lambda theta (L2) and
l1 sign(theta) on decaying parameters; decoupled decay multiplies theta by (1 - lr lambda).
"""

from __future__ import annotations

import math

import numpy as np


class RefOptimizer:
    def __init__(
        self,
        name,
        *,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        betas=(0.9, 0.999),
        eps=1e-8,
        rho=0.9,
        amsgrad=False,
        centered=False,
        deck=False,
        weight_decay=0.0,
        l1=0.0,
        decoupled=0.0,
        clip_value=None,
        max_norm=None,
        maximize=False,
        lr_decay=0.0,
        initial_accumulator_value=0.0,
        momentum_decay=4e-3,
        beta2_decay=-0.8,
        eps1=None,
        eps2=1e-3,
        d=1.0,
        relative_step=True,
        scale_parameter=True,
    ):
        self.name = name
        self.h = dict(
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            b1=betas[0],
            b2=betas[1],
            eps=eps,
            rho=rho,
            amsgrad=amsgrad,
            centered=centered,
            deck=deck,
            lr_decay=lr_decay,
            r0=initial_accumulator_value,
            psi=momentum_decay,
            beta2_decay=beta2_decay,
            eps1=eps1,
            eps2=eps2,
            d=d,
            relative_step=relative_step,
            scale_parameter=scale_parameter,
        )
        self.weight_decay, self.l1, self.decoupled = weight_decay, l1, decoupled
        self.clip_value, self.max_norm, self.maximize = clip_value, max_norm, maximize
        self.t = 0
        self.state = None
        self.mu_product = 1.0  # NAdam: prod_{i <= t} mu_i, kept incrementally as torch does

    def step(self, params, grads, lr, grad_scale=1.0, decay=None):
        if self.state is None:
            self.state = [{} for _ in params]
        decay = [True] * len(params) if decay is None else decay
        self.t += 1
        rule = getattr(self, "_" + self.name)
        extra = self._nadam_coefficients() if self.name == "nadam" else None
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = np.asarray(g, dtype=np.float64) * grad_scale
            if self.clip_value is not None:
                g = np.clip(g, -self.clip_value, self.clip_value)
            if self.maximize:
                g = -g
            p_old = p.copy()
            if decay[i]:
                g = g + self.weight_decay * p_old + self.l1 * np.sign(p_old)
            rule(p, g, self.state[i], lr, decay[i], p_old, extra)
            if self.max_norm is not None and decay[i] and p.ndim == 2:
                norms = np.sqrt((p * p).sum(axis=0))
                over = norms > self.max_norm
                p[:, over] *= self.max_norm / norms[over]

    def _decoupled(self, p, lr, decay):
        if decay and self.decoupled:
            p *= 1.0 - lr * self.decoupled

    # -- torch.optim.SGD / deck 000; deck 002 Alg. 8.2 and deck 003 Alg. 2 with deck=True
    def _sgd(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        mu = h["momentum"]
        if mu == 0:
            p -= lr * g
            return
        gd = g if self.t == 1 else (1 - h["dampening"]) * g
        if not h["deck"]:
            b = s["b"] = mu * s.get("b", 0.0) + gd
            p -= lr * (g + mu * b if h["nesterov"] else b)
        else:
            vel = s["v"] = mu * s.get("v", 0.0) - lr * gd
            p += mu * vel - lr * g if h["nesterov"] else vel

    # -- torch.optim.Adagrad (deck 002 Alg. 8.4: delta outside the root)
    def _adagrad(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        clr = lr / (1 + (self.t - 1) * h["lr_decay"])
        r = s["r"] = s.get("r", h["r0"]) + g * g
        p -= clr * g / (np.sqrt(r) + h["eps"])

    # -- torch.optim.RMSprop; deck 002 Alg. 8.5 (delta inside the root) with deck=True
    def _rmsprop(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        a = h["rho"]
        v = s["v"] = a * s.get("v", 0.0) + (1 - a) * g * g
        vt = v
        if h["centered"]:
            ga = s["ga"] = a * s.get("ga", 0.0) + (1 - a) * g
            vt = v - ga * ga
        den = np.sqrt(vt + h["eps"]) if h["deck"] else np.sqrt(vt) + h["eps"]
        if h["momentum"] > 0:
            b = s["b"] = h["momentum"] * s.get("b", 0.0) + g / den
            p -= lr * b
        else:
            p -= lr * g / den

    # -- torch.optim.Adadelta
    def _adadelta(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        r = h["rho"]
        v = s["v"] = r * s.get("v", 0.0) + (1 - r) * g * g
        dx = np.sqrt(s.get("u", 0.0) + h["eps"]) / np.sqrt(v + h["eps"]) * g
        s["u"] = r * s.get("u", 0.0) + (1 - r) * dx * dx
        p -= lr * dx

    # -- torch.optim.Adam / AdamW (AMSGrad: max of v, then bias correction); deck 002 Alg. 8.7
    def _adam(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        b1, b2, t = h["b1"], h["b2"], self.t
        m = s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        if h["amsgrad"]:
            v = s["vmax"] = np.maximum(s.get("vmax", 0.0), v)
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        den = np.sqrt(v_hat + h["eps"]) if h["deck"] else np.sqrt(v_hat) + h["eps"]
        p -= lr * m_hat / den

    _adamw = _adam

    # -- torch.optim.NAdam (mu_product kept incrementally); deck=True: mu_t = beta1
    def _mu(self, t):
        h = self.h
        if h["deck"]:
            return h["b1"]
        return h["b1"] * (1 - 0.5 * 0.96 ** (t * h["psi"]))

    def _nadam_coefficients(self):
        mu, mu_next = self._mu(self.t), self._mu(self.t + 1)
        self.mu_product *= mu
        return mu, mu_next, self.mu_product, self.mu_product * mu_next

    def _nadam(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        mu, mu_next, prod, prod_next = extra
        self._decoupled(p, lr, decay)
        b2 = h["b2"]
        m = s["m"] = h["b1"] * s.get("m", 0.0) + (1 - h["b1"]) * g
        v = s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        m_hat = mu_next * m / (1 - prod_next) + (1 - mu) * g / (1 - prod)
        v_hat = v / (1 - b2**self.t)
        p -= lr * m_hat / (np.sqrt(v_hat) + h["eps"])

    # -- torch.optim.Adamax
    def _adamax(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        m = s["m"] = h["b1"] * s.get("m", 0.0) + (1 - h["b1"]) * g
        u = s["u"] = np.maximum(h["b2"] * s.get("u", 0.0), np.abs(g) + h["eps"])
        p -= lr / (1 - h["b1"] ** self.t) * m / u

    # -- AdaBelief, Zhuang et al. 2020 Alg. 2 (s_t includes + eps, as the authors' code)
    def _adabelief(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        self._decoupled(p, lr, decay)
        b1, b2, t = h["b1"], h["b2"], self.t
        m = s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        sv = s["s"] = b2 * s.get("s", 0.0) + (1 - b2) * (g - m) ** 2 + h["eps"]
        if h["amsgrad"]:
            sv = s["smax"] = np.maximum(s.get("smax", 0.0), sv)
        p -= lr / (1 - b1**t) * m / (np.sqrt(sv / (1 - b2**t)) + h["eps"])

    # -- torch.optim.Adafactor (row/column means for matrices with both sides >= 2)
    def _adafactor(self, p, g, s, lr, decay, p_old, extra):
        h = self.h
        t = self.t
        eps1 = h["eps1"]
        w = t ** h["beta2_decay"]
        rho_t = min(lr, 1 / math.sqrt(t)) if h["relative_step"] else lr
        rms_p = math.sqrt(float((p_old * p_old).mean()))
        alpha = (max(h["eps2"], rms_p) if h["scale_parameter"] else 1.0) * rho_t
        self._decoupled(p, lr, decay)
        if p.ndim == 2 and p.shape[0] >= 2 and p.shape[1] >= 2:
            R = s.get("R", np.zeros((p.shape[0], 1)))
            C = s.get("C", np.zeros((1, p.shape[1])))
            R = s["R"] = R + w * ((g * g).mean(axis=1, keepdims=True) - R)
            C = s["C"] = C + w * ((g * g).mean(axis=0, keepdims=True) - C)
            V = R @ C / max(float(R.mean()), eps1)
        else:
            V = s.get("V", np.zeros_like(g))
            V = s["V"] = V + w * (g * g - V)
        U = g / np.sqrt(np.maximum(V, eps1 * eps1))
        rms_u = math.sqrt(float((U * U).mean()))
        p -= alpha / max(1.0, rms_u / h["d"]) * U


def deck003_nesterov(theta0, grad_fn, lr, beta, steps):
    """Deck 003 Alg. 3 literally: v <- beta v - lr grad(theta + beta v); theta <- theta + v.
    Returns the list of (theta, v) after each step."""
    theta = np.array(theta0, dtype=np.float64)
    vel = np.zeros_like(theta)
    out = []
    for t in range(steps):
        vel = beta * vel - lr * grad_fn(theta + beta * vel, t)
        theta = theta + vel
        out.append((theta.copy(), vel.copy()))
    return out


def clip_grad_norm_scale(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: min(1, max_norm / (||g|| + 1e-6)) over all grads."""
    total = math.sqrt(sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in grads))
    return min(1.0, max_norm / (total + 1e-6))
