"""PNG plots of an evaluation (matplotlib, imported only here): precision@k curves, a t-SNE
map of the embeddings, example queries with their top results, and the weight sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..conf import get_settings
from ..exceptions import SimilarityError
from .catalog import EvalCatalog, Relevance
from .ranking import EvalResult

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, imported only here)
# ---------------------------------------------------------------------------------------------
def write_plots(
    catalog: EvalCatalog, result: EvalResult, relevance: Relevance, folder: Path, *,
    sweep: list[tuple[dict[str, float], dict[str, float]]] | None = None, sweep_metric: str = "precision@10",
    examples: int = 5, seed: int = 0,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    folder.mkdir(parents=True, exist_ok=True)
    written = [_plot_curves(result, relevance, folder / "precision_at_k.png")]
    written.append(_plot_embedding_map(catalog, folder / "embedding_map.png", seed=seed))
    if result.top:
        written.append(
            _plot_examples(catalog, result, relevance, folder / "examples.png", rows=examples, seed=seed)
        )
    if sweep:
        written.append(_plot_sweep(sweep, sweep_metric, folder / "weight_sweep.png"))
    return written


def _finish_plot(fig: Any, ax: Any, path: Path) -> Path:
    """Grid, legend, save and close: the same for every line chart."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curves(result: EvalResult, relevance: Relevance, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ranking, curve in result.curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=ranking)
    ax.set_xlabel("k")
    ax.set_ylabel("precision@k")
    ax.set_title(f"precision@k, {relevance.name} ({len(result.queries)} queries)")
    return _finish_plot(fig, ax, path)


def _plot_embedding_map(catalog: EvalCatalog, path: Path, *, seed: int, max_points: int = 3000) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    tops = np.array([c[0] if c else "(none)" for c in catalog.categories])
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(catalog))
    if len(chosen) > max_points:
        chosen = np.sort(rng.choice(chosen, max_points, replace=False))
    names = sorted(set(tops[chosen].tolist()))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    modalities = [m for m in ("image", "text") if catalog.present[m][chosen].sum() > 2]
    fig, axes = plt.subplots(1, len(modalities), figsize=(6.5 * len(modalities), 6), squeeze=False)
    for ax, modality in zip(axes[0], modalities, strict=True):
        rows = chosen[catalog.present[modality][chosen]]
        matrix = catalog.vectors[modality][rows]
        components = min(50, matrix.shape[1], len(rows) - 1)
        reduced = PCA(n_components=components, random_state=seed).fit_transform(matrix)
        perplexity = min(30.0, max(2.0, (len(rows) - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
        for i, name in enumerate(names):
            mask = tops[rows] == name
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=colours(i % colours.N), label=name)
        ax.set_title(f"{modality} embeddings (t-SNE), coloured by top-level category")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _thumbnail(catalog: EvalCatalog, position: int, size: int = 160) -> Any:
    from PIL import Image

    from ..encoders.image_decoding import open_image

    for source in catalog.spec.get_images(catalog.objects[position])[:1]:
        try:
            with source.open() as fh:
                image = open_image(fh, name=source.name, max_pixels=get_settings().max_image_pixels)
            image.thumbnail((size, size))
            return image
        except (OSError, SimilarityError) as exc:
            logger.info("no thumbnail for %s: %s", source.name, exc)
    return Image.new("RGB", (size, size), (235, 235, 235))


def _plot_examples(catalog: EvalCatalog, result: EvalResult, relevance: Relevance, path: Path, *,
                   rows: int, seed: int, ranking: str = "fused") -> Path:
    import matplotlib.pyplot as plt

    ranking = ranking if ranking in result.top else next(iter(result.top))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(result.queries), size=min(rows, len(result.queries)), replace=False)
    fig, axes = plt.subplots(len(picks), 6, figsize=(13, 2.5 * len(picks)), squeeze=False)
    for row, pick in enumerate(picks):
        query = int(result.queries[pick])
        gains = relevance.gains(np.array([query]), len(catalog))[0]
        cells = [(query, None)] + [(int(c), gains[c] > 0) for c in result.top[ranking][pick][:5]]
        for col, (position, relevant) in enumerate(cells):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if position < 0:
                ax.axis("off")
                continue
            ax.imshow(_thumbnail(catalog, position))
            title = catalog.titles[position]
            ax.set_title((title[:28] + "…") if len(title) > 29 else title, fontsize=7)
            colour = "black" if relevant is None else ("tab:green" if relevant else "tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5 if relevant is None else 3)
        axes[row][0].set_ylabel("query", fontsize=8)
    fig.suptitle(f"{ranking}: query → top 5 (green = relevant, red = not; {relevance.name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def _plot_sweep(sweep: list[tuple[dict[str, float], dict[str, float]]], metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [w["image"] for w, _m in sweep]
    for name in (metric, "mrr"):
        ax.plot(xs, [m[name] for _w, m in sweep], marker="o", markersize=3, label=name)
    ax.set_xlabel("image weight (text = 1 - image)")
    ax.set_title("fused ranking by fusion weights")
    return _finish_plot(fig, ax, path)
