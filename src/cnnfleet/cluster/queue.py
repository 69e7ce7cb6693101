"""squeue, asked in one place: the jobs SLURM still holds, or None when it cannot answer.

None (squeue missing, the controller unreachable, a timeout) means "unknown", never "no jobs": a
caller that took it for an empty queue would declare running jobs ended.
"""

import subprocess
from collections.abc import Sequence

SEPARATOR = "|"


def squeue(fields: Sequence[str], *filters: str, timeout_s: float = 60) -> list[list[str]] | None:
    """One row per job with the `fields` (squeue -o codes such as %i, %T, %j), filtered by `filters`
    (squeue's own options); None when squeue fails."""
    try:
        out = subprocess.run(
            ["squeue", "-h", *filters, "-o", SEPARATOR.join(fields)], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = [line.strip().split(SEPARATOR) for line in out.stdout.splitlines() if line.strip()]
    return [row for row in rows if len(row) == len(fields)]
