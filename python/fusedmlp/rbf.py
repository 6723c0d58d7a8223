"""Deck 003's learning schemes of RBF networks, as a Trainer callback.

Every scheme first places the centres and widths on the training inputs (step 1,
``model.init_rbf``, skipped when the model was already initialized). Then "end-to-end" trains
everything by gradient; "2-step" freezes the RBF layers and trains the rest (the output
weights, step 2); "3-step" does the 2-step training, then unfreezes the RBF layers and trains
everything (step 3, with a fresh optimizer state).

A Trainer whose model has RBF layers installs ``RBFScheme()`` (end-to-end) by itself;
``Trainer(rbf_scheme=..., rbf_solve=..., rbf_output_epochs=...)`` is the same as passing
``callbacks=[fm.callbacks.RBFScheme(...)]``.

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> X = np.linspace(-3, 3, 200)[:, None]; y = np.sin(X)
    >>> model = fm.Sequential([fm.RBF(12), fm.Dense(1)], n_in=1, dtype="float64")
    >>> scheme = fm.callbacks.RBFScheme("2-step", solve="lstsq")
    >>> t = fm.Trainer(model, loss="mse", metrics=(), callbacks=[scheme])
    >>> bool(t.fit(X, y, verbose=0).history["loss"][-1] < 1e-3)
    True
"""

from __future__ import annotations

import numpy as np

from . import _validate as v
from . import layers as L
from .callbacks import Callback

RBF_SCHEMES = ("end-to-end", "2-step", "3-step")
RBF_SOLVES = ("gradient", "lstsq")


class RBFScheme(Callback):
    """The learning scheme of a model with :class:`fusedmlp.RBF` layers (deck 003).

    Args:
        scheme: "end-to-end" (None: the same), "2-step" or "3-step" (see the module doc).
        solve: "gradient" or "lstsq": step 2 of the 2-/3-step schemes solved in closed form by
            least squares (for an RBF layer followed by the last layer, a linear ``Dense``,
            with the mse loss on one head; no regularizers). With "2-step" that solve is the
            whole training: ``fit`` records one history entry and runs no epoch.
        output_epochs: epochs of step 2 in the "3-step" scheme with ``solve="gradient"``
            (default: half of the first ``fit``'s epochs, >= 1).

    ``stage``: None (no RBF layer), "init" (step 1 pending), "output" (step 2: the RBF layers
    frozen), "all" (everything trains: end-to-end, or step 3).
    """

    def __init__(
        self, scheme: str | None = None, solve: str = "gradient", output_epochs: int | None = None
    ):
        self._given = scheme is not None
        scheme = "end-to-end" if scheme is None else scheme
        if scheme not in RBF_SCHEMES:
            raise ValueError(
                f"rbf_scheme: expected one of {', '.join(RBF_SCHEMES)}, got {scheme!r}"
            )
        if solve not in RBF_SOLVES:
            raise ValueError(f"rbf_solve: expected one of {', '.join(RBF_SOLVES)}, got {solve!r}")
        if output_epochs is not None:
            output_epochs = v.integer("rbf_output_epochs", output_epochs, low=1)
            if scheme != "3-step" or solve != "gradient":
                raise ValueError(
                    "rbf_output_epochs: only the 3-step scheme with "
                    "rbf_solve='gradient' has a number of step-2 epochs"
                )
        self.scheme, self.solve, self.output_epochs = scheme, solve, output_epochs
        self.layers: list[int] = []
        self.stage: str | None = None
        self.unfreeze_epoch: int | None = None

    # -- the Trainer's step protocol ---------------------------------------------------------
    @property
    def _plain_steps(self) -> bool:
        return self.stage != "init"

    def _attach(self, trainer) -> None:
        self.trainer = trainer
        self.layers = trainer.model.rbf_layers()
        if self._given and not self.layers:
            raise ValueError("rbf_scheme: the model has no fm.RBF layer")
        if self.solve == "lstsq":
            self._check_lstsq()
        self.stage = "init" if self.layers else None

    def _fit_begin(self, X, ys, sw, epochs) -> bool:
        return self.prepare(X, ys, sw, epochs)

    def _batch(self, X, ys, sw):
        if self.stage == "init":  # train_step before any fit
            self.prepare(None, None, None, None)
        return None

    def on_epoch_begin(self, epoch, logs=None):
        if self.unfreeze_epoch is not None and epoch >= self.unfreeze_epoch:
            self.begin_step3()

    # -- the scheme --------------------------------------------------------------------------
    def _check_lstsq(self) -> None:
        t, model = self.trainer, self.trainer.model
        layers = model._all_layers()
        if self.scheme == "end-to-end":
            raise ValueError(
                "rbf_solve: 'lstsq' solves step 2 of the '2-step'/'3-step' schemes; "
                "set rbf_scheme accordingly"
            )
        if len(model.heads) != 1 or t.losses[0] != "mse":
            raise ValueError("rbf_solve: 'lstsq' needs one output head trained with the mse loss")
        last = layers[-1]
        if (
            len(layers) < 2
            or not isinstance(layers[-2], L.RBF)
            or not isinstance(last, L.Dense)
            or last.activation != "identity"
        ):
            raise ValueError(
                "rbf_solve: 'lstsq' needs the model to end with fm.RBF followed by a "
                "linear fm.Dense (activation 'identity')"
            )
        if t.regularizers:
            raise ValueError(
                "rbf_solve: 'lstsq' solves the unregularized least-squares problem; "
                "remove the regularizers or use rbf_solve='gradient'"
            )

    def _freeze(self, frozen: bool) -> None:
        for li in self.layers:
            self.trainer.model.set_trainable(li, not frozen)

    def prepare(
        self,
        X: np.ndarray | None,
        ys: list[np.ndarray] | None,
        sw: np.ndarray | None,
        epochs: int | None,
    ) -> bool:
        """Steps 1 and 2's set-up before training on (X, ys); True when step 2 was solved in
        closed form and nothing is left to train (2-step + lstsq)."""
        model = self.trainer.model
        if self.stage is None:
            return False
        if self.stage == "init":
            if not model.rbf_initialized:
                if X is None:
                    raise ValueError(
                        "X: the model's RBF centres are placed on the training "
                        "inputs; call trainer.fit(X, y) or model.init_rbf(X) before "
                        "train_step"
                    )
                model.init_rbf(X)
            if self.scheme == "end-to-end":
                self.stage = "all"
                return False
            self._freeze(True)
            self.stage = "output"
            if self.scheme == "3-step" and self.solve == "gradient":
                n = self.output_epochs or (max(1, epochs // 2) if epochs else 1)
                self.unfreeze_epoch = self.trainer.epoch + n
        if self.stage == "output" and self.solve == "lstsq":
            if X is None:
                raise ValueError(
                    "X, y: rbf_solve='lstsq' solves the output weights on the "
                    "training data; call trainer.fit(X, y)"
                )
            self._solve_output(X, ys[0], sw)
            if self.scheme == "2-step":
                return True
            self.begin_step3()
        return False

    def _solve_output(self, X: np.ndarray, Y: np.ndarray, sw: np.ndarray | None) -> None:
        """Least-squares output weights on the RBF features (inference mode), with a column of
        ones for the bias; singular values below eps(dtype) * max(shape) of the largest are cut
        (numpy's rule with the model's precision: the weights stay evaluable in float32)."""
        model = self.trainer.model
        engine, li = model._engine, len(model._all_layers()) - 1
        dense = model._all_layers()[li]
        parts = []
        for s in range(0, len(X), 8192):
            engine.forward(np.ascontiguousarray(X[s : s + 8192]), False)
            parts.append(engine.layer_output(li - 1).astype(np.float64))
        H = np.concatenate(parts)
        K = H.shape[1]
        if dense.use_bias:
            H = np.hstack([H, np.ones((len(H), 1))])
        Y = np.asarray(Y, dtype=np.float64)
        if sw is not None:
            r = np.sqrt(np.asarray(sw, dtype=np.float64))[:, None]
            H, Y = H * r, Y * r
        rcond = np.finfo(model.dtype).eps * max(H.shape)
        sol = np.linalg.lstsq(H, Y, rcond=rcond)[0]
        model._param_view(li, "W")[:] = sol[:K]
        if dense.use_bias:
            model._param_view(li, "b")[:] = sol[K]

    def begin_step3(self) -> None:
        """Step 3: unfreeze the RBF layers; everything trains from a fresh optimizer state."""
        self._freeze(False)
        self.trainer._configure_optimizer()
        self.stage = "all"
        self.unfreeze_epoch = None

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        if self.stage is None:
            return None
        return {
            "scheme": self.scheme,
            "solve": self.solve,
            "output_epochs": self.output_epochs,
            "stage": self.stage,
            "unfreeze_epoch": self.unfreeze_epoch,
            "initialized": self.trainer.model.rbf_initialized,
        }

    @staticmethod
    def init_args(state: dict | None) -> dict:
        """The Trainer arguments that rebuild the scheme of :meth:`state_dict`."""
        if not state:
            return {}
        return {
            "rbf_scheme": state["scheme"],
            "rbf_solve": state["solve"],
            "rbf_output_epochs": state["output_epochs"],
        }

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.stage, self.unfreeze_epoch = state["stage"], state["unfreeze_epoch"]
        self.trainer.model._rbf_initialized = bool(state["initialized"])
