"""Decoder-only training step: our LinkNet decoder against segmentation_models' design, fed with random tensors of
the InceptionResNetV2 taps' shapes at 256 px (batch 4), so the encoder's cost and noise stay out.

    python benchmarks/linknet_decoder.py ours|sm blocks|head [HEAD_FILTERS]

ours: 1x1 conv to C/4 -> transposed 3x3 stride 2 -> 1x1 conv (each + BN + ReLU), added to the skip; head: transposed
3x3 to full size and a 3x3 conv with HEAD_FILTERS (32), then the 1x1 mask. sm (segmentation_models' Linknet with
``decoder_block_type="upsampling"``, written here in Keras): 1x1 conv to C/4 -> upsampling -> 3x3 conv -> 1x1 conv;
head: the same block with 16 filters, then a 3x3 conv to the mask. ``blocks`` times the four decoder blocks,
``head`` the head alone. Plain ``keras.layers.BatchNormalization`` everywhere. Prints the median ms per step."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TAPS = {5: (8, 1536), 4: (16, 1088), 3: (32, 320), 2: (64, 192), 1: (128, 64)}  # size, channels at 256 px
BATCH = 4


def _cbr(x, filters, kernel, transpose=False, strides=1):
    from keras import layers

    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization()(x))


def _block(kind: str, x, out: int):
    from keras import layers

    c = x.shape[-1] // 4
    x = _cbr(x, c, 1)
    x = _cbr(x, c, 3, transpose=True, strides=2) if kind == "ours" else _cbr(layers.UpSampling2D()(x), c, 3)
    return _cbr(x, out, 1)


def build(kind: str, part: str, head_filters: int = 32):
    import keras
    from keras import layers

    inputs = {i: keras.Input((s, s, ch)) for i, (s, ch) in TAPS.items()}
    x = inputs[5] if part == "blocks" else inputs[1]
    if part == "blocks":
        for i in (4, 3, 2, 1):
            x = layers.Add()([_block(kind, x, TAPS[i][1]), inputs[i]])
        x = layers.Conv2D(1, 1, activation="sigmoid")(layers.UpSampling2D()(x))
    elif kind == "ours":
        x = _cbr(_cbr(x, head_filters, 3, transpose=True, strides=2), head_filters, 3)
        x = layers.Conv2D(1, 1, activation="sigmoid")(x)
    else:
        x = layers.Conv2D(1, 3, padding="same", activation="sigmoid")(_block("sm", x, 16))
    return keras.Model(list(inputs.values()), x)


def main(argv):
    import keras
    import numpy as np

    from medattn.utils import median_train_step_seconds

    kind, part = argv[0], argv[1]
    if kind not in ("ours", "sm") or part not in ("blocks", "head"):
        raise SystemExit("usage: python benchmarks/linknet_decoder.py ours|sm blocks|head [HEAD_FILTERS]")
    head_filters = int(argv[2]) if len(argv) > 2 else 32
    model = build(kind, part, head_filters)
    model.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(BATCH, s, s, ch)).astype("float32") for s, ch in TAPS.values()]
    y = (rng.random((BATCH, 256, 256, 1)) > 0.5).astype("float32")
    step = median_train_step_seconds(model, xs, y, repeats=8)
    print(f"{kind} {part} (head filters {head_filters}): median {1e3 * step:.0f} ms per step")


if __name__ == "__main__":
    main(sys.argv[1:])
