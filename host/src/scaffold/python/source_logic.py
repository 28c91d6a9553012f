"""What to report, without the bindings, so `python3 -m unittest` checks it."""


def samples(name: str, config: dict) -> list[tuple[str, float]]:
    value = config.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"[plugins.{name}.config] value must be a number, not {value!r}")
    return [(f"{name}.value", float(value))]
