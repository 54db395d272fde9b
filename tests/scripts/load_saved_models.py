"""Run by tests/test_export.py: load exported SavedModels with TensorFlow alone and run both signatures.

Usage: python tests/scripts/load_saved_models.py DIR1,DIR2,... '["text", ...]'
Prints one JSON line: per directory, the serving outputs (for "greedy" directories also on a batch of one),
the score signature's scores of those outputs, the outputs' static outer dimension; and which of jax,
jaxlib and mesh_t5 got imported (none may be: a served model needs only TensorFlow and tensorflow-text).
"""

import json
import sys

sys.modules["jax"] = sys.modules["jaxlib"] = sys.modules["mesh_t5"] = None  # importing them now fails

import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401 (registers the SentencePiece ops)

texts = json.loads(sys.argv[2])
result = {}
for name in sys.argv[1].split(","):
    model = tf.saved_model.load(name)
    serve, score = model.signatures["serving_default"], model.signatures["score"]
    runs = []
    for batch in (texts[:1], texts) if "greedy" in name else (texts,):
        out = serve(inputs=tf.constant(batch))
        runs.append([[s.decode() for s in out["outputs"].numpy()], out["scores"].numpy().tolist()])
    scored = score(inputs=tf.constant(texts), targets=tf.constant(runs[-1][0]))["scores"].numpy().tolist()
    result[name] = {
        "runs": runs,
        "score": scored,
        "outer_dim": serve.structured_outputs["outputs"].shape.as_list(),
    }
loaded = sorted(
    k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in ("jax", "jaxlib", "mesh_t5")
)
print(json.dumps({"result": result, "loaded": loaded}))
