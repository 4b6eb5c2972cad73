"""The console's pages as AppTest's navigation names them."""


def page_path(page: str) -> str:
    """A page's script: ``views/<page>.py``, and Train & evaluate's folder of tabs."""
    return "views/train/page.py" if page == "train" else f"views/{page}.py"
