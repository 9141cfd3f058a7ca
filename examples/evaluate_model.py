"""Recipe: evaluate an existing Keras classifier with keras_ersm.evaluation.

Give it a `.keras` model (e.g. `runs/cifar/ersm.keras` written by
`train_cifar.py`, which was trained on the bundled benchmark) or nothing, in
which case a small ERSM model is trained for a few seconds first (too
short to learn the task: its numbers then sit near chance). It prints
accuracy, deletion-curve AUCs, keep-map statistics (for models with an
EnergyMask) and the keep map against Grad-CAM on the object masks, all from
one `keras_ersm.evaluation.evaluate` call, and writes its `report.md` and
PNG figures to `runs/evaluate_model/`. Runs in about a minute on a laptop
CPU:

    KERAS_BACKEND=jax python examples/evaluate_model.py [runs/cifar/ersm.keras]
"""

import os
import sys

import keras

import keras_ersm
from keras_ersm import evaluation

x, y, masks = keras_ersm.datasets.make_cluttered(256, split="test", seed=1)

if len(sys.argv) > 1:
    model = keras.saving.load_model(sys.argv[1])
else:
    x_train, y_train, _ = keras_ersm.datasets.make_cluttered(512, seed=0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    backbone = keras.Model(inputs, h)
    model = keras_ersm.models.build_classifier(backbone, 10, freeze_backbone=False)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=2)

# One call on any classifier, masked or not: a model without an EnergyMask
# is cut for deletion at its last layer with a 4-D output.
result = evaluation.evaluate(model, (x, y), object_masks=masks, steps=17)
output_dir = os.path.join("runs", "evaluate_model")
files = result.save_plots(output_dir)
with open(os.path.join(output_dir, "report.md"), "w") as f:
    f.write(result.to_markdown(figures=files))
print(result.to_markdown().split("\n## Occlusion")[0])
print(f"Wrote report.md and {', '.join(files)} to {output_dir}")
