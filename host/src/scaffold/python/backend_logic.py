"""What a scale call changes, without the bindings, so `python3 -m unittest` checks it."""


def apply(before: int, replicas: int) -> tuple[int, str]:
    return replicas, f"{before} → {replicas} replicas"
