"""Convert OpenAI CLIP's BPE vocabulary (as shipped in the open-clip-torch wheel) to Hugging Face tokenizer files.

    pip download --no-deps open-clip-torch -d /tmp/oc && unzip -o /tmp/oc/open_clip_torch-*.whl \
        'open_clip/bpe_simple_vocab_16e6.txt.gz' -d /tmp/oc
    python scripts/make_clip_tokenizer.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz pipelines/world/clip_tokenizer

Writes vocab.json (49,408 tokens: 256 bytes, 256 bytes with the end-of-word marker, 48,894 merges, then
<|startoftext|> = 49406 and <|endoftext|> = 49407, the ids of the released CLIP tokenizer) and merges.txt, the layout
`transformers.CLIPTokenizer.from_pretrained(dir)` reads. Same construction as open_clip/tokenizer.py (MIT).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from serving.tiny_models import bytes_to_unicode  # noqa: E402  (the GPT-2 / CLIP byte table)

N_MERGES = 49152 - 256 - 2


def main(src: str, out: str) -> None:
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {tok: i for i, tok in enumerate(vocab)}
    if len(encoder) != 49408:
        raise ValueError(f"expected 49408 distinct tokens, got {len(encoder)}")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
