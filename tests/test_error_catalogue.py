"""Every row of docs/errors.md through the command's real code: the exit code, the exact one-line
message, no traceback, no run folder that looks complete, no existing checkpoint changed.

A row refused while the command starts (composition, checks, run plan: most of them) runs in this
process, through the command's `main()` with its argv, environment and working folder; a row that
gets as far as its job (a corrupt image, a NaN loss, DDP) or needs a fresh interpreter (PYTHONPATH)
runs through the real console script, three at a time. Each parametrized case checks its own
result; checkpoints and completed runs are compared before and after all of them.
"""

import hashlib
import json
import re
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import MODULES, CliResult, run_cli, run_main
from dataset_files import write_image_folder

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def code(cell: str) -> str:
    """The text of a Markdown code span (single or double backticks)."""
    text = cell[3:-3] if cell.startswith("`` ") else cell.strip("`")
    return text.replace("&#124;", "|")  # a pipe inside a table cell


def catalogue() -> list[dict]:
    rows = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| id ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows.append({"id": cells[0], "command": code(cells[2]), "exit": int(cells[3]), "message": code(cells[4])})
    return rows


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The files the rows need, and a checkpoint of another model (<ckpt>)."""
    tmp = tmp_path_factory.mktemp("catalogue")
    for folder in ("empty/train/a", "empty/train/b", "empty/val/a", "home"):
        (tmp / folder).mkdir(parents=True)
    pets = write_image_folder(tmp / "pets")
    (pets / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    wolves = write_image_folder(tmp / "wolves")
    (wolves / "val" / "wolf").mkdir()
    shutil.copy(next((wolves / "val" / "cat").glob("*.png")), wolves / "val" / "wolf" / "w.png")
    write_image_folder(tmp / "oneclass", classes=("cat",))
    (tmp / "corrupt.ckpt").write_bytes(b"garbage")
    (tmp / "afile").write_text("a file where a folder should be\n")
    (tmp / "notimm" / "timm").mkdir(parents=True)
    (tmp / "notimm" / "timm" / "__init__.py").write_text('raise ImportError("No module named timm")\n')
    trained = run_cli(
        "cnnfleet-train", ["trainer.max_epochs=1", "model.widths=[8,16]", "logger=csv", "test=false"], tmp
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (ckpt,) = tmp.glob("logs/train/runs/*/checkpoints/best.ckpt")
    shutil.copy(ckpt, tmp / "loose.ckpt")  # a checkpoint that no run folder owns
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"state_dict": weights}, tmp / "weights.ckpt")  # bare weights with a state_dict key
    return {"tmp": tmp, "ckpt": ckpt}


LONG = "a" * 300  # <long>: longer than a path component may be (255 bytes)


def fill(text: str, scratch: dict) -> str:
    tmp, ckpt = scratch["tmp"], scratch["ckpt"]
    return (
        text.replace("<tmp>", str(tmp))
        .replace("<ckpt>", str(ckpt))
        .replace("<run>", str(ckpt.parent.parent))
        .replace("<long>", LONG)
    )


class ReachedTheJob(Exception):
    """The command passed its start-up checks: this row runs through the console script instead."""


def row_command(row: dict, scratch: dict) -> tuple[str, list[str], dict]:
    words = shlex.split(fill(row["command"], scratch))
    env = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if "WANDB_MODE" in env:
        env["WANDB_API_KEY"] = ""  # no key from the environment running the tests
    return words[0], words[1:], env


def refused_at_start(row: dict, scratch: dict) -> CliResult | None:
    """The row's result when its command refuses it before the job starts, run in this process; None
    when the job would start (or the row needs a new interpreter)."""
    program, args, env = row_command(row, scratch)
    if "PYTHONPATH" in env or program not in MODULES:
        return None

    def reached(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ReachedTheJob

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cnnfleet.cli.job.run_one", reached)  # a single run's job
        patch.setattr(f"{MODULES[program]}.hydra_app", reached)  # a sweep, once its values are checked
        try:
            return run_main(program, args, scratch["tmp"], env=env)
        except ReachedTheJob:
            return None


def run_row(row: dict, scratch: dict) -> CliResult:
    program, args, env = row_command(row, scratch)
    return run_cli(program, args, scratch["tmp"], env=env)


@pytest.fixture(scope="module")
def results(scratch: dict) -> dict:
    """Every row's result (in this process when refused at start-up, else three CLI processes at a time),
    and what changed around them."""
    tmp = scratch["tmp"]
    before_ckpts, before_runs = checkpoints(tmp), completed_runs(tmp)
    rows = [row for row in catalogue() if not (row["id"] == "no-gpu" and torch.cuda.is_available())]
    done = {row["id"]: result for row in rows if (result := refused_at_start(row, scratch)) is not None}
    rest = [row for row in rows if row["id"] not in done]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done |= dict(zip([r["id"] for r in rest], pool.map(lambda r: run_row(r, scratch), rest), strict=True))
    print(f"{len(rows) - len(rest)} rows refused at start-up (in-process), {len(rest)} through the console script")
    return {
        "rows": done,
        "ckpts_kept": checkpoints(tmp) == before_ckpts,
        "no_new_completed": completed_runs(tmp) == before_runs,
    }


def checkpoints(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.ckpt")}


def completed_runs(root: Path) -> set[str]:
    done = set()
    for summary in root.glob("logs/*/runs/*/summary.json"):
        if json.loads(summary.read_text()).get("status") == "completed":
            done.add(str(summary.parent))
    return done


def test_the_catalogue_covers_what_the_issue_lists() -> None:
    ids = {row["id"] for row in catalogue()}
    assert {
        "misspelled-key",
        "wrong-type",
        "unknown-option",
        "missing-data-root",
        "empty-image-folder",
        "undecodable-image",
        "no-gpu",
        "indivisible-batch",
        "missing-ckpt",
        "corrupt-ckpt",
        "other-model-ckpt",
        "slurm-task-mismatch",
        "unknown-model-name",
        "missing-extra",
        "wandb-online-no-key",
        "unwritable-run-folder",
        "completed-run-folder",
        "untrained-schedule",
        "negative-lr",
        "negative-seed",
        "short-betas",
        "wandb-bad-project",
        "proc-run-folder",
        "sys-run-folder",
        "long-data-root",
        "long-task-name",
        "long-ckpt-path",
        "bare-weights-train",
        "bare-weights-eval",
        "data-root-is-file",
        "ckpt-is-folder",
        "one-class-folder",
        "key-in-wrong-group",
        "optimizer-rejects-value",
        "optional-group-typo",
        "null-group",
        "sweep-bad-value",
        "eval-into-run-folder",
        "unknown-flag",
    } <= ids


@pytest.mark.parametrize("row", catalogue(), ids=lambda row: row["id"])
def test_catalogue_row(scratch: dict, results: dict, row: dict) -> None:
    if row["id"] not in results["rows"]:
        pytest.skip("a GPU is present")
    result = results["rows"][row["id"]]
    program = shlex.split(row["command"].replace("<", "").replace(">", ""))
    program = next(w for w in program if not re.fullmatch(r"[A-Z_]+=.*", w))
    assert result.returncode == row["exit"], result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    expected = re.escape(fill(row["message"], scratch)).replace(re.escape("..."), ".*")
    assert re.fullmatch(expected, errors[0]), f"\n{errors[0]}\n!=\n{fill(row['message'], scratch)}"
    assert "Traceback" not in result.stderr


def test_no_row_changed_a_checkpoint_or_completed_a_run(results: dict) -> None:
    assert results["ckpts_kept"]  # no existing checkpoint modified
    assert results["no_new_completed"]  # nothing looks like a finished run
