"""Recipe: patch EnergyMask layers into a KerasCV backbone with one call.

Builds a small KerasCV ResNetV2 backbone from an explicit config (offline,
no pretrained weights), inserts a mask after its pyramid level P2 (inside
the backbone) and trains a classifier on the bundled cluttered benchmark for
one short epoch. Runs in under a minute on a laptop CPU:

    KERAS_BACKEND=jax python examples/patch_kerascv_backbone.py

The training here is far too short to learn the task (accuracy stays near
chance): the recipe shows the API; `examples/train_cifar.py` trains for real.

With a pretrained backbone, the paper's recipe is the same call on e.g.
`keras_cv.models.ResNetV2Backbone.from_preset(...)` with
`build_classifier(..., freeze_backbone=True)`.
"""

import keras
import keras_cv

import keras_ersm

x, y, _ = keras_ersm.datasets.make_cluttered(1024, seed=0)
x_test, y_test, _ = keras_ersm.datasets.make_cluttered(256, split="test", seed=0)

backbone = keras_cv.models.ResNetV2Backbone(
    stackwise_filters=[16, 32],
    stackwise_blocks=[2, 2],
    stackwise_strides=[1, 2],
    include_rescaling=False,
    input_shape=(32, 32, 3),
)
print("insertion points:", keras_ersm.models.insertion_points(backbone)[:4], "...")

# A mask inside the backbone (after P2) and one on its output.
patched = keras_ersm.models.insert_energy_masks(backbone, at=["P2", "output"])
for layer in keras_ersm.models.energy_mask_layers(patched):
    print("inserted:", layer.name)

# The classifier recipe: backbone -> (masks) -> pooling -> Dense.
model = keras_ersm.models.build_classifier(
    backbone, num_classes=10, mask_at=["P2", "output"], freeze_backbone=False
)
model.compile(
    keras.optimizers.Adam(2e-3),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(x, y, epochs=1, batch_size=64, validation_data=(x_test, y_test), verbose=2)

keeps = keras_ersm.models.keep_maps(model, x_test[:4])
for name, keep in keeps.items():
    print(f"{name}: keep map {keep.shape}, mean keep {keep.mean():.3f}")
