"""The Python reference path for the preprocessing bench (see bench/preprocess.sh).

    make IMAGES_DIR N   write N JPEGs of about one megapixel, cut from the fixture photographs
    time IMAGES_DIR     PIL open + convert("RGB") + open_clip's ViT-B-32 transform on one thread;
                        prints {"images": n, "seconds": s, "images_per_s": r} as JSON
"""

import json
import random
import sys
import time
from pathlib import Path

from PIL import Image


def make(out: Path, n: int):
    out.mkdir(parents=True, exist_ok=True)
    photos = sorted(Path("tests/fixtures/photos").glob("*.jpg"))
    rng = random.Random(7)
    for i in range(n):
        src = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = rng.choice([(1152, 864), (864, 1152), (1024, 1024), (1280, 800)])
        # scale up to cover, random crop, slight colour change so files differ
        s = max(w / src.width, h / src.height) * rng.uniform(1.0, 1.3)
        big = src.resize((int(src.width * s) + 1, int(src.height * s) + 1), Image.Resampling.BICUBIC)
        x, y = rng.randint(0, big.width - w), rng.randint(0, big.height - h)
        img = big.crop((x, y, x + w, y + h))
        img = Image.eval(img, lambda v, k=rng.uniform(0.9, 1.1): min(255, int(v * k)))
        img.save(out / f"bench-{i:03d}.jpg", "JPEG", quality=90)


def time_reference(images: Path):
    import torch
    from open_clip.transform import image_transform
    import open_clip

    torch.set_num_threads(1)
    transform = image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD, interpolation="bicubic", resize_mode="shortest")
    files = sorted(images.glob("*.jpg"))
    for p in files[:5]:  # warm up
        transform(Image.open(p).convert("RGB"))
    t0 = time.perf_counter()
    for p in files:
        x = transform(Image.open(p).convert("RGB"))
        assert x.shape == (3, 224, 224)
    dt = time.perf_counter() - t0
    print(json.dumps({"images": len(files), "seconds": dt, "images_per_s": len(files) / dt, "pillow": Image.__version__, "open_clip": open_clip.__version__}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        time_reference(Path(sys.argv[2]))
