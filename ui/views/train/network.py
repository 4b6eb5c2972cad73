"""The Network tab: a zoo network, its input shape and classes, and NNC's per-layer statistics."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import ApiError, Client


@dataclass
class NetworkChoice:
    """What the Config & run tab trains."""

    zoo: str
    task: str
    classes: int

    def options(self, task: str) -> dict:
        return {"classes": self.classes} if self.task == "classification" and task == "classification" else {}


def render(client: Client, networks: list[dict]) -> NetworkChoice:
    names = [n["name"] for n in networks]
    zoo = st.selectbox(
        "Network (zoo)",
        names,
        index=names.index("binary_cnn") if "binary_cnn" in names else 0,
        key="tr_zoo",
        format_func=lambda n: f"{n}: {next(x['description'] for x in networks if x['name'] == n)}",
    )
    entry = next(n for n in networks if n["name"] == zoo)
    shape_text = st.text_input("Input shape", ",".join(map(str, entry["input"])), key="tr_shape")
    classes = int(st.number_input("Classes (classification)", 2, 1000, 10, key="tr_classes"))
    choice = NetworkChoice(zoo, entry["task"], classes)
    try:
        shape = [int(v) for v in shape_text.split(",")]
        stats = client.network_stats(zoo, shape, **choice.options("classification"))
    except (ValueError, ApiError) as exc:
        st.error(getattr(exc, "message", str(exc)))
    else:
        show_stats(stats)
    return choice


def show_stats(stats: dict) -> None:
    layers = pd.DataFrame(stats["layers"])
    totals = stats["total"]
    m = st.columns(3)
    m[0].metric("Parameters", f"{totals['parameters']:,}")
    m[1].metric("Multiply-adds", f"{totals['multiply_adds']:,}")
    m[2].metric("Output", "×".join(map(str, stats["layers"][-1]["output_shape"])))
    for key, title in (("multiply_adds", "multiply-adds"), ("parameters", "parameters")):
        chart = (
            alt.Chart(layers)
            .mark_bar()
            .encode(
                x=alt.X(f"{key}:Q", title=title),
                y=alt.Y("path:N", sort=None, title=None),
                tooltip=["path", "type", key],
            )
            .properties(height=22 * len(layers) + 20)
        )
        st.altair_chart(chart, use_container_width=True)
    st.dataframe(layers, hide_index=True, use_container_width=True)
