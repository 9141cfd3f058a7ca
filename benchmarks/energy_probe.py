"""Energy probe: which way the reference energy pushes the keep, and the
redundancy each trainability backbone shows the mask at initialisation.

1. The gradient of the default `EnergyRegularizer` loss, averaged over
   four tokens, with respect to a score `z` (keep = sigmoid(-z)) when the
   energy's own dependence on `z` is differentiated too (the reference
   layer, `energy_score_gradient=1.0`), for redundancies `S` from 0 to 8:
   positive means gradient descent lowers `z`, i.e. raises the keep.
2. The mean and 10-90% range of `S` and of the scores at the mask of each
   backbone of `benchmarks/trainability.py`, untrained, on 128 images of
   the bundled data (seed 0).

    KERAS_BACKEND=jax python -m benchmarks.energy_probe

Writes `benchmarks/results/energy_probe_<backend>.json`; read on the
Benchmarks page ("Trainability", MobileNetV3Small).
"""

import json
import os

import keras
import numpy as np

import keras_ersm
from benchmarks import trainability
from keras_ersm.testing.test_case import input_gradient


def score_gradient(z, s):
    """d(loss)/dz of the default regularizer at score `z` and redundancy `s`."""
    regularizer = keras_ersm.EnergyMask().energy_regularizer
    s = np.full((1, 2, 2), s, "float32")

    def loss(value):
        return regularizer(keras.ops.sigmoid(-value), value, s)

    return float(input_gradient(loss, np.full((1, 2, 2), z, "float32"))[0, 0, 0])


def main():
    gradients = [
        {"z": z, "S": s, "dloss_dz": score_gradient(z, s)}
        for s in (0.0, 1.0, 4.0, 8.0)
        for z in (-1.0, 0.0, 0.5, 1.0, 3.0)
    ]
    (x, _), _, num_classes = trainability.load_data("cluttered", 300)
    masks = {}
    for name in trainability.BACKBONES:
        model, _ = trainability.build(name, "default", num_classes, 0)
        mask = keras_ersm.models.energy_mask_layers(model)[0]
        terms = keras_ersm.models.energy_terms(model, x[:128], layer=mask)
        s = np.asarray(terms["redundancy"])
        z = np.asarray(terms["scores"])
        masks[name] = {
            "redundancy_mean": float(s.mean()),
            "redundancy_p10_p90": [
                float(np.percentile(s, 10)),
                float(np.percentile(s, 90)),
            ],
            "score_mean": float(z.mean()),
            "score_std": float(z.std()),
        }
    out = {
        "command": f"KERAS_BACKEND={keras.backend.backend()} "
        "python -m benchmarks.energy_probe",
        "score_gradients": gradients,
        "masks_at_initialisation": masks,
    }
    path = os.path.join(
        trainability.RESULTS, f"energy_probe_{keras.backend.backend()}.json"
    )
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
