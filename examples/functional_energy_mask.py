"""Recipe: EnergyMask inside a hand-written Functional model.

A small CNN with a coherent EnergyMask (two mean-field steps) on its 8x8
feature map, trained on the bundled cluttered benchmark; then the per-token
energy terms, the keep map, and a `.keras` save/load round trip. Runs in
under a minute on a laptop CPU, on any backend:

    KERAS_BACKEND=torch python examples/functional_energy_mask.py

The training here is far too short to learn the task (accuracy stays near
chance): the recipe shows the API; `examples/train_cifar.py` trains for real.
"""

import os
import tempfile

import keras
import numpy as np

import keras_ersm

x, y, masks = keras_ersm.datasets.make_cluttered(1024, seed=0)
x_test, y_test, _ = keras_ersm.datasets.make_cluttered(256, split="test", seed=0)

inputs = keras.Input((32, 32, 3))
h = inputs
for filters, strides in ((16, 1), (32, 2), (64, 2)):
    h = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
features = h  # (batch, 8, 8, 64)
mask = keras_ersm.EnergyMask(patch_size=1, coherence_steps=2, name="mask")
h = mask(features)  # masked features; the energy loss is added to the model
h = keras.layers.GlobalAveragePooling2D()(h)
outputs = keras.layers.Dense(10)(h)
model = keras.Model(inputs, outputs)

model.compile(
    keras.optimizers.Adam(2e-3),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(x, y, epochs=2, batch_size=64, validation_data=(x_test, y_test), verbose=2)

# Per-token terms of the mask for a few images: scores z, keep, redundancy S,
# energy E and the token norms ||x_i||, each (batch, 8, 8).
terms = keras_ersm.models.energy_terms(model, x_test[:4], layer="mask")
for key, value in terms.items():
    print(f"{key:>10}: shape {value.shape}, mean {value.mean():+.4f}")
print("learned coupling beta:", float(keras.ops.convert_to_numpy(mask.coherence)))

# Save and reload: EnergyMask is registered, no custom_objects needed.
with tempfile.TemporaryDirectory() as folder:  # removed afterwards
    path = os.path.join(folder, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
np.testing.assert_allclose(
    model.predict(x_test[:8], verbose=0),
    restored.predict(x_test[:8], verbose=0),
    rtol=1e-5,
    atol=1e-5,
)
print("saved, reloaded and compared a .keras round trip")
