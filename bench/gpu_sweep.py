"""GPU indexing sweep: ``python -m bench.gpu_sweep [--smoke] [--device cuda] [--out FILE]``.

Written for one H100/H200; runs on a CPU with ``--smoke`` (tiny sizes, fp32/bf16, the
``eager`` compile backend) so that it is known to work before GPU time is spent on it.
Measures, with JSON output (no Django database; Qdrant Edge in a temporary folder):

- model-only ceiling: images/s and texts/s of the two encoders' models on ready tensors, per
  dtype (fp16/bf16), memory format (channels-last or not), ``torch.compile`` on/off, batch size;
- JPEG decode + preprocess: CPU threads (Pillow, ``open_image`` + the timm transform, as
  indexing does) against ``torchvision.io.decode_jpeg(device='cuda')`` with resize, crop and
  normalisation on the GPU;
- end to end: JPEG bytes and text in, points upserted into Qdrant Edge, products/s, for each
  decode path at the best model configuration, against the model-only ceiling.
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import io
import json
import os
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "flipkart-1050"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def load_items(n: int) -> tuple[list[bytes], list[str], str]:
    """``n`` (JPEG bytes, text) pairs: flipkart-1050 cycled when present, else generated."""
    if (DATASET / "catalog.csv").is_file():
        with open(DATASET / "catalog.csv", newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("image")]
        rows = [rows[i % len(rows)] for i in range(n)]
        return ([(DATASET / r["image"]).read_bytes() for r in rows],
                [f"{r['title']}. {r['description']}"[:2000] for r in rows], "flipkart-1050")
    from PIL import Image

    blobs = []
    for i in range(min(n, 64)):
        buffer = io.BytesIO()
        Image.new("RGB", (384, 384), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buffer, "JPEG")
        blobs.append(buffer.getvalue())
    return [blobs[i % len(blobs)] for i in range(n)], [f"product {i} steel watch" for i in range(n)], "generated"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    """sentence-transformers' tokenisation (``preprocess`` since 6.x, ``tokenize`` before)."""
    return dict((getattr(model, "preprocess", None) or model.tokenize)(texts))


def on_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    """The tokenizer's tensors moved to ``device`` (other entries kept as they are)."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def rate(n: int, fn: Callable[[], Any], device: str, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = max(best, n / (time.perf_counter() - start))
    return best


def prepared(module: Any, dtype: str, channels_last: bool, compile_backend: str, *, dynamic: bool = False) -> Any:
    """A copy of ``module`` in ``dtype`` (and channels-last), compiled when a backend is given
    (``dynamic`` for the text model, whose padded length changes from batch to batch)."""
    import torch

    model = copy.deepcopy(module).to(dtype=getattr(torch, DTYPES[dtype]))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_backend:
        model = torch.compile(model, backend=compile_backend, dynamic=dynamic)
    return model


def sweep_models(image_model: Any, text_model: Any, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Model-only rates on ready tensors (the ceiling), every combination."""
    import torch

    out: dict[str, list[dict[str, Any]]] = {"image": [], "text": []}
    n = args.n_model
    for dtype in args.dtypes:
        for compiled in args.compile:
            backend = args.compile_backend if compiled else ""
            for channels_last in (True, False):
                model = prepared(image_model, dtype, channels_last, backend)
                for batch in args.batches:
                    x = torch.randn(batch, 3, 224, 224, device=args.device, dtype=getattr(torch, DTYPES[dtype]))
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    started = time.perf_counter()
                    with torch.inference_mode():
                        model(x)  # warm-up (and compilation) outside the rate
                    warm = time.perf_counter() - started

                    def run(model: Any = model, x: Any = x, batch: int = batch) -> None:
                        with torch.inference_mode():
                            for _ in range(max(1, n // batch)):
                                model(x)
                    per_s = rate(max(1, n // batch) * batch, run, args.device, args.repeats)
                    out["image"].append({"dtype": dtype, "channels_last": channels_last, "compile": backend or "off",
                                         "batch": batch, "images_per_s": per_s, "first_call_s": warm})
            model = prepared(text_model, dtype, False, backend, dynamic=True)
            for batch in args.batches:
                features = tokenize(text_model, texts[:batch])
                features = on_device(features, args.device)
                with torch.inference_mode():
                    model(dict(features))

                def run_text(model: Any = model, features: Any = features, batch: int = batch) -> None:
                    with torch.inference_mode():
                        for _ in range(max(1, n // batch)):
                            model(dict(features))
                per_s = rate(max(1, n // batch) * batch, run_text, args.device, args.repeats)
                out["text"].append({"dtype": dtype, "compile": backend or "off", "batch": batch, "texts_per_s": per_s})
    return out


#: the timm transform of the image model (input size, crop, mean/std), set by main()
DATA_CONFIG: dict[str, Any] = {"input_size": (3, 224, 224), "crop_pct": 0.875, "mean": (0.5,) * 3, "std": (0.5,) * 3}


def gpu_preprocess(blobs: list[bytes], device: str, dtype: Any) -> Any:
    """``decode_jpeg`` on ``device``, then the timm transform's steps as tensor ops (resize the
    short side, bicubic antialiased; centre crop; normalise). Close to, not bit-equal with,
    Pillow's resize: the end-to-end rows say which decode path made the vectors."""
    import torch
    import torchvision
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    side = int(DATA_CONFIG["input_size"][-1])
    short = int(side / DATA_CONFIG["crop_pct"])
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    images = torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB, device=device)
    out = [F.center_crop(F.resize(img.float(), [short], interpolation=F.InterpolationMode.BICUBIC, antialias=True),
                         [side, side]) for img in images]
    mean = torch.tensor(DATA_CONFIG["mean"], device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(DATA_CONFIG["std"], device=device).view(1, 3, 1, 1) * 255.0
    batch = (torch.stack(out) - mean) / std
    return batch.to(dtype).contiguous(memory_format=torch.channels_last)


def _map_all(pool: ThreadPoolExecutor, fn: Callable[[bytes], Any], blobs: list[bytes]) -> list[Any]:
    return list(pool.map(fn, blobs))


def sweep_decode(blobs: list[bytes], transform: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from similarity.encoders.image_decoding import open_image

    def cpu_one(data: bytes) -> Any:
        return transform(open_image(io.BytesIO(data), name="sweep", max_pixels=90_000_000))

    out: dict[str, Any] = {"cpu_threads": {}}
    for workers in args.decode_workers:
        with ThreadPoolExecutor(workers) as pool:
            out["cpu_threads"][str(workers)] = rate(len(blobs), functools.partial(_map_all, pool, cpu_one, blobs),
                                                    "cpu", args.repeats)
    step = max(args.batches)
    out["torchvision_decode_jpeg_device"] = args.device
    out["torchvision_decode_jpeg_per_s"] = rate(len(blobs), lambda: [
        gpu_preprocess(blobs[i : i + step], args.device, torch.float32) for i in range(0, len(blobs), step)
    ], args.device, args.repeats)
    return out


def end_to_end(image_model: Any, text_model: Any, transform: Any, blobs: list[bytes], texts: list[str],
               config: dict[str, Any], decode: str, workers: int, dims: dict[str, int],
               args: argparse.Namespace) -> dict[str, Any]:
    """JPEG bytes + text in, points in Qdrant Edge out; three stages overlapped (decode ahead
    in a thread/pool, the two forward passes, upserts on a writer thread)."""
    import numpy as np
    import torch

    from similarity.encoders.image_decoding import open_image
    from similarity.index.base import PointData
    from similarity.index.edge import QdrantEdgeIndex

    dtype = getattr(torch, DTYPES[config["dtype"]])
    image = prepared(image_model, config["dtype"], config["channels_last"],
                     "" if config["compile"] == "off" else config["compile"])
    text = prepared(text_model, config["dtype"], False, "" if config["compile"] == "off" else config["compile"],
                    dynamic=True)
    batch = config["batch"]
    folder = Path(tempfile.mkdtemp(prefix="gpu-sweep-edge-"))
    index = QdrantEdgeIndex(path=str(folder), collection="sweep")
    index.ensure(dims, {"pk": "keyword"})
    pool = ThreadPoolExecutor(workers)

    def cpu_batch(chunk: list[bytes]) -> Any:
        tensors = list(pool.map(lambda b: transform(open_image(io.BytesIO(b), name="e2e", max_pixels=90_000_000)),
                                chunk))
        return torch.stack(tensors).pin_memory() if args.device.startswith("cuda") else torch.stack(tensors)

    ready: queue.Queue[Any] = queue.Queue(maxsize=4)
    writes: queue.Queue[Any] = queue.Queue(maxsize=4)

    def producer() -> None:
        for i in range(0, len(blobs), batch):
            chunk = blobs[i : i + batch]
            pixels = gpu_preprocess(chunk, args.device, dtype) if decode == "gpu" else cpu_batch(chunk)
            ready.put((i, pixels, tokenize(text_model, texts[i : i + batch])))
        ready.put(None)

    def writer() -> None:
        while (item := writes.get()) is not None:
            start, image_rows, text_rows = item
            index.upsert([PointData(str(uuid.UUID(int=start + k + 1)), {"image": image_rows[k].tolist(),
                                    "text": text_rows[k].tolist()}, {"pk": str(start + k)})
                          for k in range(len(image_rows))])

    with torch.inference_mode():  # compile / autotune / cuDNN's choice outside the timing
        image(gpu_preprocess(blobs[:batch], args.device, dtype) if decode == "gpu"
              else cpu_batch(blobs[:batch]).to(args.device, dtype=dtype))
        text(on_device(tokenize(text_model, texts[:batch]), args.device))
    sync(args.device)
    started = time.perf_counter()
    threads = [threading.Thread(target=producer), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    with torch.inference_mode():
        while (item := ready.get()) is not None:
            start, pixels, features = item
            pixels = pixels.to(args.device, dtype=dtype, non_blocking=True)
            if config["channels_last"]:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            image_rows = torch.nn.functional.normalize(image(pixels).float(), dim=1).cpu().numpy()
            out = text(on_device(features, args.device))
            text_rows = torch.nn.functional.normalize(out["sentence_embedding"].float(), dim=1).cpu().numpy()
            writes.put((start, image_rows, np.asarray(text_rows)))
    writes.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    points = index.count() if hasattr(index, "count") else len(blobs)
    index.close()
    pool.shutdown()
    return {"decode": decode, "cpu_decode_workers": workers if decode == "cpu" else 0, **config,
            "products": len(blobs), "points_written": points, "products_per_s": len(blobs) / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (checks the script runs)")
    parser.add_argument("--device", default=None, help="default: cuda when visible, else cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-sweep.json")
    parser.add_argument("--n", type=int, default=None, help="products end to end (default 8192; smoke 16)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from similarity.encoders.image_model import TimmImageEncoder
    from similarity.encoders.text_model import SentenceTransformerTextEncoder

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = args.device.startswith("cuda")
    smoke = args.smoke
    args.n = args.n or (8 if smoke else 8192)
    args.n_model = 8 if smoke else 4096
    args.repeats = 1 if smoke else 3
    args.batches = [4] if smoke else [32, 64, 128, 256, 512]
    args.dtypes = (["fp16", "bf16"] if cuda else ["fp32", "bf16"]) if not smoke or cuda else ["fp32"]
    args.compile = [False, True]
    args.compile_backend = "inductor" if cuda and not smoke else "eager"
    args.decode_workers = [1, 2] if smoke else sorted({1, 4, 8, os.cpu_count() or 1})
    blobs, texts, source = load_items(args.n)
    image_encoder = TimmImageEncoder(device=args.device, half_precision=False, optimise=False)
    text_encoder = SentenceTransformerTextEncoder(device=args.device, half_precision=False)
    image_model, text_model = image_encoder.model, text_encoder.model
    import timm

    DATA_CONFIG.update(timm.data.resolve_data_config({}, model=image_model))
    dims = {"image": image_encoder.dim, "text": text_encoder.dim}
    results: dict[str, Any] = {
        "smoke": smoke, "device": args.device, "source": source,
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    results["model_only"] = sweep_models(image_model, text_model, texts, args)
    results["decode"] = sweep_decode(blobs[: args.n_model], image_encoder.transform, args)
    best_image = max(results["model_only"]["image"], key=lambda row: row["images_per_s"])
    best_text = max((r for r in results["model_only"]["text"]
                     if r["dtype"] == best_image["dtype"] and r["compile"] == best_image["compile"]),
                    key=lambda row: row["texts_per_s"])
    ceiling = 1 / (1 / best_image["images_per_s"] + 1 / best_text["texts_per_s"])
    config = {k: best_image[k] for k in ("dtype", "channels_last", "compile", "batch")}
    workers = max(results["decode"]["cpu_threads"], key=lambda k: results["decode"]["cpu_threads"][k])
    results["end_to_end"] = [
        end_to_end(image_model, text_model, image_encoder.transform, blobs, texts, config, decode,
                   int(workers), dims, args)
        for decode in ("cpu", "gpu")
    ]
    results["model_only_ceiling_products_per_s"] = ceiling
    results["best"] = {"image": best_image, "text": best_text}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["end_to_end"]:
        print(f"end to end, {row['decode']} decode: {row['products_per_s']:.1f} products/s "
              f"({row['dtype']}, batch {row['batch']}, channels_last {row['channels_last']}, compile {row['compile']})"
              f" | model-only ceiling {ceiling:.1f} products/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
