"""The labeled log lines of echo_jax.logs."""

from echo_jax import logs


def test_one_labeled_line_per_model():
    lines = logs.train_lines(
        500,
        50000,
        "echo",
        [(1.0, 0), (0.5, 2)],
        {"rate": [24.1, 30.0], "distortion": [71.2, 60.25], "neg_elbo": [95.3, 90.25], "loss": [1, 2]},
        12.34,
    )
    assert lines == [
        "step   500/50000  echo beta=1 seed=0  rate 24.10 distortion 71.20 neg_elbo 95.30 (nats)  12.3 steps/s",
        "step   500/50000  echo beta=0.5 seed=2  rate 30.00 distortion 60.25 neg_elbo 90.25 (nats)  12.3 steps/s",
    ]
    (line,) = logs.train_lines(7, 10, "gaussian", [(4.0, 1)], {"rate": [1.0], "distortion": [2.0], "tc": [3.0]}, None)
    assert line == "step  7/10  gaussian beta=4 seed=1  rate 1.00 distortion 2.00 tc 3.00 (nats)"


def test_models_and_durations_in_words():
    assert logs.describe_models("echo", [(8.0, 0), (8.0, 1), (8.0, 2)]) == "3 echo models: beta=8 seeds 0,1,2"
    assert logs.describe_models("gaussian", [(1.0, 0)]) == "1 gaussian model: beta=1 seed 0"
    assert [logs.duration(s) for s in (42, 600, 4 * 3600)] == ["42 s", "10 min", "4.0 h"]
