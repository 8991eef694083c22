"""`fedmed report`'s privacy line: what the server could learn, from summary.json."""

from fedmed.report import privacy_line


def test_privacy_line_states_the_guarantee_of_each_kind_of_run():
    # Prepare
    dp = {
        "rounds_completed": 10,
        "dp_epsilon": 19.8123,
        "dp_delta": 1e-5,
        "dp_noise_multiplier": 1.0,
        "dp_clip_norm": 0.5,
    }
    # Execute / Assert
    assert privacy_line(dp) == (
        "differential privacy: (19.8, 1e-05)-DP at site level after 10 rounds "
        "(noise multiplier 1, clip norm 0.5)"
    )
    clip_only = {**dp, "dp_epsilon": None, "dp_noise_multiplier": 0.0}
    assert "no noise: clipping only, no DP guarantee" in privacy_line(clip_only)
    assert "only sums" in privacy_line({"secure_aggregation": True})
    assert privacy_line({"secure_aggregation": False}) is None
