# The framework checks of image-matrix, run inside a framework image by `matrix verify`:
# installed versions, the CUDA the build reports, a tiny training step on the CPU, and
# (where the container sees a GPU) a matmul on it. Prints one JSON object.
import json, sys
from importlib import metadata

name, packages = sys.argv[1], sys.argv[2].split(",")
r = {"versions": {}}
for p in packages:
    try:
        r["versions"][p] = metadata.version(p)
    except metadata.PackageNotFoundError:
        r["versions"][p] = None
try:
    if name == "pytorch":
        import torch
        r["cuda"] = torch.version.cuda
        torch.manual_seed(0)
        layer = torch.nn.Linear(8, 2)
        loss = layer(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        g = layer.weight.grad
        r["train"] = bool(torch.isfinite(loss).item()) and g is not None and tuple(g.shape) == (2, 8) and bool(g.abs().sum() > 0)
        r["gpu"] = torch.cuda.is_available()
        if r["gpu"]:
            a = torch.randn(64, 64)
            r["gpu_matmul"] = bool(torch.allclose((a.cuda() @ a.cuda()).cpu(), a @ a, atol=1e-3))
    else:
        import tensorflow as tf
        r["cuda"] = tf.sysconfig.get_build_info().get("cuda_version")
        w = tf.Variable(tf.random.normal((8, 2), seed=0))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.matmul(tf.random.normal((4, 8), seed=1), w) ** 2)
        g = tape.gradient(loss, w)
        r["train"] = bool(tf.math.is_finite(loss)) and g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
        r["gpu"] = bool(tf.config.list_physical_devices("GPU"))
        if r["gpu"]:
            with tf.device("/GPU:0"):
                a = tf.random.normal((64, 64), seed=2)
                r["gpu_matmul"] = bool(tf.reduce_all(tf.abs(tf.matmul(a, a)) >= 0))
except Exception as e:  # reported as a failed check, with the error
    r["error"] = repr(e)
print(json.dumps(r))
