"""ModelPool: a reused compiled model trains exactly as a freshly built one, without tracing its steps again."""

import numpy as np
import pytest


def _builder():
    import keras

    def build():
        inp = keras.Input((8, 8, 2))
        x = keras.layers.Conv2D(4, 3, padding="same")(inp)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.Dropout(0.3)(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))

    return build


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n)


def _train(model, x, y):
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return [v.numpy() for v in model.variables]


def _fresh_and_pooled(stage, runs):

    from medattn.training.reuse import ModelPool
    from medattn.training.seed import set_seed

    def compile_fn(n):
        return lambda m: m.compile(optimizer=stage.make_optimizer(n), loss="sparse_categorical_crossentropy",
                                   metrics=["accuracy"])

    fresh, pooled, pool, traces = [], [], ModelPool(), []
    for seed, n in runs:
        x, y = _data(n, seed)
        set_seed(seed)
        m = _builder()()
        compile_fn(n)(m)
        fresh.append(_train(m, x, y))
        set_seed(seed)
        p = pool.get("net", _builder(), compile_fn(n), stage.decay_steps(n))
        pooled.append(_train(p, x, y))
        traces.append(p.train_function)
    return fresh, pooled, pool, traces


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pooled_model_trains_like_a_fresh_one(optimizer):
    from medattn.training import Stage

    stage = Stage("s", epochs=2, batch_size=4, learning_rate=0.05, optimizer=optimizer, cosine_alpha=0.1)
    # three builds: seeds and training-set sizes differ (so the cosine schedule's length differs)
    fresh, pooled, pool, traces = _fresh_and_pooled(stage, [(0, 12), (1, 20), (2, 9)])
    assert pool.reused == 2
    for f, p in zip(fresh, pooled):
        assert len(f) == len(p)
        for a, b in zip(f, p):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the later builds trained with the first build's traced train function
    assert traces[0] is traces[1] is traces[2]
    # and the three runs really differ (the reset did something)
    assert not np.allclose(pooled[0][0], pooled[1][0])


def test_pool_refuses_a_different_architecture_under_one_key():
    import keras

    from medattn.training import Stage
    from medattn.training.reuse import ModelPool

    stage = Stage("s", epochs=1, batch_size=4)
    pool = ModelPool()
    compile_fn = lambda m: m.compile(optimizer=stage.make_optimizer(8), loss="mse")  # noqa: E731
    pool.get("k", _builder(), compile_fn, 2)

    def other():
        inp = keras.Input((8, 8, 2))
        return keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(inp)))

    with pytest.raises(ValueError, match="different variables"):
        pool.get("k", other, compile_fn, 2)


def test_cosine_schedule_with_a_settable_length_matches_keras():
    import keras

    from medattn.training.reuse import CosineDecaySteps

    ours, ref = CosineDecaySteps(0.1, 50, alpha=0.05), keras.optimizers.schedules.CosineDecay(0.1, 50, alpha=0.05)
    for step in (0, 7, 25, 50, 80):
        assert float(ours(step)) == pytest.approx(float(ref(step)), rel=1e-6)
    ours.set_decay_steps(10)
    assert float(ours(5)) == pytest.approx(float(keras.optimizers.schedules.CosineDecay(0.1, 10, alpha=0.05)(5)))
    assert ours.get_config()["decay_steps"] == 10
    with pytest.raises(ValueError):
        ours.set_decay_steps(0)


def test_stage_warmup_then_cosine_and_identity_unchanged_without_it():
    import keras

    from medattn.training import Stage
    from medattn.training.config import ExperimentConfig, config_hash

    st = Stage("s", epochs=10, batch_size=10, learning_rate=1e-3, warmup_epochs=2, cosine_alpha=0.1)
    assert st.warmup_steps(95) == 20 and st.decay_steps(95) == 80  # 10 steps per epoch
    sched = st.make_optimizer(95).learning_rate  # the schedule's value at the optimizer's step 0
    lr = st.make_optimizer(95)._learning_rate
    ref = keras.optimizers.schedules.CosineDecay(0.0, 80, alpha=0.1, warmup_target=1e-3, warmup_steps=20)
    for step in (0, 10, 20, 50, 100, 150):
        assert float(lr(step)) == pytest.approx(float(ref(step)), rel=1e-6, abs=1e-12)
    assert float(lr(0)) == 0.0 and float(lr(20)) == pytest.approx(1e-3) and float(sched) == 0.0
    assert float(lr(100)) == pytest.approx(1e-4)  # alpha of the warm-up target at the end
    lr.set_decay_steps(40, 10)  # a kept model reused for a stage of another length
    assert float(lr(10)) == pytest.approx(1e-3) and lr.get_config()["warmup_steps"] == 10
    # a stage without warm-up keeps the identity of runs made before the field existed
    assert "warmup_epochs" not in Stage("s").to_dict() and Stage("s", warmup_epochs=0.5, epochs=2).to_dict()
    base = ExperimentConfig(stages=(Stage("train", epochs=3),))
    assert config_hash(base) != config_hash(ExperimentConfig(stages=(Stage("train", epochs=3, warmup_epochs=1),)))
    with pytest.raises(ValueError, match="warmup_epochs"):
        Stage("s", epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match="schedule=cosine"):
        Stage("s", epochs=3, warmup_epochs=1, schedule="constant")


def test_a_saved_compiled_model_with_the_schedule_loads(tmp_path):
    import keras

    import medattn
    from medattn.training import Stage

    inp = keras.Input((4,))
    m = keras.Model(inp, keras.layers.Dense(2)(inp))
    m.compile(optimizer=Stage("s", epochs=3, batch_size=2).make_optimizer(10), loss="mse")
    m.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    m.save(tmp_path / "m.keras")
    back = medattn.load_model(tmp_path / "m.keras")
    assert back.optimizer.learning_rate is not None
    assert back.optimizer._learning_rate.get_config()["decay_steps"] == 15


def test_model_card_beside_saved_model(tmp_path):
    import keras
    import pytest

    from medattn.saving import load_model, read_model_card, save_model_card

    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="lacks"):
        save_model_card(m, tmp_path / "m.keras", {"kind": "classifier"})
    path = save_model_card(m, tmp_path / "m.keras", {"kind": "classifier", "input_size": 4, "preprocessing": "unit",
                                                     "class_names": ["a", "b"], "threshold": None})
    card = read_model_card(path)
    assert card["file"] == "m.keras" and card["class_names"] == ["a", "b"]
    assert load_model(path).output_shape == (None, 2)
    (tmp_path / "m.json").unlink()
    with pytest.raises(FileNotFoundError, match="no model card"):
        read_model_card(path)


def test_stage_global_clipnorm_limits_the_step_and_is_outside_old_identities():
    import keras
    import numpy as np

    from medattn.training import Stage
    from medattn.training.config import ExperimentConfig, config_hash

    def first_step(stage):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=stage.make_optimizer(8), loss="mse")
        w0 = [w.copy() for w in model.get_weights()]
        x, y = np.ones((8, 4), "float32"), np.full((8, 1), 1e3, "float32")  # huge loss, huge gradient
        model.train_on_batch(x, y)
        return np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(model.get_weights(), w0)))

    kw = dict(epochs=1, batch_size=8, learning_rate=1.0, optimizer="sgd", schedule="constant", momentum=0.0)
    assert first_step(Stage("s", **kw)) > 100  # unclipped: lr x |gradient|
    assert first_step(Stage("s", global_clipnorm=0.5, **kw)) == pytest.approx(0.5, rel=1e-4)
    assert "global_clipnorm" not in Stage("s").to_dict()
    base = ExperimentConfig(stages=(Stage("train", epochs=3),))
    assert config_hash(base) != config_hash(ExperimentConfig(stages=(Stage("train", epochs=3, global_clipnorm=1.0),)))
    with pytest.raises(ValueError, match="global_clipnorm"):
        Stage("s", global_clipnorm=0.0)


def test_stage_weight_decay_shrinks_kernels_not_norms_or_biases_and_is_outside_old_identities():
    import keras
    import numpy as np

    from medattn.training import Stage
    from medattn.training.config import ExperimentConfig, config_hash

    def one_step(stage):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=stage.make_optimizer(8), loss="mse")
        model.layers[1].gamma.assign(np.full(3, 2.0, "float32"))
        model.layers[1].beta.assign(np.full(3, 0.5, "float32"))
        model.layers[0].bias.assign(np.full(3, 0.25, "float32"))
        names = [v.name for v in model.trainable_variables]  # kernel, bias, gamma, beta, kernel, bias
        before = [v.numpy().copy() for v in model.trainable_variables]
        rng = np.random.default_rng(0)
        model.train_on_batch(rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 1)).astype("float32"))
        return names, before, [v.numpy() for v in model.trainable_variables]

    kw = dict(epochs=1, batch_size=8, learning_rate=0.1, schedule="constant")
    for optimizer in ("adam", "sgd"):
        names, w0, decayed = one_step(Stage("s", weight_decay=0.5, optimizer=optimizer, **kw))
        _, _, plain = one_step(Stage("s", optimizer=optimizer, **kw))
        # the same gradient step, plus (decoupled) -wd * lr * w for every weight but the exempt ones
        assert names == ["kernel", "bias", "gamma", "beta", "kernel", "bias"]
        for name, a, d, p in zip(names, w0, decayed, plain):
            np.testing.assert_allclose(d - p, -0.05 * a if name == "kernel" else 0 * a, atol=1e-6,
                                       err_msg=f"{optimizer} {name}")
    assert "weight_decay" not in Stage("s").to_dict()
    assert Stage("s", weight_decay=0.5).to_dict()["weight_decay"] == 0.5
    base = ExperimentConfig(stages=(Stage("train", epochs=3),))
    assert config_hash(base) == config_hash(ExperimentConfig(stages=(Stage("train", epochs=3, weight_decay=0.0),)))
    assert config_hash(base) != config_hash(ExperimentConfig(stages=(Stage("train", epochs=3, weight_decay=0.5),)))
    with pytest.raises(ValueError, match="weight_decay"):
        Stage("s", weight_decay=-0.1)
