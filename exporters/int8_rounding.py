"""Adaptive rounding of int8 convolution weights, before TF-Lite conversion.

TF-Lite's full-integer converter folds each batch norm into the convolution
before it and rounds every folded weight to the nearest step of its output
channel's grid (step = max|w| / 127, symmetric). Rounding to nearest minimises
each weight's own error, not the layer's output error: the errors of the 27
weights of a 3x3 stem filter over highly correlated RGB pixels add up. On the
embedded demo run the stem's output error was 4.5 output quantisation steps.

Adaptive rounding (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization") chooses, per weight, the grid point below or above.
Here, per convolution (+ batch norm) in network order:

- folded float weights ``w`` and the step ``s`` the converter will use;
- the layer's input patches ``X`` in the network whose earlier layers are
  already rounded, and ``X_f`` in the float network, so a layer also absorbs
  what the rounding of earlier layers cost;
- ``q`` in {floor(w/s), ceil(w/s)} by coordinate descent on the variance of
  ``X (q s - w) + (X - X_f) w`` over the positions where the following ReLU
  passes gradient (clipped outputs cannot carry error);
- the mean of that error is taken out of the bias (batch-norm beta or conv
  bias): bias correction;
- ``q s`` (divided by the batch-norm scale) is written back, so the converter's
  own folding and rounding land on the chosen grid points: the flatbuffer holds
  ``q`` (tests read it back).

Only conv weights (each by less than one grid step of its channel) and biases
move, in the Keras model handed in (the exporter passes a fresh copy of the
run's model); activations are quantised by the converter as before.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: Each output channel of a convolution followed by a ReLU gets its own masked input
#: covariance while channels * fan_in**2 stays under this; above it one covariance over
#: all positions is shared (large layers stay fast and small).
COV_BUDGET = 50_000_000
#: Input positions (rows) sampled per layer.
MAX_ROWS = 200_000
#: Coordinate-descent sweeps (stops early when nothing flips).
SWEEPS = 20
#: Layers with fan_in**2 * channels above this (VGG-16's 3x3x512 convs) keep nearest
#: rounding and get bias correction only: one sweep would cost minutes there.
DESCENT_BUDGET = 2e9


@dataclass
class Target:
    """One convolution whose weights the converter folds and quantises per channel."""

    conv: object
    bn: object | None
    clip: tuple[float, float] | None   # open interval where the following ReLU passes


def _relu_interval(layer) -> tuple[float, float] | None:
    """Where a ReLU-type layer passes its input on unchanged (None: not such a layer)."""
    import keras

    if isinstance(layer, keras.layers.ReLU) and not float(layer.negative_slope or 0):
        hi = float(layer.max_value) if layer.max_value is not None else np.inf
        return float(layer.threshold or 0.0), hi
    if isinstance(layer, keras.layers.Activation):
        return {keras.activations.relu: (0.0, np.inf),
                keras.activations.relu6: (0.0, 6.0)}.get(layer.activation)
    return None


def _consumers(model) -> dict[int, list]:
    """id(tensor) -> the layers of ``model`` that take it as an input."""
    out: dict[int, list] = {}
    for layer in model.layers:
        try:
            inputs = layer.input
        except (AttributeError, ValueError):     # a layer used more than once
            continue
        for tensor in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
            out.setdefault(id(tensor), []).append(layer)
    return out


def targets(model) -> list[Target]:
    """Convolutions of ``model`` (top level) that adaptive rounding handles, in layer order.

    Conv2D (no groups, no dilation) and DepthwiseConv2D (multiplier 1), channels
    last, either linear and optionally followed by a BatchNormalization that only
    they feed (and then maybe a ReLU), or with a built-in ReLU.
    """
    import keras

    consumers = _consumers(model)

    def only_consumer(tensor):
        users = consumers.get(id(tensor), [])
        return users[0] if len(users) == 1 else None

    found = []
    for conv in model.layers:
        depthwise = _depthwise(conv)
        if not (depthwise or type(conv) is keras.layers.Conv2D):
            continue
        if (conv.data_format != "channels_last" or tuple(conv.dilation_rate) != (1, 1)
                or (depthwise and conv.depth_multiplier != 1)
                or (not depthwise and conv.groups != 1) or len(conv._inbound_nodes) != 1):
            continue
        if conv.activation is keras.activations.relu:
            found.append(Target(conv, None, (0.0, np.inf)))
            continue
        if conv.activation is not keras.activations.linear:
            continue
        nxt = only_consumer(conv.output)
        bn = nxt if isinstance(nxt, keras.layers.BatchNormalization) else None
        if bn is not None:
            nxt = only_consumer(bn.output)
        clip = _relu_interval(nxt) if nxt is not None else None
        found.append(Target(conv, bn, clip))
    return found


def _depthwise(conv) -> bool:
    import keras

    return isinstance(conv, keras.layers.DepthwiseConv2D)


def _folded(t: Target) -> tuple[np.ndarray, np.ndarray]:
    """Folded weights (fan_in, channels) and the batch-norm scale (channels,)."""
    kernel = _value(t.conv.kernel)
    k = kernel[..., 0] if _depthwise(t.conv) else kernel
    w = k.reshape(-1, k.shape[-1])
    if t.bn is None:
        return w, np.ones(w.shape[1])
    var = _value(t.bn.moving_variance)
    gamma = _value(t.bn.gamma) if t.bn.scale else np.ones_like(var)
    scale = gamma / np.sqrt(var + t.bn.epsilon)
    return w * scale, scale


def _value(variable) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def _patches(x: np.ndarray, conv) -> np.ndarray:
    """Input patches: (rows, k*k*cin), or (rows, k*k, cin) for a depthwise conv."""
    import tensorflow as tf

    kh, kw = conv.kernel_size
    sh, sw = conv.strides
    p = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1],
                                 conv.padding.upper()).numpy()
    cin = x.shape[-1]
    return p.reshape(-1, kh * kw, cin) if _depthwise(conv) else p.reshape(-1, kh * kw * cin)


def _moments(pm: np.ndarray, drift: np.ndarray, mask: np.ndarray, depthwise: bool,
             shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Masked input covariance C, cross term h, input mean mu and mean drift per channel.

    Args:
        pm: patches of the rounded network (see :func:`_patches`).
        drift: (rows, channels) output drift ``(X - X_f) w`` from earlier layers.
        mask: (rows, channels) where the output error counts.
        depthwise: each channel has its own patches.
        shared: one covariance over all rows for every channel (large layers).

    Returns:
        C (fan_in, fan_in) if shared else (channels, fan_in, fan_in); h, mu
        (fan_in, channels); mean drift (channels,); drift variance summed over channels.
    """
    if shared:
        X = pm.astype(np.float64)
        mu1 = X.mean(0)
        Xc = X - mu1
        C = Xc.T @ Xc / len(X)
        h = Xc.T @ (drift - drift.mean(0)) / len(X)
        return (C, h, np.repeat(mu1[:, None], drift.shape[1], 1), drift.mean(0),
                float(drift.var(0).sum()))
    m = mask.astype(np.float64)
    n = np.maximum(m.sum(0), 1.0)
    dmean = (m * drift).sum(0) / n
    fan_in, channels = pm.shape[1], m.shape[1]
    S2 = np.zeros((channels, fan_in, fan_in))
    S1 = np.zeros((channels, fan_in))
    T = np.zeros((channels, fan_in))
    chunk = max(1, 4_000_000 // (fan_in * channels if depthwise else fan_in * fan_in))
    for a in range(0, len(pm), chunk):
        mc, dc = m[a:a + chunk], drift[a:a + chunk]
        if depthwise:
            X = pm[a:a + chunk].astype(np.float64).transpose(2, 0, 1)     # (c, rows, k*k)
            Y = X * mc.T[:, :, None]
            S2 += Y.transpose(0, 2, 1) @ X
            S1 += Y.sum(1)
            T += np.einsum("crd,rc->cd", Y, dc)
        else:
            X = pm[a:a + chunk].astype(np.float64)
            Z = (X[:, :, None] * X[:, None, :]).reshape(len(X), -1)
            S2 += (mc.T @ Z).reshape(channels, fan_in, fan_in)
            S1 += mc.T @ X
            T += (mc * dc).T @ X
    mu = S1 / n[:, None]
    C = S2 / n[:, None, None] - mu[:, :, None] * mu[:, None, :]
    h = T / n[:, None] - mu * dmean[:, None]
    dvar = float(((m * drift ** 2).sum(0) / n - dmean ** 2).sum())
    return C, h.T, mu.T, dmean, dvar


def _descend(C: np.ndarray, h: np.ndarray, u: np.ndarray, step: np.ndarray,
             fixed: np.ndarray) -> np.ndarray:
    """Minimise u'Cu + 2h'u with each weight on one of its two neighbouring grid points.

    ``u`` (fan_in, channels) is the rounding error in weight units (nearest to
    start); a flip moves a weight by one step to its other neighbour. ``C`` is
    (fan_in, fan_in) shared or (channels, fan_in, fan_in); all channels descend
    together, one input position at a time.
    """
    shared = C.ndim == 2
    G = (C @ u if shared else np.einsum("cij,jc->ic", C, u)) + h
    diag = np.repeat(np.diag(C)[:, None], u.shape[1], 1) if shared else np.einsum("cii->ic", C)
    for _ in range(SWEEPS):
        flipped = 0
        for i in range(u.shape[0]):
            d = np.where(u[i] > 0, -step, step)
            curvature = d * d * diag[i]
            move = (2 * d * G[i] + curvature < -1e-9 * curvature) & ~fixed[i]
            if not move.any():
                continue
            delta = np.where(move, d, 0.0)
            u[i] += delta
            G += C[:, i:i + 1] * delta[None, :] if shared else C[:, :, i].T * delta[None, :]
            flipped += int(move.sum())
        if not flipped:
            break
    return u


def _cost(C: np.ndarray, h: np.ndarray, u: np.ndarray) -> float:
    Cu = C @ u if C.ndim == 2 else np.einsum("cij,jc->ic", C, u)
    return float((u * (Cu + 2 * h)).sum())


def _round_layer(t: Target, xm: np.ndarray, xf: np.ndarray, pre: np.ndarray,
                 rng: np.random.Generator) -> tuple[float, float]:
    """Round one layer's weights in place; returns its output error (nearest, adaptive)."""
    depthwise = _depthwise(t.conv)
    pm, pf = _patches(xm, t.conv), _patches(xf, t.conv)
    pre = pre.reshape(-1, pre.shape[-1])
    if len(pm) > MAX_ROWS:
        rows = rng.choice(len(pm), MAX_ROWS, replace=False)
        pm, pf, pre = pm[rows], pf[rows], pre[rows]
    w, bn_scale = _folded(t)
    fan_in, channels = w.shape
    if depthwise:
        drift = np.einsum("rkc,kc->rc", pm.astype(np.float64) - pf, w)
    else:
        drift = (pm.astype(np.float64) - pf) @ w
    if t.clip is not None:
        mask = (pre > t.clip[0]) & (pre < t.clip[1])
        mask[:, mask.sum(0) < 50] = True        # (almost) never passes: count every row
    else:
        mask = np.ones(pre.shape, bool)
    shared = not depthwise and (t.clip is None or channels * fan_in * fan_in > COV_BUDGET)
    C, h, mu, dmean, dvar = _moments(pm, drift, mask, depthwise, shared)
    amax = np.abs(w).max(0)
    live = amax > 0
    step = np.where(live, amax / 127, 1.0)
    r = w / step
    u = (np.round(r) - r) * step
    fixed = (np.abs(np.abs(r) - 127) < 1e-6) | ~live[None, :]   # the channel max stays put
    before = _cost(C, h, u) + dvar
    if fan_in * fan_in * channels <= DESCENT_BUDGET:
        u = _descend(C, h, u.copy(), step, fixed)
    else:
        log.info("%s: fan-in %d x %d channels, nearest rounding + bias correction only",
                 t.conv.name, fan_in, channels)
    q = np.clip(np.round((w + u) / step), -127, 127)
    u = np.where(live[None, :], q * step - w, 0.0)
    after = _cost(C, h, u) + dvar
    new_w = np.where(live[None, :], q * step, w)
    shift = -((mu * u).sum(0) + dmean)     # bias correction: no mean error left
    safe = np.where(bn_scale == 0, 1.0, bn_scale)
    t.conv.kernel.assign((new_w / safe).reshape(t.conv.kernel.shape).astype(np.float32))
    if t.bn is not None and t.bn.center:
        t.bn.beta.assign((_value(t.bn.beta) + shift).astype(np.float32))
    elif t.conv.use_bias:         # a bias before a batch norm is scaled by it
        t.conv.bias.assign((_value(t.conv.bias) + shift / safe).astype(np.float32))
    return before, after


def _run(probe, images: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """Outputs of a probe model, called eagerly (no per-probe tracing as predict() does)."""
    import keras

    parts = []
    for i in range(0, len(images), batch):
        out = probe(images[i:i + batch], training=False)
        parts.append(out if isinstance(out, (list, tuple)) else [out])
    return [np.concatenate([keras.ops.convert_to_numpy(p[k]) for p in parts])
            for k in range(len(parts[0]))]


def round_weights(model, reference, images: np.ndarray, seed: int = 0) -> list[dict]:
    """Adaptive rounding of every handled convolution of ``model``, in place.

    Args:
        model: the Keras classifier to export (modified in place; pass a fresh copy).
        reference: the same trained model, left unmodified (the float targets).
        images: float32 (N, S, S, 3) calibration images in 0..255 (16-32 is plenty).
        seed: row sampling seed.

    Returns:
        One dict per layer: ``layer``, ``nearest`` and ``adaptive`` output error
        (variance of the layer's output error against the float network).
    """
    import keras

    rng = np.random.default_rng(seed)
    ours, refs = targets(model), targets(reference)
    if len(ours) != len(refs) or any(
            t.conv.kernel.shape != rt.conv.kernel.shape for t, rt in zip(ours, refs)):
        raise ValueError("round_weights: model and reference differ in their convolutions")
    todo = list(zip(ours, refs))
    report = []
    for n, (t, rt) in enumerate(todo, 1):
        xm, = _run(keras.Model(model.inputs[0], [t.conv.input]), images)
        xf, pre = _run(keras.Model(reference.inputs[0], [rt.conv.input,
                                                         (rt.bn or rt.conv).output]), images)
        before, after = _round_layer(t, xm, xf, pre, rng)
        report.append({"layer": t.conv.name, "nearest": before, "adaptive": after})
        log.info("int8 rounding %d/%d %s: output error %.3g -> %.3g", n, len(todo), t.conv.name,
                 before, after)
    return report
