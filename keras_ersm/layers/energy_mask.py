"""The `EnergyMask` layer: a learned, energy-regularised spatial mask."""

import keras
from keras import ops

from keras_ersm import _validation
from keras_ersm import ops as ersm_ops
from keras_ersm.regularizers import EnergyRegularizer

_BIAS_KINDS = ("scalar", "positional")
_PADDINGS = ("valid", "same")
_DATA_FORMATS = ("channels_last", "channels_first")

# Defaults chosen by measurement (benchmarks/results/defaults.md): trained
# from scratch, bias 0 + output rescaling + a unary-dominant energy gives
# sparse, localised masks; the paper's settings collapse (keep ~1e-4).
DEFAULT_BIAS_INIT = 0.0
# The scoring kernel starts as Glorot uniform at a tenth of its range
# (VarianceScaling scale 0.01): a weak random ranking, which a slowly
# moving kernel (plain SGD) does not keep in place (docs/concepts.md,
# "Trainability").
DEFAULT_KERNEL_SCALE = 0.01
DEFAULT_UNARY = 1e-2
DEFAULT_PAIRWISE = 1e-3
# The reference implementation's settings (docs/concepts.md, "The reference layer").
PAPER_BIAS_INIT = 6.0
# `norm_init` lies in [-1e4, 1e4]: finite as a float16 weight.
_NORM_INIT_LIMIT = 1e4


_REGULARIZER_EXPECTED = (
    "an EnergyRegularizer (or an object with its `__call__(keep, scores, "
    "redundancy)` and `energy(scores, redundancy)` methods), its config "
    "(`EnergyRegularizer(...).get_config()` or a serialized dict), None or "
    "'default'"
)


def _energy_regularizer(value):
    """Resolves the `energy_regularizer` argument of `EnergyMask`."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "default":
            return EnergyRegularizer(unary=DEFAULT_UNARY, pairwise=DEFAULT_PAIRWISE)
        raise _validation.invalid("energy_regularizer", _REGULARIZER_EXPECTED, value)
    if isinstance(value, dict):
        if "class_name" in value:
            value = keras.saving.deserialize_keras_object(value)
        else:
            unknown = sorted(set(value) - {"unary", "pairwise", "weight"})
            if unknown:
                raise _validation.invalid(
                    "energy_regularizer",
                    _REGULARIZER_EXPECTED + f" (unknown keys {unknown})",
                    value,
                )
            value = EnergyRegularizer.from_config(value)
    if not (callable(value) and callable(getattr(value, "energy", None))):
        raise _validation.invalid_type(
            "energy_regularizer",
            _REGULARIZER_EXPECTED,
            value,
            "A plain Keras weight regularizer such as `keras.regularizers.L2` "
            "does not take the keep map, scores and redundancy",
        )
    return value


def _scale_gradient(x, scale):
    """`x` in the forward pass, `scale` times its gradient in the backward."""
    frozen = ops.stop_gradient(x)
    if scale == 0.0:
        return frozen
    return frozen + scale * (x - frozen)


@keras.saving.register_keras_serializable(package="keras_ersm")
class EnergyMask(keras.layers.Layer):
    """Energy-Regularized Spatial Masking (ERSM) of a 4-D feature map.

    The feature map is cut into non-overlapping `p x p` patches (tokens).
    Each token `x_i` is normalised, `p_hat_i = x_i / (||x_i|| + 1e-6)`, and
    scored, `z_i = w . p_hat_i + b`. The keep probability is
    `keep_i = sigmoid(-z_i / T)` and every element of the token is multiplied
    by it. With `coherence_steps=K > 0`, the keep map is instead the result
    of `K` mean-field updates of a binary field with Potts coupling
    `beta >= 0` over the 8 neighbours, which makes the mask spatially
    coherent; `K = 0` is exactly the reference layer.

    During every call the layer adds, with `add_loss`, the energy loss of
    its `energy_regularizer`: `mean(keep_i * E_i)` with
    `E_i = lambda * softplus(z_i) + gamma * softplus(S_i)` and `S_i` the
    redundancy of token `i` with its 8 neighbours. No sparsity budget is
    set: sparsity emerges from the balance of task loss and energy.

    Scores, keep and energy are computed in float32 whatever the compute
    dtype; the output is in the compute dtype.

    Input dtypes: float inputs keep their dtype (autocast to the compute
    dtype as in any Keras layer); integer and bool inputs (e.g. `uint8`
    images) are cast to the compute dtype, so the output is float in eager
    and symbolic calls alike.

    NaN and Inf policy: every numeric constructor argument must be finite
    (a NaN or Inf `temperature`, `coherence_init`, `norm_init` or
    regularizer weight raises a `ValueError` naming it, also when a `.keras`
    file holding one is loaded); numpy scalars are accepted. Finite inputs
    of any magnitude (all zeros, 1e-30, 1e30) give a keep in [0, 1] and
    finite outputs with `rescale=False`; `rescale=True` multiplies each
    value by `keep_i / mean(keep)` (at most the number of tokens), so a
    value within that factor of the dtype's maximum (e.g. 3e38 in float32)
    can overflow to +-Inf, as any product does. An empty batch gives an empty output
    and a zero loss. Non-finite inputs are not sanitised: a token holding a
    NaN or an Inf gets a NaN score and keep, hence a NaN output, and the
    energy loss becomes NaN (`keras.callbacks.TerminateOnNaN` stops such a
    fit). With `coherence_steps=0` and `rescale=False` the other tokens stay
    finite and are unaffected (with `norm_score=True` their norm term's mean
    then skips the non-finite token); the mean-field steps spread the NaN
    to the neighbours, and `rescale=True` to the whole image. See the
    docs' Concepts page.

    The defaults train from scratch; `EnergyMask.paper()` gives the
    reference implementation's settings (bias initialised to 6.0).

    Args:
        patch_size: int >= 1, side `p` of a token. Defaults to `1`.
        temperature: finite positive float `T` of the keep sigmoid.
            Defaults to `1.0`.
        bias: `"scalar"` (one trainable bias, any input size) or
            `"positional"` (one per grid position; needs a static spatial
            size). Defaults to `"scalar"`.
        kernel_initializer: initializer of the scoring `kernel` of shape
            `(p * p * C, 1)`. Defaults to `None`: Glorot uniform at a
            tenth of its range, `VarianceScaling(scale=0.01,
            mode="fan_avg", distribution="uniform")`, so the tokens start
            from a weak random ranking, which a slowly moving kernel
            (plain SGD) does not keep in place. Against `"glorot_uniform"`
            (the previous default) it closed a 2.2-point gap to the
            model without the mask with SGD on `MobileNetV3Small` (six
            seeds) and made that backbone's mask sparser with Adam and
            AdamW (mean keep 0.28-0.29 instead of 0.48-0.50); `"zeros"`
            (every token starts with the same keep) failed three cells of
            the same matrix (docs/benchmarks.md, "Trainability").
        bias_initializer: initializer of the `bias`. Defaults to
            `Constant(0.0)` (measured, see the docs' Benchmarks page).
        coherence_steps: int >= 0, number `K` of mean-field updates.
            Defaults to `0` (the reference layer).
        coherence_init: finite non-negative float, initial value of the
            trainable coupling `beta` (a weight named `coherence`, only
            created when `coherence_steps > 0`). Defaults to `0.5`.
        energy_regularizer: an `EnergyRegularizer` (or its config, as
            `get_config()` or `keras.saving.serialize_keras_object` give
            it; any object with the same `__call__` and `energy` methods
            works too, its loss must be a scalar), `None` for no loss, or
            `"default"` for the measured default
            `EnergyRegularizer(unary=1e-2, pairwise=1e-3)`. Defaults to
            `"default"`.
        rescale: bool. If `True`, the masked map is divided by each image's
            mean keep (as inverted dropout does), so the layer changes where
            the features are, not their overall scale: with global average
            pooling after the layer this is keep-weighted pooling. Measured
            to be what makes the mask sparse and localised when trained
            from scratch. Defaults to `True` (`EnergyMask.paper()` uses
            `False`).
        padding: `"valid"` (height and width must be multiples of
            `patch_size`) or `"same"` (padded with zeros up to a multiple,
            cropped back). Defaults to `"valid"`.
        data_format: `"channels_last"`, `"channels_first"` or `None` for
            `keras.config.image_data_format()`. Defaults to `None`.
        energy_feature_gradient: float in `[0, 1]`, the scale of the energy
            loss's gradient that reaches the input features (the backbone).
            `0` lets the energy train only the mask's own weights, so it can
            never drive the backbone's features to zero (measured to stop a
            CNN without normalisation from learning; docs/concepts.md,
            "Trainability"); `1` is the reference layer. The forward values
            do not depend on it. Defaults to `0.0` (`EnergyMask.paper()`
            uses `1.0`).
        energy_kernel_gradient: float in `[0, 1]`, the scale of the energy
            loss's gradient that reaches the scoring `kernel` (the bias and
            the coherence always get it in full). `0` lets the energy set
            how much the mask keeps (through the bias) while the task alone
            decides where (through the kernel): on ReLU features the energy
            otherwise lowers itself by scoring every non-empty token above
            the empty ones, which were measured to keep a CNN whose features
            are mostly zero early in training from recovering
            (docs/concepts.md, "Trainability"). `1` is the reference layer.
            With `energy_score_gradient=1.0` (the previous default), `0.0`
            helped a backbone without normalisation layers trained with
            Adam, where `1.0` left more runs at chance than the model
            without the mask, and cost accuracy on a normalised backbone;
            with the current default it was probed on single seeds only,
            with no consistent sign: on a plain CNN 7.0% against the
            default's 22.3 (AdamW) and 25.3 against 10.7 (Adam, on a GPU);
            on `MobileNetV3Small`'s first plateau +15.8 and -20.5 points
            against the control (docs/benchmarks.md, "Session 15").
            The forward values do not depend on it. Defaults to `1.0`.
        keep_feature_gradient: float in `[0, 1]`, the scale of every
            gradient that reaches the input features through the scores
            (the task's, through the keep, and the energy's, which is
            further scaled by `energy_feature_gradient`). The features
            always get the task gradient through `x * keep` in full. `0`
            makes the mask a reader of the features: they are trained only
            through the values the mask lets through. The scores see the
            tokens normalised, whose gradient grows as `1 / ||x_i||`; on a
            CNN without normalisation whose features are nearly all zero
            early in training, that path was measured to keep the features
            from recovering (docs/concepts.md, "Trainability"). `1` is the
            reference layer. The forward values do not depend on it.
            Defaults to `1.0`.
        energy_score_gradient: float in `[0, 1]`, the scale of the energy
            loss's gradient through the energy's own dependence on the
            scores (for `EnergyRegularizer`, the unary term
            `lambda * softplus(z)`; for a custom regularizer, every use of
            its `scores` argument; the keep always gets it in full). The loss
            `keep * E` is not monotone in the score: where `z` is below
            about 0.4 and the redundancy is low, its gradient lowers `z`,
            which *raises* the keep. `0` makes `E` a fixed price per token,
            so the energy's gradient reaches the scores only through the
            keep and always lowers it. `1` is the reference layer. Measured:
            on a backbone whose features are signed at the mask (a
            residual sum without a ReLU, as in `MobileNetV3Small`) the
            redundancy is low and `1` raised the mean keep above 0.5; `0`
            keeps it below and passes every cell of the trainability
            matrix that `1` passed. The forward values do not depend on it
            (docs/concepts.md, "The energy as a price per token"). Defaults
            to `0.0` (`EnergyMask.paper()` uses `1.0`).
        norm_score: bool. If `True`, each score also sees the token's norm
            relative to the image's mean token norm, through a trainable
            scalar `a` (a weight named `norm_weight`, `norm_init` at
            first): `z_i += a * (||x_i|| / mean_j ||x_j|| - 1)`. The scores
            otherwise read the tokens normalised and never see their norm,
            which carries the objectness in trained features. The term has
            zero mean over the image's tokens (none for an all-zero image).
            The norm is read without gradient, so the term adds no gradient
            into the features and trains `a` only; the energy's gradient to
            `a` is scaled by `energy_kernel_gradient` as the kernel's is.
            With `padding="same"` and `patch_size > 1` the zero padding
            lowers the norms of the edge tokens (docs/concepts.md, "The
            score sees the token's norm"). Defaults to `False`
            (`EnergyMask.paper()` uses `False`).
        norm_init: float in `[-1e4, 1e4]`, the norm weight `a`'s initial
            value; only with `norm_score=True` (a non-zero value without
            it raises a `ValueError`). Negative keeps the tokens of larger
            norm from the first step, a magnitude prior that the training
            then moves; `0.0` starts from the plain layer. Measured with
            `-1.0` on the bundled quality benchmark: the keep map put more
            of its mass inside the object than Grad-CAM of the model
            without the mask from scratch, and twice the object's area in
            the frozen recipe; on a mask inside `MobileNetV3Small` it kept
            the mask dense (mean keep 0.53). With
            `bias_initializer=Constant(1.0)` as well the mask there stayed
            sparse with Adam and AdamW (mean keep 0.29), but with SGD at
            0.01 accuracy fell 6 points (with either bias), so neither is
            the default (docs/concepts.md, "A magnitude prior:
            `norm_init`"). Defaults to `0.0`.
        **kwargs: base layer keyword arguments, e.g. `name` and `dtype`.

    Call arguments:
        inputs: 4-D feature map (float, or integer/bool cast to the
            compute dtype).
        training: unused; the layer is deterministic.

    Returns:
        The masked feature map, same shape as `inputs`, in the inputs'
        (autocast) float dtype or, for integer and bool inputs, the compute
        dtype.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras_ersm.EnergyMask(patch_size=2),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    x = np.random.rand(4, 16, 16, 3).astype("float32")
    assert model(x).shape == (4, 10)
    terms = model.layers[1].energy_terms(model.layers[0](x))
    assert tuple(terms["keep"].shape) == (4, 8, 8)
    ```

    Reference:
        - ERSM, arXiv 2604.06893 (IJCAI 2026).
    """

    def __init__(
        self,
        patch_size=1,
        temperature=1.0,
        bias="scalar",
        kernel_initializer=None,
        bias_initializer=None,
        coherence_steps=0,
        coherence_init=0.5,
        energy_regularizer="default",
        rescale=True,
        padding="valid",
        data_format=None,
        energy_feature_gradient=0.0,
        energy_kernel_gradient=1.0,
        keep_feature_gradient=1.0,
        energy_score_gradient=0.0,
        norm_score=False,
        norm_init=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = _validation.check_int("patch_size", patch_size, 1)
        self.temperature = _validation.check_number(
            "temperature", temperature, positive=True
        )
        self.bias_kind = _validation.check_choice("bias", bias, _BIAS_KINDS)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=DEFAULT_KERNEL_SCALE, mode="fan_avg", distribution="uniform"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if bias_initializer is None:
            bias_initializer = keras.initializers.Constant(DEFAULT_BIAS_INIT)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.coherence_steps = _validation.check_int(
            "coherence_steps", coherence_steps, 0
        )
        self.coherence_init = _validation.check_number(
            "coherence_init", coherence_init, non_negative=True
        )
        self.energy_regularizer = _energy_regularizer(energy_regularizer)
        self.rescale = _validation.check_bool("rescale", rescale)
        self.padding = _validation.check_choice("padding", padding, _PADDINGS)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = _validation.check_choice(
            "data_format", data_format, _DATA_FORMATS
        )
        self.energy_feature_gradient = _validation.check_number(
            "energy_feature_gradient",
            energy_feature_gradient,
            minimum=0.0,
            maximum=1.0,
        )
        self.energy_kernel_gradient = _validation.check_number(
            "energy_kernel_gradient",
            energy_kernel_gradient,
            minimum=0.0,
            maximum=1.0,
        )
        self.keep_feature_gradient = _validation.check_number(
            "keep_feature_gradient",
            keep_feature_gradient,
            minimum=0.0,
            maximum=1.0,
        )
        self.energy_score_gradient = _validation.check_number(
            "energy_score_gradient",
            energy_score_gradient,
            minimum=0.0,
            maximum=1.0,
        )
        self.norm_score = _validation.check_bool("norm_score", norm_score)
        # Bounded so that the weight is finite in float16 too.
        self.norm_init = _validation.check_number(
            "norm_init", norm_init, minimum=-_NORM_INIT_LIMIT, maximum=_NORM_INIT_LIMIT
        )
        if self.norm_init != 0.0 and not self.norm_score:
            raise ValueError(
                "`norm_init` sets the norm weight of `norm_score=True`; with "
                "`norm_score=False` there is no norm weight. Received: "
                f"norm_init={norm_init!r}, norm_score={norm_score!r}"
            )
        self.supports_masking = True

    @classmethod
    def paper(cls, **overrides):
        """Returns an `EnergyMask` with exactly the reference settings.

        Bias initialised to 6.0, `lambda = gamma = 1e-3`, `T = 1`, no
        coherence, no output rescaling, the energy's gradient reaching the
        features in full (`energy_feature_gradient=1.0`) and flowing through
        its own dependence on the scores (`energy_score_gradient=1.0`), and
        a kernel initialised like a PyTorch `nn.Linear` (uniform in
        `+-1/sqrt(fan_in)`). These settings reproduce the published code;
        trained from scratch they collapse (keep near 0), so prefer the
        defaults unless the backbone is frozen and pretrained.

        Args:
            **overrides: any `EnergyMask` argument, e.g. `patch_size=2`.

        Returns:
            A new `EnergyMask`.

        Examples:

        ```python
        import keras_ersm
        layer = keras_ersm.EnergyMask.paper(patch_size=2)
        assert layer.coherence_steps == 0 and not layer.rescale
        ```
        """
        settings = dict(
            temperature=1.0,
            bias="scalar",
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
            ),
            bias_initializer=keras.initializers.Constant(PAPER_BIAS_INIT),
            coherence_steps=0,
            energy_regularizer=EnergyRegularizer(unary=1e-3, pairwise=1e-3),
            rescale=False,
            energy_feature_gradient=1.0,
            energy_kernel_gradient=1.0,
            keep_feature_gradient=1.0,
            energy_score_gradient=1.0,
            norm_score=False,
            norm_init=0.0,
        )
        settings.update(overrides)
        return cls(**settings)

    def _spatial(self, shape):
        if self.data_format == "channels_first":
            return shape[2], shape[3], shape[1]
        return shape[1], shape[2], shape[3]

    def _grid(self, height, width):
        p = self.patch_size
        if self.padding == "same":
            return -(-height // p), -(-width // p)
        return height // p, width // p

    def _check_spatial(self, height, width, input_shape):
        if self.padding != "valid":
            return
        for size in (height, width):
            if size is not None and size % self.patch_size:
                raise ValueError(
                    "Invalid input shape for `EnergyMask` with "
                    f"padding='valid': height and width must be multiples "
                    f"of patch_size={self.patch_size}. Received: "
                    f"input_shape={tuple(input_shape)}. Use padding='same' "
                    "or another patch_size."
                )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "`EnergyMask` expects a 4-D feature map (batch, height, "
                "width, channels) or (batch, channels, height, width). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        height, width, channels = self._spatial(input_shape)
        if channels is None:
            raise ValueError(
                "`EnergyMask` needs a known channel dimension. Received: "
                f"input_shape={tuple(input_shape)} with "
                f"data_format={self.data_format!r}"
            )
        self._check_spatial(height, width, input_shape)
        depth = self.patch_size * self.patch_size * channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(depth, 1),
            initializer=self.kernel_initializer,
            autocast=False,
        )
        if self.bias_kind == "positional":
            if height is None or width is None:
                raise ValueError(
                    "`EnergyMask(bias='positional')` needs a static spatial "
                    f"size. Received: input_shape={tuple(input_shape)}. Use "
                    "bias='scalar' for inputs of any size."
                )
            bias_shape = self._grid(height, width)
        else:
            bias_shape = ()
        self.bias = self.add_weight(
            name="bias",
            shape=bias_shape,
            initializer=self.bias_initializer,
            autocast=False,
        )
        if self.coherence_steps > 0:
            self.coherence = self.add_weight(
                name="coherence",
                shape=(),
                initializer=keras.initializers.Constant(self.coherence_init),
                constraint=keras.constraints.NonNeg(),
                autocast=False,
            )
        else:
            self.coherence = None
        if self.norm_score:
            self.norm_weight = self.add_weight(
                name="norm_weight",
                shape=(),
                initializer=keras.initializers.Constant(self.norm_init),
                autocast=False,
            )
        else:
            self.norm_weight = None

    def _tokens(self, inputs):
        """Float32 channels_last tokens and the original height and width."""
        x = ersm_ops.to_channels_last(ops.cast(inputs, "float32"), self.data_format)
        height, width = x.shape[1], x.shape[2]
        self._check_spatial(height, width, inputs.shape)
        if self.padding == "same" and self.patch_size > 1:
            p = self.patch_size
            dyn_h, dyn_w = ops.shape(x)[1], ops.shape(x)[2]
            x = ops.pad(x, ((0, 0), (0, (-dyn_h) % p), (0, (-dyn_w) % p), (0, 0)))
        return ersm_ops.tokenize(x, self.patch_size)

    def _norm_term(self, tokens):
        """`(relative, a)`: each token's norm over its image's mean token
        norm, minus 1 (read without gradient), and the float32 weight `a`
        of `norm_score=True`. The mean is over the image's finite norms, so
        a NaN or Inf token leaves the other tokens' terms finite; an
        all-zero image gets no term (0 everywhere)."""
        norms = ops.stop_gradient(ersm_ops.token_norms(tokens))
        finite = ops.isfinite(norms)
        total = ops.sum(ops.where(finite, norms, 0.0), axis=(1, 2), keepdims=True)
        count = ops.sum(ops.cast(finite, "float32"), axis=(1, 2), keepdims=True)
        mean = total / ops.maximum(count, 1.0)
        safe = ops.where(mean > 0, mean, ops.ones_like(mean))
        relative = ops.where(mean > 0, norms / safe - 1.0, ops.zeros_like(norms))
        return relative, ops.cast(self.norm_weight, "float32")

    def _keep(self, scores):
        logits = -scores / self.temperature
        if self.coherence_steps > 0:
            coherence = ops.cast(self.coherence, "float32")
            return ersm_ops.mean_field(logits, coherence, self.coherence_steps)
        return ops.sigmoid(logits)

    def _compute_terms(self, inputs, for_energy=True):
        """Scores and keep; with `for_energy=True` also the redundancy and
        the scores and keep the energy loss uses, whose gradient reaches the
        features scaled by `energy_feature_gradient` (docs/concepts.md,
        "Trainability")."""
        tokens = self._tokens(inputs)
        # Weights are float16 under a plain "float16" dtype policy.
        kernel = ops.cast(self.kernel, "float32")
        plain_bias = bias = ops.cast(self.bias, "float32")
        if self.norm_score:
            relative, norm_weight = self._norm_term(tokens)
            bias = plain_bias + norm_weight * relative
        if not for_energy:
            unit, inv = ersm_ops.unit_tokens(tokens)
            scores = ersm_ops.projections(unit, inv, kernel) + bias
            return {"scores": scores, "keep": self._keep(scores)}
        # The norms and the neighbour dot products together (on torch from
        # two batched matmuls over strided windows of the tokens); `p_hat`
        # is never materialised.
        unit, inv, pairs = ersm_ops.unit_tokens_and_pairs(tokens)
        dots = ops.matmul(unit, kernel)[..., 0]
        scores = dots * inv + bias
        terms = {"scores": scores, "keep": self._keep(scores)}
        scale = self.energy_feature_gradient
        kernel_scale = self.energy_kernel_gradient
        if scale == 1.0 and kernel_scale == 1.0:
            energy_scores, energy_keep = scores, terms["keep"]
        else:
            # Same values; the energy's gradient to the features is scaled
            # by `scale` and to the kernel by `kernel_scale` (the keep that
            # multiplies the features keeps the full task gradient). The
            # scaling acts on `(B, gh, gw)` maps, never on the tokens:
            # `kernel_dots` (a second matvec on the frozen tokens, same
            # values as `dots`) carries the kernel's gradient alone, and
            # `dots - kernel_dots` the features' alone.
            kernel_dots = ops.matmul(ops.stop_gradient(unit), kernel)[..., 0]
            if scale == 0.0 and kernel_scale == 1.0:
                energy_dots = kernel_dots
            else:
                energy_dots = ops.stop_gradient(dots)
                if scale != 0.0:
                    energy_dots = energy_dots + scale * (dots - kernel_dots)
                if kernel_scale != 0.0:
                    energy_dots = energy_dots + kernel_scale * (
                        kernel_dots - ops.stop_gradient(kernel_dots)
                    )
            inv = _scale_gradient(inv, scale)
            pairs = [_scale_gradient(p, scale) for p in pairs]
            energy_bias = bias
            if self.norm_score and kernel_scale != 1.0:
                # The norm weight is scored like the kernel: the energy's
                # gradient to it is scaled by `kernel_scale`.
                energy_bias = plain_bias + (
                    _scale_gradient(norm_weight, kernel_scale) * relative
                )
            energy_scores = energy_dots * inv + energy_bias
            energy_keep = self._keep(energy_scores)
        terms["redundancy"] = ersm_ops.redundancy_from_pairs(pairs, inv)
        terms["energy_scores"] = energy_scores
        terms["energy_keep"] = energy_keep
        return terms

    def energy_terms(self, inputs):
        """Computes the layer's per-token terms for a batch.

        Args:
            inputs: 4-D feature map, as passed to `call`.

        Returns:
            Dict of float32 tensors of shape `(B, gh, gw)`: `"scores"` (z),
            `"keep"`, `"redundancy"` (S) and, when the layer has an
            `energy_regularizer`, `"energy"` (E).
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        terms = self._compute_terms(inputs)
        del terms["energy_scores"], terms["energy_keep"]  # the loss's copies
        if self.energy_regularizer is not None:
            terms["energy"] = self.energy_regularizer.energy(
                terms["scores"], terms["redundancy"]
            )
        return terms

    def _as_float(self, inputs):
        """Integer and bool inputs cast to the compute dtype, as Keras layers
        do; float inputs unchanged."""
        inputs = ops.convert_to_tensor(inputs)
        if "float" not in keras.backend.standardize_dtype(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        return inputs

    def apply_keep(self, inputs, keep):
        """Multiplies a feature map by a `(B, gh, gw)` keep map.

        The keep map is upsampled to the feature map (and cropped back when
        `padding="same"`), rescaled by its per-image mean when `rescale=True`,
        and cast to the inputs' dtype. Integer and bool inputs are first
        cast to the layer's compute dtype.

        Args:
            inputs: 4-D feature map.
            keep: keep map `(B, gh, gw)`.

        Returns:
            The masked feature map, same shape as `inputs`, in the inputs'
            float dtype (the compute dtype for integer or bool inputs).
        """
        inputs = self._as_float(inputs)
        keep = ops.cast(keep, "float32")
        if self.rescale:
            mean_keep = ops.mean(keep, axis=(1, 2), keepdims=True)
            keep = keep / (mean_keep + ersm_ops.EPSILON)
        keep = ersm_ops.upsample_tokens(keep, self.patch_size)
        if self.padding == "same" and self.patch_size > 1:
            height, width, _ = self._spatial(ops.shape(inputs))
            keep = keep[:, :height, :width]
        axis = 1 if self.data_format == "channels_first" else -1
        keep = ops.expand_dims(ops.cast(keep, inputs.dtype), axis)
        return inputs * keep

    def _energy_loss(self, terms):
        # The scores the energy `E(z, S)` sees: with `energy_score_gradient=0`
        # the energy is a fixed price per token and its gradient reaches the
        # scores only through the keep, so it always lowers the keep
        # (docs/concepts.md, "The energy as a price per token").
        scores = _scale_gradient(terms["energy_scores"], self.energy_score_gradient)
        loss = self.energy_regularizer(
            terms["energy_keep"], scores, terms["redundancy"]
        )
        if len(ops.shape(loss)) != 0:
            raise ValueError(
                "Invalid value for argument `energy_regularizer`. Expected a "
                "callable that returns a scalar loss. Received: "
                f"energy_regularizer={self.energy_regularizer!r} returning a "
                f"tensor of shape {tuple(ops.shape(loss))}"
            )
        return loss

    def call(self, inputs, training=None):
        with_energy = self.energy_regularizer is not None
        scored = inputs
        if self.keep_feature_gradient != 1.0:
            # The scores read the features; only `x * keep` (below) trains
            # them in full (docs/concepts.md, "Trainability").
            scored = _scale_gradient(self._as_float(inputs), self.keep_feature_gradient)
        terms = self._compute_terms(scored, for_energy=with_energy)
        if with_energy:
            self.add_loss(self._energy_loss(terms))
        return self.apply_keep(inputs, terms["keep"])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        regularizer = self.energy_regularizer
        config.update(
            {
                "patch_size": self.patch_size,
                "temperature": self.temperature,
                "bias": self.bias_kind,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "coherence_steps": self.coherence_steps,
                "coherence_init": self.coherence_init,
                "energy_regularizer": (
                    None
                    if regularizer is None
                    else keras.saving.serialize_keras_object(regularizer)
                ),
                "rescale": self.rescale,
                "padding": self.padding,
                "data_format": self.data_format,
                "energy_feature_gradient": self.energy_feature_gradient,
                "energy_kernel_gradient": self.energy_kernel_gradient,
                "keep_feature_gradient": self.keep_feature_gradient,
                "energy_score_gradient": self.energy_score_gradient,
                "norm_score": self.norm_score,
                "norm_init": self.norm_init,
            }
        )
        return config
