"""Loading `.keras` files with a clear error for damaged ones."""

import json
import os
import zipfile

import keras

# Members every `.keras` archive written by Keras 3 holds.
_REQUIRED_MEMBERS = ("config.json", "metadata.json")
_WEIGHTS = "model.weights.h5"


def _walk_models(layer):
    yield layer
    if isinstance(layer, keras.Model):
        for child in layer.layers:
            yield from _walk_models(child)


def restore_trainable(model):
    """Re-applies `trainable=False` to the sublayers of frozen layers.

    A `.keras` file stores each layer's own `trainable` flag, but a layer
    that creates sublayers (e.g. the squeeze-and-excite blocks of a KerasCV
    MobileNetV3) re-creates them trainable when it is loaded, so a frozen
    backbone comes back partly trainable. This sets `trainable = False`
    again on every frozen layer (nested models included), which Keras
    propagates to the layer's sublayers. `keras_ersm.saving.load_model`
    calls it before compiling; after a plain `keras.saving.load_model`,
    call it and then compile again (the optimizer state of such a model is
    not restored by Keras).

    Args:
        model: a Keras model.

    Returns:
        The same `model`.

    Examples:

    ```python
    import keras
    from keras_ersm.saving import restore_trainable

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.layers[0].trainable = False
    assert restore_trainable(model).trainable_weights == []
    ```
    """
    for layer in _walk_models(model):
        if layer is not model and not layer.trainable:
            # Set True first: on TensorFlow, assigning the value a layer
            # already has does not reach its sublayers.
            layer.trainable = True
            layer.trainable = False
    return model


def _damaged(path, reason):
    return ValueError(
        f"Could not load the model: the file {reason}. Received: path={path!r}. "
        "Save the model again or load an earlier checkpoint."
    )


def load_model(path, **kwargs):
    """Loads a `.keras` model, with a clear error for a damaged file.

    Same as `keras.saving.load_model`, which in Keras 3.15 reports a
    truncated or non-zip `.keras` file as "File not found". This function
    first checks that the file exists, is a complete zip archive (every
    member's CRC is verified, so the file is read once more) and holds a
    Keras config, and raises a `ValueError` that says so otherwise. Paths
    that do not end in `.keras` (legacy `.h5`, remote URLs) are passed to
    Keras unchecked. keras_ersm layers are registered, so no
    `custom_objects` are needed, also under `safe_mode=True`.

    Frozen layers stay frozen: the model is loaded uncompiled,
    `restore_trainable` re-freezes the sublayers of frozen layers (which
    Keras re-creates trainable), then the model is compiled from the file's
    compile config and its optimizer state is loaded. With a plain
    `keras.saving.load_model`, call `restore_trainable(model)` and compile
    again.

    Args:
        path: path of the `.keras` file (str or `os.PathLike`).
        **kwargs: passed to `keras.saving.load_model`, e.g. `compile`,
            `safe_mode`, `custom_objects`.

    Returns:
        The loaded Keras model.

    Raises:
        ValueError: the file does not exist, is truncated, is not a
            `.keras` archive, holds an invalid `config.json` or no
            `model.weights.h5`, or Keras fails to read an archive that looks
            complete (the original error is chained). The message names the
            file.

    Examples:

    ```python
    import os
    import tempfile
    import keras
    import keras_ersm
    from keras_ersm.saving import load_model

    model = keras.Sequential([keras.Input((4, 4, 2)), keras_ersm.EnergyMask()])
    path = os.path.join(tempfile.mkdtemp(), "mask.keras")
    model.save(path)
    restored = load_model(path, safe_mode=True)
    with open(path, "r+b") as f:
        f.truncate(100)
    try:
        load_model(path)
    except ValueError as error:
        assert "truncated" in str(error)
    ```
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Invalid value for argument `path`. Expected a str or os.PathLike "
            f"path of a `.keras` file. Received: path={path!r}"
        )
    filename = os.fspath(path)
    if not filename.endswith(".keras") or "://" in filename:
        return keras.saving.load_model(path, **kwargs)
    if not os.path.isfile(filename):
        raise ValueError(
            "Could not load the model: no file at this path. Received: "
            f"path={filename!r}"
        )
    damaged = "is truncated or not a .keras archive"
    if not zipfile.is_zipfile(filename):
        raise _damaged(filename, damaged)
    try:
        with zipfile.ZipFile(filename) as archive:
            bad_member = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise _damaged(filename, damaged) from error
    if bad_member is not None:
        raise _damaged(filename, f"is corrupt (bad CRC in {bad_member!r})")
    missing = [name for name in _REQUIRED_MEMBERS if name not in names]
    if missing:
        raise _damaged(filename, f"is not a .keras archive (no {missing[0]!r})")
    if _WEIGHTS not in names:
        raise _damaged(filename, f"has no weights (no {_WEIGHTS!r} member)")
    try:
        with zipfile.ZipFile(filename) as archive:
            config = json.loads(archive.read("config.json"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _damaged(filename, f"holds an invalid 'config.json' ({error})") from error
    compile_model = kwargs.pop("compile", True)
    try:
        model = keras.saving.load_model(filename, compile=False, **kwargs)
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise _damaged(filename, f"could not be read ({error})") from error
    restore_trainable(model)
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    if compile_model and compile_config:
        # Builds the optimizer on the restored trainable variables.
        model.compile_from_config(compile_config)
        # Weights again, now with the optimizer state, which Keras matches
        # to the restored (frozen) trainable variables.
        model.load_weights(filename)
    return model
