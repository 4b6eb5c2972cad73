"""Train & evaluate, NNC's workflow for engineers: dataset, network (with per-layer statistics),
config, a run with a live learning curve, evaluation, and classifying new images or vectors."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError, parse_vector

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
    st.subheader("Create from class folders")
    st.caption("A zip with one folder per class (the label is the folder's sorted index); images are resized.")
    c = st.columns(5)
    name = c[0].text_input("Dataset name", key="tr_ds_name")
    channels = c[1].selectbox("Channels", [1, 3], key="tr_ds_ch")
    width = c[2].number_input("Width", 4, 1024, 28, key="tr_ds_w")
    height = c[3].number_input("Height", 4, 1024, 28, key="tr_ds_h")
    percent = c[4].number_input("Training %", 1.0, 100.0, 80.0, key="tr_ds_pct")
    upload = st.file_uploader("Zip of class folders", type=["zip"], key="tr_ds_zip")
    if st.button("Create dataset", key="tr_ds_go", disabled=not (name and upload)):
        try:
            out = client.upload_dataset(
                name,
                upload.name,
                upload.getvalue(),
                layout="classes",
                channels=channels,
                width=int(width),
                height=int(height),
                train_percent=float(percent),
            )
            st.success(", ".join(f"{k} {v}" for k, v in out.items()))
        except ApiError as exc:
            st.error(exc.message)
    with st.expander("Or a sample dataset (scikit-learn's digits images or iris vectors)"):
        c = st.columns(3)
        sample = c[0].selectbox("Sample", ["iris", "digits", "digits_4or9", "digits_4or9_anomaly"], key="tr_sample")
        sample_name = c[1].text_input("Dataset name", value=sample, key="tr_sample_name")
        if c[2].button("Create sample", key="tr_sample_go"):
            try:
                out = client.sample_dataset(sample_name, sample)
                st.success(", ".join(f"{k} {v}" for k, v in out.items()))
            except ApiError as exc:
                st.error(exc.message)
    st.subheader("Browse and check")
    if datasets:
        browse = st.selectbox("Dataset", [d["name"] for d in datasets], key="tr_ds_browse")
        info = client.dataset(browse, limit=24)
        for file, meta in info["files"].items():
            st.markdown(f"**{file}**: {meta['rows']} rows, columns {', '.join(meta['header'])}")
        head = info["files"].get("training.csv")
        if head and head["head"]:
            image_col = next((i for i, h in enumerate(head["header"]) if h.startswith("x")), 0)
            cols = st.columns(8)
            for i, row in enumerate(head["head"][:24]):
                data = client.dataset_file(browse, row[image_col])
                if data:
                    cols[i % 8].image(data, caption=" ".join(row[1:]) or row[0], use_container_width=True)
    else:
        st.info("No datasets yet.")

with tab_net:
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
    classes = st.number_input("Classes (classification)", 2, 1000, 10, key="tr_classes")
    try:
        shape = [int(v) for v in shape_text.split(",")]
        options = {"classes": int(classes)} if entry["task"] == "classification" else {}
        stats = client.network_stats(zoo, shape, **options)
    except (ValueError, ApiError) as exc:
        st.error(getattr(exc, "message", str(exc)))
    else:
        layers = pd.DataFrame(stats["layers"])
        totals = stats["total"]
        m = st.columns(3)
        m[0].metric("Parameters", f"{totals['parameters']:,}")
        m[1].metric("Multiply-adds", f"{totals['multiply_adds']:,}")
        m[2].metric("Output", "×".join(map(str, stats["layers"][-1]["output_shape"])))
        for key, title in (("multiply_adds", "multiply-adds"), ("parameters", "parameters")):
            st.altair_chart(
                alt.Chart(layers)
                .mark_bar()
                .encode(
                    x=alt.X(f"{key}:Q", title=title),
                    y=alt.Y("path:N", sort=None, title=None),
                    tooltip=["path", "type", key],
                )
                .properties(height=22 * len(layers) + 20),
                use_container_width=True,
            )
        st.dataframe(layers, hide_index=True, use_container_width=True)

with tab_run:
    if not datasets:
        st.info("Create a dataset first.")
    else:
        with st.form("tr_project"):
            c = st.columns(3)
            project = c[0].text_input("Project name", key="tr_proj_name")
            dataset = c[1].selectbox("Dataset", [d["name"] for d in datasets], key="tr_proj_ds")
            task = c[2].selectbox("Task", ["classification", "autoencoder", "regression"], key="tr_task")
            c = st.columns(4)
            epochs = c[0].number_input("Max epochs", 1, 1000, 10, key="tr_epochs")
            batch = c[1].number_input("Batch size", 1, 4096, 64, key="tr_batch")
            solver = c[2].selectbox(
                "Solver", ["Adam", "AdamW", "Momentum", "Sgd", "RMSprop", "AdaBelief"], key="tr_solver"
            )
            lr = c[3].number_input("Learning rate", 1e-6, 10.0, 0.001, format="%.5f", key="tr_lr")
            st.caption(f"network: {zoo} with the options of the Network tab")
            if st.form_submit_button("Save project and train", type="primary"):
                try:
                    options = (
                        {"classes": int(classes)}
                        if entry["task"] == "classification" and task == "classification"
                        else {}
                    )
                    client.create_project(
                        name=project,
                        dataset=dataset,
                        zoo=zoo,
                        options=options,
                        task=task,
                        max_epoch=int(epochs),
                        batch_size=int(batch),
                        solver=solver,
                        lr=float(lr),
                    )
                    job = client.run_project(f"{project}.yaml")
                    st.session_state["tr_job"] = st.session_state["tr_run_pick"] = job["id"]
                    st.success(f"job {job['id']} started")
                except ApiError as exc:
                    st.error(exc.message)
    runs = [j for j in client.jobs(50) if j["kind"] == "project"]
    if runs:
        ids = [j["id"] for j in runs]
        default = ids.index(st.session_state["tr_job"]) if st.session_state.get("tr_job") in ids else 0
        st.session_state["tr_job"] = st.selectbox(
            "Run",
            ids,
            index=default,
            key="tr_run_pick",
            format_func=lambda i: (
                f"job {i}: {next(j['params'].get('project') for j in runs if j['id'] == i)} "
                f"({next(j['status'] for j in runs if j['id'] == i)})"
            ),
        )

        @st.fragment(run_every=2)
        def learning_curve() -> None:
            job = client.job(st.session_state["tr_job"])
            session.job_progress(job)
            curve = job["result"].get("curve") or []
            if curve:
                frame = pd.DataFrame(curve).set_index("epoch")
                left, right = st.columns(2)
                left.line_chart(frame[[k for k in ("cost", "train_error", "valid_error") if k in frame]], height=220)
                metrics = [k for k in ("valid_accuracy", "valid_auroc", "valid_rmse") if k in frame]
                if metrics:
                    right.line_chart(frame[metrics], height=220)
            if job["status"] in ("queued", "running") and st.button("Cancel", key="tr_cancel"):
                client.cancel_job(job["id"])

        learning_curve()

with tab_eval:
    job_id = st.session_state.get("tr_job")
    job = client.job(job_id) if job_id else None
    report = (job or {}).get("result", {}).get("evaluation")
    if not report:
        st.info("The evaluation shows here once a run has finished (it uses the dataset's validation part).")
    else:
        m = st.columns(4)
        for i, key in enumerate(("accuracy", "auroc", "rmse", "samples")):
            if key in report:
                m[i].metric(key, f"{report[key]:.4f}" if isinstance(report[key], float) else report[key])
        if "confusion_matrix" in report:
            labels = [str(c) for c in report["classes"]]
            cm = pd.DataFrame(report["confusion_matrix"], index=labels, columns=labels)
            long = cm.reset_index(names="true").melt(id_vars="true", var_name="predicted", value_name="count")
            base = alt.Chart(long).encode(x=alt.X("predicted:N", sort=labels), y=alt.Y("true:N", sort=labels))
            st.altair_chart(
                (
                    base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")))
                    + base.mark_text().encode(text="count:Q")
                ).properties(height=320, title="confusion matrix"),
                use_container_width=True,
            )
            per_class = pd.DataFrame(report["per_class"]).T
            per_class.loc["macro avg"] = pd.Series(report["macro_avg"])
            st.dataframe(per_class, use_container_width=True)
        rows = report.get("output_head") or []
        if len(rows) > 1:
            st.subheader("Output (first rows)")
            table = pd.DataFrame(rows[1:], columns=rows[0])
            if report.get("dataset_name"):  # thumbnails of the first inputs, with what the model said
                cols = st.columns(8)
                for i, row in enumerate(rows[1:17]):
                    data = client.dataset_file(report["dataset_name"], row[0])
                    if data:
                        cols[i % 8].image(data, caption=" · ".join(row[1:3]), use_container_width=True)
            st.dataframe(table, hide_index=True, use_container_width=True)

with tab_classify:
    done = [j for j in client.jobs(50) if j["kind"] == "project" and j["status"] == "succeeded"]
    if not done:
        st.info("Train a model first.")
    else:
        pick = st.selectbox(
            "Model of run",
            ids := [j["id"] for j in done],
            # follows the run chosen under "Config & run" (a new run selects its own model)
            index=ids.index(st.session_state["tr_job"]) if st.session_state.get("tr_job") in ids else 0,
            key=f"tr_cls_job_{st.session_state.get('tr_job')}_{st.session_state.get('tr_job') in ids}",
            format_func=lambda i: f"job {i}: {next(j['params'].get('project') for j in done if j['id'] == i)}",
        )
        kind = st.radio("Input", ["image", "vector"], horizontal=True, key="tr_cls_kind")
        try:
            if kind == "image":
                image = st.file_uploader("Image", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"], key="tr_cls_img")
                result = client.predict(pick, image.name, image.getvalue()) if image is not None else None
                if image is not None:
                    st.image(image.getvalue(), width=160)
            else:
                text = st.text_area("Values (comma or space separated)", key="tr_cls_vec")
                result = client.predict_vector(pick, parse_vector(text)) if text.strip() else None
        except (ApiError, ValueError) as exc:
            st.error(getattr(exc, "message", str(exc)))
            result = None
        if result:
            st.metric("Label", result["label"] or "—")
            if result.get("output"):
                out = pd.DataFrame(
                    {"class": [str(i) for i in range(len(result["output"]))], "output": result["output"]}
                )
                st.altair_chart(alt.Chart(out).mark_bar().encode(x="class:N", y="output:Q"), use_container_width=True)

with tab_search:
    st.caption(
        "NNC's structure search from a project's network: mutated networks are trained and evaluated; "
        "the Pareto front of validation error against multiply-adds is marked."
    )
    projects = client.projects()
    if not projects:
        st.info("Save a project under Config & run first.")
    else:
        c = st.columns(5)
        project_file = c[0].selectbox("Project", [p["file"] for p in projects], key="sr_project")
        method = c[1].selectbox("Method", ["bayes", "random"], key="sr_method", help="bayes: Gaussian process")
        objective = c[2].selectbox("Objective", ["error_and_madds", "error"], key="sr_objective")
        trials = c[3].number_input("Trials", 2, 1000, 20, key="sr_trials")
        epochs = c[4].number_input("Epochs per trial", 1, 1000, 10, key="sr_epochs")
        if st.button("Start search", type="primary", key="sr_start"):
            try:
                job = client.search(
                    project_file, method=method, objective=objective, trials=int(trials), epochs=int(epochs)
                )
                st.session_state["sr_job"] = st.session_state["sr_job_pick"] = job["id"]
            except ApiError as exc:
                st.error(exc.message)
        searches = [j for j in client.jobs(50) if j["kind"] == "search"]
        if searches:
            ids = [j["id"] for j in searches]
            search_id = st.selectbox(
                "Search",
                ids,
                key="sr_job_pick",
                format_func=lambda i: f"job {i}: {next(j['params']['project'] for j in searches if j['id'] == i)}",
            )

            @st.fragment(run_every=3)
            def search_progress() -> None:
                job = client.job(search_id)
                session.job_progress(job)
                rows = job["result"].get("trials") or []
                if rows:
                    plot = client.tradeoff_png(search_id)
                    if plot:
                        st.image(plot, caption="trade-off: log multiply-adds against validation error")
                    table = pd.DataFrame(rows)
                    st.dataframe(table, hide_index=True, use_container_width=True)
                    st.caption(
                        "export a trial as a model bundle: `appliance search-export RUN TRIAL model.zip` "
                        f"with RUN = {job['result'].get('run')}"
                    )
                if job["status"] in ("queued", "running") and st.button("Stop search", key="sr_cancel"):
                    client.cancel_job(search_id)

            search_progress()
