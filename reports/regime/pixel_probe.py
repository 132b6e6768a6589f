"""Linear probes on raw pixels (full 64x64 and 4x4-average-pooled 16x16): can a linear head read the scene tasks
from the image itself with the quick suite's 2000 training scenes? Prints val and test accuracy (%) per task."""

import torch
import torch.nn.functional as F

from tcjepa.data.shapes import ShapesDataset
from tcjepa.eval.linear import linear_probe
from tcjepa.eval.scene import SCENE_TASKS

torch.set_num_threads(1)


def load(split: str, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    items = [ShapesDataset(split, image_size=64, seed=0, size=n)[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    labels = {k: torch.stack([torch.as_tensor(it["labels"][k]) for it in items]) for k in items[0]["labels"]}
    return images, labels


train, val, test = load("train", 2000), load("val", 500), load("test", 1000)
views = {"pixels 64x64": lambda x: x.flatten(1), "pixels 16x16": lambda x: F.avg_pool2d(x, 4).flatten(1)}
for view, f in views.items():
    for name in ("colour", "shape", "count", "relation"):
        task = SCENE_TASKS[name]
        res = linear_probe(
            f(train[0]),
            task.label(train[1]),
            f(val[0]),
            task.label(val[1]),
            {"test": (f(test[0]), task.label(test[1]))},
            task.num_classes,
            seed=0,
        )
        print(view, name, round(100 * res.val_acc, 1), round(100 * res.test_acc["test"], 1))
