"""Train & evaluate, NNC's workflow for engineers: dataset, network (with per-layer statistics),
config, a run with a live learning curve, evaluation, and classifying new images or vectors."""

from __future__ import annotations

import streamlit as st

from ui import session
from ui.client import ApiError
from ui.views.train import classify, dataset, evaluation, network, run, search

client, role = session.current()
st.title("Train & evaluate")
tab_data, tab_net, tab_run, tab_eval, tab_classify, tab_search = st.tabs(
    ["Dataset", "Network", "Config & run", "Evaluation", "Classify", "Structure search"]
)

try:
    datasets = client.datasets()
    networks = client.networks()
except ApiError as exc:
    st.error(exc.message)
    st.stop()

with tab_data:
    dataset.render(client, datasets)
with tab_net:
    choice = network.render(client, networks)
with tab_run:
    run.render(client, datasets, choice)
with tab_eval:
    evaluation.render(client)
with tab_classify:
    classify.render(client)
with tab_search:
    search.render(client)
