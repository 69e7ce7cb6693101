"""What a SLURM partition can give, read before queueing, so a request that can never run is one line.

sbatch accepts jobs that no node of the partition can ever hold (4 CPUs per task on 2-core nodes):
they wait PENDING forever (Reason=PartitionConfig or Resources). Here the partition's limits
(`scontrol show partition`) and its nodes (`scontrol show node`: CPUs, memory, GPUs, features)
are held against the cluster group before sbatch, for cnnfleet-submit and launcher=slurm alike.
Node states are not held against the request: a drained node comes back, a missing one does not.
`cluster.cpus_per_task=null` (the default) is derived here: the smallest fitting node's CPUs shared
by its tasks, at most 16.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from omegaconf import DictConfig

from cnnfleet.errors import ConfigError

MAX_DERIVED_CPUS = 16  # more decode workers than this per GPU rarely help (default_workers caps at 8)
UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "")


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: list[Node]
    max_nodes: int | None = None
    max_time_min: int | None = None
    max_cpus_per_node: int | None = None
    max_mem_mb: int | None = None
    state: str = "UP"
    fields: dict = field(default_factory=dict)


def _scontrol(*args: str) -> str | None:
    """scontrol's one-line output, or None where SLURM cannot be asked (no scontrol, no controller)."""
    if shutil.which("scontrol") is None:
        return None
    try:
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _records(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]


def gpu_count(gres: str) -> int:
    """GPUs in a node's Gres: 'gpu:8', 'gpu:a100:4(S:0-1),gpu:v100:2' -> 8, 6; '(null)' -> 0."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def memory_mb(value: str) -> int:
    """'64G', '4096M', '4096' (SLURM's default unit is MB), '1T' -> MB."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", value.strip().upper()).groups()
    return {
        "K": int(number) // 1024,
        "": int(number),
        "M": int(number),
        "G": int(number) * 1024,
        "T": int(number) * 1024 * 1024,
    }[unit]


def _limit(value: str | None, parse=int) -> int | None:  # noqa: ANN001
    return None if value is None or value.upper() in UNLIMITED else parse(value)


def read_partition(name: str | None) -> Partition | None:
    """The named partition (None: the cluster's default one), or None where SLURM cannot be asked.
    ConfigError when no such partition exists."""
    from cnnfleet.config.schema import slurm_time_minutes

    text = _scontrol("show", "partition", "-o")
    if text is None:
        return None
    partitions = _records(text)
    chosen = [p for p in partitions if (p.get("PartitionName") == name if name else p.get("Default") == "YES")]
    if not chosen:
        names = ", ".join(p.get("PartitionName", "?") for p in partitions) or "none"
        what = f"cluster.partition={name}: no such partition" if name else "the cluster has no default partition"
        raise ConfigError(f"{what}; partitions: {names} (`sinfo -s` lists them)")
    info = chosen[0]
    nodes_text = _scontrol("show", "node", "-o", info.get("Nodes", "")) if info.get("Nodes") not in (None, "") else ""
    nodes = [
        Node(
            n["NodeName"],
            int(n.get("CPUEfctv") or n.get("CPUTot") or 0),
            int(n.get("RealMemory") or 0),
            gpu_count(n.get("Gres", "")),
            frozenset(f for f in n.get("AvailableFeatures", "").split(",") if f and f != "(null)"),
        )
        for n in _records(nodes_text or "")
        if "NodeName" in n
    ]
    return Partition(
        info["PartitionName"],
        nodes,
        _limit(info.get("MaxNodes")),
        _limit(info.get("MaxTime"), slurm_time_minutes),
        _limit(info.get("MaxCPUsPerNode")),
        _limit(info.get("MaxMemPerNode")),
        info.get("State", "UP"),
        info,
    )


def _constraint_features(constraint: str | None) -> set[str] | None:
    """The features a simple constraint ('a100', 'a100&ib') requires; None for expressions we do not judge."""
    if not constraint:
        return set()
    if re.fullmatch(r"[\w.-]+(&[\w.-]+)*", constraint):
        return set(constraint.split("&"))
    return None


def _fits(node: Node, cpus: int, mem_mb: int, gpus: int, features: set[str] | None) -> bool:
    return (
        node.cpus >= cpus
        and node.mem_mb >= mem_mb
        and node.gpus >= gpus
        and (features is None or features <= node.features)
    )


def derive_cpus_per_task(cluster: DictConfig, partition: Partition | None) -> int | None:
    """cluster.cpus_per_task, or (null) the CPUs of the smallest node that fits the rest of the
    request, shared by its tasks, at most 16; None when unknown (sbatch then gives 1 per task)."""
    if cluster.cpus_per_task is not None:
        return int(cluster.cpus_per_task)
    if partition is None:
        return None
    features = _constraint_features(cluster.constraint)
    mem = memory_mb(cluster.mem) if cluster.mem else 0
    fitting = [n for n in partition.nodes if _fits(n, cluster.tasks_per_node, mem, cluster.gpus_per_node, features)]
    if not fitting:
        return 1  # check_request names what does not fit
    smallest = min(n.cpus for n in fitting)
    if partition.max_cpus_per_node:
        smallest = min(smallest, partition.max_cpus_per_node)
    return max(1, min(MAX_DERIVED_CPUS, smallest // cluster.tasks_per_node))


def request_problem(cluster: DictConfig, partition: Partition, cpus_per_task: int) -> str | None:
    """Why no allocation of `partition` can ever hold this request, or None when one can."""
    from cnnfleet.config.schema import slurm_time_minutes

    where = f"partition {partition.name}"
    if partition.state.upper() not in ("UP", ""):
        return f"{where} is {partition.state} and accepts no jobs; choose another with cluster.partition"
    if partition.max_time_min is not None and slurm_time_minutes(cluster.time) > partition.max_time_min:
        return (
            f"cluster.time={cluster.time} exceeds {where}'s time limit of {partition.fields.get('MaxTime')}; "
            "lower cluster.time (a longer run resumes across jobs: it is requeued at its limit)"
        )
    if partition.max_nodes is not None and cluster.nodes > partition.max_nodes:
        return f"cluster.nodes={cluster.nodes} exceeds {where}'s MaxNodes={partition.max_nodes}; lower cluster.nodes"
    tasks = cluster.tasks_per_node
    cpus = tasks * cpus_per_task
    if partition.max_cpus_per_node is not None and cpus > partition.max_cpus_per_node:
        return (
            f"cluster.tasks_per_node={tasks} x cluster.cpus_per_task={cpus_per_task} = {cpus} CPUs per node "
            f"exceeds {where}'s MaxCPUsPerNode={partition.max_cpus_per_node}; lower cluster.cpus_per_task"
        )
    mem = memory_mb(cluster.mem) if cluster.mem else 0
    if partition.max_mem_mb is not None and mem > partition.max_mem_mb:
        return f"cluster.mem={cluster.mem} exceeds {where}'s MaxMemPerNode={partition.max_mem_mb}M; lower cluster.mem"
    if cluster.nodes > len(partition.nodes):
        return f"cluster.nodes={cluster.nodes} but {where} has {len(partition.nodes)} node(s); lower cluster.nodes"
    features = _constraint_features(cluster.constraint)
    gpus = cluster.gpus_per_node
    fitting = [n for n in partition.nodes if _fits(n, cpus, mem, gpus, features)]
    if len(fitting) >= cluster.nodes:
        return None
    nodes = partition.nodes
    if not nodes:
        return f"{where} has no nodes"
    if gpus and max(n.gpus for n in nodes) < gpus:
        most = max(n.gpus for n in nodes)
        fix = "use a GPU partition (cluster.partition)" if most == 0 else f"use cluster.gpus_per_node<={most}"
        return f"cluster.gpus_per_node={gpus} but the nodes of {where} have at most {most} GPUs; {fix}"
    if max(n.cpus for n in nodes) < tasks:
        most = max(n.cpus for n in nodes)
        return (
            f"cluster.tasks_per_node={tasks} needs at least {tasks} CPUs per node, but the largest node of "
            f"{where} has {most}; lower cluster.tasks_per_node (and raise cluster.nodes)"
        )
    if max(n.cpus for n in nodes) < cpus:
        most = max(n.cpus for n in nodes)
        fit = max(1, most // tasks)
        return (
            f"cluster.tasks_per_node={tasks} x cluster.cpus_per_task={cpus_per_task} = {cpus} CPUs per node, "
            f"but the largest node of {where} has {most}; use cluster.cpus_per_task<={fit} (or leave it out: it is "
            "derived from the partition)"
        )
    if mem and max(n.mem_mb for n in nodes) < mem:
        return (
            f"cluster.mem={cluster.mem} per node, but the largest node of {where} has "
            f"{max(n.mem_mb for n in nodes)}M; lower cluster.mem"
        )
    if features and not any(features <= n.features for n in nodes):
        offered = sorted({f for n in nodes for f in n.features}) or ["none"]
        return f"cluster.constraint={cluster.constraint}: no node of {where} has it (features: {', '.join(offered)})"
    return (
        f"cluster.nodes={cluster.nodes} nodes with {cpus} CPUs, {gpus} GPUs and {mem}M each are requested, but "
        f"{where} has {len(fitting)} such node(s) of {len(nodes)}; lower cluster.nodes or the per-node request"
    )


def check_request(cluster: DictConfig, what: str = "this job") -> int | None:
    """ConfigError (one line) when no partition named can ever run this request (sbatch takes a list,
    `a,b`: the job runs in the first that can); returns cpus_per_task to render (derived when null,
    from the first partition that fits). Without SLURM to ask, nothing is checked (sbatch will say)."""
    names = [n for n in str(cluster.partition).split(",") if n] if cluster.partition else [None]
    problems = []
    for name in names:
        try:
            partition = read_partition(name)
        except ConfigError as exc:  # no such partition: the next one listed may do
            if len(names) == 1:
                raise
            problems.append(str(exc))
            continue
        cpus = derive_cpus_per_task(cluster, partition)
        if partition is None:
            return cpus
        problem = request_problem(cluster, partition, cpus or 1)
        if problem is None:
            return cpus
        problems.append(problem)
    raise ConfigError(f"{what} could never start: {'; '.join(problems)}")
