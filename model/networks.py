"""Keras builders for the built-in model: a style predictor and a style transformer.

Both follow the model contract (DESIGN §1): the predictor maps a 256×256 RGB style
image in [0,1] to a D=100 style vector; the transformer maps content N×H×W×3 in
[0,1] plus N×D style vectors to a stylized image of the same size (H, W multiples
of 16).  The transformer is built for XNNPACK on CPUs:

- zero ("same") padding everywhere, no MIRROR_PAD;
- a strided 4×4 stem and a depth-to-space head, so no convolution runs at full
  resolution; upsampling is 1×1 conv + depth-to-space (no dynamic-size resize);
  (SPACE_TO_DEPTH is not delegated by this LiteRT's XNNPACK, DEPTH_TO_SPACE is);
- depthwise kernels of at most 1024 weights (3·3·C, C ≤ 113): the converter gives larger
  ones int8 weights in the ``tflite-int8`` export, which XNNPACK does not run as hybrid
  depthwise, so :func:`export.float_depthwise_kernels` turns them back into float32;
- conditional instance norm (CIN): instance statistics over H, W, scale and shift
  predicted from the style vector by one linear layer per block (as in Ghiasi et al.).

Everything is ``keras.ops`` (any backend), except that :class:`DepthToSpace` uses
TensorFlow's own op under the TensorFlow backend so that exports hold one DEPTH_TO_SPACE.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers, ops

STYLE_DIM = 100


@dataclass(frozen=True)
class TransformerSpec:
    """Widths of the transformer; the defaults are the built-in model."""

    stem: int = 16        # at H/2 after space-to-depth
    mid: int = 32         # at H/4
    deep: int = 64        # at H/8, the residual trunk
    blocks: int = 4       # inverted-residual blocks at H/8
    expand: float = 1.75  # expansion inside each block (64·1.75 = 112 channels)
    style_dim: int = STYLE_DIM


@dataclass(frozen=True)
class PredictorSpec:
    """Widths and strides of the predictor's layers (the stem, then one depthwise-separable block
    per further entry) and its hidden units; the defaults are the built-in model's.
    Raises ValueError when ``widths`` and ``strides`` differ in length."""

    widths: tuple[int, ...] = (24, 48, 96, 96, 112, 112, 256)
    strides: tuple[int, ...] = (2, 2, 2, 1, 2, 1, 2)
    hidden: int = 256
    style_dim: int = STYLE_DIM

    def __post_init__(self):
        if len(self.widths) != len(self.strides):
            raise ValueError(f"{len(self.widths)} widths but {len(self.strides)} strides (one stride per width)")


@keras.saving.register_keras_serializable("stylecast")
class DepthToSpace(layers.Layer):
    def __init__(self, block: int, **kw):
        super().__init__(**kw)
        self.block = block

    def call(self, x):
        if keras.backend.backend() == "tensorflow":  # one DEPTH_TO_SPACE op in the TFLite export
            import tensorflow as tf  # noqa: PLC0415

            return tf.nn.depth_to_space(x, self.block)
        b, (h, w, c) = self.block, ops.shape(x)[1:]  # the same layout with keras.ops (any backend)
        x = ops.reshape(x, (-1, h, w, b, b, c // (b * b)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h * b, w * b, c // (b * b)))

    def compute_output_shape(self, s):
        b = self.block
        return (s[0], None if s[1] is None else s[1] * b, None if s[2] is None else s[2] * b, s[3] // (b * b))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable("stylecast")
class MirrorPad(layers.Layer):
    """Mirror (reflect) padding of N×H×W×C by ``before`` and ``after`` px (0 or 1) on H and W, as
    the teacher pads before each convolution. Built from slices and concatenations, which XNNPACK
    runs (it does not run MIRROR_PAD); H, W ≥ 2."""

    def __init__(self, before: int, after: int, **kw):
        super().__init__(**kw)
        if not {before, after} <= {0, 1}:
            raise ValueError(f"MirrorPad pads 0 or 1 px a side, not {before}/{after}")
        self.before, self.after = before, after

    def call(self, x):
        for axis in (1, 2):
            parts = [x]
            if self.before:
                parts.insert(0, x[:, 1:2] if axis == 1 else x[:, :, 1:2])
            if self.after:
                parts.append(x[:, -2:-1] if axis == 1 else x[:, :, -2:-1])
            x = ops.concatenate(parts, axis=axis)
        return x

    def compute_output_shape(self, s):
        grow = lambda n: None if n is None else n + self.before + self.after  # noqa: E731
        return (s[0], grow(s[1]), grow(s[2]), s[3])

    def get_config(self):
        return {**super().get_config(), "before": self.before, "after": self.after}


@keras.saving.register_keras_serializable("stylecast")
class ConditionalInstanceNorm(layers.Layer):
    """Instance norm whose per-channel scale and shift come from the style vector.

    Inputs ``[x, style]``; the projection is initialised so that an all-zero style
    gives scale 1 and shift 0.
    """

    def __init__(self, epsilon: float = 1e-3, **kw):
        super().__init__(**kw)
        self.epsilon = epsilon

    def build(self, shapes):
        channels, dim = shapes[0][-1], shapes[1][-1]
        self.proj = layers.Dense(2 * channels, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                 name="proj")
        self.proj.build((None, dim))
        self.channels = channels

    def call(self, inputs):
        x, style = inputs
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        centred = x - mean
        var = ops.mean(ops.square(centred), axis=(1, 2), keepdims=True)
        params = self.proj(style)
        gamma = ops.reshape(params[:, : self.channels], (-1, 1, 1, self.channels)) + 1.0
        beta = ops.reshape(params[:, self.channels:], (-1, 1, 1, self.channels))
        return centred * (gamma * ops.rsqrt(var + self.epsilon)) + beta

    def compute_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _cin_relu(x, style, name, relu=True):
    x = ConditionalInstanceNorm(name=f"{name}_cin")([x, style])
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _inverted_residual(x, style, channels, expand, name):
    h = layers.Conv2D(int(channels * expand), 1, name=f"{name}_expand")(x)
    h = _cin_relu(h, style, f"{name}_expand")
    h = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(h)
    h = layers.ReLU(name=f"{name}_dw_relu")(h)
    h = layers.Conv2D(channels, 1, name=f"{name}_project")(h)
    h = _cin_relu(h, style, f"{name}_project", relu=False)
    return layers.Add(name=f"{name}_add")([x, h])


def _upsample(x, style, channels, name):
    """×2 upsampling: 1×1 conv to 4·C channels, depth-to-space, depthwise 3×3 + 1×1 refine."""
    h = layers.Conv2D(channels * 4, 1, name=f"{name}_conv")(x)
    h = DepthToSpace(2, name=f"{name}_d2s")(h)
    h = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(h)
    h = layers.Conv2D(channels, 1, name=f"{name}_pw")(h)
    return _cin_relu(h, style, name)


def build_transformer(spec: TransformerSpec = TransformerSpec(), name: str = "transformer") -> keras.Model:
    """Content N×H×W×3 [0,1] + style N×D → stylized N×H×W×3 [0,1]; H, W multiples of 16."""
    content = keras.Input((None, None, 3), name="content")
    style = keras.Input((spec.style_dim,), name="style")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(content)
    x = layers.Conv2D(spec.stem, 4, strides=2, padding="same", name="stem_conv")(x)   # H/2
    stem = _cin_relu(x, style, "stem")
    x = layers.Conv2D(spec.mid, 3, strides=2, padding="same", name="down1_conv")(stem)   # H/4
    mid = _cin_relu(x, style, "down1")
    x = layers.Conv2D(spec.deep, 3, strides=2, padding="same", name="down2_conv")(mid)   # H/8
    x = _cin_relu(x, style, "down2")
    for i in range(spec.blocks):
        x = _inverted_residual(x, style, spec.deep, spec.expand, f"res{i}")
    x = _upsample(x, style, spec.mid, "up1")                                  # H/4
    x = layers.Add(name="skip_mid")([x, mid])
    x = _upsample(x, style, spec.stem, "up2")                                 # H/2
    x = layers.Add(name="skip_stem")([x, stem])
    x = layers.Conv2D(12, 3, padding="same", name="head_conv")(x)
    x = DepthToSpace(2, name="head_d2s")(x)                                   # H, 3
    out = layers.Activation("sigmoid", name="stylized")(x)
    return keras.Model([content, style], out, name=name)


@dataclass(frozen=True)
class StudentSpec:
    """The v5 transformer: its style trunk at H/4 with the teacher's width (32), so that
    each block can learn one teacher block from the teacher's own activations.

    ``block`` is ``"full"`` (two 3×3 convs, each followed by CIN, as the teacher's) or
    ``"dw"`` (two depthwise-separable 3×3 convs: depthwise 3×3, 1×1, CIN).
    ``encoder`` ``"light"`` is the stem and one stride-2 conv; ``"full"`` adds a 3×3 conv
    at H/2 (receptive field at the trunk 12 px instead of 8; the teacher's is 15).
    ``decoder`` ``"light"`` (the real-time tier) is one 1×1 + depth-to-space + depthwise
    upsampling to H/2 and a 3×3 conv to 12 channels + depth-to-space; ``"full"`` (the
    quality tier) has the teacher's two upsampling stages as full 3×3 convs to 4·C
    channels + depth-to-space + CIN + ReLU (``stem`` channels at H/2, ``fine`` at H: the
    teacher's ``up1`` and ``up2`` shapes), then a ``head``×``head`` conv to 3 channels at
    full resolution.
    ``pad`` ``"zero"`` pads each convolution with zeros (``same``); ``"mirror"`` mirrors the
    convolution's input by the same amounts (:class:`MirrorPad`), as the teacher does, so the
    frame's edge looks like the teacher's. The weights are the same shapes either way.
    """

    blocks: int = 3
    block: str = "full"
    stem: int = 16        # at H/2
    trunk: int = 32       # at H/4, the residual trunk (the teacher's trunk width)
    encoder: str = "light"
    decoder: str = "light"
    fine: int = 8         # at H (decoder "full" only; the teacher's width there)
    head: int = 3         # the full-resolution output conv's kernel (decoder "full" only)
    pad: str = "zero"     # "zero" or "mirror": how each convolution pads its input
    style_dim: int = STYLE_DIM


# The v5 candidates (model/candidates.py times them; the recipe trains them by name).
# rt*, dw5, q5: the real-time tier's shape; q5d, q5de: the quality tier (teacher-shaped decoder).
CANDIDATES = {
    "rt3": StudentSpec(blocks=3, block="full"),
    "rt4": StudentSpec(blocks=4, block="full"),
    "dw5": StudentSpec(blocks=5, block="dw"),
    "q5": StudentSpec(blocks=5, block="full"),
    "q5d": StudentSpec(blocks=5, block="full", decoder="full"),
    "q5de": StudentSpec(blocks=5, block="full", encoder="full", decoder="full"),
    "q5dm": StudentSpec(blocks=5, block="full", encoder="full", decoder="full", pad="mirror"),
}


class _Layers(dict):
    """Named layers of a student, created on first use (``get``) or read from a built model."""

    def __init__(self, model: keras.Model | None = None):
        super().__init__({} if model is None else {l.name: l for l in model.layers})

    def get(self, name, make):
        if name not in self:
            self[name] = make(name)
        return self[name]


def _conv(L, spec: StudentSpec, name: str, x, channels: int | None, kernel: int, stride: int = 1):
    """A ``kernel``×``kernel`` convolution to ``channels`` (None: depthwise) with ``same`` output
    size (input H, W even for stride 2): zero padding, or (``spec.pad == "mirror"``) its input
    mirrored by the amounts ``same`` pads (total max(kernel − stride, 0) px, the extra one after)
    and no padding."""
    def make(n, p):
        if channels is None:
            return layers.DepthwiseConv2D(kernel, strides=stride, padding=p, name=n)
        return layers.Conv2D(channels, kernel, strides=stride, padding=p, name=n)

    if spec.pad == "zero" or kernel == 1:
        return L.get(name, lambda n: make(n, "same"))(x)
    total = max(kernel - stride, 0)
    x = L.get(f"{name}_pad", lambda n: MirrorPad(total // 2, total - total // 2, name=n))(x)
    return L.get(name, lambda n: make(n, "valid"))(x)


def _s_cin(L, x, style, name, relu=True):
    x = L.get(f"{name}_cin", lambda n: ConditionalInstanceNorm(name=n))([x, style])
    return L.get(f"{name}_relu", lambda n: layers.ReLU(name=n))(x) if relu else x


def _s_encoder(L, spec: StudentSpec, content, style):
    x = L.get("to_signed", lambda n: layers.Rescaling(2.0, offset=-1.0, name=n))(content)
    x = _conv(L, spec, "stem_conv", x, spec.stem, 4, 2)  # H/2
    x = _s_cin(L, x, style, "stem")
    if spec.encoder == "full":
        x = _conv(L, spec, "enc_conv", x, spec.stem, 3)  # H/2
        x = _s_cin(L, x, style, "enc")
    x = _conv(L, spec, "down1_conv", x, spec.trunk, 3, 2)  # H/4
    return _s_cin(L, x, style, "down1")


def _s_block(L, spec: StudentSpec, k: int, x, style):
    h = x
    for j in (1, 2):
        if spec.block == "full":
            h = _conv(L, spec, f"res{k}_conv{j}", h, spec.trunk, 3)
        else:
            h = _conv(L, spec, f"res{k}_dw{j}", h, None, 3)
            h = L.get(f"res{k}_pw{j}", lambda n: layers.Conv2D(spec.trunk, 1, name=n))(h)
        h = _s_cin(L, h, style, f"res{k}_{j}", relu=j == 1)
    return L.get(f"res{k}_add", lambda n: layers.Add(name=n))([x, h])


def _s_up(L, spec: StudentSpec, stage: int, x, style):
    """Decoder ``"full"``, stage 1 (H/4 → H/2, ``stem`` channels) or 2 (H/2 → H, ``fine``): a
    3×3 conv to 4·C channels and depth-to-space (sub-pixel: it holds the teacher's nearest
    ×2 + 3×3 conv), CIN, ReLU (``up{stage}_relu``, the teacher's ``up{stage}`` shape)."""
    c = spec.stem if stage == 1 else spec.fine
    x = _conv(L, spec, f"up{stage}_conv", x, 4 * c, 3)
    x = L.get(f"up{stage}_d2s", lambda n: DepthToSpace(2, name=n))(x)
    return _s_cin(L, x, style, f"up{stage}")


def _s_head(L, spec: StudentSpec, x, style):
    """Decoder ``"full"``: the ``head``×``head`` conv to 3 channels at H, CIN, sigmoid."""
    x = _conv(L, spec, "head_conv", x, 3, spec.head)
    x = _s_cin(L, x, style, "head", relu=False)
    return L.get("stylized", lambda n: layers.Activation("sigmoid", name=n))(x)


def _s_decoder(L, spec: StudentSpec, x, style):
    if spec.decoder == "full":
        return _s_head(L, spec, _s_up(L, spec, 2, _s_up(L, spec, 1, x, style), style), style)
    x = L.get("up2_conv", lambda n: layers.Conv2D(spec.stem * 4, 1, name=n))(x)
    x = L.get("up2_d2s", lambda n: DepthToSpace(2, name=n))(x)                              # H/2
    x = _conv(L, spec, "up2_dw", x, None, 3)
    x = L.get("up2_pw", lambda n: layers.Conv2D(spec.stem, 1, name=n))(x)
    x = _s_cin(L, x, style, "up2")
    x = _conv(L, spec, "head_conv", x, 12, 3)
    x = L.get("head_d2s", lambda n: DepthToSpace(2, name=n))(x)                             # H, 3
    x = _s_cin(L, x, style, "head", relu=False)
    return L.get("stylized", lambda n: layers.Activation("sigmoid", name=n))(x)


def build_student(spec: StudentSpec = StudentSpec(), name: str = "transformer") -> keras.Model:
    """Content N×H×W×3 [0,1] + style N×D → stylized N×H×W×3 [0,1]; H, W multiples of 4.

    A 4×4 stride-2 stem (space-to-depth and a 2×2 conv in one op: this LiteRT's XNNPACK
    does not delegate SPACE_TO_DEPTH) to 16 channels at H/2, a 3×3 stride-2 conv to the
    32-channel trunk at H/4 (``down1_relu``), ``blocks`` residual blocks with conditional
    instance norm (``res1_add``…), one ×2 upsampling (1×1 conv, depth-to-space, depthwise
    3×3 + 1×1, CIN; ``up2_relu`` at H/2), a 3×3 conv to 12 channels, depth-to-space to
    full resolution, CIN on the 3 output channels and a sigmoid.  No skips: the content
    reaches the output only through the style trunk, as in the teacher.  Encoder and
    decoder ``"full"`` (the quality tier, :class:`StudentSpec`): a 3×3 conv + CIN + ReLU at
    H/2 before the trunk (``enc_relu``); ``up1_relu`` N×H/2×W/2×``stem`` and ``up2_relu``
    N×H×W×``fine`` (sub-pixel 3×3 convs), then the full-resolution ``head`` conv to 3.
    With ``pad="mirror"`` every convolution wider than 1×1 reads a :class:`MirrorPad` of its
    input (layer ``{conv}_pad``); the weights are the same either way, so a zero-padded
    checkpoint loads into it.
    """
    L = _Layers()
    content = keras.Input((None, None, 3), name="content")
    style = keras.Input((spec.style_dim,), name="style")
    x = _s_encoder(L, spec, content, style)
    for k in range(1, spec.blocks + 1):
        x = _s_block(L, spec, k, x, style)
    return keras.Model([content, style], _s_decoder(L, spec, x, style), name=name)


def student_parts(model: keras.Model, spec: StudentSpec) -> dict[str, keras.Model]:
    """Pieces of a built student sharing its layers (and weights), for block-by-block hints:
    ``encoder`` [content, style] → N×H/4×W/4×32; ``res{k}`` [x, style] → x; ``decoder``
    [x, style] → N×H×W×3, or for decoder ``"full"`` its three stages ``up1`` (→ N×H/2×W/2×
    ``stem``), ``up2`` (→ N×H×W×``fine``) and ``head`` (→ N×H×W×3)."""
    L = _Layers(model)
    style = keras.Input((spec.style_dim,), name="style")
    content = keras.Input((None, None, 3), name="content")
    parts = {"encoder": keras.Model([content, style], _s_encoder(L, spec, content, style))}
    for k in range(1, spec.blocks + 1):
        x = keras.Input((None, None, spec.trunk))
        parts[f"res{k}"] = keras.Model([x, style], _s_block(L, spec, k, x, style))
    x = keras.Input((None, None, spec.trunk))
    if spec.decoder == "full":
        parts["up1"] = keras.Model([x, style], _s_up(L, spec, 1, x, style))
        x = keras.Input((None, None, spec.stem))
        parts["up2"] = keras.Model([x, style], _s_up(L, spec, 2, x, style))
        x = keras.Input((None, None, spec.fine))
        parts["head"] = keras.Model([x, style], _s_head(L, spec, x, style))
    else:
        parts["decoder"] = keras.Model([x, style], _s_decoder(L, spec, x, style))
    return parts


def teacher_hints(spec: StudentSpec) -> dict[str, tuple[str, str]]:
    """Each student piece → (teacher tap it reads, teacher tap it must reproduce).

    The student's k-th of B blocks stands for the teacher's blocks round(5(k−1)/B)+1 …
    round(5k/B) (:data:`teacher_port.TAPS` names; the decoder's target is the image; a
    ``"full"`` decoder's stages learn the teacher's ``up1``, ``up2`` and then the image)."""
    bounds = [round(5 * k / spec.blocks) for k in range(spec.blocks + 1)]
    tap = lambda i: "trunk_in" if i == 0 else f"res{i}"  # noqa: E731
    hints = {"encoder": ("content", "trunk_in")}
    for k in range(1, spec.blocks + 1):
        hints[f"res{k}"] = (tap(bounds[k - 1]), tap(bounds[k]))
    if spec.decoder == "full":  # the teacher's upsampling outputs have the same shapes
        hints.update(up1=("res5", "up1"), up2=("up1", "up2"), head=("up2", "stylized"))
    else:
        hints["decoder"] = ("res5", "stylized")
    return hints


def student_taps(spec: StudentSpec) -> dict[str, str]:
    """Student layer name → the teacher tap (:data:`teacher_port.TAPS`) of the same shape it
    is matched to in end-to-end training (the boundaries of :func:`teacher_hints`)."""
    hints = teacher_hints(spec)
    taps = {"down1_relu": "trunk_in", **{f"res{k}_add": hints[f"res{k}"][1] for k in range(1, spec.blocks + 1)}}
    if spec.decoder == "full":
        return {**taps, "up1_relu": "up1", "up2_relu": "up2"}
    return {**taps, "up2_relu": "up1"}  # the light decoder's H/2 stage


def build_predictor(spec: PredictorSpec = PredictorSpec(), name: str = "predictor") -> keras.Model:
    """Style image N×256×256×3 [0,1] → style vector N×D (a small MobileNet-style net)."""
    image = keras.Input((256, 256, 3), name="style_image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(image)
    x = layers.Conv2D(spec.widths[0], 3, strides=spec.strides[0], padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, (w, s) in enumerate(zip(spec.widths[1:], spec.strides[1:])):
        x = layers.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"b{i}_dw")(x)
        x = layers.BatchNormalization(name=f"b{i}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"b{i}_dw_relu")(x)
        x = layers.Conv2D(w, 1, use_bias=False, name=f"b{i}_pw")(x)
        x = layers.BatchNormalization(name=f"b{i}_pw_bn")(x)
        x = layers.ReLU(6.0, name=f"b{i}_pw_relu")(x)
    # Mean and standard deviation pooling: style lives in feature statistics.
    mean = layers.GlobalAveragePooling2D(name="gap")(x)
    std = StdPool(name="std_pool")(x)
    x = layers.Concatenate(name="stats")([mean, std])
    x = layers.Dense(spec.hidden, activation="relu", name="hidden")(x)
    out = layers.Dense(spec.style_dim, name="style_vector")(x)
    return keras.Model(image, out, name=name)


@keras.saving.register_keras_serializable("stylecast")
class StdPool(layers.Layer):
    """Per-channel standard deviation over H, W (N×H×W×C → N×C)."""

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        return ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2)) + 1e-6)

    def compute_output_shape(self, s):
        return (s[0], s[3])


def count_macs(model: keras.Model, height: int, width: int) -> int:
    """Multiply-accumulates of one H×W input through the convolution, dense and conditional
    instance norm projection layers (the layers that dominate; activations and norms not counted)."""
    convs = [l for l in model.layers if isinstance(l, (layers.Conv2D, layers.DepthwiseConv2D))]
    probe = keras.Model(model.inputs, [l.output for l in convs])
    feeds = [ops.zeros((1, height, width, 3))] + [ops.zeros((1, STYLE_DIM))] * (len(model.inputs) - 1)
    total = 0
    for l, out in zip(convs, probe(feeds)):
        k = l.kernel_size[0] * l.kernel_size[1] * out.shape[1] * out.shape[2]
        total += k * l.input.shape[-1] * (1 if isinstance(l, layers.DepthwiseConv2D) else l.filters)
    for l in model.layers:
        if isinstance(l, layers.Dense):
            total += l.kernel.shape[0] * l.kernel.shape[1]
        elif isinstance(l, ConditionalInstanceNorm):
            total += l.proj.kernel.shape[0] * l.proj.kernel.shape[1]
    return int(total)
