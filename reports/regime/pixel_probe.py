"""Linear probes on raw pixels (full 64x64 and 4x4-average-pooled 16x16): can a linear head read the scene tasks
from the image itself with the quick suite's 2000 training scenes? Prints val and test accuracy (%) per task."""

import torch
from tcjepa.data.shapes import ShapesDataset
from tcjepa.eval.linear import linear_probe
from tcjepa.eval.scene import SCENE_TASKS
torch.set_num_threads(1)
def load(split, n):
    ds = ShapesDataset(split, image_size=64, seed=0, size=n)
    xs, labels = [], {}
    items = [ds[i] for i in range(n)]
    x = torch.stack([it["image"] for it in items])
    lab = {k: torch.stack([torch.as_tensor(it["labels"][k]) for it in items]) for k in items[0]["labels"]}
    return x, lab
tr, va, te = load("train", 2000), load("val", 500), load("test", 1000)
for feat_name, f in [("pixels 64x64", lambda x: x.flatten(1)), ("pixels 16x16", lambda x: torch.nn.functional.avg_pool2d(x, 4).flatten(1))]:
    for task in ("colour", "shape", "count", "relation"):
        t = SCENE_TASKS[task]
        res = linear_probe(f(tr[0]), t.label(tr[1]), f(va[0]), t.label(va[1]), {"test": (f(te[0]), t.label(te[1]))}, t.num_classes, seed=0)
        print(feat_name, task, round(100*res.val_acc,1), round(100*res.test_acc["test"],1))
