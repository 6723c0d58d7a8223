"""``print(model)`` / ``model.summary()`` (a table of layers, as Keras's ``summary`` and
PyTorch's module repr) and the one-line ``repr(model)`` (issue 18, item 2).

Parameter counts come from the Network's own index (``param_info``), so they are the arrays
``get_weights`` returns: trainable ones are in the optimizer's arena and belong to a layer
that is not frozen; BatchNorm running statistics and frozen layers' arrays are
non-trainable.
"""

from __future__ import annotations

from typing import Any

from . import layers as L

_MAX_CHAIN = 6  # layers named in repr before the middle is elided


def _activation_text(spec: Any) -> str:
    args = [f"{k}={val:g}" for k, val in spec.hyper.items()]
    if spec.name == "apl":
        args.append(f"hinges={spec.hinges}")
    return f"{spec.name}({', '.join(args)})" if args else spec.name


def _label(layer: L.Layer) -> str:
    if isinstance(layer, L.Dense):
        return f"Dense({layer.units}{'' if layer.use_bias else ', no bias'})"
    if isinstance(layer, L.BatchNorm):
        return "BatchNorm" if layer.affine else "BatchNorm(affine=False)"
    if isinstance(layer, L.Dropout):
        return f"Dropout({layer.rate:g})"
    if isinstance(layer, L.GaussianNoise):
        return f"GaussianNoise({layer.std:g})"
    if isinstance(layer, L.RBF):
        return f"RBF({layer.n_centers})"
    if isinstance(layer, L.Activation) and layer.name == "maxout":
        return f"Maxout({layer.pieces})"
    if isinstance(layer, L.Activation) and layer.name == "softmax":
        return "Softmax"
    return type(layer).__name__


def _activation(layer: L.Layer) -> str:
    if isinstance(layer, L.RBF):
        return "gaussian rbf"
    if isinstance(layer, L.Activation) and layer._act is None:
        return layer.name  # softmax, maxout
    spec = getattr(layer, "_act", None)
    return "-" if spec is None else _activation_text(spec)


def _width(layer: L.Layer, width: int) -> int:
    if isinstance(layer, L.Dense):
        return layer.units
    if isinstance(layer, L.RBF):
        return layer.n_centers
    if isinstance(layer, L.Activation) and layer.name == "maxout":
        return width // layer.pieces
    return width


def _counts(model: Any) -> dict[int, list[int]]:
    """{layer index: [parameters, non-trainable parameters]}."""
    counts: dict[int, list[int]] = {}
    for (li, _name), (_off, rows, cols, in_arena) in model._index.items():
        c = counts.setdefault(li, [0, 0])
        c[0] += rows * cols
        if not (in_arena and model._net.layer_trainable(li)):
            c[1] += rows * cols
    return counts


def _sections(model: Any) -> list[tuple[str | None, list[tuple[int, L.Layer, int]]]]:
    """[(section title, [(layer index, layer, output width)])]: the trunk, then each head."""
    rows, width, li = [], model.n_in, 0
    for layer in model.layers:
        width = _width(layer, width)
        rows.append((li, layer, width))
        li += 1
    multi = len(model.heads) > 1
    out = [("trunk" if multi else None, rows)]
    for h, head in enumerate(model.heads):
        rows, w = [], width
        for layer in head:
            w = _width(layer, w)
            rows.append((li, layer, w))
            li += 1
        if multi:
            out.append((f"head {h}", rows))
        else:
            out[0][1].extend(rows)
    return out


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def summary_text(model: Any) -> str:
    """The layer table (see the module docstring)."""
    counts = _counts(model)
    header = ("#", "Layer (type)", "Output shape", "Activation", "Params", "Non-trainable")
    table: list[tuple[str, ...] | str] = []
    for title, rows in _sections(model):
        if title is not None:
            table.append(title if rows else f"{title} (no layers: the trunk's output)")
        for li, layer, width in rows:
            n, frozen = counts.get(li, [0, 0])
            label = _label(layer) + ("" if model._net.layer_trainable(li) or not n else " [frozen]")
            table.append(
                (str(li), label, f"(batch, {width})", _activation(layer), f"{n:,}", f"{frozen:,}")
            )
    cells = [header] + [r for r in table if isinstance(r, tuple)]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    right = {0, 4, 5}

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if k in right else c.ljust(w)
            for k, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(header))
    total = sum(c[0] for c in counts.values())
    frozen = sum(c[1] for c in counts.values())
    item = model.dtype.itemsize
    precision = "" if model.precision == "float32" else f", {model.precision} GEMMs"
    out = [
        f"{type(model).__name__}: {model.n_in} inputs, {len(model.heads)} head(s), "
        f"{model.dtype.name}{precision}, {model.device}",
        rule,
        line(header),
        rule,
    ]
    out += [f"{r}:" if isinstance(r, str) else line(r) for r in table]
    out += [
        rule,
        f"Total params: {total:,} ({_bytes(total * item)})",
        f"Trainable params: {total - frozen:,} ({_bytes((total - frozen) * item)})",
        f"Non-trainable params: {frozen:,} ({_bytes(frozen * item)})",
    ]
    return "\n".join(out)


def _chain(labels: list[str]) -> str:
    if len(labels) > _MAX_CHAIN:
        labels = labels[: _MAX_CHAIN - 2] + ["..."] + labels[-1:]
    return " -> ".join(labels)


def short_repr(model: Any) -> str:
    """One line: input width, the layers (the middle elided when long), heads, parameter
    count, dtype and device."""

    def named(layer: L.Layer) -> str:
        label = _label(layer)
        act = _activation(layer)
        if isinstance(layer, L.Dense) and act != "identity":
            return f"{label[:-1]}, {act})"
        if type(layer) is L.Activation and layer._act is not None:
            return f"Activation({act})"
        return label

    parts = [str(model.n_in)] + [named(layer) for layer in model.layers]
    body = _chain(parts)
    if len(model.heads) > 1:
        heads = ", ".join(f"[{_chain([named(x) for x in h]) or 'identity'}]" for h in model.heads)
        body += f"; heads {heads}"
    else:
        body = _chain(parts + [named(x) for x in model.heads[0]])
    total = sum(c[0] for c in _counts(model).values())
    return f"{type(model).__name__}({body}; {total:,} params, {model.dtype.name}, {model.device})"
