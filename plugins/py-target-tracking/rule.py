"""The HPA's proportional rule, without the bindings, so it is unit-tested with plain Python."""
import math


class BadConfig(Exception):
    pass


class NoData(Exception):
    pass


def desired(params: dict, replicas: int, windows: list) -> tuple[float, str]:
    """`windows` are (metric, values) pairs. Returns (replicas, reason)."""
    target = params.get("target")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
        raise BadConfig(f"policy_config.target must be a positive number, not {target!r}")
    per = params.get("per", "replica")
    if per not in ("replica", "total"):
        raise BadConfig(f"policy_config.per must be `replica` or `total`, not `{per}`")
    name = params.get("metric") or (windows[0][0] if windows else "")
    means = [sum(values) / len(values) for metric, values in windows if metric == name and values]
    if not means:
        raise NoData(f"no data for {name or 'the metric'} in the window")
    if per == "total":
        value = sum(means)
        wanted = math.ceil(value / target)
        how = f"{value:.3f} / {target}"
    else:
        value = sum(means) / len(means)
        wanted = math.ceil(max(replicas, 1) * value / target)
        how = f"{max(replicas, 1)} × {value:.3f} / {target}"
    return float(wanted), f"{name} mean {value:.3f} vs target {target}: ceil({how}) = {wanted} (python)"
