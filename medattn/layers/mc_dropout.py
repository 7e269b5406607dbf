import keras
from keras import layers

from ._checks import unit_interval


@keras.saving.register_keras_serializable(package="medattn")
class MCDropout(layers.Dropout):
    """Dropout that stays active at inference, for Monte-Carlo dropout uncertainty.

    Reference: Gal Y, Ghahramani Z. "Dropout as a Bayesian Approximation: Representing Model Uncertainty in Deep
    Learning", ICML 2016, arXiv 1506.02142.

    ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` on every call when ``always_on`` (default True);
    T stochastic forward passes give the predictive mean and entropy (see
    :func:`medattn.evaluation.uncertainty.mc_predict`). With ``always_on=False`` it is plain Dropout.

    Args:
        rate: drop probability in [0, 1) (default 0.5).
        always_on: apply dropout at inference too (default True).
        noise_shape, seed: as for ``keras.layers.Dropout``.

    Input/output: any shape.
    """

    def __init__(self, rate=0.5, always_on=True, noise_shape=None, seed=None, **kwargs):
        unit_interval("rate", rate)
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)
        self.always_on = bool(always_on)

    def call(self, inputs, training=False):
        return super().call(inputs, training=True if self.always_on else training)

    def get_config(self):
        return {**super().get_config(), "always_on": self.always_on}
