"""Recipe: evaluate an existing Keras classifier with keras_ersm.evaluation.

Give it a `.keras` model (e.g. `runs/cifar/ersm.keras` written by
`train_cifar.py`, which was trained on the bundled benchmark) or nothing, in
which case a small ERSM model is trained for a few seconds first (too
short to learn the task: its numbers then sit near chance). It prints
accuracy under occlusion and, for models with an EnergyMask, deletion-curve
AUCs, keep-map statistics and localization against the object masks, and
saves the deletion-curve plot to `runs/evaluate_model/`. Runs in under a
minute on a laptop CPU:

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

# Works on any classifier, masked or not.
occlusion = evaluation.occlusion_robustness(model, (x, y), object_masks=masks)
print(f"clean accuracy: {occlusion.clean_accuracy:.1f}%")
for setting, accuracy in occlusion.accuracy.items():
    print(f"  {setting:>22}: {accuracy:5.1f}%")

if keras_ersm.models.energy_mask_layers(model):
    deletion = evaluation.deletion_curve(
        model, (x, y), orders=("energy", "magnitude", "random")
    )
    print("deletion AUC (LeRF):", {k: round(v, 1) for k, v in deletion.auc.items()})
    print(evaluation.mask_statistics(model, x))
    local = evaluation.mask_localization(model, x, masks, grad_cam=False)
    print(
        "keep mass inside the object:",
        round(local.scores["keep"]["mass_inside"], 3),
        f"(uniform map: {local.object_fraction:.3f})",
    )
    output_dir = os.path.join("runs", "evaluate_model")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "deletion_curves.png")
    deletion.plot().savefig(path)
    print("deletion curves plotted to", path)
else:
    print("No EnergyMask layer: deletion curves and mask statistics need one.")
