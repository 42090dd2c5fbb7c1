"""The element-wise mean of several HPD models' weights (a "model soup"), written as a new HPD folder.

    python scripts/average_weights.py MODEL MODEL [MODEL ...] --output DIR [--overwrite]

The models must share one architecture (the same config.json but for its dtype and transformers version), as the
runs of one recipe do, or a run and the run that continues it. Every tensor is averaged in float32, the head
included, and the result is saved like `hpd distill`'s output (float32), with averaged_from.json naming the sources
and their weights' sha256. The mean of two points of one training path often lies lower in the loss than either;
whether it does is measured, not assumed (docs/reproduction.md, rule 11).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_inference import weights_sha256  # noqa: E402
from hpd_models import load_hpd, model_format, resolve, save_hpd_folder  # noqa: E402
from hpd_toolkit.training.output_dir import replace_folder, write_atomic  # noqa: E402

IGNORED_CONFIG_KEYS = {"dtype", "torch_dtype", "transformers_version", "_name_or_path"}


def architecture(model):
    return {key: value for key, value in model.config.to_dict().items() if key not in IGNORED_CONFIG_KEYS}


def average(models):
    """The mean state dict of `models` (HPDModels of one architecture), in float32."""
    first = models[0].state_dict()
    total = {name: tensor.float().clone() for name, tensor in first.items()}
    for model in models[1:]:
        for name, tensor in model.state_dict().items():
            total[name] += tensor.float()
    return {name: tensor / len(models) for name, tensor in total.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="MODEL", help="HPD model folders (or Hub ids), two or more")
    parser.add_argument("--output", required=True, help="the new HPD folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty folder hpd did not write")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        raise SystemExit("give two or more HPD models to average.")

    folders = [resolve(model) for model in args.models]
    for name, folder in zip(args.models, folders):
        if model_format(folder) != "hpd":
            raise SystemExit(f"{name} is a sentence-transformers folder, not an HPD one: average HPD models "
                             "(convert it first with `hpd convert`).")
    loaded = [load_hpd(folder) for folder in folders]
    models = [model for model, _ in loaded]
    first = architecture(models[0])
    for name, model in zip(args.models[1:], models[1:]):
        other = architecture(model)
        if other != first:
            differ = sorted(key for key in other.keys() | first.keys() if other.get(key) != first.get(key))
            raise SystemExit(f"{name} and {args.models[0]} differ in {', '.join(differ)}: only models of one "
                             "architecture can be averaged.")

    soup, tokenizer = models[0], loaded[0][1]
    soup.load_state_dict(average(models))
    sources = [{"model": str(name), "weights_sha256": weights_sha256(folder)}
               for name, folder in zip(args.models, folders)]
    with replace_folder(args.output, overwrite=args.overwrite, sources=folders) as staging:
        save_hpd_folder(soup.float(), tokenizer, staging)
        write_atomic(staging / "averaged_from.json", json.dumps({"mean_of": sources}, indent=2) + "\n")
    print(f"Mean of {len(models)} models written to {args.output}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
