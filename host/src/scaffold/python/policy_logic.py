"""The rule, without the bindings, so `python3 -m unittest` checks it."""
import math


def desired(target, replicas: int, mean: float) -> float:
    if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0:
        raise ValueError(f"policy_config.target must be a positive number, not {target!r}")
    return float(math.ceil(max(replicas, 1) * mean / target))
