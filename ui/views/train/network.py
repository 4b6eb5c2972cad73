"""The Network tab: a zoo network (its input shape and classes) or an NNC project (.sdcproj) brought
from Neural Network Console, and NNC's per-layer statistics."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import ApiError, Client


@dataclass
class NetworkChoice:
    """What the Config & run tab trains: a zoo network, or the network of an imported NNC project
    (``imported``: its spec, task, config, score and dataset variables)."""

    zoo: str
    task: str
    classes: int
    imported: dict | None = None

    def options(self, task: str) -> dict:
        return {"classes": self.classes} if self.task == "classification" and task == "classification" else {}


def render(client: Client, networks: list[dict]) -> NetworkChoice:
    source = st.radio("Network from", ["Model zoo", "NNC project (.sdcproj)"], horizontal=True, key="tr_net_source")
    if source == "Model zoo":
        return zoo_network(client, networks)
    return nnc_project(client)


def nnc_project(client: Client) -> NetworkChoice:
    upload = st.file_uploader("Neural Network Console project", type=["sdcproj"], key="tr_sdcproj")
    if upload is not None and st.session_state.get("tr_sdcproj_name") != (upload.name, upload.size):
        try:
            st.session_state["tr_imported"] = client.import_nnc_project(upload.name, upload.getvalue())
            st.session_state["tr_sdcproj_name"] = (upload.name, upload.size)
        except ApiError as exc:
            st.session_state.pop("tr_imported", None)
            st.error(exc.message)
    imported = st.session_state.get("tr_imported")
    if not imported:
        st.info("Upload an .sdcproj: its network, task and training config are imported; train it on a dataset here.")
        return NetworkChoice("", "classification", 2)
    st.markdown(f"**{imported['name']}**: {imported['task']}, input {'×'.join(map(str, imported['network']['input']))}")
    for note in imported["notes"]:
        st.caption(f"note: {note}")
    try:
        show_stats(client.spec_stats(imported["network"]))
    except ApiError as exc:
        st.error(exc.message)
    return NetworkChoice(imported["name"], imported["task"], 2, imported)


def zoo_network(client: Client, networks: list[dict]) -> NetworkChoice:
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
    layers.insert(0, "layer", [r.get("name") or r["path"] for r in stats["layers"]])  # NNC's layer names
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
                y=alt.Y("layer:N", sort=None, title=None),
                tooltip=["layer", "type", key],
            )
            .properties(height=22 * len(layers) + 20)
        )
        st.altair_chart(chart, width="stretch")
    st.dataframe(layers, hide_index=True, width="stretch")
