"""Argument and shape checks shared by the layers (ValueError quoting what was received)."""

from __future__ import annotations


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def unit_interval(name: str, value, closed_right: bool = False) -> float:
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{']' if closed_right else ')'}, got {value!r}")
    return float(value)


def feature_map_shape(layer_name: str, shape, need_spatial: bool = False) -> tuple:
    """A rank-4 channels-last shape with a known channel count (and known H, W if ``need_spatial``).

    The layers compute on channels-last maps; under ``keras.config.image_data_format() == "channels_first"`` they
    would gate the wrong axis, so they refuse to build instead."""
    import keras

    if keras.config.image_data_format() != "channels_last":
        raise ValueError(f"{layer_name} supports channels_last feature maps only, but keras.config."
                         f"image_data_format() is {keras.config.image_data_format()!r}; transpose the map or set "
                         f"keras.config.set_image_data_format('channels_last')")
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"{layer_name} expects a 4-D feature map (batch, height, width, channels), got shape {shape}")
    if shape[-1] is None:
        raise ValueError(f"{layer_name} needs a known channel count, got shape {shape}")
    if need_spatial and (shape[1] is None or shape[2] is None):
        raise ValueError(f"{layer_name} needs known height and width, got shape {shape}")
    return shape
