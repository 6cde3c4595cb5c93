"""echo_jax.divergence: a finite loss that blows up is caught after being held for a log period."""

from echo_jax.divergence import DivergenceGuard


def test_a_loss_ten_times_its_best_held_for_two_periods_is_divergence():
    guard = DivergenceGuard(2)
    assert guard.update([200.0, 210.0]) == []
    assert guard.update([150.0, 140.0]) == []  # bests 150, 140
    assert guard.update([1600.0, 300.0]) == [] and guard.any_suspect  # model 0 is suspect (> 1500)
    assert guard.update([1_480_000.0, 290.0]) == [0]


def test_one_spike_is_not_divergence_and_the_best_is_not_lowered_by_it():
    guard = DivergenceGuard(1)
    guard.update([100.0])
    assert guard.update([5000.0]) == [] and guard.any_suspect
    assert guard.update([120.0]) == [] and not guard.any_suspect
    assert guard.update([999.0]) == []  # below 10 x 100: the spike did not become the best
    assert list(guard.best) == [100.0]


def test_the_guard_resumes_with_its_bests():
    guard = DivergenceGuard(2)
    guard.update([50.0, 60.0])
    resumed = DivergenceGuard(2)
    resumed.load(guard.state())
    assert resumed.update([600.0, 61.0]) == [] and resumed.suspect.tolist() == [True, False]
    assert DivergenceGuard(1).state() == {"best": [None]}


def test_early_training_and_models_of_other_scales_are_never_suspect():
    # The first periods' large drops, a noisy plateau, and a sweep whose models' losses differ 50-fold (a beta
    # of 0 next to a large one): each model is judged against its own best only.
    guard = DivergenceGuard(2)
    for losses in ([550.0, 28_000.0], [300.0, 9_000.0], [180.0, 2_500.0], [210.0, 2_900.0], [150.0, 2_400.0]):
        assert guard.update(losses) == [] and not guard.any_suspect
    assert list(guard.best) == [150.0, 2400.0]


def test_above_judges_without_recording():
    guard = DivergenceGuard(2)
    guard.update([100.0, 100.0])
    assert guard.above([1001.0, 999.0]).tolist() == [True, False]
    assert not guard.any_suspect and list(guard.best) == [100.0, 100.0]
