"""export(cfg): a trained network for serving, checked against its checkpoint.

Writes into the export's run folder:
- model.safetensors: the network's weights (no pickle; loadable anywhere), with the model
  config, class names and input normalisation in its metadata;
- model.pt2: a torch.export program (graph + weights, batch dimension dynamic), loadable with
  torch.export.load(...).module() and no cnnfleet code;
- export.json: input shape, normalisation, class names, and the largest logit difference between
  each export and the checkpoint's network on a random batch (must be <= tolerance).
"""

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnfleet.errors import CnnfleetError
from cnnfleet.inference import load_trained
from cnnfleet.run.files import write_json_atomic
from cnnfleet.run.summary import print_table


class ExportError(CnnfleetError):
    """The network cannot be exported, or the export does not match the checkpoint."""


def export(cfg: DictConfig) -> dict:
    from safetensors.torch import load_file, save_file

    trained = load_trained(cfg.ckpt_path)
    net = trained.module.eval_net.eval()  # the EMA weights when the run kept them
    output = Path(cfg.paths.output_dir)
    torch.manual_seed(0)
    example = torch.randn(cfg.check_batch, *trained.input_shape())
    with torch.no_grad():
        expected = net(example)
    meta = {
        "model": trained.module.hparams.model,
        "class_names": trained.class_names,
        "input_shape": list(trained.input_shape()),
        "mean": trained.data["mean"],
        "std": trained.data["std"],
        "checkpoint": str(cfg.ckpt_path),
    }
    weights = output / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(weights), metadata={"cnnfleet": json.dumps(meta)})
    reloaded = instantiate(trained.module.hparams.model).eval()  # a fresh network, as a server would build it
    reloaded.load_state_dict(load_file(str(weights)))
    with torch.no_grad():
        diffs = {"safetensors": _max_diff(reloaded(example), expected)}

    program_path = output / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # unsupported Python in forward, data-dependent control flow, ...
        name = meta["model"].get("_target_")
        raise ExportError(f"torch.export cannot trace {name}: {str(exc).splitlines()[0]}") from None
    torch.export.save(program, str(program_path))
    loaded = torch.export.load(str(program_path)).module()
    with torch.no_grad():
        diffs["torch_export"] = _max_diff(loaded(example), expected)
    report = {**meta, "files": [weights.name, program_path.name], "max_abs_logit_diff": diffs,
              "tolerance": cfg.tolerance}  # fmt: skip
    write_json_atomic(output / "export.json", report)
    bad = {k: v for k, v in diffs.items() if v > cfg.tolerance}
    if bad:
        raise ExportError(f"exported logits differ from the checkpoint's by {bad} (> tolerance={cfg.tolerance})")
    print_table("cnnfleet export", {"weights": str(weights), "program": str(program_path),
                                    **{f"max |logit diff| {k}": v for k, v in diffs.items()}})  # fmt: skip
    return report


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())
