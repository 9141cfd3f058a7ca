"""The whole evaluation of a classifier in one call: `evaluate`.

`evaluate` runs clean accuracy, occlusion, deletion curves, keep-map
statistics and localization against object masks, and returns one
`EvaluationResult` that composes the other results and writes them as
JSON (`to_dict`), Markdown (`to_markdown`) and PNG figures (`save_plots`).
"""

import os
import time

import keras
import numpy as np

from keras_ersm import _validation
from keras_ersm.evaluation import _data, _graph, _progress
from keras_ersm.evaluation import localization as _localization
from keras_ersm.evaluation.deletion import ORDERS, check_orders, deletion_curve
from keras_ersm.evaluation.gradients import grad_cam
from keras_ersm.evaluation.localization import LocalizationResult, mask_localization
from keras_ersm.evaluation.occlusion import occlusion_robustness
from keras_ersm.evaluation.statistics import mask_statistics
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models.utils import energy_mask_layers

# Arguments of `occlusion_robustness` that `evaluate(occlusion=...)` passes on.
OCCLUSION_ARGUMENTS = (
    "patch_sizes",
    "fractions",
    "hide_sizes",
    "hide_probability",
    "fill",
    "data_format",
)
# What each file of `EvaluationResult.save_plots` shows, for `to_markdown`.
FIGURES = {
    "deletion_curves.png": "accuracy as tokens are deleted at the cut layer, "
    "per deletion order, one panel per model",
    "occlusion.png": "the occlusion table as bars",
    "keep_overlay.png": "the mask's keep maps over test images",
    "mask_histogram.png": "how much of each test image the mask keeps",
    "localization.png": "the localization table as bars",
    "keep_vs_grad_cam.png": "test images, their object masks, the keep map, "
    "the kept map and Grad-CAM side by side, with each map's share of mass "
    "inside the object",
}
OCCLUSION_LEGEND = (
    "Settings: *Cutout* hides square patches of the given side at random "
    "places until about the given share of the image is covered; "
    "*Hide-and-Seek* splits the image into cells of the given side and hides "
    "each with the given probability; *object hidden* hides the pixels of "
    "the object mask, *background hidden* everything but the object (only "
    "with object masks). Hidden pixels take each image's mean colour."
)


def _fmt(value, digits=1):
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def _row(label, *values, digits=1):
    return "| " + " | ".join([label, *(_fmt(v, digits) for v in values)]) + " |"


def _header(*labels):
    cells = " | ".join(labels)
    aligns = " | ".join(["---", *["---:"] * (len(labels) - 1)])
    return [f"| {cells} |", f"| {aligns} |"]


def _stage(text, verbose):
    """Names an evaluation stage before its progress bar (verbose only)."""
    if verbose == 1:
        print(f"  {text}", flush=True)
    elif verbose == 2:
        # Its progress line ends this one.
        print(f"  {text}:", end=" ", flush=True)


def _mass_inside(maps, objects):
    """Per-image share of a `(B, h, w)` map's mass inside `(B, H, W)` masks."""
    up = _localization.upsample_nearest(maps, *objects.shape[1:])
    return (up * objects).sum(axis=(1, 2)) / np.maximum(up.sum(axis=(1, 2)), 1e-12)


class EvaluationResult:
    """Everything `evaluate` measured on one classifier.

    Composes the results of the single evaluation functions; `to_dict()`,
    `to_markdown()` and `save_plots()` write them all, and with
    `baseline=` another `EvaluationResult` side by side with this one.

    Attributes:
        name: the model's label in tables and figures.
        occlusion: an `OcclusionResult` (its `clean_accuracy` is the
            accuracy on the unchanged images).
        deletion: a `DeletionCurveResult`, or `None` when not measured.
        mask_statistics: a `MaskStatisticsResult`, or `None` without an
            `EnergyMask`.
        localization: a `LocalizationResult` (keep map, kept map and
            Grad-CAM, or Grad-CAM alone without an `EnergyMask`), or `None`
            without object masks.
        examples: dict of numpy arrays for the figures: `"images"`, and
            where measured `"object_masks"`, `"keep"` (keep maps in
            [0, 1]), `"kept"` (keep times token norm, divided by its
            per-image maximum) and `"grad_cam"` (Grad-CAM divided by its
            per-image maximum). Not part of `to_dict()`.
        layer: name of the layer the deletion curves cut at.
        params: the model's parameter count.
        seconds: wall-clock time of the evaluation.
        data_format: layout of the images in `examples`.

    Examples:

    ```python
    from keras_ersm.evaluation import EvaluationResult, OcclusionResult
    occlusion = OcclusionResult(
        clean_accuracy=90.0, accuracy={"object": 40.0},
        covered={"object": 0.2}, fill="mean", num_images=10)
    result = EvaluationResult("model", occlusion)
    assert result.clean_accuracy == 90.0
    print(result.to_markdown())
    ```
    """

    def __init__(
        self,
        name,
        occlusion,
        deletion=None,
        mask_statistics=None,
        localization=None,
        examples=None,
        layer=None,
        params=None,
        seconds=None,
        data_format="channels_last",
    ):
        self.name = name
        self.occlusion = occlusion
        self.deletion = deletion
        self.mask_statistics = mask_statistics
        self.localization = localization
        self.examples = dict(examples or {})
        self.layer = layer
        self.params = None if params is None else int(params)
        self.seconds = None if seconds is None else float(seconds)
        self.data_format = data_format

    @property
    def clean_accuracy(self):
        """Accuracy (%) on the unchanged images."""
        return self.occlusion.clean_accuracy

    @property
    def occlusion_mean(self):
        """Mean accuracy (%) over the occlusion settings."""
        values = list(self.occlusion.accuracy.values())
        return float(np.mean(values)) if values else None

    def to_dict(self):
        """Returns the result as a JSON-serializable dict.

        Keys: `"name"`, `"clean_accuracy"`, `"occlusion"`,
        `"occlusion_mean"`, `"num_images"`, and where measured
        `"deletion"`, `"mask_statistics"`, `"localization"` (each the
        `to_dict()` of its result), `"layer"`, `"params"`,
        `"evaluation_seconds"`.
        """
        out = {
            "name": self.name,
            "clean_accuracy": self.clean_accuracy,
            "occlusion": self.occlusion.to_dict(),
            "occlusion_mean": self.occlusion_mean,
            "num_images": self.occlusion.num_images,
        }
        for key, value in (
            ("deletion", self.deletion),
            ("mask_statistics", self.mask_statistics),
            ("localization", self.localization),
        ):
            if value is not None:
                out[key] = value.to_dict()
        for key, value in (
            ("layer", self.layer),
            ("params", self.params),
            ("evaluation_seconds", self.seconds),
        ):
            if value is not None:
                out[key] = value
        return out

    def _results(self, baseline):
        if baseline is None:
            return [self]
        if not isinstance(baseline, EvaluationResult):
            raise _validation.invalid_type(
                "baseline", "an EvaluationResult or None", baseline
            )
        return [self, baseline]

    def to_markdown(self, baseline=None, figures=None):
        """Returns the result as Markdown tables.

        A summary table (clean and occlusion accuracy, deletion AUC per
        order, keep-map statistics, parameters); with object masks, the
        keep map against Grad-CAM (mass inside the object, pointing game,
        IoU, deletion AUC of each map's order); the accuracy per occlusion
        setting; and optionally the list of figures.

        Args:
            baseline: another `EvaluationResult` to show in a second column
                (e.g. the same model without its mask), or `None`.
                Defaults to `None`.
            figures: file names written by `save_plots`, listed with what
                they show, or `None` for no list. Defaults to `None`.

        Returns:
            A Markdown string.
        """
        results = self._results(baseline)
        names = [r.name for r in results]
        lines = [
            *_header("metric", *names),
            _row("clean accuracy (%)", *(r.clean_accuracy for r in results)),
            _row(
                "occlusion accuracy, mean over settings (%)",
                *(r.occlusion_mean for r in results),
            ),
        ]
        aucs = [r.deletion.auc if r.deletion else {} for r in results]
        direction = next((r.deletion.direction for r in results if r.deletion), "lerf")
        direction = {"lerf": "LeRF", "morf": "MoRF"}[direction]
        for order in ORDERS:
            if any(order in auc for auc in aucs):
                lines.append(
                    _row(
                        f"deletion AUC, {order} order ({direction}, %)",
                        *(auc.get(order) for auc in aucs),
                    )
                )
        if any(r.mask_statistics for r in results):
            for label, key in (
                ("mean keep (no mask: 1)", "mean_keep"),
                ("active fraction (keep > 0.5)", "active_fraction"),
                ("normalised keep entropy", "entropy"),
            ):
                values = [
                    r.mask_statistics[key] if r.mask_statistics else 1.0
                    for r in results
                ]
                lines.append(_row(label, *values, digits=3))
        if all(r.params is not None for r in results):
            lines.append(_row("parameters", *(r.params for r in results), digits=0))
        if any(r.deletion for r in results):
            first = "least" if direction == "LeRF" else "most"
            lines += [
                "",
                "Deletion AUC: accuracy (%) integrated over the deleted "
                f"fraction of the tokens at the cut layer, {first} relevant "
                "first (higher is better for LeRF). A model with an "
                "`EnergyMask` is cut at the mask; a model without one at a "
                "layer with a 4-D output (by default its last one), so it "
                "has no energy or kept order.",
            ]
        lines.append("")
        lines += self._localization_markdown(results)
        lines += self._occlusion_markdown(results)
        if figures:
            lines += ["## Figures", ""]
            lines += [
                f"- `{f}`: {FIGURES.get(f, '')}"
                + (";" if i < len(figures) - 1 else ".")
                for i, f in enumerate(figures)
            ]
            lines.append("")
        return "\n".join(lines)

    @staticmethod
    def _localization_markdown(results):
        columns = []  # (label, scores, deletion AUC of the map's order)
        single = len(results) == 1
        local = None
        for r in results:
            if r.localization is None:
                continue
            local = local or r.localization
            auc = r.deletion.auc if r.deletion else {}
            scores = r.localization.scores
            if "keep" in scores:
                label = "keep map" if single else f"{r.name} keep map"
                columns.append((label, scores["keep"], auc.get("energy")))
            if "kept" in scores:
                label = "kept map" if single else f"{r.name} kept map"
                columns.append((label, scores["kept"], auc.get("kept")))
            if "grad_cam" in scores:
                label = "Grad-CAM" if single else f"Grad-CAM ({r.name} model)"
                columns.append((label, scores["grad_cam"], auc.get("grad_cam")))
        if not columns:
            return []
        uniform = local.object_fraction
        metrics = (
            ("share of the map's mass inside the object", "mass_inside", uniform),
            ("pointing game (the map's peak is on the object)", "pointing_game", None),
            ("IoU of map > 0.5 with the object", "iou", None),
        )
        lines = [
            "## Keep map vs Grad-CAM: which lands on the object?",
            "",
            *_header("metric", *(c[0] for c in columns), "uniform map"),
        ]
        for label, key, uniform_value in metrics:
            values = [c[1].get(key) for c in columns]
            lines.append(_row(label, *values, uniform_value, digits=3))
        lines += [
            _row(
                "deletion AUC of the map's order (LeRF, %)",
                *(c[2] for c in columns),
                None,
            ),
            "",
            "Each map is stretched to the image and compared with the object "
            "masks of the test images. Grad-CAM is computed at the cut layer "
            "for the predicted class and divided by its maximum; the keep "
            "map's deletion order is the energy order. A uniform map puts "
            f"{uniform:.3f} of its mass inside the object: the share of the "
            "image the object covers.",
            "",
        ]
        if any("kept map" in c[0] for c in columns):
            lines += [
                "The kept map is keep times the norm of each token of the "
                "mask's input, `keep_i * ||x_i||`: what the mask lets through, "
                "class-agnostic like the keep map (divided by its maximum; its "
                "deletion order is the kept order).",
                "",
            ]
        lines += [
            "A map that puts more of its mass on the object, points at it "
            "more often and keeps the accuracy longer when its least relevant "
            "tokens go explains the model better.",
            "",
            "At an EnergyMask followed by global average pooling and a Dense "
            "layer, Grad-CAM is the keep map times the class activation map "
            "of the mask's input, so it contains the keep map; a model "
            "without the mask (the baseline's column, where there is one) "
            "gives the class map alone.",
            "",
        ]
        return lines

    @staticmethod
    def _occlusion_markdown(results):
        from keras_ersm.visualization import occlusion_label

        lines = [
            "## Occlusion (accuracy %)",
            "",
            *_header("setting", *(r.name for r in results)),
            _row(occlusion_label("clean"), *(r.clean_accuracy for r in results)),
        ]
        settings = []
        for r in results:
            settings += [s for s in r.occlusion.accuracy if s not in settings]
        for setting in settings:
            lines.append(
                _row(
                    occlusion_label(setting),
                    *(r.occlusion.accuracy.get(setting) for r in results),
                )
            )
        return lines + ["", OCCLUSION_LEGEND, ""]

    def figures(self, baseline=None):
        """Builds the figures of the result.

        Args:
            baseline: another `EvaluationResult` drawn next to this one in
                the deletion and occlusion figures and as one more Grad-CAM
                row in `keep_vs_grad_cam.png`, or `None`. Defaults to
                `None`.

        Returns:
            Dict file name -> matplotlib `Figure`; the names and what they
            show are in `keras_ersm.evaluation.report.FIGURES`. Only the
            figures this result has data for are built.
        """
        from keras_ersm import visualization

        results = self._results(baseline)
        out = {}
        with_deletion = [r for r in results if r.deletion is not None]
        if with_deletion:
            figure = _new_figure((5.5 * len(with_deletion), 4.4))
            axes = figure.subplots(1, len(with_deletion), sharey=True, squeeze=False)
            for ax, r in zip(axes[0], with_deletion, strict=True):
                visualization.plot_deletion_curves(
                    r.deletion,
                    ax=ax,
                    title=f"{r.name}: deletion curves "
                    f"({'LeRF' if r.deletion.direction == 'lerf' else 'MoRF'})",
                )
            for ax in axes[0][1:]:
                ax.set_ylabel("")
            out["deletion_curves.png"] = figure
        out["occlusion.png"] = visualization.plot_occlusion(
            {r.name: r.occlusion for r in results}
        )
        examples = self.examples
        if "keep" in examples:
            out["keep_overlay.png"] = visualization.overlay_keep(
                examples["images"],
                examples["keep"],
                data_format=self.data_format,
                max_images=8,
                title=f"{self.name}: keep maps on test images",
            )
        if self.mask_statistics is not None:
            out["mask_histogram.png"] = visualization.plot_mask_histogram(
                self.mask_statistics, title=f"{self.name}: mean keep per test image"
            )
        if self.localization is not None:
            out["localization.png"] = visualization.plot_localization(
                self.localization,
                title=f"Does the {self.name} model's map land on the object?",
            )
        if "object_masks" in examples and (
            "keep" in examples or "grad_cam" in examples
        ):
            out["keep_vs_grad_cam.png"] = self._maps_figure(
                [r for r in results if "grad_cam" in r.examples]
            )
        return out

    def _maps_figure(self, with_cam, max_images=6):
        from keras_ersm import visualization

        examples = self.examples
        images = examples["images"][:max_images]
        objects = np.asarray(examples["object_masks"][: len(images)]) > 0
        rows = [("image", None), ("object mask", None)]
        for key in ("keep", "kept"):
            if key in examples:
                rows.append(
                    (
                        f"{key} map" if len(with_cam) < 2 else f"{self.name} {key} map",
                        examples[key][: len(images)],
                    )
                )
        for r in with_cam:
            label = "Grad-CAM" if len(with_cam) < 2 else f"Grad-CAM ({r.name})"
            rows.append((label, r.examples["grad_cam"][: len(images)]))
        count = max(len(images), 1)
        figure = _new_figure((1.55 * count + 1.8, 1.6 * len(rows) + 0.6))
        axes = figure.subplots(len(rows), count, squeeze=False)
        mappable = None
        for i, image in enumerate(images):
            shown = visualization._display_image(image, self.data_format)
            height, width = shown.shape[:2]
            cmap = "gray" if shown.ndim == 2 else None
            # Maps go over the image in gray, so its colours do not mix in.
            gray = shown if shown.ndim == 2 else shown.mean(axis=-1)
            for j, (_label, maps) in enumerate(rows):
                ax = axes[j, i]
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 1:
                    ax.imshow(objects[i], cmap="gray", vmin=0, vmax=1)
                    continue
                if maps is None:
                    ax.imshow(shown, cmap=cmap)
                    continue
                ax.imshow(gray, cmap="gray")
                mappable = ax.imshow(
                    maps[i],
                    cmap="jet",
                    vmin=0.0,
                    vmax=1.0,
                    alpha=0.6,
                    interpolation="nearest",
                    extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                )
                inside = _mass_inside(maps[i : i + 1], objects[i : i + 1])[0]
                ax.set_xlabel(f"inside {inside:.2f}", fontsize="small")
        for j, (label, _) in enumerate(rows):
            axes[j, 0].set_ylabel(label, fontsize="small")
        if mappable is not None:
            colorbar = figure.colorbar(
                mappable, ax=axes[2:, -1].tolist(), shrink=0.9, aspect=25
            )
            colorbar.solids.set_alpha(1.0)
            colorbar.set_label(
                "keep, or kept map or Grad-CAM / its maximum", fontsize="small"
            )
        figure.suptitle(
            f"{self.name}: which map lands on the object? "
            "(inside: share of the map's mass on the object)"
        )
        return figure

    def save_plots(self, directory, baseline=None, dpi=110):
        """Writes the figures of `figures(baseline)` as PNG files.

        Args:
            directory: folder to write to (created if needed).
            baseline: see `figures`. Defaults to `None`.
            dpi: resolution of the PNG files. Defaults to `110`.

        Returns:
            The list of file names written, in the order of `FIGURES`.
        """
        directory = _validation.check_str(
            "directory",
            os.fspath(directory) if isinstance(directory, os.PathLike) else directory,
            "a folder path",
        )
        _validation.check_int("dpi", dpi, 1)
        os.makedirs(directory, exist_ok=True)
        written = []
        for filename, figure in self.figures(baseline).items():
            figure.savefig(os.path.join(directory, filename), dpi=dpi)
            written.append(filename)
        return written

    def __repr__(self):
        parts = [f"clean_accuracy={self.clean_accuracy:.2f}"]
        if self.deletion is not None:
            parts.append(
                "auc: "
                + ", ".join(f"{k}={v:.2f}" for k, v in self.deletion.auc.items())
            )
        return f"EvaluationResult(name={self.name!r}, {', '.join(parts)})"


def _new_figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _has_4d_output(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return False
    return not isinstance(output, (list, tuple, dict)) and len(output.shape) == 4


def _cut_layer(model, layer):
    """The layer deletion cuts at: the given one, the last EnergyMask, or the
    last layer with a 4-D output."""
    if layer is not None:
        found = _graph.find_layer(model, layer)
        if not isinstance(found, EnergyMask) and not _has_4d_output(found):
            raise _validation.invalid(
                "layer",
                "an EnergyMask or a layer with one 4-D output",
                found.name,
            )
        return found
    masks = energy_mask_layers(model)
    if masks:
        return masks[-1]
    for candidate in reversed(model.layers):
        if _has_4d_output(candidate):
            return candidate
    raise _validation.invalid(
        "layer",
        f"the name of a layer with a 4-D output: model {model.name!r} has no "
        "EnergyMask and no such layer to default to",
        layer,
    )


def _check_orders(orders, cut):
    """`deletion.check_orders`, where an empty tuple skips the curves."""
    if isinstance(orders, (list, tuple)) and not orders:
        return ()
    return check_orders(orders, _graph.Cut(cut))


def _check_occlusion(occlusion):
    if occlusion is None:
        return {}
    if not isinstance(occlusion, dict):
        raise _validation.invalid_type(
            "occlusion", "a dict of occlusion_robustness arguments or None", occlusion
        )
    unknown = [k for k in occlusion if k not in OCCLUSION_ARGUMENTS]
    if unknown:
        raise _validation.invalid(
            "occlusion", f"a dict with keys among {OCCLUSION_ARGUMENTS}", occlusion
        )
    return dict(occlusion)


def _collect_images(data, count, batch_size):
    """The first `count` images of `data` (all of them for `count=None`)."""
    parts, total = [], 0
    for x, _ in _data.iter_batches(data, batch_size, labels=False):
        x = keras.tree.flatten(x)[0]
        parts.append(np.asarray(x))
        total += len(x)
        if count is not None and total >= count:
            break
    if not parts:
        raise _validation.invalid("data", "at least one image", "empty data")
    images = np.concatenate(parts, axis=0)
    return images if count is None else images[:count]


def evaluate(
    model,
    data,
    object_masks=None,
    layer=None,
    orders=None,
    occlusion=None,
    steps=None,
    name=None,
    num_examples=8,
    batch_size=32,
    seed=0,
    verbose=0,
):
    """Evaluates a classifier: accuracy, occlusion, deletion, mask, localization.

    Runs, on labelled test data:

    - clean accuracy and accuracy under occlusion (`occlusion_robustness`);
    - deletion curves (`deletion_curve`) at a cut layer: the model's last
      `EnergyMask` (orders energy, kept, magnitude, random, Grad-CAM), or for a
      model without one any layer with a 4-D output, by default the last
      one (magnitude, random and Grad-CAM orders), so a baseline needs no
      mask;
    - keep-map statistics (`mask_statistics`) when the cut is an
      `EnergyMask`;
    - with `object_masks`: localization of the keep map, the kept map and
      Grad-CAM at the cut layer (`mask_localization`; Grad-CAM alone
      without a mask), and the example maps for a figure that puts images,
      object masks, keep map, kept map and Grad-CAM side by side.

    The protocols are described in the guide "Evaluating occlusion,
    deletion and localization" (`docs/guides/evaluation.md`).

    Args:
        model: a Functional or Sequential Keras image classifier.
        data: labelled data as `model.evaluate` takes it: a tuple `(x, y)`
            of arrays, a `tf.data.Dataset` or any iterable of `(x, y)`
            batches, or a `keras.utils.PyDataset`.
        object_masks: optional array `(N, H, W)` (or `(N, H, W, 1)`),
            non-zero on the object, in the order of the images in `data`.
            Defaults to `None`.
        layer: name or instance of the layer to cut at for deletion (an
            `EnergyMask` or a layer with a 4-D output), or `None` for the
            last `EnergyMask`, else the last top-level layer with a 4-D
            output. Defaults to `None`.
        orders: deletion orders, `None` for all that apply (no `"energy"`
            or `"kept"` without an `EnergyMask`), or `()` to skip the
            deletion curves.
            Defaults to `None`.
        occlusion: dict of arguments of `occlusion_robustness`
            (`patch_sizes`, `fractions`, `hide_sizes`, `hide_probability`,
            `fill`, `data_format`), or `None` for its defaults. Defaults to
            `None`.
        steps: deletion steps, as in `deletion_curve`. Defaults to `None`
            (every number of deleted tokens).
        name: the model's label in tables and figures, or `None` for
            `model.name`. Defaults to `None`.
        num_examples: images kept (with their maps) for the figures.
            Defaults to `8`.
        batch_size: images per forward pass (arrays only). Defaults to `32`.
        seed: int seed of the occlusion and the random deletion order.
            Defaults to `0`.
        verbose: `0` (silent), `1` or `"auto"` (a line per stage and a
            `keras.utils.Progbar`) or `2` (a line per stage). Defaults to
            `0`.

    Returns:
        An `EvaluationResult` with `.clean_accuracy`, `.occlusion`,
        `.deletion`, `.mask_statistics`, `.localization`, `.to_dict()`,
        `.to_markdown()` and `.save_plots(directory)`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras_ersm.EnergyMask(patch_size=4),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    x = np.random.rand(8, 16, 16, 3).astype("float32")
    y = np.random.randint(0, 2, 8)
    objects = np.zeros((8, 16, 16), bool)
    objects[:, 4:12, 4:12] = True
    result = keras_ersm.evaluation.evaluate(
        model, (x, y), object_masks=objects, steps=5)
    print(result.clean_accuracy, result.deletion.auc)
    print(result.to_markdown())
    files = result.save_plots("evaluation")  # PNG files
    ```
    """
    if not isinstance(model, keras.Model):
        raise _validation.invalid_type("model", "a Keras model", model)
    if name is None:
        name = model.name
    name = _validation.check_str("name", name)
    num_examples = _validation.check_int("num_examples", num_examples, 0)
    _data.check_batch_size(batch_size)
    seed = _validation.check_int("seed", seed, 0)
    verbose = _progress.check_verbose(verbose)
    occlusion_options = _check_occlusion(occlusion)
    cut = _cut_layer(model, layer)
    orders = _check_orders(orders, cut)
    is_mask = isinstance(cut, EnergyMask)
    data_format = occlusion_options.get("data_format") or (
        keras.config.image_data_format()
    )
    start = time.perf_counter()

    _stage("accuracy under occlusion", verbose)
    occlusion_result = occlusion_robustness(
        model,
        data,
        object_masks=object_masks,
        seed=seed,
        batch_size=batch_size,
        verbose=verbose,
        **occlusion_options,
    )
    deletion = None
    if orders:
        _stage(f"deletion curves ({', '.join(orders)})", verbose)
        options = dict(steps=steps, batch_size=batch_size, seed=seed, verbose=verbose)
        deletion = deletion_curve(model, data, layer=cut, orders=orders, **options)
    stats = None
    if is_mask:
        _stage("keep-map statistics", verbose)
        stats = mask_statistics(
            model, data, layer=cut, batch_size=batch_size, verbose=verbose
        )

    local = None
    images = None
    if object_masks is not None:
        images = _collect_images(data, None, batch_size)
        objects = np.asarray(object_masks)
        if objects.ndim == 4 and objects.shape[-1] == 1:
            objects = objects[..., 0]
        if is_mask:
            _stage("localization of the keep map, kept map and Grad-CAM", verbose)
            local = mask_localization(
                model, images, objects, layer=cut, batch_size=batch_size,
                verbose=verbose,
            )  # fmt: skip
        else:
            _stage("localization of Grad-CAM", verbose)
            cam = grad_cam(model, images, layer=cut, batch_size=batch_size,
                           verbose=verbose)  # fmt: skip
            if cam.shape[0] != objects.shape[0] or objects.ndim != 3:
                raise _validation.invalid(
                    "object_masks",
                    f"an array of shape ({len(images)}, H, W), one mask per image",
                    f"array of shape {objects.shape}",
                )
            scores = {
                "grad_cam": _localization.localization_scores(
                    _localization.normalise_peak(cam), objects > 0
                )
            }
            local = LocalizationResult(
                scores, (objects > 0).mean(), len(images), cut.name
            )

    examples = {}
    if num_examples:
        if images is None:
            images = _collect_images(data, num_examples, batch_size)
        x = images[:num_examples]
        examples["images"] = x
        if object_masks is not None:
            examples["object_masks"] = objects[:num_examples] > 0
            examples["grad_cam"] = _localization.normalise_peak(
                grad_cam(model, x, layer=cut, batch_size=batch_size)
            )
        if is_mask:
            from keras_ersm.models import energy_terms

            terms = energy_terms(model, x, layer=cut, batch_size=batch_size)
            examples["keep"] = terms["keep"]
            examples["kept"] = _localization.kept_map(terms["keep"], terms["norms"])
    return EvaluationResult(
        name,
        occlusion_result,
        deletion=deletion,
        mask_statistics=stats,
        localization=local,
        examples=examples,
        layer=cut.name,
        params=model.count_params(),
        seconds=time.perf_counter() - start,
        data_format=data_format,
    )
