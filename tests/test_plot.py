"""The Pareto figure reads without the table: one legend entry (colour and marker) per sampler setting plus the
frontier, a shared accuracy axis, and each panel titled with its cache mode."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from dllm.eval.compare import frontier, pareto_plot  # noqa: E402


def rows():
    out = []
    for model, cache in (("tiny_sdar", "block_fused"), ("tiny_llada", "prefix")):
        for i, (label, nfe, acc) in enumerate([("static", 8.0, 0.99), ("threshold(threshold=0.9)", 2.9, 0.99),
                                                ("threshold(threshold=0.5)", 2.1, 0.6), ("factor(factor=1.0)", 2.9, 0.97),
                                                ("credit(threshold=0.9)", 2.95, 0.99), ("freedave(draft_steps=4)", 5.3, 0.99)]):
            out.append({"model": model, "task": "synthetic", "sampler": label, "cache": cache,
                        "nfe_per_example": nfe + (0.3 if model == "tiny_llada" else 0), "accuracy": acc - 0.1 * i / 10})
    return out


def test_pareto_plot_has_a_legend_entry_per_sampler(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))      # keep the figure to inspect it
    data = rows()
    pareto_plot(data, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    fig = figures[0]
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == list(dict.fromkeys(r["sampler"] for r in data)) + ["frontier"]
    styles = [(tuple(h.get_facecolor()[0]), h.get_paths()[0].vertices.tobytes()) for h in legend.legend_handles[:-1]]
    assert len(set(styles)) == len(styles)                                     # no two samplers look alike
    axes = fig.axes
    assert len(axes) == 2 and axes[0].get_ylim() == axes[1].get_ylim()       # one accuracy scale
    assert [ax.get_title() for ax in axes] == ["tiny_llada / synthetic (cache prefix)",
                                               "tiny_sdar / synthetic (cache block_fused)"]
    assert not any(ax.texts for ax in axes)                                    # no point labels to overprint


def test_frontier_keeps_runs_better_than_every_cheaper_one():
    pts = [{"nfe_per_example": n, "accuracy": a} for n, a in [(8, 0.99), (2.9, 0.99), (2.1, 0.6), (2.9, 0.97), (5, 0.5)]]
    assert [(r["nfe_per_example"], r["accuracy"]) for r in frontier(pts)] == [(2.1, 0.6), (2.9, 0.99)]
